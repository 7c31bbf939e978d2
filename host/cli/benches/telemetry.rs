//! Criterion benchmark of what observability costs a step: one no-op step
//! (batched store) with no `tracing` subscriber, then with what the CLI
//! installs: JSON log lines with every span's fields, each run's lines
//! appended to its log file, and the OpenTelemetry layer giving every
//! span its ids (no exporter: export runs on its own thread, in batches).
//!
//! `cargo bench -p plait-cli --bench telemetry`; with
//! `PLAIT_BENCH_NO_RUN_LOGS=1`, without the per-run log files
//! (`[telemetry] run_logs = false`).
//!
//! A subscriber cannot be removed once installed, so the bare case runs
//! first and the instrumented one second, in one process.

mod support;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use plait::store::Durability;
use plait::telemetry::{LogFormat, LogSink, TelemetryConfig};

/// Formats every line, keeps none: the cost of the stream without the
/// terminal's.
struct Discard;

impl LogSink for Discard {
    fn write_line(&self, line: &str) {
        std::hint::black_box(line);
    }
}

fn telemetry(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = support::engine(None);
    let plan = runtime.block_on(support::noop_plan(&engine, dir.path(), 1));
    let executor = support::executor(&dir.path().join("store"), Durability::Batched);
    let run = || async {
        let report = executor
            .start(
                &plan,
                plait::executor::StartRequest::new(serde_json::json!({})),
            )
            .await
            .unwrap();
        assert_eq!(report.run.status, plait::store::RunStatus::Succeeded);
    };

    let mut group = c.benchmark_group("one no-op step, batched store");
    group.bench_function("no subscriber", |b| b.to_async(&runtime).iter(run));
    let _telemetry = plait::telemetry::init(TelemetryConfig {
        log_format: LogFormat::Json,
        filter: plait::telemetry::DEFAULT_FILTER.to_owned(),
        ansi: false,
        sink: Arc::new(Discard),
        run_logs: std::env::var_os("PLAIT_BENCH_NO_RUN_LOGS")
            .is_none()
            .then(|| dir.path().join("logs")),
        otlp: None,
    })
    .unwrap();
    group.bench_function("JSON logs, run log files, span ids", |b| {
        b.to_async(&runtime).iter(run)
    });
    group.finish();
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
