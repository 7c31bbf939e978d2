//! `plait store check`: the store's integrity check.

use std::process::ExitCode;

use super::StoreArgs;
use super::home::Home;
use super::output;

/// `plait store ...`
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Check every record and every blob the records refer to (digests
    /// recomputed); exit 1 if anything is damaged or missing.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `store` subcommand.
pub fn main(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Check { store, json } => {
            let store = Home::resolve(store.store)?.open_store()?;
            let report = plait::store::check::check(store.as_ref())?;
            if json {
                output::print_json(&serde_json::to_value(&report)?)?;
            } else {
                for problem in &report.problems {
                    eprintln!("problem: {problem}");
                }
                eprintln!(
                    "{} runs, {} steps, {} blobs ({} bytes) checked: {}",
                    report.runs,
                    report.steps,
                    report.blobs,
                    report.bytes,
                    if report.problems.is_empty() {
                        "sound".to_owned()
                    } else {
                        format!("{} problems", report.problems.len())
                    }
                );
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_RUN_FAILED)
            })
        }
    }
}
