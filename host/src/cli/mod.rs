//! Command-line parsing and dispatch. The command names, flags and exit codes
//! are a stable contract for scripts.

mod home;
mod inspect;
mod output;
mod run;
mod runs;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a failed run.
pub const EXIT_RUN_FAILED: u8 = 1;
/// Exit code of a usage, definition or component error.
pub const EXIT_USAGE: u8 = 2;

/// Plait runs workflows of sandboxed WebAssembly steps, durably.
#[derive(Debug, Parser)]
#[command(name = "plait", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where runs are stored: `--store`, else `PLAIT_HOME`, else the user's data
/// directory.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The Plait home directory holding the run journal and the compiled
    /// component cache [default: $PLAIT_HOME, else ~/.local/share/plait].
    #[arg(long, value_name = "DIR", env = "PLAIT_HOME")]
    store: Option<PathBuf>,
    /// The host policy: limits, what workflows may grant, where secrets
    /// come from [default: $PLAIT_POLICY, else plait.toml in the Plait
    /// home if it exists, else the built-in defaults].
    #[arg(long, value_name = "FILE", env = "PLAIT_POLICY")]
    policy: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow.
    Run(run::RunArgs),
    /// Continue an interrupted or failed run from its first unfinished step.
    Resume(run::ResumeArgs),
    /// Deliver a signal to a `wait` step of a run, and continue the run.
    Signal(run::SignalArgs),
    /// List and show stored runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Check the store's integrity.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Remove finished runs past the retention period and the blobs only
    /// they used.
    Gc(store::GcArgs),
    /// Check a workflow file and every component it uses, without running it.
    Validate(inspect::ValidateArgs),
    /// Show what a step component declares: name, schemas, grants, imports.
    Inspect(inspect::InspectArgs),
    /// Print the JSON Schema of workflow files, for editors
    /// (docs/workflow.schema.json holds the same).
    Schema,
}

/// Parses the command line and runs the command.
pub async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Resume(args) => run::resume(args).await,
        Command::Signal(args) => run::signal(args).await,
        Command::Runs(command) => runs::main(command),
        Command::Store(command) => store::main(command),
        Command::Gc(args) => store::gc(args),
        Command::Validate(args) => inspect::validate(args).await,
        Command::Inspect(args) => inspect::inspect(args).await,
        Command::Schema => {
            let schema = plait::definition::format::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An error caused by what the user gave: a usage, definition, input or
/// component problem. Exits with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error that ended a command.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    use plait::executor::ExecutorError;
    use plait::store::StoreError;
    for cause in error.chain() {
        if cause.is::<UsageError>()
            || cause.is::<plait::definition::DefinitionErrors>()
            || cause.is::<plait::definition::LoadError>()
            || cause.is::<plait::engine::ComponentError>()
            || cause.is::<plait::policy::PolicyError>()
        {
            return EXIT_USAGE;
        }
        if let Some(error) = cause.downcast_ref::<StoreError>() {
            return match error {
                StoreError::Locked { .. }
                | StoreError::LeaseHeld { .. }
                | StoreError::Foreign { .. }
                | StoreError::UnknownRun(_) => EXIT_USAGE,
                _ => EXIT_RUN_FAILED,
            };
        }
        if let Some(error) = cause.downcast_ref::<ExecutorError>() {
            return match error {
                ExecutorError::MissingInputBlob { .. }
                | ExecutorError::DuplicateInputBlob(_)
                | ExecutorError::InvalidInput(_)
                | ExecutorError::Signal(_)
                | ExecutorError::KeyReused { .. }
                | ExecutorError::InvalidKey(_)
                | ExecutorError::Changed(_) => EXIT_USAGE,
                ExecutorError::Store(StoreError::UnknownRun(_)) => EXIT_USAGE,
                _ => EXIT_RUN_FAILED,
            };
        }
    }
    EXIT_RUN_FAILED
}

/// Prints an error that ended a command, once, on stderr. Definition errors
/// are already rendered blocks (`error: ...` with the source line), followed
/// by a count; anything else is printed as its whole chain on one line.
pub fn print_error(error: &anyhow::Error) {
    let definition_errors = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<plait::definition::DefinitionErrors>()
            .or_else(
                || match cause.downcast_ref::<plait::definition::LoadError>() {
                    Some(plait::definition::LoadError::Invalid(errors)) => Some(errors),
                    _ => None,
                },
            )
    });
    match definition_errors {
        Some(errors) => {
            eprintln!("{errors}");
            let count = errors.len();
            eprintln!(
                "{count} error{} found; nothing was run",
                if count == 1 { "" } else { "s" }
            );
        }
        None => eprintln!("error: {error:#}"),
    }
}

/// Logs go to stderr; `PLAIT_LOG` filters them (default: warnings from the
/// host, info and above from steps).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLAIT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,plait::step=info,plait::executor=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}
