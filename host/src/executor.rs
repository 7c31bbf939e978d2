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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::clock::now_ms;
use crate::definition::{BlobMapping, BlobSource, OnError, StepKind};
use crate::digest::digest;
use crate::engine::Invoked;
use crate::plan::Plan;
use crate::schema::Violations;
use crate::step::{Blob, FailureKind, InvocationInfo, Payload, StepFailure};
use crate::store::{
    AttemptRecord, AuditRecord, BlobRef, CacheEntry, CacheHit, Commit, IdempotencyRecord,
    ItemRecord, Lease, LogsEntry, RunRecord, RunStatus, RunStore, Signal, StepRecord, StepStatus,
    StoreError, WorkflowRef,
};
use crate::telemetry::{Metrics, RunTrace, TraceContext};

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
    /// Resume was asked of a run whose workflow or components changed.
    #[error("{0}")]
    Changed(String),
    /// A signal that cannot be delivered.
    #[error("{0}")]
    Signal(String),
    /// An idempotency key used before for a different request.
    #[error(
        "idempotency key `{key}` was used for run `{run_id}` with a different workflow, input or blobs; \
         a key names one request: use a new key for a new request"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The run it started.
        run_id: String,
    },
    /// An idempotency key that cannot be used.
    #[error("invalid idempotency key: {0}")]
    InvalidKey(String),
    /// A cancel that cannot be done, or a resume of a cancelled run.
    #[error("{0}")]
    Cancel(String),
    /// The host is stopping ([`Executor::stop`]): the run's running
    /// attempts finished and were recorded; it continues when a host
    /// resumes it.
    #[error(
        "the host stopped; run `{0}` was left in the store and continues when a host resumes it"
    )]
    Stopped(String),
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

/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

fn check_key(key: &str) -> Result<(), ExecutorError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ExecutorError::InvalidKey(format!(
            "it must be 1 to {MAX_KEY_LEN} bytes long, not {}",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(ExecutorError::InvalidKey(
            "it must not hold control characters".to_owned(),
        ));
    }
    Ok(())
}

/// `value` with every object's keys sorted, so that equal documents hash
/// alike however their keys were ordered.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), canonical(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
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
    events: tokio::sync::broadcast::Sender<RunEvent>,
    /// See [`Executor::parking`].
    park: bool,
    /// See [`Executor::stop`].
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// See [`Executor::with_max_interruptions`].
    max_interruptions: u32,
}

pub use plait_policy::DEFAULT_MAX_INTERRUPTIONS;

/// Something that happened to a run, as it happened: what a progress bar
/// or an event stream follows. Every event is kept in the run's event log
/// ([`RunStore::events`]); live delivery to subscribers is best effort (a
/// slow subscriber misses events), so a stream that must not miss any reads
/// the log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunEvent {
    /// Its sequence number in the store's event log (0 if it could not be
    /// recorded).
    #[serde(skip)]
    pub seq: u64,
    /// The run.
    pub run_id: String,
    /// Its workflow.
    pub workflow: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Steps done (succeeded, skipped, recovered, or failed and gone past).
    pub steps_done: usize,
    /// Steps in the workflow.
    pub steps_total: usize,
    /// What happened.
    #[serde(flatten)]
    pub kind: RunEventKind,
}

/// What a [`RunEvent`] reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEventKind {
    /// The run was accepted and waits for the host to start it.
    RunQueued,
    /// This process began executing the run (a start or a resume).
    RunStarted,
    /// A signal reached a `wait` step.
    SignalReceived {
        /// The step.
        step: String,
    },
    /// Somebody asked to cancel the run.
    CancelRequested {
        /// Why, if they said.
        reason: Option<String>,
    },
    /// An attempt began.
    StepStarted {
        /// The step.
        step: String,
        /// The item of a fan-out.
        item: Option<u32>,
        /// The attempt number.
        attempt: u32,
    },
    /// An attempt ended: `succeeded`, `retrying` or `failed`.
    StepFinished {
        /// The step.
        step: String,
        /// The item of a fan-out.
        item: Option<u32>,
        /// The attempt number.
        attempt: u32,
        /// How it ended.
        status: String,
        /// How long it took.
        latency_ms: u64,
    },
    /// A step waits: `backoff` before its next attempt, `sleep`, or `wait`
    /// for a signal.
    Paused {
        /// The step.
        step: String,
        /// The item of a fan-out.
        item: Option<u32>,
        /// `backoff`, `sleep` or `wait`.
        kind: String,
    },
    /// More steps are done (`steps_done` says how many).
    Progress,
    /// The run ended.
    RunFinished {
        /// `succeeded` or `failed`.
        status: String,
        /// Why it failed.
        error: Option<String>,
    },
}

/// Records `event` in its run's event log, then tells subscribers. A log
/// that cannot be written is reported and the run goes on: the run's own
/// records, not its events, are what a resume builds on.
fn publish(
    store: &dyn RunStore,
    sender: &tokio::sync::broadcast::Sender<RunEvent>,
    mut event: RunEvent,
) {
    let value = serde_json::to_value(&event).unwrap_or(Value::Null);
    match store.append_event(&event.run_id, &value) {
        Ok(seq) => event.seq = seq,
        Err(error) => {
            tracing::warn!(target: "plait::executor", run_id = %event.run_id, error = %error, "could not record a run event")
        }
    }
    if sender.receiver_count() > 0 {
        let _ = sender.send(event);
    }
}

