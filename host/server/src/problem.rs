//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error the API returns is one [`Problem`]: a stable `type` a client
//! can branch on, a `title` per type, and a `detail` that says what was
//! wrong with this request and how to fix it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use plait::executor::ExecutorError;
use plait::store::StoreError;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// What kind of problem: `urn:plait:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, and how to fix it.
    pub detail: String,
    /// When to try again, in seconds (429 and 503 also send `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The run concerned, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Problem {
    /// A problem of kind `kind` (the last part of its `type`).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:plait:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            run_id: None,
        }
    }

    /// Asks the client to come back in `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// Names the run concerned.
    pub fn run(mut self, run_id: &str) -> Problem {
        self.run_id = Some(run_id.to_owned());
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is malformed",
            detail,
        )
    }

    /// 404: no such resource.
    pub fn not_found(what: &str, detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            &format!("{what}-not-found"),
            "Not found",
            detail,
        )
    }

    /// 409: the resource is in a state that does not allow this.
    pub fn conflict(kind: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, kind, "Conflict", detail)
    }

    /// 422: well-formed, but refused.
    pub fn unprocessable(kind: &str, detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            "Unprocessable request",
            detail,
        )
    }

    /// 500: the host failed; the detail goes to the log, the client gets
    /// a reference to it.
    pub fn internal(error: &dyn std::fmt::Display) -> Problem {
        let reference = uuid::Uuid::now_v7();
        tracing::error!(target: "plait::server", reference = %reference, error = %error, "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The host failed",
            format!(
                "the host failed to handle this request; its log names the error under reference {reference}"
            ),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        match error {
            StoreError::UnknownRun(run_id) => Problem::not_found(
                "run",
                format!("no run has id `{run_id}`; `GET /v1/runs` lists them"),
            ),
            StoreError::LeaseHeld { run_id, .. } => Problem::conflict(
                "run-busy",
                format!(
                    "run `{run_id}` is being executed by another host; try again when it is done"
                ),
            )
            .run(&run_id),
            other => Problem::internal(&other),
        }
    }
}

impl From<ExecutorError> for Problem {
    fn from(error: ExecutorError) -> Problem {
        match error {
            ExecutorError::Store(error) => error.into(),
            ExecutorError::KeyReused { key, run_id } => Problem::unprocessable(
                "idempotency-key-reused",
                format!("Idempotency-Key `{key}` was used for run `{run_id}` with a different request (workflow, input or blobs); a key names one request: use a new key for a new request"),
            )
            .run(&run_id),
            ExecutorError::InvalidKey(why) => {
                Problem::bad_request(format!("the Idempotency-Key header is not usable: {why}"))
            }
            ExecutorError::InvalidInput(violations) => Problem::unprocessable(
                "invalid-input",
                format!("the input does not match the workflow's `input.schema`: {violations}; no run was created"),
            ),
            ExecutorError::MissingInputBlob { name } => Problem::unprocessable(
                "missing-blob",
                format!("the workflow reads input blob `{name}`, but the request attached none; send it as a multipart part named `{name}`, or name a stored blob in `blobs`"),
            ),
            ExecutorError::DuplicateInputBlob(name) => Problem::unprocessable(
                "duplicate-blob",
                format!("input blob `{name}` was attached twice; attach each name once"),
            ),
            ExecutorError::NoSuchStep { .. }
            | ExecutorError::NotAWaitStep(_)
            | ExecutorError::SignalToFinishedRun { .. }
            | ExecutorError::SignalToFinishedStep { .. }
            | ExecutorError::AlreadySignalled { .. } => {
                Problem::conflict("signal-refused", error.to_string())
            }
            ExecutorError::CancelFinishedRun { .. } | ExecutorError::ResumeCancelled { .. } => {
                Problem::conflict("run-finished", error.to_string())
            }
            ExecutorError::WorkflowChanged { .. } | ExecutorError::ComponentChanged { .. } => {
                Problem::conflict("workflow-changed", error.to_string())
            }
            ExecutorError::Stopped(run_id) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "The host is stopping",
                format!("the host is stopping; run `{run_id}` is kept and continues when it is back"),
            )
            .retry_after(5)
            .run(&run_id),
        }
    }
}
