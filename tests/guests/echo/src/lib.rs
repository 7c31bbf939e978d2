//! Test guest `echo`: returns its input document and blobs unchanged.
//!
//! The host must hand the output back byte-for-byte equivalent to the input
//! (same JSON value, same blobs with the same names, media types and bytes);
//! tests use it to check payload plumbing, persistence and chaining.

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde_json::Value;

/// The `echo` step.
pub struct Echo;

impl Step for Echo {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("echo", "0.1.0")
            .description("Returns its input document and blobs unchanged.")
    }

    fn run(_ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
        Ok(Output::new(input.data).with_blobs(input.blobs))
    }
}

plait_sdk::export_step!(Echo);
