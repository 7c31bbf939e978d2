//! Creating a run: the input checks, the idempotency key, and pinning what
//! the run executes (its definition and components) in the blob store.

use serde_json::{Value, json};

use super::*;
use crate::clock::now_ms;
use crate::digest::{Digest, digest};
use crate::plan::Plan;
use crate::step::Blob;
use crate::store::{
    AuditAction, AuditRecord, Commit, IdempotencyRecord, RunRecord, RunStatus, StepRecord,
    StoreError, WorkflowRef,
};
use crate::telemetry::{RunTrace, TraceContext};

/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

pub(super) fn check_key(key: &str) -> Result<(), ExecutorError> {
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

/// A run [`Executor::enqueue_pending`] recorded, whose commit may not be
/// on disk yet.
#[derive(Debug)]
#[must_use = "a queued run is not durable until `durable` is awaited"]
pub struct Queued {
    /// The run (the key's earlier run when `new` is false).
    pub run: RunRecord,
    /// Whether this call created it.
    pub new: bool,
    ticket: Option<u64>,
}

impl Queued {
    /// Waits until the run's record is on disk (at once for an earlier
    /// run of the same key, or a store that commits in full). An error
    /// means the store could not sync: the run may be lost, so nobody may
    /// be told of it.
    pub async fn durable(&self, executor: &Executor) -> Result<(), ExecutorError> {
        if let Some(ticket) = self.ticket {
            crate::store::durable(executor.store().as_ref(), ticket).await?;
        }
        Ok(())
    }
}

/// What starting a run asks for: the one request [`Executor::start`] and
/// [`Executor::enqueue`] take, whichever edge (CLI, HTTP API, trigger,
/// embedder) it comes from.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The workflow input, checked against the workflow's `input.schema`.
    pub input: Value,
    /// The input blobs, by name.
    pub blobs: Vec<Blob>,
    /// The idempotency key: the first start with it creates the run; a
    /// later start with the same key and the same request (workflow,
    /// input, blobs) returns that run, continuing it if it has not
    /// finished, without starting another; the same key with a different
    /// request is refused ([`ExecutorError::KeyReused`]).
    pub idempotency_key: Option<String>,
    /// Who asks (for the audit log) and the trace the run continues.
    pub origin: Origin,
}

impl StartRequest {
    /// A request with `input`, no blobs, no key, on the host's behalf.
    pub fn new(input: Value) -> StartRequest {
        StartRequest {
            input,
            ..StartRequest::default()
        }
    }

    /// With these input blobs.
    #[must_use]
    pub fn blobs(mut self, blobs: Vec<Blob>) -> StartRequest {
        self.blobs = blobs;
        self
    }

    /// With an idempotency key (none if `None`).
    #[must_use]
    pub fn idempotency_key(mut self, key: Option<impl Into<String>>) -> StartRequest {
        self.idempotency_key = key.map(Into::into);
        self
    }

    /// On behalf of `origin`.
    #[must_use]
    pub fn origin(mut self, origin: Origin) -> StartRequest {
        self.origin = origin;
        self
    }
}

impl Executor {
    /// Creates a run of `plan` for `request` and runs it to its end (or,
    /// for a parking executor, until it only waits). With an idempotency
    /// key already used for the same request, returns that run, continuing
    /// it if it has not finished.
    pub async fn start(
        &self,
        plan: &Plan,
        request: StartRequest,
    ) -> Result<RunReport, ExecutorError> {
        let origin = request.origin.clone();
        let key = request.idempotency_key.clone();
        let (run, new, span, pending) = self.create(plan, request, RunStatus::Running)?;
        if !new {
            tracing::info!(target: "plait::executor", parent: &span, key = key.as_deref().unwrap_or(""), "idempotency key already used; the same run");
            drop(span);
            if run.status.is_finished() {
                let steps = self.store.steps(&run.id)?;
                return Ok(RunReport { run, steps });
            }
            return self.resume_with(plan, &run.id, &origin).await;
        }
        let lease = self.store.acquire_lease(&run.id, &self.id, LEASE_TTL_MS)?;
        let steps = self.store.steps(&run.id)?;
        tracing::info!(target: "plait::executor", parent: &span, "run started");
        self.execute(plan, run, steps, lease, span, pending).await
    }

    /// Checks `request` and records a new run of `plan` as `queued`,
    /// without running it: what a server does to answer a request at once
    /// and start the run when it has room. The run's trace is rooted here.
    /// [`Executor::resume_with`] executes it (after a restart too). With an
    /// idempotency key already used for the same request, returns that run
    /// and `false`.
    /// Returns once the run's record is durable.
    pub async fn enqueue(
        &self,
        plan: &Plan,
        request: StartRequest,
    ) -> Result<(RunRecord, bool), ExecutorError> {
        let queued = self.enqueue_pending(plan, request)?;
        queued.durable(self).await?;
        Ok((queued.run, queued.new))
    }

