//! The work around the models of Plait's AI steps, shared by the `ocr` and
//! `classify` components: decoding documents, preparing tensors, reading
//! results. The models themselves run in the host, through
//! `plait:step/inference` ([`plait_sdk::inference`]), so a component never
//! pays for loading or optimizing one, and the same code runs natively with
//! any [`plait_sdk::inference::ModelBackend`] (the benchmarks do, to compare
//! the sandbox with native).

pub mod embed;
pub mod ocr;
