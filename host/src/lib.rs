//! Plait: a WebAssembly step runtime for durable workflow automation.
//!
//! A workflow definition names steps; each step is a sandboxed WebAssembly
//! component implementing the `plait:step/step` world (`wit/step.wit`). The
//! host runs them as their `needs` allow, concurrently where they can, and
//! persists each step's output as it finishes, so an interrupted run resumes
//! without re-executing finished steps.
//!
//! The modules follow the pipeline:
//! [`definition`] (parse and validate a workflow file, no wasmtime) →
//! [`plan`] (components loaded, digests pinned, each step's sandbox
//! resolved from its [`grants`], [`limits`] and the operator's [`policy`]) →
//! [`engine`] (wasmtime, the linker, compiled-component cache) →
//! [`capabilities`] (what a running step can reach, the models of
//! [`inference`] included) →
//! [`executor`] (runs a plan against the journal) →
//! [`store`] (the run journal, sled behind a trait), watched through
//! [`telemetry`] (logs, traces, metrics). Workflows travel as signed
//! [`bundle`]s. The HTTP API (`plait serve`) is the `plait-server` crate
//! and the command line `plait-cli`, both built on this one.

pub mod bundle;
pub use plait_definition::{self as definition, schema};
pub use plait_engine::{self as engine, capabilities};
pub use plait_inference as inference;
pub use plait_policy as policy;
pub use plait_store as store;
// The shared vocabulary, under the names the modules here have always used.
pub use plait_types::{
    clock, digest, errors, files, grants, ids, json, limits, logs, machine, paths, source, step,
    trace,
};
pub mod executor;
pub mod expressions;
pub mod home;
pub mod plan;
pub mod runtime;
pub mod telemetry;

pub use runtime::{Runtime, RuntimeBuilder, RuntimeError};
