//! Operations: health, readiness, metrics, the OpenAPI document, and the
//! workflows served.

// utoipa's generated code names the parameter structs by full path.
#![allow(unused_qualifications)]

use super::*;

/// Whether the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up.", body = Health)))]
pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
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
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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
pub(super) async fn metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let text = state.metrics.render(Some(state.store.as_ref()));
    Ok((
        [(
            header::CONTENT_TYPE,
            plait::telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
pub(super) async fn openapi() -> Response {
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
pub(super) async fn list_workflows(
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
