//! What a step logged and printed, as the journal keeps it: structured
//! records, and its stdout and stderr, each under a limit.

use serde::{Deserialize, Serialize};

/// Log records kept per invocation; later ones are counted and dropped.
pub const LOG_RECORD_LIMIT: usize = 1_000;
/// Longest log message kept, in bytes; longer ones are cut at a character
/// boundary and marked.
pub const LOG_MESSAGE_LIMIT: usize = 8 * 1024;

/// Severity of a step's log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very fine detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the step handled.
    Warn,
    /// A failure.
    Error,
}

/// One structured log record written by a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Milliseconds since the Unix epoch when the host received it.
    pub at_ms: u64,
    /// Severity.
    pub level: LogLevel,
    /// The message, cut to [`LOG_MESSAGE_LIMIT`] bytes.
    pub message: String,
    /// Structured fields, in the order the step gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// Everything one invocation logged or printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLogs {
    /// Kept log records.
    pub records: Vec<LogRecord>,
    /// Records past [`LOG_RECORD_LIMIT`], counted and dropped.
    pub dropped_records: u64,
    /// What the guest wrote to stdout.
    pub stdout: CapturedText,
    /// What the guest wrote to stderr.
    pub stderr: CapturedText,
}

/// What a guest wrote to one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedText {
    /// The kept bytes, decoded as UTF-8 with invalid sequences replaced.
    pub text: String,
    /// Bytes written past the limit and dropped.
    pub dropped_bytes: u64,
}
