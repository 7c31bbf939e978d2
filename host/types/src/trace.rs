//! A run's place in its distributed trace, as the run record keeps it.

use serde::{Deserialize, Serialize};

/// A run's place in its trace, kept in the run record: every process that
/// works on the run puts its spans in this trace, under this span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrace {
    /// The trace id, 32 hex digits.
    pub trace_id: String,
    /// The run's root span, 16 hex digits.
    pub span_id: String,
    /// The caller's span the run was started under, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Whether the trace is sampled.
    pub sampled: bool,
}
