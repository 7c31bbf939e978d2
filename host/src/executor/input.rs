//! What a unit runs on: its expression context, its input mapping and blobs,
//! and the step cache that can answer it without running it.

use serde_json::{Map, Value, json};

use super::*;
use crate::clock::now_ms;
use crate::definition::{BlobMapping, BlobSource};
use crate::digest::{Digest, digest};
use crate::step::{Blob, Payload, StepFailure};
use crate::store::{BlobRef, CacheEntry, CacheHit, StepStatus, StoreError};

impl Scheduler<'_> {
    /// The run context expressions of step `index` see: the workflow input,
    /// the steps it may read, run metadata, and a fan-out's item.
    pub(super) fn context(&self, index: usize, item: Option<u32>) -> Value {
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

    /// The step whose `input:` a unit of step `index` is built from: a
    /// fallback runs in its step's place, on its step's input unless it
    /// says otherwise.
    fn input_source(&self, index: usize) -> usize {
        match (
            &self.plan.steps[index].definition.input,
            self.fallback_of[index],
        ) {
            (None, Some(primary)) => primary,
            _ => index,
        }
    }

    /// The `input:` mapping a unit of step `index` is built from, if any.
    pub(super) fn input_template(&self, index: usize) -> Option<&crate::definition::Template> {
        self.plan.steps[self.input_source(index)]
            .definition
            .input
            .as_ref()
    }

    /// Builds the input of a unit: its `input:` mapping (or the default),
    /// its blobs, checked against the component's input schema.
    pub(super) async fn input(&self, unit: Unit) -> Result<Payload, StepFailure> {
        let (index, item) = unit;
        let source = self.input_source(index);
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
    pub(super) fn blob_mapping(&self, index: usize) -> Result<Vec<BlobRef>, StepFailure> {
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

    /// The step cache key of a unit about to run with `payload`: its
    /// component's digest, its config and its input (JSON and blobs).
    pub(super) fn cache_key(&self, index: usize, payload: &Payload) -> String {
        let planned = &self.plan.steps[index];
        let blobs: Vec<(&str, &str, Digest)> = payload
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
        digest(key.to_string().as_bytes()).into()
    }

    /// Whether every blob is still in the store.
    pub(super) fn blobs_present(&self, blobs: &[BlobRef]) -> Result<bool, StoreError> {
        for blob in blobs {
            if self.store.blob(&blob.digest)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Completes a unit with a cached output instead of running it.
    pub(super) async fn reuse(
        &mut self,
        unit: Unit,
        key: String,
        entry: CacheEntry,
    ) -> Result<(), StoreError> {
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
        self.commit_step(index).await?;
        if item.is_some() {
            self.complete_fan_out(index).await?;
        }
        Ok(())
    }
}
