//! The API's wire types: what requests carry and responses hold, as the
//! OpenAPI document describes them, and the views of stored records.

// utoipa's generated code names the parameter structs by full path.
#![allow(unused_qualifications)]

use super::*;

/// A run's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, waiting for the host to start it.
    Queued,
    /// Executing.
    Running,
    /// Waiting for a signal, a sleep or a retry's backoff.
    Waiting,
    /// Every step succeeded.
    Succeeded,
    /// A step failed; `POST .../retry` tries again.
    Failed,
    /// Cancelled; final.
    Cancelled,
}

impl From<RunStatus> for RunState {
    fn from(status: RunStatus) -> RunState {
        match status {
            RunStatus::Queued => RunState::Queued,
            RunStatus::Running => RunState::Running,
            RunStatus::Waiting => RunState::Waiting,
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Failed => RunState::Failed,
            RunStatus::Cancelled => RunState::Cancelled,
        }
    }
}

/// A blob of a run: a document, image or file by content digest.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlobView {
    /// Its name in the payload.
    pub name: String,
    /// Its IANA media type.
    pub media_type: String,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where to download it.
    pub url: String,
}

/// The workflow a run executes.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowRefView {
    /// Its `name`.
    pub name: String,
    /// Its `version`.
    pub version: String,
    /// `sha256:<hex>` of the definition the run started with.
    pub digest: String,
}

/// Links of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunLinks {
    /// The run.
    #[serde(rename = "self")]
    pub this: String,
    /// Its steps.
    pub steps: String,
    /// Its event stream.
    pub events: String,
}

/// A run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run id (a UUIDv7: ids sort by creation time).
    pub id: String,
    /// Its state.
    pub status: RunState,
    /// What it executes.
    pub workflow: WorkflowRefView,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// The workflow input.
    pub input: Value,
    /// The input's blobs.
    pub input_blobs: Vec<BlobView>,
    /// The workflow output, once succeeded.
    pub output: Option<Value>,
    /// The output's blobs.
    pub output_blobs: Vec<BlobView>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// The `Idempotency-Key` it was started with.
    pub idempotency_key: Option<String>,
    /// When its `timeout` passes (RFC 3339).
    pub deadline: Option<String>,
    /// Its trace id (32 hex digits): every span of the run is in it.
    pub trace_id: Option<String>,
    /// Who started it: `token:NAME`, `local`, `user:NAME` (the CLI),
    /// `trigger:NAME` (a schedule, a watched folder, a signed webhook) or
    /// `token:NAME via trigger:NAME`.
    pub started_by: Option<String>,
    /// Related resources.
    pub links: RunLinks,
}

/// A step's failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepErrorView {
    /// What kind of failure (`invalid_input`, `timeout`, ...).
    pub kind: String,
    /// What happened.
    pub message: String,
    /// Anything the step added.
    pub details: Option<Value>,
}

/// A step's state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// An attempt runs.
    Running,
    /// Done.
    Succeeded,
    /// Failed for good (or with an output the run went on from).
    Failed,
    /// Its `if` was false, or a need was skipped.
    Skipped,
    /// Waiting for a signal, a sleep or a backoff.
    Waiting,
    /// Failed, and its fallback recovered the run.
    Recovered,
}

/// One step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// The step id.
    pub id: String,
    /// Its state.
    pub status: StepState,
    /// Attempts made.
    pub attempts: u32,
    /// The component's declared name (none for built-in steps).
    pub component: Option<String>,
    /// When its first attempt started (RFC 3339).
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// How long its last attempt took.
    pub duration_ms: Option<u64>,
    /// Its output, once done.
    pub output: Option<Value>,
    /// Its output's blobs.
    pub output_blobs: Vec<BlobView>,
    /// Why it failed.
    pub error: Option<StepErrorView>,
    /// When a sleep or backoff ends (RFC 3339).
    pub wake_at: Option<String>,
    /// Attempts the host died in (they ran again with the next attempt
    /// number), oldest first.
    pub interrupted: Vec<InterruptedAttemptView>,
}

/// An attempt of a step the host died in.
#[derive(Debug, Serialize, ToSchema)]
pub struct InterruptedAttemptView {
    /// The attempt number.
    pub attempt: u32,
    /// The item of a `for_each` step.
    pub item: Option<u32>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When the next host found it interrupted (RFC 3339).
    pub found_at: String,
}

/// `GET /v1/runs/{id}/steps`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepList {
    /// The run's steps, in definition order.
    pub steps: Vec<StepView>,
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// A stored blob used as an input blob, by digest (another run's output,
/// for example).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobReference {
    /// The name the workflow reads it by.
    pub name: String,
    /// `sha256:<hex>` of a blob in this store.
    pub digest: String,
    /// Its media type [default: the stored blob's, else
    /// `application/octet-stream`].
    pub media_type: Option<String>,
}

/// The body of a start, as JSON. (As `multipart/form-data`: a part named
/// `input` holding this JSON's `input`, and one part per input blob, named
/// as the workflow reads it, with its `Content-Type`.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The workflow input [default: `{}`].
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Input blobs already in the store, by digest.
    #[serde(default)]
    pub blobs: Vec<BlobReference>,
    /// Where to send this run's webhook messages (`run.succeeded`,
    /// `run.failed`, `run.cancelled`, `run.waiting`), besides the server's
    /// own endpoints; it must match the server's `[server] webhook_urls`.
    pub webhook: Option<String>,
}

pub(super) fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The parts of a multipart start.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct StartRunMultipart {
    /// The workflow input, as JSON [default: `{}`].
    pub input: Option<Value>,
    /// This run's own webhook URL (see the JSON body's `webhook`).
    pub webhook: Option<String>,
    /// One part per input blob, named as the workflow reads it.
    #[schema(value_type = Option<Vec<u8>>, format = Binary)]
    pub document: Option<Vec<u8>>,
}

