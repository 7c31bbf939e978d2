//! Runs a [`Plan`] against the journal: a scheduler over the steps' `needs`.
//!
//! One coordinator per run owns the run's records and is the only one to
//! write them; invocations run as tasks and report back. Steps whose needs
//! are done start at once, bounded by the run's `concurrency` and the
//! executor's global limit (and a fan-out's `max_concurrency`).
//!
//! The rules that make runs idempotent: a step's output is committed (and
//! flushed) as soon as it finishes, before any dependent starts, and a step
//! whose record says `succeeded` is never invoked again. Before each attempt
//! the step is marked `running` with its attempt count, so after a crash
//! `resume` knows the attempt was interrupted and invokes it again with the
//! next attempt number and the same idempotency key. Every pause is a
//! `waiting` record with the time it ends (`wake_at_ms`): a retry's backoff,
//! a `sleep`, a `wait` for a signal. A restart resumes the pause where it
//! was, not from the start, and a waiting run holds no worker.

mod advance;
mod attempt;
mod create;
mod events;
mod input;
mod resume;
mod scheduler;
mod signal;
mod transitions;

pub use create::{MAX_KEY_LEN, Queued, StartRequest, canonical};
pub use events::{AttemptStatus, PauseKind, RunEvent, RunEventKind, RunWatch};
use events::{EventBus, collect_inbox};
use scheduler::{Done, Scheduler, Unit};
pub use signal::{cancel_request, check_signal};
use transitions::{
    abandon, fatal, finished, progressed_since_takeover, record_interrupted, will_retry,
};

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::digest::{Digest, digest};
use crate::ids::RunId;
use crate::plan::Plan;
use crate::schema::Violations;
use crate::step::Blob;
use crate::store::{
    BlobRef, Lease, RunRecord, RunStore, Signal, StepRecord, StepStatus, StoreError,
};
use crate::telemetry::{Metrics, TraceContext};

pub use plait_policy::DEFAULT_HOST_CONCURRENCY;

/// How often a run waiting for a signal looks for one left by another
/// process (`plait signal` while this one holds the store).
const SIGNAL_POLL: Duration = Duration::from_millis(200);

/// How often a run that waits for nothing looks for a cancel request.
const CANCEL_POLL: Duration = Duration::from_millis(1000);

/// Errors that stop the executor itself (as opposed to a step failing,
/// which is a normal outcome recorded in the run).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's input lacks a blob the workflow reads.
    #[error(
        "the workflow reads input blob `{name}`, but none was attached; attach it with `--file {name}=PATH`"
    )]
    MissingInputBlob {
        /// The blob name.
        name: String,
    },
    /// Two input blobs with one name.
    #[error("input blob `{0}` was attached twice")]
    DuplicateInputBlob(String),
    /// The input breaks the workflow's `input.schema`; no run was created.
    #[error(
        "the workflow input does not match the workflow's `input.schema`: {0}; no run was created"
    )]
    InvalidInput(Violations),
    /// Resume was asked of a run whose workflow file changed since it
    /// started.
    #[error(
        "the workflow file `{}` changed since run `{run_id}` started ({then} then, {now} now); \
         a run only resumes on the definition it started with: restore that file",
        path.display()
    )]
    WorkflowChanged {
        /// The run.
        run_id: RunId,
        /// The workflow file.
        path: std::path::PathBuf,
        /// The digest the run started with.
        then: Digest,
        /// The file's digest now.
        now: Digest,
    },
    /// Resume was asked of a run whose unfinished step's component changed.
    #[error(
        "the component of step `{step}` (`{}`) changed since run `{run_id}` started ({then} then, {now} now); \
         restore the original component to resume",
        uses.display()
    )]
    ComponentChanged {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Its `uses:`.
        uses: std::path::PathBuf,
        /// The digest the run started with.
        then: String,
        /// The component's digest now.
        now: String,
    },
    /// A signal for a step the workflow does not have.
    #[error("workflow `{workflow}` has no step `{step}`; its wait steps: {waits}")]
    NoSuchStep {
        /// The workflow.
        workflow: String,
        /// The step asked for.
        step: String,
        /// Its `wait` steps, listed (`none` if it has none).
        waits: String,
    },
    /// A signal for a step that is not a `wait` step.
    #[error("step `{0}` is not a `type: wait` step; only wait steps take signals")]
    NotAWaitStep(String),
    /// A signal for a run that already ended.
    #[error(
        "run `{run_id}` is already {status}; a signal can only reach a run that is running or waiting"
    )]
    SignalToFinishedRun {
        /// The run.
        run_id: RunId,
        /// How it ended.
        status: &'static str,
    },
    /// A signal for a step that already finished.
    #[error(
        "step `{step}` of run `{run_id}` is already {status}; a signal can only reach a step that has not finished"
    )]
    SignalToFinishedStep {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Its status.
        status: &'static str,
    },
    /// A second signal for one step.
    #[error("step `{step}` of run `{run_id}` already has a signal; the first one counts")]
    AlreadySignalled {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
    },
    /// An idempotency key used before for a different request.
    #[error(
        "idempotency key `{key}` was used for run `{run_id}` with a different workflow, input or blobs; \
         a key names one request: use a new key for a new request"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The run it started.
        run_id: RunId,
    },
    /// An idempotency key that cannot be used.
    #[error("invalid idempotency key: {0}")]
    InvalidKey(String),
    /// A cancel of a run that already ended.
    #[error("run `{run_id}` is already {status}; only a running or waiting run can be cancelled")]
    CancelFinishedRun {
        /// The run.
        run_id: RunId,
        /// How it ended.
        status: &'static str,
    },
    /// A resume of a cancelled run.
    #[error(
        "run `{run_id}` was cancelled ({reason}); a cancelled run is not resumed: start a new run"
    )]
    ResumeCancelled {
        /// The run.
        run_id: RunId,
        /// Its cancel's message.
        reason: String,
    },
    /// The host is stopping ([`Executor::stop`]): the run's running
    /// attempts finished and were recorded; it continues when a host
    /// resumes it.
    #[error(
        "the host stopped; run `{0}` was left in the store and continues when a host resumes it"
    )]
    Stopped(RunId),
}

