//! Span export over OTLP/HTTP (protobuf), to any OpenTelemetry collector.
//!
//! The exporter's batch processor runs on its own thread and blocks on
//! each export; the HTTP client here hands the request to the tokio
//! runtime the host already runs, over hyper (plain HTTP) or hyper +
//! rustls (HTTPS, the Mozilla roots), so no second HTTP stack is linked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest collector response read.
const MAX_RESPONSE: usize = 1 << 20;

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://127.0.0.1:4318`); spans are posted
    /// to `/v1/traces` under it. `None`: from the standard
    /// `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` variables.
    pub endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// Why span export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint or another setting was refused.
    #[error("cannot export spans to the OTLP endpoint: {0}")]
    Build(String),
}

/// A tracer provider exporting to `config`'s collector in batches. Needs a
/// tokio runtime (the calling one is kept for the exports).
pub fn provider(config: &OtlpConfig) -> Result<SdkTracerProvider, OtlpError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        OtlpError::Build(
            "span export needs a tokio runtime; initialise telemetry inside one".into(),
        )
    })?;
    let client = TokioClient { handle };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_timeout(EXPORT_TIMEOUT);
    if let Some(endpoint) = &config.endpoint {
        let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|error| OtlpError::Build(format!("`{endpoint}` is not a URL: {error}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(OtlpError::Build(format!(
                "`{endpoint}` is not an http:// or https:// URL; OTLP/HTTP is what Plait speaks (port 4318 on most collectors)"
            )));
        }
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder
        .build()
        .map_err(|error| OtlpError::Build(error.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build())
}

/// Sends exporter requests on a tokio runtime.
#[derive(Debug, Clone)]
struct TokioClient {
    handle: tokio::runtime::Handle,
}

impl HttpClient for TokioClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        // The exporter thread waits on the join handle; the request itself
        // runs on the runtime, where sockets work.
        let task = self.handle.spawn(async move {
            tokio::time::timeout(EXPORT_TIMEOUT, send(request))
                .await
                .map_err(|_| -> HttpError { "the OTLP collector did not answer in time".into() })?
        });
        Box::pin(async move {
            task.await
                .map_err(|error| -> HttpError { Box::new(error) })?
        })
    }
}

/// Sends one request over a fresh HTTP/1.1 connection (TLS for `https`,
/// with the webpki roots) and reads the response, its body capped. The
/// exporter's client, and the webhook sender's.
pub async fn send(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    send_limited(request, MAX_RESPONSE).await
}

/// [`send`], reading up to `max_body` bytes of the response (a registry's
/// blob is larger than any collector's answer).
pub(crate) async fn send_limited(
    request: Request<Bytes>,
    max_body: usize,
) -> Result<Response<Bytes>, HttpError> {
    exchange_once(request, max_body)
        .await
        .map_err(|error| describe_error(error, max_body).into())
}

/// Why a request failed, in words: what people read in a webhook's attempt
/// history or a registry error, never hyper's or std's `Debug` text
/// (`hyper::Error(IncompleteMessage)`).
fn describe_error(error: HttpError, max_body: usize) -> String {
    // The innermost cause says the most (a body error wraps the I/O error
    // that ended it); the outermost is the fallback.
    let mut causes: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(current) = cause {
        causes.push(current);
        cause = current.source();
    }
    causes
        .iter()
        .rev()
        .find_map(|cause| describe_cause(*cause, max_body))
        .unwrap_or_else(|| error.to_string())
}

/// One cause in words, when it is one of the kinds people meet.
fn describe_cause(error: &(dyn std::error::Error + 'static), max_body: usize) -> Option<String> {
    use std::io::ErrorKind;
    const CLOSED: &str = "the server closed the connection before the response was complete";
    if let Some(error) = error.downcast_ref::<hyper::Error>() {
        return Some(if error.is_incomplete_message() {
            CLOSED.to_owned()
        } else if error.is_parse() || error.is_parse_status() {
            "the server's answer is not valid HTTP".to_owned()
        } else if error.is_timeout() {
            "the server did not answer in time".to_owned()
        } else if error.is_canceled() || error.is_closed() {
            "the connection closed before the exchange finished".to_owned()
        } else if std::error::Error::source(error).is_none() {
            format!("the HTTP exchange failed: {error}")
        } else {
            return None;
        });
    }
    if error
        .downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
    {
        return Some(format!(
            "the answer is larger than {}",
            crate::limits::format_size(max_body as u64)
        ));
    }
    let error = error.downcast_ref::<std::io::Error>()?;
    Some(match error.kind() {
        ErrorKind::ConnectionRefused => {
            "the connection was refused (nothing listens at that address?)".to_owned()
        }
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            "the server reset the connection".to_owned()
        }
        ErrorKind::TimedOut => "connecting timed out".to_owned(),
        ErrorKind::UnexpectedEof => CLOSED.to_owned(),
        _ if error.get_ref().is_some() => return None,
        _ => format!("the connection failed: {error}"),
    })
}

async fn exchange_once(
    request: Request<Bytes>,
    max_body: usize,
) -> Result<Response<Bytes>, HttpError> {
    let uri = request.uri().clone();
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let (parts, body) = request.into_parts();
    let mut request = Request::from_parts(parts, Full::new(body));
    // HTTP/1.1 over a fresh connection: origin-form target, Host header.
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    *request.uri_mut() = path.parse()?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or(host.clone());
    request
        .headers_mut()
        .insert(http::header::HOST, http::HeaderValue::from_str(&authority)?);
    let response = if https {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
        let tls = connector.connect(name, stream).await?;
        exchange(TokioIo::new(tls), request, max_body).await?
    } else {
        exchange(TokioIo::new(stream), request, max_body).await?
    };
    Ok(response)
}

async fn exchange<T>(
    io: T,
    request: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Response<Bytes>, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|error| -> HttpError { error })?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A loopback server answering one request with `answer`, then closing.
    async fn broken_server(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(answer).await;
        });
        format!("http://{address}/hook")
    }

    #[tokio::test]
    async fn a_connection_closed_mid_response_is_described_in_words() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"part"[..],
            &b"HTTP/1.1 200 OK\r\ncontent-le"[..],
        ] {
            let url = broken_server(answer).await;
            let request = Request::post(url).body(Bytes::from_static(b"{}")).unwrap();
            let error = send(request).await.unwrap_err().to_string();
            assert_eq!(
                error, "the server closed the connection before the response was complete",
                "{answer:?}"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let request = Request::post(format!("http://127.0.0.1:{port}/"))
            .body(Bytes::new())
            .unwrap();
        let error = send(request).await.unwrap_err().to_string();
        assert!(error.starts_with("the connection was refused"), "{error}");
    }
}
