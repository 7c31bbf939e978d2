//! Signals and cancels from outside the run: delivering data to a `wait`
//! step, and stopping a run whether or not a process executes it.

use serde_json::Value;

use super::*;
use crate::clock::now_ms;
use crate::definition::StepKind;
use crate::plan::Plan;
use crate::store::{CancelRequest, Commit, Fence, RunRecord, RunStatus, Signal, StoreError};

impl Executor {
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
            return Err(ExecutorError::SignalToFinishedStep {
                run_id: run_id.into(),
                step: step_id.to_owned(),
                status: record.status.as_str(),
            });
        }
        if self.store.signal(run_id, step_id)?.is_some() {
            return Err(ExecutorError::AlreadySignalled {
                run_id: run_id.into(),
                step: step_id.to_owned(),
            });
        }
        let signal = Signal {
            run_id: run_id.into(),
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
            return Err(ExecutorError::CancelFinishedRun {
                run_id: run_id.into(),
                status: run.status.as_str(),
            });
        }
        // A request already made stands (its requester and reason); it is
        // carried out now if nobody executes the run any more: the process
        // that held it may have died with its lease, which has lapsed since.
        let (request, already) = match self.store.cancel_request(run_id)? {
            Some(request) => (request, true),
            None => {
                let request = cancel_request(run_id, reason, origin);
                let stored = request.to_signal();
                self.store.commit(Commit {
                    signal: Some(&stored),
                    audit: Some(&stored.audit()),
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
                (request, false)
            }
        };
        let lease = match self.store.acquire_lease(run_id, &self.id, LEASE_TTL_MS) {
            Ok(lease) => lease,
            Err(StoreError::LeaseHeld { .. }) if already => return Ok(Cancelled::AlreadyRequested),
            Err(StoreError::LeaseHeld { .. }) => return Ok(Cancelled::Requested),
            Err(error) => return Err(error.into()),
        };
        let mut run = run;
        let mut steps = self.store.steps(run_id)?;
        let message = request.message();
        let changed = abandon(&mut steps, &message, now_ms());
        run.status = RunStatus::Cancelled;
        run.error = Some(message);
        run.updated_at_ms = now_ms();
        let committed = self.store.commit(Commit {
            run: Some(&run),
            steps: changed.iter().map(|&index| &steps[index]).collect(),
            fence: Some(Fence::of(run_id, &lease)),
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
                status: RunStatus::Cancelled,
                error: run.error.clone(),
            },
        );
        tracing::info!(target: "plait::executor", run_id = %run.id, run_status = "cancelled", error = run.error.as_deref().unwrap_or(""), "run cancelled");
        Ok(Cancelled::Now(Box::new(RunReport { run, steps })))
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
        return Err(ExecutorError::NoSuchStep {
            workflow: plan.definition.name.clone(),
            step: step_id.to_owned(),
            waits: if waits.is_empty() {
                "none".to_owned()
            } else {
                waits.join(", ")
            },
        });
    };
    if !matches!(step.kind, StepKind::Wait { .. }) {
        return Err(ExecutorError::NotAWaitStep(step_id.to_owned()));
    }
    if run.status.is_finished() {
        return Err(ExecutorError::SignalToFinishedRun {
            run_id: run.id.clone(),
            status: run.status.as_str(),
        });
    }
    Ok(())
}

/// The request that cancels run `run_id`, on behalf of `origin`.
pub fn cancel_request(run_id: &str, reason: Option<&str>, origin: &Origin) -> CancelRequest {
    CancelRequest {
        run_id: run_id.into(),
        reason: reason.map(str::to_owned),
        requested_at_ms: now_ms(),
        requested_by: Some(origin.actor()),
    }
}
