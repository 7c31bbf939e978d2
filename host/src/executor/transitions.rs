//! The step transitions as pure functions: a step record and what happened
//! to it in, the next record out. No store, no clock, no randomness: the
//! scheduler passes `now` and the jitter's random share, commits what these
//! return, and tells the world; each rule here is tested alone
//! (`transitions/tests.rs`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::definition::{OnError, RetryPolicy};
use crate::step::{FailureKind, StepFailure};
use crate::store::{AttemptRecord, BlobRef, ItemRecord, StepRecord, StepStatus};

#[cfg(test)]
mod tests;

/// The most attempts a step record keeps in its history.
pub(super) const MAX_HISTORY: usize = 50;

/// Whether a step is done for good: succeeded, skipped, recovered, or
/// failed with an output the run went on from.
pub(super) fn finished(record: &StepRecord) -> bool {
    match record.status {
        StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Recovered => true,
        StepStatus::Failed => record.output.is_some(),
        StepStatus::Pending | StepStatus::Running | StepStatus::Waiting => false,
    }
}

/// A fatal failure with `message`.
pub(super) fn fatal(message: String) -> StepFailure {
    StepFailure {
        kind: FailureKind::Fatal,
        message,
        details: None,
    }
}

/// Whether failed attempt `attempt` (from 1; 0 when the unit's input could
/// not even be built) is tried again: the failure is retryable and the
/// policy has attempts left.
pub(super) fn will_retry(policy: &RetryPolicy, attempt: u32, failure: &StepFailure) -> bool {
    attempt > 0 && failure.kind.is_retryable() && attempt < policy.max_attempts
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum AfterFailure {
    /// Another attempt, once the backoff ends.
    Retry {
        /// The backoff.
        delay: Duration,
        /// When it ends, ms since the epoch.
        wake_at_ms: u64,
    },
    /// No attempt left: the step's `on_error` decides.
    ForGood,
}

/// Decides what follows failed attempt `attempt` at `now`; `random` in
/// `[0, 1)` draws the backoff's jitter.
pub(super) fn after_failure(
    policy: &RetryPolicy,
    attempt: u32,
    failure: &StepFailure,
    now: u64,
    random: f64,
) -> AfterFailure {
    if !will_retry(policy, attempt, failure) {
        return AfterFailure::ForGood;
    }
    let delay = policy.delay(attempt, random);
    AfterFailure::Retry {
        delay,
        wake_at_ms: now + delay.as_millis() as u64,
    }
}

/// The unit starts its next attempt at `now`: `running`, its count up one.
/// Returns the attempt's number.
pub(super) fn begin_attempt(record: &mut StepRecord, item: Option<u32>, now: u64) -> u32 {
    match item {
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
    }
}

/// Keeps `attempt` in the step's history, dropping the oldest past
/// [`MAX_HISTORY`].
pub(super) fn remember(record: &mut StepRecord, attempt: AttemptRecord) {
    record.history.push(attempt);
    let excess = record.history.len().saturating_sub(MAX_HISTORY);
    record.history.drain(..excess);
}

/// The unit succeeded with `output` and `blobs`.
pub(super) fn succeed_unit(
    record: &mut StepRecord,
    item: Option<u32>,
    output: Value,
    blobs: Vec<BlobRef>,
) {
    match item {
        None => {
            record.status = StepStatus::Succeeded;
            record.output = Some(output);
            record.output_blobs = blobs;
            record.error = None;
        }
        Some(item) => {
            let record = &mut record.items[item as usize];
            record.status = StepStatus::Succeeded;
            record.output = Some(output);
            record.output_blobs = blobs;
            record.error = None;
        }
    }
}

/// A fallback succeeded with `output` and `blobs`: its step is recovered
/// and reads as that output from now on.
pub(super) fn recover(primary: &StepRecord, output: Value, blobs: Vec<BlobRef>) -> StepRecord {
    StepRecord {
        status: StepStatus::Recovered,
        output: Some(output),
        output_blobs: blobs,
        ..primary.clone()
    }
}

/// A built-in step (a `sleep` or a `wait`) ends at `now` with `output`.
pub(super) fn end_pause(record: &mut StepRecord, output: Value, blobs: Vec<BlobRef>, now: u64) {
    record.status = StepStatus::Succeeded;
    record.output = Some(output);
    record.output_blobs = blobs;
    record.finished_at_ms = Some(now);
    record.duration_ms = record
        .started_at_ms
        .map(|started| now.saturating_sub(started));
    record.wake_at_ms = None;
}

/// The unit's attempt failed with a retryable `failure`: it waits until
/// `wake_at_ms`, then runs again.
pub(super) fn back_off(
    record: &mut StepRecord,
    item: Option<u32>,
    failure: StepFailure,
    wake_at_ms: u64,
) {
    match item {
        None => {
            record.status = StepStatus::Waiting;
            record.wake_at_ms = Some(wake_at_ms);
            record.error = Some(failure);
        }
        Some(item) => {
            let item = &mut record.items[item as usize];
            item.status = StepStatus::Waiting;
            item.wake_at_ms = Some(wake_at_ms);
            item.error = Some(failure);
        }
    }
}

/// What a failure for good does to the run, by the step's `on_error`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Failed {
    /// The run goes on: the step (or item) reads as `{"error": …}`.
    Continue,
    /// The step's fallback runs in its place.
    Fallback,
    /// The run fails.
    Run,
}

