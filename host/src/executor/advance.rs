//! Moving a run forward: which steps can start (needs, `if`, `for_each`),
//! which pauses end, and starting ready units within the run's, the host's
//! and the fan-out's limits.

use serde_json::Value;

use super::*;
use crate::clock::now_ms;
use crate::definition::StepKind;
use crate::step::{FailureKind, StepFailure};
use crate::store::StepStatus;

use super::transitions::{self, Wait};

impl Scheduler<'_> {
    /// Moves every step that can go on: starts steps whose needs are done
    /// (or skips them), ends sleeps and waits, and queues retries whose
    /// backoff is over.
    pub(super) async fn advance(&mut self, now: u64) -> Result<(), ExecutorError> {
        for position in 0..self.order.len() {
            let index = self.order[position];
            if self.failing.is_some() {
                return Ok(());
            }
            let kind = self.plan.steps[index].definition.kind.clone();
            match self.steps[index].status {
                StepStatus::Succeeded
                | StepStatus::Skipped
                | StepStatus::Recovered
                | StepStatus::Failed => {}
                StepStatus::Pending => {
                    if self.ready.contains(&(index, None)) || !self.can_start(index) {
                        continue;
                    }
                    self.start(index, now).await?;
                }
                StepStatus::Waiting => match kind {
                    StepKind::Sleep { .. } => {
                        self.pause((index, None), PauseKind::Sleep);
                        if transitions::pause_over(self.steps[index].wake_at_ms, now) {
                            self.succeed(index, Value::Null, Vec::new()).await?;
                        }
                    }
                    StepKind::Wait { timeout, default } => {
                        self.pause((index, None), PauseKind::Wait);
                        let id = self.steps[index].id.clone();
                        let signal = self.store.signal(&self.run.id, &id)?;
                        let wake_at_ms = self.steps[index].wake_at_ms;
                        match transitions::decide_wait(
                            signal.map(|signal| signal.data),
                            wake_at_ms,
                            default.as_ref(),
                            now,
                        ) {
                            Wait::Signalled(data) => {
                                tracing::info!(step = %id, "signal received");
                                self.succeed(index, data, Vec::new()).await?;
                            }
                            Wait::Defaulted(data) => self.succeed(index, data, Vec::new()).await?,
                            Wait::TimedOut => {
                                let waited = timeout.map(humantime::format_duration);
                                let failure = StepFailure {
                                    kind: FailureKind::Timeout,
                                    message: format!(
                                        "no signal arrived within {}; send one with `plait signal {} {id}`, or give the step a `default`",
                                        waited.map(|w| w.to_string()).unwrap_or_default(),
                                        self.run.id
                                    ),
                                    details: None,
                                };
                                self.fail_for_good(index, None, failure).await?;
                            }
                            Wait::Waits => {}
                        }
                    }
                    StepKind::Component => {
                        if transitions::pause_over(self.steps[index].wake_at_ms, now) {
                            self.ready.insert((index, None));
                        }
                    }
                },
                StepStatus::Running => {
                    if self.steps[index].items.is_empty()
                        && self.plan.steps[index].definition.for_each.is_none()
                    {
                        // Interrupted by a crash: run the attempt again.
                        if !self.in_flight.contains(&(index, None)) {
                            self.ready.insert((index, None));
                        }
                        continue;
                    }
                    for item in 0..self.steps[index].items.len() {
                        let unit = (index, Some(item as u32));
                        if self.in_flight.contains(&unit) || self.ready.contains(&unit) {
                            continue;
                        }
                        let record = &self.steps[index].items[item];
                        let go = match record.status {
                            StepStatus::Pending | StepStatus::Running => true,
                            StepStatus::Waiting => transitions::pause_over(record.wake_at_ms, now),
                            _ => false,
                        };
                        if go {
                            self.ready.insert(unit);
                        }
                    }
                    self.complete_fan_out(index).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether step `index`'s needs are done (or, for a fallback, whether
    /// its step failed).
    pub(super) fn can_start(&self, index: usize) -> bool {
        if let Some(primary) = self.fallback_of[index] {
            let record = &self.steps[primary];
            return record.status == StepStatus::Failed && record.output.is_none();
        }
        self.plan.steps[index].definition.needs.iter().all(|need| {
            let position = self.position(need.as_str());
            finished(&self.steps[position])
        })
    }

    pub(super) fn position(&self, id: &str) -> usize {
        self.steps
            .iter()
            .position(|record| record.id == id)
            .expect("validated")
    }

    /// Step `index` may start: evaluates its `if` and its `for_each`, and
    /// sets it skipped, waiting, fanned out or ready.
    pub(super) async fn start(&mut self, index: usize, now: u64) -> Result<(), ExecutorError> {
        let definition = &self.plan.steps[index].definition;
        if let Some(condition) = definition.condition.clone() {
            let shown = condition.text().to_owned();
            if crate::expressions::needs_worker(&condition) {
                self.settle().await?;
            }
            let ctx = self.context(index, None);
            match crate::expressions::run(&condition, ctx).await {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    transitions::skip(&mut self.steps[index], now);
                    tracing::info!(step = %self.steps[index].id, status = "skipped", latency_ms = 0u64, "step skipped: its `if` is false");
                    self.commit_step(index).await?;
                    return Ok(());
                }
                Ok(other) => {
                    let failure = fatal(format!(
                        "`if: {shown}` must yield true or false, but yielded {}",
                        short(&other)
                    ));
                    return Ok(self.fail_for_good(index, None, failure).await?);
                }
                Err(error) => {
                    return Ok(self
                        .fail_for_good(
                            index,
                            None,
                            fatal(format!("the step's `if` failed: {error}")),
                        )
                        .await?);
                }
            }
        }
        let definition = &self.plan.steps[index].definition;
        match &definition.kind {
            StepKind::Sleep { duration } => {
                transitions::begin_sleep(&mut self.steps[index], *duration, now);
                self.commit_step(index).await?;
            }
            StepKind::Wait { timeout, .. } => {
                transitions::begin_wait(&mut self.steps[index], *timeout, now);
                self.commit_step(index).await?;
            }
            StepKind::Component => match definition.for_each.clone() {
                None => {
                    self.ready.insert((index, None));
                }
                Some(for_each) => {
                    let shown = for_each.text().to_owned();
                    if crate::expressions::needs_worker(&for_each) {
                        self.settle().await?;
                    }
                    let context = self.context(index, None);
                    let items = match crate::expressions::run(&for_each, context).await {
                        Ok(Value::Array(items)) => items,
                        Ok(other) => {
                            let failure = fatal(format!(
                                "`for_each: {shown}` must yield an array, but yielded {}",
                                short(&other)
                            ));
                            return Ok(self.fail_for_good(index, None, failure).await?);
                        }
                        Err(error) => {
                            let failure = fatal(format!("the step's `for_each` failed: {error}"));
                            return Ok(self.fail_for_good(index, None, failure).await?);
                        }
                    };
                    let count = transitions::fan_out(&mut self.steps[index], items, now);
                    self.commit_step(index).await?;
                    self.ready
                        .extend((0..count).map(|item| (index, Some(item))));
                    // An empty fan-out succeeds with `[]` right away.
                    self.complete_fan_out(index).await?;
                }
            },
        }
        Ok(())
    }

    /// Starts ready units while the run's, the host's and the fan-out's
    /// limits allow. Returns whether a unit waits for a host slot held by
    /// another run.
    pub(super) async fn spawn_ready(&mut self) -> Result<bool, ExecutorError> {
        let mut blocked = false;
        let units: Vec<Unit> = self.ready.iter().copied().collect();
        for unit in units {
            let (index, item) = unit;
            if item.is_some() {
                let limit = self.plan.steps[index].definition.max_concurrency as usize;
                let running = self
                    .in_flight
                    .iter()
                    .filter(|(i, it)| *i == index && it.is_some())
                    .count();
                if running >= limit {
                    continue;
                }
            }
            let Ok(run_permit) = self.run_slots.clone().try_acquire_owned() else {
                break;
            };
            // The slot the run waited for in its queue, if it holds one;
            // else a free one.
            let host_permit = match self.slot.take() {
                Some(permit) => permit,
                None => match self.slots.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        blocked = true;
                        break;
                    }
                },
            };
            self.ready.remove(&unit);
            if self
                .input_template(index)
                .is_some_and(crate::expressions::template_needs_worker)
            {
                self.settle().await?;
            }
            match self.input(unit).await {
                Ok(payload) => {
                    let cache_key = self.plan.steps[index]
                        .definition
                        .cache
                        .map(|cache| (cache, self.cache_key(index, &payload)));
                    if let Some((cache, key)) = &cache_key
                        && let Some(entry) = self.store.cached(key)?
                        && cache.ttl.is_none_or(|ttl| {
                            now_ms().saturating_sub(entry.created_at_ms) < ttl.as_millis() as u64
                        })
                        && self.blobs_present(&entry.output_blobs)?
                    {
                        self.reuse(unit, key.clone(), entry).await?;
                        continue;
                    }
                    let cache_key = cache_key.map(|(_, key)| key);
                    self.invoke(unit, payload, cache_key, [run_permit, host_permit])
                        .await?
                }
                Err(failure) => {
                    // The input could not be built: a fatal failure of the
                    // unit, recorded without invoking anything.
                    self.failed(unit, 0, failure, None).await?;
                }
            }
            if self.failing.is_some() {
                break;
            }
        }
        Ok(blocked)
    }
}
