//! `plait runs list` and `plait runs show`.

use std::io::Write as _;
use std::process::ExitCode;

use plait::executor::RunReport;
use plait::store::{RunStore as _, StoreError};
use serde_json::json;

use super::StoreArgs;
use super::home::Home;
use super::output;

/// `plait runs ...`
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List stored runs, oldest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: its input, output, and every step.
    Show {
        /// The run id.
        #[arg(value_name = "RUN_ID")]
        run_id: String,
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

/// Runs a `runs` subcommand.
pub fn main(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List { store, json } => list(store, json),
        RunsCommand::Show {
            run_id,
            store,
            logs,
            json,
        } => show(store, &run_id, logs, json),
    }
}

fn list(store: StoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    let store = Home::resolve(store.store)?.open_store()?;
    let runs = store.runs()?;
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
                })
            })
            .collect();
        output::print_json(&json!(runs))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::stdout().lock();
    if runs.is_empty() {
        writeln!(stdout, "no runs yet; start one with `plait run WORKFLOW`")?;
    } else {
        writeln!(
            stdout,
            "{:<36}  {:<20}  {:<9}  CREATED",
            "RUN ID", "WORKFLOW", "STATUS"
        )?;
        for run in &runs {
            writeln!(
                stdout,
                "{:<36}  {:<20}  {:<9}  {}",
                run.id,
                run.workflow.name,
                run.status.as_str(),
                output::timestamp(run.created_at_ms)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(store: StoreArgs, run_id: &str, with_logs: bool, json: bool) -> anyhow::Result<ExitCode> {
    let store = Home::resolve(store.store)?.open_store()?;
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
    let report = RunReport { run, steps };
    if json {
        output::print_json(&output::run_json(&report, logs.as_deref()))?;
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
    writeln!(stdout, "status    {}", run.status.as_str())?;
    writeln!(stdout, "created   {}", output::timestamp(run.created_at_ms))?;
    writeln!(stdout, "updated   {}", output::timestamp(run.updated_at_ms))?;
    if let Some(error) = &run.error {
        writeln!(stdout, "error     {error}")?;
    }
    writeln!(stdout, "input     {}", run.input)?;
    for blob in &run.input_blobs {
        writeln!(stdout, "  blob    {}", output::blob_line(blob))?;
    }
    writeln!(stdout, "steps")?;
    for (index, step) in report.steps.iter().enumerate() {
        writeln!(stdout, "  {}", output::step_line(step))?;
        if let Some(logs) = logs.as_ref().and_then(|logs| logs.get(index)) {
            for attempt in logs {
                writeln!(stdout, "      attempt {}:", attempt.attempt)?;
                for record in &attempt.logs.records {
                    let fields: Vec<String> = record
                        .fields
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    writeln!(
                        stdout,
                        "        {:?} {} {}",
                        record.level,
                        record.message,
                        fields.join(" ")
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
                            captured.text.trim_end().replace('\n', "\n          ")
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
    match &run.output {
        Some(output) => writeln!(stdout, "output    {output}")?,
        None => writeln!(stdout, "output    (none yet)")?,
    }
    for blob in &run.output_blobs {
        writeln!(stdout, "  blob    {}", output::blob_line(blob))?;
    }
    Ok(ExitCode::SUCCESS)
}
