//! The wasmtime engine: configuration, the linker and compiled-component loading.
//!
//! One [`Engine`] is shared by every run in a process. It is tuned for what
//! Plait does most: instantiating a component once per step invocation and
//! throwing the instance away afterwards. That is why it uses the pooling
//! allocator (instance slots are reused instead of mapped and unmapped),
//! copy-on-write memory images (a fresh instance does not copy its data
//! segments) and `InstancePre` (imports are resolved once per component, not
//! once per invocation).

pub mod bindings;
mod cache;
mod component;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capabilities::{self, StepState};

pub use component::{
    ComponentError, DESCRIBE_TIMEOUT, Grant, Invoked, LoadedComponent, STEP_WORLD, StepDescription,
    digest,
};

/// How often the epoch ticks. A running guest yields to the async executor
/// at every tick, so this bounds how long a busy guest can hold a worker
/// thread before other runs (and, later, timeouts) get a turn.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The native stack a guest may use. A recursion past it ends the step
/// with a `stack` limit error rather than overflowing the host's stack.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// Settings for [`Engine::new`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled components are cached. `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Component instances the pooling allocator keeps slots for: the number
    /// of step invocations that can be in flight at once.
    pub max_instances: u32,
    /// The largest linear memory the engine reserves for one memory, in
    /// bytes: the ceiling of any step's memory limit.
    pub max_memory_bytes: usize,
    /// Meter fuel, so a step can have an instruction budget and every
    /// step's consumption is recorded. Costs some speed on CPU-bound steps
    /// (see `docs/benchmarks.md`).
    pub fuel: bool,
    /// Use the pooling allocator when the address space can be reserved.
    pub pooling: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            max_instances: 100,
            max_memory_bytes: 1 << 30,
            fuel: true,
            pooling: true,
        }
    }
}

impl EngineOptions {
    /// The options for running workflows under `policy`, caching compiled
    /// components in `cache_dir`: memories reserved up to the largest
    /// memory limit the policy allows.
    pub fn for_policy(policy: &crate::policy::Policy, cache_dir: Option<PathBuf>) -> EngineOptions {
        let defaults = EngineOptions::default();
        let largest = policy
            .max
            .memory
            .unwrap_or(0)
            .max(policy.defaults.memory)
            .max(defaults.max_memory_bytes as u64);
        EngineOptions {
            cache_dir,
            max_memory_bytes: usize::try_from(largest).unwrap_or(usize::MAX),
            ..defaults
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
}

impl Engine {
    /// Creates an engine, falling back from the pooling allocator to the
    /// on-demand one (with a warning) when the address space cannot be
    /// reserved.
    pub fn new(options: &EngineOptions) -> Result<Engine, EngineError> {
        let (engine, allocator) = if options.pooling {
            match wasmtime::Engine::new(&config(options, Allocator::Pooling)) {
                Ok(engine) => (engine, Allocator::Pooling),
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
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
        let cache = options
            .cache_dir
            .as_ref()
            .map(|dir| cache::ComponentCache::new(dir.clone(), &engine));
        Ok(Engine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                cache,
                allocator,
                fuel: options.fuel,
                max_memory_bytes: options.max_memory_bytes,
            }),
        })
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

fn config(options: &EngineOptions, allocator: Allocator) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.consume_fuel(options.fuel);
    config.max_wasm_stack(MAX_WASM_STACK);
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
