//! The values that flow through one step: payloads, blobs, invocation facts
//! and failures, as the host sees them.
//!
//! These are the host-side counterparts of the WIT types in
//! `wit/step.wit`; the engine converts between the two at the
//! component boundary, and the journal (the store) persists them.

use serde::{Deserialize, Serialize};

/// A named binary attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The name the workflow refers to it by.
    pub name: String,
    /// The IANA media type.
    pub media_type: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// One JSON document plus named blobs: a step's input or output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
    /// The JSON document.
    pub json: serde_json::Value,
    /// Named blobs, names unique.
    pub blobs: Vec<Blob>,
}

/// Facts about one invocation, handed to the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationInfo {
    /// The run.
    pub run_id: String,
    /// The step's id in the workflow.
    pub step_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Stable across every attempt of this step in this run.
    pub idempotency_key: String,
    /// The attempt's W3C trace context (`traceparent`), passed on to the
    /// step's outbound HTTP requests; not part of the WIT contract.
    pub traceparent: Option<String>,
}

impl InvocationInfo {
    /// The idempotency key of `step_id` in `run_id`: the same for every
    /// attempt, retry or resume, and different for every step and run.
    pub fn idempotency_key(run_id: &str, step_id: &str) -> String {
        format!("{run_id}/{step_id}")
    }
}

/// Why an invocation did not produce an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The step returned a retryable `step-error`.
    Retryable,
    /// The step returned a fatal `step-error`.
    Fatal,
    /// The guest trapped: a panic, an `unreachable`, a failed host call.
    Trap,
    /// The step returned something that breaks the contract (output that is
    /// not JSON, two blobs with one name).
    InvalidOutput,
    /// The step ran past its timeout. Retryable: a slow network or a busy
    /// machine may not be there next time.
    Timeout,
    /// The step went past its memory, fuel, output, log or stack limit.
    /// Fatal: the same code on the same input would go past it again.
    LimitExceeded,
}

impl FailureKind {
    /// Whether running the same input again can help: true for retryable
    /// errors, timeouts and traps (a trap may come from a transient host
    /// condition), false for fatal errors, contract violations and the
    /// deterministic limits (memory, fuel, output, logs, stack).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Retryable | FailureKind::Trap | FailureKind::Timeout
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Retryable => "retryable error",
            FailureKind::Fatal => "fatal error",
            FailureKind::Trap => "trap",
            FailureKind::InvalidOutput => "invalid output",
            FailureKind::Timeout => "timeout",
            FailureKind::LimitExceeded => "limit exceeded",
        })
    }
}

/// A failed invocation, as recorded in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// One line for the operator.
    pub message: String,
    /// Machine-readable details, when the step gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// The media type of a file, by extension.
pub fn media_type_of(path: &std::path::Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "txt" | "text" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "eml" => "message/rfc822",
        "zip" => "application/zip",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