/// The unit failed with no attempt left, at `now`: failed, and what the
/// run does about it. An item fails the whole step only through the
/// fan-out's end ([`complete_fan_out`]), or the run when `on_error` is not
/// `continue`.
pub(super) fn fail_unit(
    record: &mut StepRecord,
    item: Option<u32>,
    failure: &StepFailure,
    on_error: &OnError,
    now: u64,
) -> Failed {
    let keep_going = *on_error == OnError::Continue;
    if let Some(item) = item {
        let record = &mut record.items[item as usize];
        record.status = StepStatus::Failed;
        record.error = Some(failure.clone());
        if keep_going {
            record.output = Some(json!({"error": failure}));
            return Failed::Continue;
        }
        return Failed::Run;
    }
    record.status = StepStatus::Failed;
    record.error = Some(failure.clone());
    record.finished_at_ms = Some(now);
    record.wake_at_ms = None;
    match on_error {
        OnError::Continue => {
            record.output = Some(json!({"error": failure}));
            Failed::Continue
        }
        OnError::Fallback(_) => Failed::Fallback,
        OnError::Fail => Failed::Run,
    }
}

/// A fallback failed and the run goes on: its step reads as failed the
/// same way (`{"error": …}` with the step's own error).
pub(super) fn continue_past(primary: &mut StepRecord) {
    primary.output = Some(json!({"error": primary.error}));
}

/// The step's `if` was false at `now`: skipped.
pub(super) fn skip(record: &mut StepRecord, now: u64) {
    record.status = StepStatus::Skipped;
    record.finished_at_ms = Some(now);
}

/// A `sleep` of `duration` begins at `now`.
pub(super) fn begin_sleep(record: &mut StepRecord, duration: Duration, now: u64) {
    record.status = StepStatus::Waiting;
    record.started_at_ms = Some(now);
    record.wake_at_ms = Some(now + duration.as_millis() as u64);
}

/// A `wait` for a signal begins at `now`, for at most `timeout`.
pub(super) fn begin_wait(record: &mut StepRecord, timeout: Option<Duration>, now: u64) {
    record.status = StepStatus::Waiting;
    record.started_at_ms = Some(now);
    record.wake_at_ms = timeout.map(|timeout| now + timeout.as_millis() as u64);
}

/// Whether a pause (a sleep, a backoff) that ends at `wake_at_ms` is over at
/// `now`; one with no end is.
pub(super) fn pause_over(wake_at_ms: Option<u64>, now: u64) -> bool {
    wake_at_ms.is_none_or(|wake| now >= wake)
}

/// How a waiting `wait` step stands at `now`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Wait {
    /// A signal came: the step succeeds with its data.
    Signalled(Value),
    /// The timeout passed with no signal: the step succeeds with its
    /// `default`.
    Defaulted(Value),
    /// The timeout passed with no signal and no `default`.
    TimedOut,
    /// It waits on.
    Waits,
}

/// Decides a `wait` step: a signal wins, then the timeout (`wake_at_ms`)
/// with its `default`, else it waits on.
pub(super) fn decide_wait(
    signal: Option<Value>,
    wake_at_ms: Option<u64>,
    default: Option<&Value>,
    now: u64,
) -> Wait {
    if let Some(data) = signal {
        return Wait::Signalled(data);
    }
    if wake_at_ms.is_none_or(|wake| now < wake) {
        return Wait::Waits;
    }
    match default {
        Some(default) => Wait::Defaulted(default.clone()),
        None => Wait::TimedOut,
    }
}

/// A `for_each` step fans out over `items` at `now`: `running`, each item
/// pending. Returns how many.
pub(super) fn fan_out(record: &mut StepRecord, items: Vec<Value>, now: u64) -> u32 {
    record.started_at_ms = Some(now);
    record.items = items
        .into_iter()
        .map(|value| ItemRecord {
            value,
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            output_blobs: Vec::new(),
            error: None,
            wake_at_ms: None,
            duration_ms: None,
            cache_hit: None,
        })
        .collect();
    record.status = StepStatus::Running;
    record.items.len() as u32
}

