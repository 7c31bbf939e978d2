//! Resuming a run: an interrupted, failed or queued run goes on from its
//! records, under a fresh lease; a run that keeps killing its host is refused.

use serde_json::json;

use super::*;
use crate::clock::now_ms;
use crate::definition::OnError;
use crate::plan::Plan;
use crate::store::{
    AuditAction, AuditRecord, Commit, Fence, Lease, RunRecord, RunStatus, StepRecord, StepStatus,
    StoreError,
};
use crate::telemetry::TraceContext;

impl Executor {
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
            return Err(ExecutorError::ResumeCancelled {
                run_id: run_id.into(),
                reason: run.error.unwrap_or_else(|| "no reason given".to_owned()),
            });
        }
        if run.workflow.digest != plan.digest {
            return Err(ExecutorError::WorkflowChanged {
                run_id: run_id.into(),
                path: run.workflow.path,
                then: run.workflow.digest,
                now: plan.digest.clone(),
            });
        }
        for (record, planned) in steps.iter().zip(&plan.steps) {
            if !finished(record) && record.component_digest != planned.component_digest() {
                return Err(ExecutorError::ComponentChanged {
                    run_id: run_id.into(),
                    step: record.id.clone(),
                    uses: planned.definition.uses.clone(),
                    then: record.component_digest.clone(),
                    now: planned.component_digest().to_owned(),
                });
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
            let fallback_pending = match &plan.steps[index].definition.on_error {
                OnError::Fallback(fallback) => plan
                    .definition
                    .steps
                    .iter()
                    .position(|step| &step.id == fallback)
                    .is_some_and(|f| steps[f].status != StepStatus::Failed),
                _ => false,
            };
            if transitions::reset_for_retry(&mut steps[index], fallback_pending) {
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
            let attempts = record_interrupted(&mut steps, &mut changed, now_ms());
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
            action: AuditAction::RunResume,
            run_id: Some(run.id.clone()),
            workflow: Some(run.workflow.name.clone()),
            detail: json!({"was": if failed_before { "failed" } else { "interrupted" }}),
        };
        // Not waited for here: see `pending` at [`Executor::execute`].
        let pending = self.store.commit_pending(Commit {
            run: Some(&run),
            steps: changed.iter().map(|&index| &steps[index]).collect(),
            fence: Some(Fence::of(run_id, &lease)),
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
        self.execute(plan, run, steps, lease, span, pending).await
    }

    /// Fails run `run`, whose host died [`RunRecord::interruptions`]
    /// times while running it, instead of resuming it again (see
    /// [`Executor::with_max_interruptions`]).
    pub(super) fn refuse_poisoned(
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
        for index in abandon(&mut steps, &message, now_ms()) {
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
            action: AuditAction::RunRefuse,
            run_id: Some(run.id.clone()),
            workflow: Some(run.workflow.name.clone()),
            detail: json!({"interruptions": run.interruptions}),
        };
        let committed = self.store.commit(Commit {
            run: Some(&run),
            steps: changed.iter().map(|&index| &steps[index]).collect(),
            fence: Some(Fence::of(&run.id, &lease)),
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
}
