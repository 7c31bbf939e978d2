//! Plait's runtime figures, each beside the raw wasmtime floor, measured in
//! one run on one machine and printed as a markdown table.
//!
//! - `cargo bench -p plait-cli --bench runtime`: the full run (minutes).
//! - `cargo test -p plait-cli --bench runtime` or `-- --quick`: a quick run with
//!   small counts, which CI uses to check that the benchmark works.
//! - `cargo bench -p plait-cli --bench runtime -- --throughput`: only the
//!   throughput table (3-step runs at 1–64 in flight), at full counts.
//!
//! Results and their analysis live in `docs/benchmarks.md`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plait::executor::Executor;
use plait::plan::Plan;
use plait::step::Blob;
use plait::store::{
    Commit, Durability, RunStatus, RunStore as _, SledStore, StepRecord, StepStatus,
};
use serde_json::json;
use support::{Floor, Samples};

/// Counts for one mode of the benchmark.
struct Scale {
    quick: bool,
    floor_iterations: usize,
    step_iterations: usize,
    runs_per_worker: usize,
    payloads: &'static [(usize, &'static str)],
    step_counts: &'static [usize],
    stored_runs: &'static [usize],
    cold_iterations: usize,
    in_flight: usize,
    burn_rounds: u64,
    burn_iterations: usize,
    normalize_bytes: usize,
}

const FULL: Scale = Scale {
    quick: false,
    floor_iterations: 2000,
    step_iterations: 500,
    runs_per_worker: 60,
    payloads: &[(1 << 10, "1 KiB"), (1 << 20, "1 MiB"), (16 << 20, "16 MiB")],
    step_counts: &[1, 10, 100],
    stored_runs: &[0, 100_000, 1_000_000],
    cold_iterations: 5,
    in_flight: 64,
    burn_rounds: 50_000_000,
    burn_iterations: 21,
    normalize_bytes: 4 << 20,
};

