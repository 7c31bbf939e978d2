//! The `plait:step/host` interface: structured logging and granted config.

use super::redact::Redactor;
use super::stdio::LogVolume;
use super::{InvocationLabels, LOG_MESSAGE_LIMIT, LOG_RECORD_LIMIT, StepState};
use crate::bindings::plait::step::host::{self as wit, LogField};
use crate::logs::{LogLevel, LogRecord, StepLogs};

/// Collects log records and mirrors them to the host's live log.
pub(super) struct LogBuffer {
    labels: InvocationLabels,
    records: Vec<LogRecord>,
    dropped: u64,
    volume: LogVolume,
    /// Applied before a record is kept or shown in the host's live log.
    redactor: Redactor,
    /// Tokens for the live log: a step cannot flood the host's log stream
    /// (every record is still kept with the run).
    tokens: f64,
    refilled: std::time::Instant,
    /// Records kept but not written to the live log.
    suppressed: u64,
}

/// Records a step may write to the live log in a burst.
const LIVE_LOG_BURST: f64 = 100.0;
/// Records per second a step may write to the live log after a burst.
const LIVE_LOG_RATE: f64 = 20.0;

impl LogBuffer {
    pub(super) fn new(
        labels: InvocationLabels,
        volume: LogVolume,
        redactor: Redactor,
    ) -> LogBuffer {
        LogBuffer {
            labels,
            records: Vec::new(),
            dropped: 0,
            volume,
            redactor,
            tokens: LIVE_LOG_BURST,
            refilled: std::time::Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether one more record may go to the live log now.
    fn may_emit(&mut self) -> bool {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * LIVE_LOG_RATE).min(LIVE_LOG_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Keeps the record if there is room; false when it took the step past
    /// its log volume, in which case the record is not kept.
    fn push(&mut self, level: LogLevel, message: String, fields: Vec<LogField>) -> bool {
        let size = message.len()
            + fields
                .iter()
                .map(|field| field.key.len() + field.value.len())
                .sum::<usize>();
        if !self.volume.add(size) {
            return false;
        }
        if self.records.len() >= LOG_RECORD_LIMIT {
            self.dropped += 1;
            return true;
        }
        let message = truncate(self.redactor.text(&message), LOG_MESSAGE_LIMIT);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|field| {
                (
                    self.redactor.text(&field.key),
                    truncate(self.redactor.text(&field.value), LOG_MESSAGE_LIMIT),
                )
            })
            .collect();
        if self.may_emit() {
            self.emit(level, &message, &fields);
        }
        self.records.push(LogRecord {
            at_ms: crate::clock::now_ms(),
            level,
            message,
            fields,
        });
        true
    }

    /// Writes the record to the host's own log (target `plait::step`), so an
    /// operator watching `plait run` sees it as it happens.
    fn emit(&self, level: LogLevel, message: &str, fields: &[(String, String)]) {
        let fields = fields
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "plait::step",
                    $level,
                    "{message}{}{fields}",
                    if fields.is_empty() { "" } else { " " },
                )
            };
        }
        match level {
            LogLevel::Trace => event!(tracing::Level::TRACE),
            LogLevel::Debug => event!(tracing::Level::DEBUG),
            LogLevel::Info => event!(tracing::Level::INFO),
            LogLevel::Warn => event!(tracing::Level::WARN),
            LogLevel::Error => event!(tracing::Level::ERROR),
        }
    }

    pub(super) fn take(&mut self) -> StepLogs {
        if self.suppressed > 0 {
            tracing::warn!(
                target: "plait::step",
                suppressed = self.suppressed,
                "{} log records of step `{}` were kept with the run but not written here \
                 (a step may write {LIVE_LOG_BURST} at once, then {LIVE_LOG_RATE} a second); \
                 see them with `plait runs show {} --logs`",
                self.suppressed,
                self.labels.step_id,
                self.labels.run_id,
            );
            self.suppressed = 0;
        }
        StepLogs {
            records: std::mem::take(&mut self.records),
            dropped_records: std::mem::take(&mut self.dropped),
            ..StepLogs::default()
        }
    }
}

/// Cuts `text` to at most `limit` bytes at a character boundary.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("…[truncated]");
    }
    text
}

impl wit::Host for StepState {
    fn log(
        &mut self,
        level: wit::LogLevel,
        message: String,
        fields: Vec<LogField>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            wit::LogLevel::Trace => LogLevel::Trace,
            wit::LogLevel::Debug => LogLevel::Debug,
            wit::LogLevel::Info => LogLevel::Info,
            wit::LogLevel::Warn => LogLevel::Warn,
            wit::LogLevel::Error => LogLevel::Error,
        };
        if self.log.push(level, message, fields) {
            Ok(())
        } else {
            // Ends the step: the failure is named from the volume counter.
            Err(wasmtime::Error::msg("log volume limit exceeded"))
        }
    }

    fn get_config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        let text = "é".repeat(10); // 20 bytes
        let cut = truncate(text, 5);
        assert_eq!(cut, "éé…[truncated]");
    }

    #[test]
    fn records_past_the_limit_are_counted_not_kept() {
        let mut buffer = LogBuffer::new(
            InvocationLabels::default(),
            LogVolume::new(1 << 20),
            Redactor::default(),
        );
        for index in 0..LOG_RECORD_LIMIT + 7 {
            assert!(buffer.push(LogLevel::Info, format!("line {index}"), Vec::new()));
        }
        let logs = buffer.take();
        assert_eq!(logs.records.len(), LOG_RECORD_LIMIT);
        assert_eq!(logs.dropped_records, 7);
        assert_eq!(logs.records[0].message, "line 0");
    }

    #[test]
    fn the_record_past_the_volume_is_refused() {
        let volume = LogVolume::new(10);
        let mut buffer = LogBuffer::new(
            InvocationLabels::default(),
            volume.clone(),
            Redactor::default(),
        );
        assert!(buffer.push(LogLevel::Info, "12345".into(), Vec::new()));
        assert!(volume.exceeded().is_none());
        assert!(!buffer.push(LogLevel::Info, "123456".into(), Vec::new()));
        assert_eq!(buffer.take().records.len(), 1);
        assert_eq!(volume.exceeded().unwrap().limit, crate::limits::Limit::Logs);
    }
}
