//! Test guest `stamp`: returns its input JSON object with one field added,
//! named after the step's id in the workflow, set to `true`.
//!
//! `scripts/bench-peers` chains three of these (`s1`, `s2`, `s3`), so a run's
//! output is its input plus `{"s1": true, "s2": true, "s3": true}`: the same
//! work as the DBOS and Restate workflows it is compared with. Blobs pass
//! through. An input that is not a JSON object fails the step (fatal).

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde_json::Value;

/// The `stamp` step.
pub struct Stamp;

impl Step for Stamp {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("stamp", "0.1.0")
            .description("Returns its input object with a field named after the step id added.")
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
        let Value::Object(mut object) = input.data else {
            return Err(StepError::fatal("stamp takes a JSON object as its input"));
        };
        object.insert(ctx.invocation().step_id.clone(), Value::Bool(true));
        Ok(Output::new(Value::Object(object)).with_blobs(input.blobs))
    }
}

plait_sdk::export_step!(Stamp);
