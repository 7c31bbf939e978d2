//! The log stream: one line per event, human-readable text or JSON lines,
//! each carrying the fields of every span it happened in (run, step,
//! attempt, trace and span ids), flattened, so a log line can be filtered
//! and joined to its trace without reading the lines around it.
//!
//! The same layer can copy every event of a run to `DIR/RUN_ID.jsonl`:
//! `plait logs RUN_ID [--follow]` reads that file, also while another
//! process executes the run (the store admits one process at a time; a
//! file does not).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::escape;

pub use plait_policy::LogFormat;

/// Where finished log lines go.
pub trait LogSink: Send + Sync + 'static {
    /// Writes one line (without its newline).
    fn write_line(&self, line: &str);
}

/// Writes lines to stderr.
#[derive(Debug, Default)]
pub struct Stderr;

impl LogSink for Stderr {
    fn write_line(&self, line: &str) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
    }
}

/// The fields of a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

/// The field names that make a line's context, in the order the text
/// format shows them.
const CONTEXT: [&str; 4] = ["run_id", "step", "item", "attempt"];

/// The files of `plait logs`: the run log of `run_id` is
/// `DIR/RUN_ID.jsonl`.
pub fn run_log_path(dir: &Path, run_id: &str) -> PathBuf {
    dir.join(format!("{run_id}.jsonl"))
}

/// The most run log files kept open at once.
const OPEN_RUN_LOGS: usize = 64;

/// A `tracing` layer writing the log stream (see the module docs).
pub struct LogLayer {
    format: LogFormat,
    ansi: bool,
    sink: Arc<dyn LogSink>,
    run_logs: Option<RunLogs>,
}

/// The run log files' writer. Lines go into a buffer (a mutex and a
/// push: no system call, no thread wake-up on the run's path); a thread of
/// its own writes the buffer out every [`RUN_LOG_PERIOD`] or when flushed.
struct RunLogs {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
}

/// How often the writer writes the buffered lines out.
const RUN_LOG_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// The most lines buffered; past it, lines are dropped and counted, so a
/// writer that falls behind cannot grow the host's memory.
const RUN_LOG_BUFFER: usize = 100_000;

#[derive(Default)]
struct Shared {
    pending: Mutex<Vec<Pending>>,
    /// Lines dropped because the buffer was full.
    dropped: std::sync::atomic::AtomicU64,
    /// Flushes asked for, and done (a generation count).
    requested: std::sync::atomic::AtomicU64,
    completed: Mutex<u64>,
    done: std::sync::Condvar,
}

struct Pending {
    run_id: String,
    line: String,
    last: bool,
}

/// Waits for the run log files' writer to have written every line logged
/// so far (see [`LogLayer::run_log_flush`]).
#[derive(Clone)]
pub struct RunLogFlush {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
}

