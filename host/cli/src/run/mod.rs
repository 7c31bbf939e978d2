//! `plait run`, with `plait resume`, `plait signal` and `plait cancel` in
//! their own files.
//!
//! The process that executes a run keeps it until it ends, waits included:
//! a `wait` step's signal reaches it through the store's inbox. Stopping
//! the process (Ctrl-C, a kill, a crash) leaves the run waiting in the
//! store; `plait resume` or `plait signal` continues it.

mod batch;
mod input;
mod resume;
mod signal;

pub use resume::{ResumeArgs, resume};
pub use signal::{CancelArgs, SignalArgs, cancel, signal};

use std::path::PathBuf;
use std::process::ExitCode;

use plait::definition::Definition;
use plait::executor::{Executor, Origin, RunReport, StartRequest};
use plait::plan::Plan;
use plait::store::RunStatus;

use crate::home::Home;
use crate::output;
use crate::progress::Progress;
use crate::{StoreArgs, UsageError};

use batch::{collect_if_due, run_batch};
use input::{InputArg, read_blob, read_input};
use resume::recover;

/// Arguments of `plait run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A workflow file, or a folder holding `workflow.yaml`.
    #[arg(value_name = "WORKFLOW")]
    workflow: PathBuf,
    /// The workflow input: inline JSON (`'{"text": "hi"}'`, any value
    /// starting with `{`, `[`, `"`, a number, true, false or null), a JSON
    /// file (`@FILE` when its name looks like JSON), or `-` for stdin
    /// [default: {}].
    #[arg(long, value_name = "JSON|FILE|-", conflicts_with = "batch")]
    input: Option<String>,
    /// Run the workflow once per line of a JSON Lines file, concurrently.
    /// Each line's run gets the idempotency key `KEY:LINE` (KEY: the
    /// `--idempotency-key`, else the file's digest), so the same command
    /// after a crash continues the same runs and starts only the missing.
    #[arg(long, value_name = "FILE.jsonl")]
    batch: Option<PathBuf>,
    /// Attach a file as a named input blob; repeatable.
    #[arg(long = "file", value_name = "NAME=PATH")]
    files: Vec<String>,
    /// Start at most one run for this key: repeating the command with the
    /// same key, workflow and input gives back (and continues) that run;
    /// with a different input it is refused.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    observe: ObserveArgs,
    /// Print exactly one JSON object describing the run on stdout.
    #[arg(long)]
    json: bool,
}

/// Tracing and metrics options of the commands that execute runs.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    /// The caller's W3C trace context: the run's spans join that trace
    /// (`00-<trace id>-<span id>-<flags>`).
    #[arg(long, value_name = "TRACEPARENT", env = "TRACEPARENT")]
    traceparent: Option<String>,
    /// Serve Prometheus metrics on `http://ADDR/metrics` while the command
    /// runs (`127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

impl ObserveArgs {
    /// Who acts, and in which trace.
    fn origin(&self) -> anyhow::Result<Origin> {
        let trace_parent = match self.traceparent.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(value) => match plait::telemetry::TraceContext::parse(value) {
                Ok(context) => Some(context),
                // An ambient `TRACEPARENT` that is not valid starts a new
                // trace, as the W3C spec asks of a bad header; a value
                // given on the command line is a usage error.
                Err(error) if std::env::var("TRACEPARENT").is_ok_and(|env| env.trim() == value) => {
                    tracing::warn!(target: "plait::executor", "ignoring $TRACEPARENT: {error}");
                    None
                }
                Err(error) => return Err(UsageError(format!("--traceparent: {error}")).into()),
            },
        };
        Ok(Origin {
            actor: Some(crate::actor()),
            trace_parent,
        })
    }

    /// An executor over `store`, counting into metrics served on
    /// `--metrics-listen` if given (the server lives as long as the
    /// returned handle).
    async fn executor(
        &self,
        store: &std::sync::Arc<plait::store::SledStore>,
        concurrency: usize,
    ) -> anyhow::Result<(Executor, Option<tokio::task::JoinHandle<()>>)> {
        let executor = Executor::with_concurrency(store.clone(), concurrency);
        let Some(address) = self.metrics_listen else {
            return Ok((executor, None));
        };
        let (bound, server) = plait::telemetry::metrics::listen(
            address,
            executor.metrics().clone(),
            Some(store.clone() as std::sync::Arc<dyn plait::store::RunStore>),
        )
        .await
        .map_err(|error| {
            UsageError(format!(
                "--metrics-listen {address}: cannot listen there: {error}"
            ))
        })?;
        tracing::info!(target: "plait::executor", "metrics at http://{bound}/metrics");
        Ok((executor, Some(server)))
    }
}

