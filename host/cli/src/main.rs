//! `plait`, the command-line interface: the edge of the crate graph, where
//! arguments become calls on the `plait` library and errors become exit
//! codes. The command names, flags and exit codes are a stable contract for
//! scripts.
//!
//! `main` is the only place that prints an error: it prints the whole chain
//! once and picks the exit code (0 success, 1 a run failed, 2 a usage,
//! definition or component error).

mod bundle;
mod home;
mod inspect;
mod observe;
pub mod output;
mod progress;
mod run;
mod runs;
#[cfg(feature = "server")]
mod serve;
mod store;
mod validate_json;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Exit code of a failed run.
pub const EXIT_RUN_FAILED: u8 = 1;
/// Exit code of a usage, definition or component error.
pub const EXIT_USAGE: u8 = 2;

/// Plait runs workflows of sandboxed WebAssembly steps, durably.
#[derive(Debug, Parser)]
#[command(
    name = "plait",
    version,
    long_version = concat!(
        env!("CARGO_PKG_VERSION"),
        "\ntarget: ",
        env!("PLAIT_TARGET"),
        "\nfeatures: ",
        env!("PLAIT_FEATURES"),
    ),
    about,
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// How the host reports what it does; every command takes these.
#[derive(Debug, clap::Args)]
struct TelemetryArgs {
    /// Log lines on stderr: `text` for people, `json` for log pipelines
    /// [default: the policy's `[telemetry] log_format`, else text].
    #[arg(long, global = true, value_name = "FORMAT", env = "PLAIT_LOG_FORMAT")]
    log_format: Option<plait::telemetry::LogFormat>,
    /// Export spans to this OpenTelemetry collector over OTLP/HTTP
    /// (`http://127.0.0.1:4318`) [default: the policy's `[telemetry]
    /// otlp_endpoint`, else $OTEL_EXPORTER_OTLP_ENDPOINT, else none].
    #[arg(long, global = true, value_name = "URL", env = "PLAIT_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
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
    #[arg(
        long,
        visible_alias = "config",
        value_name = "FILE",
        env = "PLAIT_POLICY"
    )]
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
    /// Stop a running or waiting run for good.
    Cancel(run::CancelArgs),
    /// List stored runs, and show one as a timeline.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Print a run's log: every host and step event, in order.
    Logs(observe::LogsArgs),
    /// Print the store's metrics in the Prometheus text format.
    Metrics(observe::MetricsArgs),
    /// Show who started, resumed, signalled or collected what, and when.
    Audit(observe::AuditArgs),
    /// Serve the HTTP API: start, watch and steer runs over HTTP.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
    /// Create, list and revoke the HTTP API's tokens.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// The HTTP API's webhooks: the secret their messages are signed with.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Webhooks(serve::WebhooksCommand),
    /// Template bundles: pack, sign, verify, inspect, install, list,
    /// remove, push to and pull from OCI registries.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Publisher keys that sign bundles.
    #[command(subcommand)]
    Key(bundle::KeyCommand),
    /// The publisher keys whose bundles this host installs.
    #[command(subcommand)]
    Trust(bundle::TrustCommand),
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
    /// Print a shell completion script: `plait completions bash >
    /// ~/.local/share/bash-completion/completions/plait` (docs/cli.md).
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// Parses the command line and runs the command.
async fn execute() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let telemetry = init_telemetry(&cli)?;
    let code = dispatch(cli.command).await;
    // The journal's socket goes with the command (see `Home::open_store`).
    home::close_sockets();
    // Spans still in the exporter's queue go out before the process ends;
    // off the async workers, whose runtime the export itself uses.
    let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
    code
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Resume(args) => run::resume(args).await,
        Command::Signal(args) => run::signal(args).await,
        Command::Cancel(args) => run::cancel(args),
        Command::Runs(command) => runs::main(command),
        Command::Logs(args) => observe::logs(args).await,
        Command::Metrics(args) => observe::metrics(args),
        Command::Audit(args) => observe::audit(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::serve(args).await,
        #[cfg(feature = "server")]
        Command::Token(command) => serve::token(command),
        #[cfg(feature = "server")]
        Command::Webhooks(command) => serve::webhooks(command),
        Command::Bundle(command) => bundle::bundle(command).await,
        Command::Key(command) => bundle::key(command),
        Command::Trust(command) => bundle::trust(command),
        Command::Store(command) => store::main(command),
        Command::Gc(args) => store::gc(args),
        Command::Validate(args) => inspect::validate(args).await,
        Command::Inspect(args) => inspect::inspect(args).await,
        Command::Schema => {
            let schema = plait::definition::format::json_schema();
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&schema)?
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            // Generated into memory: clap_complete panics on a failed
            // write, and a closed stdout must end quietly.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "plait", &mut script);
            std::io::stdout().write_all(&script)?;
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
                | StoreError::Held { .. }
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
                | ExecutorError::NoSuchStep { .. }
                | ExecutorError::NotAWaitStep(_)
                | ExecutorError::SignalToFinishedRun { .. }
                | ExecutorError::SignalToFinishedStep { .. }
                | ExecutorError::AlreadySignalled { .. }
                | ExecutorError::KeyReused { .. }
                | ExecutorError::InvalidKey(_)
                | ExecutorError::CancelFinishedRun { .. }
                | ExecutorError::ResumeCancelled { .. }
                | ExecutorError::WorkflowChanged { .. }
                | ExecutorError::ComponentChanged { .. } => EXIT_USAGE,
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
/// Control and bidi characters are escaped either way.
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
    // Names and values in errors come from definitions, inputs and guests:
    // escaped, so an error cannot move the cursor or forge a line.
    use plait::telemetry::escape;
    match definition_errors {
        Some(errors) => {
            // Each message and help is one line: a newline in a quoted
            // name is escaped too; the block's own layout stays.
            let blocks: Vec<String> = errors
                .iter()
                .map(|error| {
                    let mut error = error.clone();
                    error.message = escape::terminal(&error.message).into_owned();
                    error.help = error.help.map(|help| escape::terminal(&help).into_owned());
                    escape::terminal_lines(&error.to_string())
                })
                .collect();
            eprintln!("{}", blocks.join("\n\n"));
            let count = errors.len();
            eprintln!(
                "{count} error{} found; nothing was run",
                if count == 1 { "" } else { "s" }
            );
        }
        None => eprintln!("error: {}", escape::terminal(&format!("{error:#}"))),
    }
}

