//! Step failures reported to the host as values rather than traps.

use std::fmt;

use serde_json::Value;

/// Whether retrying a failed invocation can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A transient failure (a busy service, a timeout): the same input may
    /// succeed later, so the host may retry.
    Retryable,
    /// The input or configuration is wrong: retrying cannot help.
    Fatal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Retryable => "retryable",
            Self::Fatal => "fatal",
        })
    }
}

/// An expected failure of a step: a one-line message for the operator, a
/// [`ErrorKind`] telling the host whether to retry, and optional
/// machine-readable details.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    kind: ErrorKind,
    message: String,
    details: Option<Value>,
}

impl StepError {
    /// A failure that retrying cannot fix: bad input, bad configuration.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    /// A transient failure that the host may retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, message)
    }

    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: None,
        }
    }

    /// Attaches machine-readable details, replacing any set before. The host
    /// stores them beside the message as a JSON document.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Whether the host may retry the invocation.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `true` for [`ErrorKind::Retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }

    /// The message for the operator.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details attached with [`StepError::with_details`], if any.
    pub fn details(&self) -> Option<&Value> {
        self.details.as_ref()
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for StepError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constructors_set_the_kind() {
        assert!(StepError::retryable("busy").is_retryable());
        assert!(!StepError::fatal("bad").is_retryable());
        assert_eq!(StepError::fatal("bad").kind(), ErrorKind::Fatal);
    }

    #[test]
    fn details_are_kept() {
        let error = StepError::fatal("bad").with_details(json!({"attempt": 2}));
        assert_eq!(error.details(), Some(&json!({"attempt": 2})));
        assert_eq!(error.to_string(), "fatal error: bad");
    }
}
