//! Metrics in the Prometheus (OpenMetrics) text format.
//!
//! An [`Executor`](crate::executor::Executor) counts what it does into one
//! [`Metrics`]: runs started and finished, step durations and outcomes by
//! component, retries, timeouts, limit hits, fuel, cache hits, the queue of
//! steps waiting for a worker, component instantiation time. A process
//! serves them on `/metrics` ([`serve`]); `plait metrics` rebuilds the
//! same series from what the store recorded ([`Metrics::from_store`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::step::{FailureKind, StepFailure};
use crate::store::{RunRecord, RunStatus, RunStore, StepRecord, StoreError};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    workflow: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    component: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    component: String,
    limit: String,
}

/// Step durations: 1 ms to about 9 minutes.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Instantiation: 50 µs to about 1.6 s.
fn instantiation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics of one process (or, from [`Metrics::from_store`], of one
/// store).
pub struct Metrics {
    registry: Registry,
    runs_started: Family<WorkflowLabels, Counter>,
    runs_finished: Family<RunLabels, Counter>,
    runs_active: Gauge,
    runs_stored: Family<RunLabels, Gauge>,
    step_duration: Histograms<StepLabels>,
    retries: Family<ComponentLabels, Counter>,
    timeouts: Family<ComponentLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    fuel: Family<ComponentLabels, Counter>,
    cache_hits: Family<ComponentLabels, Counter>,
    queue_depth: Gauge,
    instantiation: Histograms<ComponentLabels>,
    store_size: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Empty metrics, every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("plait");
        let metrics = Metrics {
            runs_started: Family::default(),
            runs_finished: Family::default(),
            runs_active: Gauge::default(),
            runs_stored: Family::default(),
            step_duration: Family::new_with_constructor(duration_histogram),
            retries: Family::default(),
            timeouts: Family::default(),
            limit_hits: Family::default(),
            fuel: Family::default(),
            cache_hits: Family::default(),
            queue_depth: Gauge::default(),
            instantiation: Family::new_with_constructor(instantiation_histogram),
            store_size: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "runs_started",
            "Runs started, by workflow",
            metrics.runs_started.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs that ended, by workflow and status (succeeded, failed)",
            metrics.runs_finished.clone(),
        );
        registry.register(
            "runs_active",
            "Runs this process is executing now",
            metrics.runs_active.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Duration of step attempts, by component and outcome (ok, error)",
            metrics.step_duration.clone(),
        );
        registry.register(
            "step_retries",
            "Step attempts scheduled again after a failure, by component",
            metrics.retries.clone(),
        );
        registry.register(
            "step_timeouts",
            "Step attempts stopped at their timeout, by component",
            metrics.timeouts.clone(),
        );
        registry.register(
            "limit_hits",
            "Step attempts stopped by a sandbox limit, by component and limit (fuel, memory, output, ...)",
            metrics.limit_hits.clone(),
        );
        registry.register(
            "fuel_consumed",
            "Fuel (wasm instructions, roughly) steps consumed, by component",
            metrics.fuel.clone(),
        );
        registry.register(
            "cache_hits",
            "Step outputs reused from the step cache, by component",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "queue_depth",
            "Steps ready to run that wait for a free worker",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "component_instantiation_seconds",
            "Time to instantiate a component for one attempt, by component",
            metrics.instantiation.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Size of the run store on disk",
            metrics.store_size.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A run started.
    pub fn run_started(&self, workflow: &str) {
        self.runs_started
            .get_or_create(&WorkflowLabels {
                workflow: workflow.to_owned(),
            })
            .inc();
    }

    /// This process began (`true`) or stopped (`false`) executing a run.
    pub fn run_active(&self, active: bool) {
        if active {
            self.runs_active.inc();
        } else {
            self.runs_active.dec();
        }
    }

    /// A run ended with `status`.
    pub fn run_finished(&self, workflow: &str, status: RunStatus) {
        self.runs_finished
            .get_or_create(&RunLabels {
                workflow: workflow.to_owned(),
                status: status.as_str().to_owned(),
            })
            .inc();
    }

    /// A step attempt ended after `seconds`; `error` is why it failed.
    pub fn attempt(&self, component: &str, seconds: f64, error: Option<&StepFailure>) {
        let component = component.to_owned();
        self.step_duration
            .get_or_create(&StepLabels {
                component: component.clone(),
                status: if error.is_some() { "error" } else { "ok" }.to_owned(),
            })
            .observe(seconds);
        match error.map(|failure| failure.kind) {
            Some(FailureKind::Timeout) => {
                self.timeouts
                    .get_or_create(&ComponentLabels {
                        component: component.clone(),
                    })
                    .inc();
            }
            Some(FailureKind::LimitExceeded) => {
                let limit = error
                    .and_then(|failure| failure.details.as_ref())
                    .and_then(|details| details.get("limit"))
                    .and_then(|limit| limit.as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                self.limit_hits
                    .get_or_create(&LimitLabels { component, limit })
                    .inc();
            }
            _ => {}
        }
    }

    /// A failed attempt will be tried again.
    pub fn retry(&self, component: &str) {
        self.retries
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .inc();
    }

    /// An attempt consumed `fuel`.
    pub fn fuel(&self, component: &str, fuel: u64) {
        self.fuel
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .inc_by(fuel);
    }

    /// A step's output came from the cache.
    pub fn cache_hit(&self, component: &str) {
        self.cache_hits
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .inc();
    }

    /// Instantiating `component` took `seconds`.
    pub fn instantiated(&self, component: &str, seconds: f64) {
        self.instantiation
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .observe(seconds);
    }

    /// Moves the queue depth by `delta` steps.
    pub fn queue(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    /// The text exposition, with the store's size as of now.
    pub fn render(&self, store: Option<&dyn RunStore>) -> String {
        if let Some(size) = store.and_then(|store| store.size_on_disk()) {
            self.store_size.set(size);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The series rebuilt from what `store` recorded: every run's start and
    /// end, every recorded attempt (the last 50 per step), retries,
    /// timeouts, limit hits, fuel, cache hits, and `plait_runs` by status.
    /// Instantiation time and queue depth belong to a live process and
    /// stay empty.
    pub fn from_store(store: &dyn RunStore) -> Result<Metrics, StoreError> {
        let mut metrics = Metrics::new();
        let runs_stored = metrics.runs_stored.clone();
        metrics.registry.register(
            "runs",
            "Runs in the store, by workflow and status",
            runs_stored,
        );
        for run in store.runs()? {
            metrics.replay(&run, &store.steps(&run.id)?);
        }
        Ok(metrics)
    }

    fn replay(&self, run: &RunRecord, steps: &[StepRecord]) {
        let workflow = &run.workflow.name;
        self.run_started(workflow);
        if run.status.is_finished() {
            self.run_finished(workflow, run.status);
        }
        self.runs_stored
            .get_or_create(&RunLabels {
                workflow: workflow.clone(),
                status: run.status.as_str().to_owned(),
            })
            .inc();
        for step in steps {
            let component = step.component.clone().unwrap_or_else(|| step.id.clone());
            for attempt in &step.history {
                let seconds =
                    attempt.finished_at_ms.saturating_sub(attempt.started_at_ms) as f64 / 1000.0;
                self.attempt(&component, seconds, attempt.error.as_ref());
            }
            let attempts = step.attempts.max(1) - 1
                + step
                    .items
                    .iter()
                    .map(|item| item.attempts.saturating_sub(1))
                    .sum::<u32>();
            for _ in 0..attempts {
                self.retry(&component);
            }
            if let Some(fuel) = step.fuel_consumed {
                self.fuel(&component, fuel);
            }
            let hits = u32::from(step.cache_hit.is_some())
                + step
                    .items
                    .iter()
                    .filter(|item| item.cache_hit.is_some())
                    .count() as u32;
            for _ in 0..hits {
                self.cache_hit(&component);
            }
        }
    }
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listener` until the
/// returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Option<Arc<dyn RunStore>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let metrics = metrics.clone();
                    let store = store.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(respond(
                            &request,
                            &metrics,
                            store.as_deref(),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Binds `address` and [`serve`]s on it; returns the bound address (for
/// port 0) and the server task.
pub async fn listen(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    store: Option<Arc<dyn RunStore>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    Ok((bound, serve(listener, metrics, store)))
}

fn respond(
    request: &http::Request<hyper::body::Incoming>,
    metrics: &Metrics,
    store: Option<&dyn RunStore>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let text = |status: u16, content_type: &str, body: String| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("a valid response")
    };
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/metrics") => {
            // Rendering reads the store's size: not on the async workers'
            // hot path, but cheap (a directory walk).
            text(200, CONTENT_TYPE, metrics.render(store))
        }
        ("GET", "/healthz") => text(200, "text/plain; charset=utf-8", "ok\n".to_owned()),
        (_, "/metrics" | "/healthz") => text(
            405,
            "text/plain; charset=utf-8",
            "only GET is served here\n".to_owned(),
        ),
        (_, path) => text(
            404,
            "text/plain; charset=utf-8",
            format!("no `{path}` here; metrics are at /metrics\n"),
        ),
    }
}
