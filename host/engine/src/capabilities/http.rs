//! Outbound HTTP through `wasi:http`, limited to the step's allow-list.
//!
//! A request is checked twice. First its scheme, host, port and method
//! against the step's [`OutboundRule`]s; then every address its host
//! resolves to: a non-public address ([`is_private`]: loopback, private,
//! link-local where cloud metadata lives, unique-local…) is refused unless
//! the operator's policy allows private networks. A plain `http` request is
//! then sent to the checked address itself, so a second DNS answer cannot
//! swap in another one; an `https` request connects by name, and a swapped
//! address would have to present a valid certificate for that name.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::grants::{OutboundRule, default_port, is_private};

/// The per-invocation `wasi:http` hooks: the step's rules and the policy's
/// stance on private addresses.
pub struct HttpHooks {
    rules: Arc<Vec<OutboundRule>>,
    allow_private: bool,
    /// Denied requests, one line each, for the step's log.
    pub(super) denials: Arc<Mutex<Vec<String>>>,
    /// The invoking attempt's trace context, passed on to the server.
    traceparent: Option<http::HeaderValue>,
}

impl HttpHooks {
    /// Hooks allowing exactly `rules`; `allow_private` lets requests reach
    /// non-public addresses.
    pub fn new(rules: Arc<Vec<OutboundRule>>, allow_private: bool) -> HttpHooks {
        HttpHooks {
            rules,
            allow_private,
            denials: Arc::default(),
            traceparent: None,
        }
    }

    /// Sends `traceparent` (a W3C trace context) with every request that
    /// does not carry its own, so the server's spans join the run's trace.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> HttpHooks {
        self.traceparent = traceparent.and_then(|value| http::HeaderValue::from_str(&value).ok());
        self
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        drop(fut);
        let rules = self.rules.clone();
        let allow_private = self.allow_private;
        let denials = self.denials.clone();
        if let Some(traceparent) = &self.traceparent
            && !request.headers().contains_key("traceparent")
        {
            request
                .headers_mut()
                .insert("traceparent", traceparent.clone());
        }
        Box::new(async move {
            let deny = |why: String, error: HttpError| {
                denials.lock().unwrap_or_else(|p| p.into_inner()).push(why);
                Err(error)
            };
            let uri = request.uri().clone();
            let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
            let Some(host) = uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()) else {
                return Err(HttpError::HttpRequestUriInvalid);
            };
            let port = uri
                .port_u16()
                .or_else(|| default_port(&scheme))
                .unwrap_or(0);
            let method = request.method().as_str().to_owned();
            let target = format!("{method} {scheme}://{host}:{port}");
            if !rules
                .iter()
                .any(|rule| rule.allows(&scheme, &host, port, &method))
            {
                let granted = if rules.is_empty() {
                    "the step has no outbound HTTP grant".to_owned()
                } else {
                    format!(
                        "granted: {}",
                        rules
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return deny(
                    format!("outbound request {target} denied: not on the allow-list ({granted})"),
                    HttpError::HttpRequestDenied,
                );
            }
            let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(found) => found.collect(),
                    Err(error) => {
                        return deny(
                            format!("outbound request {target}: DNS lookup failed: {error}"),
                            HttpError::DnsError {
                                rcode: Some(error.to_string()),
                                info_code: None,
                            },
                        );
                    }
                },
            };
            if addresses.is_empty() {
                return Err(HttpError::DestinationNotFound);
            }
            if !allow_private && let Some(private) = addresses.iter().find(|a| is_private(a.ip())) {
                return deny(
                    format!(
                        "outbound request {target} denied: {host} resolves to the non-public address {}, \
                         and the host policy does not allow private networks",
                        private.ip()
                    ),
                    HttpError::DestinationIpProhibited,
                );
            }
            if scheme == "http" {
                // Pin the checked address: the request goes to it, not to
                // a second lookup of the name. The Host header keeps the name.
                let pinned = addresses[0];
                let path = uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
                    .to_owned();
                *request.uri_mut() = http::Uri::builder()
                    .scheme("http")
                    .authority(pinned.to_string())
                    .path_and_query(path)
                    .build()
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}
