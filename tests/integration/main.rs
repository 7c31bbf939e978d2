//! End-to-end tests of the `plait` binary against real components built
//! from source (`tests/guests/`, `plugins/`) and a real sled store on disk.
//!
//! One test binary, one module per story, so the host is linked once.

mod support;

mod ai_steps;
mod bundles;
mod chain;
mod cli;
mod components;
mod crash;
mod definition_language;
mod durability;
mod embedding;
mod failures;
mod hostile;
mod observability;
mod reference_steps;
mod sandbox;
mod server;
