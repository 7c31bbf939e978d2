//! How runs are printed: one JSON object with `--json`, a short report
//! otherwise. Reports go to stderr and the output document to stdout, so
//! `plait run ... > out.json` captures just the output.

use std::io::Write as _;

use plait::executor::RunReport;
use plait::store::{AttemptLogs, BlobRef, StepRecord, StepStatus};
use plait::telemetry::escape;
use serde_json::{Value, json};

/// The JSON form of a run: `{"run_id", "status", "output", "steps", ...}`.
pub fn run_json(report: &RunReport, logs: Option<&[Vec<AttemptLogs>]>) -> Value {
    let run = &report.run;
    let steps: Vec<Value> = report
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let mut value = step_json(step);
            if let Some(logs) = logs {
                value["logs"] = json!(logs.get(index));
            }
            value
        })
        .collect();
    json!({
        "run_id": run.id,
        "status": run.status.as_str(),
        "workflow": {
            "name": run.workflow.name,
            "version": run.workflow.version,
            "path": run.workflow.path,
            "digest": run.workflow.digest,
        },
        "created_at": timestamp(run.created_at_ms),
        "updated_at": timestamp(run.updated_at_ms),
        "input": run.input,
        "input_blobs": run.input_blobs,
        "output": run.output,
        "output_blobs": run.output_blobs,
        "error": run.error,
        "idempotency_key": run.idempotency_key,
        "deadline": run.deadline_ms.map(timestamp),
        "trace_id": run.trace.as_ref().map(|trace| &trace.trace_id),
        "started_by": run.started_by,
        "steps": steps,
    })
}

fn step_json(step: &StepRecord) -> Value {
    json!({
        "id": step.id,
        "status": step.status.as_str(),
        "attempts": step.attempts,
        "duration_ms": step.duration_ms,
        "fuel_consumed": step.fuel_consumed,
        "component_digest": step.component_digest,
        "component": step.component,
        "output": step.output,
        "output_blobs": step.output_blobs,
        "error": step.error,
        "started_at_ms": step.started_at_ms,
        "finished_at_ms": step.finished_at_ms,
        "wake_at": step.wake_at_ms.map(timestamp),
        "wake_at_ms": step.wake_at_ms,
        "items": step.items,
        "history": step.history,
        "cache_hit": step.cache_hit,
    })
}

/// Whether `error` is a write to a stdout whose reader has gone
/// (`plait runs list | head`): the command then ends quietly, exit code 0.
/// Every write to stdout returns its error (`writeln!(...)?`, never
/// `println!`) so that it reaches `main`, which asks this.
pub fn is_closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// RFC 3339 UTC, to the second.
pub fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The human report: step lines and blobs on stderr, output on stdout.
pub fn print_run(report: &RunReport) -> anyhow::Result<()> {
    let run = &report.run;
    let mut stderr = std::io::stderr().lock();
    for step in &report.steps {
        writeln!(stderr, "{}", step_line(step))?;
    }
    match &run.error {
        Some(error) => writeln!(
            stderr,
            "run {} {}: {}",
            run.id,
            run.status.as_str(),
            escape::terminal(&error.to_string())
        )?,
        None => writeln!(stderr, "run {} {}", run.id, run.status.as_str())?,
    }
    for blob in &run.output_blobs {
        writeln!(stderr, "output blob {}", blob_line(blob))?;
    }
    drop(stderr);
    if let Some(output) = &run.output {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, output)?;
        writeln!(stdout)?;
    }
    Ok(())
}

/// One line per step: a mark, the id, the status and the time taken.
pub fn step_line(step: &StepRecord) -> String {
    let mark = match step.status {
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Running => "…",
        StepStatus::Pending => "·",
        StepStatus::Skipped => "-",
        StepStatus::Waiting => "⏸",
        StepStatus::Recovered => "↺",
    };
    let mut line = format!("{mark} {:<20} {}", step.id, step.status.as_str());
    if let Some(duration) = step.duration_ms {
        line.push_str(&format!(" in {duration} ms"));
    }
    if step.attempts > 1 {
        line.push_str(&format!(" (attempt {})", step.attempts));
    }
    if let Some(hit) = &step.cache_hit {
        line.push_str(&format!(" (cached: computed by run {})", hit.run_id));
    }
    if !step.items.is_empty() {
        let done = step
            .items
            .iter()
            .filter(|item| item.status == StepStatus::Succeeded)
            .count();
        line.push_str(&format!(" [{done}/{} items]", step.items.len()));
    }
    if step.status == StepStatus::Waiting
        && let Some(wake) = step.wake_at_ms
    {
        line.push_str(&format!(" until {}", timestamp(wake)));
    }
    if let Some(error) = &step.error {
        line.push_str(&format!(": {error}"));
    }
    // Step errors are the step's text: one line, escaped.
    escape::terminal(&line).into_owned()
}

/// `name (media type, N bytes, digest)`.
pub fn blob_line(blob: &BlobRef) -> String {
    format!(
        "`{}` ({}, {} bytes, {})",
        escape::terminal(&blob.name),
        escape::terminal(&blob.media_type),
        blob.size,
        blob.digest
    )
}
