//! The step transitions, one rule at a time: no store, no engine, no clock.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::definition::{Backoff, OnError, RetryPolicy, StepId};
use crate::step::{FailureKind, StepFailure};
use crate::store::{AttemptRecord, BlobRef, StepRecord, StepStatus};

const NOW: u64 = 1_000_000;

fn record(status: StepStatus) -> StepRecord {
    StepRecord {
        status,
        ..StepRecord::pending(&"run".into(), 0, "step", "sha256:00", None)
    }
}

fn failure(kind: FailureKind) -> StepFailure {
    StepFailure {
        kind,
        message: format!("{kind} failure"),
        details: None,
    }
}

fn blob(name: &str) -> BlobRef {
    BlobRef {
        name: name.to_owned(),
        media_type: "text/plain".to_owned(),
        digest: crate::digest::digest(name.as_bytes()),
        size: 1,
    }
}

fn policy(max_attempts: u32, backoff: Backoff) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff,
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_millis(350),
        jitter: 0.0,
    }
}

fn attempt(n: u32, finished_at_ms: u64, interrupted: bool) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        item: None,
        started_at_ms: finished_at_ms - 1,
        finished_at_ms,
        error: None,
        interrupted,
    }
}

#[test]
fn a_retryable_failure_is_retried_while_attempts_remain() {
    let policy = policy(3, Backoff::Exponential);
    for kind in [
        FailureKind::Retryable,
        FailureKind::Trap,
        FailureKind::Timeout,
    ] {
        assert!(will_retry(&policy, 1, &failure(kind)), "{kind}");
        assert!(will_retry(&policy, 2, &failure(kind)), "{kind}");
        assert!(
            !will_retry(&policy, 3, &failure(kind)),
            "{kind}: no attempt left"
        );
    }
}

#[test]
fn a_fatal_or_deterministic_failure_is_never_retried() {
    let policy = policy(5, Backoff::Constant);
    for kind in [
        FailureKind::Fatal,
        FailureKind::InvalidOutput,
        FailureKind::LimitExceeded,
    ] {
        assert_eq!(
            after_failure(&policy, 1, &failure(kind), NOW, 0.5),
            AfterFailure::ForGood,
            "{kind}"
        );
    }
}

#[test]
fn an_input_that_could_not_be_built_is_not_retried() {
    // Attempt 0: the unit never ran.
    let policy = policy(5, Backoff::Constant);
    assert!(!will_retry(&policy, 0, &failure(FailureKind::Retryable)));
}

#[test]
fn the_backoff_doubles_up_to_its_ceiling_and_sets_the_wake_time() {
    let policy = policy(10, Backoff::Exponential);
    let delays: Vec<u64> = (1..=4)
        .map(
            |n| match after_failure(&policy, n, &failure(FailureKind::Retryable), NOW, 0.0) {
                AfterFailure::Retry { delay, wake_at_ms } => {
                    assert_eq!(wake_at_ms, NOW + delay.as_millis() as u64);
                    delay.as_millis() as u64
                }
                AfterFailure::ForGood => panic!("attempt {n} should be retried"),
            },
        )
        .collect();
    assert_eq!(delays, [100, 200, 350, 350]);
    let constant = policy_with_jitter(Backoff::Constant, 0.5);
    let low = after_failure(&constant, 3, &failure(FailureKind::Trap), NOW, 0.0);
    let high = after_failure(&constant, 3, &failure(FailureKind::Trap), NOW, 0.999);
    match (low, high) {
        (AfterFailure::Retry { delay: low, .. }, AfterFailure::Retry { delay: high, .. }) => {
            assert_eq!(low, Duration::from_millis(50), "half the delay is jitter");
            assert!(high > Duration::from_millis(99) && high <= Duration::from_millis(100));
        }
        other => panic!("expected two retries, got {other:?}"),
    }
}

fn policy_with_jitter(backoff: Backoff, jitter: f64) -> RetryPolicy {
    RetryPolicy {
        jitter,
        ..policy(10, backoff)
    }
}

#[test]
fn a_backoff_is_a_waiting_record_with_its_error() {
    let mut step = record(StepStatus::Running);
    back_off(&mut step, None, failure(FailureKind::Retryable), NOW + 100);
    assert_eq!(step.status, StepStatus::Waiting);
    assert_eq!(step.wake_at_ms, Some(NOW + 100));
    assert_eq!(
        step.error.as_ref().map(|e| e.kind),
        Some(FailureKind::Retryable)
    );

    let mut fan = record(StepStatus::Running);
    fan_out(&mut fan, vec![json!(1), json!(2)], NOW);
    back_off(&mut fan, Some(1), failure(FailureKind::Trap), NOW + 5);
    assert_eq!(
        fan.status,
        StepStatus::Running,
        "the step itself still runs"
    );
    assert_eq!(fan.items[1].status, StepStatus::Waiting);
    assert_eq!(fan.items[1].wake_at_ms, Some(NOW + 5));
    assert_eq!(fan.items[0].status, StepStatus::Pending);
}

