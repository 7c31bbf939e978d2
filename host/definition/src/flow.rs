//! How steps are ordered and what happens when they fail: the validated
//! forms of `needs`, `retry`, `on_error` and the built-in step kinds.

use std::time::Duration;

use serde_json::Value;

use super::StepId;

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Runs its component (`uses:` or a `type:` shorthand for one).
    Component,
    /// `type: wait`: pauses until a signal arrives for the step
    /// (`plait signal RUN STEP`), whose data becomes the step's output.
    Wait {
        /// How long to wait; `None` waits for ever.
        timeout: Option<Duration>,
        /// The output when the timeout passes; without one, the step fails
        /// with a `timeout` error.
        default: Option<Value>,
    },
    /// `type: sleep`: pauses for `duration`, then outputs `null`.
    Sleep {
        /// How long.
        duration: Duration,
    },
}

impl StepKind {
    /// The name used in messages and records: `component`, `wait`, `sleep`.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Component => "component",
            StepKind::Wait { .. } => "wait",
            StepKind::Sleep { .. } => "sleep",
        }
    }
}

/// `cache:` on a step: reuse a committed output when the same component
/// (by digest) with the same config receives the same input, across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCache {
    /// How long an entry may be reused; `None`: for ever.
    pub ttl: Option<Duration>,
}

/// What a step's failure does to the run (`on_error:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnError {
    /// The run fails (the default).
    #[default]
    Fail,
    /// The run goes on; the step's output is `{"error": {...}}` and its
    /// status `failed`, which dependents can test.
    Continue,
    /// Step `0` runs in its place, with `.error` set; its output becomes
    /// this step's output.
    Fallback(StepId),
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    /// `initial_interval` every time.
    Constant,
    /// `initial_interval`, then doubled each attempt, up to `max_interval`.
    #[default]
    Exponential,
}

/// `retry:` as written on the workflow or a step: each field optional, a
/// step's over the workflow's over the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: Option<u32>,
    /// How the delay grows.
    pub backoff: Option<Backoff>,
    /// The delay before the second attempt.
    pub initial_interval: Option<Duration>,
    /// The longest delay.
    pub max_interval: Option<Duration>,
    /// The fraction of each delay that is random (0: none, 1: all of it).
    pub jitter: Option<f64>,
}

impl RetrySettings {
    /// `self`'s fields over `base`'s.
    #[must_use]
    pub fn over(self, base: RetrySettings) -> RetrySettings {
        RetrySettings {
            max_attempts: self.max_attempts.or(base.max_attempts),
            backoff: self.backoff.or(base.backoff),
            initial_interval: self.initial_interval.or(base.initial_interval),
            max_interval: self.max_interval.or(base.max_interval),
            jitter: self.jitter.or(base.jitter),
        }
    }

    /// The policy, with defaults for what is not set.
    #[must_use]
    pub fn resolve(self) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        let initial_interval = self.initial_interval.unwrap_or(defaults.initial_interval);
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            backoff: self.backoff.unwrap_or(defaults.backoff),
            initial_interval,
            max_interval: self
                .max_interval
                .unwrap_or(defaults.max_interval)
                .max(initial_interval),
            jitter: self.jitter.unwrap_or(defaults.jitter),
        }
    }
}

/// When and how often a failed attempt is tried again. Only retryable
/// failures (a `retryable` step error, a trap, a timeout) are; a `fatal`
/// error or a deterministic limit never is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The delay before the second attempt.
    pub initial_interval: Duration,
    /// The longest delay.
    pub max_interval: Duration,
    /// The fraction of each delay that is random.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// One attempt; if retries are turned on by `max_attempts`, 1 s doubling
    /// up to 1 min, no jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1 for the first), before
    /// jitter.
    #[must_use]
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let delay = match self.backoff {
            Backoff::Constant => self.initial_interval,
            Backoff::Exponential => {
                let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
                self.initial_interval.saturating_mul(factor)
            }
        };
        delay.min(self.max_interval)
    }

    /// The delay after failed attempt `attempt`, with jitter: the jittered
    /// fraction of the delay is replaced by a random share of it (`random`
    /// in `[0, 1)`), so retries of many runs do not arrive together.
    #[must_use]
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter + jitter * random.clamp(0.0, 1.0))
    }
}

/// The graph's sinks: the indexes of the steps no other step needs, in
/// file order, fallbacks left out (a fallback's output is its step's).
/// Without `output:`, a workflow's output is its one sink's.
#[must_use]
pub fn sinks(steps: &[super::StepDefinition]) -> Vec<usize> {
    (0..steps.len())
        .filter(|&index| {
            let step = &steps[index];
            step.fallback_of.is_none()
                && !steps
                    .iter()
                    .any(|other| other.fallback_of.is_none() && other.needs.contains(&step.id))
        })
        .collect()
}

impl super::Definition {
    /// The step whose output (and blobs) the run outputs when the workflow
    /// has no `output:`: its one sink, the step no other step needs.
    /// Validation refuses a workflow without `output:` that has several.
    #[must_use]
    pub fn output_step(&self) -> usize {
        sinks(&self.steps)
            .last()
            .copied()
            .unwrap_or(self.steps.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let policy = RetrySettings {
            max_attempts: Some(5),
            initial_interval: Some(Duration::from_millis(100)),
            max_interval: Some(Duration::from_millis(350)),
            ..RetrySettings::default()
        }
        .resolve();
        let delays: Vec<u128> = (1..=4).map(|n| policy.delay(n, 0.5).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        let constant = RetryPolicy {
            backoff: Backoff::Constant,
            ..policy
        };
        assert_eq!(constant.delay(4, 0.0), Duration::from_millis(100));
        let jittered = RetryPolicy {
            jitter: 0.5,
            ..policy
        };
        assert_eq!(jittered.delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(jittered.delay(1, 1.0), Duration::from_millis(100));
    }

    #[test]
    fn step_settings_override_the_workflow_field_by_field() {
        let workflow = RetrySettings {
            max_attempts: Some(3),
            jitter: Some(0.2),
            ..RetrySettings::default()
        };
        let step = RetrySettings {
            max_attempts: Some(5),
            ..RetrySettings::default()
        };
        let policy = step.over(workflow).resolve();
        assert_eq!(policy.max_attempts, 5);
        assert_eq!(policy.jitter, 0.2);
        assert_eq!(policy.initial_interval, Duration::from_secs(1));
    }
}
