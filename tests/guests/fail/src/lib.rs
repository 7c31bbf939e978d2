//! Test guest `fail`: always fails with a `step-error` value (not a trap).
//!
//! The error's kind comes from config `kind` (`retryable` or `fatal`,
//! default `fatal`), its message from config `message` (default
//! `requested failure`), and its details are `{"attempt": n}`. The host must
//! retry a retryable error up to the workflow's limit (the details show
//! which attempt failed), never retry a fatal one, and record the message
//! and details it returned.

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
    }

    fn run(ctx: &Context, _input: Input<Value>) -> Result<Output<Value>, StepError> {
        let kind = match ctx.config("kind").as_deref() {
            None | Some("fatal") => ErrorKind::Fatal,
            Some("retryable") => ErrorKind::Retryable,
            Some(other) => {
                return Err(StepError::fatal(format!(
                    "config `kind` must be `retryable` or `fatal`, not `{other}`"
                )));
            }
        };
        let message = ctx
            .config("message")
            .unwrap_or_else(|| "requested failure".to_owned());
        Err(StepError::new(kind, message)
            .with_details(json!({"attempt": ctx.invocation().attempt})))
    }
}

plait_sdk::export_step!(Fail);
