//! The wasmtime engine: configuration, the linker and compiled-component loading.
//!
//! One [`Engine`] is shared by every run in a process. It is tuned for what
//! Plait does most: instantiating a component once per step invocation and
//! throwing the instance away afterwards. That is why it uses the pooling
//! allocator (instance slots are reused instead of mapped and unmapped),
//! copy-on-write memory images (a fresh instance does not copy its data
//! segments) and `InstancePre` (imports are resolved once per component, not
//! once per invocation).
//!
//! Compiled code is keyed by [`code_key`]: the wasmtime release, the target
//! and the engine settings that change generated code. A build without the
//! `compiler` feature (the edge build) runs only code compiled ahead of
//! time, by `plait bundle compile`, and imported with
//! [`Engine::import_compiled`].

pub mod bindings;
mod cache;
pub mod capabilities;
mod component;
mod sizing;

// The shared vocabulary, under the names this crate's modules use.
pub(crate) use plait_inference as inference;
pub(crate) use plait_types::{clock, digest, errors, files, grants, json, limits, logs, step};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capabilities::StepState;

pub use component::{
    ComponentError, DESCRIBE_TIMEOUT, Grant, Invoked, LoadedComponent, STEP_WORLD, StepDescription,
};

/// How often the epoch ticks. A running guest yields to the async executor
/// at every tick, so this bounds how long a busy guest can hold a worker
/// thread before other runs (and, later, timeouts) get a turn.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The native stack a guest may use. A recursion past it ends the step
/// with a `stack` limit error rather than overflowing the host's stack.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// The wasmtime release this host embeds (pinned with `=` in Cargo.toml):
/// compiled code runs only on the release that made it.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The target triple this `plait` was built for.
pub const HOST_TARGET: &str = env!("PLAIT_TARGET");

/// Whether this build compiles components itself (the `compiler` feature);
/// without it, only code compiled ahead of time runs.
pub const HAS_COMPILER: bool = cfg!(feature = "compiler");

/// The key of compiled code for `target` on an engine metering fuel or not:
/// `wasmtime-<release>-<target>-<settings hash>`. Code is used only where
/// the key matches exactly; wasmtime's own check of the artifact's header
/// (release, target, CPU features, settings) stays the final word.
pub fn code_key(target: &str, fuel: bool) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(code_settings(fuel).as_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("wasmtime-{WASMTIME_VERSION}-{target}-{hex}")
}

/// The engine settings that change generated code, as [`base_config`] sets
/// them. Change both together: a setting missing here would let code
/// compiled with another value be taken (and wasmtime refuse it later).
fn code_settings(fuel: bool) -> String {
    format!("component-model epoch-interruption fuel={fuel} max-wasm-stack={MAX_WASM_STACK}")
}

/// The configuration every engine shares, compiling or not, for this host
/// or another target.
fn base_config(fuel: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.consume_fuel(fuel);
    config.max_wasm_stack(MAX_WASM_STACK);
    config
}

/// Settings for [`Engine::new`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled components are cached. `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Component instances the pooling allocator keeps slots for: the number
    /// of step invocations that can be in flight at once.
    pub max_instances: u32,
    /// The instances that may be in flight at once (the steps that run at
    /// once, and room to load components beside them): a pool sized below
    /// this is not used.
    pub needed_instances: u32,
    /// The largest linear memory the engine reserves for one memory, in
    /// bytes: the ceiling of any step's memory limit.
    pub max_memory_bytes: usize,
    /// Meter fuel, so a step can have an instruction budget and every
    /// step's consumption is recorded. Costs some speed on CPU-bound steps
    /// (see `docs/benchmarks.md`).
    pub fuel: bool,
    /// Use the pooling allocator when the address space can be reserved.
    pub pooling: bool,
    /// Size the pooling allocator to the machine's memory (and a cgroup's
    /// limit), not only to `max_instances` (docs/edge.md, "Memory").
    pub fit_to_machine: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            max_instances: 100,
            needed_instances: 0,
            max_memory_bytes: 1 << 30,
            fuel: true,
            pooling: true,
            fit_to_machine: true,
        }
    }
}

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved instance slots with copy-on-write memory images.
    Pooling,
    /// Memory mapped per instance: the fallback where the machine refuses to
    /// reserve the pooling allocator's address space (for example under a
    /// `ulimit -v`).
    OnDemand,
}

/// A shared wasmtime engine plus the linker every step is instantiated with.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: wasmtime::Engine,
    linker: Linker<StepState>,
    cache: Option<cache::ComponentCache>,
    allocator: Allocator,
    fuel: bool,
    max_memory_bytes: usize,
    code_key: String,
    /// Code imported with [`Engine::import_compiled`], by component digest:
    /// found here when there is no cache folder.
    imported: std::sync::Mutex<std::collections::HashMap<String, wasmtime::component::Component>>,
    /// The instance slots the pooling allocator was given.
    slots: u32,
}