impl Command {
    /// The store and policy the command works on, if it has them.
    fn store_args(&self) -> Option<&StoreArgs> {
        match self {
            Command::Run(args) => Some(args.store_args()),
            Command::Resume(args) => Some(args.store_args()),
            Command::Signal(args) => Some(args.store_args()),
            Command::Cancel(args) => Some(&args.store),
            Command::Runs(command) => Some(command.store_args()),
            Command::Logs(args) => Some(&args.store),
            Command::Metrics(args) => Some(&args.store),
            Command::Audit(args) => Some(&args.store),
            Command::Store(command) => Some(command.store_args()),
            Command::Bundle(command) => Some(command.store_args()),
            Command::Key(command) => Some(command.store_args()),
            Command::Trust(command) => Some(command.store_args()),
            Command::Gc(args) => Some(args.store_args()),
            #[cfg(feature = "server")]
            Command::Serve(args) => Some(args.store_args()),
            #[cfg(feature = "server")]
            Command::Token(command) => Some(command.store_args()),
            #[cfg(feature = "server")]
            Command::Webhooks(command) => Some(command.store_args()),
            Command::Validate(_)
            | Command::Inspect(_)
            | Command::Schema
            | Command::Completions { .. } => None,
        }
    }
}

/// Logs go to stderr, filtered by `PLAIT_LOG` (default: warnings, plus
/// what steps log and what happens to runs), as text or JSON lines; each
/// run's events also go to `logs/RUN_ID.jsonl` in the Plait home, for
/// `plait logs`. Spans go to an OTLP collector when one is configured.
fn init_telemetry(cli: &Cli) -> anyhow::Result<plait::telemetry::Telemetry> {
    use plait::telemetry::{LogFormat, OtlpConfig, TelemetryConfig};
    // The policy's `[telemetry]` table, for commands that have a policy.
    // A broken policy is reported by the command itself.
    let (policy, run_logs) = match cli.command.store_args() {
        Some(store) => match home::Home::resolve(store.store.clone()) {
            Ok(home) => (
                home.policy(store.policy.clone()).ok(),
                Some(home.run_logs_dir()),
            ),
            Err(_) => (None, None),
        },
        None => (None, None),
    };
    let settings = policy.map(|policy| policy.telemetry).unwrap_or_default();
    let run_logs = run_logs.filter(|_| settings.run_logs != Some(false));
    let format = cli
        .telemetry
        .log_format
        .or(settings.log_format)
        .unwrap_or(LogFormat::Text);
    let env_set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    let endpoint = cli
        .telemetry
        .otlp_endpoint
        .clone()
        .filter(|url| !url.trim().is_empty())
        .or(settings.otlp_endpoint);
    let otlp = if disabled {
        None
    } else if endpoint.is_some()
        || env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    {
        Some(OtlpConfig {
            endpoint,
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .or(settings.service_name)
                .unwrap_or_else(|| "plait".to_owned()),
        })
    } else {
        None
    };
    let filter = std::env::var("PLAIT_LOG")
        .ok()
        .filter(|filter| !filter.trim().is_empty())
        .unwrap_or_else(|| plait::telemetry::DEFAULT_FILTER.to_owned());
    let telemetry = plait::telemetry::init(TelemetryConfig {
        log_format: format,
        filter,
        ansi: format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        sink: std::sync::Arc::new(progress::Sink),
        run_logs,
        otlp,
    })
    .map_err(|error| UsageError(error.to_string()))?;
    Ok(telemetry)
}

/// Who the CLI acts for, in the audit log: `user:$PLAIT_ACTOR`, else
/// `user:` the OS user.
pub fn actor() -> String {
    let name = ["PLAIT_ACTOR", "USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        })
        .or_else(os_user)
        .unwrap_or_else(|| "unknown".to_owned());
    format!("user:{name}")
}

/// The name of the user running this process, from its uid and
/// `/etc/passwd` (services often run without `$USER`).
fn os_user() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata("/proc/self").ok()?.uid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let name = passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
        });
        Some(name.unwrap_or_else(|| format!("uid{uid}")))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

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
    match runtime.block_on(execute()) {
        Ok(code) => code,
        // `plait runs list | head`: the reader has what it wanted.
        Err(error) if output::is_closed_stdout(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code(&error);
            print_error(&error);
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
