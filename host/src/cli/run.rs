//! `plait run`, `plait resume` and `plait signal`.
//!
//! The process that executes a run keeps it until it ends, waits included:
//! a `wait` step's signal reaches it through the store's inbox. Stopping
//! the process (Ctrl-C, a kill, a crash) leaves the run waiting in the
//! store; `plait resume` or `plait signal` continues it.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use plait::definition::Definition;
use plait::executor::{Executor, Origin, RunReport, StartRequest};
use plait::plan::Plan;
use plait::step::Blob;
use plait::store::{RunStatus, RunStore as _};

use super::home::Home;
use super::output;
use super::progress::Progress;
use super::{StoreArgs, UsageError};

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
            actor: Some(super::actor()),
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

/// Arguments of `plait resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run to continue: its id, or its start when no other run's id
    /// starts so.
    #[arg(value_name = "RUN_ID", required_unless_present_any = ["all", "last"])]
    run_id: Option<String>,
    /// Continue the run created most recently.
    #[arg(long, conflicts_with_all = ["run_id", "all"])]
    last: bool,
    /// Continue every run a stopped host left in flight (`running`, or
    /// `waiting` on a sleep or a backoff), concurrently; runs waiting for a
    /// signal are left to `plait signal`.
    #[arg(long, conflicts_with = "run_id")]
    all: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    observe: ObserveArgs,
    /// Print exactly one JSON object describing the run on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `plait signal`.
#[derive(Debug, clap::Args)]
pub struct SignalArgs {
    /// The run: its id, or its start when no other run's id starts so.
    /// With `--last`, leave it out: `plait signal --last STEP_ID`.
    #[arg(value_name = "RUN_ID", required_unless_present = "last")]
    run_id: Option<String>,
    /// The `type: wait` step to signal.
    #[arg(value_name = "STEP_ID", required_unless_present = "last")]
    step_id: Option<String>,
    /// Signal the run created most recently.
    #[arg(long)]
    last: bool,
    /// The step's output, as JSON [default: {}].
    #[arg(long, value_name = "JSON")]
    data: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    observe: ObserveArgs,
    /// Print exactly one JSON object describing the run on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `plait cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run to stop: its id, or its start when no other run's id
    /// starts so.
    #[arg(value_name = "RUN_ID", required_unless_present = "last")]
    run_id: Option<String>,
    /// Stop the run created most recently.
    #[arg(long, conflicts_with = "run_id")]
    last: bool,
    /// Why, for the run's error and the audit log.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print exactly one JSON object describing the run on stdout (when it
    /// was cancelled here).
    #[arg(long)]
    json: bool,
}