/// What [`Executor::cancel_with`] did.
#[derive(Debug)]
pub enum Cancelled {
    /// No process was executing the run: it is cancelled now.
    Now(Box<RunReport>),
    /// A process is executing the run: it stops the run when it next looks
    /// (within a second).
    Requested,
    /// A cancel was requested before; nothing more was done.
    AlreadyRequested,
}

/// A run's records after the executor is done with it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run.
    pub run: RunRecord,
    /// Its steps, in definition order.
    pub steps: Vec<StepRecord>,
}

/// Executes plans against a [`RunStore`].
#[derive(Clone)]
pub struct Executor {
    store: Arc<dyn RunStore>,
    slots: Arc<Semaphore>,
    /// This executor's id, the holder of the leases it takes.
    id: String,
    metrics: Arc<Metrics>,
    events: EventBus,
    /// See [`Executor::parking`].
    park: bool,
    /// See [`Executor::stop`].
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// See [`Executor::with_max_interruptions`].
    max_interruptions: u32,
}

pub use plait_policy::DEFAULT_MAX_INTERRUPTIONS;

/// Who asks for an action, and the trace it belongs to.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Who, for the audit log: `user:NAME` (the CLI), `token:NAME` (the
    /// HTTP API). `None`: `host`.
    pub actor: Option<String>,
    /// The caller's trace context (a W3C `traceparent`): the run's spans
    /// become its children.
    pub trace_parent: Option<TraceContext>,
}

impl Origin {
    fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| "host".to_owned())
    }
}

/// The span of one process's work on a run: the run's root span when it
/// starts it, a child of that root when it resumes it.
fn run_span(plan: &Plan, resumed: bool) -> tracing::Span {
    let name = if resumed { "resume" } else { "run" };
    tracing::info_span!(
        target: "plait::executor",
        "run",
        otel.name = %format!("{name} {}", plan.definition.name),
        otel.status_code = Empty,
        otel.status_description = Empty,
        run_id = Empty,
        workflow_id = %plan.definition.name,
        workflow_version = %plan.definition.version,
        resumed,
        trace_id = Empty,
        span_id = Empty,
    )
}

/// A parking executor keeps a run whose next wake is at most this far off.
const PARK_AFTER_MS: u64 = 2_000;

/// How long a run's lease lasts unless renewed.
const LEASE_TTL_MS: u64 = 30_000;

/// How often a held lease is renewed.
const LEASE_RENEW_MS: u64 = 10_000;

impl Executor {
    /// An executor writing to `store`, running at most
    /// [`DEFAULT_HOST_CONCURRENCY`] steps at once.
    pub fn new(store: Arc<dyn RunStore>) -> Executor {
        Executor::with_concurrency(store, DEFAULT_HOST_CONCURRENCY)
    }

    /// An executor running at most `concurrency` steps at once, over all
    /// its runs.
    pub fn with_concurrency(store: Arc<dyn RunStore>, concurrency: usize) -> Executor {
        Executor {
            store,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            id: format!("executor-{}", uuid::Uuid::now_v7()),
            metrics: Arc::new(Metrics::new()),
            events: EventBus::new(1024),
            park: false,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            max_interruptions: u32::MAX,
        }
    }

    /// A run during which the host died `limit` times in a row with one
    /// of its attempts in flight (counted in [`RunRecord::interruptions`];
    /// an attempt that finishes in between starts the count again) is not
    /// resumed again: the takeover that finds it so fails it, so that a
    /// run that kills its host cannot do so on every recovery. Recoveries
    /// set it (`[runtime] max_interruptions`, default
    /// [`DEFAULT_MAX_INTERRUPTIONS`]); unset, as for a command that names
    /// the run (`plait resume RUN`, a repeated keyed `plait run`), a run
    /// is resumed whatever the count. Resuming the failed run tries it
    /// again, with the count started over.
    pub fn with_max_interruptions(mut self, limit: u32) -> Executor {
        self.max_interruptions = limit.max(1);
        self
    }

