//! A small blocking HTTP client over `wasi:http/outgoing-handler`, shared
//! by the `http` and `notify` steps, and the rule that turns a response or
//! a transport failure into a step result.
//!
//! The host decides what may be reached: a request to a host the workflow
//! did not grant fails with `http-request-denied` (fatal: retrying cannot
//! help), and one to a private address with `destination-ip-prohibited`
//! (fatal). Error messages say what happened in words ([`describe`]); the
//! details carry the `wasi:http` error code's name.
//!
//! Retry rule ([`classify`]): 5xx, 408 and 429 responses and transport
//! failures (connection refused or reset, timeouts, DNS failures) are
//! retryable; a 429 or 503 with `Retry-After` says so in the error details.
//! Other 4xx responses and denied requests are fatal.

use std::time::Duration;

use plait_sdk::{Context, StepError, StepInfo};
use serde_json::{Value, json};

mod error_code;
pub use error_code::{Failure, describe};

/// Bytes of response body kept; the rest is an error (fatal: the same
/// request would return as much again).
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// A request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// An upper-case method: GET, POST, …
    pub method: String,
    /// `scheme://host[:port]/path?query`.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// How long to wait for the connection and for the first byte.
    pub timeout: Duration,
}

/// A response received.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON when it parses, else as text.
    pub fn body_value(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
}

