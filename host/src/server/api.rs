//! The API's routes, handlers and wire types, and the OpenAPI document
//! generated from them (`GET /openapi.json`): each handler's
//! `#[utoipa::path]` is its contract, next to the code that keeps it.

// utoipa's generated code names the parameter structs by full path.
#![allow(unused_qualifications)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest as _, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::auth::Scope;
use super::dispatch::NoRoom;
use super::problem::{PROBLEM_JSON, Problem};
use super::{AppState, Caller, RequestTrace};
use crate::executor::{Cancelled, Origin, StartRequest};
use crate::plan::Plan;
use crate::store::{AuditRecord, BlobRef, Commit, RunRecord, RunStatus, StepRecord, StepStatus};

/// The longest `?wait=` a start may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The most runs one page of `GET /v1/runs` holds.
const MAX_PAGE: usize = 200;

/// The API's routes on `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = usize::try_from(state.settings.max_body).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/workflows", get(list_workflows))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/steps", get(get_steps))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/blobs/{digest}", get(get_blob))
        .route("/v1/runs/{id}/signals/{step}", post(signal_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/retry", post(retry_run))
        .route("/v1/runs/{id}/webhooks", get(run_webhooks))
        .route(
            "/v1/triggers/{name}",
            post(super::triggers::webhook::fire_trigger),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::trace_layer,
        ))
        .with_state(state)
}

// ---------------------------------------------------------------- wire types

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

fn empty_object() -> Value {
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

fn blob_view(run_id: &str, blob: &BlobRef) -> BlobView {
    BlobView {
        name: blob.name.clone(),
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        url: format!("/v1/runs/{run_id}/blobs/{}", blob.digest),
    }
}

/// The wire form of a run.
pub fn run_view(run: &RunRecord) -> RunView {
    let base = format!("/v1/runs/{}", run.id);
    RunView {
        id: run.id.clone(),
        status: run.status.into(),
        workflow: WorkflowRefView {
            name: run.workflow.name.clone(),
            version: run.workflow.version.clone(),
            digest: run.workflow.digest.clone(),
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

fn step_view(run_id: &str, step: &StepRecord) -> StepView {
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

pub(super) fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, Problem> {
    extracted.map(|Path(value)| value).map_err(|rejection| {
        Problem::bad_request(format!("the URL path is not valid: {rejection}"))
    })
}

fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    extracted.map(|Query(value)| value).map_err(|rejection| {
        Problem::bad_request(format!(
            "the query string is not valid: {}",
            rejection.body_text()
        ))
    })
}

fn load_run(state: &AppState, run_id: &str) -> Result<RunRecord, Problem> {
    state.store.run(run_id)?.ok_or_else(|| {
        Problem::not_found(
            "run",
            format!("no run has id `{run_id}`; `GET /v1/runs` lists them"),
        )
    })
}

fn origin(caller: &Caller, trace: &RequestTrace) -> Origin {
    Origin {
        actor: Some(caller.actor.clone()),
        trace_parent: trace.0,
    }
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Reads a JSON body (empty: `default`), within the size cap.
async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    default: impl FnOnce() -> T,
) -> Result<T, Problem> {
    let bytes = read_body(state, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(default());
    }
    check_json_type(headers)?;
    crate::json::from_slice(&bytes).map_err(|error| {
        Problem::bad_request(format!(
            "the body is not valid JSON for this request: {error}"
        ))
    })
}

pub(super) async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, Problem> {
    let limit = usize::try_from(state.settings.max_body).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(state))
}

fn too_large(state: &AppState) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Request body too large",
        format!(
            "the request body is larger than this server takes ({}); send less, or raise `[server] max_body`",
            crate::limits::format_size(state.settings.max_body)
        ),
    )
}

fn check_json_type(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(unsupported(content_type))
    }
}

fn unsupported(content_type: &str) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        format!(
            "a body of type `{content_type}` is not taken here; send `application/json` (or `multipart/form-data` to start a run with files)"
        ),
    )
}

