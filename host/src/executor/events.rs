//! What happened to a run, as it happened: the events a progress bar or an
//! event stream follows, recorded in the run's event log and broadcast.

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

/// Records `event` in its run's event log, then tells subscribers. A log
/// that cannot be written is reported and the run goes on: the run's own
/// records, not its events, are what a resume builds on.
pub(super) fn publish(
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
pub(super) fn collect_inbox(
    store: &dyn RunStore,
    sender: &tokio::sync::broadcast::Sender<RunEvent>,
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
