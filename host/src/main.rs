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
    quiet_on_closed_stdout();
    match runtime.block_on(cli::main()) {
        Ok(code) => code,
        // `plait runs list | head`: the reader has what it wanted.
        Err(error) if cli::output::is_closed_stdout(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let code = cli::exit_code(&error);
            cli::print_error(&error);
            ExitCode::from(code)
        }
    }
}

/// A write to a closed stdout (`plait ... | head`) ends the command
/// quietly with exit code 0, as ripgrep does. Rust ignores SIGPIPE, so the
/// write fails with `BrokenPipe`: the CLI's writes return it as an error,
/// which `main` recognizes; this hook covers a `print!` that panics on it
/// instead. SIGPIPE stays ignored: the host also writes to sockets and to
/// its expression workers' pipes, where a dead peer must not kill it.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// On a machine with under 2 GiB of memory (or a cgroup limit that low),
/// every allocation of 256 KiB or more is its own mapping, returned to the
/// kernel when freed. glibc otherwise raises that threshold as large blocks
/// are freed and keeps them in its heap: a model plan the host evicts to
/// stay within the memory (the inference plan budget) would go on counting
/// against it, and the document-intake template ran out of 256 MiB.
fn fit_malloc_to_machine() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if plait::machine::memory().is_some_and(|memory| memory < 2 << 30) {
        // SAFETY: mallopt only sets a glibc tunable; it is called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