impl RunLogFlush {
    /// Blocks until every line logged before has reached its file, or a
    /// second passed.
    pub fn flush(&self) {
        use std::sync::atomic::Ordering;
        let target = self.shared.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.writer.unpark();
        let completed = self
            .shared
            .completed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = self.shared.done.wait_timeout_while(
            completed,
            std::time::Duration::from_secs(1),
            |done| *done < target,
        );
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl LogLayer {
    /// A layer writing `format` lines to `sink`; `ansi` colours the level
    /// in the text format.
    pub fn new(format: LogFormat, ansi: bool, sink: Arc<dyn LogSink>) -> LogLayer {
        LogLayer {
            format,
            ansi,
            sink,
            run_logs: None,
        }
    }

    /// Also copies each run's events, as JSON lines, to `dir/RUN_ID.jsonl`
    /// (written by a thread of its own; see [`LogLayer::run_log_flush`]).
    pub fn with_run_logs(mut self, dir: PathBuf) -> LogLayer {
        let shared = Arc::new(Shared::default());
        let writer_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("plait-run-logs".to_owned())
            .spawn(move || write_run_logs(&dir, &writer_shared));
        if let Ok(handle) = spawned {
            self.run_logs = Some(RunLogs {
                shared,
                writer: handle.thread().clone(),
            });
        }
        self
    }

    /// A handle that waits for the run log files to be written, for a
    /// process about to exit (or a test about to read them).
    pub fn run_log_flush(&self) -> Option<RunLogFlush> {
        self.run_logs.as_ref().map(|logs| RunLogFlush {
            shared: logs.shared.clone(),
            writer: logs.writer.clone(),
        })
    }
}

/// The writer thread: every [`RUN_LOG_PERIOD`] (or when a flush wakes it)
/// appends the buffered lines to their runs' files, one write per file,
/// keeping up to [`OPEN_RUN_LOGS`] files open.
fn write_run_logs(dir: &Path, shared: &Shared) {
    use std::sync::atomic::Ordering;
    let _ = std::fs::create_dir_all(dir);
    let mut open: HashMap<String, File> = HashMap::new();
    loop {
        std::thread::park_timeout(RUN_LOG_PERIOD);
        // Read before taking the lines: a flush asked for now covers every
        // line logged before it.
        let requested = shared.requested.load(Ordering::SeqCst);
        let batch = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|p| p.into_inner()));
        // Each run's lines, in order, as one write.
        let mut runs: Vec<(String, String, bool)> = Vec::new();
        for Pending { run_id, line, last } in batch {
            match runs.iter_mut().find(|(id, _, _)| *id == run_id) {
                Some((_, text, ended)) => {
                    text.push_str(&line);
                    text.push('\n');
                    *ended |= last;
                }
                None => runs.push((run_id, format!("{line}\n"), last)),
            }
        }
        for (run_id, text, last) in runs {
            if !open.contains_key(&run_id) {
                if open.len() >= OPEN_RUN_LOGS {
                    open.clear();
                }
                match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(run_log_path(dir, &run_id))
                {
                    Ok(file) => {
                        open.insert(run_id.clone(), file);
                    }
                    // Logging must not fail a run; the stream still has it.
                    Err(_) => continue,
                }
            }
            if let Some(file) = open.get_mut(&run_id) {
                // Whole lines in one append: lines from two processes never
                // interleave within a line.
                let _ = file.write_all(text.as_bytes());
            }
            if last {
                open.remove(&run_id);
            }
        }
        let mut completed = shared.completed.lock().unwrap_or_else(|p| p.into_inner());
        if requested > *completed {
            *completed = requested;
            shared.done.notify_all();
        }
    }
}

impl RunLogs {
    fn append(&self, run_id: &str, line: &str, last: bool) {
        // A run id is a uuid; anything else is not a file name to trust.
        if run_id.is_empty()
            || !run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return;
        }
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if pending.len() >= RUN_LOG_BUFFER {
            self.shared
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        pending.push(Pending {
            run_id: run_id.to_owned(),
            line: line.to_owned(),
            last,
        });
    }
}

impl<S> tracing_subscriber::Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Visitor(&mut fields.0));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Visitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut context = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (key, value) in &fields.0 {
                        context.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut Visitor(&mut fields));
        let message = match fields.remove("message") {
            Some(Value::String(message)) => message,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let metadata = event.metadata();
        let now = SystemTime::now();
        let needs_json = self.format == LogFormat::Json
            || (self.run_logs.is_some() && context.contains_key("run_id"));
        let json = needs_json.then(|| {
            let mut line = Map::new();
            line.insert(
                "timestamp".into(),
                humantime::format_rfc3339_millis(now).to_string().into(),
            );
            line.insert("level".into(), metadata.level().as_str().into());
            line.insert("target".into(), metadata.target().into());
            line.insert("message".into(), message.clone().into());
            for (key, value) in context.iter().chain(fields.iter()) {
                line.insert(key.clone(), value.clone());
            }
            escape::json(&Value::Object(line).to_string()).into_owned()
        });
        match self.format {
            LogFormat::Json => self.sink.write_line(json.as_deref().unwrap_or_default()),
            LogFormat::Text => self.sink.write_line(&self.text_line(
                now,
                metadata.level(),
                &context,
                &message,
                &fields,
            )),
        }
        if let (Some(run_logs), Some(json)) = (&self.run_logs, &json)
            && let Some(Value::String(run_id)) = context.get("run_id").or(fields.get("run_id"))
        {
            let last = fields.contains_key("run_status")
                && matches!(
                    fields.get("run_status").and_then(Value::as_str),
                    Some("succeeded" | "failed" | "cancelled")
                );
            run_logs.append(run_id, json, last);
        }
    }
}

