//! `notify`: a Plait step that POSTs its input document, as JSON, to a
//! webhook the workflow grants: the `http` step preset for notifications.
//!
//! Config: `url` (required, the webhook), `auth` and `timeout_ms` as for
//! `http` (with the granted secret `token`). Output:
//! `{"delivered": true, "status", "url"}`. Failures follow
//! [`http_client::classify`]: a 5xx, 408 or 429 answer or a transport
//! failure is retryable; another 4xx, or a webhook host the workflow did
//! not grant, is fatal.
//!
//! Every delivery carries the invocation's idempotency key twice: as
//! `Idempotency-Key` and as the Standard Webhooks `webhook-id`. Both stay
//! the same when the step is retried or resumed after a crash, so a
//! receiver that remembers the ids it handled drops a repeat.

use http_client::{Request, classify, send};
use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde::Serialize;
use serde_json::Value;

/// The `notify` step.
pub struct Notify;

/// The Standard Webhooks message id header: the invocation's idempotency
/// key.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";

/// The output document.
#[derive(Debug, Serialize)]
pub struct Delivered {
    /// Always true: a failed delivery is a step error.
    pub delivered: bool,
    /// The webhook's status code.
    pub status: u16,
    /// The webhook.
    pub url: String,
}

impl Step for Notify {
    type Input = Value;
    type Output = Delivered;

    fn info() -> StepInfo {
        http_client::declare(
            StepInfo::new("notify", env!("CARGO_PKG_VERSION"))
                .description("POSTs the input document as JSON to a granted webhook.")
                .config("url", "The webhook URL.", true),
        )
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Delivered>, StepError> {
        let url = ctx.require_config("url")?;
        http_client::parse_url(&url)?;
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let (auth, timeout) = http_client::auth_and_timeout(ctx)?;
        headers.extend(auth);
        http_client::add_idempotency_key(ctx, &mut headers);
        http_client::add_header_once(
            &mut headers,
            WEBHOOK_ID_HEADER,
            &ctx.invocation().idempotency_key,
        );
        let request = Request {
            method: "POST".to_owned(),
            url: url.clone(),
            headers,
            body: Some(serde_json::to_vec(&input.data).expect("a JSON value serializes")),
            timeout,
        };
        let response = send(&request)?;
        classify(&request, &response)?;
        ctx.info("notification delivered");
        Ok(Delivered {
            delivered: true,
            status: response.status,
            url,
        }
        .into())
    }
}

plait_sdk::export_step!(Notify);
