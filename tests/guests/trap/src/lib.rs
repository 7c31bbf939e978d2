//! Test guest `trap`: panics in `run` with the message
//! `guest panicked on purpose`, which traps the component.
//!
//! The host must survive the trap, record the step as failed by a trap (a
//! bug in the step, distinct from a returned `step-error`), keep the panic
//! message the guest wrote to stderr, and not reuse the trapped instance.
//! `describe` works normally.

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde_json::Value;

/// The `trap` step.
pub struct Trap;

impl Step for Trap {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("trap", "0.1.0").description("Panics in run.")
    }

    fn run(_ctx: &Context, _input: Input<Value>) -> Result<Output<Value>, StepError> {
        panic!("guest panicked on purpose");
    }
}

plait_sdk::export_step!(Trap);