#[test]
fn each_attempt_counts_up_and_clears_the_last_pause() {
    let mut step = record(StepStatus::Waiting);
    step.wake_at_ms = Some(NOW);
    step.finished_at_ms = Some(NOW - 1);
    assert_eq!(begin_attempt(&mut step, None, NOW), 1);
    assert_eq!(begin_attempt(&mut step, None, NOW + 1), 2);
    assert_eq!(step.status, StepStatus::Running);
    assert_eq!(step.started_at_ms, Some(NOW + 1));
    assert_eq!((step.wake_at_ms, step.finished_at_ms), (None, None));

    fan_out(&mut step, vec![json!("a")], NOW);
    assert_eq!(begin_attempt(&mut step, Some(0), NOW), 1);
    assert_eq!(step.items[0].status, StepStatus::Running);
}

#[test]
fn the_history_keeps_the_latest_attempts() {
    let mut step = record(StepStatus::Running);
    for n in 1..=(MAX_HISTORY as u32 + 7) {
        remember(&mut step, attempt(n, NOW + u64::from(n), false));
    }
    assert_eq!(step.history.len(), MAX_HISTORY);
    assert_eq!(step.history[0].attempt, 8);
    assert_eq!(
        step.history.last().map(|a| a.attempt),
        Some(MAX_HISTORY as u32 + 7)
    );
}

#[test]
fn on_error_fail_fails_the_run() {
    let mut step = record(StepStatus::Running);
    let failed = fail_unit(
        &mut step,
        None,
        &failure(FailureKind::Fatal),
        &OnError::Fail,
        NOW,
    );
    assert_eq!(failed, Failed::Run);
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.output, None);
    assert_eq!(step.finished_at_ms, Some(NOW));
    assert!(
        !finished(&step),
        "a final failure is not a step the run goes on from"
    );
}

#[test]
fn on_error_continue_lets_the_run_go_on_from_the_error() {
    let mut step = record(StepStatus::Waiting);
    step.wake_at_ms = Some(NOW + 10);
    let error = failure(FailureKind::Timeout);
    let failed = fail_unit(&mut step, None, &error, &OnError::Continue, NOW);
    assert_eq!(failed, Failed::Continue);
    assert_eq!(step.output, Some(json!({ "error": error })));
    assert_eq!(step.wake_at_ms, None);
    assert!(finished(&step));

    let mut fan = record(StepStatus::Running);
    fan_out(&mut fan, vec![json!(1)], NOW);
    assert_eq!(
        fail_unit(&mut fan, Some(0), &error, &OnError::Continue, NOW),
        Failed::Continue
    );
    assert_eq!(fan.items[0].output, Some(json!({ "error": error })));
    let mut strict = record(StepStatus::Running);
    fan_out(&mut strict, vec![json!(1)], NOW);
    assert_eq!(
        fail_unit(&mut strict, Some(0), &error, &OnError::Fail, NOW),
        Failed::Run
    );
    assert_eq!(strict.items[0].output, None);
}

#[test]
fn on_error_fallback_hands_over_and_a_success_recovers_the_step() {
    let mut primary = record(StepStatus::Running);
    let fallback = OnError::Fallback(StepId::new("backup").expect("a valid id"));
    let failed = fail_unit(
        &mut primary,
        None,
        &failure(FailureKind::Fatal),
        &fallback,
        NOW,
    );
    assert_eq!(failed, Failed::Fallback);
    assert_eq!(primary.output, None, "its fallback has still to run");

    let recovered = recover(&primary, json!({"from": "backup"}), vec![blob("b")]);
    assert_eq!(recovered.status, StepStatus::Recovered);
    assert_eq!(recovered.output, Some(json!({"from": "backup"})));
    assert_eq!(recovered.output_blobs, vec![blob("b")]);
    assert_eq!(
        recovered.error, primary.error,
        "the failure stays on record"
    );
    assert!(finished(&recovered));

    // A fallback that failed and continued: its step reads as failed too.
    continue_past(&mut primary);
    assert_eq!(primary.output, Some(json!({ "error": primary.error })));
}

