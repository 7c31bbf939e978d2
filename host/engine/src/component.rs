//! Loading a component: recognising what the bytes are, compiling (or
//! fetching from the cache), checking the world, and calling it.

use crate::digest::{Digest, digest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::{Component, types::ComponentExtern};

use super::Engine;
use super::bindings::{StepPre, plait::step::types as wit};
use crate::capabilities::redact::Redactor;
use crate::capabilities::{InvocationLabels, Sandbox, StepLogs, StepState};
use crate::limits::{Limit, LimitExceeded};
use crate::step::{Blob, FailureKind, InvocationInfo, Payload, StepFailure};

/// How long `describe()` may take, instantiation included. It only
/// returns constants; a component that spins here is broken or hostile.
pub const DESCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one invocation produced.
#[derive(Debug)]
pub struct Invoked {
    /// The output, or why there is none.
    pub result: Result<Payload, StepFailure>,
    /// Everything the step logged or printed, secrets redacted.
    pub logs: StepLogs,
    /// Fuel the invocation consumed, when the engine meters fuel.
    pub fuel_consumed: Option<u64>,
    /// How long instantiating the component took, when it got that far.
    pub instantiation: Option<std::time::Duration>,
}

/// The world every step implements.
pub const STEP_WORLD: &str = "plait:step/step@0.2.0";

/// Why a file could not be loaded as a Plait step.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The file could not be read.
    #[error("could not read component `{path}`")]
    Read {
        /// The component path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error(
        "`{path}` is not a WebAssembly file: it does not start with the `\\0asm` magic bytes; \
         point `uses` at a `.wasm` component built for wasm32-wasip2"
    )]
    NotWasm {
        /// The component path.
        path: PathBuf,
    },
    /// A core module where a component was expected.
    #[error(
        "`{path}` is a core WebAssembly module, not a component; build the step for the \
         `wasm32-wasip2` target (`cargo build --target wasm32-wasip2`) or wrap the module \
         with `wasm-tools component new`"
    )]
    CoreModule {
        /// The component path.
        path: PathBuf,
    },
    /// The bytes start like WebAssembly but do not compile.
    #[error("`{path}` is not a valid WebAssembly component (is it truncated or corrupt?)")]
    Invalid {
        /// The component path.
        path: PathBuf,
        /// What wasmtime found.
        #[source]
        source: wasmtime::Error,
    },
    /// The component needs an import the host does not offer.
    #[error(
        "`{path}` imports something this host does not provide; a step may import only \
         `plait:step/host@0.2.0`, `plait:step/inference@0.2.0` and WASI 0.2 interfaces \
         (a step built against an older `plait:step` must be rebuilt with this SDK)"
    )]
    MissingImport {
        /// The component path.
        path: PathBuf,
        /// wasmtime's account of the unsatisfied import.
        #[source]
        source: wasmtime::Error,
    },
    /// No code compiled ahead of time for this host, and no compiler.
    #[error(
        "`{path}` has no code compiled for this host (`{code_key}`), and this plait has no \
         compiler (an edge build, without the `compiler` feature); compile its bundle for this \
         target on a machine with a full plait (`plait bundle compile BUNDLE --target {target}`), \
         sign it, and install it here",
        target = super::HOST_TARGET
    )]
    NotPrecompiled {
        /// The component path.
        path: PathBuf,
        /// The key of the code this host runs.
        code_key: String,
    },
    /// The component is for some other world.
    #[error(
        "`{path}` does not implement the `{STEP_WORLD}` world: it exports {exports}; \
         a step exports `describe` and `run` (see wit/step.wit)"
    )]
    WrongWorld {
        /// The component path.
        path: PathBuf,
        /// What it exports instead, formatted for the message.
        exports: String,
    },
    /// `describe` and `run` exist but with other signatures.
    #[error(
        "`{path}` exports `describe` and `run`, but not with the signatures of `{STEP_WORLD}`; \
         rebuild it against this version of wit/step.wit"
    )]
    WrongSignature {
        /// The component path.
        path: PathBuf,
        /// wasmtime's type-check failure.
        #[source]
        source: wasmtime::Error,
    },
    /// Calling `describe` failed.
    #[error("`describe()` of `{path}` failed: {reason}")]
    Describe {
        /// The component path.
        path: PathBuf,
        /// The trap, with what the guest wrote to stderr.
        reason: String,
    },
    /// `describe` returned something unusable.
    #[error("`describe()` of `{path}` returned an invalid description: {problem}")]
    BadDescription {
        /// The component path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// A step's self-description, as returned by `describe()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDescription {
    /// The step's name.
    pub name: String,
    /// The step's version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its input, if declared.
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of its output, if declared.
    pub output_schema: Option<serde_json::Value>,
    /// What it needs from the host.
    pub grants: Vec<Grant>,
}

