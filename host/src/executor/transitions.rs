//! The step transitions as pure functions: a step record and what happened
//! to it in, the next record out. No store, no clock, no randomness: the
//! scheduler passes `now` and the jitter, so each rule is tested alone.

use super::*;
use crate::clock::now_ms;
use crate::step::{FailureKind, StepFailure};
use crate::store::{AttemptRecord, StepRecord, StepStatus};

/// Marks every unfinished attempt, pause and item of `steps` failed with
/// `message`; returns the indexes of the records changed.
pub(super) fn abandon(steps: &mut [StepRecord], message: &str) -> Vec<usize> {
    let failure = StepFailure {
        kind: FailureKind::Fatal,
        message: message.to_owned(),
        details: None,
    };
    let mut changed = Vec::new();
    for (index, record) in steps.iter_mut().enumerate() {
        let mut touched = false;
        if matches!(record.status, StepStatus::Running | StepStatus::Waiting) {
            record.status = StepStatus::Failed;
            record.error = Some(failure.clone());
            record.finished_at_ms = Some(now_ms());
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
/// when they started to now, when this host found them; they run again
/// with the next attempt number. Adds the records changed to `changed`;
/// returns how many attempts were interrupted.
pub(super) fn record_interrupted(steps: &mut [StepRecord], changed: &mut Vec<usize>) -> usize {
    let found_at = now_ms();
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
            record.history.push(AttemptRecord {
                attempt,
                item,
                started_at_ms,
                finished_at_ms: found_at,
                error: None,
                interrupted: true,
            });
            count += 1;
        }
        let excess = record.history.len().saturating_sub(MAX_HISTORY);
        record.history.drain(..excess);
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
