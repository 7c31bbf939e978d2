//! A run's webhook deliveries.

// utoipa's generated code names the parameter structs by full path.
#![allow(unused_qualifications)]

use super::*;

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
pub(super) async fn run_webhooks(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller.require(Scope::RunsRead)?;
    let run = load_run(&state, &path(id)?)?;
    let webhooks = crate::webhooks::messages(state.store.as_ref(), &run.id)?
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
