//! Test guest `noisy`: floods every output channel, then succeeds.
//!
//! It writes 2 MiB to stdout and 2 MiB to stderr, calls the host's `log`
//! 10 000 times, and returns `{"ok": true}`. The host must bound what it
//! keeps of stdout, stderr and the log (dropping and counting the excess)
//! without failing the step or growing memory without limit. Write errors
//! on stdout and stderr are ignored, so a host may also close or cap those
//! streams.

use std::io::Write;

use plait_sdk::{Context, Input, Level, Output, Step, StepError, StepInfo};
use serde_json::{Value, json};

/// Bytes written to each of stdout and stderr.
const STREAM_BYTES: usize = 2 * 1024 * 1024;

/// Bytes per written line, newline included.
const LINE_BYTES: usize = 1024;

/// Calls to the host's `log`.
const LOG_RECORDS: usize = 10_000;

/// The `noisy` step.
pub struct Noisy;

impl Step for Noisy {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("noisy", "0.1.0")
            .description("Writes 2 MiB to stdout and to stderr and logs 10 000 records.")
    }

    fn run(ctx: &Context, _input: Input<Value>) -> Result<Output<Value>, StepError> {
        let line = format!("{}\n", "x".repeat(LINE_BYTES - 1));
        let mut stdout = std::io::stdout().lock();
        let mut stderr = std::io::stderr().lock();
        for _ in 0..STREAM_BYTES / LINE_BYTES {
            // Ignored on purpose: see the crate documentation.
            let _ = stdout.write_all(line.as_bytes());
            let _ = stderr.write_all(line.as_bytes());
        }
        let _ = stdout.flush();
        let _ = stderr.flush();
        for index in 0..LOG_RECORDS {
            ctx.log(Level::Info, "noise", &[("index", &index.to_string())]);
        }
        Ok(json!({"ok": true}).into())
    }
}

plait_sdk::export_step!(Noisy);
