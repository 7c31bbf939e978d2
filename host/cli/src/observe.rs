//! `plait logs`, `plait metrics` and `plait audit`: what happened, from
//! the run log files, the store's records and its audit log.

use std::io::{BufRead as _, Seek as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

use super::home::Home;
use super::output;
use super::{StoreArgs, UsageError};

/// Arguments of `plait logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run: its id, or its start when no other run's id starts so.
    #[arg(value_name = "RUN_ID", required_unless_present = "last")]
    run_id: Option<String>,
    /// The run created most recently.
    #[arg(long, conflicts_with = "run_id")]
    last: bool,
    /// Keep printing new lines until the run ends (Ctrl-C to stop sooner).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Print the JSON lines as they are stored.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `plait metrics`.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Arguments of `plait audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only entries about this run.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// Only this action (`run.start`, `run.resume`, `run.signal`,
    /// `store.gc`, ...).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Only entries newer than this: a duration ago (`2h`, `7d`) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Print one JSON array on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How often `--follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Fields every line has, shown in the text form's prefix or not at all.
const PREFIX_FIELDS: [&str; 12] = [
    "timestamp",
    "level",
    "target",
    "message",
    "run_id",
    "workflow_id",
    "workflow_version",
    "trace_id",
    "span_id",
    "resumed",
    "step",
    "attempt",
];

/// `plait logs RUN_ID [--follow]`.
pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.store.store.clone())?;
    let logs_dir = home.run_logs_dir();
    let exact = args
        .run_id
        .clone()
        .filter(|id| plait::telemetry::logs::run_log_path(&logs_dir, id).exists());
    let run_id = match exact {
        // A whole id with a log: the store is not needed.
        Some(id) => id,
        None => {
            let store = home.open_store_or_remote()?;
            match super::runs::select::resolve(store.as_ref(), args.run_id.as_deref(), args.last) {
                Ok(id) => id,
                Err(error) => match &args.run_id {
                    // `--follow` waits for a run about to start elsewhere.
                    Some(id) if args.follow => id.clone(),
                    _ => return Err(error),
                },
            }
        }
    };
    let path = plait::telemetry::logs::run_log_path(&logs_dir, &run_id);
    let mut file = loop {
        match std::fs::File::open(&path) {
            Ok(file) => break file,
            Err(_) if args.follow => {
                // The run may be about to start in another process.
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            Err(_) => {
                return Err(UsageError(format!(
                    "no log for run `{}` in {} (a run logs there from its first event on, unless the \
                     policy sets `[telemetry] run_logs = false`; runs collected by `plait gc` lose theirs). \
                     `plait runs list` lists the runs; `plait runs show {} --logs` shows what its steps logged",
                    run_id,
                    logs_dir.display(),
                    run_id
                ))
                .into());
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    let mut pending = String::new();
    let mut position = 0u64;
    loop {
        let mut reader = std::io::BufReader::new(&mut file);
        reader.seek(std::io::SeekFrom::Start(position))?;
        let mut ended = false;
        loop {
            let mut chunk = String::new();
            let read = reader.read_line(&mut chunk)?;
            if read == 0 {
                break;
            }
            position += read as u64;
            pending.push_str(&chunk);
            if !pending.ends_with('\n') {
                // Half a line: the writer is mid-line; read it whole later.
                continue;
            }
            let line = std::mem::take(&mut pending);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let parsed: Option<Map<String, Value>> = serde_json::from_str(line).ok();
            if args.json {
                writeln!(stdout, "{line}")?;
            } else {
                match &parsed {
                    Some(fields) => writeln!(stdout, "{}", text_line(fields))?,
                    None => writeln!(stdout, "{line}")?,
                }
            }
            ended = parsed.as_ref().is_some_and(|fields| {
                matches!(
                    fields.get("run_status").and_then(Value::as_str),
                    Some("succeeded" | "failed")
                )
            });
        }
        stdout.flush()?;
        if !args.follow || ended {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// A stored JSON line as text: time, level, step and attempt, message,
/// the other fields.
fn text_line(fields: &Map<String, Value>) -> String {
    let text = |key: &str| match fields.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let timestamp = text("timestamp");
    let mut line = format!(
        "{} {:>5}",
        timestamp.get(11..23).unwrap_or(&timestamp),
        text("level")
    );
    if fields.contains_key("step") {
        line.push_str(&format!(" {}", text("step")));
        if fields.contains_key("item") {
            line.push_str(&format!("[{}]", text("item")));
        }
        if fields.contains_key("attempt") {
            line.push_str(&format!("#{}", text("attempt")));
        }
        line.push(':');
    }
    line.push(' ');
    line.push_str(&text("message"));
    for (key, value) in fields {
        if PREFIX_FIELDS.contains(&key.as_str()) || key == "item" {
            continue;
        }
        match value {
            Value::String(text) => line.push_str(&format!(" {key}={text}")),
            other => line.push_str(&format!(" {key}={other}")),
        }
    }
    // Steps choose their messages and fields: one plain line, whatever
    // they hold.
    plait::telemetry::escape::terminal(&line).into_owned()
}

/// `plait metrics`.
pub fn metrics(args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let store = Home::resolve(args.store.store)?.open_store_or_remote()?;
    let metrics = plait::telemetry::Metrics::from_store(store.as_ref())?;
    print!("{}", metrics.render(Some(store.as_ref())));
    Ok(ExitCode::SUCCESS)
}

/// A `--since`/`--until` value: a duration ago, or an RFC 3339 time; ms
/// since the epoch.
pub fn parse_when(flag: &str, text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(plait::clock::now_ms().saturating_sub(ago.as_millis() as u64));
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64);
    }
    Err(UsageError(format!(
        "{flag} `{text}` is neither a duration ago (`30m`, `2h`, `7d`) nor a time (`2026-11-28T09:00:00Z`)"
    ))
    .into())
}

/// `plait audit`.
pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|since| parse_when("--since", since))
        .transpose()?;
    let store = Home::resolve(args.store.store)?.open_store_or_remote()?;
    let entries: Vec<_> = store
        .audit_log()?
        .into_iter()
        .filter(|entry| since.is_none_or(|since| entry.at_ms >= since))
        .filter(|entry| {
            args.run
                .as_deref()
                .is_none_or(|run| entry.run_id.as_deref() == Some(run))
        })
        .filter(|entry| {
            args.action
                .as_deref()
                .is_none_or(|action| entry.action.as_str() == action)
        })
        .collect();
    if args.json {
        let entries: Vec<Value> = entries
            .iter()
            .map(|entry| {
                let mut value = serde_json::to_value(entry).unwrap_or_default();
                value["at"] = output::timestamp(entry.at_ms).into();
                value
            })
            .collect();
        output::print_json(&Value::Array(entries))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::stdout().lock();
    if entries.is_empty() {
        writeln!(stdout, "no audit entries match")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        stdout,
        "{:<20}  {:<16}  {:<11}  {:<36}  DETAIL",
        "WHEN", "WHO", "ACTION", "RUN"
    )?;
    for entry in &entries {
        let mut detail = Vec::new();
        if let Some(workflow) = &entry.workflow {
            detail.push(format!("workflow={workflow}"));
        }
        if let Value::Object(map) = &entry.detail {
            for (key, value) in map {
                match value {
                    Value::String(text) => detail.push(format!("{key}={text}")),
                    other => detail.push(format!("{key}={other}")),
                }
            }
        }
        writeln!(
            stdout,
            "{:<20}  {:<16}  {:<11}  {:<36}  {}",
            output::timestamp(entry.at_ms),
            entry.actor,
            entry.action,
            entry.run_id.as_deref().unwrap_or("-"),
            detail.join(" ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