impl LogLayer {
    fn text_line(
        &self,
        now: SystemTime,
        level: &Level,
        context: &Map<String, Value>,
        message: &str,
        fields: &Map<String, Value>,
    ) -> String {
        let time = humantime::format_rfc3339_millis(now).to_string();
        // `2026-11-28T23:40:01.123Z` → `23:40:01.123`
        let time = time.get(11..23).unwrap_or(&time);
        let level_text = format!("{:>5}", level.as_str());
        let level_text = if self.ansi {
            let colour = match *level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            format!("\x1b[{colour}m{level_text}\x1b[0m")
        } else {
            level_text
        };
        let mut line = format!("{time} {level_text}");
        let mut where_ = Vec::new();
        for key in CONTEXT {
            if let Some(value) = context.get(key) {
                where_.push(match key {
                    "run_id" => format!("run {}", plain(value)),
                    "step" => format!("step {}", plain(value)),
                    "item" => format!("item {}", plain(value)),
                    _ => format!("attempt {}", plain(value)),
                });
            }
        }
        if !where_.is_empty() {
            line.push(' ');
            line.push_str(&where_.join(" "));
            line.push(':');
        }
        line.push(' ');
        line.push_str(&escape::terminal(message));
        for (key, value) in fields {
            line.push_str(&format!(" {}={}", escape::terminal(key), plain(value)));
        }
        line
    }
}

/// A value as text for a terminal: strings without quotes, control and
/// bidi characters escaped (a step's field value is the step's to choose).
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => escape::terminal(text).into_owned(),
        other => other.to_string(),
    }
}

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visitor<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        // OpenTelemetry's own fields (span name, kind, status) are for the
        // trace, not the log line.
        if field.name().starts_with("otel.") {
            return;
        }
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl LogSink for Lines {
        fn write_line(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_owned());
        }
    }

    #[test]
    fn json_lines_carry_the_fields_of_every_enclosing_span() {
        let lines = Arc::new(Lines::default());
        let subscriber = tracing_subscriber::registry().with(LogLayer::new(
            LogFormat::Json,
            false,
            lines.clone(),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!(
                "run",
                run_id = "r1",
                workflow_id = "w",
                trace_id = tracing::field::Empty
            );
            run.record("trace_id", "abc");
            let _run = run.enter();
            let step =
                tracing::info_span!("step", step = "ocr", attempt = 2u32, otel.name = "step ocr");
            let _step = step.enter();
            tracing::info!(status = "succeeded", latency_ms = 12u64, "step finished");
        });
        let lines = lines.0.lock().unwrap();
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["run_id"], "r1");
        assert_eq!(line["workflow_id"], "w");
        assert_eq!(line["trace_id"], "abc");
        assert_eq!(line["step"], "ocr");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["status"], "succeeded");
        assert_eq!(line["latency_ms"], 12);
        assert_eq!(line["message"], "step finished");
        assert_eq!(line["level"], "INFO");
        assert!(line.get("otel.name").is_none());
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_name_the_run_step_and_attempt() {
        let lines = Arc::new(Lines::default());
        let subscriber = tracing_subscriber::registry().with(LogLayer::new(
            LogFormat::Text,
            false,
            lines.clone(),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let step = tracing::info_span!("step", run_id = "r1", step = "ocr", attempt = 1u32);
            let _step = step.enter();
            tracing::warn!(delay_ms = 200u64, "retrying");
        });
        let line = &lines.0.lock().unwrap()[0];
        assert!(
            line.ends_with(" WARN run r1 step ocr attempt 1: retrying delay_ms=200"),
            "{line}"
        );
    }

    #[test]
    fn run_logs_go_to_one_file_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let lines = Arc::new(Lines::default());
        let layer = LogLayer::new(LogFormat::Text, false, lines.clone())
            .with_run_logs(dir.path().to_owned());
        let flush = layer.run_log_flush().unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", run_id = "run-1");
            let _run = run.enter();
            tracing::info!("one");
            tracing::info!(run_status = "succeeded", "two");
            drop(_run);
            tracing::info!(run_id = "../escape", "not a run id");
        });
        flush.flush();
        let text = std::fs::read_to_string(run_log_path(dir.path(), "run-1")).unwrap();
        let messages: Vec<String> = text
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(messages, ["one", "two"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
