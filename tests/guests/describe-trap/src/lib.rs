//! Test guest `describe-trap`: panics in `describe` with the message
//! `describe panicked on purpose`; its `run` would echo its input.
//!
//! The host must report the component as unusable when it calls `describe`
//! (validating a workflow, inspecting the component) with a clear error
//! instead of crashing or running it.

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde_json::Value;

/// The `describe-trap` step.
pub struct DescribeTrap;

impl Step for DescribeTrap {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        panic!("describe panicked on purpose");
    }

    fn run(_ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
        Ok(Output::new(input.data).with_blobs(input.blobs))
    }
}

plait_sdk::export_step!(DescribeTrap);
