//! Shared by the benchmarks: building engines, plans and stores for the
//! no-op step, and summarising samples.

#![allow(dead_code)] // each bench target uses a different part

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plait::capabilities::{InvocationLabels, StepState};
use plait::definition::Definition;
use plait::engine::bindings::StepPre;
use plait::engine::bindings::plait::step::types as wit;
use plait::engine::{Engine, EngineOptions};
use plait::executor::Executor;
use plait::plan::Plan;
use plait::store::{Durability, SledStore};
use wasmtime::Store;

/// In-process runs (the executor, `plait::Runtime`) evaluate expressions in
/// worker processes started from a `plait` binary; this program cannot
/// serve as one, so it names the one Cargo built, before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static WORKER_PROGRAM: extern "C" fn() = {
    extern "C" fn name_worker_program() {
        plait::expressions::set_worker_program(env!("CARGO_BIN_EXE_plait"));
    }
    name_worker_program
};

/// The no-op step: returns its input unchanged.
pub const NOOP: &str = plait_test_artifacts::ECHO_COMPONENT;

/// An engine configured exactly as `plait run` configures it.
pub fn engine(cache: Option<&Path>) -> Engine {
    Engine::new(&EngineOptions {
        cache_dir: cache.map(Path::to_owned),
        ..EngineOptions::default()
    })
    .expect("creating the engine")
}

/// A workflow of `steps` no-op steps, each passing its input and blobs on.
pub fn noop_workflow(dir: &Path, steps: usize) -> Definition {
    let mut text = String::from("name: bench\nsteps:\n");
    for index in 0..steps {
        text.push_str(&format!(
            "  - id: step{index}\n    uses: {}\n",
            serde_json::to_string(NOOP).unwrap()
        ));
    }
    Definition::parse(&text, &dir.join("workflow.yaml")).expect("the bench workflow is valid")
}

/// A plan for [`noop_workflow`].
pub async fn noop_plan(engine: &Engine, dir: &Path, steps: usize) -> Arc<Plan> {
    Arc::new(
        Plan::build(engine, noop_workflow(dir, steps))
            .await
            .expect("planning"),
    )
}

/// An executor over a fresh sled store in `dir`.
pub fn executor(dir: &Path, durability: Durability) -> Executor {
    let store = SledStore::open_with(dir, durability).expect("opening the store");
    Executor::new(Arc::new(store))
}

/// The floor: what wasmtime alone needs to run a step once, with the same
/// engine configuration, the same linker and an `InstancePre`, but no
/// definition, executor or store.
pub struct Floor {
    engine: Engine,
    pre: StepPre<StepState>,
}

impl Floor {
    /// Compiles the no-op step and pre-instantiates it.
    pub fn new(engine: &Engine) -> Floor {
        Floor::of(engine, NOOP)
    }

    /// Compiles the component at `path` and pre-instantiates it.
    pub fn of(engine: &Engine, path: &str) -> Floor {
        let component =
            wasmtime::component::Component::from_file(engine.wasmtime(), path).expect("compiling");
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .expect("pre-instantiating");
        Floor {
            engine: engine.clone(),
            pre: StepPre::new(instance_pre).expect("the component implements the world"),
        }
    }

    fn store(&self, config: BTreeMap<String, String>) -> Store<StepState> {
        let mut store = Store::new(
            self.engine.wasmtime(),
            StepState::new(config, InvocationLabels::default()),
        );
        store.epoch_deadline_async_yield_and_update(1);
        if self.engine.fuel_enabled() {
            store.set_fuel(u64::MAX).expect("fuel is on");
        }
        store
    }

    /// Fresh store + instantiate + drop, without calling anything.
    pub async fn instantiate(&self) {
        let mut store = self.store(BTreeMap::new());
        self.pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiating");
    }

    /// Fresh store + instantiate + `run` with an empty payload + drop.
    pub async fn call(&self) {
        let input = wit::Payload {
            json: "{}".into(),
            blobs: Vec::new(),
        };
        self.call_with(BTreeMap::new(), input).await;
    }

