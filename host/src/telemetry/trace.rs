//! W3C trace context: what a caller hands in (`traceparent`), what a run
//! keeps in its record so every process that works on it joins the same
//! trace, and what a step's outbound HTTP requests carry.
//!
//! The ids come from the OpenTelemetry layer when one is installed
//! ([`crate::telemetry::init`] always installs one, exporting or not), so
//! the ids in logs are the ids of the exported spans. Without it (a bare
//! embedding) they are generated here, so a run still has one trace id.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
pub use plait_types::trace::RunTrace;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// One span's place in a trace: the parts of a W3C `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The span, 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// Whether the caller sampled the trace.
    pub sampled: bool,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid traceparent `{value}`: {why}; the W3C format is `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`"
)]
pub struct TraceparentError {
    value: String,
    why: &'static str,
}

impl TraceContext {
    /// Parses a W3C `traceparent` header value (version `00`; later
    /// versions are read as `00`, as the spec asks).
    pub fn parse(value: &str) -> Result<TraceContext, TraceparentError> {
        let error = |why| TraceparentError {
            value: value.chars().take(80).collect(),
            why,
        };
        let parts: Vec<&str> = value.trim().split('-').collect();
        if parts.len() < 4 {
            return Err(error("it needs four dash-separated parts"));
        }
        let [version, trace, span, flags] = [parts[0], parts[1], parts[2], parts[3]];
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return Err(error(
                "the version is not two lowercase hex digits (or is ff)",
            ));
        }
        if version == "00" && parts.len() != 4 {
            return Err(error("version 00 has exactly four parts"));
        }
        let trace_id = hex_bytes::<16>(trace)
            .ok_or_else(|| error("the trace id is not 32 lowercase hex digits"))?;
        let span_id = hex_bytes::<8>(span)
            .ok_or_else(|| error("the parent id is not 16 lowercase hex digits"))?;
        let flags = hex_bytes::<1>(flags)
            .ok_or_else(|| error("the flags are not two lowercase hex digits"))?;
        if trace_id == [0; 16] {
            return Err(error("the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(error("the parent id is all zeros"));
        }
        Ok(TraceContext {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            u8::from(self.sampled)
        )
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// A new span in the same trace.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// A new trace.
    pub fn new_root() -> TraceContext {
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            fastrand::fill(&mut trace_id);
        }
        TraceContext {
            trace_id,
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// This context as an OpenTelemetry parent for a new span.
    pub fn to_otel(&self) -> opentelemetry::Context {
        let span = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            if self.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    /// The OpenTelemetry context of `span`, if an OpenTelemetry layer
    /// tracks it. Starts the span on the OpenTelemetry side: set its parent
    /// before.
    pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return None;
        }
        Some(TraceContext {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            sampled: span_context.is_sampled(),
        })
    }

    /// Makes `span` a child of `parent` (when an OpenTelemetry layer tracks
    /// it), records its `trace_id` and `span_id` fields, and returns its
    /// context: the OpenTelemetry one, or one made here in the same trace.
    pub fn enter_trace(span: &tracing::Span, parent: Option<&TraceContext>) -> TraceContext {
        if let Some(parent) = parent {
            // Fails only without an OpenTelemetry layer; the ids below are
            // then made here.
            let _ = span.set_parent(parent.to_otel());
        }
        let context = TraceContext::of_span(span).unwrap_or_else(|| match parent {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(),
        });
        span.record("trace_id", context.trace_id_hex());
        span.record("span_id", context.span_id_hex());
        context
    }
}

impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

impl std::str::FromStr for TraceContext {
    type Err = TraceparentError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        TraceContext::parse(value)
    }
}

/// A [`RunTrace`] as trace contexts.
pub trait RunTraceExt {
    /// The run's root span as a parent context.
    fn context(&self) -> Option<TraceContext>;
}

impl RunTraceExt for RunTrace {
    fn context(&self) -> Option<TraceContext> {
        Some(TraceContext {
            trace_id: hex_bytes::<16>(&self.trace_id)?,
            span_id: hex_bytes::<8>(&self.span_id)?,
            sampled: self.sampled,
        })
    }
}

/// The record of a run whose root span is `root`, started under `parent`.
pub fn run_trace(root: &TraceContext, parent: Option<&TraceContext>) -> RunTrace {
    RunTrace {
        trace_id: root.trace_id_hex(),
        span_id: root.span_id_hex(),
        parent_span_id: parent.map(TraceContext::span_id_hex),
        sampled: root.sampled,
    }
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        fastrand::fill(&mut id);
    }
    id
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_lower_hex(text) {
        return None;
    }
    let mut out = [0u8; N];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(value).unwrap();
        assert!(context.sampled);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.to_traceparent(), value);
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn bad_traceparents_are_refused_with_the_reason() {
        for (value, why) in [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "four",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all zeros",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "exactly four",
            ),
        ] {
            let error = TraceContext::parse(value).unwrap_err().to_string();
            assert!(error.contains(why), "{value}: {error}");
            assert!(error.contains("W3C format"), "{error}");
        }
    }

    #[test]
    fn a_future_version_is_read_as_version_00() {
        let context =
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .unwrap();
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_run_trace_gives_back_its_root() {
        let root = TraceContext::new_root();
        let trace = run_trace(&root, None);
        assert_eq!(trace.context(), Some(root));
    }
}
