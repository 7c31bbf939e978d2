//! The records the journal holds, serialized as JSON.

use serde::{Deserialize, Serialize};

use crate::step::StepFailure;

/// A blob stored by content, referred to by name within one payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// The name within the payload.
    pub name: String,
    /// The IANA media type.
    pub media_type: String,
    /// `sha256:<hex>` of the bytes: the key in the blob store.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Which workflow a run executes, pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// The definition's `name`.
    pub name: String,
    /// The definition's `version`.
    pub version: String,
    /// The definition file, absolute.
    pub path: std::path::PathBuf,
    /// `sha256:<hex>` of the definition file.
    pub digest: String,
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished; after a crash, `plait resume` continues it.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed; `plait resume` retries it.
    Failed,
}

impl RunStatus {
    /// The lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id (a UUIDv7, so ids sort by start time).
    pub id: String,
    /// The workflow it runs.
    pub workflow: WorkflowRef,
    /// Its state.
    pub status: RunStatus,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// The workflow input.
    pub input: serde_json::Value,
    /// The workflow input's blobs.
    pub input_blobs: Vec<BlobRef>,
    /// The workflow output, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The output's blobs, once succeeded.
    #[serde(default)]
    pub output_blobs: Vec<BlobRef>,
    /// Why it failed, once failed.
    pub error: Option<String>,
}

/// The state of one step in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// An attempt started and has not finished (or the host died in it).
    Running,
    /// Finished with an output; never executed again.
    Succeeded,
    /// The last attempt failed.
    Failed,
}

impl StepStatus {
    /// The lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
        }
    }
}

/// One step of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: String,
    /// Position in the definition, from 0.
    pub index: u32,
    /// The step id.
    pub id: String,
    /// Its state.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Digest of the component it runs.
    pub component_digest: String,
    /// When the latest attempt started.
    pub started_at_ms: Option<u64>,
    /// When it finished.
    pub finished_at_ms: Option<u64>,
    /// Wall time of the latest attempt.
    pub duration_ms: Option<u64>,
    /// The output document, once succeeded.
    pub output: Option<serde_json::Value>,
    /// The output blobs, once succeeded.
    #[serde(default)]
    pub output_blobs: Vec<BlobRef>,
    /// The latest failure.
    pub error: Option<StepFailure>,
    /// Fuel (wasmtime instruction units) the latest attempt consumed, when
    /// the engine meters fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
}