/// One thing a step needs from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Grant {
    /// A config value.
    Config {
        /// Its key.
        key: String,
        /// What it means.
        description: String,
        /// Whether the step cannot run without it.
        required: bool,
    },
    /// A secret.
    Secret {
        /// Its name.
        name: String,
    },
    /// A directory.
    Directory {
        /// The path the guest expects.
        path: String,
    },
    /// Outbound HTTP to a host.
    OutboundHttp {
        /// `scheme://host[:port]`.
        url: String,
    },
    /// A model run through `plait:step/inference`.
    Model {
        /// Its name in the model store.
        name: String,
    },
}

/// A compiled, checked step component, ready to be instantiated many times.
pub struct LoadedComponent {
    engine: Engine,
    pre: StepPre<StepState>,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// `sha256:<hex>` of its bytes.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes, as loaded: what a run pins in the journal's blob store,
    /// so that the run executes exactly what was checked here, whatever
    /// happens to the file afterwards (never read a second time).
    pub bytes: Arc<[u8]>,
    /// What `describe()` returned.
    pub description: StepDescription,
    /// The names of its imports.
    pub imports: Vec<String>,
    /// The names of its exports.
    pub exports: Vec<String>,
    /// Whether it came from the compiled-component cache.
    pub from_cache: bool,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Compiles a component no code was found for, and caches the code.
    #[cfg(feature = "compiler")]
    fn compile(
        &self,
        path: &Path,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, ComponentError> {
        let component =
            Component::new(self.wasmtime(), bytes).map_err(|source| ComponentError::Invalid {
                path: path.to_owned(),
                source,
            })?;
        if let Some(cache) = &self.inner.cache {
            cache.store(digest, &component);
        }
        Ok(component)
    }

    /// Without a compiler, a component with no code compiled ahead of time
    /// cannot run.
    #[cfg(not(feature = "compiler"))]
    fn compile(
        &self,
        path: &Path,
        _digest: &str,
        _bytes: &[u8],
    ) -> Result<Component, ComponentError> {
        Err(ComponentError::NotPrecompiled {
            path: path.to_owned(),
            code_key: self.code_key().to_owned(),
        })
    }

    /// Reads, compiles and checks the component at `path`.
    pub async fn load_component(
        &self,
        path: &Path,
    ) -> Result<Arc<LoadedComponent>, ComponentError> {
        let bytes = crate::files::read(path, crate::files::Kind::Component).map_err(|source| {
            ComponentError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        self.load_component_bytes(path, &bytes).await
    }

    /// Compiles and checks `bytes`; `path` is used in messages.
    pub async fn load_component_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Arc<LoadedComponent>, ComponentError> {
        let path = path.to_owned();
        match wasm_layer(bytes) {
            None => return Err(ComponentError::NotWasm { path }),
            Some(Layer::Core) => return Err(ComponentError::CoreModule { path }),
            Some(Layer::Component) => {}
        }
        let digest = digest(bytes);
        let engine = self.wasmtime();
        let cached = self.imported(&digest).or_else(|| {
            self.inner
                .cache
                .as_ref()
                .and_then(|c| c.load(engine, &digest))
        });
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => self.compile(&path, &digest, bytes)?,
        };

        let component_type = component.component_type();
        let imports: Vec<String> = component_type
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<(String, ComponentExtern<'_>)> = component_type
            .exports(engine)
            .map(|(name, item)| (name.to_owned(), item))
            .collect();
        let has_export = |name: &str| exports.iter().any(|(export, _)| export == name);
        if !has_export("describe") || !has_export("run") {
            let listed = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports
                    .iter()
                    .map(|(name, _)| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ComponentError::WrongWorld {
                path,
                exports: listed,
            });
        }
        let instance_pre = self
            .linker()
            .instantiate_pre(&component)
            .map_err(|source| ComponentError::MissingImport {
                path: path.clone(),
                source,
            })?;
        let pre = StepPre::new(instance_pre).map_err(|source| ComponentError::WrongSignature {
            path: path.clone(),
            source,
        })?;

        let mut loaded = LoadedComponent {
            engine: self.clone(),
            pre,
            path,
            digest,
            size: bytes.len() as u64,
            bytes: Arc::from(bytes),
            description: StepDescription {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                input_schema: None,
                output_schema: None,
                grants: Vec::new(),
            },
            imports,
            exports: exports.into_iter().map(|(name, _)| name).collect(),
            from_cache,
        };
        loaded.description = loaded.describe().await?;
        Ok(Arc::new(loaded))
    }
}

enum Layer {
    Core,
    Component,
}

/// Reads the preamble: `\0asm`, a 16-bit version, a 16-bit layer (0 for a
/// core module, 1 for a component).
fn wasm_layer(bytes: &[u8]) -> Option<Layer> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return None;
    }
    match u16::from_le_bytes([bytes[6], bytes[7]]) {
        0 => Some(Layer::Core),
        _ => Some(Layer::Component),
    }
}

impl LoadedComponent {
    fn new_store(
        &self,
        sandbox: &Sandbox,
        labels: InvocationLabels,
    ) -> Result<Store<StepState>, crate::capabilities::SandboxError> {
        let mut store = Store::new(
            self.engine.wasmtime(),
            StepState::sandboxed(sandbox, labels)?,
        );
        store.limiter(|state| &mut state.limiter);
        // Yield to the async executor at every epoch tick, so a busy guest
        // never monopolises a worker thread and its timeout can fire.
        store.epoch_deadline_async_yield_and_update(1);
        if self.engine.fuel_enabled() {
            store
                .set_fuel(sandbox.limits.fuel.unwrap_or(u64::MAX))
                .expect("fuel is enabled on this engine");
        }
        Ok(store)
    }