/// Moves what other processes left in the store's inbox into it (see
/// [`RunStore::collect_inbox`]), recording an event for each signal and
/// cancel request, so that whoever executes that run hears of it.
fn collect_inbox(
    store: &dyn RunStore,
    sender: &tokio::sync::broadcast::Sender<RunEvent>,
) -> Result<Vec<Signal>, StoreError> {
    let signals = store.collect_inbox()?;
    for signal in &signals {
        let Some(run) = store.run(&signal.run_id)? else {
            continue;
        };
        let steps = store.steps(&run.id)?;
        let kind = if signal.is_cancel() {
            RunEventKind::CancelRequested {
                reason: signal
                    .data
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }
        } else {
            RunEventKind::SignalReceived {
                step: signal.step_id.clone(),
            }
        };
        publish(
            store,
            sender,
            RunEvent {
                seq: 0,
                run_id: run.id.clone(),
                workflow: run.workflow.name.clone(),
                at_ms: now_ms(),
                steps_done: steps.iter().filter(|record| finished(record)).count(),
                steps_total: steps.len(),
                kind,
            },
        );
    }
    Ok(signals)
}

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
            events: tokio::sync::broadcast::channel(1024).0,
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

    /// Creates a run of `plan` with `input` and `blobs`, and runs it.
    pub async fn start(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
    ) -> Result<RunReport, ExecutorError> {
        self.start_keyed(plan, input, blobs, None).await
    }

    /// Like [`Executor::start`], with an idempotency key: the first start
    /// with `key` creates the run; a later start with the same key and the
    /// same request (workflow, input, blobs) returns that run, continuing
    /// it if it has not finished, without starting another; the same key
    /// with a different request is refused ([`ExecutorError::KeyReused`]).
    pub async fn start_keyed(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: Option<&str>,
    ) -> Result<RunReport, ExecutorError> {
        self.start_with(plan, input, blobs, key, &Origin::default())
            .await
    }

    /// [`Executor::start_keyed`] on behalf of `origin`: the audit log names
    /// its actor, and the run's trace continues its trace context.
    pub async fn start_with(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: Option<&str>,
        origin: &Origin,
    ) -> Result<RunReport, ExecutorError> {
        let (run, new, span) =
            self.create_traced(plan, input, blobs, key, origin, RunStatus::Running)?;
        if !new {
            tracing::info!(target: "plait::executor", parent: &span, key = key.unwrap_or(""), "idempotency key already used; the same run");
            drop(span);
            if run.status.is_finished() {
                let steps = self.store.steps(&run.id)?;
                return Ok(RunReport { run, steps });
            }
            return self.resume_with(plan, &run.id, origin).await;
        }
        let lease = self.store.acquire_lease(&run.id, &self.id, LEASE_TTL_MS)?;
        let steps = self.store.steps(&run.id)?;
        tracing::info!(target: "plait::executor", parent: &span, "run started");
        self.execute(plan, run, steps, lease, span).await
    }

    /// Checks the input and records a new run of `plan`, without running it.
    /// With an idempotency key already used for the same request, returns
    /// that run instead and `false`.
    pub fn create(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: Option<&str>,
    ) -> Result<(RunRecord, bool), ExecutorError> {
        self.create_with(
            plan,
            input,
            blobs,
            key,
            &Origin::default(),
            None,
            RunStatus::Running,
        )
    }

    /// Checks the input and records a new run of `plan` as `queued`, on
    /// behalf of `origin`, without running it: what a server does to answer
    /// a request at once and start the run when it has room. The run's
    /// trace is rooted here. [`Executor::resume_with`] executes it (after a
    /// restart too). With an idempotency key already used for the same
    /// request, returns that run and `false`.
    pub fn enqueue(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: Option<&str>,
        origin: &Origin,
    ) -> Result<(RunRecord, bool), ExecutorError> {
        let (run, new, span) =
            self.create_traced(plan, input, blobs, key, origin, RunStatus::Queued)?;
        if new {
            tracing::info!(target: "plait::executor", parent: &span, "run queued");
            self.note(&run, plan.steps.len(), RunEventKind::RunQueued);
        }
        Ok((run, new))
    }

    /// Records a new run (`status`) under its run span, whose trace
    /// continues `origin`'s; returns the run, whether it is new, and the
    /// span.
    fn create_traced(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: Option<&str>,
        origin: &Origin,
        status: RunStatus,
    ) -> Result<(RunRecord, bool, tracing::Span), ExecutorError> {
        let span = run_span(plan, false);
        let root = TraceContext::enter_trace(&span, origin.trace_parent.as_ref());
        let trace = crate::telemetry::run_trace(&root, origin.trace_parent.as_ref());
        let (run, new) = self.create_with(plan, input, blobs, key, origin, Some(trace), status)?;
        span.record("run_id", run.id.as_str());
        Ok((run, new, span))
    }

    /// Records an event of a run this executor is not executing.
    fn note(&self, run: &RunRecord, steps_total: usize, kind: RunEventKind) {
        let steps_done = match self.store.steps(&run.id) {
            Ok(steps) => steps.iter().filter(|record| finished(record)).count(),
            Err(_) => 0,
        };
        publish(
            self.store.as_ref(),
            &self.events,
            RunEvent {
                seq: 0,
                run_id: run.id.clone(),
                workflow: run.workflow.name.clone(),
                at_ms: now_ms(),
                steps_done,
                steps_total,
                kind,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn create_with(
        &self,
        plan: &Plan,
        input: Value,
        blobs: Vec<Blob>,
        key: Option<&str>,
        origin: &Origin,
        trace: Option<RunTrace>,
        status: RunStatus,
    ) -> Result<(RunRecord, bool), ExecutorError> {
        for (index, blob) in blobs.iter().enumerate() {
            if blobs[..index].iter().any(|other| other.name == blob.name) {
                return Err(ExecutorError::DuplicateInputBlob(blob.name.clone()));
            }
        }
        for name in plan.definition.input_blob_names() {
            if !blobs.iter().any(|blob| blob.name == name) {
                return Err(ExecutorError::MissingInputBlob { name });
            }
        }
        if let Some(schema) = &plan.input_schema {
            schema.check(&input).map_err(ExecutorError::InvalidInput)?;
        }
        let (input_blobs, contents) = blob_refs(&blobs);
        let request = key.map(|key| -> Result<(String, String), ExecutorError> {
            check_key(key)?;
            let mut named: Vec<(&str, &str)> = input_blobs
                .iter()
                .map(|blob| (blob.name.as_str(), blob.digest.as_str()))
                .collect();
            named.sort();
            let request =
                json!({"workflow": plan.digest, "input": canonical(&input), "blobs": named});
            Ok((key.to_owned(), digest(request.to_string().as_bytes())))
        });
        let request = request.transpose()?;
        if let Some((key, digest)) = &request
            && let Some(existing) = self.existing(key, digest)?
        {
            return Ok((existing, false));
        }
        // Pin what the run executes: the definition's text and every
        // component's bytes go into the content-addressed blob store, so a
        // resume runs them whatever happens to the files.
        let mut pinned: Vec<(String, Vec<u8>)> = Vec::new();
        if !self.store.has_blob(&plan.digest)? {
            pinned.push((
                plan.digest.clone(),
                plan.definition.source.text.as_bytes().to_vec(),
            ));
        }
        for step in &plan.steps {
            let Some(component) = &step.component else {
                continue;
            };
            if pinned.iter().any(|(digest, _)| *digest == component.digest)
                || self.store.has_blob(&component.digest)?
            {
                continue;
            }
            let bytes = crate::files::read(&component.path, crate::files::Kind::Component)
                .unwrap_or_default();
            if digest(&bytes) != component.digest {
                return Err(ExecutorError::Changed(format!(
                    "component `{}` of step `{}` changed on disk after the workflow was loaded; start the run again",
                    component.path.display(),
                    step.definition.id
                )));
            }
            pinned.push((component.digest.clone(), bytes));
        }
        let now = now_ms();
        let run_id = uuid::Uuid::now_v7().to_string();
        let run = RunRecord {
            id: run_id.clone(),
            workflow: WorkflowRef {
                name: plan.definition.name.clone(),
                version: plan.definition.version.clone(),
                // Absolute, so that `resume` finds it from any directory.
                path: std::path::absolute(&plan.definition.source.path)
                    .unwrap_or_else(|_| plan.definition.source.path.clone()),
                digest: plan.digest.clone(),
            },
            status,
            created_at_ms: now,
            updated_at_ms: now,
            input,
            input_blobs,
            output: None,
            output_blobs: Vec::new(),
            error: None,
            idempotency_key: key.map(str::to_owned),
            trace,
            started_by: Some(origin.actor()),
            interruptions: 0,
            deadline_ms: plan
                .definition
                .timeout
                .map(|timeout| now + timeout.as_millis() as u64),
        };
        let steps: Vec<StepRecord> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| StepRecord {
                run_id: run_id.clone(),
                index: index as u32,
                id: step.definition.id.to_string(),
                status: StepStatus::Pending,
                attempts: 0,
                component_digest: step.component_digest().to_owned(),
                component: step
                    .component
                    .as_ref()
                    .map(|component| component.description.name.clone()),
                started_at_ms: None,
                finished_at_ms: None,
                duration_ms: None,
                output: None,
                output_blobs: Vec::new(),
                error: None,
                fuel_consumed: None,
                wake_at_ms: None,
                items: Vec::new(),
                history: Vec::new(),
                cache_hit: None,
            })
            .collect();
        let claim = request.as_ref().map(|(key, request_digest)| {
            (
                key.as_str(),
                IdempotencyRecord {
                    run_id: run_id.clone(),
                    request_digest: request_digest.clone(),
                    created_at_ms: now,
                },
            )
        });
        let audit = AuditRecord {
            at_ms: now,
            actor: origin.actor(),
            action: "run.start".to_owned(),
            run_id: Some(run_id.clone()),
            workflow: Some(plan.definition.name.clone()),
            detail: match key {
                Some(key) => json!({"idempotency_key": key}),
                None => Value::Null,
            },
        };
        let committed = self.store.commit(Commit {
            audit: Some(&audit),
            run: Some(&run),
            steps: steps.iter().collect(),
            blobs: contents
                .iter()
                .map(|(digest, data)| (digest.as_str(), *data))
                .chain(
                    pinned
                        .iter()
                        .map(|(digest, bytes)| (digest.as_str(), bytes.as_slice())),
                )
                .collect(),
            idempotency: claim.as_ref().map(|(key, record)| (*key, record)),
            ..Commit::default()
        });
        match committed {
            Ok(()) => {
                self.metrics.run_started(&run.workflow.name);
                Ok((run, true))
            }
            // Another start with the key won the race: its run is the one.
            Err(StoreError::KeyTaken(key)) => {
                let digest = &request.as_ref().expect("a key was claimed").1;
                match self.existing(&key, digest)? {
                    Some(existing) => Ok((existing, false)),
                    None => Err(StoreError::KeyTaken(key).into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The run an idempotency key started, if the key was used for the same
    /// request; an error if for another.
    fn existing(
        &self,
        key: &str,
        request_digest: &str,
    ) -> Result<Option<RunRecord>, ExecutorError> {
        let Some(record) = self.store.idempotency(key)? else {
            return Ok(None);
        };
        if record.request_digest != request_digest {
            return Err(ExecutorError::KeyReused {
                key: key.to_owned(),
                run_id: record.run_id,
            });
        }
        let run = self
            .store
            .run(&record.run_id)?
            .ok_or_else(|| StoreError::UnknownRun(record.run_id.clone()))?;
        Ok(Some(run))
    }

    /// Continues run `run_id`: interrupted attempts run again, pauses go on
    /// where they were, and failed steps are tried again. A run that already
    /// succeeded is returned as it is, without executing anything.
    pub async fn resume(&self, plan: &Plan, run_id: &str) -> Result<RunReport, ExecutorError> {
        self.resume_with(plan, run_id, &Origin::default()).await
    }

    /// [`Executor::resume`] on behalf of `origin` (for the audit log).
    pub async fn resume_with(
        &self,
        plan: &Plan,
        run_id: &str,
        origin: &Origin,
    ) -> Result<RunReport, ExecutorError> {
        let run = self
            .store
            .run(run_id)?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
        let mut steps = self.store.steps(run_id)?;
        if run.status == RunStatus::Succeeded {
            return Ok(RunReport { run, steps });
        }
        if run.status == RunStatus::Cancelled {
            return Err(ExecutorError::Cancel(format!(
                "run `{run_id}` was cancelled ({}); a cancelled run is not resumed: start a new run",
                run.error.as_deref().unwrap_or("no reason given")
            )));
        }
        if run.workflow.digest != plan.digest {
            return Err(ExecutorError::Changed(format!(
                "the workflow file `{}` changed since run `{run_id}` started ({} then, {} now); \
                 a run only resumes on the definition it started with: restore that file",
                run.workflow.path.display(),
                run.workflow.digest,
                plan.digest
            )));
        }
        for (record, planned) in steps.iter().zip(&plan.steps) {
            if !finished(record) && record.component_digest != planned.component_digest() {
                return Err(ExecutorError::Changed(format!(
                    "the component of step `{}` (`{}`) changed since run `{run_id}` started ({} then, {} now); \
                     restore the original component to resume",
                    record.id,
                    planned.definition.uses.display(),
                    record.component_digest,
                    planned.component_digest()
                )));
            }
        }
        // From here on this executor alone writes the run.
        let lease = self.store.acquire_lease(run_id, &self.id, LEASE_TTL_MS)?;
        let mut run = run;
        let failed_before = run.status == RunStatus::Failed;
        if failed_before {
            // Tried again on request: the host gets its chances again.
            run.interruptions = 0;
        }
        // A queued run starts here for the first time: not a resume.
        let queued = run.status == RunStatus::Queued;
        // A failed run is tried again: its final failures go back to
        // pending (attempt counts kept). A failure the run went on from
        // (`continue`, or a fallback that ran) stays.
        let mut changed = Vec::new();
        for index in 0..steps.len() {
            let definition = &plan.steps[index].definition;
            let record = &steps[index];
            let fallback_pending = match &definition.on_error {
                OnError::Fallback(fallback) => plan
                    .definition
                    .steps
                    .iter()
                    .position(|step| &step.id == fallback)
                    .is_some_and(|f| steps[f].status != StepStatus::Failed),
                _ => false,
            };
            let reset =
                record.status == StepStatus::Failed && record.output.is_none() && !fallback_pending;
            let record = &mut steps[index];
            if reset {
                record.status = StepStatus::Pending;
                changed.push(index);
            }
            let mut items_reset = false;
            if record.output.is_none() {
                for item in &mut record.items {
                    if item.status == StepStatus::Failed {
                        item.status = StepStatus::Pending;
                        items_reset = true;
                    }
                }
            }
            if items_reset && !changed.contains(&index) {
                changed.push(index);
            }
        }
        // The host that ran it died mid-run: its lease lapsed unreleased
        // while the run was `running`.
        if run.status == RunStatus::Running
            && let Some(abandoned) = &lease.abandoned
        {
            // Counted in a row: an attempt that finished since the last
            // takeover shows the run is not what stops its host.
            if progressed_since_takeover(&steps) {
                run.interruptions = 0;
            }
            let attempts = record_interrupted(&mut steps, &mut changed);
            // Only a host that died executing the run counts against it.
            if attempts > 0 {
                run.interruptions = run.interruptions.saturating_add(1);
            }
            tracing::debug!(
                target: "plait::executor",
                run_id,
                holder = %abandoned.holder,
                last_heard_ms = abandoned.heard_at_ms,
                attempts,
                interruptions = run.interruptions,
                "the host running this run stopped; taking it over"
            );
            if attempts > 0 && run.interruptions >= self.max_interruptions {
                return self.refuse_poisoned(run, steps, changed, lease, origin);
            }
        }
        run.status = RunStatus::Running;
        run.error = None;
        if failed_before {
            // A new try gets the whole run timeout again; an interrupted
            // run keeps its deadline.
            run.deadline_ms = plan
                .definition
                .timeout
                .map(|timeout| now_ms() + timeout.as_millis() as u64);
        }
        // The resume's spans join the run's trace, under its root span.
        let span = run_span(plan, !queued);
        span.record("run_id", run.id.as_str());
        let parent = run
            .trace
            .as_ref()
            .and_then(crate::telemetry::RunTraceExt::context);
        let context = TraceContext::enter_trace(&span, parent.as_ref());
        if run.trace.is_none() {
            run.trace = Some(crate::telemetry::run_trace(&context, None));
        }
        let audit = AuditRecord {
            at_ms: now_ms(),
            actor: origin.actor(),
            action: "run.resume".to_owned(),
            run_id: Some(run.id.clone()),
            workflow: Some(run.workflow.name.clone()),
            detail: json!({"was": if failed_before { "failed" } else { "interrupted" }}),
        };
        self.store.commit(Commit {
            run: Some(&run),
            steps: changed.iter().map(|&index| &steps[index]).collect(),
            fence: Some((run_id, &lease.holder, lease.token)),
            // Taking a queued run, or going on with one the host itself
            // set aside (no actor), is the host's doing, not an action.
            audit: (!queued && origin.actor.is_some()).then_some(&audit),
            ..Commit::default()
        })?;
        if queued {
            tracing::info!(target: "plait::executor", parent: &span, "run started");
        } else {
            tracing::info!(target: "plait::executor", parent: &span, "run resumed");
        }
        self.execute(plan, run, steps, lease, span).await
    }

    /// Fails run `run`, whose host died [`RunRecord::interruptions`]
    /// times while running it, instead of resuming it again (see
    /// [`Executor::with_max_interruptions`]).
    fn refuse_poisoned(
        &self,
        mut run: RunRecord,
        mut steps: Vec<StepRecord>,
        mut changed: Vec<usize>,
        lease: Lease,
        origin: &Origin,
    ) -> Result<RunReport, ExecutorError> {
        let message = format!(
            "the host stopped {} times while running this run; it was not resumed again; \
             inspect it with `plait runs show {}`, then `plait resume {}` to try again",
            run.interruptions, run.id, run.id
        );
        for index in abandon(&mut steps, &message) {
            if !changed.contains(&index) {
                changed.push(index);
            }
        }
        run.status = RunStatus::Failed;
        run.error = Some(message.clone());
        run.updated_at_ms = now_ms();
        let audit = AuditRecord {
            at_ms: now_ms(),
            actor: origin.actor(),
            action: "run.refuse".to_owned(),
            run_id: Some(run.id.clone()),
            workflow: Some(run.workflow.name.clone()),
            detail: json!({"interruptions": run.interruptions}),
        };
        let committed = self.store.commit(Commit {
            run: Some(&run),
            steps: changed.iter().map(|&index| &steps[index]).collect(),
            fence: Some((&run.id, &lease.holder, lease.token)),
            audit: Some(&audit),
            ..Commit::default()
        });
        let _ = self.store.release_lease(&run.id, &lease);
        committed?;
        self.metrics
            .run_finished(&run.workflow.name, RunStatus::Failed);
        tracing::error!(target: "plait::executor", run_id = %run.id, run_status = "failed", interruptions = run.interruptions, error = %message, "run failed");
        Ok(RunReport { run, steps })
    }

    /// Delivers `data` to `wait` step `step_id` of run `run_id`. The run
    /// continues when it is next executed (or at once, if a process is
    /// executing it).
    pub fn signal(
        &self,
        plan: &Plan,
        run_id: &str,
        step_id: &str,
        data: Value,
    ) -> Result<(), ExecutorError> {
        self.signal_with(plan, run_id, step_id, data, &Origin::default())
    }

    /// [`Executor::signal`] on behalf of `origin` (for the audit log).
    pub fn signal_with(
        &self,
        plan: &Plan,
        run_id: &str,
        step_id: &str,
        data: Value,
        origin: &Origin,
    ) -> Result<(), ExecutorError> {
        let run = self
            .store
            .run(run_id)?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
        check_signal(plan, &run, step_id)?;
        let steps = self.store.steps(run_id)?;
        if let Some(record) = steps.iter().find(|record| record.id == step_id)
            && finished(record)
        {
            return Err(ExecutorError::Signal(format!(
                "step `{step_id}` of run `{run_id}` is already {}; a signal can only reach a step that has not finished",
                record.status.as_str()
            )));
        }
        if self.store.signal(run_id, step_id)?.is_some() {
            return Err(ExecutorError::Signal(format!(
                "step `{step_id}` of run `{run_id}` already has a signal; the first one counts"
            )));
        }
        let signal = Signal {
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
            data,
            sent_at_ms: now_ms(),
            sent_by: Some(origin.actor()),
        };
        self.store.commit(Commit {
            signal: Some(&signal),
            audit: Some(&signal.audit()),
            ..Commit::default()
        })?;
        self.note(
            &run,
            plan.steps.len(),
            RunEventKind::SignalReceived {
                step: step_id.to_owned(),
            },
        );
        Ok(())
    }

    /// Cancels run `run_id` on behalf of `origin`: records the request
    /// (and who made it) and, if no process is executing the run, stops it
    /// now; otherwise the process executing it stops it (its running
    /// attempts are abandoned, its pauses end) and records it `cancelled`.
    /// A cancelled run is final.
    pub fn cancel_with(
        &self,
        run_id: &str,
        reason: Option<&str>,
        origin: &Origin,
    ) -> Result<Cancelled, ExecutorError> {
        let run = self
            .store
            .run(run_id)?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
        if run.status.is_finished() {
            return Err(ExecutorError::Cancel(format!(
                "run `{run_id}` is already {}; only a running or waiting run can be cancelled",
                run.status.as_str()
            )));
        }
        if self.store.signal(run_id, Signal::CANCEL)?.is_some() {
            return Ok(Cancelled::AlreadyRequested);
        }
        let request = cancel_request(run_id, reason, origin);
        self.store.commit(Commit {
            signal: Some(&request),
            audit: Some(&request.audit()),
            ..Commit::default()
        })?;
        let steps_total = self.store.steps(run_id)?.len();
        self.note(
            &run,
            steps_total,
            RunEventKind::CancelRequested {
                reason: reason.map(str::to_owned),
            },
        );
        let lease = match self.store.acquire_lease(run_id, &self.id, LEASE_TTL_MS) {
            Ok(lease) => lease,
            Err(StoreError::LeaseHeld { .. }) => return Ok(Cancelled::Requested),
            Err(error) => return Err(error.into()),
        };
        let mut run = run;
        let mut steps = self.store.steps(run_id)?;
        let message = cancel_message(&request);
        let changed = abandon(&mut steps, &message);
        run.status = RunStatus::Cancelled;
        run.error = Some(message);
        run.updated_at_ms = now_ms();
        let committed = self.store.commit(Commit {
            run: Some(&run),
            steps: changed.iter().map(|&index| &steps[index]).collect(),
            fence: Some((run_id, &lease.holder, lease.token)),
            ..Commit::default()
        });
        let _ = self.store.release_lease(run_id, &lease);
        committed?;
        self.metrics
            .run_finished(&run.workflow.name, RunStatus::Cancelled);
        self.note(
            &run,
            steps.len(),
            RunEventKind::RunFinished {
                status: RunStatus::Cancelled.as_str().to_owned(),
                error: run.error.clone(),
            },
        );
        tracing::info!(target: "plait::executor", run_id = %run.id, run_status = "cancelled", error = run.error.as_deref().unwrap_or(""), "run cancelled");
        Ok(Cancelled::Now(Box::new(RunReport { run, steps })))
    }

    async fn execute(
        &self,
        plan: &Plan,
        run: RunRecord,
        steps: Vec<StepRecord>,
        lease: Lease,
        span: tracing::Span,
    ) -> Result<RunReport, ExecutorError> {
        let mut scheduler = Scheduler::new(self, plan, run, steps, lease, span.clone());
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
        result
    }
}

/// Checks that `step_id` is a `wait` step of `plan` and `run` is a run of
/// it that has not finished.
pub fn check_signal(plan: &Plan, run: &RunRecord, step_id: &str) -> Result<(), ExecutorError> {
    let Some(step) = plan.definition.step(step_id) else {
        let waits: Vec<&str> = plan
            .definition
            .steps
            .iter()
            .filter(|step| matches!(step.kind, StepKind::Wait { .. }))
            .map(|step| step.id.as_str())
            .collect();
        return Err(ExecutorError::Signal(format!(
            "workflow `{}` has no step `{step_id}`; its wait steps: {}",
            plan.definition.name,
            if waits.is_empty() {
                "none".to_owned()
            } else {
                waits.join(", ")
            }
        )));
    };
    if !matches!(step.kind, StepKind::Wait { .. }) {
        return Err(ExecutorError::Signal(format!(
            "step `{step_id}` is not a `type: wait` step; only wait steps take signals"
        )));
    }
    if run.status.is_finished() {
        return Err(ExecutorError::Signal(format!(
            "run `{}` is already {}; a signal can only reach a run that is running or waiting",
            run.id,
            run.status.as_str()
        )));
    }
    Ok(())
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

/// Whether a step is done for good: succeeded, skipped, recovered, or
/// failed with an output the run went on from.
fn finished(record: &StepRecord) -> bool {
    match record.status {
        StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Recovered => true,
        StepStatus::Failed => record.output.is_some(),
        StepStatus::Pending | StepStatus::Running | StepStatus::Waiting => false,
    }
}

/// The request that cancels run `run_id`, kept with its signals.
pub fn cancel_request(run_id: &str, reason: Option<&str>, origin: &Origin) -> Signal {
    Signal {
        run_id: run_id.to_owned(),
        step_id: Signal::CANCEL.to_owned(),
        data: match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        },
        sent_at_ms: now_ms(),
        sent_by: Some(origin.actor()),
    }
}

/// The run's error once `request` cancelled it.
fn cancel_message(request: &Signal) -> String {
    let by = request.sent_by.as_deref().unwrap_or("unknown");
    match request.data.get("reason").and_then(Value::as_str) {
        Some(reason) => format!("cancelled by {by}: {reason}"),
        None => format!("cancelled by {by}"),
    }
}

/// Marks every unfinished attempt, pause and item of `steps` failed with
/// `message`; returns the indexes of the records changed.
fn abandon(steps: &mut [StepRecord], message: &str) -> Vec<usize> {
    let failure = StepFailure {
        kind: FailureKind::Fatal,
        message: message.to_owned(),
        details: None,
    };
    let mut changed = Vec::new();
    for (index, record) in steps.iter_mut().enumerate() {
        let mut touched = false;
        if matches!(record.status, StepStatus::Running | StepStatus::Waiting) {
            record.status = StepStatus::Failed;
            record.error = Some(failure.clone());
            record.finished_at_ms = Some(now_ms());
            record.wake_at_ms = None;
            touched = true;
        }
        for item in &mut record.items {
            if matches!(
                item.status,
                StepStatus::Running | StepStatus::Waiting | StepStatus::Pending
            ) {
                item.status = StepStatus::Failed;
                item.error = Some(failure.clone());
                item.wake_at_ms = None;
                touched = true;
            }
        }
        if touched {
            changed.push(index);
        }
    }
    changed
}

/// Records in each step's history the attempts a dead host had in flight
/// (a running step, or running items of a fan-out) as interrupted, from
/// when they started to now, when this host found them; they run again
/// with the next attempt number. Adds the records changed to `changed`;
/// returns how many attempts were interrupted.
fn record_interrupted(steps: &mut [StepRecord], changed: &mut Vec<usize>) -> usize {
    let found_at = now_ms();
    let mut count = 0;
    for (index, record) in steps.iter_mut().enumerate() {
        let mut interrupted = Vec::new();
        if record.status == StepStatus::Running && record.items.is_empty() && record.attempts > 0 {
            interrupted.push((None, record.attempts));
        }
        for (item, state) in record.items.iter().enumerate() {
            if state.status == StepStatus::Running && state.attempts > 0 {
                interrupted.push((Some(item as u32), state.attempts));
            }
        }
        if interrupted.is_empty() {
            continue;
        }
        let started_at_ms = record.started_at_ms.unwrap_or(found_at);
        for (item, attempt) in interrupted {
            record.history.push(AttemptRecord {
                attempt,
                item,
                started_at_ms,
                finished_at_ms: found_at,
                error: None,
                interrupted: true,
            });
            count += 1;
        }
        let excess = record.history.len().saturating_sub(MAX_HISTORY);
        record.history.drain(..excess);
        if !changed.contains(&index) {
            changed.push(index);
        }
    }
    count
}

/// Whether an attempt finished (succeeded or failed) after the latest
/// attempt a host was found to have died in.
fn progressed_since_takeover(steps: &[StepRecord]) -> bool {
    let history = || steps.iter().flat_map(|step| step.history.iter());
    let Some(takeover) = history()
        .filter(|attempt| attempt.interrupted)
        .map(|attempt| attempt.finished_at_ms)
        .max()
    else {
        return false;
    };
    history().any(|attempt| !attempt.interrupted && attempt.finished_at_ms > takeover)
}

/// One unit of work: a step, or one item of a fan-out.
type Unit = (usize, Option<u32>);

/// What an invocation task reports.
struct Done {
    unit: Unit,
    /// The step cache key, when the step's output is to be kept.
    cache_key: Option<String>,
    attempt: u32,
    invoked: Invoked,
    started_at_ms: u64,
    duration_ms: u64,
}

/// The most attempts a step record keeps in its history.
const MAX_HISTORY: usize = 50;

/// The coordinator of one run.
struct Scheduler<'a> {
    store: Arc<dyn RunStore>,
    slots: Arc<Semaphore>,
    plan: &'a Plan,
    run: RunRecord,
    steps: Vec<StepRecord>,
    /// Per step, the steps its expressions may read (its needs,
    /// transitively; for a fallback, its step's and that step).
    reach: Vec<Vec<usize>>,
    /// Per step, the step it is the fallback of.
    fallback_of: Vec<Option<usize>>,
    /// Steps in an order where each comes after its needs.
    order: Vec<usize>,
    /// Units whose `if` passed and that wait for a slot.
    ready: BTreeSet<Unit>,
    in_flight: HashSet<Unit>,
    tasks: JoinSet<Done>,
    run_slots: Arc<Semaphore>,
    /// Why the run fails, once a step failed for good: nothing new starts,
    /// what runs is let finish.
    failing: Option<String>,
    /// Whether a record changed since the loop last looked: one more round
    /// may then start something.
    progress: bool,
    /// The wait steps whose wait was logged.
    announced: HashSet<usize>,
    /// The run's lease: every commit carries its token.
    lease: Lease,
    /// When the lease was last extended.
    renewed_at_ms: u64,
    /// This process's span of the run.
    span: tracing::Span,
    metrics: Arc<Metrics>,
    events: tokio::sync::broadcast::Sender<RunEvent>,
    /// Whether a run that only waits goes back to the caller.
    park: bool,
    /// Set when the host stops: nothing new starts.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The span of each attempt in flight.
    attempt_spans: HashMap<Unit, tracing::Span>,
    /// The span of each pause (a backoff, a wait, a sleep) in progress.
    pauses: HashMap<Unit, tracing::Span>,
    /// Units ready but not started, as last counted in the queue gauge.
    queued: i64,
    /// When the store's inbox was last collected.
    inbox_at_ms: u64,
    /// Steps done, as last told to subscribers.
    steps_done: usize,
}

impl<'a> Scheduler<'a> {
    fn new(
        executor: &Executor,
        plan: &'a Plan,
        run: RunRecord,
        steps: Vec<StepRecord>,
        lease: Lease,
        span: tracing::Span,
    ) -> Scheduler<'a> {
        let definition = &plan.definition;
        let index_of = |id: &crate::definition::StepId| {
            definition
                .steps
                .iter()
                .position(|step| &step.id == id)
                .expect("validated")
        };
        let needs: Vec<Vec<usize>> = definition
            .steps
            .iter()
            .map(|step| step.needs.iter().map(index_of).collect())
            .collect();
        let fallback_of: Vec<Option<usize>> = definition
            .steps
            .iter()
            .map(|step| step.fallback_of.as_ref().map(index_of))
            .collect();
        let order = crate::definition::topological_order(&needs);
        let mut reach: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); needs.len()];
        for &index in &order {
            let mut set = BTreeSet::new();
            for &need in &needs[index] {
                set.insert(need);
                set.extend(reach[need].iter().copied());
            }
            reach[index] = set;
        }
        for (index, primary) in fallback_of.iter().enumerate() {
            if let Some(primary) = *primary {
                let mut set = reach[primary].clone();
                set.insert(primary);
                reach[index] = set;
            }
        }
        Scheduler {
            store: executor.store.clone(),
            slots: executor.slots.clone(),
            plan,
            run_slots: Arc::new(Semaphore::new(definition.concurrency.max(1) as usize)),
            run,
            steps,
            reach: reach
                .into_iter()
                .map(|set| set.into_iter().collect())
                .collect(),
            fallback_of,
            order,
            ready: BTreeSet::new(),
            in_flight: HashSet::new(),
            tasks: JoinSet::new(),
            failing: None,
            progress: false,
            announced: HashSet::new(),
            lease,
            renewed_at_ms: now_ms(),
            span,
            metrics: executor.metrics.clone(),
            events: executor.events.clone(),
            park: executor.park,
            stopping: executor.stopping.clone(),
            attempt_spans: HashMap::new(),
            pauses: HashMap::new(),
            queued: 0,
            inbox_at_ms: 0,
            steps_done: 0,
        }
    }

    /// The name step `index`'s component declares, for metrics; the step id
    /// for a built-in step.
    fn component_name(&self, index: usize) -> String {
        match &self.plan.steps[index].component {
            Some(component) => component.description.name.clone(),
            None => self.steps[index].id.clone(),
        }
    }

    /// Opens the span of a pause of `unit` (`backoff`, `wait`, `sleep`),
    /// unless one is open; it closes when the pause ends.
    fn pause(&mut self, unit: Unit, kind: &'static str) {
        if self.pauses.contains_key(&unit) {
            return;
        }
        let step = self.steps[unit.0].id.clone();
        self.event(RunEventKind::Paused {
            step: step.clone(),
            item: unit.1,
            kind: kind.to_owned(),
        });
        let span = tracing::info_span!(
            target: "plait::executor",
            parent: &self.span,
            "pause",
            otel.name = %format!("{kind} {step}"),
            kind,
            step = %step,
            item = unit.1,
        );
        self.pauses.insert(unit, span);
    }

    /// Records an event in the run's event log and tells subscribers.
    fn event(&self, kind: RunEventKind) {
        publish(
            self.store.as_ref(),
            &self.events,
            RunEvent {
                seq: 0,
                run_id: self.run.id.clone(),
                workflow: self.run.workflow.name.clone(),
                at_ms: now_ms(),
                steps_done: self.steps.iter().filter(|record| finished(record)).count(),
                steps_total: self.steps.len(),
                kind,
            },
        );
    }

    /// Logs how the run ended (the line that closes its log file), and
    /// counts it.
    fn ended(&self) {
        let status = self.run.status;
        self.event(RunEventKind::RunFinished {
            status: status.as_str().to_owned(),
            error: self.run.error.clone(),
        });
        let duration_ms = now_ms().saturating_sub(self.run.created_at_ms);
        self.metrics.run_finished(&self.run.workflow.name, status);
        match &self.run.error {
            Some(error) => {
                self.span.record("otel.status_code", "ERROR");
                self.span.record("otel.status_description", error.as_str());
                tracing::info!(target: "plait::executor", run_status = status.as_str(), duration_ms, error = %error, "run {}", status.as_str());
            }
            None => {
                self.span.record("otel.status_code", "OK");
                tracing::info!(target: "plait::executor", run_status = status.as_str(), duration_ms, "run {}", status.as_str());
            }
        }
    }

    /// Whether a failed attempt of step `index` will be tried again.
    fn will_retry(&self, index: usize, attempt: u32, failure: &StepFailure) -> bool {
        let policy = self.plan.steps[index].definition.retry;
        attempt > 0 && failure.kind.is_retryable() && attempt < policy.max_attempts
    }

    /// Commits under the run's lease: refused if another executor took the
    /// run over.
    fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError> {
        self.store.commit(Commit {
            fence: Some((&self.run.id, &self.lease.holder, self.lease.token)),
            ..commit
        })
    }

    /// Extends the lease when it is due.
    fn renew_lease(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        if now.saturating_sub(self.renewed_at_ms) >= LEASE_RENEW_MS {
            self.lease = self
                .store
                .renew_lease(&self.run.id, &self.lease, LEASE_TTL_MS)?;
            self.renewed_at_ms = now;
        }
        Ok(())
    }

    fn commit_step(&mut self, index: usize) -> Result<(), StoreError> {
        self.progress = true;
        self.commit(Commit {
            steps: vec![&self.steps[index]],
            ..Commit::default()
        })
    }

    async fn run(&mut self) -> Result<RunReport, ExecutorError> {
        self.event(RunEventKind::RunStarted);
        loop {
            self.renew_lease()?;
            // Signals and cancel requests other processes left: looked for
            // at most every SIGNAL_POLL.
            if now_ms().saturating_sub(self.inbox_at_ms) >= SIGNAL_POLL.as_millis() as u64 {
                self.inbox_at_ms = now_ms();
                for signal in collect_inbox(self.store.as_ref(), &self.events)? {
                    if signal.is_cancel() {
                        continue;
                    }
                    let wait = self
                        .plan
                        .definition
                        .step(&signal.step_id)
                        .is_some_and(|step| matches!(step.kind, StepKind::Wait { .. }));
                    if signal.run_id == self.run.id && !wait {
                        tracing::warn!(
                            run = %signal.run_id,
                            step = %signal.step_id,
                            "a signal for a step that is not a `wait` step of this run was ignored"
                        );
                    }
                }
            }
            if let Some(request) = self.store.signal(&self.run.id, Signal::CANCEL)? {
                return self.cancel(&request).await;
            }
            let now = now_ms();
            if let Some(deadline) = self.run.deadline_ms
                && now >= deadline
            {
                return self.time_out().await;
            }
            if self.failing.is_none() {
                self.advance(now).await?;
            }
            let blocked = if self.failing.is_none()
                && !self.stopping.load(std::sync::atomic::Ordering::Acquire)
            {
                self.spawn_ready().await?
            } else {
                false
            };
            let queued = self.ready.len() as i64;
            self.metrics.queue(queued - self.queued);
            self.queued = queued;
            let done = self.steps.iter().filter(|record| finished(record)).count();
            if done != self.steps_done {
                self.steps_done = done;
                self.event(RunEventKind::Progress);
            }
            if self.tasks.is_empty()
                && let Some(report) = self.finish().await?
            {
                return Ok(report);
            }
            self.mark_waiting()?;
            let stopping = self.stopping.load(std::sync::atomic::Ordering::Acquire);
            if self.tasks.is_empty() && (stopping || self.parks()) {
                if stopping {
                    tracing::info!(target: "plait::executor", "host stopping; the run is left for the next host");
                    return Err(ExecutorError::Stopped(self.run.id.clone()));
                }
                tracing::debug!(target: "plait::executor", "the run only waits; handed back");
                return Ok(RunReport {
                    run: self.run.clone(),
                    steps: self.steps.clone(),
                });
            }

            let mut wake = self.next_wake();
            // A signal is waited for, or a slot: look often. Otherwise look
            // for a cancel request once a second.
            let poll = if self.waits_for_signal() || blocked {
                SIGNAL_POLL
            } else {
                CANCEL_POLL
            };
            let poll = now_ms() + poll.as_millis() as u64;
            wake = Some(wake.map_or(poll, |wake| wake.min(poll)));
            if self.tasks.is_empty()
                && wake.is_none()
                && self.ready.is_empty()
                && !std::mem::take(&mut self.progress)
            {
                // Nothing runs, nothing waits, yet the run is not done:
                // a step waits on a need that cannot finish.
                let stuck: Vec<&str> = self
                    .steps
                    .iter()
                    .filter(|record| !finished(record))
                    .map(|record| record.id.as_str())
                    .collect();
                self.failing = Some(format!(
                    "no step can go on (waiting: {}); this is a bug in the host",
                    stuck.join(", ")
                ));
                continue;
            }
            let sleep = wake.map(|wake| Duration::from_millis(wake.saturating_sub(now_ms())));
            tokio::select! {
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Some(Ok(done)) => self.completed(done)?,
                        Some(Err(error)) if error.is_panic() => {
                            // The invocation task panicked: a host bug.
                            self.failing = Some(format!("an invocation task panicked: {error}"));
                        }
                        _ => {}
                    }
                }
                () = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {}
            }
        }
    }

    fn waits_for_signal(&self) -> bool {
        self.steps.iter().enumerate().any(|(index, record)| {
            record.status == StepStatus::Waiting
                && matches!(
                    self.plan.steps[index].definition.kind,
                    StepKind::Wait { .. }
                )
        })
    }

    /// The earliest time something waiting goes on.
    /// Whether a parking executor hands the run back now: it is waiting,
    /// nothing is ready, and neither a pause nor its deadline ends within
    /// [`PARK_AFTER_MS`].
    fn parks(&self) -> bool {
        if !self.park || self.run.status != RunStatus::Waiting || !self.ready.is_empty() {
            return false;
        }
        // Every pause is announced (its event recorded) before the run is
        // handed back: one more round does that.
        let unannounced = self.steps.iter().enumerate().any(|(index, record)| {
            (record.status == StepStatus::Waiting && !self.pauses.contains_key(&(index, None)))
                || record.items.iter().enumerate().any(|(item, record)| {
                    record.status == StepStatus::Waiting
                        && !self.pauses.contains_key(&(index, Some(item as u32)))
                })
        });
        if unannounced {
            return false;
        }
        let soon = now_ms() + PARK_AFTER_MS;
        !wake_times(&self.steps)
            .chain(self.run.deadline_ms)
            .any(|wake| wake <= soon)
    }

    fn next_wake(&self) -> Option<u64> {
        wake_times(&self.steps)
            .chain(self.run.deadline_ms)
            .chain([self.renewed_at_ms + LEASE_RENEW_MS])
            .min()
    }

    /// Records `waiting` on the run while nothing runs and something waits,
    /// and `running` again when work resumes.
    fn mark_waiting(&mut self) -> Result<(), StoreError> {
        let idle = self.tasks.is_empty() && self.ready.is_empty();
        let waiting = idle
            && self.failing.is_none()
            && self.steps.iter().any(|record| {
                record.status == StepStatus::Waiting
                    || record
                        .items
                        .iter()
                        .any(|item| item.status == StepStatus::Waiting)
            });
        let status = if waiting {
            RunStatus::Waiting
        } else {
            RunStatus::Running
        };
        if self.run.status != status {
            self.run.status = status;
            self.run.updated_at_ms = now_ms();
            self.commit(Commit {
                run: Some(&self.run),
                ..Commit::default()
            })?;
        }
        // Once the records say so: whoever reads this finds the run waiting.
        if status == RunStatus::Waiting {
            for (index, record) in self.steps.iter().enumerate() {
                if record.status == StepStatus::Waiting
                    && matches!(
                        self.plan.steps[index].definition.kind,
                        StepKind::Wait { .. }
                    )
                    && self.announced.insert(index)
                {
                    tracing::info!(
                                step = %record.id,
                        "waiting for a signal; deliver it with `plait signal {} {}`",
                        self.run.id,
                        record.id
                    );
                }
            }
        }
        Ok(())
    }

    /// Moves every step that can go on: starts steps whose needs are done
    /// (or skips them), ends sleeps and waits, and queues retries whose
    /// backoff is over.
    async fn advance(&mut self, now: u64) -> Result<(), ExecutorError> {
        for position in 0..self.order.len() {
            let index = self.order[position];
            if self.failing.is_some() {
                return Ok(());
            }
            let kind = self.plan.steps[index].definition.kind.clone();
            match self.steps[index].status {
                StepStatus::Succeeded
                | StepStatus::Skipped
                | StepStatus::Recovered
                | StepStatus::Failed => {}
                StepStatus::Pending => {
                    if self.ready.contains(&(index, None)) || !self.can_start(index) {
                        continue;
                    }
                    self.start(index, now).await?;
                }
                StepStatus::Waiting => match kind {
                    StepKind::Sleep { .. } => {
                        self.pause((index, None), "sleep");
                        if self.steps[index].wake_at_ms.is_none_or(|wake| now >= wake) {
                            self.succeed(index, Value::Null, Vec::new())?;
                        }
                    }
                    StepKind::Wait { timeout, default } => {
                        self.pause((index, None), "wait");
                        let id = self.steps[index].id.clone();
                        if let Some(signal) = self.store.signal(&self.run.id, &id)? {
                            tracing::info!(step = %id, "signal received");
                            self.succeed(index, signal.data, Vec::new())?;
                        } else if self.steps[index].wake_at_ms.is_some_and(|wake| now >= wake) {
                            let waited = timeout.map(humantime::format_duration);
                            match default {
                                Some(default) => self.succeed(index, default, Vec::new())?,
                                None => {
                                    let failure = StepFailure {
                                        kind: FailureKind::Timeout,
                                        message: format!(
                                            "no signal arrived within {}; send one with `plait signal {} {id}`, or give the step a `default`",
                                            waited.map(|w| w.to_string()).unwrap_or_default(),
                                            self.run.id
                                        ),
                                        details: None,
                                    };
                                    self.fail_for_good(index, None, failure)?;
                                }
                            }
                        }
                    }
                    StepKind::Component => {
                        if self.steps[index].wake_at_ms.is_none_or(|wake| now >= wake) {
                            self.ready.insert((index, None));
                        }
                    }
                },
                StepStatus::Running => {
                    if self.steps[index].items.is_empty()
                        && self.plan.steps[index].definition.for_each.is_none()
                    {
                        // Interrupted by a crash: run the attempt again.
                        if !self.in_flight.contains(&(index, None)) {
                            self.ready.insert((index, None));
                        }
                        continue;
                    }
                    for item in 0..self.steps[index].items.len() {
                        let unit = (index, Some(item as u32));
                        if self.in_flight.contains(&unit) || self.ready.contains(&unit) {
                            continue;
                        }
                        let record = &self.steps[index].items[item];
                        let go = match record.status {
                            StepStatus::Pending | StepStatus::Running => true,
                            StepStatus::Waiting => record.wake_at_ms.is_none_or(|wake| now >= wake),
                            _ => false,
                        };
                        if go {
                            self.ready.insert(unit);
                        }
                    }
                    self.complete_fan_out(index)?;
                }
            }
        }
        Ok(())
    }

    /// Whether step `index`'s needs are done (or, for a fallback, whether
    /// its step failed).
    fn can_start(&self, index: usize) -> bool {
        if let Some(primary) = self.fallback_of[index] {
            let record = &self.steps[primary];
            return record.status == StepStatus::Failed && record.output.is_none();
        }
        self.plan.steps[index].definition.needs.iter().all(|need| {
            let position = self.position(need.as_str());
            finished(&self.steps[position])
        })
    }

    fn position(&self, id: &str) -> usize {
        self.steps
            .iter()
            .position(|record| record.id == id)
            .expect("validated")
    }

    /// Step `index` may start: evaluates its `if` and its `for_each`, and
    /// sets it skipped, waiting, fanned out or ready.
    async fn start(&mut self, index: usize, now: u64) -> Result<(), ExecutorError> {
        let definition = &self.plan.steps[index].definition;
        if let Some(condition) = definition.condition.clone() {
            let shown = condition.text().to_owned();
            let ctx = self.context(index, None);
            match crate::expressions::run(&condition, ctx).await {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    let record = &mut self.steps[index];
                    record.status = StepStatus::Skipped;
                    record.finished_at_ms = Some(now);
                    tracing::info!(step = %record.id, status = "skipped", latency_ms = 0u64, "step skipped: its `if` is false");
                    self.commit_step(index)?;
                    return Ok(());
                }
                Ok(other) => {
                    let failure = fatal(format!(
                        "`if: {shown}` must yield true or false, but yielded {}",
                        short(&other)
                    ));
                    return Ok(self.fail_for_good(index, None, failure)?);
                }
                Err(error) => {
                    return Ok(self.fail_for_good(
                        index,
                        None,
                        fatal(format!("the step's `if` failed: {error}")),
                    )?);
                }
            }
        }
        let definition = &self.plan.steps[index].definition;
        match &definition.kind {
            StepKind::Sleep { duration } => {
                let record = &mut self.steps[index];
                record.status = StepStatus::Waiting;
                record.started_at_ms = Some(now);
                record.wake_at_ms = Some(now + duration.as_millis() as u64);
                self.commit_step(index)?;
            }
            StepKind::Wait { timeout, .. } => {
                let record = &mut self.steps[index];
                record.status = StepStatus::Waiting;
                record.started_at_ms = Some(now);
                record.wake_at_ms = timeout.map(|timeout| now + timeout.as_millis() as u64);
                self.commit_step(index)?;
            }
            StepKind::Component => match definition.for_each.clone() {
                None => {
                    self.ready.insert((index, None));
                }
                Some(for_each) => {
                    let shown = for_each.text().to_owned();
                    let context = self.context(index, None);
                    let items = match crate::expressions::run(&for_each, context).await {
                        Ok(Value::Array(items)) => items,
                        Ok(other) => {
                            let failure = fatal(format!(
                                "`for_each: {shown}` must yield an array, but yielded {}",
                                short(&other)
                            ));
                            return Ok(self.fail_for_good(index, None, failure)?);
                        }
                        Err(error) => {
                            let failure = fatal(format!("the step's `for_each` failed: {error}"));
                            return Ok(self.fail_for_good(index, None, failure)?);
                        }
                    };
                    let record = &mut self.steps[index];
                    record.started_at_ms = Some(now);
                    record.items = items
                        .into_iter()
                        .map(|value| ItemRecord {
                            value,
                            status: StepStatus::Pending,
                            attempts: 0,
                            output: None,
                            output_blobs: Vec::new(),
                            error: None,
                            wake_at_ms: None,
                            duration_ms: None,
                            cache_hit: None,
                        })
                        .collect();
                    record.status = StepStatus::Running;
                    let count = record.items.len() as u32;
                    self.commit_step(index)?;
                    self.ready
                        .extend((0..count).map(|item| (index, Some(item))));
                    // An empty fan-out succeeds with `[]` right away.
                    self.complete_fan_out(index)?;
                }
            },
        }
        Ok(())
    }

    /// The run context expressions of step `index` see: the workflow input,
    /// the steps it may read, run metadata, and a fan-out's item.
    fn context(&self, index: usize, item: Option<u32>) -> Value {
        let mut steps = Map::new();
        for &read in &self.reach[index] {
            let record = &self.steps[read];
            let blobs: Map<String, Value> = record
                .output_blobs
                .iter()
                .map(|blob| {
                    (
                        blob.name.clone(),
                        json!({"media_type": blob.media_type, "digest": blob.digest, "size": blob.size}),
                    )
                })
                .collect();
            steps.insert(
                record.id.clone(),
                json!({
                    "status": record.status.as_str(),
                    "output": record.output,
                    "error": record.error,
                    "blobs": blobs,
                }),
            );
        }
        let mut context = json!({
            "input": self.run.input,
            "steps": steps,
            "run": {"id": self.run.id, "workflow": self.run.workflow.name},
        });
        if let Some(item) = item {
            context["item"] = self.steps[index].items[item as usize].value.clone();
            context["index"] = json!(item);
        }
        if let Some(primary) = self.fallback_of[index] {
            context["error"] = json!(self.steps[primary].error);
        }
        context
    }

    /// Builds the input of a unit: its `input:` mapping (or the default),
    /// its blobs, checked against the component's input schema.
    async fn input(&self, unit: Unit) -> Result<Payload, StepFailure> {
        let (index, item) = unit;
        // A fallback runs in its step's place, on its step's input unless
        // it says otherwise.
        let source = match (
            &self.plan.steps[index].definition.input,
            self.fallback_of[index],
        ) {
            (None, Some(primary)) => primary,
            _ => index,
        };
        let definition = &self.plan.steps[source].definition;
        let json = match &definition.input {
            Some(template) => {
                // Built only when an expression reads it: it holds every
                // step the step may read.
                let context = self.context(index, item);
                crate::expressions::evaluate("input", template, context)
                    .await
                    .map_err(|error| fatal(format!("the step's `input` mapping failed: {error}")))?
            }
            None => match item {
                Some(item) => self.steps[index].items[item as usize].value.clone(),
                None => match definition.needs.as_slice() {
                    [] => self.run.input.clone(),
                    [need] => self.steps[self.position(need.as_str())]
                        .output
                        .clone()
                        .unwrap_or(Value::Null),
                    // Validation requires `input:` with several needs.
                    _ => Value::Null,
                },
            },
        };
        let refs = self.blob_mapping(source)?;
        let mut blobs = Vec::with_capacity(refs.len());
        for blob in refs {
            let data = self
                .store
                .blob(&blob.digest)
                .map_err(|error| fatal(format!("reading blob `{}`: {error}", blob.name)))?
                .ok_or_else(|| {
                    fatal(format!(
                        "blob `{}` ({}) is missing from the store",
                        blob.name, blob.digest
                    ))
                })?;
            blobs.push(Blob {
                name: blob.name,
                media_type: blob.media_type,
                data,
            });
        }
        if let Some(schema) = &self.plan.steps[index].input_schema {
            schema.check(&json).map_err(|violations| {
                fatal(format!(
                    "the step's input does not match the input schema of its component: {violations}"
                ))
            })?;
        }
        Ok(Payload { json, blobs })
    }

    /// The blobs step `index` receives.
    fn blob_mapping(&self, index: usize) -> Result<Vec<BlobRef>, StepFailure> {
        let definition = &self.plan.steps[index].definition;
        let source_blobs = |source: &BlobSource| -> &[BlobRef] {
            match source {
                BlobSource::WorkflowInput => &self.run.input_blobs,
                BlobSource::Step(id) => &self.steps[self.position(id.as_str())].output_blobs,
            }
        };
        Ok(match &definition.blobs {
            None => match definition.needs.as_slice() {
                [] => self.run.input_blobs.clone(),
                [need] => self.steps[self.position(need.as_str())]
                    .output_blobs
                    .clone(),
                _ => Vec::new(),
            },
            Some(BlobMapping::All(source)) => source_blobs(source).to_vec(),
            Some(BlobMapping::Named(named)) => {
                let mut refs = Vec::new();
                for (name, reference) in named {
                    let available = source_blobs(&reference.source);
                    let found = available
                        .iter()
                        .find(|blob| blob.name == reference.name)
                        .ok_or_else(|| {
                            fatal(format!(
                                "blob `{name}` maps to `{reference}`, which does not exist (it has: {})",
                                available.iter().map(|blob| blob.name.as_str()).collect::<Vec<_>>().join(", ")
                            ))
                        })?;
                    refs.push(BlobRef {
                        name: name.clone(),
                        ..found.clone()
                    });
                }
                refs
            }
        })
    }

    /// Starts ready units while the run's, the host's and the fan-out's
    /// limits allow. Returns whether a unit waits for a host slot held by
    /// another run.
    async fn spawn_ready(&mut self) -> Result<bool, ExecutorError> {
        let mut blocked = false;
        let units: Vec<Unit> = self.ready.iter().copied().collect();
        for unit in units {
            let (index, item) = unit;
            if item.is_some() {
                let limit = self.plan.steps[index].definition.max_concurrency as usize;
                let running = self
                    .in_flight
                    .iter()
                    .filter(|(i, it)| *i == index && it.is_some())
                    .count();
                if running >= limit {
                    continue;
                }
            }
            let Ok(run_permit) = self.run_slots.clone().try_acquire_owned() else {
                break;
            };
            let Ok(host_permit) = self.slots.clone().try_acquire_owned() else {
                blocked = true;
                break;
            };
            self.ready.remove(&unit);
            match self.input(unit).await {
                Ok(payload) => {
                    let cache_key = self.plan.steps[index]
                        .definition
                        .cache
                        .map(|cache| (cache, self.cache_key(index, &payload)));
                    if let Some((cache, key)) = &cache_key
                        && let Some(entry) = self.store.cached(key)?
                        && cache.ttl.is_none_or(|ttl| {
                            now_ms().saturating_sub(entry.created_at_ms) < ttl.as_millis() as u64
                        })
                        && self.blobs_present(&entry.output_blobs)?
                    {
                        self.reuse(unit, key.clone(), entry)?;
                        continue;
                    }
                    let cache_key = cache_key.map(|(_, key)| key);
                    self.invoke(unit, payload, cache_key, [run_permit, host_permit])?
                }
                Err(failure) => {
                    // The input could not be built: a fatal failure of the
                    // unit, recorded without invoking anything.
                    self.failed(unit, 0, failure, None)?;
                }
            }
            if self.failing.is_some() {
                break;
            }
        }
        Ok(blocked)
    }

    /// The step cache key of a unit about to run with `payload`: its
    /// component's digest, its config and its input (JSON and blobs).
    fn cache_key(&self, index: usize, payload: &Payload) -> String {
        let planned = &self.plan.steps[index];
        let blobs: Vec<(&str, &str, String)> = payload
            .blobs
            .iter()
            .map(|blob| {
                (
                    blob.name.as_str(),
                    blob.media_type.as_str(),
                    digest(&blob.data),
                )
            })
            .collect();
        let key = json!({
            "component": planned.component_digest(),
            "config": planned.sandbox.config,
            "input": canonical(&payload.json),
            "blobs": blobs,
        });
        digest(key.to_string().as_bytes())
    }

    /// Whether every blob is still in the store.
    fn blobs_present(&self, blobs: &[BlobRef]) -> Result<bool, StoreError> {
        for blob in blobs {
            if self.store.blob(&blob.digest)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Completes a unit with a cached output instead of running it.
    fn reuse(&mut self, unit: Unit, key: String, entry: CacheEntry) -> Result<(), StoreError> {
        let (index, item) = unit;
        let hit = CacheHit {
            key,
            run_id: entry.run_id,
            step_id: entry.step_id,
            created_at_ms: entry.created_at_ms,
        };
        tracing::info!(step = %self.steps[index].id, item, from_run = %hit.run_id, status = "cached", latency_ms = 0u64, "step output reused from the cache");
        self.metrics.cache_hit(&self.component_name(index));
        let now = now_ms();
        let record = &mut self.steps[index];
        match item {
            None => {
                record.status = StepStatus::Succeeded;
                record.output = Some(entry.output);
                record.output_blobs = entry.output_blobs;
                record.started_at_ms = Some(now);
                record.finished_at_ms = Some(now);
                record.duration_ms = Some(0);
                record.cache_hit = Some(hit);
            }
            Some(item) => {
                let item = &mut record.items[item as usize];
                item.status = StepStatus::Succeeded;
                item.output = Some(entry.output);
                item.output_blobs = entry.output_blobs;
                item.cache_hit = Some(hit);
            }
        }
        self.commit_step(index)?;
        if item.is_some() {
            self.complete_fan_out(index)?;
        }
        Ok(())
    }

    /// Marks the unit running with its next attempt, commits, and starts
    /// the invocation.
    fn invoke(
        &mut self,
        unit: Unit,
        payload: Payload,
        cache_key: Option<String>,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Result<(), StoreError> {
        let (index, item) = unit;
        let now = now_ms();
        let record = &mut self.steps[index];
        let attempt = match item {
            None => {
                record.status = StepStatus::Running;
                record.attempts += 1;
                record.started_at_ms = Some(now);
                record.finished_at_ms = None;
                record.wake_at_ms = None;
                record.attempts
            }
            Some(item) => {
                let item = &mut record.items[item as usize];
                item.status = StepStatus::Running;
                item.attempts += 1;
                item.wake_at_ms = None;
                item.attempts
            }
        };
        self.run.status = RunStatus::Running;
        self.run.updated_at_ms = now;
        self.commit(Commit {
            run: Some(&self.run),
            steps: vec![&self.steps[index]],
            ..Commit::default()
        })?;
        let planned = &self.plan.steps[index];
        let step_id = planned.definition.id.to_string();
        let idempotency_key = match item {
            None => InvocationInfo::idempotency_key(&self.run.id, &step_id),
            Some(item) => format!(
                "{}/{item}",
                InvocationInfo::idempotency_key(&self.run.id, &step_id)
            ),
        };
        // The attempt's span: a child of this process's run span, its
        // context passed on to the step's HTTP requests.
        let span = tracing::info_span!(
            target: "plait::executor",
            parent: &self.span,
            "step",
            otel.name = %format!("step {step_id}"),
            otel.status_code = Empty,
            otel.status_description = Empty,
            step = %step_id,
            item = Empty,
            attempt,
            component = %self.component_name(index),
            trace_id = Empty,
            span_id = Empty,
            status = Empty,
            latency_ms = Empty,
        );
        if let Some(item) = item {
            span.record("item", item);
        }
        let context = TraceContext::enter_trace(&span, None);
        // A pause before this attempt (its backoff) is over.
        self.pauses.remove(&unit);
        let invocation = InvocationInfo {
            run_id: self.run.id.clone(),
            step_id,
            attempt,
            idempotency_key,
            traceparent: Some(context.to_traceparent()),
        };
        let component = planned
            .component
            .clone()
            .expect("component steps have a component");
        let sandbox = planned.sandbox.clone();
        tracing::debug!(target: "plait::executor", parent: &span, "step started");
        self.event(RunEventKind::StepStarted {
            step: invocation.step_id.clone(),
            item,
            attempt,
        });
        self.in_flight.insert(unit);
        self.attempt_spans.insert(unit, span.clone());
        self.tasks.spawn(
            async move {
                let _permits = permits;
                let started_at_ms = now_ms();
                let started = Instant::now();
                let invoked = component.invoke(&invocation, &sandbox, &payload).await;
                Done {
                    unit,
                    cache_key,
                    attempt,
                    invoked,
                    started_at_ms,
                    duration_ms: started.elapsed().as_millis() as u64,
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Counts an attempt, closes its span with its status, and logs the
    /// line every finished attempt gets.
    fn attempt_finished(
        &mut self,
        unit: Unit,
        attempt: u32,
        duration_ms: u64,
        (instantiation, fuel): &(Option<Duration>, Option<u64>),
        result: &Result<Payload, StepFailure>,
    ) {
        let (index, _) = unit;
        let component = self.component_name(index);
        if let Some(instantiation) = instantiation {
            self.metrics
                .instantiated(&component, instantiation.as_secs_f64());
        }
        if let Some(fuel) = fuel {
            self.metrics.fuel(&component, *fuel);
        }
        let failure = result.as_ref().err();
        self.metrics
            .attempt(&component, duration_ms as f64 / 1000.0, failure);
        let span = self
            .attempt_spans
            .remove(&unit)
            .unwrap_or_else(tracing::Span::none);
        let status = match failure {
            None => "succeeded",
            Some(failure) if self.will_retry(index, attempt, failure) => "retrying",
            Some(_) => "failed",
        };
        span.record("status", status);
        span.record("latency_ms", duration_ms);
        self.event(RunEventKind::StepFinished {
            step: self.steps[index].id.clone(),
            item: unit.1,
            attempt,
            status: status.to_owned(),
            latency_ms: duration_ms,
        });
        match failure {
            None => {
                span.record("otel.status_code", "OK");
                tracing::info!(target: "plait::executor", parent: &span, status, latency_ms = duration_ms, "step attempt finished");
            }
            Some(failure) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", failure.to_string());
                tracing::info!(target: "plait::executor", parent: &span, status, latency_ms = duration_ms, error = %failure, "step attempt finished");
            }
        }
    }

    /// Records what an invocation returned.
    fn completed(&mut self, done: Done) -> Result<(), StoreError> {
        let Done {
            unit,
            cache_key,
            attempt,
            invoked,
            started_at_ms,
            duration_ms,
        } = done;
        self.in_flight.remove(&unit);
        let (index, item) = unit;
        let invoked_stats = (invoked.instantiation, invoked.fuel_consumed);
        let logs = invoked.logs;
        {
            let record = &mut self.steps[index];
            match item {
                None => {
                    record.fuel_consumed = invoked.fuel_consumed;
                    record.duration_ms = Some(duration_ms);
                    record.finished_at_ms = Some(now_ms());
                }
                Some(item) => record.items[item as usize].duration_ms = Some(duration_ms),
            }
        }
        let result: Result<Payload, StepFailure> = invoked.result.and_then(|output| {
            match &self.plan.steps[index].output_schema {
                Some(schema) => match schema.check(&output.json) {
                    Ok(()) => Ok(output),
                    Err(violations) => Err(StepFailure {
                        kind: FailureKind::InvalidOutput,
                        message: format!(
                            "the output does not match the output schema its component declares: {violations}"
                        ),
                        details: None,
                    }),
                },
                None => Ok(output),
            }
        });
        self.attempt_finished(unit, attempt, duration_ms, &invoked_stats, &result);
        if item.is_none() {
            let history = &mut self.steps[index].history;
            history.push(AttemptRecord {
                attempt,
                item,
                started_at_ms,
                finished_at_ms: now_ms(),
                // Kind and message only: the details are the step record's
                // (the latest attempt's), kept once rather than per attempt.
                error: result.as_ref().err().map(|failure| StepFailure {
                    details: None,
                    ..failure.clone()
                }),
                interrupted: false,
            });
            if history.len() > MAX_HISTORY {
                history.remove(0);
            }
        }
        match result {
            Ok(output) => {
                let (refs, contents) = blob_refs(&output.blobs);
                let logs_entry = LogsEntry {
                    run_id: &self.run.id,
                    index: index as u32,
                    item,
                    attempt,
                    logs: &logs,
                };
                match item {
                    None => {
                        let record = &mut self.steps[index];
                        record.status = StepStatus::Succeeded;
                        record.output = Some(output.json.clone());
                        record.output_blobs = refs.clone();
                        record.error = None;
                    }
                    Some(item) => {
                        let record = &mut self.steps[index].items[item as usize];
                        record.status = StepStatus::Succeeded;
                        record.output = Some(output.json.clone());
                        record.output_blobs = refs.clone();
                        record.error = None;
                    }
                }
                let mut records = vec![&self.steps[index]];
                // A fallback's output is its step's output from now on.
                let mut recovered = None;
                if item.is_none()
                    && let Some(primary) = self.fallback_of[index]
                {
                    let mut record = self.steps[primary].clone();
                    record.status = StepStatus::Recovered;
                    record.output = Some(output.json.clone());
                    record.output_blobs = refs.clone();
                    recovered = Some((primary, record));
                }
                if let Some((_, record)) = &recovered {
                    records.push(record);
                }
                // Kept for other runs in the same commit as the output.
                let entry = cache_key.as_ref().map(|_| CacheEntry {
                    output: output.json.clone(),
                    output_blobs: refs.clone(),
                    run_id: self.run.id.clone(),
                    step_id: self.steps[index].id.clone(),
                    created_at_ms: now_ms(),
                });
                self.commit(Commit {
                    run: None,
                    steps: records,
                    blobs: contents
                        .iter()
                        .map(|(digest, data)| (digest.as_str(), *data))
                        .collect(),
                    logs: Some(logs_entry),
                    signal: None,
                    idempotency: None,
                    cache: cache_key.as_deref().zip(entry.as_ref()),
                    fence: None,
                    audit: None,
                })?;
                if let Some((primary, record)) = recovered {
                    tracing::info!(step = %record.id, "step recovered by its fallback");
                    self.steps[primary] = record;
                }
                tracing::debug!(step = %self.steps[index].id, item, "step succeeded");
                if item.is_some() {
                    self.complete_fan_out(index)?;
                }
                Ok(())
            }
            Err(failure) => self.failed(unit, attempt, failure, Some(&logs)),
        }
    }

    /// A unit's attempt failed: retry it after its backoff if the failure
    /// and the policy allow, else fail it for good.
    fn failed(
        &mut self,
        unit: Unit,
        attempt: u32,
        failure: StepFailure,
        logs: Option<&crate::capabilities::StepLogs>,
    ) -> Result<(), StoreError> {
        let (index, item) = unit;
        let policy = self.plan.steps[index].definition.retry;
        let retry = self.will_retry(index, attempt, &failure);
        if retry {
            self.metrics.retry(&self.component_name(index));
            self.pause(unit, "backoff");
        }
        let logs_entry = logs.map(|logs| LogsEntry {
            run_id: &self.run.id,
            index: index as u32,
            item,
            attempt,
            logs,
        });
        if retry {
            let delay = policy.delay(attempt, fastrand::f64());
            let wake = now_ms() + delay.as_millis() as u64;
            tracing::info!(
                step = %self.steps[index].id,
                item,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %failure,
                "attempt failed; retrying after backoff"
            );
            let record = &mut self.steps[index];
            match item {
                None => {
                    record.status = StepStatus::Waiting;
                    record.wake_at_ms = Some(wake);
                    record.error = Some(failure);
                }
                Some(item) => {
                    let item = &mut record.items[item as usize];
                    item.status = StepStatus::Waiting;
                    item.wake_at_ms = Some(wake);
                    item.error = Some(failure);
                }
            }
            return self.commit(Commit {
                steps: vec![&self.steps[index]],
                logs: logs_entry,
                ..Commit::default()
            });
        }
        if let Some(entry) = logs_entry {
            self.commit(Commit {
                logs: Some(entry),
                ..Commit::default()
            })?;
        }
        self.fail_for_good(index, item, failure)
    }

    /// A unit failed with no retry left: apply the step's `on_error`.
    fn fail_for_good(
        &mut self,
        index: usize,
        item: Option<u32>,
        failure: StepFailure,
    ) -> Result<(), StoreError> {
        self.pauses.remove(&(index, item));
        let definition = &self.plan.steps[index].definition;
        let on_error = definition.on_error.clone();
        let id = self.steps[index].id.clone();
        if let Some(item) = item {
            let record = &mut self.steps[index].items[item as usize];
            record.status = StepStatus::Failed;
            record.error = Some(failure.clone());
            if on_error == OnError::Continue {
                record.output = Some(json!({"error": failure}));
            }
            self.commit_step(index)?;
            if on_error != OnError::Continue {
                self.failing = Some(format!("step `{id}` failed on item {item}: {failure}"));
                return Ok(());
            }
            return self.complete_fan_out(index);
        }
        let record = &mut self.steps[index];
        record.status = StepStatus::Failed;
        record.error = Some(failure.clone());
        record.finished_at_ms = Some(now_ms());
        record.wake_at_ms = None;
        match on_error {
            OnError::Continue => {
                record.output = Some(json!({"error": failure}));
                tracing::info!(step = %id, error = %failure, "step failed; the run goes on");
                self.commit_step(index)?;
                // A fallback that failed this way leaves its step failed
                // the same way.
                if let Some(primary) = self.fallback_of[index] {
                    let error = self.steps[primary].error.clone();
                    let record = &mut self.steps[primary];
                    record.output = Some(json!({"error": error}));
                    self.commit_step(primary)?;
                }
            }
            OnError::Fallback(ref fallback) => {
                tracing::info!(step = %id, fallback = %fallback, error = %failure, "step failed; running its fallback");
                self.commit_step(index)?;
            }
            OnError::Fail => {
                self.commit_step(index)?;
                self.failing = Some(match self.fallback_of[index] {
                    Some(primary) => format!(
                        "step `{}` failed and so did its fallback `{id}`: {failure}",
                        self.steps[primary].id
                    ),
                    None => format!("step `{id}` failed: {failure}"),
                });
            }
        }
        Ok(())
    }

    /// Ends a fan-out whose items are all done: its output is their
    /// outputs in order.
    fn complete_fan_out(&mut self, index: usize) -> Result<(), StoreError> {
        let record = &self.steps[index];
        if record.status != StepStatus::Running
            || !record.items.iter().all(|item| {
                matches!(item.status, StepStatus::Succeeded)
                    || (item.status == StepStatus::Failed && item.output.is_some())
            })
        {
            return Ok(());
        }
        let outputs: Vec<Value> = record
            .items
            .iter()
            .map(|item| item.output.clone().unwrap_or(Value::Null))
            .collect();
        let blobs: Vec<BlobRef> = record
            .items
            .iter()
            .enumerate()
            .flat_map(|(n, item)| {
                item.output_blobs.iter().map(move |blob| BlobRef {
                    name: format!("{n}/{}", blob.name),
                    ..blob.clone()
                })
            })
            .collect();
        let failed = record
            .items
            .iter()
            .filter(|item| item.status == StepStatus::Failed)
            .count();
        let record = &mut self.steps[index];
        record.status = if failed == 0 {
            StepStatus::Succeeded
        } else {
            StepStatus::Failed
        };
        if failed > 0 {
            record.error = Some(StepFailure {
                kind: FailureKind::Fatal,
                message: format!("{failed} of {} items failed", record.items.len()),
                details: None,
            });
        }
        record.output = Some(Value::Array(outputs));
        record.output_blobs = blobs;
        record.finished_at_ms = Some(now_ms());
        self.commit_step(index)
    }

    /// Sets step `index` succeeded with `output` (built-in steps).
    fn succeed(
        &mut self,
        index: usize,
        output: Value,
        blobs: Vec<BlobRef>,
    ) -> Result<(), StoreError> {
        self.pauses.remove(&(index, None));
        let record = &mut self.steps[index];
        record.status = StepStatus::Succeeded;
        record.output = Some(output);
        record.output_blobs = blobs;
        record.finished_at_ms = Some(now_ms());
        record.duration_ms = record
            .started_at_ms
            .map(|started| now_ms().saturating_sub(started));
        record.wake_at_ms = None;
        self.commit_step(index)
    }

    /// With nothing running: ends the run if it failed or every step is
    /// done. `None` while steps still wait or are ready.
    async fn finish(&mut self) -> Result<Option<RunReport>, ExecutorError> {
        if let Some(error) = self.failing.clone() {
            return Ok(Some(self.conclude(RunStatus::Failed, Some(error))?));
        }
        // Fallbacks whose step did not fail are not needed.
        for index in 0..self.steps.len() {
            if let Some(primary) = self.fallback_of[index]
                && self.steps[index].status == StepStatus::Pending
                && finished(&self.steps[primary])
                && self.steps[primary].status != StepStatus::Failed
            {
                self.steps[index].status = StepStatus::Skipped;
                self.commit_step(index)?;
            }
        }
        if !self.ready.is_empty() || !self.steps.iter().all(finished) {
            return Ok(None);
        }
        let definition = &self.plan.definition;
        let (output, output_blobs) = match &definition.output {
            Some(template) => {
                let mut steps = Map::new();
                for record in &self.steps {
                    steps.insert(
                        record.id.clone(),
                        json!({"status": record.status.as_str(), "output": record.output, "error": record.error}),
                    );
                }
                let context = json!({
                    "input": self.run.input,
                    "steps": steps,
                    "run": {"id": self.run.id, "workflow": self.run.workflow.name},
                });
                match crate::expressions::evaluate("output", template, context).await {
                    Ok(output) => (output, Vec::new()),
                    Err(error) => {
                        let error = format!("the workflow's `output` mapping failed: {error}");
                        return Ok(Some(self.conclude(RunStatus::Failed, Some(error))?));
                    }
                }
            }
            None => {
                // The graph's final step (validation refuses several
                // without an `output:`), with its blobs.
                let record = &self.steps[self.plan.definition.output_step()];
                (
                    record.output.clone().unwrap_or(Value::Null),
                    record.output_blobs.clone(),
                )
            }
        };
        self.run.output = Some(output);
        self.run.output_blobs = output_blobs;
        Ok(Some(self.conclude(RunStatus::Succeeded, None)?))
    }

    /// Ends the run with `status` (and `error`): commits it, logs the line
    /// that closes the run's log, counts it, and returns the report.
    fn conclude(
        &mut self,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<RunReport, StoreError> {
        self.run.status = status;
        self.run.error = error;
        self.run.updated_at_ms = now_ms();
        self.commit(Commit {
            run: Some(&self.run),
            ..Commit::default()
        })?;
        self.ended();
        Ok(self.report())
    }

    /// A cancel was requested: stops what runs and ends the run
    /// `cancelled`.
    async fn cancel(&mut self, request: &Signal) -> Result<RunReport, ExecutorError> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.in_flight.clear();
        self.ready.clear();
        self.pauses.clear();
        for span in self.attempt_spans.drain().map(|(_, span)| span) {
            span.record("status", "cancelled");
            span.record("otel.status_code", "ERROR");
        }
        let message = cancel_message(request);
        let changed = abandon(&mut self.steps, &message);
        for index in changed {
            self.commit_step(index)?;
        }
        Ok(self.conclude(RunStatus::Cancelled, Some(message))?)
    }

    /// The run's `timeout` passed: stops what runs and fails the run.
    async fn time_out(&mut self) -> Result<RunReport, ExecutorError> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let limit = self
            .plan
            .definition
            .timeout
            .map(|timeout| humantime::format_duration(timeout).to_string())
            .unwrap_or_default();
        let failure = StepFailure {
            kind: FailureKind::Timeout,
            message: format!("stopped: the run's timeout of {limit} passed"),
            details: None,
        };
        let units: Vec<Unit> = self.in_flight.drain().collect();
        for (index, item) in units {
            let record = &mut self.steps[index];
            match item {
                None => {
                    record.status = StepStatus::Failed;
                    record.error = Some(failure.clone());
                    record.finished_at_ms = Some(now_ms());
                }
                Some(item) => {
                    let item = &mut record.items[item as usize];
                    item.status = StepStatus::Failed;
                    item.error = Some(failure.clone());
                }
            }
            self.commit_step(index)?;
        }
        self.failing = Some(format!(
            "the run did not finish within its timeout of {limit}"
        ));
        tracing::info!("run timed out");
        Ok(self.finish().await?.expect("a failing run finishes"))
    }

    fn report(&self) -> RunReport {
        RunReport {
            run: self.run.clone(),
            steps: self.steps.clone(),
        }
    }
}

fn fatal(message: String) -> StepFailure {
    StepFailure {
        kind: FailureKind::Fatal,
        message,
        details: None,
    }
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
fn blob_refs(blobs: &[Blob]) -> (Vec<BlobRef>, Vec<(String, &[u8])>) {
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