/// Ends a running fan-out whose items are all done, at `now`: its output
/// is their outputs in order, its blobs theirs under `N/NAME`; failed if
/// any item failed (the run went on from them). Returns whether it ended.
pub(super) fn complete_fan_out(record: &mut StepRecord, now: u64) -> bool {
    if record.status != StepStatus::Running
        || !record.items.iter().all(|item| {
            item.status == StepStatus::Succeeded
                || (item.status == StepStatus::Failed && item.output.is_some())
        })
    {
        return false;
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
    if failed == 0 {
        record.status = StepStatus::Succeeded;
    } else {
        record.status = StepStatus::Failed;
        record.error = Some(fatal(format!(
            "{failed} of {} items failed",
            record.items.len()
        )));
    }
    record.output = Some(Value::Array(outputs));
    record.output_blobs = blobs;
    record.finished_at_ms = Some(now);
    true
}

/// The run's timeout stopped the unit's attempt at `now`.
pub(super) fn time_out_unit(
    record: &mut StepRecord,
    item: Option<u32>,
    failure: &StepFailure,
    now: u64,
) {
    match item {
        None => {
            record.status = StepStatus::Failed;
            record.error = Some(failure.clone());
            record.finished_at_ms = Some(now);
        }
        Some(item) => {
            let item = &mut record.items[item as usize];
            item.status = StepStatus::Failed;
            item.error = Some(failure.clone());
        }
    }
}

/// A failed run is tried again: a final failure goes back to pending
/// (attempt counts kept), and so do a fan-out's failed items. A failure
/// the run went on from (`continue`), or one whose fallback still has to
/// run (`fallback_pending`), stays. Returns whether the record changed.
pub(super) fn reset_for_retry(record: &mut StepRecord, fallback_pending: bool) -> bool {
    let mut changed = false;
    if record.status == StepStatus::Failed && record.output.is_none() && !fallback_pending {
        record.status = StepStatus::Pending;
        changed = true;
    }
    if record.output.is_none() {
        for item in &mut record.items {
            if item.status == StepStatus::Failed {
                item.status = StepStatus::Pending;
                changed = true;
            }
        }
    }
    changed
}

/// Marks every unfinished attempt, pause and item of `steps` failed with
/// `message` at `now` (a cancel, a refused run); returns the indexes of
/// the records changed.
pub(super) fn abandon(steps: &mut [StepRecord], message: &str, now: u64) -> Vec<usize> {
    let failure = fatal(message.to_owned());
    let mut changed = Vec::new();
    for (index, record) in steps.iter_mut().enumerate() {
        let mut touched = false;
        if matches!(record.status, StepStatus::Running | StepStatus::Waiting) {
            record.status = StepStatus::Failed;
            record.error = Some(failure.clone());
            record.finished_at_ms = Some(now);
            record.wake_at_ms = None;
            touched = true;
        }
        for item in &mut record.items {
            if matches!(
                item.status,
                StepStatus::Running | StepStatus::Waiting | StepStatus::Pending
            ) {
                item.status = StepStatus::Failed;
                item.error = Some(failure.clone());
                item.wake_at_ms = None;
                touched = true;
            }
        }
        if touched {
            changed.push(index);
        }
    }
    changed
}

/// Records in each step's history the attempts a dead host had in flight
/// (a running step, or running items of a fan-out) as interrupted, from
/// when they started to `found_at`, when this host found them; they run
/// again with the next attempt number. Adds the records changed to
/// `changed`; returns how many attempts were interrupted.
pub(super) fn record_interrupted(
    steps: &mut [StepRecord],
    changed: &mut Vec<usize>,
    found_at: u64,
) -> usize {
    let mut count = 0;
    for (index, record) in steps.iter_mut().enumerate() {
        let mut interrupted = Vec::new();
        if record.status == StepStatus::Running && record.items.is_empty() && record.attempts > 0 {
            interrupted.push((None, record.attempts));
        }
        for (item, state) in record.items.iter().enumerate() {
            if state.status == StepStatus::Running && state.attempts > 0 {
                interrupted.push((Some(item as u32), state.attempts));
            }
        }
        if interrupted.is_empty() {
            continue;
        }
        let started_at_ms = record.started_at_ms.unwrap_or(found_at);
        for (item, attempt) in interrupted {
            remember(
                record,
                AttemptRecord {
                    attempt,
                    item,
                    started_at_ms,
                    finished_at_ms: found_at,
                    error: None,
                    interrupted: true,
                },
            );
            count += 1;
        }
        if !changed.contains(&index) {
            changed.push(index);
        }
    }
    count
}

/// Whether an attempt finished (succeeded or failed) after the latest
/// attempt a host was found to have died in.
pub(super) fn progressed_since_takeover(steps: &[StepRecord]) -> bool {
    let history = || steps.iter().flat_map(|step| step.history.iter());
    let Some(takeover) = history()
        .filter(|attempt| attempt.interrupted)
        .map(|attempt| attempt.finished_at_ms)
        .max()
    else {
        return false;
    };
    history().any(|attempt| !attempt.interrupted && attempt.finished_at_ms > takeover)
}