/// Query of a start.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// Wait up to this long (`30s`, `1m`, `500ms`; more than 1m counts as
    /// 1m) for the run to end: 200 with the finished run, else 202 as
    /// without.
    #[param(pattern = r"^([0-9]{1,9}(ms|s|m))*$")]
    pub wait: Option<String>,
}

/// One Server-Sent Event of `GET /v1/runs/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunEventMessage {
    /// The event's sequence number: send it back as `Last-Event-ID`.
    pub id: String,
    /// Its kind: `run_queued`, `run_started`, `step_started`,
    /// `step_finished`, `paused`, `progress`, `signal_received`,
    /// `cancel_requested`, `run_finished`.
    pub event: String,
    /// The event as JSON: `run_id`, `workflow`, `at_ms`, `steps_done`,
    /// `steps_total`, `event`, `seq` and the kind's own fields.
    pub data: String,
}

/// Query of a run listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this state.
    pub status: Option<RunState>,
    /// Runs per page (1 to 200) [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Query of an event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id (what `Last-Event-ID` says, for clients
    /// that cannot set it).
    pub after: Option<u64>,
}

/// The body of a cancel.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRun {
    /// Why, for the run's error and the audit log.
    pub reason: Option<String>,
}

/// A served workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    /// Its `name`: `POST /v1/workflows/{name}/runs` starts it.
    pub name: String,
    /// Its `version`.
    pub version: String,
    /// Its `description`.
    pub description: Option<String>,
    /// The JSON Schema its input must match, if it declares one.
    pub input_schema: Option<Value>,
    /// The input blobs it reads.
    pub input_blobs: Vec<String>,
    /// Its step ids, in definition order.
    pub steps: Vec<String>,
}

/// A workflow file that does not check out.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowProblem {
    /// The file, relative to the workflows folder.
    pub file: String,
    /// What is wrong.
    pub error: String,
}

/// `GET /v1/workflows`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// The workflows served, by name.
    pub workflows: Vec<WorkflowView>,
    /// Files in the workflows folder that are not served, and why.
    pub problems: Vec<WorkflowProblem>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `stopping`.
    pub status: String,
    /// Runs waiting for a place to execute.
    pub queued_runs: usize,
}

/// `ms` since the epoch as RFC 3339 with milliseconds.
pub(crate) fn time_text(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

pub(super) fn blob_view(run_id: &str, blob: &BlobRef) -> BlobView {
    BlobView {
        name: blob.name.clone(),
        media_type: blob.media_type.clone(),
        digest: blob.digest.to_string(),
        size: blob.size,
        url: format!("/v1/runs/{run_id}/blobs/{}", blob.digest),
    }
}

/// The wire form of a run.
pub fn run_view(run: &RunRecord) -> RunView {
    let base = format!("/v1/runs/{}", run.id);
    RunView {
        id: run.id.to_string(),
        status: run.status.into(),
        workflow: WorkflowRefView {
            name: run.workflow.name.clone(),
            version: run.workflow.version.clone(),
            digest: run.workflow.digest.to_string(),
        },
        created_at: time_text(run.created_at_ms),
        updated_at: time_text(run.updated_at_ms),
        input: run.input.clone(),
        input_blobs: run
            .input_blobs
            .iter()
            .map(|b| blob_view(&run.id, b))
            .collect(),
        output: run.output.clone(),
        output_blobs: run
            .output_blobs
            .iter()
            .map(|b| blob_view(&run.id, b))
            .collect(),
        error: run.error.clone(),
        idempotency_key: run.idempotency_key.clone(),
        deadline: run.deadline_ms.map(time_text),
        trace_id: run.trace.as_ref().map(|trace| trace.trace_id.clone()),
        started_by: run.started_by.clone(),
        links: RunLinks {
            steps: format!("{base}/steps"),
            events: format!("{base}/events"),
            this: base,
        },
    }
}

pub(super) fn step_view(run_id: &str, step: &StepRecord) -> StepView {
    StepView {
        id: step.id.clone(),
        status: match step.status {
            StepStatus::Pending => StepState::Pending,
            StepStatus::Running => StepState::Running,
            StepStatus::Succeeded => StepState::Succeeded,
            StepStatus::Failed => StepState::Failed,
            StepStatus::Skipped => StepState::Skipped,
            StepStatus::Waiting => StepState::Waiting,
            StepStatus::Recovered => StepState::Recovered,
        },
        attempts: step.attempts,
        component: step.component.clone(),
        started_at: step.started_at_ms.map(time_text),
        finished_at: step.finished_at_ms.map(time_text),
        duration_ms: step.duration_ms,
        output: step.output.clone(),
        output_blobs: step
            .output_blobs
            .iter()
            .map(|b| blob_view(run_id, b))
            .collect(),
        error: step.error.as_ref().map(|failure| {
            let value = serde_json::to_value(failure).unwrap_or(Value::Null);
            StepErrorView {
                kind: value
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
                message: failure.message.clone(),
                details: failure.details.clone(),
            }
        }),
        wake_at: step.wake_at_ms.map(time_text),
        interrupted: step
            .history
            .iter()
            .filter(|attempt| attempt.interrupted)
            .map(|attempt| InterruptedAttemptView {
                attempt: attempt.attempt,
                item: attempt.item,
                started_at: time_text(attempt.started_at_ms),
                found_at: time_text(attempt.finished_at_ms),
            })
            .collect(),
    }
}

// ------------------------------------------------------------------ helpers
