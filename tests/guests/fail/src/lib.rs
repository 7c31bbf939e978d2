//! Test guest `fail`: always fails with a `step-error` value (not a trap).
//!
//! The error's kind comes from config `kind` (`retryable` or `fatal`,
//! default `fatal`), its message from config `message` (default
//! `requested failure`), and its details are `{"attempt": n}`. With config
//! `repeat` set to N the message is repeated N times (an oversized
//! error, which the host must refuse like an oversized output). With config
//! `until_attempt` set to N, it fails only on attempts before N and
//! succeeds on attempt N and later with `{"attempt": n, "input": ...}`: a
//! transient failure. The host must retry a retryable error up to the
//! workflow's limit (the details show which attempt failed), never retry a
//! fatal one, and record the message and details it returned.

use plait_sdk::{Context, ErrorKind, Input, Output, Step, StepError, StepInfo};
use serde_json::{Value, json};

/// The `fail` step.
pub struct Fail;

impl Step for Fail {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("fail", "0.1.0")
            .description("Always fails with the error kind and message its config asks for.")
            .config("kind", "`retryable` or `fatal`; `fatal` when unset.", false)
            .config(
                "message",
                "The error message; `requested failure` when unset.",
                false,
            )
            .config(
                "repeat",
                "The message repeated this many times (an oversized error).",
                false,
            )
            .config(
                "until_attempt",
                "Succeed from this attempt on; fail on every attempt when unset.",
                false,
            )
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
        let attempt = ctx.invocation().attempt;
        if let Some(until) = ctx.config("until_attempt") {
            let until: u32 = until.parse().map_err(|_| {
                StepError::fatal(format!(
                    "config `until_attempt` must be a number, not `{until}`"
                ))
            })?;
            if attempt >= until {
                return Ok(Output::new(
                    json!({"attempt": attempt, "input": input.data}),
                ));
            }
        }
        let kind = match ctx.config("kind").as_deref() {
            None | Some("fatal") => ErrorKind::Fatal,
            Some("retryable") => ErrorKind::Retryable,
            Some(other) => {
                return Err(StepError::fatal(format!(
                    "config `kind` must be `retryable` or `fatal`, not `{other}`"
                )));
            }
        };
        let mut message = ctx
            .config("message")
            .unwrap_or_else(|| "requested failure".to_owned());
        if let Some(repeat) = ctx.config("repeat") {
            let repeat: usize = repeat.parse().map_err(|_| {
                StepError::fatal(format!("config `repeat` must be a number, not `{repeat}`"))
            })?;
            message = message.repeat(repeat);
        }
        Err(StepError::new(kind, message).with_details(json!({"attempt": attempt})))
    }
}

plait_sdk::export_step!(Fail);
