//! Webhook triggers: `POST /v1/triggers/{name}` starts a run with the body.
//!
//! A JSON body is the run's input; any other body becomes the trigger's
//! input blob (`blob`), with the trigger's fixed `input`. The request is
//! authenticated one of three ways (`auth`):
//!
//! - `token`: `Authorization: Bearer` with an API token allowing
//!   `runs:write`; the `Idempotency-Key` header works as on
//!   `POST /v1/workflows/{name}/runs`.
//! - `standard-webhooks`: the Standard Webhooks signature
//!   (`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`)
//!   with a timestamp within five minutes; `webhook-id` is the key.
//! - `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`;
//!   `X-GitHub-Delivery` is the key.
//!
//! Either way a key becomes `trigger:NAME:<key>`, so a sender's retry of a
//! delivery gives back the first run (`Idempotent-Replayed: true`) and the
//! same key with another body is refused (422). Signatures are compared in
//! constant time.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts as _, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;

use super::{Trigger, TriggerKind, WebhookAuth};
use crate::api::{self, RunView};
use crate::auth::Scope;
use crate::problem::{PROBLEM_JSON, Problem};
use crate::{AppState, Caller, RequestTrace};

/// How far a Standard Webhooks timestamp may be from now (the spec's
/// suggestion): older messages are replays.
pub const TOLERANCE_SECONDS: u64 = 5 * 60;

/// A webhook trigger the server answers, with its signing key.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The trigger.
    pub trigger: Trigger,
    /// The HMAC key of a signed trigger.
    key: Option<Vec<u8>>,
}

impl Hook {
    /// A webhook trigger with the value of its secret (`None` for token
    /// triggers). A Standard Webhooks secret is `whsec_<base64>` (or the
    /// base64 alone); a GitHub secret is used as written.
    pub fn new(trigger: Trigger, secret: Option<&str>) -> Result<Hook, String> {
        let TriggerKind::Webhook { auth, .. } = &trigger.kind else {
            return Err(format!("trigger `{}` is not a webhook", trigger.name));
        };
        let key = match (auth, secret) {
            (WebhookAuth::Token, _) => None,
            (WebhookAuth::StandardWebhooks { secret: name }, Some(value)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(value.trim().trim_start_matches("whsec_"))
                    .map_err(|_| {
                        format!(
                            "secret `{name}` of trigger `{}` is not a Standard Webhooks secret: it must be `whsec_` followed by base64",
                            trigger.name
                        )
                    })?,
            ),
            (WebhookAuth::GitHub { .. }, Some(value)) => Some(value.as_bytes().to_vec()),
            (auth, None) => {
                return Err(format!(
                    "trigger `{}` needs the value of secret `{}`",
                    trigger.name,
                    auth.secret().unwrap_or_default()
                ));
            }
        };
        if key.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!("the secret of trigger `{}` is empty", trigger.name));
        }
        Ok(Hook { trigger, key })
    }
}

/// Checks a Standard Webhooks signature; returns the `webhook-id`.
pub fn verify_standard(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_seconds: u64,
) -> Result<String, String> {
    let header = |name: &str| -> Result<&str, String> {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                format!(
                    "a Standard Webhooks request needs the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers; `{name}` is missing"
                )
            })
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let sent: u64 = timestamp
        .parse()
        .map_err(|_| format!("`webhook-timestamp: {timestamp}` is not Unix seconds"))?;
    if now_seconds.abs_diff(sent) > TOLERANCE_SECONDS {
        return Err(format!(
            "`webhook-timestamp` is {} s from this server's clock, more than the {TOLERANCE_SECONDS} s allowed: a replayed message, or a clock that is off",
            now_seconds.abs_diff(sent)
        ));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .split_whitespace()
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|signature| {
            base64::engine::general_purpose::STANDARD
                .decode(signature)
                .ok()
        })
        .any(|signature| mac.clone().verify_slice(&signature).is_ok());
    if matched {
        Ok(id.to_owned())
    } else {
        Err("no `v1` signature in `webhook-signature` matches the body: the sender's secret is not this trigger's, or the body changed on the way".to_owned())
    }
}

/// Checks GitHub's `X-Hub-Signature-256`; returns `X-GitHub-Delivery`.
pub fn verify_github(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, String> {
    let Some(signature) = headers
        .get("x-hub-signature-256")
        .and_then(|value| value.to_str().ok())
    else {
        return Err("a GitHub webhook needs the `X-Hub-Signature-256` header (set a secret on the webhook in GitHub)".to_owned());
    };
    let signature = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .ok_or("`X-Hub-Signature-256` must be `sha256=` and 64 hex digits")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| {
        "`X-Hub-Signature-256` does not match the body: the webhook's secret in GitHub is not this trigger's, or the body changed on the way".to_owned()
    })?;
    Ok(headers
        .get("x-github-delivery")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty()))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A trigger body that is not JSON.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct RawBody(Vec<u8>);

