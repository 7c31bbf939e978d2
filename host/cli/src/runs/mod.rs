//! `plait runs list` and `plait runs show` (a run as a timeline).

pub mod select;
mod timeline;

use std::io::Write as _;
use std::process::ExitCode;

use plait::executor::RunReport;
use plait::store::{RunStatus, StoreError};
use plait::telemetry::escape;
use serde_json::json;

use super::home::Home;
use super::observe::parse_when;
use super::{StoreArgs, UsageError, output};

/// `plait runs ...`
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List stored runs, oldest first.
    List {
        /// Only runs of this workflow (its `name`).
        #[arg(long, value_name = "NAME")]
        workflow: Option<String>,
        /// Only runs with this status: running, waiting, succeeded, failed,
        /// cancelled.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only runs created after this: a duration ago (`2h`, `7d`) or an
        /// RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only runs created before this (same forms as `--since`).
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Only the newest N of those.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one run as a timeline: its steps, each attempt, backoffs and
    /// waits, durations, errors, cache hits.
    Show {
        /// The run id, or its start when no other run's id starts so.
        #[arg(value_name = "RUN_ID", required_unless_present = "last")]
        run_id: Option<String>,
        /// The run created most recently.
        #[arg(long, conflicts_with = "run_id")]
        last: bool,
        #[command(flatten)]
        store: StoreArgs,
        /// Also show what each step logged and printed, per attempt.
        #[arg(long)]
        logs: bool,
        /// Print exactly one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

impl RunsCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            RunsCommand::List { store, .. } | RunsCommand::Show { store, .. } => store,
        }
    }
}

/// The filters of `plait runs list`.
struct Filter {
    workflow: Option<String>,
    status: Option<RunStatus>,
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<usize>,
}

/// Runs a `runs` subcommand.
pub fn main(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List {
            workflow,
            status,
            since,
            until,
            limit,
            store,
            json,
        } => {
            let status = status
                .map(|status| {
                    RunStatus::ALL
                        .into_iter()
                    .find(|known| known.as_str() == status.trim())
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--status `{status}` is not a run status; use running, waiting, succeeded, failed or cancelled"
                        ))
                    })
                })
                .transpose()?;
            let filter = Filter {
                workflow,
                status,
                since: since.map(|s| parse_when("--since", &s)).transpose()?,
                until: until.map(|u| parse_when("--until", &u)).transpose()?,
                limit,
            };
            list(store, &filter, json)
        }
        RunsCommand::Show {
            run_id,
            last,
            store,
            logs,
            json,
        } => show(store, run_id.as_deref(), last, logs, json),
    }
}