/// `plait cancel`: stops the run here if no process executes it; else
/// leaves the request in the store's inbox for the process that does.
pub fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    use plait::executor::Cancelled;
    let origin = Origin {
        actor: Some(super::actor()),
        trace_parent: None,
    };
    let home = Home::resolve(args.store.store.clone())?;
    let Some(store) = home.open_store_unless_held()? else {
        let (run_id, holder) =
            super::runs::select::held_run(&home, args.run_id.as_deref(), args.last, None)?;
        let request = plait::executor::cancel_request(&run_id, args.reason.as_deref(), &origin);
        plait::store::post_signal(&home.journal_dir(), &request.to_signal())
            .context("leaving the cancel request in the store's inbox")?;
        eprintln!(
            "another plait process holds the store{}; the cancel request for run {run_id} waits in its inbox, and the run stops within a second if that process runs it (else when it is next resumed)",
            holder
                .map(|holder| format!(" ({holder})"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let run_id = &super::runs::select::resolve(store.as_ref(), args.run_id.as_deref(), args.last)?;
    let executor = Executor::new(store);
    match executor.cancel_with(run_id, args.reason.as_deref(), &origin)? {
        Cancelled::Now(report) => {
            if args.json {
                output::print_json(&output::run_json(&report, None))?;
            } else {
                eprintln!(
                    "run {} cancelled: {}",
                    report.run.id,
                    report.run.error.as_deref().unwrap_or_default()
                );
            }
        }
        Cancelled::Requested => {
            eprintln!("cancel requested; the process running {run_id} stops it within a second")
        }
        Cancelled::AlreadyRequested => eprintln!(
            "a cancel of run {run_id} was already requested; it stops when the process running it next looks"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

impl RunArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
}

impl ResumeArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
}

impl SignalArgs {
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

/// How many runs of a batch are in flight at once (their steps are bounded
/// by the host's concurrency besides).
const BATCH_RUNS: usize = 64;

/// `plait run --batch FILE.jsonl`.
async fn run_batch(args: &RunArgs, batch: &Path) -> anyhow::Result<ExitCode> {
    let text = plait::files::read(batch, plait::files::Kind::Input).map_err(|error| {
        UsageError(format!(
            "could not read `--batch {}`: {error}",
            batch.display()
        ))
    })?;
    let prefix = match &args.idempotency_key {
        Some(key) => key.clone(),
        None => format!("batch:{}", &plait::digest::digest(&text)[7..23]),
    };
    let text = String::from_utf8(text)
        .map_err(|_| UsageError(format!("`--batch {}` is not UTF-8 text", batch.display())))?;
    let mut inputs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let input: serde_json::Value = plait::json::from_str(line).map_err(|error| {
            UsageError(format!(
                "line {} of `{}` is not a JSON document: {error}; `--batch` takes one workflow input per line",
                number + 1,
                batch.display()
            ))
        })?;
        inputs.push((format!("{prefix}:{}", number + 1), input));
    }
    let origin = std::sync::Arc::new(args.observe.origin()?);
    let home = Home::resolve(args.store.store.clone())?;
    let policy = home.policy(args.store.policy.clone())?;
    check_input_size(args, policy.max_input)?;
    let blobs = args
        .files
        .iter()
        .map(|file| read_blob(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let definition = Definition::load(&home.workflow_path(&args.workflow)?)?;
    let store = home.open_store()?;
    collect_if_due(&home, &store, &policy)?;
    let engine = home.engine(&policy)?;
    let plan = std::sync::Arc::new(Plan::build_with(&engine, definition, &policy).await?);
    let (executor, _server) = args.observe.executor(&store, policy.concurrency).await?;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(BATCH_RUNS));
    let mut tasks = tokio::task::JoinSet::new();
    let progress = Progress::new("runs", Some(inputs.len() as u64));
    for (index, (key, input)) in inputs.into_iter().enumerate() {
        let (executor, plan, blobs, gate, origin) = (
            executor.clone(),
            plan.clone(),
            blobs.clone(),
            gate.clone(),
            origin.clone(),
        );
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let report = executor
                .start(
                    &plan,
                    StartRequest::new(input)
                        .blobs(blobs)
                        .idempotency_key(Some(key.clone()))
                        .origin(Origin::clone(&origin)),
                )
                .await;
            (index, key, report)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let joined = joined?;
        progress.inc();
        progress.message(format!("{} done", joined.1));
        results.push(joined);
    }
    progress.finish();
    results.sort_by_key(|(index, _, _)| *index);
    let mut failed = 0;
    let mut reports = Vec::new();
    for (_, key, report) in results {
        match report {
            Ok(report) => {
                if report.run.status != RunStatus::Succeeded {
                    failed += 1;
                }
                if !args.json {
                    let mut line = format!(
                        "{key}  run {} {}",
                        report.run.id,
                        report.run.status.as_str()
                    );
                    if let Some(error) = &report.run.error {
                        line.push_str(&format!(": {error}"));
                    }
                    eprintln!("{}", plait::telemetry::escape::terminal(&line));
                }
                reports.push(output::run_json(&report, None));
            }
            Err(error) => {
                failed += 1;
                eprintln!(
                    "{}",
                    plait::telemetry::escape::terminal(&format!("{key}  error: {error}"))
                );
                reports.push(serde_json::json!({"idempotency_key": key, "status": "error", "error": error.to_string()}));
            }
        }
    }
    if args.json {
        output::print_json(&serde_json::Value::Array(reports))?;
    } else {
        eprintln!(
            "{} runs, {} succeeded, {failed} did not",
            reports.len(),
            reports.len() - failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_RUN_FAILED)
    })
}

/// The automatic collection: at most once a day, before anything runs.
fn collect_if_due(
    home: &Home,
    store: &plait::store::SledStore,
    policy: &plait::policy::Policy,
) -> anyhow::Result<()> {
    if !policy.auto_gc {
        return Ok(());
    }
    let now = plait::clock::now_ms();
    if let Some(report) = store.gc_if_due(policy.retention.as_millis() as u64, now)? {
        if report.runs + report.blobs + report.cache_entries > 0 {
            super::store::collected(home, store, &report)?;
        }
        tracing::info!(
            runs = report.runs,
            blobs = report.blobs,
            bytes = report.bytes,
            "collected finished runs past the retention period"
        );
    }
    Ok(())
}

/// `plait resume`.
pub async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let origin = args.observe.origin()?;
    let home = Home::resolve(args.store.store.clone())?;
    let policy = home.policy(args.store.policy.clone())?;
    let store = home.open_store()?;
    let (executor, _server) = args.observe.executor(&store, policy.concurrency).await?;
    if args.all {
        return resume_all(&home, &policy, &store, &executor, &origin, args.json).await;
    }
    let run_id = super::runs::select::resolve(store.as_ref(), args.run_id.as_deref(), args.last)?;
    let run = store
        .run(&run_id)?
        .ok_or_else(|| plait::store::StoreError::UnknownRun(run_id.clone()))?;
    if run.status == RunStatus::Succeeded {
        // Nothing to execute: report the stored result.
        let steps = store.steps(&run.id)?;
        return finish(&RunReport { run, steps }, args.json);
    }
    let plan = plan_of_run(&home.engine(&policy)?, &policy, &store, &run).await?;
    // Asked for by id: resumed however often its host died in it (only
    // recoveries set a limit).
    let (progress, follower) = follow(&executor, plan.steps.len());
    let report = executor.resume_with(&plan, &run.id, &origin).await;
    follower.abort();
    progress.finish();
    finish(&report?, args.json)
}

/// `plait resume --all`: every run left in flight, concurrently.
async fn resume_all(
    home: &Home,
    policy: &plait::policy::Policy,
    store: &std::sync::Arc<plait::store::SledStore>,
    executor: &Executor,
    origin: &Origin,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let engine = home.engine(policy)?;
    let (mut tasks, recovered) =
        recover(&engine, policy, store, executor, Some(origin), None).await?;
    // `recover` logged what it took over (a line on stderr, with
    // `--json` too: stdout keeps its array of runs).
    let skipped = recovered.awaiting_signal;
    let mut reports = Vec::new();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let report = joined??;
        if report.run.status != RunStatus::Succeeded {
            failed += 1;
        }
        if !json {
            eprintln!("run {} {}", report.run.id, report.run.status.as_str());
        }
        reports.push(output::run_json(&report, None));
    }
    if json {
        output::print_json(&serde_json::Value::Array(reports))?;
    } else {
        eprintln!(
            "{} runs continued, {failed} did not succeed; {skipped} wait for a signal",
            reports.len()
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_RUN_FAILED)
    })
}

/// What a recovery took over.
#[derive(Debug, Default)]
struct Recovered {
    /// Runs taken over.
    runs: usize,
    /// Attempts the dead host had in flight (they run again).
    interrupted: usize,
    /// Runs taken over that were waiting on a sleep or a backoff.
    waiting: usize,
    /// Runs left waiting for a signal.
    awaiting_signal: usize,
    /// From listing the runs to the last one taken over (its lease taken
    /// and its resume recorded).
    took: std::time::Duration,
}

impl Recovered {
    /// `recovered 6 runs in 41 ms (2 steps interrupted, 1 waiting)`.
    fn line(&self) -> String {
        format!(
            "recovered {} runs in {} ms ({} steps interrupted, {} waiting)",
            self.runs,
            self.took.as_millis(),
            self.interrupted,
            self.waiting
        )
    }
}

/// Runs a dead host left in flight, each continuing as a task on
/// `executor`: `running` ones and those `waiting` on a sleep or a backoff.
/// Runs waiting for a signal are left alone (they would hold the command
/// for ever) and counted. Returns once every run is taken over, with what
/// was recovered and how long that took; a run the host died in too often
/// is failed rather than resumed (see
/// [`Executor::with_max_interruptions`]).
async fn recover(
    engine: &plait::engine::Engine,
    policy: &plait::policy::Policy,
    store: &std::sync::Arc<plait::store::SledStore>,
    executor: &Executor,
    origin: Option<&Origin>,
    own_key: Option<&str>,
) -> anyhow::Result<(
    tokio::task::JoinSet<Result<RunReport, plait::executor::ExecutorError>>,
    Recovered,
)> {
    use plait::store::StepStatus;
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        target: "plait::executor",
        "recover",
        runs = tracing::field::Empty,
        interrupted = tracing::field::Empty,
        waiting = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let executor = &executor
        .clone()
        .with_max_interruptions(policy.max_interruptions);
    let mut tasks = tokio::task::JoinSet::new();
    let mut recovered = Recovered::default();
    // One plan per workflow and components, not one per run: building a
    // plan instantiates every component to describe it.
    let mut plans: std::collections::HashMap<String, std::sync::Arc<Plan>> =
        std::collections::HashMap::new();
    let mut taking = std::collections::HashSet::new();
    // Subscribed before any run starts, so no takeover is missed.
    let mut events = executor.subscribe();
    let (ended_sender, mut ended) = tokio::sync::mpsc::unbounded_channel();
    for run in store.runs()? {
        // The run this command is about to start or continue itself.
        if !matches!(
            run.status,
            RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
        ) || (own_key.is_some() && run.idempotency_key.as_deref() == own_key)
        {
            continue;
        }
        let steps = store.steps(&run.id)?;
        let mut key = run.workflow.digest.clone();
        for step in &steps {
            key.push(' ');
            key.push_str(&step.component_digest);
        }
        let plan = match plans.get(&key) {
            Some(plan) => plan.clone(),
            None => {
                let plan = std::sync::Arc::new(plan_of_run(engine, policy, store, &run).await?);
                plans.insert(key, plan.clone());
                plan
            }
        };
        // A run waiting for a signal would hold this command for ever.
        let awaits_signal = steps.iter().zip(&plan.steps).any(|(record, planned)| {
            record.status == StepStatus::Waiting
                && matches!(
                    planned.definition.kind,
                    plait::definition::StepKind::Wait { .. }
                )
        });
        if awaits_signal {
            recovered.awaiting_signal += 1;
            eprintln!(
                "run {} waits for a signal; `plait signal` continues it",
                run.id
            );
            continue;
        }
        recovered.runs += 1;
        if run.status == RunStatus::Waiting {
            recovered.waiting += 1;
        } else if run.status == RunStatus::Running {
            recovered.interrupted += steps
                .iter()
                .map(plait::store::StepRecord::attempts_in_flight)
                .sum::<usize>();
        }
        taking.insert(run.id.clone());
        let executor = executor.clone();
        let origin = origin.cloned().unwrap_or_default();
        let ended = ended_sender.clone();
        tasks.spawn(async move {
            let report = executor.resume_with(&plan, &run.id, &origin).await;
            let _ = ended.send(run.id);
            report
        });
    }
    // Taken over once its resume is recorded (the run's first event), or
    // once it ended, was refused or failed to start. The bound only keeps
    // a stalled takeover from holding the report.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !taking.is_empty() {
        let taken = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => Some(event.run_id),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                Err(_) => break,
            },
            Some(run_id) = ended.recv() => Some(run_id),
            () = tokio::time::sleep_until(deadline) => break,
        };
        if let Some(run_id) = taken {
            taking.remove(&run_id);
        }
    }
    recovered.took = started.elapsed();
    span.record("runs", recovered.runs);
    span.record("interrupted", recovered.interrupted);
    span.record("waiting", recovered.waiting);
    span.record("duration_ms", recovered.took.as_millis() as u64);
    if recovered.runs > 0 {
        tracing::info!(
            target: "plait::executor",
            parent: &span,
            runs = recovered.runs,
            interrupted = recovered.interrupted,
            waiting = recovered.waiting,
            duration_ms = recovered.took.as_millis() as u64,
            "{}",
            recovered.line()
        );
    }
    Ok((tasks, recovered))
}