/// Errors creating the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("could not create the WebAssembly engine")]
    Create(#[source] wasmtime::Error),
    /// The host interfaces could not be added to the linker (a host bug).
    #[error("could not link the host interfaces")]
    Link(#[source] wasmtime::Error),
    /// Compiling for another target failed.
    #[error("cannot compile for target `{target}`")]
    Target {
        /// The target triple.
        target: String,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
}

impl Engine {
    /// Creates an engine, falling back from the pooling allocator to the
    /// on-demand one (with a warning) when the address space cannot be
    /// reserved.
    pub fn new(options: &EngineOptions) -> Result<Engine, EngineError> {
        let slots = if options.fit_to_machine {
            sizing::slots(options, &plait_types::machine::Machine::read())
        } else {
            sizing::Slots {
                instances: options.max_instances,
                why: "as configured",
            }
        };
        let pooled = EngineOptions {
            max_instances: slots.instances,
            ..options.clone()
        };
        if options.pooling && slots.instances == 0 {
            tracing::info!(target: "plait::engine",
                why = slots.why,
                "allocating instances on demand: a pool with a slot for every step that may run \
                 at once does not fit"
            );
        }
        let (engine, allocator) = if options.pooling && slots.instances > 0 {
            match wasmtime::Engine::new(&config(&pooled, Allocator::Pooling)) {
                Ok(engine) => {
                    tracing::debug!(target: "plait::engine",
                        slots = slots.instances,
                        why = slots.why,
                        "pooling allocator"
                    );
                    (engine, Allocator::Pooling)
                }
                Err(error) => {
                    tracing::warn!(target: "plait::engine",
                        error = format!("{error:#}"),
                        slots = slots.instances,
                        "could not reserve address space for the pooling allocator; \
                         falling back to on-demand allocation (slower instantiation)"
                    );
                    let engine = wasmtime::Engine::new(&config(options, Allocator::OnDemand))
                        .map_err(EngineError::Create)?;
                    (engine, Allocator::OnDemand)
                }
            }
        } else {
            let engine = wasmtime::Engine::new(&config(options, Allocator::OnDemand))
                .map_err(EngineError::Create)?;
            (engine, Allocator::OnDemand)
        };
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker).map_err(EngineError::Link)?;
        spawn_epoch_ticker(&engine);
        let code_key = code_key(HOST_TARGET, options.fuel);
        let cache = options
            .cache_dir
            .as_ref()
            .map(|dir| cache::ComponentCache::new(dir.clone(), &code_key));
        Ok(Engine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                cache,
                allocator,
                fuel: options.fuel,
                max_memory_bytes: options.max_memory_bytes,
                code_key,
                imported: Default::default(),
                slots: if allocator == Allocator::Pooling {
                    slots.instances
                } else {
                    0
                },
            }),
        })
    }

    /// The key of the code this engine runs ([`code_key`] for this host).
    pub fn code_key(&self) -> &str {
        &self.inner.code_key
    }

    /// The pooling allocator's instance slots (0 on demand).
    pub fn slots(&self) -> u32 {
        self.inner.slots
    }

    /// Takes code compiled ahead of time for the component whose digest is
    /// `component_digest`, after wasmtime checked it was made by this
    /// release, for this target and CPU, with these settings; it is then
    /// used instead of compiling (and kept in the cache folder, if any).
    ///
    /// # Safety
    ///
    /// The bytes become native code in this process. Pass only artifacts
    /// from a source trusted like the host's own binary: Plait takes them
    /// only from bundles signed by a trusted publisher.
    pub unsafe fn import_compiled(
        &self,
        component_digest: &str,
        artifact: &[u8],
    ) -> Result<(), wasmtime::Error> {
        // SAFETY: the caller vouches for the artifact's origin; wasmtime
        // checks its header, release, target and settings.
        let component =
            unsafe { wasmtime::component::Component::deserialize(&self.inner.engine, artifact)? };
        if let Some(cache) = &self.inner.cache {
            cache.store_bytes(component_digest, artifact);
        }
        self.inner
            .imported
            .lock()
            .expect("the imported-code map is never poisoned")
            .insert(component_digest.to_owned(), component);
        Ok(())
    }

    /// Whether code for the component with this digest is at hand (imported
    /// or cached), so that loading it needs no compiler.
    pub fn has_compiled(&self, component_digest: &str) -> bool {
        self.imported(component_digest).is_some()
            || self
                .inner
                .cache
                .as_ref()
                .is_some_and(|cache| cache.contains(component_digest))
    }

    fn imported(&self, digest: &str) -> Option<wasmtime::component::Component> {
        self.inner
            .imported
            .lock()
            .expect("the imported-code map is never poisoned")
            .get(digest)
            .cloned()
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// The linker holding WASI (nothing granted) and the `plait:step/host`
    /// interface.
    pub fn linker(&self) -> &Linker<StepState> {
        &self.inner.linker
    }

    /// Whether the engine meters fuel.
    pub fn fuel_enabled(&self) -> bool {
        self.inner.fuel
    }

    /// The largest memory limit a step can be given on this engine.
    pub fn max_memory_bytes(&self) -> usize {
        self.inner.max_memory_bytes
    }

    /// Which instance allocator is in use.
    pub fn allocator(&self) -> Allocator {
        self.inner.allocator
    }
}

