//! `plait resume`: one run, or every run an interrupted host left behind
//! (`--all`), each refused when it keeps killing its host.

use std::process::ExitCode;

use plait::executor::{Executor, Origin, RunReport};
use plait::plan::Plan;
use plait::store::{RunStatus, RunStore as _};

use super::{ObserveArgs, finish, follow};
use crate::StoreArgs;
use crate::home::Home;
use crate::output;

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

impl ResumeArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
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
    let run_id = crate::runs::select::resolve(store.as_ref(), args.run_id.as_deref(), args.last)?;
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
        ExitCode::from(crate::EXIT_RUN_FAILED)
    })
}

/// What a recovery took over.
#[derive(Debug, Default)]
pub(super) struct Recovered {
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
pub(super) async fn recover(
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
        let mut key = run.workflow.digest.to_string();
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
pub(super) async fn plan_of_run(
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
