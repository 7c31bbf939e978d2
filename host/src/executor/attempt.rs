//! One attempt of a unit: invoking its component, then recording what it
//! returned (success, a retry after backoff, or a failure for good).

use std::time::Instant;

use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::field::Empty;

use super::*;
use crate::clock::now_ms;
use crate::definition::OnError;
use crate::step::{FailureKind, InvocationInfo, Payload, StepFailure};
use crate::store::{AttemptRecord, BlobRef, CacheEntry, Commit, LogsEntry, RunStatus, StoreError};
use crate::telemetry::TraceContext;

use super::scheduler::Unwritten;
use super::transitions::{self, AfterFailure, Failed};

impl Scheduler<'_> {
    /// Marks the unit running with its next attempt, commits, and starts
    /// the invocation.
    pub(super) async fn invoke(
        &mut self,
        unit: Unit,
        payload: Payload,
        cache_key: Option<String>,
        permits: [OwnedSemaphorePermit; 2],
    ) -> Result<(), StoreError> {
        let (index, item) = unit;
        let now = now_ms();
        let attempt = transitions::begin_attempt(&mut self.steps[index], item, now);
        self.run.status = RunStatus::Running;
        self.run.updated_at_ms = now;
        self.commit(Commit {
            run: Some(&self.run),
            steps: vec![&self.steps[index]],
            ..Commit::default()
        })
        .await?;
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
            run_id: self.run.id.to_string(),
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
    pub(super) async fn completed(&mut self, done: Done) -> Result<(), StoreError> {
        let Done {
            unit,
            cache_key,
            attempt,
            invoked,
            started_at_ms,
            duration_ms,
        } = done;
        self.in_flight.remove(&unit);
        // One success at a time waits for the next commit.
        self.write_unwritten().await?;
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
            transitions::remember(
                &mut self.steps[index],
                AttemptRecord {
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
                },
            );
        }
        match result {
            Ok(output) => {
                let (refs, _) = blob_refs(&output.blobs);
                transitions::succeed_unit(
                    &mut self.steps[index],
                    item,
                    output.json.clone(),
                    refs.clone(),
                );
                let mut changed = vec![index];
                // A fallback's output is its step's output from now on.
                if item.is_none()
                    && let Some(primary) = self.fallback_of[index]
                {
                    let record = transitions::recover(
                        &self.steps[primary],
                        output.json.clone(),
                        refs.clone(),
                    );
                    tracing::info!(step = %record.id, "step recovered by its fallback");
                    self.steps[primary] = record;
                    changed.push(primary);
                }
                let blobs = output
                    .blobs
                    .into_iter()
                    .zip(&refs)
                    .map(|(blob, blob_ref)| (blob_ref.digest.clone(), blob.data))
                    .collect();
                let unwritten = Unwritten {
                    steps: changed,
                    blobs,
                    logs: Some((index as u32, item, attempt, logs)),
                };
                let later = unwritten.blobs.is_empty();
                match &cache_key {
                    // Carried by the run's next commit (see `Unwritten`).
                    None if later => {
                        *self.unwritten.lock().unwrap_or_else(|p| p.into_inner()) = unwritten
                    }
                    // At once when the output has blobs or a cache entry:
                    // the next step reads its input blobs from the store, as
                    // a later step with the same cache key looks it up
                    // there. The cache entry, kept for other runs, goes in
                    // the same commit as the output.
                    None => {
                        *self.unwritten.lock().unwrap_or_else(|p| p.into_inner()) = unwritten;
                        self.write_unwritten().await?;
                    }
                    Some(key) => {
                        let entry = CacheEntry {
                            output: output.json,
                            output_blobs: refs,
                            run_id: self.run.id.clone(),
                            step_id: self.steps[index].id.clone(),
                            created_at_ms: now_ms(),
                        };
                        *self.unwritten.lock().unwrap_or_else(|p| p.into_inner()) = unwritten;
                        self.commit(Commit {
                            cache: Some((key, &entry)),
                            ..Commit::default()
                        })
                        .await?;
                    }
                }
                tracing::debug!(step = %self.steps[index].id, item, "step succeeded");
                if item.is_some() {
                    self.complete_fan_out(index).await?;
                }
                Ok(())
            }
            Err(failure) => self.failed(unit, attempt, failure, Some(&logs)).await,
        }
    }

    /// A unit's attempt failed: retry it after its backoff if the failure
    /// and the policy allow, else fail it for good.
    pub(super) async fn failed(
        &mut self,
        unit: Unit,
        attempt: u32,
        failure: StepFailure,
        logs: Option<&crate::capabilities::StepLogs>,
    ) -> Result<(), StoreError> {
        let (index, item) = unit;
        let policy = &self.plan.steps[index].definition.retry;
        let after =
            transitions::after_failure(policy, attempt, &failure, now_ms(), fastrand::f64());
        let logs_entry = |run_id| {
            logs.map(|logs| LogsEntry {
                run_id,
                index: index as u32,
                item,
                attempt,
                logs,
            })
        };
        match after {
            AfterFailure::Retry { delay, wake_at_ms } => {
                self.metrics.retry(&self.component_name(index));
                self.pause(unit, PauseKind::Backoff);
                tracing::info!(
                    step = %self.steps[index].id,
                    item,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = %failure,
                    "attempt failed; retrying after backoff"
                );
                transitions::back_off(&mut self.steps[index], item, failure, wake_at_ms);
                self.commit(Commit {
                    steps: vec![&self.steps[index]],
                    logs: logs_entry(&self.run.id),
                    ..Commit::default()
                })
                .await
            }
            AfterFailure::ForGood => {
                if let Some(entry) = logs_entry(&self.run.id) {
                    self.commit(Commit {
                        logs: Some(entry),
                        ..Commit::default()
                    })
                    .await?;
                }
                self.fail_for_good(index, item, failure).await
            }
        }
    }

    /// A unit failed with no retry left: apply the step's `on_error`.
    pub(super) async fn fail_for_good(
        &mut self,
        index: usize,
        item: Option<u32>,
        failure: StepFailure,
    ) -> Result<(), StoreError> {
        self.pauses.remove(&(index, item));
        let on_error = &self.plan.steps[index].definition.on_error;
        let id = self.steps[index].id.clone();
        let failed =
            transitions::fail_unit(&mut self.steps[index], item, &failure, on_error, now_ms());
        self.commit_step(index).await?;
        if let Some(item) = item {
            if failed == Failed::Continue {
                return self.complete_fan_out(index).await;
            }
            self.failing = Some(format!("step `{id}` failed on item {item}: {failure}"));
            return Ok(());
        }
        match failed {
            Failed::Continue => {
                tracing::info!(step = %id, error = %failure, "step failed; the run goes on");
                // A fallback that failed this way leaves its step failed
                // the same way.
                if let Some(primary) = self.fallback_of[index] {
                    transitions::continue_past(&mut self.steps[primary]);
                    self.commit_step(primary).await?;
                }
            }
            Failed::Fallback => {
                if let OnError::Fallback(fallback) = on_error {
                    tracing::info!(step = %id, fallback = %fallback, error = %failure, "step failed; running its fallback");
                }
            }
            Failed::Run => {
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

    /// Ends a fan-out whose items are all done (see
    /// [`transitions::complete_fan_out`]), and commits it.
    pub(super) async fn complete_fan_out(&mut self, index: usize) -> Result<(), StoreError> {
        if transitions::complete_fan_out(&mut self.steps[index], now_ms()) {
            self.commit_step(index).await?;
        }
        Ok(())
    }

    /// Sets built-in step `index` succeeded with `output`, its pause over.
    pub(super) async fn succeed(
        &mut self,
        index: usize,
        output: Value,
        blobs: Vec<BlobRef>,
    ) -> Result<(), StoreError> {
        self.pauses.remove(&(index, None));
        transitions::end_pause(&mut self.steps[index], output, blobs, now_ms());
        self.commit_step(index).await
    }
}