    async fn describe(&self) -> Result<StepDescription, ComponentError> {
        let path = &self.path;
        let mut store = self
            .new_store(&Sandbox::default(), InvocationLabels::default())
            .expect("a sandbox without directories always builds");
        let called = tokio::time::timeout(DESCRIBE_TIMEOUT, async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(wasmtime::Error::msg(format!(
                "`describe` did not return within {}",
                humantime::format_duration(DESCRIBE_TIMEOUT)
            )))
        });
        let info = match called {
            Ok(info) => info,
            Err(error) => {
                let stderr = store.data_mut().take_logs().stderr.text;
                return Err(ComponentError::Describe {
                    path: path.clone(),
                    reason: trap_message(&error, &stderr),
                });
            }
        };
        let parse_schema = |which: &str,
                            text: Option<String>|
         -> Result<Option<serde_json::Value>, ComponentError> {
            text.map(|text| {
                crate::json::from_str(&text).map_err(|error| ComponentError::BadDescription {
                    path: path.clone(),
                    problem: format!("its {which} schema is not JSON: {error}"),
                })
            })
            .transpose()
        };
        if info.name.trim().is_empty() {
            return Err(ComponentError::BadDescription {
                path: path.clone(),
                problem: "its name is empty".to_owned(),
            });
        }
        Ok(StepDescription {
            input_schema: parse_schema("input", info.input_schema)?,
            output_schema: parse_schema("output", info.output_schema)?,
            name: info.name,
            version: info.version,
            description: info.description,
            grants: info
                .grants
                .into_iter()
                .map(|grant| match grant {
                    wit::Grant::Config(config) => Grant::Config {
                        key: config.key,
                        description: config.description,
                        required: config.required,
                    },
                    wit::Grant::Secret(name) => Grant::Secret { name },
                    wit::Grant::Directory(path) => Grant::Directory { path },
                    wit::Grant::OutboundHttp(url) => Grant::OutboundHttp { url },
                    wit::Grant::Model(name) => Grant::Model { name },
                })
                .collect(),
        })
    }

