//! Sending through `wasi:http/outgoing-handler` (inside a component only).

use plait_sdk::StepError;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasi::io::streams::StreamError;

use super::{Failure, MAX_RESPONSE_BYTES, Request, Response, describe, parse_url, transport_error};

/// Bytes written to the request body per call (the host's per-write cap is
/// larger; smaller writes keep memory flat for big bodies).
const WRITE_CHUNK: usize = 64 * 1024;

/// Sends `request` and reads the whole response.
///
/// # Errors
///
/// A fatal error for an invalid URL or header, or a request the host
/// refused; a retryable one for transport failures; a fatal one for a
/// response body over [`MAX_RESPONSE_BYTES`].
pub fn send(request: &Request) -> Result<Response, StepError> {
    let url = parse_url(&request.url)?;
    let fields = Fields::new();
    let mut headers = request.headers.clone();
    if let Some(body) = &request.body {
        // A declared length rather than chunked encoding: every server
        // understands it, and the host checks the body against it.
        headers.push(("content-length".to_owned(), body.len().to_string()));
    }
    for (name, value) in &headers {
        fields
            .append(&name.to_ascii_lowercase(), value.as_bytes())
            .map_err(|error| {
                let why = match error {
                    wasi::http::types::HeaderError::InvalidSyntax => "it is not a valid header",
                    wasi::http::types::HeaderError::Forbidden => "the host forbids it",
                    wasi::http::types::HeaderError::Immutable => "the headers cannot change",
                };
                StepError::fatal(format!("header `{name}` is not allowed: {why}"))
            })?;
    }
    let outgoing = OutgoingRequest::new(fields);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let refused = |what: &str| StepError::fatal(format!("the request's {what} was refused"));
    outgoing
        .set_method(&method)
        .map_err(|()| refused("method"))?;
    let scheme = if url.scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|()| refused("host"))?;
    outgoing
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| refused("path"))?;

    let body = outgoing.body().map_err(|()| refused("body"))?;
    let options = RequestOptions::new();
    let nanos = request.timeout.as_nanos().min(u64::MAX as u128) as u64;
    // Hosts may not support every timeout; an unsupported one is not an error.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let future = outgoing_handler::handle(outgoing, Some(options))
        .map_err(|code| transport_error(request, &describe(&code)))?;
    // When the host refuses the request or the connection fails, writing
    // the body fails too; the response future then holds the real reason.
    let written = (|| {
        let stream = body
            .write()
            .map_err(|()| Failure::other("the body stream was taken"))?;
        if let Some(data) = &request.body {
            for chunk in data.chunks(WRITE_CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(stream_error)?;
            }
        }
        drop(stream);
        OutgoingBody::finish(body, None).map_err(|code| describe(&code))
    })();

    future.subscribe().block();
    let answer = future.get();
    if let Err(body_error) = written {
        return Err(match answer {
            Some(Ok(Err(code))) => transport_error(request, &describe(&code)),
            _ => transport_error(request, &body_error),
        });
    }
    let response = match answer {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(transport_error(request, &describe(&code))),
        Some(Err(())) | None => {
            return Err(transport_error(
                request,
                &Failure::other("the response was not available"),
            ));
        }
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| {
        transport_error(
            request,
            &Failure::other("the response body was already taken"),
        )
    })?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| {
            transport_error(
                request,
                &Failure::other("the response body stream was taken"),
            )
        })?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_RESPONSE_BYTES {
                        return Err(StepError::fatal(format!(
                            "{} {} returned more than {} MiB",
                            request.method,
                            request.url,
                            MAX_RESPONSE_BYTES >> 20
                        )));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(error) => return Err(transport_error(request, &stream_error(error))),
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

fn stream_error(error: StreamError) -> Failure {
    match error {
        StreamError::Closed => Failure::other("the stream closed"),
        StreamError::LastOperationFailed(error) => {
            match wasi::http::types::http_error_code(&error) {
                Some(code) => describe(&code),
                // The host's text here is hyper's ("error reading a body
                // from connection"): said in words instead.
                None => Failure {
                    code: "connection-terminated",
                    message: "the server closed the connection before the response was \
                              complete, or sent a body that is not valid HTTP"
                        .to_owned(),
                },
            }
        }
    }
}
