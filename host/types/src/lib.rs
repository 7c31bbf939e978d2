//! The vocabulary every Plait crate shares, and nothing that runs: places
//! in a source file, run ids, content digests, limits and grants as data, the values
//! that flow through a step, what it logged, a run's trace ids, sizes and
//! durations, and the facts of the machine.
//!
//! It sits at the bottom of the crate graph (`docs/architecture.md`): it
//! depends on serde, hashing and uuid only, so the definition, policy and store
//! crates can use it without reaching wasmtime.

pub mod clock;
pub mod digest;
pub mod errors;
pub mod files;
pub mod grants;
pub mod ids;
pub mod json;
pub mod limits;
pub mod logs;
pub mod machine;
pub mod paths;
pub mod source;
pub mod step;
pub mod trace;