    /// An executor that hands a run back as soon as it only waits (for a
    /// signal, or a sleep or backoff longer than a couple of seconds): the
    /// call returns a report with status `waiting`, and the run's records
    /// say what it waits for (`wake_at_ms`). A server uses this so that
    /// waiting runs hold no task; it executes the run again when the signal
    /// comes or the wake time nears.
    pub fn parking(mut self) -> Executor {
        self.park = true;
        self
    }

    /// Stops the executor gently: every run it executes starts no new
    /// attempt, lets the running ones finish and be recorded, then returns
    /// [`ExecutorError::Stopped`], leaving the run in the store for the next
    /// host. Runs started after this stop at once.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Executor::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Moves the signals and cancel requests other processes left in the
    /// store's inbox into the store, recording an event for each (which
    /// [`Executor::subscribe`] delivers), and returns them. A run this
    /// executor executes collects them itself; a host with runs parked
    /// calls this now and then.
    pub fn collect_inbox(&self) -> Result<Vec<Signal>, StoreError> {
        collect_inbox(self.store.as_ref(), &self.events)
    }

    /// Events of every run this executor executes, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    /// A watch on run `run_id`'s events, from now on: for a caller that
    /// waits for one run and looks at it again after each of its events,
    /// woken by that run's events only (see [`RunWatch`]).
    pub fn watch_run(&self, run_id: &str) -> RunWatch {
        self.events.watch(run_id)
    }

    /// Counts into `metrics` (one registry a `/metrics` endpoint serves).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Executor {
        self.metrics = metrics;
        self
    }

    /// What this executor counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The journal.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Coordinates `run` until it ends or only waits. `pending` is the
    /// ticket of the commit that just made the run runnable (its creation,
    /// or its claim by a resume), applied but not waited for: nothing
    /// outside this process has acted on it, and the run's first commit
    /// that changes a step (a `running` mark, before any invocation) waits
    /// for a sync that covers it, since the journal's log is ordered. So a
    /// 3-step run pays 4 syncs, not 5. Before the run waits on anything
    /// else first (a host slot, a timer) or evaluates an expression in a
    /// worker (up to its deadline), it waits for the ticket itself
    /// (`Scheduler::settle`): a run logged as started is not left in
    /// memory only while time passes. Whatever the run did, the ticket is
    /// durable before this returns, so no caller is answered on a commit a
    /// crash could take back (a crash before then loses a run nobody was
    /// told of, and a retry with its idempotency key starts it anew).
    async fn execute(
        &self,
        plan: &Plan,
        run: RunRecord,
        steps: Vec<StepRecord>,
        lease: Lease,
        span: tracing::Span,
        pending: Option<u64>,
    ) -> Result<RunReport, ExecutorError> {
        let mut scheduler = Scheduler::new(self, plan, run, steps, lease, span.clone());
        scheduler.creation = pending;
        self.metrics.run_active(true);
        let result = scheduler.run().instrument(span).await;
        self.metrics.run_active(false);
        self.metrics.queue(-scheduler.queued);
        // Whatever happened, no invocation outlives the scheduler, and the
        // run is free for the next executor.
        scheduler.tasks.abort_all();
        let _ = self
            .store
            .release_lease(&scheduler.run.id, &scheduler.lease);
        scheduler.settle().await?;
        result
    }
}

/// When the pauses of a run's waiting steps and items end (sleeps,
/// backoffs, wait timeouts), ms since the epoch.
pub fn wake_times(steps: &[StepRecord]) -> impl Iterator<Item = u64> + '_ {
    let steps_wake = steps
        .iter()
        .filter(|step| step.status == StepStatus::Waiting)
        .filter_map(|step| step.wake_at_ms);
    let items_wake = steps
        .iter()
        .flat_map(|step| step.items.iter())
        .filter(|item| item.status == StepStatus::Waiting)
        .filter_map(|item| item.wake_at_ms);
    steps_wake.chain(items_wake)
}

/// A value in a message, shortened.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// References to `blobs` plus their contents keyed by digest.
fn blob_refs(blobs: &[Blob]) -> (Vec<BlobRef>, Vec<(Digest, &[u8])>) {
    let mut refs = Vec::with_capacity(blobs.len());
    let mut contents = Vec::with_capacity(blobs.len());
    for blob in blobs {
        let digest = digest(&blob.data);
        refs.push(BlobRef {
            name: blob.name.clone(),
            media_type: blob.media_type.clone(),
            digest: digest.clone(),
            size: blob.data.len() as u64,
        });
        contents.push((digest, blob.data.as_slice()));
    }
    (refs, contents)
}
