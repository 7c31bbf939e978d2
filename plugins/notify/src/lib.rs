//! `notify`: a Plait step that POSTs its input document, as JSON, to a
//! webhook the workflow grants: the `http` step preset for notifications.
//!
//! Config: `url` (required, the webhook), `auth` and `timeout_ms` as for
//! `http` (with the granted secret `token`). Output:
//! `{"delivered": true, "status", "url"}`. Failures follow
//! [`http_client::classify`]: a 5xx, 408 or 429 answer or a transport
//! failure is retryable; another 4xx, or a webhook host the workflow did
//! not grant, is fatal.

use std::time::Duration;

use http_client::{Request, auth_header, classify, send};
use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde::Serialize;
use serde_json::Value;

/// The secret used by `auth`.
pub const TOKEN_SECRET: &str = "token";

/// The `notify` step.
pub struct Notify;

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
        StepInfo::new("notify", env!("CARGO_PKG_VERSION"))
            .description("POSTs the input document as JSON to a granted webhook.")
            .config("url", "The webhook URL.", true)
            .config(
                "auth",
                "`bearer`, `basic` or `header:<Name>`, using the secret `token`.",
                false,
            )
            .config(
                "timeout_ms",
                "Connect and first-byte timeout in milliseconds (default 10000).",
                false,
            )
            .secret(TOKEN_SECRET)
            .outbound_http("https://*:*")
            .outbound_http("http://*:*")
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Delivered>, StepError> {
        let url = ctx.require_config("url")?;
        http_client::parse_url(&url)?;
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(auth) = ctx.config("auth") {
            let token = ctx.config(TOKEN_SECRET).ok_or_else(|| {
                StepError::fatal(format!(
                    "config `auth` needs the secret `{TOKEN_SECRET}`: grant it with `grants: {{ secrets: [{TOKEN_SECRET}] }}`"
                ))
            })?;
            headers.push(auth_header(&auth, &token)?);
        }
        let timeout =
            Duration::from_millis(ctx.config_parsed::<u64>("timeout_ms")?.unwrap_or(10_000));
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
