//! `plait signal` and `plait cancel`: to a run whether or not a process
//! executes it (through the store's inbox when one does).

use std::process::ExitCode;

use anyhow::Context as _;
use plait::executor::{Executor, Origin};
use plait::store::RunStore as _;

use super::resume::plan_of_run;
use super::{ObserveArgs, finish, follow};
use crate::home::Home;
use crate::output;
use crate::{StoreArgs, UsageError};

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
        actor: Some(crate::actor()),
        trace_parent: None,
    };
    let home = Home::resolve(args.store.store.clone())?;
    let Some(store) = home.open_store_unless_held()? else {
        let (run_id, holder) =
            crate::runs::select::held_run(&home, args.run_id.as_deref(), args.last, None)?;
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
    let run_id = &crate::runs::select::resolve(store.as_ref(), args.run_id.as_deref(), args.last)?;
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
        Cancelled::Requested => eprintln!(
            "cancel requested; the process running {run_id} stops it within a second \
             (if that process has died, its claim on the run lapses within 30 s: cancel again then)"
        ),
        Cancelled::AlreadyRequested => eprintln!(
            "a cancel of run {run_id} was already requested; it stops when the process running it next looks \
             (if that process has died, its claim on the run lapses within 30 s: cancel again then)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

impl SignalArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
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
            crate::runs::select::held_run(&home, run_id.as_deref(), args.last, Some(&step_id))?;
        let signal = plait::store::Signal {
            run_id: run_id.as_str().into(),
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
    let run_id = crate::runs::select::resolve(store.as_ref(), run_id.as_deref(), args.last)?;
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