#[test]
fn a_false_if_skips_the_step() {
    let mut step = record(StepStatus::Pending);
    skip(&mut step, NOW);
    assert_eq!(step.status, StepStatus::Skipped);
    assert_eq!(step.finished_at_ms, Some(NOW));
    assert!(finished(&step));
}

#[test]
fn a_sleep_waits_until_its_end() {
    let mut step = record(StepStatus::Pending);
    begin_sleep(&mut step, Duration::from_secs(2), NOW);
    assert_eq!(step.status, StepStatus::Waiting);
    assert_eq!(step.wake_at_ms, Some(NOW + 2_000));
    assert!(!pause_over(step.wake_at_ms, NOW + 1_999));
    assert!(pause_over(step.wake_at_ms, NOW + 2_000));
    end_pause(&mut step, Value::Null, Vec::new(), NOW + 2_005);
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(step.duration_ms, Some(2_005));
    assert_eq!(step.wake_at_ms, None);
}

#[test]
fn a_wait_ends_with_its_signal_its_default_or_a_timeout() {
    let mut step = record(StepStatus::Pending);
    begin_wait(&mut step, Some(Duration::from_secs(60)), NOW);
    let deadline = step.wake_at_ms;
    assert_eq!(deadline, Some(NOW + 60_000));
    let default = json!({"approved": false});
    assert_eq!(
        decide_wait(None, deadline, Some(&default), NOW),
        Wait::Waits
    );
    assert_eq!(
        decide_wait(
            Some(json!({"approved": true})),
            deadline,
            None,
            NOW + 90_000
        ),
        Wait::Signalled(json!({"approved": true})),
        "a signal wins even past the deadline"
    );
    assert_eq!(
        decide_wait(None, deadline, Some(&default), NOW + 60_000),
        Wait::Defaulted(default.clone())
    );
    assert_eq!(
        decide_wait(None, deadline, None, NOW + 60_000),
        Wait::TimedOut
    );

    let mut forever = record(StepStatus::Pending);
    begin_wait(&mut forever, None, NOW);
    assert_eq!(forever.wake_at_ms, None);
    assert_eq!(decide_wait(None, None, None, u64::MAX), Wait::Waits);
}

#[test]
fn a_fan_out_ends_when_every_item_is_done() {
    let mut step = record(StepStatus::Pending);
    assert_eq!(fan_out(&mut step, vec![json!("a"), json!("b")], NOW), 2);
    assert!(!complete_fan_out(&mut step, NOW));
    succeed_unit(&mut step, Some(0), json!(1), vec![blob("x")]);
    assert!(!complete_fan_out(&mut step, NOW), "item 1 is still pending");
    succeed_unit(&mut step, Some(1), json!(2), vec![blob("x")]);
    assert!(complete_fan_out(&mut step, NOW + 3));
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(step.output, Some(json!([1, 2])));
    let names: Vec<&str> = step.output_blobs.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["0/x", "1/x"]);
    assert_eq!(step.finished_at_ms, Some(NOW + 3));
    assert!(!complete_fan_out(&mut step, NOW), "it ends once");
}

#[test]
fn a_fan_out_with_continued_failures_ends_failed_with_their_errors() {
    let mut step = record(StepStatus::Pending);
    fan_out(&mut step, vec![json!(1), json!(2), json!(3)], NOW);
    succeed_unit(&mut step, Some(0), json!("ok"), Vec::new());
    for item in [1, 2] {
        fail_unit(
            &mut step,
            Some(item),
            &failure(FailureKind::Fatal),
            &OnError::Continue,
            NOW,
        );
    }
    assert!(complete_fan_out(&mut step, NOW));
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.error.as_ref().map(|e| e.message.as_str()),
        Some("2 of 3 items failed")
    );
    assert!(finished(&step), "the run goes on from it");
    let mut empty = record(StepStatus::Pending);
    fan_out(&mut empty, Vec::new(), NOW);
    assert!(complete_fan_out(&mut empty, NOW));
    assert_eq!(empty.output, Some(json!([])));
}

#[test]
fn the_run_timeout_fails_what_runs() {
    let error = failure(FailureKind::Timeout);
    let mut step = record(StepStatus::Running);
    time_out_unit(&mut step, None, &error, NOW);
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.finished_at_ms, Some(NOW));
    let mut fan = record(StepStatus::Pending);
    fan_out(&mut fan, vec![json!(1)], NOW);
    time_out_unit(&mut fan, Some(0), &error, NOW);
    assert_eq!(fan.items[0].status, StepStatus::Failed);
    assert_eq!(fan.status, StepStatus::Running);
}