/// Starts a run of a webhook trigger's workflow with the request body.
///
/// A JSON body is the run's input. Any other body becomes the trigger's
/// input blob (a trigger without `blob` takes JSON only: 415). The
/// authentication is the trigger's: an API token with `runs:write`, or the
/// sender's signature (Standard Webhooks or GitHub); a signed delivery's id
/// is its idempotency key, so a redelivery gives back the first run.
#[utoipa::path(post, path = "/v1/triggers/{name}", tag = "triggers",
    params(
        ("name" = String, Path, description = "The trigger's `name` (`[[server.triggers]]` of type `webhook`)."),
        ("Idempotency-Key" = Option<String>, Header, description = "Token-authenticated triggers: at most one run per key."),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks: the message id (the idempotency key)."),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks: Unix seconds, within 5 minutes of now."),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks: `v1,<base64 HMAC-SHA256>`, space-separated."),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub: `sha256=<hex HMAC-SHA256 of the body>`."),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "GitHub: the delivery id (the idempotency key)."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: the run's spans join the caller's trace.")),
    request_body(description = "The run's input (JSON), or the trigger's input blob (any other media type).",
        content((Value = "application/json"), (RawBody = "application/octet-stream"))),
    responses(
        (status = 202, description = "Accepted: the run is queued or executing (or, replayed, as it is now).", body = RunView,
            headers(("Location" = String, description = "The run."))),
        (status = 400, description = "Malformed request.", content_type = PROBLEM_JSON, body = Problem),
        (status = 401, description = "No valid token, or no valid signature.", content_type = PROBLEM_JSON, body = Problem),
        (status = 403, description = "The token lacks `runs:write`.", content_type = PROBLEM_JSON, body = Problem),
        (status = 404, description = "No such trigger.", content_type = PROBLEM_JSON, body = Problem),
        (status = 409, description = "A request with this key is being handled.", content_type = PROBLEM_JSON, body = Problem),
        (status = 413, description = "The body or the run's input is too large.", content_type = PROBLEM_JSON, body = Problem),
        (status = 415, description = "The trigger takes JSON only.", content_type = PROBLEM_JSON, body = Problem),
        (status = 422, description = "The input does not match the workflow, the key was used for another request, or the workflow does not check out.", content_type = PROBLEM_JSON, body = Problem),
        (status = 429, description = "Rate limited.", content_type = PROBLEM_JSON, body = Problem),
        (status = 503, description = "The queue is full, or the server is stopping.", content_type = PROBLEM_JSON, body = Problem)),
    security(("bearer" = []), ()))]
pub async fn fire_trigger(
    State(state): State<Arc<AppState>>,
    name: Result<Path<String>, PathRejection>,
    axum::Extension(trace): axum::Extension<RequestTrace>,
    request: Request,
) -> Response {
    match fire(state, name, trace, request).await {
        Ok(response) | Err(response) => response,
    }
}

async fn fire(
    state: Arc<AppState>,
    name: Result<Path<String>, PathRejection>,
    trace: RequestTrace,
    request: Request,
) -> Result<Response, Response> {
    let name = api::path(name).map_err(IntoResponse::into_response)?;
    let Some(hook) = state.hooks.get(&name) else {
        return Err(Problem::not_found(
            "trigger",
            format!(
                "no webhook trigger named `{name}` is configured here; triggers are `[[server.triggers]]` tables of type `webhook` in the policy"
            ),
        )
        .into_response());
    };
    let trigger = &hook.trigger;
    let TriggerKind::Webhook { auth, blob } = &trigger.kind else {
        return Err(
            Problem::internal(&"a webhook hook holds another kind of trigger").into_response(),
        );
    };
    let (mut parts, body) = request.into_parts();
    // A token is checked before the body is read; a signature needs it.
    let mut actor = trigger.actor();
    let mut key = None;
    if *auth == WebhookAuth::Token {
        let caller = Caller::from_request_parts(&mut parts, &state).await?;
        caller
            .require(Scope::RunsWrite)
            .map_err(IntoResponse::into_response)?;
        actor = format!("{} via {actor}", caller.actor);
        key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        Problem::bad_request(
                            "the Idempotency-Key header must be visible ASCII text",
                        )
                        .into_response()
                    })?
                    .to_owned(),
            ),
        };
    } else {
        crate::rate_limit(&state, &actor).map_err(IntoResponse::into_response)?;
    }
    api::room(&state).map_err(IntoResponse::into_response)?;
    let bytes = api::read_body(&state, body)
        .await
        .map_err(IntoResponse::into_response)?;
    let signing_key = hook.key.as_deref().unwrap_or_default();
    let verified = match auth {
        WebhookAuth::Token => Ok(None),
        WebhookAuth::StandardWebhooks { .. } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            verify_standard(signing_key, &parts.headers, &bytes, now).map(Some)
        }
        WebhookAuth::GitHub { .. } => verify_github(signing_key, &parts.headers, &bytes),
    };
    match verified {
        Ok(Some(delivery)) => key = Some(delivery),
        Ok(None) => {}
        Err(detail) => {
            tracing::warn!(target: "plait::trigger", trigger = %trigger.name, "refused a webhook: {detail}");
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "Unauthorized",
                detail,
            )
            .into_response());
        }
    }
    let key = key.map(|key| format!("trigger:{}:{key}", trigger.name));
    let (input, blobs) = body_input(trigger, blob.as_deref(), &parts.headers, &bytes)
        .map_err(IntoResponse::into_response)?;
    let plan = api::served_plan(&state, &trigger.workflow)
        .await
        .map_err(|problem| {
            if problem.status == StatusCode::NOT_FOUND.as_u16() {
                // The trigger exists; its workflow does not: the operator's
                // doing, not the caller's.
                Problem::unprocessable(
                    "workflow-missing",
                    format!(
                        "trigger `{}` starts workflow `{}`, which is not served here; the workflows folder must hold it",
                        trigger.name, trigger.workflow
                    ),
                )
                .into_response()
            } else {
                problem.into_response()
            }
        })?;
    let _in_flight = api::hold_key(&state, key.as_deref()).map_err(IntoResponse::into_response)?;
    api::check_input_size(&state, &input, &blobs).map_err(IntoResponse::into_response)?;
    let request = plait::executor::StartRequest::new(input)
        .blobs(blobs)
        .idempotency_key(key)
        .origin(plait::executor::Origin {
            actor: Some(actor),
            trace_parent: trace.0,
        });
    let (run, new) = state
        .dispatcher
        .start(plan, request, None)
        .await
        .map_err(|error| Problem::from(error).into_response())?;
    if new {
        tracing::info!(target: "plait::trigger", trigger = %trigger.name, run_id = %run.id, "webhook started a run");
    }
    Ok(api::started(StatusCode::ACCEPTED, &run, new))
}

