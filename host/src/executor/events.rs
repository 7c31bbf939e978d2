//! What happened to a run, as it happened: the events a progress bar or an
//! event stream follows, recorded in the run's event log and broadcast.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::clock::now_ms;
use crate::step::{Payload, StepFailure};
use crate::store::{CancelRequest, RunRecord, RunStatus, Signal, StoreError};

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
    pub run_id: RunId,
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
        status: AttemptStatus,
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
        /// What it waits for.
        kind: PauseKind,
    },
    /// More steps are done (`steps_done` says how many).
    Progress,
    /// The run ended.
    RunFinished {
        /// How it ended: `succeeded`, `failed` or `cancelled`.
        status: RunStatus,
        /// Why it failed.
        error: Option<String>,
    },
}

/// How an attempt ended, as [`RunEventKind::StepFinished`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// It returned an output that passed its checks.
    Succeeded,
    /// It failed, and the step runs again after its backoff.
    Retrying,
    /// It failed for good.
    Failed,
}

impl AttemptStatus {
    /// The name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Retrying => "retrying",
            AttemptStatus::Failed => "failed",
        }
    }
}

/// What a paused step waits for, as [`RunEventKind::Paused`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    /// The backoff before its next attempt.
    Backoff,
    /// The end of a `sleep`.
    Sleep,
    /// A signal to a `wait` step (or its timeout).
    Wait,
}

impl PauseKind {
    /// The name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::Backoff => "backoff",
            PauseKind::Sleep => "sleep",
            PauseKind::Wait => "wait",
        }
    }
}

/// Where a host's run events go: to every subscriber of all of them (an
/// event stream, the server's dispatcher), and to the watchers of one run.
///
/// A caller that waits for one run among many (`POST …/runs?wait=`) holds a
/// [`RunWatch`] rather than a subscription: with 64 such requests in
/// flight, a subscription each would wake every waiter, and clone the event
/// for it, on each event of every other run.
#[derive(Clone)]
pub(super) struct EventBus {
    all: tokio::sync::broadcast::Sender<RunEvent>,
    /// Per run, the notifiers of its watchers.
    watchers: Arc<std::sync::Mutex<HashMap<RunId, Vec<Arc<tokio::sync::Notify>>>>>,
}

impl EventBus {
    /// A bus whose subscribers may fall `capacity` events behind before
    /// they miss some.
    pub(super) fn new(capacity: usize) -> EventBus {
        EventBus {
            all: tokio::sync::broadcast::channel(capacity).0,
            watchers: Arc::default(),
        }
    }

    pub(super) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RunEvent> {
        self.all.subscribe()
    }

    pub(super) fn watch(&self, run_id: &str) -> RunWatch {
        let run_id = RunId::from(run_id);
        let notify = Arc::new(tokio::sync::Notify::new());
        self.lock()
            .entry(run_id.clone())
            .or_default()
            .push(notify.clone());
        RunWatch {
            bus: self.clone(),
            run_id,
            notify,
        }
    }