fn list(store: StoreArgs, filter: &Filter, json: bool) -> anyhow::Result<ExitCode> {
    let store = Home::resolve(store.store)?.open_store_or_remote()?;
    let mut runs: Vec<_> = store
        .runs()?
        .into_iter()
        .filter(|run| {
            filter
                .workflow
                .as_deref()
                .is_none_or(|name| run.workflow.name == name)
                && filter.status.is_none_or(|status| run.status == status)
                && filter.since.is_none_or(|since| run.created_at_ms >= since)
                && filter.until.is_none_or(|until| run.created_at_ms < until)
        })
        .collect();
    if let Some(limit) = filter.limit {
        let skip = runs.len().saturating_sub(limit);
        runs.drain(..skip);
    }
    if json {
        let runs: Vec<_> = runs
            .iter()
            .map(|run| {
                json!({
                    "run_id": run.id,
                    "workflow": run.workflow.name,
                    "status": run.status.as_str(),
                    "created_at": output::timestamp(run.created_at_ms),
                    "updated_at": output::timestamp(run.updated_at_ms),
                    "started_by": run.started_by,
                })
            })
            .collect();
        output::print_json(&json!(runs))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::stdout().lock();
    if runs.is_empty() {
        if filter.workflow.is_some()
            || filter.status.is_some()
            || filter.since.is_some()
            || filter.until.is_some()
        {
            writeln!(stdout, "no runs match")?;
        } else {
            writeln!(stdout, "no runs yet; start one with `plait run WORKFLOW`")?;
        }
    } else {
        writeln!(
            stdout,
            "{:<36}  {:<20}  {:<9}  {:<20}  TOOK",
            "RUN ID", "WORKFLOW", "STATUS", "CREATED"
        )?;
        for run in &runs {
            let took = match run.status {
                RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => {
                    timeline::duration(run.updated_at_ms.saturating_sub(run.created_at_ms))
                }
                _ => "-".to_owned(),
            };
            writeln!(
                stdout,
                "{:<36}  {:<20}  {:<9}  {:<20}  {took}",
                run.id,
                run.workflow.name,
                run.status.as_str(),
                output::timestamp(run.created_at_ms)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(
    store: StoreArgs,
    run_id: Option<&str>,
    last: bool,
    with_logs: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = Home::resolve(store.store)?.open_store_or_remote()?;
    let run_id = &select::resolve(store.as_ref(), run_id, last)?;
    let run = store
        .run(run_id)?
        .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
    let steps = store.steps(run_id)?;
    let logs = if with_logs {
        Some(
            steps
                .iter()
                .map(|step| store.logs(run_id, step.index))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    let interrupted = interrupted_at(store.as_ref(), &run, &steps)?;
    let report = RunReport { run, steps };
    if json {
        let mut shown = output::run_json(&report, logs.as_deref());
        if let (Some(heard_ms), Some(object)) = (interrupted, shown.as_object_mut()) {
            object.insert(
                "interrupted".to_owned(),
                serde_json::json!({
                    "last_heard_at": output::timestamp(heard_ms),
                    "last_heard_at_ms": heard_ms,
                    "continue_with": format!("plait resume {}", report.run.id),
                }),
            );
        }
        output::print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let run = &report.run;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "run       {}", run.id)?;
    writeln!(
        stdout,
        "workflow  {} {} ({})",
        run.workflow.name,
        run.workflow.version,
        run.workflow.path.display()
    )?;
    let now = plait::clock::now_ms();
    let took = match run.status {
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled => format!(
            " in {}",
            timeline::duration(run.updated_at_ms.saturating_sub(run.created_at_ms))
        ),
        _ => String::new(),
    };
    match interrupted {
        Some(heard_ms) => writeln!(
            stdout,
            "status    interrupted: the host running it stopped (last heard of {}, {} ago); \
             `plait resume {}` continues it",
            output::timestamp(heard_ms),
            timeline::duration(now.saturating_sub(heard_ms)),
            run.id
        )?,
        None => writeln!(stdout, "status    {}{took}", run.status.as_str())?,
    }
    if let Some(actor) = &run.started_by {
        writeln!(stdout, "by        {actor}")?;
    }
    writeln!(stdout, "created   {}", output::timestamp(run.created_at_ms))?;
    writeln!(stdout, "updated   {}", output::timestamp(run.updated_at_ms))?;
    if let Some(trace) = &run.trace {
        writeln!(stdout, "trace     {}", trace.trace_id)?;
    }
    if let Some(error) = &run.error {
        writeln!(stdout, "error     {}", escape::terminal(&error.to_string()))?;
    }
    writeln!(stdout, "input     {}", escape::json(&run.input.to_string()))?;
    for blob in &run.input_blobs {
        writeln!(stdout, "  blob    {}", output::blob_line(blob))?;
    }
    writeln!(stdout)?;
    let (header, blocks) = timeline::render(run, &report.steps, now, interrupted);
    writeln!(stdout, "{header}")?;
    for (index, block) in blocks.iter().enumerate() {
        for line in block {
            // A line quotes step errors: the steps' text, escaped.
            writeln!(stdout, "{}", escape::terminal(line))?;
        }
        if let Some(logs) = logs.as_ref().and_then(|logs| logs.get(index)) {
            for attempt in logs {
                writeln!(stdout, "      attempt {}:", attempt.attempt)?;
                for record in &attempt.logs.records {
                    let fields: Vec<String> = record
                        .fields
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    // A step's record is the step's text: one escaped line.
                    writeln!(
                        stdout,
                        "        {:?} {}",
                        record.level,
                        escape::terminal(&format!("{} {}", record.message, fields.join(" ")))
                    )?;
                }
                if attempt.logs.dropped_records > 0 {
                    writeln!(
                        stdout,
                        "        ({} more records dropped)",
                        attempt.logs.dropped_records
                    )?;
                }
                for (stream, captured) in [
                    ("stdout", &attempt.logs.stdout),
                    ("stderr", &attempt.logs.stderr),
                ] {
                    if !captured.text.is_empty() {
                        writeln!(
                            stdout,
                            "        {stream}: {}",
                            escape::terminal_lines(captured.text.trim_end())
                                .replace('\n', "\n          ")
                        )?;
                    }
                    if captured.dropped_bytes > 0 {
                        writeln!(
                            stdout,
                            "        ({} more bytes of {stream} dropped)",
                            captured.dropped_bytes
                        )?;
                    }
                }
            }
        }
    }
    writeln!(stdout)?;
    match &run.output {
        Some(output) => writeln!(stdout, "output    {}", escape::json(&output.to_string()))?,
        None => writeln!(stdout, "output    (none yet)")?,
    }
    for blob in &run.output_blobs {
        writeln!(stdout, "  blob    {}", output::blob_line(blob))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// When run `run` was last heard of, if it is `running` but no host
/// executes it any more (its lease lapsed: the host died, or this store
/// was opened since): the latest of its lease's last renewal and what its
/// records say happened.
fn interrupted_at(
    store: &dyn plait::store::RunStore,
    run: &plait::store::RunRecord,
    steps: &[plait::store::StepRecord],
) -> anyhow::Result<Option<u64>> {
    if run.status != RunStatus::Running {
        return Ok(None);
    }
    let Some(lease) = store.lease(&run.id)? else {
        return Ok(None);
    };
    if lease.expires_at_ms > plait::clock::now_ms() {
        return Ok(None);
    }
    let heard = steps
        .iter()
        .flat_map(|step| [step.started_at_ms, step.finished_at_ms])
        .flatten()
        .chain([lease.renewed_at_ms, run.updated_at_ms])
        .max()
        .unwrap_or(run.updated_at_ms);
    Ok(Some(heard))
}
