//! Test guest `describe-loop`: `describe` never returns (it spins); its
//! `run` would echo its input.
//!
//! The host must give up on it after its describe timeout and report the
//! component as unusable, and a server serving a folder where one workflow
//! uses it must serve the other workflows at once, not after that timeout.

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde_json::Value;

/// The `describe-loop` step.
pub struct DescribeLoop;

impl Step for DescribeLoop {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        let mut spins: u64 = 0;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn run(_ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
        Ok(Output::new(input.data).with_blobs(input.blobs))
    }
}

plait_sdk::export_step!(DescribeLoop);
