//! Test guest `slow-counter`: logs each invocation, can sleep, and reports
//! which attempt it is.
//!
//! Every invocation first logs `invoked` at info level with the fields
//! `step_id`, `attempt`, `run_id` and `idempotency_key`. Then, when config
//! `sleep_ms` is set, it sleeps that many milliseconds on attempt 1 only, or
//! on every attempt when config `sleep_every_attempt` is `true`. It outputs
//! `{"attempt", "step_id", "idempotency_key", "input"}` and passes its blobs
//! through. The host must count the `invoked` records to check how often a
//! step ran, must enforce its step timeout on the sleep (killing the step
//! and retrying or failing it), and must keep `idempotency_key` the same and
//! increase `attempt` across retries and resumes.

use std::thread;
use std::time::Duration;

use plait_sdk::{Context, Input, Level, Output, Step, StepError, StepInfo};
use serde_json::{Value, json};

/// The `slow-counter` step.
pub struct SlowCounter;

impl Step for SlowCounter {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("slow-counter", "0.1.0")
            .description("Logs its invocation, optionally sleeps, and reports its attempt.")
            .config("sleep_ms", "Milliseconds to sleep before returning.", false)
            .config(
                "sleep_every_attempt",
                "`true` to sleep on every attempt, not only the first.",
                false,
            )
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
        let invocation = ctx.invocation();
        let attempt = invocation.attempt.to_string();
        ctx.log(
            Level::Info,
            "invoked",
            &[
                ("step_id", &invocation.step_id),
                ("attempt", &attempt),
                ("run_id", &invocation.run_id),
                ("idempotency_key", &invocation.idempotency_key),
            ],
        );
        let sleep_ms = ctx.config_parsed::<u64>("sleep_ms")?;
        let every_attempt = ctx
            .config_parsed::<bool>("sleep_every_attempt")?
            .unwrap_or(false);
        if let Some(ms) = sleep_ms
            && (invocation.attempt == 1 || every_attempt)
        {
            thread::sleep(Duration::from_millis(ms));
        }
        let output = json!({
            "attempt": invocation.attempt,
            "step_id": invocation.step_id,
            "idempotency_key": invocation.idempotency_key,
            "input": input.data,
        });
        Ok(Output::new(output).with_blobs(input.blobs))
    }
}

plait_sdk::export_step!(SlowCounter);