/// Shows one run's progress (on a terminal) while it executes.
fn follow(
    executor: &Executor,
    steps: usize,
) -> (std::sync::Arc<Progress>, tokio::task::JoinHandle<()>) {
    let progress = std::sync::Arc::new(Progress::new("steps", Some(steps as u64)));
    let mut events = executor.subscribe();
    let shown = progress.clone();
    let task = tokio::spawn(async move {
        if !shown.shown() {
            return;
        }
        loop {
            match events.recv().await {
                Ok(event) => shown.follow(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    (progress, task)
}

impl RunArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
}

/// `plait run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(batch) = &args.batch {
        return run_batch(&args, batch).await;
    }
    let origin = args.observe.origin()?;
    let home = Home::resolve(args.store.store.clone())?;
    let policy = home.policy(args.store.policy.clone())?;
    check_input_size(&args, policy.max_input)?;
    let input = read_input(args.input.as_deref())?;
    let blobs = args
        .files
        .iter()
        .map(|file| read_blob(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let definition = Definition::load(&home.workflow_path(&args.workflow)?)?;
    let store = home.open_store()?;
    collect_if_due(&home, &store, &policy)?;
    let engine = home.engine(&policy)?;
    let plan = Plan::build_with(&engine, definition, &policy).await?;
    let (executor, _server) = args.observe.executor(&store, policy.concurrency).await?;
    // `[runtime] recover`: this host continues what a dead one left in
    // flight, alongside its own run.
    let recovering = if policy.recover {
        Some(
            recover(
                &engine,
                &policy,
                &store,
                &executor,
                Some(&origin),
                args.idempotency_key.as_deref(),
            )
            .await?
            .0,
        )
    } else {
        None
    };
    let (progress, follower) = follow(&executor, plan.steps.len());
    let report = executor
        .start(
            &plan,
            StartRequest::new(input)
                .blobs(blobs)
                .idempotency_key(args.idempotency_key.clone())
                .origin(origin),
        )
        .await;
    follower.abort();
    progress.finish();
    let report = report?;
    if let Some(mut recovering) = recovering {
        while let Some(joined) = recovering.join_next().await {
            match joined? {
                Ok(recovered) => eprintln!(
                    "recovered run {} {}",
                    recovered.run.id,
                    recovered.run.status.as_str()
                ),
                Err(error) => eprintln!("error: a run left in flight could not go on: {error}"),
            }
        }
    }
    finish(&report, args.json)
}

/// Refuses a run whose input files weigh more than the policy allows,
/// before reading them: an explicit limit, never a silent truncation.
fn check_input_size(args: &RunArgs, max_input: u64) -> anyhow::Result<()> {
    let mut total = 0u64;
    let mut parts = Vec::new();
    for file in &args.files {
        if let Some((name, path)) = file.split_once('=')
            && let Ok(metadata) = std::fs::metadata(path)
        {
            total += metadata.len();
            parts.push(format!(
                "blob `{name}` {}",
                plait::limits::format_size(metadata.len())
            ));
        }
    }
    if let Some(input) = args.input.as_deref() {
        let inline = match InputArg::of(input) {
            InputArg::Inline(text) => text.len() as u64,
            _ => 0,
        };
        total += inline;
        if inline > 0 {
            parts.push(format!("input {}", plait::limits::format_size(inline)));
        }
    }
    if let Some(path) = args
        .input
        .as_deref()
        .and_then(|input| InputArg::of(input).file())
        && let Ok(metadata) = std::fs::metadata(path)
    {
        total += metadata.len();
        parts.push(format!(
            "input {}",
            plait::limits::format_size(metadata.len())
        ));
    }
    if total > max_input {
        return Err(UsageError(format!(
            "the run's input weighs {} ({}), over this host's limit of {}; raise `[runtime] max_input` in the policy, or pass less",
            plait::limits::format_size(total),
            parts.join(", "),
            plait::limits::format_size(max_input)
        ))
        .into());
    }
    Ok(())
}

fn finish(report: &RunReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        output::print_json(&output::run_json(report, None))?;
    } else {
        output::print_run(report)?;
    }
    Ok(match report.run.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(crate::EXIT_RUN_FAILED),
    })
}