    /// Runs the step once in a fresh store and instance that see only what
    /// `sandbox` grants, within its limits. Never fails as a Rust error:
    /// every failure, traps and exceeded limits included, is a
    /// [`StepFailure`], and the logs are returned either way. Secret values
    /// are redacted from the output, the failure and the logs.
    pub async fn invoke(
        &self,
        invocation: &InvocationInfo,
        sandbox: &Sandbox,
        input: &Payload,
    ) -> Invoked {
        let labels = InvocationLabels {
            run_id: invocation.run_id.clone(),
            step_id: invocation.step_id.clone(),
            attempt: invocation.attempt,
            traceparent: invocation.traceparent.clone(),
        };
        let limits = sandbox.limits;
        let redactor = Redactor::new(&sandbox.secrets);
        let mut store = match self.new_store(sandbox, labels) {
            Ok(store) => store,
            Err(error) => {
                return Invoked {
                    result: Err(StepFailure {
                        kind: FailureKind::Retryable,
                        message: crate::errors::error_chain(&error),
                        details: None,
                    }),
                    logs: StepLogs::default(),
                    fuel_consumed: None,
                    instantiation: None,
                };
            }
        };
        let mut instantiation = None;
        let called = tokio::time::timeout(
            limits.timeout,
            self.call_run(
                &mut store,
                invocation,
                input,
                limits.output,
                &mut instantiation,
            ),
        )
        .await;
        let fuel_consumed = self
            .engine
            .fuel_enabled()
            .then(|| limits.fuel.unwrap_or(u64::MAX) - store.get_fuel().unwrap_or(0));
        let exceeded = store.data().exceeded();
        let mut logs = store.data_mut().take_logs();
        let mut result = match (called, exceeded) {
            (Err(_elapsed), _) => Err(limit_failure(LimitExceeded::new(
                Limit::Timeout,
                limits.timeout.as_millis() as u64,
                None,
            ))),
            // A limit the guest went past ends the step even if the guest
            // caught the refusal and returned normally.
            (Ok(_), Some(exceeded)) => Err(limit_failure(exceeded)),
            (Ok(Ok(result)), None) => result,
            (Ok(Err(error)), None) => Err(trap_failure(&error, &logs.stderr.text, &limits)),
        };
        if !redactor.is_empty() {
            match &mut result {
                Ok(payload) => redactor.payload(payload),
                Err(failure) => redactor.failure(failure),
            }
            redactor.logs(&mut logs);
        }
        Invoked {
            result,
            logs,
            fuel_consumed,
            instantiation,
        }
    }

    async fn call_run(
        &self,
        store: &mut Store<StepState>,
        invocation: &InvocationInfo,
        input: &Payload,
        output_limit: u64,
        instantiation: &mut Option<std::time::Duration>,
    ) -> wasmtime::Result<Result<Payload, StepFailure>> {
        let started = std::time::Instant::now();
        let instance = self.pre.instantiate_async(&mut *store).await?;
        *instantiation = Some(started.elapsed());
        let wit_invocation = wit::Invocation {
            run_id: invocation.run_id.clone(),
            step_id: invocation.step_id.clone(),
            attempt: invocation.attempt,
            idempotency_key: invocation.idempotency_key.clone(),
        };
        let wit_input = wit::Payload {
            json: input.json.to_string(),
            blobs: input.blobs.iter().map(wit::Blob::from).collect(),
        };
        let result = instance
            .call_run(&mut *store, &wit_invocation, &wit_input)
            .await?;
        Ok(match result {
            Ok(output) => {
                let size = output.json.len() as u64
                    + output
                        .blobs
                        .iter()
                        .map(|blob| blob.data.len() as u64)
                        .sum::<u64>();
                if size > output_limit {
                    Err(limit_failure(LimitExceeded::new(
                        Limit::Output,
                        output_limit,
                        Some(format!(
                            "the step returned {}",
                            crate::limits::format_size(size)
                        )),
                    )))
                } else {
                    payload_from_wit(output)
                }
            }
            Err(error) => Err(failure_from_wit(error, output_limit)),
        })
    }
}

/// The longest error message a step may give, in bytes: a message is a
/// line for the operator; what a program should read goes in `details`.
pub const MAX_ERROR_MESSAGE: usize = 8 << 10;