/// The plan a run started with: its definition and components as pinned in
/// the store when it was created, whatever the files hold now. (Runs
/// created before pinning fall back to the files, and resume refuses if
/// those changed.)
async fn plan_of_run(
    engine: &plait::engine::Engine,
    policy: &plait::policy::Policy,
    store: &std::sync::Arc<plait::store::SledStore>,
    run: &plait::store::RunRecord,
) -> anyhow::Result<Plan> {
    use plait::plan::RunPlanError;
    // Unwrapped, so that the exit code and the rendering see the cause.
    Plan::of_run(engine, policy, store.as_ref(), run)
        .await
        .map_err(|error| match error {
            RunPlanError::Definition(errors) => errors.into(),
            RunPlanError::Store(error) => error.into(),
            other => other.into(),
        })
}

/// `plait signal`: records the signal and continues the run here, or,
/// when another process holds the store (the one executing the run), leaves
/// the signal in the store's inbox for it.
pub async fn signal(args: SignalArgs) -> anyhow::Result<ExitCode> {
    let data: serde_json::Value = match args.data.as_deref() {
        None => serde_json::json!({}),
        Some(text) => plait::json::from_str(text).map_err(|error| {
            UsageError(format!(
                "`--data` is not valid JSON: {error}; for example `--data '{{\"approved\": true}}'`"
            ))
        })?,
    };
    let origin = args.observe.origin()?;
    let home = Home::resolve(args.store.store)?;
    let policy = home.policy(args.store.policy)?;
    // `plait signal --last STEP_ID`: the one word given is the step.
    let (run_id, step_id) = match (args.run_id, args.step_id, args.last) {
        (Some(run_id), Some(step_id), false) => (Some(run_id), step_id),
        (Some(step_id), None, true) => (None, step_id),
        _ => {
            return Err(UsageError(
                "give `RUN_ID STEP_ID`, or `--last STEP_ID` for the run created most recently"
                    .to_owned(),
            )
            .into());
        }
    };
    let Some(store) = home.open_store_unless_held()? else {
        let (run_id, holder) =
            super::runs::select::held_run(&home, run_id.as_deref(), args.last, Some(&step_id))?;
        let signal = plait::store::Signal {
            run_id: run_id.clone(),
            step_id: step_id.clone(),
            data,
            sent_at_ms: plait::clock::now_ms(),
            sent_by: origin.actor.clone(),
        };
        plait::store::post_signal(&home.journal_dir(), &signal)
            .context("leaving the signal in the store's inbox")?;
        eprintln!(
            "another plait process holds the store{}; the signal for step `{step_id}` of run {run_id} waits in its inbox and is delivered within a second",
            holder
                .map(|holder| format!(" ({holder})"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let run_id = super::runs::select::resolve(store.as_ref(), run_id.as_deref(), args.last)?;
    let run = store
        .run(&run_id)?
        .ok_or_else(|| plait::store::StoreError::UnknownRun(run_id.clone()))?;
    let plan = plan_of_run(&home.engine(&policy)?, &policy, &store, &run).await?;
    let (executor, _server) = args.observe.executor(&store, policy.concurrency).await?;
    executor.signal_with(&plan, &run.id, &step_id, data, &origin)?;
    eprintln!(
        "signal delivered to step `{step_id}`; continuing run {}",
        run.id
    );
    let (progress, follower) = follow(&executor, plan.steps.len());
    let report = executor.resume_with(&plan, &run.id, &origin).await;
    follower.abort();
    progress.finish();
    finish(&report?, args.json)
}

fn finish(report: &RunReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        output::print_json(&output::run_json(report, None))?;
    } else {
        output::print_run(report)?;
    }
    Ok(match report.run.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(super::EXIT_RUN_FAILED),
    })
}

/// What an `--input` value is: `-` is stdin, `@PATH` a file, a value that
/// starts like a JSON document (`{`, `[`, `"`, a number, `true`, `false`,
/// `null`) is that JSON, anything else a file path. A file whose name
/// looks like JSON is given as `@NAME` or `./NAME`.
#[derive(Debug, PartialEq, Eq)]
enum InputArg<'a> {
    Stdin,
    Inline(&'a str),
    File(&'a str),
}

impl<'a> InputArg<'a> {
    fn of(value: &'a str) -> InputArg<'a> {
        if value == "-" {
            return InputArg::Stdin;
        }
        if let Some(path) = value.strip_prefix('@') {
            return InputArg::File(path);
        }
        let text = value.trim();
        let looks_like_json = text.starts_with(['{', '[', '"'])
            || matches!(text, "true" | "false" | "null")
            || (text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
                && serde_json::from_str::<serde_json::Number>(text).is_ok());
        if looks_like_json {
            InputArg::Inline(value)
        } else {
            InputArg::File(value)
        }
    }

    /// The file it names, if it names one.
    fn file(&self) -> Option<&'a str> {
        match self {
            InputArg::File(path) => Some(path),
            _ => None,
        }
    }
}

/// Reads `--input`: inline JSON, a JSON file, `-` for stdin, or `{}` when
/// absent (see [`InputArg`]).
fn read_input(input: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let input = input.map(InputArg::of);
    let (text, source) = match input {
        None => return Ok(serde_json::json!({})),
        Some(InputArg::Inline(text)) => (text.to_owned(), "the command line".to_owned()),
        Some(InputArg::Stdin) => {
            let mut text = String::new();
            std::io::stdin()
                .take(plait::files::Kind::Input.cap())
                .read_to_string(&mut text)
                .context("reading the input from stdin")?;
            (text, "stdin".to_owned())
        }
        Some(InputArg::File(path)) => (
            plait::files::read_to_string(Path::new(path), plait::files::Kind::Input).map_err(
                |error| UsageError(format!("could not read input file `{path}`: {error}")),
            )?,
            format!("`{path}`"),
        ),
    };
    plait::json::from_str(&text).map_err(|error| {
        UsageError(format!(
            "the input from {source} is not valid JSON: {error}; `--input` takes inline JSON (`--input '{{\"text\": \"hi\"}}'`), a JSON file, `@FILE` or `-` for stdin"
        ))
        .into()
    })
}

/// Reads one `--file NAME=PATH`.
fn read_blob(argument: &str) -> anyhow::Result<Blob> {
    let (name, path) = argument
        .split_once('=')
        .filter(|(name, path)| !name.is_empty() && !path.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "`--file {argument}` must be `NAME=PATH`, for example `--file document=scan.png`"
            ))
        })?;
    let data = plait::files::read(Path::new(path), plait::files::Kind::Input)
        .map_err(|error| UsageError(format!("could not read `--file {name}={path}`: {error}")))?;
    Ok(Blob {
        name: name.to_owned(),
        media_type: plait::step::media_type_of(Path::new(path)).to_owned(),
        data,
    })
}
