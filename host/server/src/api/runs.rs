//! Runs: list, read, steps, blobs, the event stream, signal, cancel and
//! retry.

// utoipa's generated code names the parameter structs by full path.
#![allow(unused_qualifications)]

use super::*;

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
pub(super) async fn list_runs(
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
        runs.last().map(|run| run.id.to_string())
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
pub(super) async fn get_run(
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
pub(super) async fn get_steps(
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
pub(super) async fn get_blob(
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
pub(super) fn blob_media_type(media_type: &str) -> HeaderValue {
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
pub(super) fn content_disposition(name: &str) -> String {
    use plait::telemetry::escape::is_unsafe;
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
pub(super) async fn run_events(
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
    Ok(crate::events::stream(state.clone(), run.id.into_string(), after).into_response())
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
pub(super) async fn signal_run(
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
pub(super) async fn cancel_run(
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
pub(super) async fn retry_run(
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
        at_ms: plait::clock::now_ms(),
        actor: caller.actor.clone(),
        action: plait::store::AuditAction::RunRetry,
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
