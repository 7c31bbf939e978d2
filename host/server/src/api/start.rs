//! Starting a run: the request (JSON or multipart, blobs, webhook), the
//! checks before anything is stored, the idempotency key held while it is
//! in flight, and `?wait=`.

// utoipa's generated code names the parameter structs by full path.
#![allow(unused_qualifications)]

use super::*;

/// Removes an idempotency key from the in-flight set when the request ends.
pub(crate) struct InFlight<'a> {
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
pub(super) async fn start_run(
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
    let (run, new) = state
        .dispatcher
        .start(plan, request, webhook.as_deref())
        .await?;
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
pub(crate) fn room(state: &AppState) -> Result<(), Problem> {
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
pub(crate) async fn served_plan(state: &AppState, name: &str) -> Result<Arc<Plan>, Problem> {
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
pub(crate) fn hold_key<'a>(
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
pub(crate) fn check_input_size(
    state: &AppState,
    input: &Value,
    blobs: &[plait::step::Blob],
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
                plait::limits::format_size(size),
                plait::limits::format_size(state.max_input)
            ),
        ));
    }
    Ok(())
}

/// The answer to a start: the run, its `Location`, and
/// `Idempotent-Replayed` when it is an earlier request's run.
pub(crate) fn started(status: StatusCode, run: &RunRecord, new: bool) -> Response {
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
pub(super) async fn read_start(
    state: &Arc<AppState>,
    request: Request,
) -> Result<(Value, Vec<plait::step::Blob>, Option<String>), Problem> {
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
                input = plait::json::from_slice(&data).map_err(|error| {
                    Problem::bad_request(format!("the `input` part is not valid JSON: {error}"))
                })?;
                continue;
            }
            let media_type = media_type
                .filter(|media_type| !media_type.is_empty())
                .unwrap_or_else(|| {
                    plait::step::media_type_of(std::path::Path::new(
                        file_name.as_deref().unwrap_or(""),
                    ))
                    .to_owned()
                });
            blobs.push(plait::step::Blob {
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
        blobs.push(plait::step::Blob {
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
pub(super) fn check_webhook(state: &AppState, url: &str) -> Result<(), Problem> {
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
        .or_else(|| plait::grants::default_port(scheme))
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
pub(super) async fn wait_for(
    state: &AppState,
    run_id: &str,
    wait: Duration,
) -> Result<RunRecord, Problem> {
    // This run's events only: a subscription to all of them would wake
    // every waiting request on each event of every other run.
    let watch = state.dispatcher.executor().watch_run(run_id);
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
            // A run another process finished sends no event here.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = watch.changed() => {}
        }
    }
}