#[test]
fn a_cancel_abandons_what_runs_waits_or_is_pending_in_a_fan_out() {
    let mut done = record(StepStatus::Succeeded);
    done.output = Some(json!(1));
    let mut running = record(StepStatus::Running);
    let mut waiting = record(StepStatus::Waiting);
    waiting.wake_at_ms = Some(NOW + 1);
    let pending = record(StepStatus::Pending);
    let mut fan = record(StepStatus::Pending);
    fan_out(&mut fan, vec![json!(1), json!(2)], NOW);
    succeed_unit(&mut fan, Some(0), json!("kept"), Vec::new());
    running.attempts = 1;
    let mut steps = vec![done.clone(), running, waiting, pending.clone(), fan];
    let changed = abandon(&mut steps, "cancelled by user:ana", NOW);
    assert_eq!(changed, [1, 2, 4]);
    assert_eq!(steps[0], done, "a finished step is left as it was");
    assert_eq!(steps[3], pending, "a step that never began is left pending");
    for index in [1, 2] {
        assert_eq!(steps[index].status, StepStatus::Failed);
        assert_eq!(steps[index].wake_at_ms, None);
        assert_eq!(
            steps[index].error.as_ref().map(|e| e.message.as_str()),
            Some("cancelled by user:ana")
        );
    }
    assert_eq!(steps[4].items[0].status, StepStatus::Succeeded);
    assert_eq!(steps[4].items[1].status, StepStatus::Failed);
}

#[test]
fn a_dead_hosts_attempts_are_recorded_interrupted() {
    let mut running = record(StepStatus::Running);
    running.attempts = 2;
    running.started_at_ms = Some(NOW - 50);
    let mut fan = record(StepStatus::Pending);
    fan_out(&mut fan, vec![json!(1), json!(2)], NOW);
    begin_attempt(&mut fan, Some(1), NOW);
    let never_ran = record(StepStatus::Running);
    let mut steps = vec![running, fan, never_ran];
    let mut changed = vec![1];
    assert_eq!(record_interrupted(&mut steps, &mut changed, NOW), 2);
    assert_eq!(changed, [1, 0], "each record once");
    let first = &steps[0].history[0];
    assert!(first.interrupted);
    assert_eq!((first.attempt, first.item), (2, None));
    assert_eq!((first.started_at_ms, first.finished_at_ms), (NOW - 50, NOW));
    assert_eq!(steps[1].history[0].item, Some(1));
    assert!(steps[2].history.is_empty(), "no attempt had begun");
}

#[test]
fn progress_after_a_takeover_starts_the_interruption_count_over() {
    let mut step = record(StepStatus::Running);
    assert!(!progressed_since_takeover(std::slice::from_ref(&step)));
    remember(&mut step, attempt(1, NOW, true));
    assert!(!progressed_since_takeover(std::slice::from_ref(&step)));
    remember(&mut step, attempt(2, NOW - 10, false));
    assert!(
        !progressed_since_takeover(std::slice::from_ref(&step)),
        "an attempt that ended before the takeover does not count"
    );
    remember(&mut step, attempt(3, NOW + 10, false));
    assert!(progressed_since_takeover(std::slice::from_ref(&step)));
}

#[test]
fn a_retried_run_resets_its_final_failures_only() {
    let mut failed = record(StepStatus::Failed);
    failed.attempts = 3;
    assert!(reset_for_retry(&mut failed, false));
    assert_eq!(failed.status, StepStatus::Pending);
    assert_eq!(failed.attempts, 3, "attempt counts are kept");

    let mut continued = record(StepStatus::Failed);
    continued.output = Some(json!({"error": null}));
    assert!(!reset_for_retry(&mut continued, false));
    assert_eq!(continued.status, StepStatus::Failed);

    let mut handed_over = record(StepStatus::Failed);
    assert!(
        !reset_for_retry(&mut handed_over, true),
        "its fallback runs"
    );

    let mut fan = record(StepStatus::Pending);
    fan_out(&mut fan, vec![json!(1), json!(2)], NOW);
    fail_unit(
        &mut fan,
        Some(1),
        &failure(FailureKind::Fatal),
        &OnError::Fail,
        NOW,
    );
    assert!(reset_for_retry(&mut fan, false));
    assert_eq!(fan.items[1].status, StepStatus::Pending);
    assert_eq!(fan.status, StepStatus::Running, "the fan-out goes on");
}