    fn send(&self, event: RunEvent) {
        if let Some(watchers) = self.lock().get(&event.run_id) {
            for watcher in watchers {
                // A permit if its watcher is not waiting right now: the
                // next wait returns at once, so no event falls between a
                // watcher's look at the run and its wait.
                watcher.notify_one();
            }
        }
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Vec<Arc<tokio::sync::Notify>>>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A watch on one run's events ([`Executor::watch_run`]): [`RunWatch::changed`]
/// returns after each of them, several at once counting as one.
pub struct RunWatch {
    bus: EventBus,
    run_id: RunId,
    notify: Arc<tokio::sync::Notify>,
}

impl RunWatch {
    /// Returns once the run has had an event since the watch was made or
    /// since the last return: the caller then looks at the run again.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        let mut watchers = self.bus.lock();
        if let Some(list) = watchers.get_mut(&self.run_id) {
            list.retain(|notify| !Arc::ptr_eq(notify, &self.notify));
            if list.is_empty() {
                watchers.remove(&self.run_id);
            }
        }
    }
}

/// Records `event` in its run's event log, then tells subscribers. A log
/// that cannot be written is reported and the run goes on: the run's own
/// records, not its events, are what a resume builds on.
pub(super) fn publish(store: &dyn RunStore, bus: &EventBus, mut event: RunEvent) {
    let value = serde_json::to_value(&event).unwrap_or(Value::Null);
    match store.append_event(&event.run_id, &value) {
        Ok(seq) => event.seq = seq,
        Err(error) => {
            tracing::warn!(target: "plait::executor", run_id = %event.run_id, error = %error, "could not record a run event")
        }
    }
    bus.send(event);
}

/// Moves what other processes left in the store's inbox into it (see
/// [`RunStore::collect_inbox`]), recording an event for each signal and
/// cancel request, so that whoever executes that run hears of it.
pub(super) fn collect_inbox(
    store: &dyn RunStore,
    bus: &EventBus,
) -> Result<Vec<Signal>, StoreError> {
    let signals = store.collect_inbox()?;
    for signal in &signals {
        let Some(run) = store.run(&signal.run_id)? else {
            continue;
        };
        let steps = store.steps(&run.id)?;
        let kind = match CancelRequest::from_signal(signal) {
            Some(cancel) => RunEventKind::CancelRequested {
                reason: cancel.reason,
            },
            None => RunEventKind::SignalReceived {
                step: signal.step_id.clone(),
            },
        };
        publish(
            store,
            bus,
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

impl Executor {
    /// Records an event of a run this executor is not executing.
    pub(super) fn note(&self, run: &RunRecord, steps_total: usize, kind: RunEventKind) {
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
}

impl Scheduler<'_> {
    /// Records an event in the run's event log and tells subscribers.
    pub(super) fn event(&self, kind: RunEventKind) {
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

    /// Opens the span of a pause of `unit` (`backoff`, `wait`, `sleep`),
    /// unless one is open; it closes when the pause ends.
    pub(super) fn pause(&mut self, unit: Unit, kind: PauseKind) {
        if self.pauses.contains_key(&unit) {
            return;
        }
        let step = self.steps[unit.0].id.clone();
        self.event(RunEventKind::Paused {
            step: step.clone(),
            item: unit.1,
            kind,
        });
        let span = tracing::info_span!(
            target: "plait::executor",
            parent: &self.span,
            "pause",
            otel.name = %format!("{} {step}", kind.as_str()),
            kind = kind.as_str(),
            step = %step,
            item = unit.1,
        );
        self.pauses.insert(unit, span);
    }

    /// Logs how the run ended (the line that closes its log file), and
    /// counts it.
    pub(super) fn ended(&self) {
        let status = self.run.status;
        self.event(RunEventKind::RunFinished {
            status,
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

    /// Counts an attempt, closes its span with its status, and logs the
    /// line every finished attempt gets.
    pub(super) fn attempt_finished(
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
        let outcome = match failure {
            None => AttemptStatus::Succeeded,
            Some(failure) if self.will_retry(index, attempt, failure) => AttemptStatus::Retrying,
            Some(_) => AttemptStatus::Failed,
        };
        let status = outcome.as_str();
        span.record("status", status);
        span.record("latency_ms", duration_ms);
        self.event(RunEventKind::StepFinished {
            step: self.steps[index].id.clone(),
            item: unit.1,
            attempt,
            status: outcome,
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
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{AttemptStatus, PauseKind, RunEvent, RunEventKind};
    use crate::store::RunStatus;

    fn wire(kind: RunEventKind) -> serde_json::Value {
        serde_json::to_value(RunEvent {
            seq: 7,
            run_id: "r".into(),
            workflow: "w".to_owned(),
            at_ms: 1,
            steps_done: 1,
            steps_total: 2,
            kind,
        })
        .unwrap()
    }

    fn event(run_id: &str) -> RunEvent {
        RunEvent {
            seq: 0,
            run_id: run_id.into(),
            workflow: "w".to_owned(),
            at_ms: 1,
            steps_done: 0,
            steps_total: 1,
            kind: RunEventKind::RunQueued,
        }
    }

    /// Whether `watch` has had an event since it last returned, without
    /// waiting.
    fn woken(watch: &super::RunWatch) -> bool {
        use std::future::Future as _;
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let changed = std::pin::pin!(watch.changed());
        changed.poll(&mut context).is_ready()
    }

    #[test]
    fn a_run_watch_wakes_for_its_own_runs_events_only_and_misses_none() {
        let bus = super::EventBus::new(4);
        let mine = bus.watch("r1");
        let also_mine = bus.watch("r1");
        let other = bus.watch("r2");
        assert!(!woken(&mine));
        // Sent while nobody waits: kept as a permit, and two events in a
        // row are one look at the run.
        bus.send(event("r1"));
        bus.send(event("r1"));
        assert!(woken(&mine));
        assert!(!woken(&mine));
        assert!(woken(&also_mine));
        assert!(!woken(&other));
        bus.send(event("r2"));
        assert!(woken(&other));
        assert!(!woken(&mine));
        // Subscribers of all events still get them.
        let mut all = bus.subscribe();
        bus.send(event("r3"));
        assert_eq!(all.try_recv().unwrap().run_id.as_str(), "r3");
        // A dropped watch leaves nothing behind.
        drop((mine, also_mine, other));
        assert!(bus.lock().is_empty());
    }

    #[test]
    fn typed_event_fields_keep_their_wire_names() {
        assert_eq!(
            wire(RunEventKind::StepFinished {
                step: "ocr".to_owned(),
                item: Some(2),
                attempt: 3,
                status: AttemptStatus::Retrying,
                latency_ms: 40,
            }),
            json!({"run_id": "r", "workflow": "w", "at_ms": 1, "steps_done": 1, "steps_total": 2,
                   "event": "step_finished", "step": "ocr", "item": 2, "attempt": 3,
                   "status": "retrying", "latency_ms": 40})
        );
        for (kind, name) in [
            (PauseKind::Backoff, "backoff"),
            (PauseKind::Sleep, "sleep"),
            (PauseKind::Wait, "wait"),
        ] {
            let event = wire(RunEventKind::Paused {
                step: "s".to_owned(),
                item: None,
                kind,
            });
            assert_eq!(event["kind"], name);
            assert_eq!(kind.as_str(), name);
        }
        for status in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            let event = wire(RunEventKind::RunFinished {
                status,
                error: None,
            });
            assert_eq!(event["event"], "run_finished");
            assert_eq!(event["status"], status.as_str());
        }
        for (status, name) in [
            (AttemptStatus::Succeeded, "succeeded"),
            (AttemptStatus::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), name);
            assert_eq!(status.as_str(), name);
        }
    }
}
