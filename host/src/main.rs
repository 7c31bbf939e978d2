//! The `plait` command-line interface.
//!
//! `main` is the only place that prints an error: it prints the whole chain
//! once and picks the exit code (0 success, 1 a run failed, 2 a usage,
//! definition or component error).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
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