    /// [`Executor::enqueue`] without waiting for the sync: the run is
    /// recorded and readable, and [`Queued::durable`] must be awaited
    /// before anyone outside this process is told of it. It may be handed
    /// to [`Executor::resume_with`] before then: the run's first commit
    /// that changes a step waits for a sync, and the journal's log is
    /// ordered, so that sync covers the creation too. This is how a server
    /// answering a request has the creation and the first step's start
    /// share one sync instead of waiting for two in a row.
    pub fn enqueue_pending(
        &self,
        plan: &Plan,
        request: StartRequest,
    ) -> Result<Queued, ExecutorError> {
        let (run, new, span, ticket) = self.create(plan, request, RunStatus::Queued)?;
        if new {
            tracing::info!(target: "plait::executor", parent: &span, "run queued");
            self.note(&run, plan.steps.len(), RunEventKind::RunQueued);
        }
        Ok(Queued { run, new, ticket })
    }

    /// Checks `request` and records a new run (`status`) under its run
    /// span, whose trace continues the origin's; returns the run, whether
    /// it is new (`false`: the idempotency key's earlier run), the span,
    /// and the ticket of its commit, applied but not yet durable: a run
    /// started at once waits for it at its end (see `Executor::execute`),
    /// a queued one before its caller is answered ([`Queued::durable`]).
    #[allow(clippy::type_complexity)]
    fn create(
        &self,
        plan: &Plan,
        request: StartRequest,
        status: RunStatus,
    ) -> Result<(RunRecord, bool, tracing::Span, Option<u64>), ExecutorError> {
        let span = run_span(plan, false);
        let parent = request.origin.trace_parent.as_ref();
        let root = TraceContext::enter_trace(&span, parent);
        let trace = crate::telemetry::run_trace(&root, parent);
        let (run, new, pending) = self.record_new(plan, request, trace, status)?;
        span.record("run_id", run.id.as_str());
        Ok((run, new, span, pending))
    }

    /// The checks and the commit of a new run: blobs named once and all
    /// there, the input schema, the key, then the run, its pending steps,
    /// its blobs and pinned components, the key's claim and the audit
    /// record in one commit.
    fn record_new(
        &self,
        plan: &Plan,
        request: StartRequest,
        trace: RunTrace,
        status: RunStatus,
    ) -> Result<(RunRecord, bool, Option<u64>), ExecutorError> {
        let StartRequest {
            input,
            blobs,
            idempotency_key,
            origin,
        } = request;
        let key = idempotency_key.as_deref();
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
        let request = key.map(|key| -> Result<(String, Digest), ExecutorError> {
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
            return Ok((existing, false, None));
        }
        // Pin what the run executes: the definition's text and every
        // component's bytes go into the content-addressed blob store, so a
        // resume runs them whatever happens to the files.
        // The bytes are the ones the plan checked when it loaded them,
        // never read again: a file replaced since cannot slip in.
        let mut pinned: Vec<(&str, &[u8])> = Vec::new();
        if !self.store.has_blob(&plan.digest)? {
            pinned.push((&plan.digest, plan.definition.source.text.as_bytes()));
        }
        for step in &plan.steps {
            let Some(component) = &step.component else {
                continue;
            };
            if pinned.iter().any(|(digest, _)| component.digest == *digest)
                || self.store.has_blob(&component.digest)?
            {
                continue;
            }
            pinned.push((&component.digest, &component.bytes));
        }
        let now = now_ms();
        let run_id = RunId::new_v7();
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
            trace: Some(trace),
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
            .map(|(index, step)| {
                StepRecord::pending(
                    &run_id,
                    index as u32,
                    step.definition.id.as_str(),
                    step.component_digest(),
                    step.component
                        .as_ref()
                        .map(|component| component.description.name.clone()),
                )
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
            action: AuditAction::RunStart,
            run_id: Some(run_id.clone()),
            workflow: Some(plan.definition.name.clone()),
            detail: match key {
                Some(key) => json!({"idempotency_key": key}),
                None => Value::Null,
            },
        };
        let commit = Commit {
            audit: Some(&audit),
            run: Some(&run),
            steps: steps.iter().collect(),
            blobs: contents
                .iter()
                .map(|(digest, data)| (digest.as_str(), *data))
                .chain(pinned.iter().copied())
                .collect(),
            idempotency: claim.as_ref().map(|(key, record)| (*key, record)),
            ..Commit::default()
        };
        match self.store.commit_pending(commit) {
            Ok(pending) => {
                self.metrics.run_started(&run.workflow.name);
                Ok((run, true, pending))
            }
            // Another start with the key won the race: its run is the one.
            Err(StoreError::KeyTaken(key)) => {
                let digest = &request.as_ref().expect("a key was claimed").1;
                match self.existing(&key, digest)? {
                    Some(existing) => Ok((existing, false, None)),
                    None => Err(StoreError::KeyTaken(key).into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The run an idempotency key started, if the key was used for the same
    /// request; an error if for another.
    pub(super) fn existing(
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
            .ok_or_else(|| StoreError::UnknownRun(record.run_id.to_string()))?;
        Ok(Some(run))
    }
}
