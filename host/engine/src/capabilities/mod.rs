//! What a running step can reach: one module per host capability.
//!
//! A step gets a fresh [`StepState`] per invocation, built from its
//! [`Sandbox`]: what its workflow granted, within the operator's policy.
//! WASI is linked so that components built with a standard toolchain
//! instantiate, but by default nothing is granted through it: no
//! directories, no environment variables, no arguments, no sockets, and
//! stdin is empty. The guest's stdout and stderr are captured, bounded,
//! into the step's log instead of the host's terminal. A grant adds exactly
//! one thing: a preopened directory (read-only unless granted read-write),
//! outbound HTTP to allow-listed hosts ([`http`]), or a secret readable
//! through `get-config`, redacted from everything the step produces
//! ([`redact`]), or a model it may run through `plait:step/inference`
//! ([`inference`]). Beyond WASI, a step sees only the `plait:step/host`
//! interface (structured logging and the configuration values its workflow
//! granted) and `plait:step/inference`, which loads granted models only.

mod host;
pub mod http;
pub mod inference;
mod limiter;
pub mod redact;
mod stdio;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::plait::step::host as host_bindings;
use crate::bindings::plait::step::inference as inference_bindings;
use crate::grants::OutboundRule;
use crate::limits::{LimitExceeded, Limits};
pub use limiter::StepLimiter;

pub use crate::logs::{
    CapturedText, LOG_MESSAGE_LIMIT, LOG_RECORD_LIMIT, LogLevel, LogRecord, StepLogs,
};
pub use stdio::{CapturedOutput, LogVolume};

/// Bytes of stdout, and separately of stderr, kept per invocation.
pub const STDIO_CAPTURE_LIMIT: usize = 64 * 1024;
/// Identifies the invocation a [`StepState`] serves, for the live log.
#[derive(Debug, Clone, Default)]
pub struct InvocationLabels {
    /// The run id.
    pub run_id: String,
    /// The step id.
    pub step_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// The attempt's W3C trace context, sent as `traceparent` on the
    /// step's outbound HTTP requests.
    pub traceparent: Option<String>,
}

/// Everything one step may reach and use, resolved from its workflow's
/// grants, the component's declarations and the operator's policy.
///
/// Its `Debug` output shows secret values as `[REDACTED]`, so a plan can be
/// logged.
#[derive(Clone, Default)]
pub struct Sandbox {
    /// Config values, secrets included, by key.
    pub config: BTreeMap<String, String>,
    /// The secret values among `config`, to redact.
    pub secrets: Vec<String>,
    /// Preopened directories.
    pub dirs: Vec<PreopenDir>,
    /// Outbound HTTP rules; empty: no network.
    pub http: Arc<Vec<OutboundRule>>,
    /// Whether outbound requests may reach non-public addresses.
    pub private_networks: bool,
    /// The step's limits.
    pub limits: Limits,
    /// Granted models: name to folder in the model store.
    pub models: BTreeMap<String, PathBuf>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redactor = redact::Redactor::new(&self.secrets);
        let config: BTreeMap<&String, String> = self
            .config
            .iter()
            .map(|(key, value)| (key, redactor.text(value)))
            .collect();
        f.debug_struct("Sandbox")
            .field("config", &config)
            .field("secrets", &self.secrets.len())
            .field("dirs", &self.dirs)
            .field("http", &self.http)
            .field("private_networks", &self.private_networks)
            .field("limits", &self.limits)
            .field("models", &self.models)
            .finish()
    }
}

impl Sandbox {
    /// A sandbox granting `config` and nothing else, with default limits.
    pub fn with_config(config: BTreeMap<String, String>) -> Sandbox {
        Sandbox {
            config,
            ..Sandbox::default()
        }
    }
}

/// A host directory shown to the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreopenDir {
    /// The host folder.
    pub host: PathBuf,
    /// The path the step sees it at.
    pub guest: String,
    /// Whether the step may change it.
    pub writable: bool,
}

/// The per-invocation state of a wasmtime `Store`.
pub struct StepState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: http::HttpHooks,
    table: ResourceTable,
    config: BTreeMap<String, String>,
    log: host::LogBuffer,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    volume: LogVolume,
    models: BTreeMap<String, PathBuf>,
    /// Counts memory and instances against the step's limits.
    pub limiter: StepLimiter,
}

/// Why a [`StepState`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not open granted directory `{}` (for `{guest}`)", host.display())]
pub struct SandboxError {
    /// The host folder.
    pub host: PathBuf,
    /// Its guest path.
    pub guest: String,
    /// What failed.
    #[source]
    pub source: wasmtime::Error,
}

impl StepState {
    /// A state granting the step exactly `config` and nothing else, with
    /// default limits.
    pub fn new(config: BTreeMap<String, String>, labels: InvocationLabels) -> StepState {
        StepState::sandboxed(&Sandbox::with_config(config), labels)
            .expect("a sandbox without directories always builds")
    }

    /// A state granting the step what `sandbox` holds.
    pub fn sandboxed(
        sandbox: &Sandbox,
        labels: InvocationLabels,
    ) -> Result<StepState, SandboxError> {
        let volume = LogVolume::new(sandbox.limits.logs);
        let stdout = CapturedOutput::new(STDIO_CAPTURE_LIMIT, volume.clone());
        let stderr = CapturedOutput::new(STDIO_CAPTURE_LIMIT, volume.clone());
        // The builder starts with nothing: no args, env, preopens, network
        // or inherited stdio. Sockets are switched off explicitly as well,
        // so that a future default cannot open them.
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for dir in &sandbox.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|source| SandboxError {
                    host: dir.host.clone(),
                    guest: dir.guest.clone(),
                    source,
                })?;
        }
        Ok(StepState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            http_hooks: http::HttpHooks::new(sandbox.http.clone(), sandbox.private_networks)
                .with_traceparent(labels.traceparent.clone()),
            table: ResourceTable::new(),
            config: sandbox.config.clone(),
            log: host::LogBuffer::new(
                labels,
                volume.clone(),
                redact::Redactor::new(&sandbox.secrets),
            ),
            stdout,
            stderr,
            volume,
            models: sandbox.models.clone(),
            limiter: StepLimiter::new(sandbox.limits.memory),
        })
    }

    /// The first limit the step went past, if any: memory (from the
    /// limiter) or log volume.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        self.limiter
            .exceeded
            .clone()
            .or_else(|| self.volume.exceeded())
    }

    /// Takes everything the step logged or printed, with the host's notes on
    /// what it denied.
    pub fn take_logs(&mut self) -> StepLogs {
        let denials = std::mem::take(
            &mut *self
                .http_hooks
                .denials
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut logs = self.log.take();
        for denial in denials {
            logs.records.push(LogRecord {
                at_ms: crate::clock::now_ms(),
                level: LogLevel::Warn,
                message: format!("[host] {denial}"),
                fields: Vec::new(),
            });
        }
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

impl WasiHttpView for StepState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Adds WASI 0.2, `wasi:http` (both deny everything unless granted),
/// `plait:step/host` and `plait:step/inference` to `linker`.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    host_bindings::add_to_linker::<StepState, HasSelf<StepState>>(linker, |state| state)?;
    inference_bindings::add_to_linker::<StepState, HasSelf<StepState>>(linker, |state| state)?;
    Ok(())
}
