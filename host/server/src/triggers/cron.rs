//! Cron triggers: one run per slot of a schedule.
//!
//! Each slot's run has idempotency key `cron:NAME:<slot in UTC, RFC 3339>`,
//! so a slot starts one run however often it is attempted. The store keeps
//! the last slot handled (trigger mark `cron/NAME`): when the server comes
//! back after missing slots, the newest one starts once (with `catch_up`,
//! the default) and the older ones are skipped, as a nightly job that
//! missed two nights should run once, not twice. A trigger seen for the
//! first time starts from now: it does not catch up on its own past.
//!
//! The wait for the next slot is taken in steps of at most 30 s against the
//! wall clock, so a clock that jumps (NTP, a suspended machine) is noticed.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Schedule, StartError, Starter, Trigger};
use plait::store::TriggerMark;

/// The longest single sleep: the wall clock is looked at again after it.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How long a slot waits for room in a full queue before trying again.
const BUSY_RETRY: Duration = Duration::from_secs(5);

pub use plait::policy::triggers::parse_cron as parse;

/// The newest slot of `schedule` in `(after, now]`, if any.
pub fn newest_slot(schedule: &Schedule, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let now = now.to_zoned(schedule.zone.clone());
    let slot = schedule
        .cron
        .find_previous_occurrence(&now, true)
        .ok()?
        .timestamp();
    (slot > after).then_some(slot)
}

/// The first slot of `schedule` after `after`.
pub fn next_slot(schedule: &Schedule, after: Timestamp) -> Option<Timestamp> {
    schedule
        .cron
        .find_next_occurrence(&after.to_zoned(schedule.zone.clone()), false)
        .ok()
        .map(|slot| slot.timestamp())
}

