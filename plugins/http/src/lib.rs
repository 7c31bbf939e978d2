//! `http`: a Plait step that makes one REST call to a host the workflow
//! grants, the step users reach for first to talk to a SaaS API.
//!
//! Config: `url` (required), `method` (default `GET`), `headers` (a JSON
//! object of header names to values), `auth` (`bearer`, `basic` or
//! `header:<Name>`, with the granted secret `token` as the credential),
//! `timeout_ms` (connect and first byte, default 10000). For `POST`, `PUT`
//! and `PATCH` the step's input document is sent as the JSON body. Every
//! request carries `Idempotency-Key`: the invocation's idempotency key, the
//! same on every retry and resume of the step (a `headers` entry of that
//! name replaces it).
//!
//! Output: `{"status", "headers": {name: value}, "body"}`, the body parsed
//! as JSON when it is JSON, else text. Failures follow
//! [`http_client::classify`]: 5xx, 408, 429 (with `Retry-After` in the
//! details) and transport failures are retryable; other 4xx, and a host the
//! workflow did not grant, are fatal.

use std::collections::BTreeMap;

use http_client::{Request, classify, send};
use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde::Serialize;
use serde_json::Value;

/// The `http` step.
pub struct Http;

/// The output document.
#[derive(Debug, Serialize)]
pub struct HttpOutput {
    /// The response status.
    pub status: u16,
    /// Response headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when it parses, else text.
    pub body: Value,
}

impl Step for Http {
    type Input = Value;
    type Output = HttpOutput;

    fn info() -> StepInfo {
        http_client::declare(
            StepInfo::new("http", env!("CARGO_PKG_VERSION"))
                .description("Makes one REST call to a granted host; the input is the JSON body of POST, PUT and PATCH.")
                .config("url", "The URL to call, `https://host[:port]/path?query`.", true)
                .config("method", "GET (default), POST, PUT, PATCH, DELETE, HEAD or OPTIONS.", false)
                .config("headers", "Extra headers, as a JSON object of names to values.", false),
        )
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<HttpOutput>, StepError> {
        let request = build_request(ctx, &input.data)?;
        let response = send(&request)?;
        classify(&request, &response)?;
        Ok(HttpOutput {
            status: response.status,
            headers: response.headers.iter().cloned().collect(),
            body: response.body_value(),
        }
        .into())
    }
}

/// The request the config and `input` describe.
///
/// # Errors
///
/// A fatal error naming the config key that is wrong.
pub fn build_request(ctx: &Context, input: &Value) -> Result<Request, StepError> {
    let url = ctx.require_config("url")?;
    let method = ctx
        .config("method")
        .unwrap_or_else(|| "GET".to_owned())
        .to_ascii_uppercase();
    if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&method.as_str()) {
        return Err(StepError::fatal(format!(
            "config `method`: `{method}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        )));
    }
    let mut headers: Vec<(String, String)> = match ctx.config("headers") {
        None => Vec::new(),
        Some(text) => {
            let map: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|error| {
                StepError::fatal(format!(
                    "config `headers` must be a JSON object of strings, like {{\"accept\": \"application/json\"}}: {error}"
                ))
            })?;
            map.into_iter().collect()
        }
    };
    let (auth, timeout) = http_client::auth_and_timeout(ctx)?;
    headers.extend(auth);
    http_client::add_idempotency_key(ctx, &mut headers);
    let body = if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        headers.push(("content-type".into(), "application/json".into()));
        Some(serde_json::to_vec(input).expect("a JSON value serializes"))
    } else {
        None
    };
    http_client::parse_url(&url)?;
    Ok(Request {
        method,
        url,
        headers,
        body,
        timeout,
    })
}

plait_sdk::export_step!(Http);

#[cfg(test)]
mod tests {
    use http_client::TOKEN_SECRET;
    use plait_sdk::testing::TestContext;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_post_carries_the_input_and_the_auth_header() {
        let ctx = TestContext::new()
            .config("url", "https://api.example.com/v1/items")
            .config("method", "post")
            .config("headers", r#"{"X-Trace": "abc"}"#)
            .config("auth", "bearer")
            .config(TOKEN_SECRET, "t0ken-value")
            .build();
        let request = build_request(&ctx, &json!({"name": "x"})).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.body.as_deref(), Some(&br#"{"name":"x"}"#[..]));
        assert!(
            request
                .headers
                .contains(&("authorization".into(), "Bearer t0ken-value".into()))
        );
        assert!(request.headers.contains(&("X-Trace".into(), "abc".into())));
        assert!(
            request
                .headers
                .contains(&("idempotency-key".into(), "test-run/test-step".into())),
            "{:?}",
            request.headers
        );
    }

    #[test]
    fn a_workflow_given_idempotency_key_replaces_the_invocations() {
        let ctx = TestContext::new()
            .config("url", "https://api.example.com/v1/items")
            .config("headers", r#"{"Idempotency-Key": "mine"}"#)
            .build();
        let request = build_request(&ctx, &Value::Null).unwrap();
        let keys: Vec<&(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
            .collect();
        assert_eq!(keys, [&("Idempotency-Key".to_owned(), "mine".to_owned())]);
    }

    #[test]
    fn mistakes_in_config_are_fatal_and_named() {
        let ctx = TestContext::new()
            .config("url", "https://a.example.com")
            .config("auth", "bearer")
            .build();
        let error = build_request(&ctx, &Value::Null).unwrap_err();
        assert!(
            error.message().contains("secret `token`"),
            "{}",
            error.message()
        );
        let ctx = TestContext::new()
            .config("url", "https://a.example.com")
            .config("method", "FETCH")
            .build();
        assert!(
            build_request(&ctx, &Value::Null)
                .unwrap_err()
                .message()
                .contains("FETCH")
        );
        let ctx = TestContext::new().config("url", "a.example.com").build();
        assert!(
            !build_request(&ctx, &Value::Null)
                .unwrap_err()
                .is_retryable()
        );
    }
}
