//! The coordinator of one run: the loop that advances steps, starts ready
//! units, waits for invocations, pauses and signals, and ends the run.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::*;
use crate::capabilities::StepLogs;
use crate::clock::now_ms;
use crate::definition::StepKind;
use crate::digest::Digest;
use crate::engine::Invoked;
use crate::plan::Plan;
use crate::step::{FailureKind, StepFailure};
use crate::store::{
    CancelRequest, Commit, Fence, Lease, LogsEntry, RunRecord, RunStatus, StepRecord, StepStatus,
    StoreError,
};
use crate::telemetry::Metrics;

/// One unit of work: a step, or one item of a fan-out.
pub(super) type Unit = (usize, Option<u32>);

/// What an invocation task reports.
pub(super) struct Done {
    pub(super) unit: Unit,
    /// The step cache key, when the step's output is to be kept.
    pub(super) cache_key: Option<String>,
    pub(super) attempt: u32,
    pub(super) invoked: Invoked,
    pub(super) started_at_ms: u64,
    pub(super) duration_ms: u64,
}

/// A succeeded attempt's records that no commit has carried yet.
///
/// A step's success does not get a commit of its own: the run's next
/// commit carries it, which is the next step's `running` mark, or the run's
/// end, as soon as the loop has looked at what the success made ready. So
/// a chain of steps costs one journal sync per step, not two, and a step's
/// output is still on disk before anything that follows it starts. The
/// loop writes what is left before it waits on anything (an invocation, a
/// timer, the caller), so a success is never held while time passes.
#[derive(Default)]
pub(super) struct Unwritten {
    /// The steps whose records changed (the step, and the step a fallback
    /// recovered).
    pub(super) steps: Vec<usize>,
    /// The output's blobs, by digest.
    pub(super) blobs: Vec<(Digest, Vec<u8>)>,
    /// The attempt's logs: step index, item, attempt.
    pub(super) logs: Option<(u32, Option<u32>, u32, StepLogs)>,
}

impl Unwritten {
    pub(super) fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.blobs.is_empty() && self.logs.is_none()
    }
}

/// The coordinator of one run.
pub(super) struct Scheduler<'a> {
    pub(super) store: Arc<dyn RunStore>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) plan: &'a Plan,
    pub(super) run: RunRecord,
    pub(super) steps: Vec<StepRecord>,
    /// Per step, the steps its expressions may read (its needs,
    /// transitively; for a fallback, its step's and that step).
    pub(super) reach: Vec<Vec<usize>>,
    /// Per step, the step it is the fallback of.
    pub(super) fallback_of: Vec<Option<usize>>,
    /// Steps in an order where each comes after its needs.
    pub(super) order: Vec<usize>,
    /// Units whose `if` passed and that wait for a slot.
    pub(super) ready: BTreeSet<Unit>,
    pub(super) in_flight: HashSet<Unit>,
    pub(super) tasks: JoinSet<Done>,
    pub(super) run_slots: Arc<Semaphore>,
    /// A host slot this run waited for and got, not yet used: the next
    /// unit to start takes it. Runs that find every slot taken queue for
    /// one on the host's semaphore, which hands freed slots out first come,
    /// first served, rather than polling for one (a run could then lose
    /// every race for 200 ms polls on end: seconds of tail latency at 64
    /// runs over 8 slots).
    pub(super) slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Why the run fails, once a step failed for good: nothing new starts,
    /// what runs is let finish.
    pub(super) failing: Option<String>,
    /// Whether a record changed since the loop last looked: one more round
    /// may then start something.
    pub(super) progress: bool,
    /// The wait steps whose wait was logged.
    pub(super) announced: HashSet<usize>,
    /// The run's lease: every commit carries its token.
    pub(super) lease: Lease,
    /// When the lease was last extended.
    pub(super) renewed_at_ms: u64,
    /// This process's span of the run.
    pub(super) span: tracing::Span,
    pub(super) metrics: Arc<Metrics>,
    pub(super) events: EventBus,
    /// Whether a run that only waits goes back to the caller.
    pub(super) park: bool,
    /// Set when the host stops: nothing new starts.
    pub(super) stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The span of each attempt in flight.
    pub(super) attempt_spans: HashMap<Unit, tracing::Span>,
    /// The span of each pause (a backoff, a wait, a sleep) in progress.
    pub(super) pauses: HashMap<Unit, tracing::Span>,
    /// Units ready but not started, as last counted in the queue gauge.
    pub(super) queued: i64,
    /// When the store's inbox was last collected.
    pub(super) inbox_at_ms: u64,
    /// Steps done, as last told to subscribers.
    pub(super) steps_done: usize,
    /// What the next commit carries besides its own records. Behind a
    /// lock (never contended) because commits are made through `&self`
    /// while the records they carry are borrowed from `self.steps`.
    pub(super) unwritten: std::sync::Mutex<Unwritten>,
    /// The ticket of the commit that made the run runnable (its creation,
    /// or a resume's claim) while no awaited sync may have covered it:
    /// the run's first awaited commit covers it (the journal's log is
    /// ordered), and [`Scheduler::settle`] waits for it before anything
    /// that can take time, so a run does not wait in memory only.
    pub(super) creation: Option<u64>,
}

