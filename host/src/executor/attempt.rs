//! One attempt of a unit: invoking its component, then recording what it
//! returned (success, a retry after backoff, or a failure for good).

use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tracing::field::Empty;

use super::*;
use crate::clock::now_ms;
use crate::definition::OnError;
use crate::step::{FailureKind, InvocationInfo, Payload, StepFailure};
use crate::store::{
    AttemptRecord, BlobRef, CacheEntry, Commit, LogsEntry, RunStatus, StepStatus, StoreError,
};
use crate::telemetry::TraceContext;

impl Scheduler<'_> {
    /// Marks the unit running with its next attempt, commits, and starts
    /// the invocation.
    pub(super) fn invoke(
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

    /// Records what an invocation returned.
    pub(super) fn completed(&mut self, done: Done) -> Result<(), StoreError> {
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
    pub(super) fn failed(
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
    pub(super) fn fail_for_good(
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
    pub(super) fn complete_fan_out(&mut self, index: usize) -> Result<(), StoreError> {
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
    pub(super) fn succeed(
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
}
