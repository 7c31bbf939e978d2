//! The `plait` command-line interface.
//!
//! `main` is the only place that prints an error: it prints the whole chain
//! once and picks the exit code (0 success, 1 a run failed, 2 a usage,
//! definition or component error).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Started as an expression worker, this serves and exits here.
    plait::expressions::serve_worker_if_requested();
    fit_malloc_to_machine();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::main()) {
        Ok(code) => code,
        Err(error) => {
            let code = cli::exit_code(&error);
            cli::print_error(&error);
            ExitCode::from(code)
        }
    }
}

/// On a machine with under 2 GiB of memory (or a cgroup limit that low),
/// every allocation of 256 KiB or more is its own mapping, returned to the
/// kernel when freed. glibc otherwise raises that threshold as large blocks
/// are freed and keeps them in its heap: a model plan the host evicts to
/// stay within the memory (the inference plan budget) would go on counting
/// against it, and the document-intake template ran out of 256 MiB.
fn fit_malloc_to_machine() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if plait::engine::machine_memory().is_some_and(|memory| memory < 2 << 30) {
        // SAFETY: mallopt only sets a glibc tunable; it is called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
