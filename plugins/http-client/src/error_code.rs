//! `wasi:http` error codes in words: what an operator reads in a step
//! error, instead of the generated `Debug` form
//! (`ErrorCode::HttpProtocolError`).

use wasi::http::types::ErrorCode;

/// A transport failure: its `wasi:http` name (kebab-case, for the error's
/// details and for scripts) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The WIT name of the error code, such as `http-protocol-error`.
    pub code: &'static str,
    /// What happened, such as "the server closed the connection before the
    /// response was complete".
    pub message: String,
}

impl Failure {
    /// A failure that is not a `wasi:http` error code (a stream that
    /// closed, a body already taken).
    pub fn other(message: impl Into<String>) -> Failure {
        Failure {
            code: "internal-error",
            message: message.into(),
        }
    }

    /// Whether the host refused the request: fatal, since the grant will
    /// not change by itself.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self.code,
            "http-request-denied" | "destination-ip-prohibited"
        )
    }
}

/// `code` in words.
pub fn describe(code: &ErrorCode) -> Failure {
    let size = |what: &str, bytes: Option<u64>| match bytes {
        Some(bytes) => format!("{what} is too large ({bytes} bytes)"),
        None => format!("{what} is too large"),
    };
    let field = |what: &str, name: &Option<String>| match name {
        Some(name) => format!("the {what} `{name}` is too large"),
        None => format!("a {what} is too large"),
    };
    let (code, message) = match code {
        ErrorCode::DnsTimeout => ("dns-timeout", "the DNS lookup timed out".to_owned()),
        ErrorCode::DnsError(payload) => (
            "dns-error",
            match &payload.rcode {
                Some(rcode) => format!("the DNS lookup failed: {rcode}"),
                None => "the DNS lookup failed".to_owned(),
            },
        ),
        ErrorCode::DestinationNotFound => (
            "destination-not-found",
            "the host name does not resolve to any address".to_owned(),
        ),
        ErrorCode::DestinationUnavailable => (
            "destination-unavailable",
            "the server is unavailable".to_owned(),
        ),
        ErrorCode::DestinationIpProhibited => (
            "destination-ip-prohibited",
            "the address is not public, and the host policy does not allow private networks"
                .to_owned(),
        ),
        ErrorCode::DestinationIpUnroutable => (
            "destination-ip-unroutable",
            "the address cannot be reached from this host".to_owned(),
        ),
        ErrorCode::ConnectionRefused => (
            "connection-refused",
            "the server refused the connection (nothing listens on that port?)".to_owned(),
        ),
        ErrorCode::ConnectionTerminated => (
            "connection-terminated",
            "the connection was closed before the exchange finished".to_owned(),
        ),
        ErrorCode::ConnectionTimeout => (
            "connection-timeout",
            "connecting to the server timed out".to_owned(),
        ),
        ErrorCode::ConnectionReadTimeout => (
            "connection-read-timeout",
            "the server stopped sending before the response was complete".to_owned(),
        ),
        ErrorCode::ConnectionWriteTimeout => (
            "connection-write-timeout",
            "the server stopped reading the request".to_owned(),
        ),
        ErrorCode::ConnectionLimitReached => (
            "connection-limit-reached",
            "the host has too many connections open".to_owned(),
        ),
        ErrorCode::TlsProtocolError => (
            "tls-protocol-error",
            "the TLS handshake with the server failed".to_owned(),
        ),
        ErrorCode::TlsCertificateError => (
            "tls-certificate-error",
            "the server's TLS certificate is not valid for this host".to_owned(),
        ),
        ErrorCode::TlsAlertReceived(payload) => (
            "tls-alert-received",
            match &payload.alert_message {
                Some(alert) => format!("the server ended the TLS session: {alert}"),
                None => "the server ended the TLS session".to_owned(),
            },
        ),
        ErrorCode::HttpRequestDenied => (
            "http-request-denied",
            "the host did not allow the request".to_owned(),
        ),
        ErrorCode::HttpRequestLengthRequired => (
            "http-request-length-required",
            "the server requires a Content-Length".to_owned(),
        ),
        ErrorCode::HttpRequestBodySize(bytes) => {
            ("http-request-body-size", size("the request body", *bytes))
        }
        ErrorCode::HttpRequestMethodInvalid => (
            "http-request-method-invalid",
            "the request method is not valid".to_owned(),
        ),
        ErrorCode::HttpRequestUriInvalid => (
            "http-request-uri-invalid",
            "the URL is not valid".to_owned(),
        ),
        ErrorCode::HttpRequestUriTooLong => (
            "http-request-uri-too-long",
            "the URL is too long".to_owned(),
        ),
        ErrorCode::HttpRequestHeaderSectionSize(_) => (
            "http-request-header-section-size",
            "the request headers are too large".to_owned(),
        ),
        ErrorCode::HttpRequestHeaderSize(payload) => (
            "http-request-header-size",
            field(
                "request header",
                &payload.as_ref().and_then(|p| p.field_name.clone()),
            ),
        ),
        ErrorCode::HttpRequestTrailerSectionSize(_) => (
            "http-request-trailer-section-size",
            "the request trailers are too large".to_owned(),
        ),
        ErrorCode::HttpRequestTrailerSize(payload) => (
            "http-request-trailer-size",
            field("request trailer", &payload.field_name),
        ),
        ErrorCode::HttpResponseIncomplete => (
            "http-response-incomplete",
            "the server closed the connection before the response was complete".to_owned(),
        ),
        ErrorCode::HttpResponseHeaderSectionSize(_) => (
            "http-response-header-section-size",
            "the response headers are too large".to_owned(),
        ),
        ErrorCode::HttpResponseHeaderSize(payload) => (
            "http-response-header-size",
            field("response header", &payload.field_name),
        ),
        ErrorCode::HttpResponseBodySize(bytes) => {
            ("http-response-body-size", size("the response body", *bytes))
        }
        ErrorCode::HttpResponseTrailerSectionSize(_) => (
            "http-response-trailer-section-size",
            "the response trailers are too large".to_owned(),
        ),
        ErrorCode::HttpResponseTrailerSize(payload) => (
            "http-response-trailer-size",
            field("response trailer", &payload.field_name),
        ),
        ErrorCode::HttpResponseTransferCoding(coding) => (
            "http-response-transfer-coding",
            match coding {
                Some(coding) => {
                    format!("the response's transfer coding `{coding}` is not supported")
                }
                None => "the response's transfer coding is not supported".to_owned(),
            },
        ),
        ErrorCode::HttpResponseContentCoding(coding) => (
            "http-response-content-coding",
            match coding {
                Some(coding) => {
                    format!("the response's content coding `{coding}` is not supported")
                }
                None => "the response's content coding is not supported".to_owned(),
            },
        ),
        ErrorCode::HttpResponseTimeout => (
            "http-response-timeout",
            "the server did not answer in time".to_owned(),
        ),
        ErrorCode::HttpUpgradeFailed => (
            "http-upgrade-failed",
            "the connection upgrade failed".to_owned(),
        ),
        // What hyper reports for a connection closed mid-response
        // (`IncompleteMessage`) and for answers that are not HTTP.
        ErrorCode::HttpProtocolError => (
            "http-protocol-error",
            "the server closed the connection before the response was complete, \
             or did not answer in valid HTTP"
                .to_owned(),
        ),
        ErrorCode::LoopDetected => (
            "loop-detected",
            "the request was forwarded in a loop".to_owned(),
        ),
        ErrorCode::ConfigurationError => (
            "configuration-error",
            "the host's HTTP client is misconfigured".to_owned(),
        ),
        ErrorCode::InternalError(text) => (
            "internal-error",
            match text {
                Some(text) => format!("the host's HTTP client failed: {text}"),
                None => "the host's HTTP client failed".to_owned(),
            },
        ),
    };
    Failure { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_as_sentences_not_debug_text() {
        let failure = describe(&ErrorCode::HttpProtocolError);
        assert_eq!(failure.code, "http-protocol-error");
        assert!(failure.message.contains("closed the connection"));
        assert!(!failure.message.contains("ErrorCode"));
        assert!(describe(&ErrorCode::HttpRequestDenied).is_refusal());
        assert!(describe(&ErrorCode::DestinationIpProhibited).is_refusal());
        assert!(!describe(&ErrorCode::ConnectionRefused).is_refusal());
    }
}
