//! Runs a [`Plan`] against the journal, one step after the other.
//!
//! The rule that makes runs idempotent: a step's output is committed (and
//! flushed) before the next step starts, and a step whose record says
//! `succeeded` is never invoked again; its stored output is used instead.
//! Before each attempt the step is marked `running` with its attempt count,
//! so after a crash `resume` knows the step was interrupted and invokes it
//! again with the next attempt number and the same idempotency key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::clock::now_ms;
use crate::definition::{BlobMapping, BlobSource, EvalContext};
use crate::engine::digest;
use crate::plan::Plan;
use crate::step::{Blob, FailureKind, InvocationInfo, Payload, StepFailure};
use crate::store::{
    BlobRef, Commit, RunRecord, RunStatus, RunStore, StepRecord, StepStatus, StoreError,
    WorkflowRef,
};

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
    /// Resume was asked of a run whose workflow or components changed.
    #[error("{0}")]
    Changed(String),
}

/// A run's records after the executor is done with it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run.
    pub run: RunRecord,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
}

/// Executes plans against a [`RunStore`].
#[derive(Clone)]
pub struct Executor {
    store: Arc<dyn RunStore>,
}

impl Executor {
    /// An executor writing to `store`.
    pub fn new(store: Arc<dyn RunStore>) -> Executor {
        Executor { store }
    }

