//! Observability: the log stream, traces, metrics.
//!
//! - [`logs`]: every event as a text or JSON line carrying its run, step,
//!   attempt, trace and span ids; a copy of each run's events in its own
//!   file for `plait logs`.
//! - [`trace`]: W3C trace context. A run keeps its trace in its record, so
//!   the spans of every process that works on it (start, resume after a
//!   crash, signal) land in one trace; step attempts pass it on to the
//!   HTTP requests they make.
//! - [`otlp`]: span export to an OpenTelemetry collector over OTLP/HTTP,
//!   when an endpoint is configured; none when not.
//! - [`metrics`]: Prometheus series, served on `/metrics` or rebuilt from
//!   the store.
//! - [`escape`]: guest and user text made safe to print on a terminal.
//!
//! [`init`] installs all of it as the process's `tracing` subscriber; an
//! embedding application that has its own can add [`logs::LogLayer`] and
//! a `tracing-opentelemetry` layer to it instead.

pub mod escape;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod trace;

use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Metadata;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

pub use logs::{LogFormat, LogSink};
pub use metrics::Metrics;
pub use otlp::OtlpConfig;
pub use trace::{RunTrace, RunTraceExt, TraceContext, run_trace};

/// The log filter when none is given: warnings, plus what steps log and
/// what the executor does with runs. `wasmtime_wasi_http` warns with
/// hyper's `Debug` text (`hyper::Error(IncompleteMessage)`) for every
/// failed outbound request; the step's own error says it in words.
pub const DEFAULT_FILTER: &str =
    "warn,wasmtime_wasi_http=error,plait::step=info,plait::executor=info";

/// What [`init`] sets up.
pub struct TelemetryConfig {
    /// Text or JSON lines.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive (`warn,plait::step=info`).
    pub filter: String,
    /// Colour the text format's levels.
    pub ansi: bool,
    /// Where lines go.
    pub sink: Arc<dyn LogSink>,
    /// Where each run's own log file goes (`DIR/RUN_ID.jsonl`), if anywhere.
    pub run_logs: Option<PathBuf>,
    /// Where spans are exported, if anywhere.
    pub otlp: Option<OtlpConfig>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter `{filter}`: {source}; see `PLAIT_LOG` in docs/observability.md")]
    Filter {
        /// The directive.
        filter: String,
        /// Why.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Span export could not be set up.
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    /// A subscriber was installed already.
    #[error("a tracing subscriber is already installed in this process")]
    AlreadyInstalled,
}

/// The installed telemetry. Dropping it flushes the spans not yet
/// exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
    run_logs: Option<logs::RunLogFlush>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Sends every finished span now, and writes the run log files.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
        if let Some(run_logs) = &self.run_logs {
            run_logs.flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(run_logs) = &self.run_logs {
            run_logs.flush();
            let dropped = run_logs.dropped();
            if dropped > 0 {
                // The subscriber itself cannot say it; stderr can.
                eprintln!(
                    "warning: {dropped} log lines did not reach their run log files (the writer fell behind); the log stream had them"
                );
            }
        }
        if self.exporting {
            let _ = self.provider.force_flush();
        }
        let _ = self.provider.shutdown();
    }
}

/// Installs the log stream and the span pipeline as this process's
/// subscriber. With an OTLP config it needs a tokio runtime.
pub fn init(config: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&config.filter).map_err(|source| TelemetryError::Filter {
        filter: config.filter.clone(),
        source,
    })?;
    // Without an endpoint the provider has no exporter: spans still get
    // their ids (for the logs and for the trace context a run passes on),
    // and nothing leaves the process.
    let (provider, exporting) = match &config.otlp {
        Some(otlp) => (otlp::provider(otlp)?, true),
        None => (SdkTracerProvider::builder().build(), false),
    };
    let tracer = provider.tracer("plait");
    let mut log_layer = logs::LogLayer::new(config.log_format, config.ansi, config.sink);
    if let Some(dir) = config.run_logs {
        log_layer = log_layer.with_run_logs(dir);
    }
    let run_logs = log_layer.run_log_flush();
    let spans = tracing_subscriber::filter::Targets::new().with_target("plait", LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(log_layer.with_filter(PlaitSpans(filter)))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_filter(spans),
        )
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry {
        provider,
        exporting,
        run_logs,
    })
}

/// The log filter, except that Plait's own spans always pass: they carry
/// the run, step and trace ids every line inside them needs, whatever the
/// filter lets through.
struct PlaitSpans(EnvFilter);

fn plait_span(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.target().starts_with("plait")
}

impl<S> Filter<S> for PlaitSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, context: &Context<'_, S>) -> bool {
        plait_span(metadata) || Filter::<S>::enabled(&self.0, metadata, context)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if plait_span(metadata) {
            Interest::always()
        } else {
            Filter::<S>::callsite_enabled(&self.0, metadata)
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(
            Filter::<S>::max_level_hint(&self.0)
                .map_or(LevelFilter::TRACE, |hint| hint.max(LevelFilter::INFO)),
        )
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        context: Context<'_, S>,
    ) {
        Filter::<S>::on_new_span(&self.0, attrs, id, context);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        context: Context<'_, S>,
    ) {
        Filter::<S>::on_record(&self.0, id, values, context);
    }

    fn on_enter(&self, id: &tracing::span::Id, context: Context<'_, S>) {
        Filter::<S>::on_enter(&self.0, id, context);
    }

    fn on_exit(&self, id: &tracing::span::Id, context: Context<'_, S>) {
        Filter::<S>::on_exit(&self.0, id, context);
    }

    fn on_close(&self, id: tracing::span::Id, context: Context<'_, S>) {
        Filter::<S>::on_close(&self.0, id, context);
    }
}
