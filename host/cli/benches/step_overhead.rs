//! Criterion benchmark of the per-step cost: the raw wasmtime floor beside
//! one no-op step run through Plait's executor in each durability mode.
//!
//! `cargo bench -p plait-cli --bench step_overhead`

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use plait::store::Durability;

fn step_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = support::engine(None);
    let floor = support::Floor::new(&engine);
    let plan = runtime.block_on(support::noop_plan(&engine, dir.path(), 1));

    let mut group = c.benchmark_group("one no-op step");
    group.bench_function("wasmtime floor", |b| {
        b.to_async(&runtime).iter(|| floor.call())
    });
    for (name, durability) in [
        ("plait durable", Durability::Durable),
        ("plait batched", Durability::Batched),
    ] {
        let store_dir = dir.path().join(name.replace(' ', "-"));
        let executor = support::executor(&store_dir, durability);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let report = executor
                    .start(
                        &plan,
                        plait::executor::StartRequest::new(serde_json::json!({})),
                    )
                    .await
                    .unwrap();
                assert_eq!(report.run.status, plait::store::RunStatus::Succeeded);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, step_overhead);
criterion_main!(benches);