/// The run's input and blobs from a trigger's request body.
fn body_input(
    trigger: &Trigger,
    blob: Option<&str>,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(Value, Vec<plait::step::Blob>), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    let essence = content_type.map(|value| {
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let is_json = essence
        .as_deref()
        .is_some_and(|e| e == "application/json" || e.ends_with("+json"));
    if bytes.is_empty() {
        return Ok((trigger.input.clone(), Vec::new()));
    }
    if is_json || (content_type.is_none() && blob.is_none()) {
        let input = plait::json::from_slice(bytes).map_err(|error| {
            Problem::bad_request(format!("the body is not valid JSON: {error}"))
        })?;
        return Ok((input, Vec::new()));
    }
    match blob {
        Some(name) => Ok((
            trigger.input.clone(),
            vec![plait::step::Blob {
                name: name.to_owned(),
                media_type: essence.unwrap_or_else(|| "application/octet-stream".to_owned()),
                data: bytes.to_vec(),
            }],
        )),
        None => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!(
                "trigger `{}` takes JSON bodies (`application/json`), not `{}`; the operator can set `blob` on the trigger to take other bodies as an input blob",
                trigger.name,
                content_type.unwrap_or_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    /// The spec's signature, computed here step by step rather than with
    /// the server's signer.
    fn standard_signature(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn a_standard_webhook_is_checked_for_signature_and_age() {
        let key = b"0123456789abcdef0123456789abcdef";
        let body = r#"{"invoice": 42}"#;
        let now = 1_800_000_000;
        let good = standard_signature(key, "msg_1", now, body);
        let sent = |signature: &str, timestamp: u64| {
            headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &timestamp.to_string()),
                ("webhook-signature", signature),
            ])
        };
        assert_eq!(
            verify_standard(key, &sent(&good, now), body.as_bytes(), now + 10),
            Ok("msg_1".to_owned())
        );
        // Several signatures (a key rotation): any one may match.
        let rotated = format!("v1,AAAA {good}");
        assert!(verify_standard(key, &sent(&rotated, now), body.as_bytes(), now).is_ok());
        let changed = verify_standard(key, &sent(&good, now), b"{\"invoice\": 43}", now);
        assert!(changed.unwrap_err().contains("matches"));
        let other_key = verify_standard(b"another key", &sent(&good, now), body.as_bytes(), now);
        assert!(other_key.is_err());
        let old = verify_standard(key, &sent(&good, now), body.as_bytes(), now + 301);
        assert!(old.unwrap_err().contains("301 s"));
        let missing = verify_standard(
            key,
            &headers(&[("webhook-id", "msg_1")]),
            body.as_bytes(),
            now,
        );
        assert!(
            missing
                .unwrap_err()
                .contains("`webhook-timestamp` is missing")
        );
    }

    #[test]
    fn a_github_webhook_is_checked_and_gives_its_delivery() {
        let key = b"It's a Secret to Everybody";
        // GitHub's documented test vector.
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let sent = headers(&[
            ("x-hub-signature-256", signature),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        assert_eq!(
            verify_github(key, &sent, body),
            Ok(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned()))
        );
        assert!(verify_github(key, &sent, b"Hello, World?").is_err());
        assert!(verify_github(key, &headers(&[]), body).is_err());
        let short = headers(&[("x-hub-signature-256", "sha256=abc")]);
        assert!(
            verify_github(key, &short, body)
                .unwrap_err()
                .contains("64 hex")
        );
    }
}