    /// The journal.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Creates a run of `plan` with `input` and `blobs`, and runs it.
    pub async fn start(
        &self,
        plan: &Plan,
        input: serde_json::Value,
        blobs: Vec<Blob>,
    ) -> Result<RunReport, ExecutorError> {
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
        let now = now_ms();
        let run_id = uuid::Uuid::now_v7().to_string();
        let (input_blobs, contents) = blob_refs(&blobs);
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
            status: RunStatus::Running,
            created_at_ms: now,
            updated_at_ms: now,
            input,
            input_blobs,
            output: None,
            output_blobs: Vec::new(),
            error: None,
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
                component_digest: step.component.digest.clone(),
                started_at_ms: None,
                finished_at_ms: None,
                duration_ms: None,
                output: None,
                output_blobs: Vec::new(),
                error: None,
                fuel_consumed: None,
            })
            .collect();
        self.store.commit(Commit {
            run: Some(&run),
            steps: steps.iter().collect(),
            blobs: contents
                .iter()
                .map(|(digest, data)| (digest.as_str(), *data))
                .collect(),
            logs: None,
        })?;
        tracing::info!(run = %run.id, workflow = %run.workflow.name, "run started");
        self.execute(plan, run, steps).await
    }

    /// Continues run `run_id` from its first unfinished step. A run that
    /// already succeeded is returned as it is, without executing anything.
    pub async fn resume(&self, plan: &Plan, run_id: &str) -> Result<RunReport, ExecutorError> {
        let run = self
            .store
            .run(run_id)?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
        let steps = self.store.steps(run_id)?;
        if run.status == RunStatus::Succeeded {
            return Ok(RunReport { run, steps });
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
            if record.status != StepStatus::Succeeded
                && record.component_digest != planned.component.digest
            {
                return Err(ExecutorError::Changed(format!(
                    "the component of step `{}` (`{}`) changed since run `{run_id}` started ({} then, {} now); \
                     restore the original component to resume",
                    record.id,
                    planned.component.path.display(),
                    record.component_digest,
                    planned.component.digest
                )));
            }
        }
        let mut run = run;
        run.status = RunStatus::Running;
        run.error = None;
        tracing::info!(run = %run.id, "run resumed");
        self.execute(plan, run, steps).await
    }

    async fn execute(
        &self,
        plan: &Plan,
        mut run: RunRecord,
        mut steps: Vec<StepRecord>,
    ) -> Result<RunReport, ExecutorError> {
        let mut context =
            EvalContext::new(run.input.clone(), run.id.clone(), run.workflow.name.clone());
        let mut step_blobs: BTreeMap<String, Vec<BlobRef>> = BTreeMap::new();
        // What a step without `input:`/`blobs:` receives: the previous
        // step's output, starting with the workflow input.
        let mut previous_json = run.input.clone();
        let mut previous_blobs = run.input_blobs.clone();

        for (index, planned) in plan.steps.iter().enumerate() {
            let step_id = planned.definition.id.to_string();
            if steps[index].status == StepStatus::Succeeded {
                let output = steps[index]
                    .output
                    .clone()
                    .unwrap_or(serde_json::Value::Null);
                context.insert_step(&step_id, output.clone());
                step_blobs.insert(step_id, steps[index].output_blobs.clone());
                previous_json = output;
                previous_blobs = steps[index].output_blobs.clone();
                continue;
            }

            let input = match self.step_input(
                plan,
                index,
                &context,
                &run,
                &step_blobs,
                &previous_json,
                &previous_blobs,
            ) {
                Ok(input) => input,
                Err(failure) => {
                    let record = &mut steps[index];
                    record.status = StepStatus::Failed;
                    record.error = Some(failure.clone());
                    record.finished_at_ms = Some(now_ms());
                    return self.fail(run, steps, index, None);
                }
            };

            let record = &mut steps[index];
            record.status = StepStatus::Running;
            record.attempts += 1;
            record.started_at_ms = Some(now_ms());
            record.finished_at_ms = None;
            record.error = None;
            run.updated_at_ms = now_ms();
            self.store.commit(Commit {
                run: Some(&run),
                steps: vec![&*record],
                ..Commit::default()
            })?;

            let invocation = InvocationInfo {
                run_id: run.id.clone(),
                step_id: step_id.clone(),
                attempt: record.attempts,
                idempotency_key: InvocationInfo::idempotency_key(&run.id, &step_id),
            };
            tracing::debug!(run = %run.id, step = %step_id, attempt = invocation.attempt, "step started");
            let started = Instant::now();
            let invoked = planned
                .component
                .invoke(&invocation, &planned.sandbox, &input)
                .await;
            let (result, logs) = (invoked.result, invoked.logs);
            let record = &mut steps[index];
            record.fuel_consumed = invoked.fuel_consumed;
            record.duration_ms = Some(started.elapsed().as_millis() as u64);
            record.finished_at_ms = Some(now_ms());
            match result {
                Ok(output) => {
                    let (refs, contents) = blob_refs(&output.blobs);
                    record.status = StepStatus::Succeeded;
                    record.output = Some(output.json.clone());
                    record.output_blobs = refs.clone();
                    self.store.commit(Commit {
                        run: None,
                        steps: vec![&*record],
                        blobs: contents
                            .iter()
                            .map(|(digest, data)| (digest.as_str(), *data))
                            .collect(),
                        logs: Some((&run.id, index as u32, invocation.attempt, &logs)),
                    })?;
                    tracing::debug!(run = %run.id, step = %step_id, "step succeeded");
                    context.insert_step(&step_id, output.json.clone());
                    step_blobs.insert(step_id, refs.clone());
                    previous_json = output.json;
                    previous_blobs = refs;
                }
                Err(failure) => {
                    record.status = StepStatus::Failed;
                    record.error = Some(failure);
                    return self.fail(run, steps, index, Some((invocation.attempt, &logs)));
                }
            }
        }

        let (output, output_blobs) = match &plan.definition.output {
            Some(template) => match template.evaluate(&context) {
                Ok(output) => (output, Vec::new()),
                Err(error) => {
                    run.status = RunStatus::Failed;
                    run.error = Some(format!("the workflow's `output` mapping failed: {error}"));
                    run.updated_at_ms = now_ms();
                    self.store.commit(Commit {
                        run: Some(&run),
                        ..Commit::default()
                    })?;
                    return Ok(RunReport { run, steps });
                }
            },
            None => (previous_json, previous_blobs),
        };
        run.status = RunStatus::Succeeded;
        run.output = Some(output);
        run.output_blobs = output_blobs;
        run.updated_at_ms = now_ms();
        self.store.commit(Commit {
            run: Some(&run),
            ..Commit::default()
        })?;
        tracing::info!(run = %run.id, "run succeeded");
        Ok(RunReport { run, steps })
    }

    /// Records the failure of step `index` and of the run.
    fn fail(
        &self,
        mut run: RunRecord,
        steps: Vec<StepRecord>,
        index: usize,
        logs: Option<(u32, &crate::capabilities::StepLogs)>,
    ) -> Result<RunReport, ExecutorError> {
        let record = &steps[index];
        let failure = record
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        run.status = RunStatus::Failed;
        run.error = Some(format!("step `{}` failed: {failure}", record.id));
        run.updated_at_ms = now_ms();
        self.store.commit(Commit {
            run: Some(&run),
            steps: vec![record],
            blobs: Vec::new(),
            logs: logs.map(|(attempt, logs)| (run.id.as_str(), index as u32, attempt, logs)),
        })?;
        tracing::info!(run = %run.id, step = %record.id, "run failed");
        Ok(RunReport { run, steps })
    }

    /// Builds step `index`'s input from its mappings, or from the previous
    /// step's output where it has none. A mapping that cannot be evaluated
    /// is a fatal failure of the step, recorded without invoking it.
    #[allow(clippy::too_many_arguments)]
    fn step_input(
        &self,
        plan: &Plan,
        index: usize,
        context: &EvalContext,
        run: &RunRecord,
        step_blobs: &BTreeMap<String, Vec<BlobRef>>,
        previous_json: &serde_json::Value,
        previous_blobs: &[BlobRef],
    ) -> Result<Payload, StepFailure> {
        let definition = &plan.steps[index].definition;
        let fatal = |message: String| StepFailure {
            kind: FailureKind::Fatal,
            message,
            details: None,
        };
        let json = match &definition.input {
            Some(template) => template
                .evaluate(context)
                .map_err(|error| fatal(format!("the step's `input` mapping failed: {error}")))?,
            None => previous_json.clone(),
        };
        let source_blobs = |source: &BlobSource| -> &[BlobRef] {
            match source {
                BlobSource::WorkflowInput => &run.input_blobs,
                BlobSource::Step(id) => step_blobs
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            }
        };
        let refs: Vec<BlobRef> = match &definition.blobs {
            None => previous_blobs.to_vec(),
            Some(BlobMapping::All(source)) => source_blobs(source).to_vec(),
            Some(BlobMapping::Named(named)) => {
                let mut refs = Vec::new();
                for (name, reference) in named {
                    let found = source_blobs(&reference.source)
                        .iter()
                        .find(|blob| blob.name == reference.name)
                        .ok_or_else(|| {
                            fatal(format!(
                                "blob `{name}` maps to `{}`, which does not exist (it has: {})",
                                reference,
                                source_blobs(&reference.source)
                                    .iter()
                                    .map(|blob| blob.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })?;
                    refs.push(BlobRef {
                        name: name.clone(),
                        ..found.clone()
                    });
                }
                refs
            }
        };
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
        Ok(Payload { json, blobs })
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
