//! End-to-end tests of the `plait` binary against real components built
//! from source (`tests/guests/`, `plugins/`) and a real sled store on disk.
//!
//! One test binary, one module per story, so the host is linked once.

mod support;

/// In-process runs (the executor, `plait::Runtime`) evaluate expressions in
/// worker processes started from a `plait` binary; this program cannot
/// serve as one, so it names the one Cargo built, before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static WORKER_PROGRAM: extern "C" fn() = {
    extern "C" fn name_worker_program() {
        plait::expressions::set_worker_program(env!("CARGO_BIN_EXE_plait"));
    }
    name_worker_program
};

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
mod fuzz;
mod hardening;
mod held_store;
mod hostile;
mod new_user;
mod observability;
mod output_safety;
mod recovery;
mod reference_steps;
mod sandbox;
mod server;
