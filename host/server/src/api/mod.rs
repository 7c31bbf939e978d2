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
use plait::executor::{Cancelled, Origin, StartRequest};
use plait::plan::Plan;
use plait::store::{AuditRecord, BlobRef, Commit, RunRecord, RunStatus, StepRecord, StepStatus};

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

mod ops;
mod runs;
mod start;
mod webhooks;
mod wire;

use ops::*;
use runs::*;
use start::*;
pub(crate) use start::{check_input_size, hold_key, room, served_plan, started};
use webhooks::*;
pub use wire::*;

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
    plait::json::from_slice(&bytes).map_err(|error| {
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
            plait::limits::format_size(state.settings.max_body)
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