const QUICK: Scale = Scale {
    quick: true,
    floor_iterations: 20,
    step_iterations: 10,
    runs_per_worker: 2,
    payloads: &[(1 << 10, "1 KiB"), (1 << 20, "1 MiB")],
    step_counts: &[1, 10],
    stored_runs: &[0, 1_000],
    cold_iterations: 1,
    in_flight: 8,
    burn_rounds: 100_000,
    burn_iterations: 3,
    normalize_bytes: 16 << 10,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test` does not.
    let scale = if args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench") {
        &QUICK
    } else {
        &FULL
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == "--throughput") {
        // Only the throughput table (issue 22's figures), at full counts.
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let engine = support::engine(None);
            let floor = Floor::new(&engine);
            let floor3 = floor_chain(&floor, 3, &[], FULL.floor_iterations / 3).await;
            throughput_table(&engine, dir.path(), &FULL, &floor3).await;
        });
        return;
    }
    if args.iter().any(|a| a == "--profile-steps") {
        // A steady loop of runs and nothing else, for `perf record` or
        // `valgrind --tool=callgrind` of the executor's own per-step cost:
        // 10-step batched runs, or with `--durable` 3-step durable runs
        // (the throughput rows' workload). `--runs N` sets how many.
        let durable = args.iter().any(|a| a == "--durable");
        let runs = args
            .iter()
            .position(|a| a == "--runs")
            .and_then(|at| args.get(at + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(3000);
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let engine = support::engine(None);
            let (steps, durability) = if durable {
                (3, Durability::Durable)
            } else {
                (10, Durability::Batched)
            };
            let plan = support::noop_plan(&engine, dir.path(), steps).await;
            let executor = support::executor(&dir.path().join("profile"), durability);
            let samples = time_runs(&executor, &plan, runs, &[]).await;
            println!(
                "{steps}-step {durability:?} run: median {} over {runs} runs",
                ms(samples.median())
            );
        });
        return;
    }
    runtime.block_on(report(scale));
}

fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.3} ms", ms)
    } else {
        format!("{:.2} ms", ms)
    }
}

fn ratio(value: Duration, floor: Duration) -> String {
    format!(
        "{:.1}×",
        value.as_secs_f64() / floor.as_secs_f64().max(1e-9)
    )
}

fn ratio_of(value: f64, floor: f64) -> String {
    format!("{:.1}×", value / floor.max(1e-9))
}

/// Times `iterations` floor chains of `steps` calls carrying `blobs`.
async fn floor_chain(floor: &Floor, steps: usize, blobs: &[Blob], iterations: usize) -> Samples {
    let mut samples = Vec::with_capacity(iterations.max(3));
    for _ in 0..iterations.max(3) {
        let started = Instant::now();
        floor.chain(steps, blobs).await;
        samples.push(started.elapsed());
    }
    Samples::new(samples)
}

async fn time_runs(executor: &Executor, plan: &Plan, iterations: usize, blobs: &[Blob]) -> Samples {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let report = executor
            .start(
                plan,
                plait::executor::StartRequest::new(json!({"n": 1})).blobs(blobs.to_vec()),
            )
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert_eq!(
            report.run.status,
            RunStatus::Succeeded,
            "{:?}",
            report.run.error
        );
    }
    Samples::new(samples)
}

async fn report(scale: &Scale) {
    let dir = tempfile::tempdir().unwrap();
    let engine = support::engine(None);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "# Plait runtime benchmark{}\n",
        if scale.quick {
            " (quick mode: small counts, not for quoting)"
        } else {
            ""
        }
    );
    println!(
        "commit `{commit}`, {cores} cores, no-op step = `tests/guests/echo`, pooling allocator: {:?}\n",
        engine.allocator()
    );

    // The floor.
    // Idle: the engine exists and one store is open, nothing has run.
    let engine_only = support::rss_bytes();
    let idle_store = support::executor(&dir.path().join("idle"), Durability::Durable);
    let idle = support::rss_bytes();
    drop(idle_store);
    let floor = Floor::new(&engine);
    for _ in 0..10 {
        floor.call().await;
    }
    let mut samples = Vec::new();
    for _ in 0..scale.floor_iterations {
        let started = Instant::now();
        floor.call().await;
        samples.push(started.elapsed());
    }
    let floor_samples = Samples::new(samples);
    let floor_median = floor_samples.median();
    let floor3 = floor_chain(&floor, 3, &[], scale.floor_iterations / 3).await;

    println!("## Per step\n");
    println!("| what | median | p99 | ratio to floor |\n|---|---|---|---|");
    println!(
        "| floor: wasmtime store + instantiate (InstancePre, pooling) + call + drop | {} | {} | 1.0× |",
        ms(floor_median),
        ms(floor_samples.p99())
    );
    let plan1 = support::noop_plan(&engine, dir.path(), 1).await;
    let plan10 = support::noop_plan(&engine, dir.path(), 10).await;
    for (name, durability) in [
        ("durable", Durability::Durable),
        ("batched", Durability::Batched),
    ] {
        let executor = support::executor(&dir.path().join(format!("per-step-{name}")), durability);
        let _ = time_runs(&executor, &plan1, 5, &[]).await;
        let one = time_runs(&executor, &plan1, scale.step_iterations, &[]).await;
        let ten = time_runs(&executor, &plan10, (scale.step_iterations / 5).max(3), &[]).await;
        let marginal = ten.median().saturating_sub(one.median()) / 9;
        println!(
            "| 1-step run through the executor, {name} (run record + 4 commits) | {} | {} | {} |",
            ms(one.median()),
            ms(one.p99()),
            ratio(one.median(), floor_median)
        );
        println!(
            "| each further step, {name} ((10-step − 1-step) / 9) | {} | | {} |",
            ms(marginal),
            ratio(marginal, floor_median)
        );
    }

    println!("\n## Where a step's time goes\n");
    println!("| part | median | p99 |\n|---|---|---|");
    let mut samples = Vec::new();
    for _ in 0..scale.floor_iterations {
        let started = Instant::now();
        floor.instantiate().await;
        samples.push(started.elapsed());
    }
    let instantiate = Samples::new(samples);
    println!(
        "| fresh store + instantiate + drop | {} | {} |",
        ms(instantiate.median()),
        ms(instantiate.p99())
    );
    println!(
        "| `run` call (floor − instantiate) | {} | |",
        ms(floor_median.saturating_sub(instantiate.median()))
    );
    for (name, durability) in [
        ("durable", Durability::Durable),
        ("batched", Durability::Batched),
    ] {
        let commits = commit_times(
            &dir.path().join(format!("commits-{name}")),
            durability,
            scale.step_iterations * 2,
        );
        println!(
            "| one step-record commit to sled, {name} | {} | {} |",
            ms(commits.median()),
            ms(commits.p99())
        );
    }

    let (summary_latency, summary_cpu, best_durable_rate) =
        throughput_table(&engine, dir.path(), scale, &floor3).await;
    let plan3 = support::noop_plan(&engine, dir.path(), 3).await;

    println!("\n## Scaling\n");
    println!(
        "Each floor is the same chain of wasmtime calls with the same payload, without executor or store.\n"
    );
    println!("| what | median | p99 | floor median | ratio to floor |\n|---|---|---|---|---|");
    let executor = support::executor(&dir.path().join("scaling"), Durability::Durable);
    for (size, label) in scale.payloads {
        let blob = Blob {
            name: "document".into(),
            media_type: "application/octet-stream".into(),
            data: (0..*size).map(|i| (i % 251) as u8).collect(),
        };
        let iterations = if *size >= 16 << 20 {
            10
        } else {
            scale.step_iterations.min(50)
        };
        let samples = time_runs(&executor, &plan3, iterations, std::slice::from_ref(&blob)).await;
        let base = floor_chain(&floor, 3, std::slice::from_ref(&blob), iterations).await;
        println!(
            "| {label} blob through 3 steps (durable) | {} | {} | {} | {} |",
            ms(samples.median()),
            ms(samples.p99()),
            ms(base.median()),
            ratio(samples.median(), base.median())
        );
    }
    for steps in scale.step_counts {
        let plan = support::noop_plan(&engine, dir.path(), *steps).await;
        let iterations = (scale.step_iterations / steps).clamp(3, 200);
        let samples = time_runs(&executor, &plan, iterations, &[]).await;
        let base = floor_chain(&floor, *steps, &[], iterations).await;
        println!(
            "| {steps}-step run (durable) | {} | {} | {} | {} |",
            ms(samples.median()),
            ms(samples.p99()),
            ms(base.median()),
            ratio(samples.median(), base.median())
        );
    }
    for stored in scale.stored_runs {
        let store_dir = dir.path().join(format!("stored-{stored}"));
        prefill(&store_dir, *stored);
        let executor = support::executor(&store_dir, Durability::Durable);
        let samples = time_runs(&executor, &plan3, scale.step_iterations.min(100), &[]).await;
        println!(
            "| 3-step run with {stored} finished runs in the store (durable) | {} | {} | {} | {} |",
            ms(samples.median()),
            ms(samples.p99()),
            ms(floor3.median()),
            ratio(samples.median(), floor3.median())
        );
    }

    println!("\n## Cold start\n");
    println!(
        "Floors: wasmtime `Component::new` on the bytes (compile), and `Component::deserialize_file` of a serialized component (cached).\n"
    );
    println!("| what | median | floor median | ratio to floor |\n|---|---|---|---|");
    for (label, path) in [
        ("no-op step (echo)", support::NOOP),
        (
            "normalize-text plugin",
            plait_test_artifacts::NORMALIZE_TEXT_PLUGIN,
        ),
    ] {
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut floor_compile = Vec::new();
        let mut floor_deserialize = Vec::new();
        for iteration in 0..scale.cold_iterations {
            let cache = dir.path().join(format!("cache-{label}-{iteration}"));
            let engine = support::engine(Some(&cache));
            let started = Instant::now();
            engine
                .load_component(std::path::Path::new(path))
                .await
                .unwrap();
            cold.push(started.elapsed());
            let engine = support::engine(Some(&cache));
            let started = Instant::now();
            let loaded = engine
                .load_component(std::path::Path::new(path))
                .await
                .unwrap();
            warm.push(started.elapsed());
            assert!(loaded.from_cache);

            let bytes = std::fs::read(path).unwrap();
            let started = Instant::now();
            let component = wasmtime::component::Component::new(engine.wasmtime(), &bytes).unwrap();
            floor_compile.push(started.elapsed());
            let serialized = dir.path().join(format!("floor-{label}-{iteration}.cwasm"));
            std::fs::write(&serialized, component.serialize().unwrap()).unwrap();
            let started = Instant::now();
            // SAFETY: the file was serialized just above by this engine.
            unsafe {
                wasmtime::component::Component::deserialize_file(engine.wasmtime(), &serialized)
                    .unwrap();
            }
            floor_deserialize.push(started.elapsed());
        }
        let (cold, warm) = (Samples::new(cold), Samples::new(warm));
        let (floor_compile, floor_deserialize) =
            (Samples::new(floor_compile), Samples::new(floor_deserialize));
        println!(
            "| {label}: first load, compiled | {} | {} | {} |",
            ms(cold.median()),
            ms(floor_compile.median()),
            ratio(cold.median(), floor_compile.median())
        );
        println!(
            "| {label}: cached precompiled load ({} faster than first) | {} | {} | {} |",
            ratio(cold.median(), warm.median()),
            ms(warm.median()),
            ms(floor_deserialize.median()),
            ratio(warm.median(), floor_deserialize.median())
        );
    }

    println!("\n## Sandbox overhead on CPU-bound steps\n");
    println!(
        "Instantiate + run on a bare wasmtime engine; the floor is the same engine without epoch interruption or fuel metering. `burn`: {} rounds of xorshift in `tests/guests/hostile` (a serial dependency chain, no host calls). `normalize-text`: the reference plugin on {} of text (branches, allocation, copying).\n",
        scale.burn_rounds,
        plait::limits::format_size(scale.normalize_bytes as u64)
    );
    println!("| step | engine | median | p99 | ratio to floor |\n|---|---|---|---|---|");
    let text: String = "Hello,   World!\tThe  quick brown fox\r\n"
        .chars()
        .cycle()
        .take(scale.normalize_bytes)
        .collect();
    let normalize_input = json!({"text": text}).to_string();
    let burn_config = [
        ("attack", "burn".to_owned()),
        ("count", scale.burn_rounds.to_string()),
    ];
    for (step, path, config, input) in [
        (
            "burn",
            plait_test_artifacts::HOSTILE_COMPONENT,
            &burn_config[..],
            "{}",
        ),
        (
            "normalize-text",
            plait_test_artifacts::NORMALIZE_TEXT_PLUGIN,
            &[][..],
            normalize_input.as_str(),
        ),
    ] {
        let mut floor = Duration::ZERO;
        let mut expected = None;
        for (label, epoch, fuel) in [
            ("floor: neither", false, false),
            ("epoch interruption (10 ms tick, async yield)", true, false),
            ("fuel metering alone", false, true),
            ("epoch + fuel (Plait's default)", true, true),
        ] {
            let cpu = support::CpuBound::new(path, epoch, fuel);
            cpu.run(config, input).await;
            let mut samples = Vec::new();
            for _ in 0..scale.burn_iterations {
                let started = Instant::now();
                let out = cpu.run(config, input).await;
                samples.push(started.elapsed());
                // Every engine computes the same output.
                assert_eq!(expected.get_or_insert_with(|| out.clone()), &out);
            }
            let samples = Samples::new(samples);
            if !epoch && !fuel {
                floor = samples.median();
            }
            println!(
                "| {step} | {label} | {} | {} | {:.3}× |",
                ms(samples.median()),
                ms(samples.p99()),
                samples.median().as_secs_f64() / floor.as_secs_f64().max(1e-9)
            );
        }
    }

    println!("\n## Memory\n");
    let in_flight = in_flight_rss(&engine, dir.path(), scale.in_flight).await;
    let in_flight_floor = in_flight_floor_rss(&engine, scale.in_flight).await;
    println!("| what | value | floor | ratio to floor |\n|---|---|---|---|");
    println!(
        "| host RSS idle: engine + store open (floor: engine only) | {:.1} MiB | {:.1} MiB | {} |",
        idle as f64 / (1 << 20) as f64,
        engine_only as f64 / (1 << 20) as f64,
        ratio_of(idle as f64, engine_only as f64)
    );
    println!(
        "| RSS per in-flight run, {} concurrent runs paused inside a step (floor: the same step called by wasmtime alone) | {:.0} KiB | {:.0} KiB | {} |",
        scale.in_flight,
        in_flight as f64 / 1024.0,
        in_flight_floor as f64 / 1024.0,
        ratio_of(in_flight as f64, in_flight_floor as f64)
    );

    println!("\n## AI steps\n");
    println!(
        "OCR and classify: `cargo bench -p plait-cli --bench ai` (its own command: it needs the pinned models).\n"
    );

    println!(
        "## Summary record (3-step workflow, durable: latency and CPU at concurrency 1, throughput at the best concurrency)\n"
    );
    println!(
        "{}",
        json!({
            "latency_ms": (summary_latency.as_secs_f64() * 1e6).round() / 1000.0,
            "throughput_wf_per_day": (best_durable_rate * 86400.0).round(),
            "cpu_seconds_per_1000_executions": (summary_cpu * 1000.0).round() / 1000.0,
        })
    );
}

/// The throughput table: 3-step no-op runs at 1, 2, 8 and 64 in flight,
/// durable and batched, beside the floor. Returns the durable run's median
/// latency and CPU ms at concurrency 1 and the best durable rate.
async fn throughput_table(
    engine: &plait::engine::Engine,
    dir: &std::path::Path,
    scale: &Scale,
    floor3: &Samples,
) -> (Duration, f64, f64) {
    println!("\n## Throughput: 3-step no-op runs\n");
    println!(
        "| mode | concurrency | runs/s | p50 latency | p99 latency | CPU s / 1000 runs | p50 ÷ floor |\n|---|---|---|---|---|---|---|"
    );
    println!(
        "| floor: 3 wasmtime calls in a row, no executor or store | 1 | {:.0} | {} | {} | | 1.0× |",
        1.0 / floor3.median().as_secs_f64().max(1e-9),
        ms(floor3.median()),
        ms(floor3.p99())
    );
    let plan3 = support::noop_plan(engine, dir, 3).await;
    let (mut summary_latency, mut summary_cpu, mut best_durable_rate) =
        (Duration::ZERO, 0.0f64, 0.0f64);
    for (name, durability) in [
        ("durable", Durability::Durable),
        ("batched", Durability::Batched),
    ] {
        let executor = support::executor(&dir.join(format!("throughput-{name}")), durability);
        for concurrency in [1usize, 2, 8, 64] {
            if scale.quick && concurrency == 64 {
                continue;
            }
            let total = scale.runs_per_worker * concurrency.max(4);
            let (rate, latencies, cpu_per_1000) =
                throughput(&executor, &plan3, concurrency, total).await;
            println!(
                "| {name} | {concurrency} | {rate:.0} | {} | {} | {:.2} | {} |",
                ms(latencies.median()),
                ms(latencies.p99()),
                cpu_per_1000,
                ratio(latencies.median(), floor3.median())
            );
            if durability == Durability::Durable {
                if concurrency == 1 {
                    summary_latency = latencies.median();
                    summary_cpu = cpu_per_1000;
                }
                best_durable_rate = best_durable_rate.max(rate);
            }
        }
    }

    (summary_latency, summary_cpu, best_durable_rate)
}

/// Runs `total` 3-step runs with `concurrency` workers; returns runs per
/// second, per-run latencies, and CPU seconds per 1000 runs.
async fn throughput(
    executor: &Executor,
    plan: &Arc<Plan>,
    concurrency: usize,
    total: usize,
) -> (f64, Samples, f64) {
    let remaining = Arc::new(AtomicUsize::new(total));
    let cpu_before = support::cpu_time();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let executor = executor.clone();
        let plan = plan.clone();
        let remaining = remaining.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let began = Instant::now();
                let report = executor
                    .start(&plan, plait::executor::StartRequest::new(json!({})))
                    .await
                    .unwrap();
                assert_eq!(report.run.status, RunStatus::Succeeded);
                latencies.push(began.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu = support::cpu_time().saturating_sub(cpu_before);
    let rate = total as f64 / elapsed.as_secs_f64();
    (
        rate,
        Samples::new(latencies),
        cpu.as_secs_f64() / total as f64 * 1000.0,
    )
}

/// A succeeded step record with a small output, as the executor writes it.
fn finished_step(run_id: &str, index: u32) -> StepRecord {
    StepRecord {
        status: StepStatus::Succeeded,
        attempts: 1,
        started_at_ms: Some(0),
        finished_at_ms: Some(0),
        duration_ms: Some(0),
        output: Some(json!({"n": 1})),
        ..StepRecord::pending(
            &run_id.into(),
            index,
            &format!("step{index}"),
            "sha256:00",
            Some("echo".into()),
        )
    }
}

/// Times `count` commits of one succeeded step record, as the executor
/// writes after each step.
fn commit_times(dir: &std::path::Path, durability: Durability, count: usize) -> Samples {
    let store = SledStore::open_with(dir, durability).unwrap();
    let mut samples = Vec::with_capacity(count);
    for index in 0..count {
        let record = finished_step("bench", index as u32);
        let started = Instant::now();
        store
            .commit(Commit {
                steps: vec![&record],
                ..Commit::default()
            })
            .unwrap();
        samples.push(started.elapsed());
    }
    Samples::new(samples)
}

/// Writes `count` finished 3-step runs into a fresh store.
fn prefill(dir: &std::path::Path, count: usize) {
    let store = SledStore::open_with(dir, Durability::Batched).unwrap();
    let template = plait::store::RunRecord {
        id: plait::ids::RunId::from(""),
        workflow: plait::store::WorkflowRef {
            name: "bench".into(),
            version: "0.0.0".into(),
            path: "/bench/workflow.yaml".into(),
            digest: plait::digest::digest(b"bench"),
        },
        status: RunStatus::Succeeded,
        created_at_ms: 0,
        updated_at_ms: 0,
        input: json!({"n": 1}),
        input_blobs: Vec::new(),
        output: Some(json!({"n": 1})),
        output_blobs: Vec::new(),
        error: None,
        idempotency_key: None,
        deadline_ms: None,
        trace: None,
        started_by: None,
        interruptions: 0,
    };
    for _ in 0..count {
        let run = plait::store::RunRecord {
            id: plait::ids::RunId::new_v7(),
            ..template.clone()
        };
        let steps: Vec<StepRecord> = (0..3).map(|index| finished_step(&run.id, index)).collect();
        store
            .commit(Commit {
                run: Some(&run),
                steps: steps.iter().collect(),
                ..Commit::default()
            })
            .unwrap();
    }
    drop(store);
}

/// The floor of [`in_flight_rss`]: RSS growth per call while `count` calls
/// of the same sleeping step, made by wasmtime alone, wait inside it.
async fn in_flight_floor_rss(engine: &plait::engine::Engine, count: usize) -> u64 {
    let floor = Arc::new(Floor::of(
        engine,
        plait_test_artifacts::SLOW_COUNTER_COMPONENT,
    ));
    let sleeping = |ms: u64| {
        let floor = floor.clone();
        async move {
            let config = [("sleep_ms".to_owned(), ms.to_string())]
                .into_iter()
                .collect();
            let input = plait::engine::bindings::plait::step::types::Payload {
                json: "{}".into(),
                blobs: Vec::new(),
            };
            floor.call_with(config, input).await;
        }
    };
    sleeping(0).await;
    let before = support::rss_bytes();
    let calls: Vec<_> = (0..count).map(|_| tokio::spawn(sleeping(1500))).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = support::rss_bytes();
    for call in calls {
        call.await.unwrap();
    }
    during.saturating_sub(before) / count as u64
}

/// RSS growth per run while `count` runs wait inside a sleeping step.
async fn in_flight_rss(engine: &plait::engine::Engine, dir: &std::path::Path, count: usize) -> u64 {
    let text = format!(
        "name: in-flight\nsteps:\n  - id: wait\n    uses: {}\n    config:\n      sleep_ms: 1500\n",
        serde_json::to_string(plait_test_artifacts::SLOW_COUNTER_COMPONENT).unwrap()
    );
    let definition =
        plait::definition::Definition::parse(&text, &dir.join("in-flight.yaml")).unwrap();
    let plan = Arc::new(Plan::build(engine, definition).await.unwrap());
    let executor = support::executor(&dir.join("in-flight"), Durability::Batched);
    // One run first, so one-time allocations are not counted per run.
    executor
        .start(&plan, plait::executor::StartRequest::new(json!({})))
        .await
        .unwrap();
    let before = support::rss_bytes();
    let mut runs = Vec::new();
    for _ in 0..count {
        let executor = executor.clone();
        let plan = plan.clone();
        runs.push(tokio::spawn(async move {
            executor
                .start(&plan, plait::executor::StartRequest::new(json!({})))
                .await
                .unwrap()
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = support::rss_bytes();
    for run in runs {
        assert_eq!(run.await.unwrap().run.status, RunStatus::Succeeded);
    }
    during.saturating_sub(before) / count as u64
}