/// A URL split into the parts `wasi:http` takes separately.
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host` or `host:port`.
    pub authority: &'a str,
    /// The path and query, at least `/`.
    pub path_with_query: String,
}

/// Splits `scheme://host[:port][/path][?query][#fragment]`; the fragment
/// is never sent.
///
/// # Errors
///
/// A fatal error naming the URL when it has no scheme or host, or a
/// scheme other than `http` and `https`.
pub fn parse_url(url: &str) -> Result<Url<'_>, StepError> {
    let invalid = || {
        StepError::fatal(format!(
            "invalid URL `{url}`: expected `https://host[:port]/path`"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    if scheme != "http" && scheme != "https" {
        return Err(StepError::fatal(format!(
            "invalid URL `{url}`: only `http` and `https` are supported"
        )));
    }
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(invalid());
    }
    let path_with_query = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok(Url {
        scheme,
        authority,
        path_with_query,
    })
}

/// Turns a response into the step's result: `Ok` for 2xx and 3xx, an
/// error following the crate's retry rule otherwise.
pub fn classify(request: &Request, response: &Response) -> Result<(), StepError> {
    let status = response.status;
    if status < 400 {
        return Ok(());
    }
    let body: String = String::from_utf8_lossy(&response.body)
        .chars()
        .take(500)
        .collect();
    let mut details = json!({"status": status, "url": request.url, "body": body});
    let retry_after = response.header("retry-after").map(str::to_owned);
    if let Some(after) = &retry_after {
        details["retry_after"] = json!(after);
    }
    let message = format!("{} {} answered {status}", request.method, request.url);
    let error = if status >= 500 || status == 408 || status == 429 {
        StepError::retryable(match &retry_after {
            Some(after) => format!("{message}; the server asks to retry after {after}"),
            None => message,
        })
    } else {
        StepError::fatal(message)
    };
    Err(error.with_details(details))
}

/// The step error for a transport failure: fatal when the host refused
/// the request (a grant will not change by itself), retryable otherwise.
/// The details carry the URL and the `wasi:http` error code's name.
pub fn transport_error(request: &Request, failure: &Failure) -> StepError {
    let details = json!({"url": request.url, "error": failure.code, "reason": failure.message});
    if failure.is_refusal() {
        StepError::fatal(format!(
            "{} {} was refused by the host ({}): grant this host to the step under \
             `grants: {{ http: [...] }}`, within the host policy",
            request.method, request.url, failure.message
        ))
        .with_details(details)
    } else {
        StepError::retryable(format!(
            "{} {} failed: {}",
            request.method, request.url, failure.message
        ))
        .with_details(details)
    }
}

/// The header `auth` asks for, carrying `token`.
///
/// # Errors
///
/// A fatal error for an unknown `auth`.
pub fn auth_header(auth: &str, token: &str) -> Result<(String, String), StepError> {
    match auth {
        "bearer" => Ok(("authorization".into(), format!("Bearer {token}"))),
        "basic" => Ok((
            "authorization".into(),
            format!("Basic {}", base64(token.as_bytes())),
        )),
        other => match other.strip_prefix("header:") {
            Some(name) if !name.is_empty() => Ok((name.to_ascii_lowercase(), token.to_owned())),
            _ => Err(StepError::fatal(format!(
                "config `auth`: `{other}` is not `bearer`, `basic` or `header:<Name>`"
            ))),
        },
    }
}

/// Standard base64 with padding (for `basic`, whose secret is `user:password`).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The header carrying the invocation's idempotency key on every request
/// a reference step sends (the IETF `Idempotency-Key` header draft).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Adds `Idempotency-Key: KEY`, `KEY` the invocation's idempotency key,
/// to `headers`, unless they set one already (a workflow's own key wins).
/// The key is the same for every attempt of the step in the run, retries
/// and resumes after a crash included, so a receiver that remembers the
/// keys it has handled can drop a second delivery of the same request.
pub fn add_idempotency_key(ctx: &Context, headers: &mut Vec<(String, String)>) {
    add_header_once(
        headers,
        IDEMPOTENCY_HEADER,
        &ctx.invocation().idempotency_key,
    );
}

/// Adds `name: value` unless `headers` have `name` (case-insensitive).
pub fn add_header_once(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    if !headers
        .iter()
        .any(|(key, _)| key.eq_ignore_ascii_case(name))
    {
        headers.push((name.to_owned(), value.to_owned()));
    }
}

/// The secret `auth` uses.
pub const TOKEN_SECRET: &str = "token";

/// The request timeout when config `timeout_ms` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Declares what every HTTP step shares: config `auth` and `timeout_ms`,
/// the secret `token`, and outbound HTTP to any host and port, which the
/// workflow narrows to the hosts it grants.
pub fn declare(info: StepInfo) -> StepInfo {
    info.config(
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

/// The header config `auth` asks for (none when unset), and the timeout.
///
/// # Errors
///
/// A fatal error naming the key: `auth` without the secret granted, an
/// unknown `auth`, or a `timeout_ms` that is not a whole number.
pub fn auth_and_timeout(ctx: &Context) -> Result<(Option<(String, String)>, Duration), StepError> {
    let header = match ctx.config("auth") {
        None => None,
        Some(auth) => {
            let token = ctx.config(TOKEN_SECRET).ok_or_else(|| {
                StepError::fatal(format!(
                    "config `auth` needs the secret `{TOKEN_SECRET}`: grant it with `grants: {{ secrets: [{TOKEN_SECRET}] }}`"
                ))
            })?;
            Some(auth_header(&auth, &token)?)
        }
    };
    let timeout = ctx
        .config_parsed::<u64>("timeout_ms")?
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    Ok((header, timeout))
}

#[cfg(target_arch = "wasm32")]
mod wasi_send;
#[cfg(target_arch = "wasm32")]
pub use wasi_send::send;

/// Sends `request` (only inside a component: natively there is no
/// `wasi:http`).
///
/// # Errors
///
/// Always, natively.
#[cfg(not(target_arch = "wasm32"))]
pub fn send(request: &Request) -> Result<Response, StepError> {
    Err(transport_error(
        request,
        &Failure::other("not running inside a wasi:http host"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            method: "POST".into(),
            url: "https://api.example.com/v1".into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: b"{\"ok\":false}".to_vec(),
        }
    }

    #[test]
    fn urls_split_into_their_parts() {
        let url = parse_url("https://api.example.com:8443/v1/x?y=1#frag").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.authority, "api.example.com:8443");
        assert_eq!(url.path_with_query, "/v1/x?y=1");
        assert_eq!(parse_url("http://h?q").unwrap().path_with_query, "/?q");
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("h/path").is_err());
        assert!(parse_url("https://user@h/").is_err());
    }

    #[test]
    fn statuses_follow_the_retry_rule() {
        assert!(classify(&request(), &response(204, &[])).is_ok());
        let error = classify(&request(), &response(503, &[])).unwrap_err();
        assert!(error.is_retryable());
        let error = classify(&request(), &response(429, &[("Retry-After", "7")])).unwrap_err();
        assert!(error.is_retryable());
        assert!(
            error.message().contains("retry after 7"),
            "{}",
            error.message()
        );
        assert_eq!(error.details().unwrap()["retry_after"], "7");
        let error = classify(&request(), &response(404, &[])).unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(error.details().unwrap()["status"], 404);
    }

    #[test]
    fn auth_headers() {
        assert_eq!(auth_header("bearer", "t").unwrap().1, "Bearer t");
        assert_eq!(
            auth_header("basic", "user:pass").unwrap().1,
            "Basic dXNlcjpwYXNz"
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(
            auth_header("header:X-Api-Key", "k").unwrap(),
            ("x-api-key".into(), "k".into())
        );
        assert!(auth_header("digest", "t").is_err());
    }

    #[test]
    fn refusals_are_fatal_and_say_how_to_grant() {
        use wasi::http::types::ErrorCode;
        let error = transport_error(&request(), &describe(&ErrorCode::HttpRequestDenied));
        assert!(!error.is_retryable());
        assert!(error.message().contains("grants"), "{}", error.message());
        assert!(
            !transport_error(&request(), &describe(&ErrorCode::DestinationIpProhibited))
                .is_retryable()
        );
        let error = transport_error(&request(), &describe(&ErrorCode::ConnectionRefused));
        assert!(error.is_retryable());
        assert!(
            !error.message().contains("ErrorCode") && error.message().contains("refused"),
            "{}",
            error.message()
        );
        assert_eq!(error.details().unwrap()["error"], "connection-refused");
    }
}