/// Compiles `component` (its bytes) for `target`, with the settings an
/// engine with `fuel` metering has there: the artifact that engine's
/// [`Engine::import_compiled`] takes, under [`code_key`]`(target, fuel)`.
#[cfg(feature = "compiler")]
pub fn compile_for(target: &str, fuel: bool, component: &[u8]) -> Result<Vec<u8>, EngineError> {
    let failed = |source| EngineError::Target {
        target: target.to_owned(),
        source,
    };
    let mut config = base_config(fuel);
    // An explicit target, even this host's: code for the target's baseline
    // CPU, not for the features of the machine that compiles.
    config.target(target).map_err(failed)?;
    let engine = wasmtime::Engine::new(&config).map_err(failed)?;
    engine.precompile_component(component).map_err(failed)
}

fn config(options: &EngineOptions, allocator: Allocator) -> Config {
    let mut config = base_config(options.fuel);
    if allocator == Allocator::Pooling {
        let mut pooling = PoolingAllocationConfig::default();
        let instances = options.max_instances;
        pooling
            .total_component_instances(instances)
            // A Rust component holds a few core instances (the main module,
            // the WASI adapter shims); give each component room for them.
            .total_core_instances(instances * 4)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(options.max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

/// Ticks the engine's epoch until the engine is dropped. A thread rather
/// than a task so that it keeps ticking while every runtime worker is busy
/// inside guests.
fn spawn_epoch_ticker(engine: &wasmtime::Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("plait-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_key_names_the_release_target_and_settings() {
        let key = code_key("aarch64-unknown-linux-gnu", true);
        assert!(
            key.starts_with("wasmtime-48.0.8-aarch64-unknown-linux-gnu-"),
            "{key}"
        );
        assert_eq!(key, code_key("aarch64-unknown-linux-gnu", true));
        assert_ne!(key, code_key("aarch64-unknown-linux-gnu", false));
        assert_ne!(key, code_key("x86_64-unknown-linux-gnu", true));
    }

    #[test]
    fn the_wasmtime_release_is_the_one_in_the_lock_file() {
        let lock = include_str!("../../../Cargo.lock");
        let pinned = lock
            .split("[[package]]")
            .find(|package| package.contains("\nname = \"wasmtime\"\n"))
            .and_then(|package| package.lines().find(|line| line.starts_with("version = ")))
            .expect("wasmtime is in Cargo.lock");
        assert_eq!(pinned, format!("version = \"{WASMTIME_VERSION}\""));
    }

    #[cfg(feature = "compiler")]
    #[tokio::test]
    async fn code_compiled_ahead_of_time_is_taken_and_refused_for_another_target() {
        let component = std::fs::read(plait_test_artifacts::ECHO_COMPONENT).unwrap();
        let engine = Engine::new(&EngineOptions::default()).unwrap();
        let digest = digest::digest(&component);
        assert!(!engine.has_compiled(&digest));
        let theirs = if HOST_TARGET.starts_with("aarch64") {
            "x86_64-unknown-linux-gnu"
        } else {
            "aarch64-unknown-linux-gnu"
        };
        let foreign = compile_for(theirs, true, &component).unwrap();
        // SAFETY: compiled just above, by this process.
        let refused = unsafe { engine.import_compiled(&digest, &foreign) }.unwrap_err();
        assert!(
            format!("{refused:#}").contains("compiled for"),
            "{refused:#}"
        );
        assert!(!engine.has_compiled(&digest));
        let ours = compile_for(HOST_TARGET, true, &component).unwrap();
        // SAFETY: as above.
        unsafe { engine.import_compiled(&digest, &ours) }.unwrap();
        assert!(engine.has_compiled(&digest));
        let loaded = engine
            .load_component_bytes(std::path::Path::new("echo.wasm"), &component)
            .await
            .unwrap();
        assert!(loaded.from_cache, "the imported code is used");
    }
}