    /// Fresh store + instantiate + `run` with `input` and `config` + drop;
    /// returns the step's output payload.
    pub async fn call_with(
        &self,
        config: BTreeMap<String, String>,
        input: wit::Payload,
    ) -> wit::Payload {
        let mut store = self.store(config);
        call(&self.pre, &mut store, &input).await
    }

    /// `steps` calls in a row, each fed the previous one's output, starting
    /// from `{"n": 1}` and `blobs`: the floor of a `steps`-step run.
    pub async fn chain(&self, steps: usize, blobs: &[plait::step::Blob]) {
        let mut payload = wit::Payload {
            json: r#"{"n":1}"#.into(),
            blobs: blobs.iter().map(wit::Blob::from).collect(),
        };
        for _ in 0..steps {
            payload = self.call_with(BTreeMap::new(), payload).await;
        }
    }
}

/// Sorted durations with percentiles.
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Sorts `samples`.
    pub fn new(mut samples: Vec<Duration>) -> Samples {
        samples.sort();
        Samples(samples)
    }

    /// The nearest-rank percentile.
    pub fn percentile(&self, percent: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((percent / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)]
    }

    /// The 50th percentile.
    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }
}

/// CPU time (user + system) of this process so far. `/proc` reports it in
/// USER_HZ ticks, which Linux fixes at 100 per second.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold
    // spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// A CPU-bound step on a bare wasmtime engine with or without epoch
/// interruption and fuel metering, to price each.
pub struct CpuBound {
    engine: wasmtime::Engine,
    pre: StepPre<StepState>,
    epoch: bool,
    fuel: bool,
}

impl CpuBound {
    /// An engine configured like Plait's, but with epoch interruption and
    /// fuel metering switched as given.
    pub fn new(path: &str, epoch: bool, fuel: bool) -> CpuBound {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(epoch);
        config.consume_fuel(fuel);
        let engine = wasmtime::Engine::new(&config).expect("creating the engine");
        let mut linker = wasmtime::component::Linker::new(&engine);
        plait::capabilities::add_to_linker(&mut linker).expect("linking");
        let component =
            wasmtime::component::Component::from_file(&engine, path).expect("compiling");
        let pre = StepPre::new(
            linker
                .instantiate_pre(&component)
                .expect("pre-instantiating"),
        )
        .expect("the component implements the world");
        if epoch {
            let weak = engine.weak();
            std::thread::spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(plait::engine::EPOCH_TICK);
                }
            });
        }
        CpuBound {
            engine,
            pre,
            epoch,
            fuel,
        }
    }

    /// Instantiates the step and runs it with `config` and `input`;
    /// returns its output document.
    pub async fn run(&self, config: &[(&str, String)], input: &str) -> serde_json::Value {
        let config = config
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect();
        let mut store = Store::new(
            &self.engine,
            StepState::new(config, InvocationLabels::default()),
        );
        if self.epoch {
            store.epoch_deadline_async_yield_and_update(1);
        }
        if self.fuel {
            store.set_fuel(u64::MAX).expect("fuel is on");
        }
        let input = wit::Payload {
            json: input.to_owned(),
            blobs: Vec::new(),
        };
        let output = call(&self.pre, &mut store, &input).await;
        serde_json::from_str(&output.json).expect("JSON output")
    }
}

/// Instantiates `pre` in `store` and calls `run` with `input`; panics on any
/// failure (a benchmark measures only what succeeds).
async fn call(
    pre: &StepPre<StepState>,
    store: &mut Store<StepState>,
    input: &wit::Payload,
) -> wit::Payload {
    let step = pre
        .instantiate_async(&mut *store)
        .await
        .expect("instantiating");
    let invocation = wit::Invocation {
        run_id: "bench".into(),
        step_id: "bench".into(),
        attempt: 1,
        idempotency_key: "bench/bench".into(),
    };
    step.call_run(&mut *store, &invocation, input)
        .await
        .expect("calling run")
        .expect("the step succeeds")
}