/// The idempotency key of a slot's run.
pub fn slot_key(trigger: &str, slot: Timestamp) -> String {
    format!("cron:{trigger}:{}", slot.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

/// Runs the schedule until the server stops.
pub async fn run(trigger: Trigger, schedule: Schedule, starter: Arc<Starter>) {
    let mark_key = format!("cron/{}", trigger.name);
    let now = Timestamp::now();
    let handled = match starter.store.trigger_mark(&mark_key) {
        Ok(mark) => mark
            .and_then(|mark| mark.until_ms)
            .and_then(|ms| Timestamp::from_millisecond(ms as i64).ok()),
        Err(error) => {
            tracing::error!(target: "plait::trigger", trigger = %trigger.name, error = %error, "reading the schedule's last slot failed; starting from now");
            None
        }
    };
    let mut cursor = match handled {
        Some(handled) => handled,
        None => now,
    };
    if let Some(missed) = newest_slot(&schedule, cursor, now) {
        if schedule.catch_up {
            tracing::info!(target: "plait::trigger", trigger = %trigger.name, slot = %missed, "starting the newest slot missed while the server was down");
            if !fire(&trigger, &schedule, &starter, missed).await {
                return;
            }
        } else {
            tracing::info!(target: "plait::trigger", trigger = %trigger.name, slot = %missed, "skipping slots missed while the server was down (`catch_up = false`)");
        }
    }
    if cursor < now {
        cursor = now;
    }
    save(&starter, &mark_key, &trigger, cursor);
    tracing::info!(target: "plait::trigger", trigger = %trigger.name, schedule = %schedule.text, timezone = %schedule.zone_name, next = ?next_slot(&schedule, cursor).map(|slot| slot.to_string()), "schedule armed");
    loop {
        let Some(next) = next_slot(&schedule, cursor) else {
            tracing::warn!(target: "plait::trigger", trigger = %trigger.name, schedule = %schedule.text, "the schedule has no further slot");
            return;
        };
        loop {
            let now = Timestamp::now();
            if now >= next {
                break;
            }
            let left = Duration::try_from(now.duration_until(next)).unwrap_or(Duration::ZERO);
            if !starter.sleep(left.min(MAX_SLEEP)).await {
                return;
            }
        }
        // The newest slot due: after a long stall (a suspended machine),
        // the slots in between are skipped, as at startup.
        let slot = newest_slot(&schedule, cursor, Timestamp::now()).unwrap_or(next);
        if slot != next {
            tracing::warn!(target: "plait::trigger", trigger = %trigger.name, from = %next, to = %slot, "the host fell behind the schedule; starting the newest slot only");
        }
        if !fire(&trigger, &schedule, &starter, slot).await {
            return;
        }
        cursor = slot;
        save(&starter, &mark_key, &trigger, cursor);
    }
}

/// Starts slot `slot`'s run, waiting for room in a full queue until the
/// next slot is due. False if the server stopped meanwhile.
async fn fire(trigger: &Trigger, schedule: &Schedule, starter: &Starter, slot: Timestamp) -> bool {
    let key = slot_key(&trigger.name, slot);
    let give_up = next_slot(schedule, slot);
    loop {
        match starter
            .start(trigger, trigger.input.clone(), Vec::new(), &key)
            .await
        {
            Ok((run, new)) => {
                if new {
                    tracing::info!(target: "plait::trigger", trigger = %trigger.name, slot = %slot, run_id = %run.id, "schedule started a run");
                } else {
                    tracing::info!(target: "plait::trigger", trigger = %trigger.name, slot = %slot, run_id = %run.id, "the slot's run was started before");
                }
                return true;
            }
            Err(StartError::NoRoom(refusal)) => {
                if give_up.is_some_and(|next| Timestamp::now() >= next) {
                    tracing::error!(target: "plait::trigger", trigger = %trigger.name, slot = %slot, "the queue stayed full until the next slot; this slot starts no run");
                    return true;
                }
                tracing::warn!(target: "plait::trigger", trigger = %trigger.name, slot = %slot, reason = %refusal, "no room for the slot's run yet; trying again in {BUSY_RETRY:?}");
                if !starter.sleep(BUSY_RETRY).await {
                    return false;
                }
            }
            Err(error) => {
                tracing::error!(target: "plait::trigger", trigger = %trigger.name, slot = %slot, error = %error, "the schedule could not start its run; this slot starts none");
                return true;
            }
        }
    }
}

fn save(starter: &Starter, key: &str, trigger: &Trigger, until: Timestamp) {
    let mark = TriggerMark {
        at_ms: plait::clock::now_ms(),
        until_ms: Some(until.as_millisecond().max(0) as u64),
        run_id: None,
    };
    if let Err(error) = starter.store.put_trigger_mark(key, &mark) {
        tracing::error!(target: "plait::trigger", trigger = %trigger.name, error = %error, "recording the schedule's last slot failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(text: &str, zone: &str) -> Schedule {
        Schedule {
            text: text.to_owned(),
            cron: parse(text).unwrap(),
            zone_name: zone.to_owned(),
            zone: jiff::tz::TimeZone::get(zone).unwrap(),
            catch_up: true,
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_newest_missed_slot_is_found_and_only_after_the_last_handled() {
        let daily = schedule("0 2 * * *", "UTC");
        // Down from 01:00 on the 1st to 05:00 on the 3rd: two slots missed,
        // the newest is the 3rd at 02:00.
        assert_eq!(
            newest_slot(
                &daily,
                at("2026-11-01T01:00:00Z"),
                at("2026-11-03T05:00:00Z")
            ),
            Some(at("2026-11-03T02:00:00Z"))
        );
        // The slot at 02:00 was handled: nothing missed.
        assert_eq!(
            newest_slot(
                &daily,
                at("2026-11-03T02:00:00Z"),
                at("2026-11-03T05:00:00Z")
            ),
            None
        );
        // A slot exactly now is due.
        assert_eq!(
            newest_slot(
                &daily,
                at("2026-11-03T01:00:00Z"),
                at("2026-11-03T02:00:00Z")
            ),
            Some(at("2026-11-03T02:00:00Z"))
        );
        assert_eq!(
            next_slot(&daily, at("2026-11-03T02:00:00Z")),
            Some(at("2026-11-04T02:00:00Z"))
        );
    }

    #[test]
    fn a_schedule_is_read_in_its_time_zone_across_daylight_saving() {
        let paris = schedule("0 9 * * MON-FRI", "Europe/Paris");
        // Friday 2026-10-23, summer time (UTC+2): 09:00 is 07:00 UTC.
        assert_eq!(
            next_slot(&paris, at("2026-10-23T00:00:00Z")),
            Some(at("2026-10-23T07:00:00Z"))
        );
        // After the change on Sunday 25th (UTC+1), Monday's is 08:00 UTC.
        assert_eq!(
            next_slot(&paris, at("2026-10-23T08:00:00Z")),
            Some(at("2026-10-26T08:00:00Z"))
        );
    }

    #[test]
    fn seconds_and_nicknames_parse_and_keys_name_the_slot() {
        let every_second = schedule("* * * * * *", "UTC");
        assert_eq!(
            next_slot(&every_second, at("2026-11-03T02:00:00Z")),
            Some(at("2026-11-03T02:00:01Z"))
        );
        let hourly = schedule("@hourly", "UTC");
        assert_eq!(
            next_slot(&hourly, at("2026-11-03T02:30:00Z")),
            Some(at("2026-11-03T03:00:00Z"))
        );
        assert_eq!(
            slot_key("nightly", at("2026-11-03T02:00:00Z")),
            "cron:nightly:2026-11-03T02:00:00Z"
        );
        // What docs/api.md promises: names, last day, nth weekday, nearest
        // weekday, seven fields with a year.
        for text in [
            "0 9 * * MON-FRI",
            "0 0 1 JAN *",
            "0 0 L * *",
            "0 0 * * FRI#2",
            "0 0 15W * *",
            "0 0 0 1 1 * 2030",
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
        let error = parse("every day").unwrap_err();
        assert!(error.contains("five fields"), "{error}");
    }
}