// ----------------------------------------------------------------- handlers

async fn not_found() -> Problem {
    Problem::not_found(
        "route",
        "no such endpoint; `GET /openapi.json` describes the API",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not take that method; `GET /openapi.json` describes the API",
    )
}

/// Whether the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up.", body = Health)))]
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    json_response(
        StatusCode::OK,
        &Health {
            status: "ok".to_owned(),
            queued_runs: state.dispatcher.queued(),
        },
    )
}

/// Whether the server takes work: 503 while starting or stopping.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Health),
        (status = 503, description = "Starting or stopping.", body = Health)))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let ready =
        state.ready.load(std::sync::atomic::Ordering::Acquire) && !state.dispatcher.closing();
    json_response(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &Health {
            status: if ready { "ok" } else { "stopping" }.to_owned(),
            queued_runs: state.dispatcher.queued(),
        },
    )
}

/// Prometheus metrics (OpenMetrics text); needs `runs:read` when the server
/// has tokens.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "The metrics.", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let text = state.metrics.render(Some(state.store.as_ref()));
    Ok((
        [(
            header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
async fn openapi() -> Response {
    json_response(StatusCode::OK, &ApiDoc::openapi())
}

/// The workflows this server runs.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses(
        (status = 200, description = "The workflows served.", body = WorkflowList),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn list_workflows(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let mut workflows = Vec::new();
    let mut problems = Vec::new();
    for entry in state.catalog.entries().await {
        let file = entry
            .path
            .strip_prefix(state.catalog.dir())
            .unwrap_or(&entry.path)
            .display()
            .to_string();
        match entry.plan {
            Ok(plan) => {
                let definition = &plan.definition;
                workflows.push(WorkflowView {
                    name: definition.name.clone(),
                    version: definition.version.clone(),
                    description: definition.description.clone(),
                    input_schema: definition.input_schema.clone(),
                    input_blobs: definition.input_blob_names(),
                    steps: definition
                        .steps
                        .iter()
                        .map(|step| step.id.to_string())
                        .collect(),
                })
            }
            Err(error) => problems.push(WorkflowProblem { file, error }),
        }
    }
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(json_response(
        StatusCode::OK,
        &WorkflowList {
            workflows,
            problems,
        },
    ))
}

/// Removes an idempotency key from the in-flight set when the request ends.
pub(super) struct InFlight<'a> {
    state: &'a AppState,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Starts a run of workflow `name`.
///
/// The run is recorded (`queued`) before the response: an accepted run is
/// never lost. With `Idempotency-Key`, the same key and body give back the
/// original run (`Idempotent-Replayed: true`), the same key with another
/// body is refused (422), and a second request while the first is being
/// handled gets 409.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs", tag = "runs",
    params(
        ("name" = String, Path, description = "The workflow's `name`."),
        ("Idempotency-Key" = Option<String>, Header, description = "At most one run per key (1 to 255 characters)."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: the run's spans join the caller's trace."),
        StartQuery),
    request_body(description = "The input, and input blobs by reference (JSON) or as file parts (multipart).",
        content((StartRun = "application/json"), (StartRunMultipart = "multipart/form-data"))),
    responses(
        (status = 202, description = "Accepted: the run is queued or executing (or, replayed, as it is now).", body = RunView,
            headers(("Location" = String, description = "The run."))),
        (status = 200, description = "With `?wait`: the run ended in time.", body = RunView),
        (status = 400, description = "Malformed request.", content_type = PROBLEM_JSON, body = Problem),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:write`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such workflow.", content_type = PROBLEM_JSON, body = Problem),
        (status = 409, description = "A request with this Idempotency-Key is being handled.", content_type = PROBLEM_JSON, body = Problem),
        (status = 413, description = "The body or the run's input is too large.", content_type = PROBLEM_JSON, body = Problem),
        (status = 415, description = "Not JSON nor multipart.", content_type = PROBLEM_JSON, body = Problem),
        (status = 422, description = "The input does not match the workflow, or the key was used for another request.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem),
        (status = 503, description = "The queue is full, or the server is stopping.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn start_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    name: Result<Path<String>, PathRejection>,
    wait: Result<Query<StartQuery>, QueryRejection>,
    axum::Extension(trace): axum::Extension<RequestTrace>,
    request: Request,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsWrite)?;
    let name = path(name)?;
    let wait = match query(wait)?.wait.filter(|text| !text.trim().is_empty()) {
        None => None,
        Some(text) => {
            let wait = humantime::parse_duration(text.trim()).map_err(|error| {
                Problem::bad_request(format!(
                    "`wait={text}` is not a duration ({error}); for example `wait=30s`"
                ))
            })?;
            // Longer waits belong on the event stream.
            Some(wait.min(MAX_WAIT))
        }
    };
    let key = match request.headers().get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    Problem::bad_request("the Idempotency-Key header must be visible ASCII text")
                })?
                .to_owned(),
        ),
    };
    room(&state)?;
    let plan = served_plan(&state, &name).await?;
    // The key is held from here until the response: a concurrent request
    // with it is told to wait (409), not queued behind this one.
    let _in_flight = hold_key(&state, key.as_deref())?;
    let (input, blobs, webhook) = read_start(&state, request).await?;
    if let Some(url) = &webhook {
        check_webhook(&state, url)?;
    }
    check_input_size(&state, &input, &blobs)?;
    let origin = origin(&caller, &trace);
    let request = StartRequest::new(input)
        .blobs(blobs)
        .idempotency_key(key)
        .origin(origin);
    let (run, new) = state.dispatcher.start(plan, request, webhook.as_deref())?;
    let run = match wait {
        Some(wait) if !run.status.is_finished() => wait_for(&state, &run.id, wait).await?,
        _ => run,
    };
    let status = if wait.is_some() && run.status.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(started(status, &run, new))
}

/// A 503 while the server cannot take a new run.
pub(super) fn room(state: &AppState) -> Result<(), Problem> {
    state.dispatcher.room().map_err(|refusal| match refusal {
        NoRoom::Closing => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "The server is stopping",
            "the server is stopping and takes no new runs; try again when it is back",
        )
        .retry_after(5),
        NoRoom::Full { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue-full",
            "The queue is full",
            format!("{refusal}; try again later"),
        )
        .retry_after(5),
    })
}

/// The plan of served workflow `name`: 404 if there is none, 422 if its
/// file does not check out.
pub(super) async fn served_plan(state: &AppState, name: &str) -> Result<Arc<Plan>, Problem> {
    match state.catalog.plan(name).await {
        Ok(Some(plan)) => Ok(plan),
        Ok(None) => Err(Problem::not_found(
            "workflow",
            format!("no workflow named `{name}` is served here; `GET /v1/workflows` lists them"),
        )),
        Err(error) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "workflow-invalid",
            "The workflow does not check out",
            format!(
                "workflow `{name}` is in the workflows folder but does not check out, so it is not run: {error}"
            ),
        )),
    }
}

/// Marks idempotency key `key` as being handled until the guard drops; 409
/// if another request holds it.
pub(super) fn hold_key<'a>(
    state: &'a AppState,
    key: Option<&str>,
) -> Result<Option<InFlight<'a>>, Problem> {
    let Some(key) = key else {
        return Ok(None);
    };
    let mut in_flight = state.in_flight.lock().unwrap_or_else(|p| p.into_inner());
    if !in_flight.insert(key.to_owned()) {
        return Err(Problem::conflict(
            "idempotency-key-in-use",
            format!(
                "a request with Idempotency-Key `{key}` is being handled now; repeat this one when it has been answered to get its result"
            ),
        ));
    }
    Ok(Some(InFlight {
        state,
        key: key.to_owned(),
    }))
}

/// 413 when a run's input and blobs weigh more than `[runtime] max_input`.
pub(super) fn check_input_size(
    state: &AppState,
    input: &Value,
    blobs: &[crate::step::Blob],
) -> Result<(), Problem> {
    let size = serde_json::to_vec(input).map_or(0, |bytes| bytes.len() as u64)
        + blobs.iter().map(|blob| blob.data.len() as u64).sum::<u64>();
    if size > state.max_input {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input-too-large",
            "The run's input is too large",
            format!(
                "the run's input and blobs weigh {}, over this host's limit of {} (`[runtime] max_input`)",
                crate::limits::format_size(size),
                crate::limits::format_size(state.max_input)
            ),
        ));
    }
    Ok(())
}

/// The answer to a start: the run, its `Location`, and
/// `Idempotent-Replayed` when it is an earlier request's run.
pub(super) fn started(status: StatusCode, run: &RunRecord, new: bool) -> Response {
    let mut response = json_response(status, &run_view(run));
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", run.id)) {
        headers.insert(header::LOCATION, location);
    }
    if !new {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The input and blobs of a start: JSON with blob references, or multipart.
async fn read_start(
    state: &Arc<AppState>,
    request: Request,
) -> Result<(Value, Vec<crate::step::Blob>, Option<String>), Problem> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let mut multipart = axum::extract::Multipart::from_request(request, state)
            .await
            .map_err(|rejection| {
                Problem::bad_request(format!(
                    "the multipart body is not valid: {}",
                    rejection.body_text()
                ))
            })?;
        let mut input = empty_object();
        let mut blobs = Vec::new();
        let mut webhook = None;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(too_large(state));
                }
                Err(error) => {
                    return Err(Problem::bad_request(format!(
                        "the multipart body is not valid: {}",
                        error.body_text()
                    )));
                }
            };
            let Some(name) = field
                .name()
                .map(str::to_owned)
                .filter(|name| !name.is_empty())
            else {
                return Err(Problem::bad_request(
                    "every multipart part needs a name: `input`, or the input blob it is",
                ));
            };
            let media_type = field.content_type().map(str::to_owned);
            let file_name = field.file_name().map(str::to_owned);
            let data = field.bytes().await.map_err(|error| {
                if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(state)
                } else {
                    Problem::bad_request(format!(
                        "part `{name}` could not be read: {}",
                        error.body_text()
                    ))
                }
            })?;
            if name == "webhook" {
                webhook = Some(String::from_utf8_lossy(&data).trim().to_owned());
                continue;
            }
            if name == "input" {
                if data.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                input = crate::json::from_slice(&data).map_err(|error| {
                    Problem::bad_request(format!("the `input` part is not valid JSON: {error}"))
                })?;
                continue;
            }
            let media_type = media_type
                .filter(|media_type| !media_type.is_empty())
                .unwrap_or_else(|| {
                    crate::step::media_type_of(std::path::Path::new(
                        file_name.as_deref().unwrap_or(""),
                    ))
                    .to_owned()
                });
            blobs.push(crate::step::Blob {
                name,
                media_type,
                data: data.to_vec(),
            });
        }
        return Ok((input, blobs, webhook));
    }
    let headers = request.headers().clone();
    let body: StartRun = json_body(state, &headers, request.into_body(), || StartRun {
        input: empty_object(),
        blobs: Vec::new(),
        webhook: None,
    })
    .await?;
    let mut blobs = Vec::new();
    for reference in body.blobs {
        let data = state.store.blob(&reference.digest)?.ok_or_else(|| {
            Problem::unprocessable(
                "unknown-blob",
                format!("blob `{}` (`{}`) is not in this store; send the file as a multipart part instead", reference.name, reference.digest),
            )
        })?;
        blobs.push(crate::step::Blob {
            name: reference.name,
            media_type: reference
                .media_type
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            data,
        });
    }
    Ok((body.input, blobs, body.webhook))
}

/// Refuses a run's own webhook URL unless `[server] webhook_urls` allows it:
/// an API caller must not make the server post to any address it likes.
fn check_webhook(state: &AppState, url: &str) -> Result<(), Problem> {
    let refuse = |why: String| Problem::unprocessable("webhook-refused", why);
    let Some(rules) = &state.settings.webhook_urls else {
        return Err(refuse(format!(
            "this server takes no per-run webhook URLs (`{url}`); its operator allows them with `[server] webhook_urls`, or sets endpoints for every run with `[[server.webhooks]]`"
        )));
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| refuse(format!("`{url}` is not a URL")))?;
    let scheme = uri.scheme_str().unwrap_or("");
    let host = uri.host().unwrap_or("");
    let port = uri
        .port_u16()
        .or_else(|| crate::grants::default_port(scheme))
        .unwrap_or(0);
    if !rules
        .iter()
        .any(|rule| rule.allows(scheme, host, port, "POST"))
    {
        return Err(refuse(format!(
            "webhook URL `{url}` is not among those this server may call (`[server] webhook_urls`)"
        )));
    }
    Ok(())
}

/// Waits up to `wait` for run `run_id` to end; the run as it is then.
async fn wait_for(state: &AppState, run_id: &str, wait: Duration) -> Result<RunRecord, Problem> {
    let mut events = state.dispatcher.executor().subscribe();
    let shutdown = state.dispatcher.shutdown_token();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let run = load_run(state, run_id)?;
        if run.status.is_finished() || tokio::time::Instant::now() >= deadline {
            return Ok(run);
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => return load_run(state, run_id),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            event = events.recv() => {
                if let Ok(event) = event && event.run_id != run_id {
                    continue;
                }
            }
        }
    }
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of runs.", body = RunList),
        (status = 400, description = "Malformed query.", content_type = PROBLEM_JSON, body = Problem),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn list_runs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    list: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let list = query(list)?;
    let limit = list.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "`limit={limit}` must be between 1 and {MAX_PAGE}"
        )));
    }
    let workflow = list.workflow.clone();
    let status = list.status;
    let keep = move |run: &RunRecord| {
        workflow
            .as_ref()
            .is_none_or(|name| &run.workflow.name == name)
            && status.is_none_or(|status| RunState::from(run.status) == status)
    };
    // One more than a page tells whether another page follows.
    let mut runs = state
        .store
        .runs_page(list.cursor.as_deref(), limit + 1, &keep)?;
    let next_cursor = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(|run| run.id.clone())
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &RunList {
            runs: runs.iter().map(run_view).collect(),
            next_cursor,
        },
    ))
}

/// A run.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run id.")),
    responses(
        (status = 200, description = "The run.", body = RunView),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn get_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let run = load_run(&state, &path(id)?)?;
    Ok(json_response(StatusCode::OK, &run_view(&run)))
}

/// A run's steps.
#[utoipa::path(get, path = "/v1/runs/{id}/steps", tag = "runs",
    params(("id" = String, Path, description = "The run id.")),
    responses(
        (status = 200, description = "The run's steps, in definition order.", body = StepList),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn get_steps(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let run = load_run(&state, &path(id)?)?;
    let steps = state.store.steps(&run.id)?;
    Ok(json_response(
        StatusCode::OK,
        &StepList {
            steps: steps.iter().map(|step| step_view(&run.id, step)).collect(),
        },
    ))
}

/// One of a run's blobs (its input's, its output's or a step's output's).
#[utoipa::path(get, path = "/v1/runs/{id}/blobs/{digest}", tag = "runs",
    params(
        ("id" = String, Path, description = "The run id."),
        ("digest" = String, Path, description = "The blob's `sha256:<hex>`.")),
    responses(
        (status = 200, description = "The bytes, with the blob's media type.", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run, or the run has no such blob.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn get_blob(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let (id, digest) = path(ids)?;
    let run = load_run(&state, &id)?;
    let steps = state.store.steps(&run.id)?;
    // Only a blob this run holds: a digest is not a key to the whole store.
    let found = run
        .input_blobs
        .iter()
        .chain(&run.output_blobs)
        .chain(steps.iter().flat_map(|step| step.output_blobs.iter()))
        .chain(
            steps
                .iter()
                .flat_map(|step| step.items.iter())
                .flat_map(|item| item.output_blobs.iter()),
        )
        .find(|blob| blob.digest == digest)
        .cloned();
    let missing = || {
        Problem::not_found(
            "blob",
            format!(
                "run `{}` has no blob `{digest}`; its blobs are listed in the run and its steps",
                run.id
            ),
        )
    };
    let blob = found.ok_or_else(missing)?;
    let bytes = state.store.blob(&blob.digest)?.ok_or_else(missing)?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, blob_media_type(&blob.media_type));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&blob.name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The `Content-Type` of a blob: its media type when that is a valid
/// `type/subtype[; parameters]`, else `application/octet-stream` (a step
/// may give any text, an empty one included).
fn blob_media_type(media_type: &str) -> HeaderValue {
    let octet_stream = HeaderValue::from_static("application/octet-stream");
    let token = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let valid = match essence.split_once('/') {
        Some((kind, subtype)) => token(kind) && token(subtype),
        None => false,
    };
    if !valid || media_type.chars().any(|c| c.is_control()) {
        return octet_stream;
    }
    HeaderValue::from_str(media_type.trim()).unwrap_or(octet_stream)
}

/// `attachment` with the blob's name as RFC 6266 gives it: `filename=` an
/// ASCII fallback (path separators, quotes, control and bidi characters
/// and non-ASCII removed), and `filename*=UTF-8''` the name
/// percent-encoded, without control or bidi characters or path
/// separators. A name is what the step gave it; a client must never get a
/// path out of it.
fn content_disposition(name: &str) -> String {
    use crate::telemetry::escape::is_unsafe;
    // The last path component only: `../../etc/passwd` is `passwd`.
    let base = name
        .rsplit(['/', '\\'])
        .find(|part| !part.is_empty())
        .unwrap_or("");
    let clean: String = base.chars().filter(|c| !is_unsafe(*c)).collect();
    let clean = clean.trim().trim_start_matches('.').trim();
    let clean = if clean.is_empty() { "blob" } else { clean };
    let fallback: String = clean
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| !matches!(c, '"' | '\\' | '%' | ';'))
        .collect();
    let fallback = fallback.trim().trim_start_matches('.');
    let fallback = if fallback.is_empty() {
        "blob"
    } else {
        fallback
    };
    let mut encoded = String::with_capacity(clean.len() * 3);
    for byte in clean.bytes() {
        // RFC 5987 attr-char.
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The run's events as Server-Sent Events: `id` is the event's sequence
/// number, `event` its kind, `data` its JSON. Reconnect with
/// `Last-Event-ID` to get what was missed. The stream ends after
/// `run_finished`.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(
        ("id" = String, Path, description = "The run id."),
        ("Last-Event-ID" = Option<u64>, Header, description = "The last event id received: only later ones are sent."),
        EventsQuery),
    responses(
        (status = 200, description = "An event stream: one message per event.", content_type = "text/event-stream", body = RunEventMessage),
        (status = 400, description = "Malformed `Last-Event-ID`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn run_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    after: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let run = load_run(&state, &path(id)?)?;
    let mut after = query(after)?.after;
    if let Some(value) = headers.get("last-event-id") {
        // An SSE client sends it only with an id it was given: an empty or
        // foreign value is a client bug, said as such.
        let text = value.to_str().unwrap_or("").trim();
        after = Some(text.parse().map_err(|_| {
            Problem::bad_request(format!(
                "`Last-Event-ID: {text}` is not an event id this server sent (a number)"
            ))
        })?);
    }
    Ok(super::events::stream(state.clone(), run.id, after).into_response())
}

/// Delivers a signal to a `wait` step: its body (any JSON, default `{}`)
/// becomes the step's output, and the run goes on.
#[utoipa::path(post, path = "/v1/runs/{id}/signals/{step}", tag = "runs",
    params(
        ("id" = String, Path, description = "The run id."),
        ("step" = String, Path, description = "The `type: wait` step.")),
    request_body(description = "The step's output [default: `{}`].", content((Object = "application/json"))),
    responses(
        (status = 202, description = "Delivered; the run goes on.", body = RunView),
        (status = 400, description = "The body is not JSON.", content_type = PROBLEM_JSON, body = Problem),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `signals:write`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 409, description = "Not a wait step, already signalled, or the run has ended.", content_type = PROBLEM_JSON, body = Problem),
        (status = 413, description = "The body is too large.", content_type = PROBLEM_JSON, body = Problem),
        (status = 415, description = "Not JSON.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn signal_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    axum::Extension(trace): axum::Extension<RequestTrace>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.require(Scope::SignalsWrite)?;
    let (id, step) = path(ids)?;
    let run = load_run(&state, &id)?;
    let data: Value = json_body(&state, &headers, body, empty_object).await?;
    let plan = state
        .dispatcher
        .plan_for(&run)
        .await
        .map_err(|error| Problem::internal(&error))?;
    state
        .dispatcher
        .executor()
        .signal_with(&plan, &run.id, &step, data, &origin(&caller, &trace))
        .map_err(|error| Problem::from(error).run(&run.id))?;
    state.dispatcher.dispatch(&run.id, Some(plan));
    let run = load_run(&state, &run.id)?;
    Ok(json_response(StatusCode::ACCEPTED, &run_view(&run)))
}

/// Cancels a run: at once if it is not executing, else within a second
/// (its running attempts are abandoned). Final.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run id.")),
    request_body(description = "Why [optional].", content((CancelRun = "application/json"))),
    responses(
        (status = 200, description = "Cancelled.", body = RunView),
        (status = 202, description = "Requested: the host executing it stops it within a second.", body = RunView),
        (status = 400, description = "Malformed body.", content_type = PROBLEM_JSON, body = Problem),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:write`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 409, description = "The run has ended.", content_type = PROBLEM_JSON, body = Problem),
        (status = 413, description = "The body is too large.", content_type = PROBLEM_JSON, body = Problem),
        (status = 415, description = "Not JSON.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn cancel_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    axum::Extension(trace): axum::Extension<RequestTrace>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsWrite)?;
    let run = load_run(&state, &path(id)?)?;
    let request: CancelRun = json_body(&state, &headers, body, CancelRun::default).await?;
    let cancelled = state
        .dispatcher
        .executor()
        .cancel_with(&run.id, request.reason.as_deref(), &origin(&caller, &trace))
        .map_err(|error| Problem::from(error).run(&run.id))?;
    let status = match cancelled {
        Cancelled::Now(report) => {
            if let Some(webhooks) = state.dispatcher.webhooks()
                && let Err(error) = webhooks.notify(&report.run, "run.cancelled", None)
            {
                tracing::error!(target: "plait::server", error = %error, "recording a webhook failed");
            }
            StatusCode::OK
        }
        Cancelled::Requested | Cancelled::AlreadyRequested => StatusCode::ACCEPTED,
    };
    let run = load_run(&state, &run.id)?;
    Ok(json_response(status, &run_view(&run)))
}

/// Tries a failed run again from its failed steps (what succeeded is kept).
#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs",
    params(("id" = String, Path, description = "The run id.")),
    responses(
        (status = 202, description = "The run is queued again.", body = RunView),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:write`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 409, description = "The run has not failed.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem),
        (status = 503, description = "The server is stopping.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn retry_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsWrite)?;
    let run = load_run(&state, &path(id)?)?;
    if run.status != RunStatus::Failed {
        return Err(Problem::conflict(
            "run-not-failed",
            format!(
                "run `{}` is {}; only a failed run can be retried",
                run.id,
                run.status.as_str()
            ),
        )
        .run(&run.id));
    }
    if state.dispatcher.closing() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "The server is stopping",
            "the server is stopping; retry the run when it is back",
        )
        .retry_after(5));
    }
    let audit = AuditRecord {
        at_ms: crate::clock::now_ms(),
        actor: caller.actor.clone(),
        action: crate::store::AuditAction::RunRetry,
        run_id: Some(run.id.clone()),
        workflow: Some(run.workflow.name.clone()),
        detail: Value::Null,
    };
    state.store.commit(Commit {
        audit: Some(&audit),
        ..Commit::default()
    })?;
    state.dispatcher.retry(&run.id);
    Ok(json_response(StatusCode::ACCEPTED, &run_view(&run)))
}

/// One attempt to deliver a webhook message.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAttemptView {
    /// When (RFC 3339).
    pub at: String,
    /// The receiver's status code, if it answered.
    pub status: Option<u16>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// A webhook message about a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// The message id: the `webhook-id` header.
    pub id: String,
    /// Where it goes.
    pub url: String,
    /// `run.succeeded`, `run.failed`, `run.cancelled` or `run.waiting`.
    pub event: String,
    /// `pending`, `delivered` or `failed` (every attempt failed).
    pub state: String,
    /// When the next attempt is due (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<WebhookAttemptView>,
}

/// `GET /v1/runs/{id}/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// The run's messages, oldest first.
    pub webhooks: Vec<WebhookView>,
}

/// The webhook messages about a run, and every attempt to deliver them.
#[utoipa::path(get, path = "/v1/runs/{id}/webhooks", tag = "runs",
    params(("id" = String, Path, description = "The run id.")),
    responses(
        (status = 200, description = "The run's webhook messages.", body = WebhookList),
        (status = 401, description = "No valid token.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:read`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such run.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = [])))]
async fn run_webhooks(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let run = load_run(&state, &path(id)?)?;
    let webhooks = super::webhooks::messages(state.store.as_ref(), &run.id)?
        .into_iter()
        .map(|delivery| WebhookView {
            id: delivery.id,
            url: delivery.url,
            event: delivery.event,
            next_attempt_at: (delivery.state == "pending" && delivery.next_at_ms != u64::MAX)
                .then(|| time_text(delivery.next_at_ms)),
            state: delivery.state,
            attempts: delivery
                .attempts
                .into_iter()
                .map(|attempt| WebhookAttemptView {
                    at: time_text(attempt.at_ms),
                    status: attempt.status,
                    error: attempt.error,
                    duration_ms: attempt.duration_ms,
                })
                .collect(),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &WebhookList { webhooks }))
}

// ------------------------------------------------------------------ OpenAPI

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plait",
        description = "Start, watch and steer durable workflow runs of sandboxed WebAssembly steps. Errors are RFC 9457 problem details (`application/problem+json`).",
    ),
    paths(
        healthz, readyz, metrics, openapi, list_workflows, start_run, list_runs, get_run,
        get_steps, get_blob, run_events, signal_run, cancel_run, retry_run, run_webhooks,
        super::triggers::webhook::fire_trigger
    ),
    components(schemas(Problem, RunView, RunList, StepList, StartRun, CancelRun, WorkflowList, Health)),
    modifiers(&BearerAuth),
    tags(
        (name = "runs", description = "Runs: start, read, follow, signal, cancel, retry."),
        (name = "workflows", description = "The workflows served."),
        (name = "triggers", description = "Webhook triggers: URLs that start a workflow with the request body."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from `plait token create` (not needed on a loopback server with no tokens).",
                    ))
                    .build(),
            ),
        );
    }
}