/// The failure a step returned, within the limits: its message and details
/// together count against the output limit (a step must not be able to
/// store in an error what it could not return as output), and the message
/// is cut at [`MAX_ERROR_MESSAGE`].
fn failure_from_wit(error: wit::StepError, output_limit: u64) -> StepFailure {
    let size = error.message.len() as u64 + error.details.as_ref().map_or(0, |d| d.len() as u64);
    if size > output_limit {
        let mut failure = limit_failure(LimitExceeded::new(
            Limit::Output,
            output_limit,
            Some(format!(
                "the step returned an error of {}; an error's message and details count against the output limit",
                crate::limits::format_size(size)
            )),
        ));
        failure.message = format!(
            "{}; it began: {}",
            failure.message,
            cut(&error.message, 512)
        );
        return failure;
    }
    StepFailure {
        kind: match error.kind {
            wit::ErrorKind::Retryable => FailureKind::Retryable,
            wit::ErrorKind::Fatal => FailureKind::Fatal,
        },
        message: cut(&error.message, MAX_ERROR_MESSAGE),
        details: error.details.map(|details| {
            // Details that are not JSON (or hold a key twice) are kept as
            // a string rather than lost or read one way.
            crate::json::from_str(&details).unwrap_or(serde_json::Value::String(details))
        }),
    }
}

/// `text` cut to at most `max` bytes at a character boundary, saying how
/// much was left out.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes not kept)",
        &text[..end],
        text.len() - end
    )
}

/// The failure for an exceeded limit: retryable for a timeout, fatal for
/// the others, with the limit in the details.
fn limit_failure(exceeded: LimitExceeded) -> StepFailure {
    StepFailure {
        kind: if exceeded.limit.is_retryable() {
            FailureKind::Timeout
        } else {
            FailureKind::LimitExceeded
        },
        message: exceeded.to_string(),
        details: Some(serde_json::json!({
            "limit": exceeded.limit,
            "value": exceeded.value,
        })),
    }
}

/// The failure for a trap: an exceeded limit when the trap is one (fuel,
/// stack, a refused memory growth), otherwise a plain trap.
fn trap_failure(
    error: &wasmtime::Error,
    stderr: &str,
    limits: &crate::limits::Limits,
) -> StepFailure {
    if let Some(exceeded) = error.downcast_ref::<LimitExceeded>() {
        return limit_failure(exceeded.clone());
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => {
            return limit_failure(LimitExceeded::new(
                Limit::Fuel,
                limits.fuel.unwrap_or(u64::MAX),
                None,
            ));
        }
        Some(wasmtime::Trap::StackOverflow) => {
            return limit_failure(LimitExceeded::new(
                Limit::Stack,
                super::MAX_WASM_STACK as u64,
                Some("the step recursed too deeply".into()),
            ));
        }
        _ => {}
    }
    StepFailure {
        kind: FailureKind::Trap,
        message: trap_message(error, stderr),
        details: None,
    }
}

/// One line saying why a guest trapped: the trap itself (without the wasm
/// backtrace, which names mangled symbols) and the last lines the guest
/// wrote to stderr, which for a Rust guest hold the panic message.
fn trap_message(error: &wasmtime::Error, stderr: &str) -> String {
    let mut message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if !said.is_empty() {
        let tail = said[said.len().saturating_sub(3)..].join(" ");
        let tail: String = tail.chars().take(500).collect();
        message.push_str("; guest stderr: ");
        message.push_str(&tail);
    }
    message
}

/// Checks a step's output against the contract.
fn payload_from_wit(output: wit::Payload) -> Result<Payload, StepFailure> {
    let invalid = |message: String| StepFailure {
        kind: FailureKind::InvalidOutput,
        message,
        details: None,
    };
    // Strict: an object with a key twice would mean different things to
    // different readers (see `crate::json`).
    let json = crate::json::from_str(&output.json)
        .map_err(|error| invalid(format!("the step's output is not valid JSON: {error}")))?;
    let mut blobs: Vec<Blob> = Vec::with_capacity(output.blobs.len());
    for blob in output.blobs {
        if blob.name.is_empty() {
            return Err(invalid(
                "the step returned a blob with an empty name".to_owned(),
            ));
        }
        if blobs.iter().any(|existing| existing.name == blob.name) {
            return Err(invalid(format!(
                "the step returned two blobs named `{}`",
                blob.name
            )));
        }
        blobs.push(Blob {
            name: blob.name,
            media_type: blob.media_type,
            data: blob.data,
        });
    }
    Ok(Payload { json, blobs })
}

impl From<&Blob> for wit::Blob {
    fn from(blob: &Blob) -> Self {
        wit::Blob {
            name: blob.name.clone(),
            media_type: blob.media_type.clone(),
            data: blob.data.clone(),
        }
    }
}

#[cfg(test)]
mod fuzz;
