//! Durable commit latency of the sled journal: one writer, then 16 writers
//! sharing syncs (group commit). Prints medians; run with
//! `cargo run --release -p plait-store --example commit_latency`.

use std::time::Instant;

use plait_store::{Commit, RunStore, SledStore, StepRecord};

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SledStore::open(dir.path()).expect("opening the store");
    let record = |n: u32| {
        StepRecord::pending(
            &format!("run{:06}", n / 8).as_str().into(),
            n % 8,
            "step",
            "sha256:00",
            Some("echo".into()),
        )
    };
    // One writer: every commit waits for its own sync.
    let mut samples: Vec<f64> = (0..2000)
        .map(|n| {
            let step = record(n);
            let start = Instant::now();
            store
                .commit(Commit {
                    steps: vec![&step],
                    ..Commit::default()
                })
                .expect("commit");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    println!(
        "1 writer: median {:.3} ms, p99 {:.3} ms per durable commit",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
    // 16 writers: commits that arrive during a sync share the next one.
    let syncs_before = store.syncs();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..16u32 {
            let store = &store;
            scope.spawn(move || {
                for n in 0..500 {
                    let step = record(100_000 + thread * 1000 + n);
                    store
                        .commit(Commit {
                            steps: vec![&step],
                            ..Commit::default()
                        })
                        .expect("commit");
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "16 writers: {:.0} durable commits/s, {:.1} commits per sync",
        8000.0 / elapsed,
        8000.0 / (store.syncs() - syncs_before) as f64
    );
}
