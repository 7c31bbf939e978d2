//! Progress on a terminal: a bar per command while runs execute, quiet
//! when stderr is not a terminal (piped, redirected, in CI). Log lines
//! print above the bar instead of through it.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use plait::executor::{PauseKind, RunEvent, RunEventKind};

/// The bar being drawn, if any: log lines go around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The CLI's log sink: stderr, around the progress bar.
pub struct Sink;

impl plait::telemetry::LogSink for Sink {
    fn write_line(&self, line: &str) {
        // A closed stderr (the reader went away) must not stop a run:
        // write errors are ignored, where `eprintln!` would panic.
        let write = || {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        };
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// A progress bar, drawn only when stderr is a terminal; cleared when
/// dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` units (`steps`, `runs`), or a spinner when the
    /// total is not known yet.
    pub fn new(unit: &'static str, total: Option<u64>) -> Progress {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr())
            || std::env::var_os("PLAIT_NO_PROGRESS").is_some()
        {
            return Progress { bar: None };
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let template =
            format!("{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        *BAR.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        Progress { bar: Some(bar) }
    }

    /// Whether anything is drawn.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// One more unit done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Follows one run's events: steps done out of the workflow's, and what
    /// is happening now.
    pub fn follow(&self, event: &RunEvent) {
        let Some(bar) = &self.bar else { return };
        bar.set_length(event.steps_total as u64);
        bar.set_position(event.steps_done as u64);
        let message = match &event.kind {
            RunEventKind::RunQueued => "queued".to_owned(),
            RunEventKind::RunStarted => "started".to_owned(),
            RunEventKind::SignalReceived { step } => format!("{step} signalled"),
            RunEventKind::CancelRequested { .. } => "cancelling".to_owned(),
            RunEventKind::StepStarted {
                step,
                item,
                attempt,
            } => {
                format!("{}{} running (attempt {attempt})", step, item_suffix(*item))
            }
            RunEventKind::StepFinished {
                step,
                item,
                status,
                latency_ms,
                ..
            } => format!(
                "{}{} {} in {latency_ms} ms",
                step,
                item_suffix(*item),
                status.as_str()
            ),
            RunEventKind::Paused { step, item, kind } => {
                let what = match kind {
                    PauseKind::Wait => "waits for a signal",
                    PauseKind::Sleep => "sleeps",
                    PauseKind::Backoff => "backs off before its next attempt",
                };
                format!("{}{} {what}", step, item_suffix(*item))
            }
            RunEventKind::Progress => return,
            RunEventKind::RunFinished { status, .. } => status.as_str().to_owned(),
        };
        bar.set_message(message);
    }

    /// A message beside the bar.
    pub fn message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }
}

fn item_suffix(item: Option<u32>) -> String {
    item.map(|item| format!("[{item}]")).unwrap_or_default()
}

impl Progress {
    /// Clears the bar, so what is printed next is not drawn over.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            *BAR.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