impl<'a> Scheduler<'a> {
    pub(super) fn new(
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
            slot: None,
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
            unwritten: std::sync::Mutex::default(),
            creation: None,
        }
    }

    /// The name step `index`'s component declares, for metrics; the step id
    /// for a built-in step.
    pub(super) fn component_name(&self, index: usize) -> String {
        match &self.plan.steps[index].component {
            Some(component) => component.description.name.clone(),
            None => self.steps[index].id.clone(),
        }
    }

    /// Whether a failed attempt of step `index` will be tried again.
    pub(super) fn will_retry(&self, index: usize, attempt: u32, failure: &StepFailure) -> bool {
        will_retry(&self.plan.steps[index].definition.retry, attempt, failure)
    }

    /// Commits under the run's lease (refused if another executor took the
    /// run over), with whatever a success left [`Unwritten`], and waits
    /// until it is durable. The wait holds no thread (see
    /// [`crate::store::commit_async`]): the commits of every run in flight
    /// reach the journal together and share its syncs.
    pub(super) async fn commit(&self, commit: Commit<'_>) -> Result<(), StoreError> {
        let ticket = self.apply(commit)?;
        match ticket {
            Some(ticket) => crate::store::durable(self.store.as_ref(), ticket).await,
            None => Ok(()),
        }
    }

    /// [`Scheduler::commit`] up to the wait: the ticket to wait for.
    fn apply(&self, commit: Commit<'_>) -> Result<Option<u64>, StoreError> {
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        if commit.logs.is_some() && unwritten.logs.is_some() {
            // One attempt's logs per commit: the unwritten success first.
            // Its ticket needs no wait of its own: the later one covers it.
            drop(unwritten);
            self.apply(Commit::default())?;
            return self.apply(commit);
        }
        let mut commit = Commit {
            fence: Some(Fence::of(&self.run.id, &self.lease)),
            ..commit
        };
        for &index in &unwritten.steps {
            let record = &self.steps[index];
            // The caller's record of the same step is the newer one.
            if !commit.steps.iter().any(|step| step.index == record.index) {
                commit.steps.push(record);
            }
        }
        commit.blobs.extend(
            unwritten
                .blobs
                .iter()
                .map(|(digest, data)| (digest.as_str(), data.as_slice())),
        );
        let logs = unwritten
            .logs
            .as_ref()
            .map(|(index, item, attempt, logs)| LogsEntry {
                run_id: &self.run.id,
                index: *index,
                item: *item,
                attempt: *attempt,
                logs,
            });
        if logs.is_some() {
            commit.logs = logs;
        }
        let ticket = self.store.commit_pending(commit)?;
        *unwritten = Unwritten::default();
        Ok(ticket)
    }

    /// Waits for the run's creation commit to be durable, if no awaited
    /// commit has covered it yet: before the run waits (for a host slot,
    /// a timer, an invocation) or evaluates an expression in a worker,
    /// which may take seconds, so that a run that was logged as started
    /// and then waits is on disk. At once when a later commit's sync
    /// covered it.
    pub(super) async fn settle(&mut self) -> Result<(), StoreError> {
        match self.creation.take() {
            Some(ticket) => crate::store::durable(self.store.as_ref(), ticket).await,
            None => Ok(()),
        }
    }

    /// Commits what a success left [`Unwritten`], if anything.
    pub(super) async fn write_unwritten(&self) -> Result<(), StoreError> {
        let empty = self
            .unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if empty {
            return Ok(());
        }
        self.commit(Commit::default()).await
    }

    /// Extends the lease when it is due.
    pub(super) fn renew_lease(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        if now.saturating_sub(self.renewed_at_ms) >= LEASE_RENEW_MS {
            self.lease = self
                .store
                .renew_lease(&self.run.id, &self.lease, LEASE_TTL_MS)?;
            self.renewed_at_ms = now;
        }
        Ok(())
    }

    pub(super) async fn commit_step(&mut self, index: usize) -> Result<(), StoreError> {
        self.progress = true;
        self.commit(Commit {
            steps: vec![&self.steps[index]],
            ..Commit::default()
        })
        .await
    }

    pub(super) async fn run(&mut self) -> Result<RunReport, ExecutorError> {
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
            if let Some(request) = self.store.cancel_request(&self.run.id)? {
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
                // Nothing new starts: a slot waited for goes back.
                self.slot = None;
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
            self.mark_waiting().await?;
            // Nothing waits with a success unwritten (see `Unwritten`),
            // nor with the run's creation not on disk.
            self.write_unwritten().await?;
            self.settle().await?;
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
            let poll = if self.waits_for_signal() {
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
                        Some(Ok(done)) => self.completed(done).await?,
                        Some(Err(error)) if error.is_panic() => {
                            // The invocation task panicked: a host bug.
                            self.failing = Some(format!("an invocation task panicked: {error}"));
                        }
                        _ => {}
                    }
                }
                permit = self.slots.clone().acquire_owned(), if blocked => {
                    // Closed only if the executor's semaphore is, which it
                    // never is; then the loop simply looks again.
                    self.slot = permit.ok();
                }
                () = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {}
            }
        }
    }

    pub(super) fn waits_for_signal(&self) -> bool {
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
    pub(super) fn parks(&self) -> bool {
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

    pub(super) fn next_wake(&self) -> Option<u64> {
        wake_times(&self.steps)
            .chain(self.run.deadline_ms)
            .chain([self.renewed_at_ms + LEASE_RENEW_MS])
            .min()
    }

    /// Records `waiting` on the run while nothing runs and something waits,
    /// and `running` again when work resumes.
    pub(super) async fn mark_waiting(&mut self) -> Result<(), StoreError> {
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
            })
            .await?;
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

    /// With nothing running: ends the run if it failed or every step is
    /// done. `None` while steps still wait or are ready.
    pub(super) async fn finish(&mut self) -> Result<Option<RunReport>, ExecutorError> {
        if let Some(error) = self.failing.clone() {
            return Ok(Some(self.conclude(RunStatus::Failed, Some(error)).await?));
        }
        // Fallbacks whose step did not fail are not needed.
        for index in 0..self.steps.len() {
            if let Some(primary) = self.fallback_of[index]
                && self.steps[index].status == StepStatus::Pending
                && finished(&self.steps[primary])
                && self.steps[primary].status != StepStatus::Failed
            {
                self.steps[index].status = StepStatus::Skipped;
                self.commit_step(index).await?;
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
                if crate::expressions::template_needs_worker(template) {
                    self.settle().await?;
                }
                match crate::expressions::evaluate("output", template, context).await {
                    Ok(output) => (output, Vec::new()),
                    Err(error) => {
                        let error = format!("the workflow's `output` mapping failed: {error}");
                        return Ok(Some(self.conclude(RunStatus::Failed, Some(error)).await?));
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
        Ok(Some(self.conclude(RunStatus::Succeeded, None).await?))
    }

    /// Ends the run with `status` (and `error`): commits it, logs the line
    /// that closes the run's log, counts it, and returns the report.
    pub(super) async fn conclude(
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
        })
        .await?;
        self.ended();
        Ok(self.report())
    }

    /// A cancel was requested: stops what runs and ends the run
    /// `cancelled`.
    pub(super) async fn cancel(
        &mut self,
        request: &CancelRequest,
    ) -> Result<RunReport, ExecutorError> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.in_flight.clear();
        self.ready.clear();
        self.pauses.clear();
        for span in self.attempt_spans.drain().map(|(_, span)| span) {
            span.record("status", "cancelled");
            span.record("otel.status_code", "ERROR");
        }
        let message = request.message();
        let changed = abandon(&mut self.steps, &message, now_ms());
        for index in changed {
            self.commit_step(index).await?;
        }
        Ok(self.conclude(RunStatus::Cancelled, Some(message)).await?)
    }

    /// The run's `timeout` passed: stops what runs and fails the run.
    pub(super) async fn time_out(&mut self) -> Result<RunReport, ExecutorError> {
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
            transitions::time_out_unit(&mut self.steps[index], item, &failure, now_ms());
            self.commit_step(index).await?;
        }
        self.failing = Some(format!(
            "the run did not finish within its timeout of {limit}"
        ));
        tracing::info!("run timed out");
        Ok(self.finish().await?.expect("a failing run finishes"))
    }

    pub(super) fn report(&self) -> RunReport {
        RunReport {
            run: self.run.clone(),
            steps: self.steps.clone(),
        }
    }
}
