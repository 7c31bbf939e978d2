//! What a running step can reach: one module per host capability.
//!
//! A step gets a fresh [`StepState`] per invocation. WASI is linked so that
//! components built with a standard toolchain instantiate, but nothing is
//! granted through it: no preopened directories, no environment variables, no
//! arguments, no sockets, and stdin is empty. The guest's stdout and stderr
//! are captured, bounded, into the step's log instead of the host's terminal.
//! Beyond WASI, a step sees only the `plait:step/host` interface
//! (`host`): structured logging and the configuration values its workflow
//! granted.

mod host;
mod stdio;

use std::collections::BTreeMap;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::engine::bindings::plait::step::host as host_bindings;

pub use host::{LogLevel, LogRecord, StepLogs};
pub use stdio::CapturedOutput;

/// Bytes of stdout, and separately of stderr, kept per invocation.
pub const STDIO_CAPTURE_LIMIT: usize = 64 * 1024;
/// Log records kept per invocation; later ones are counted and dropped.
pub const LOG_RECORD_LIMIT: usize = 1_000;
/// Longest log message kept, in bytes; longer ones are cut at a character
/// boundary and marked.
pub const LOG_MESSAGE_LIMIT: usize = 8 * 1024;

/// Identifies the invocation a [`StepState`] serves, for the live log.
#[derive(Debug, Clone, Default)]
pub struct InvocationLabels {
    /// The run id.
    pub run_id: String,
    /// The step id.
    pub step_id: String,
    /// The attempt number.
    pub attempt: u32,
}

/// The per-invocation state of a wasmtime `Store`.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    config: BTreeMap<String, String>,
    log: host::LogBuffer,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

impl StepState {
    /// A state granting the step exactly `config` and nothing else.
    pub fn new(config: BTreeMap<String, String>, labels: InvocationLabels) -> StepState {
        let stdout = CapturedOutput::new(STDIO_CAPTURE_LIMIT);
        let stderr = CapturedOutput::new(STDIO_CAPTURE_LIMIT);
        // The builder starts with nothing: no args, env, preopens, network
        // or inherited stdio. Only stdout and stderr are set, to buffers.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        StepState {
            wasi,
            table: ResourceTable::new(),
            config,
            log: host::LogBuffer::new(labels),
            stdout,
            stderr,
        }
    }

    /// Takes everything the step logged or printed.
    pub fn take_logs(&mut self) -> StepLogs {
        let mut logs = self.log.take();
        logs.stdout = self.stdout.contents();
        logs.stderr = self.stderr.contents();
        logs
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Adds WASI 0.2 (nothing granted) and `plait:step/host` to `linker`.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    host_bindings::add_to_linker::<StepState, HasSelf<StepState>>(linker, |state| state)?;
    Ok(())
}
