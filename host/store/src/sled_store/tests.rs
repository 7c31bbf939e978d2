//! The sled journal against a real database on disk.

use super::*;
use crate::logs::StepLogs;
use crate::{BlobRef, Fence, RunStatus, WorkflowRef};

/// Opens the store again after the last handle was dropped: sled
/// releases its file lock from a background thread, so wait for it.
fn reopen(path: &Path) -> SledStore {
    for _ in 0..50 {
        match SledStore::open(path) {
            Err(StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            other => return other.unwrap(),
        }
    }
    panic!("the store stays locked");
}

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        workflow: WorkflowRef {
            name: "w".into(),
            version: "1".into(),
            path: "/w.yaml".into(),
            digest: crate::digest::digest(b"definition"),
        },
        status: RunStatus::Running,
        created_at_ms: 1,
        updated_at_ms: 1,
        input: serde_json::json!({"a": 1}),
        input_blobs: vec![BlobRef {
            name: "doc".into(),
            media_type: "text/plain".into(),
            digest: crate::digest::digest(b"abc"),
            size: 3,
        }],
        output: None,
        output_blobs: Vec::new(),
        error: None,
        idempotency_key: None,
        deadline_ms: None,
        trace: None,
        started_by: Some("user:test".into()),
        interruptions: 0,
    }
}

fn step(run_id: &str, index: u32) -> StepRecord {
    StepRecord::pending(
        &run_id.into(),
        index,
        &format!("s{index}"),
        "sha256:cd",
        Some("echo".into()),
    )
}

#[test]
fn a_lost_lease_fences_its_holder_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let record = run("r1");
    store
        .commit(Commit {
            run: Some(&record),
            ..Commit::default()
        })
        .unwrap();
    let first = store.acquire_lease("r1", "a", 60_000).unwrap();
    assert_eq!(first.token, 1);
    // Held: another holder is refused.
    assert!(matches!(
        store.acquire_lease("r1", "b", 60_000),
        Err(StoreError::LeaseHeld { .. })
    ));
    // `a` lets it lapse (ttl 0 on renewal); `b` takes it over.
    store.renew_lease("r1", &first, 0).unwrap();
    let second = store.acquire_lease("r1", "b", 60_000).unwrap();
    assert_eq!(second.token, 2);
    // `a` still believes it holds the run: its commit is refused whole.
    let mut changed = run("r1");
    changed.status = RunStatus::Failed;
    let stale = store.commit(Commit {
        run: Some(&changed),
        fence: Some(Fence {
            run_id: "r1",
            holder: "a",
            token: first.token,
        }),
        ..Commit::default()
    });
    assert!(matches!(stale, Err(StoreError::Fenced(_))), "{stale:?}");
    assert_eq!(store.run("r1").unwrap().unwrap().status, RunStatus::Running);
    assert!(matches!(
        store.renew_lease("r1", &first, 60_000),
        Err(StoreError::Fenced(_))
    ));
    // `b`'s commits go through.
    store
        .commit(Commit {
            run: Some(&changed),
            fence: Some(Fence {
                run_id: "r1",
                holder: "b",
                token: second.token,
            }),
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.run("r1").unwrap().unwrap().status, RunStatus::Failed);
    // Reopening the store (the process that held it is gone) lets the
    // lease lapse, and the next token is higher still.
    drop(store);
    let store = reopen(dir.path());
    let third = store.acquire_lease("r1", "c", 60_000).unwrap();
    assert_eq!(third.token, 3);
}

/// Regression: a lease lapsed at open looked the same as one its
/// holder released, so a host could not tell a run whose host died
/// from one set aside, nor when that host was last heard of.
#[test]
fn a_lease_its_holder_died_with_is_taken_over_at_once_and_named_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let held = store.acquire_lease("died", "a", 60_000).unwrap();
        assert!(held.abandoned.is_none());
        let released = store.acquire_lease("set-aside", "a", 60_000).unwrap();
        store.release_lease("set-aside", &released).unwrap();
        store.flush().unwrap();
        // `a` never releases `died`: the process goes away with it.
    }
    let store = reopen(dir.path());
    let stored = store.lease("died").unwrap().unwrap();
    assert_eq!(stored.expires_at_ms, 0, "lapsed at open");
    assert!(!stored.released);
    // Taken over at once, though its 60 s had not passed.
    let taken = store.acquire_lease("died", "b", 60_000).unwrap();
    let abandoned = taken.abandoned.expect("the dead holder is named");
    assert_eq!(abandoned.holder, "a");
    assert!(abandoned.heard_at_ms > 0);
    let again = store.acquire_lease("set-aside", "b", 60_000).unwrap();
    assert!(again.abandoned.is_none(), "{again:?}");
}

#[test]
fn commits_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let record = run("r1");
    // Eleven steps: the zero-padded keys keep `s10` after `s9`.
    let steps: Vec<StepRecord> = (0..11).map(|index| step("r1", index)).collect();
    let logs = StepLogs::default();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(Commit {
                run: Some(&record),
                steps: steps.iter().collect(),
                blobs: vec![(crate::digest::digest(b"abc").as_str(), b"abc")],
                logs: Some(crate::LogsEntry {
                    run_id: "r1",
                    index: 0,
                    item: None,
                    attempt: 1,
                    logs: &logs,
                }),
                signal: None,
                idempotency: None,
                cache: None,
                fence: None,
                audit: None,
            })
            .unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.run("r1").unwrap(), Some(record));
    let read: Vec<u32> = store.steps("r1").unwrap().iter().map(|s| s.index).collect();
    assert_eq!(read, (0..11).collect::<Vec<_>>());
    assert_eq!(
        store
            .blob(&crate::digest::digest(b"abc"))
            .unwrap()
            .as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(store.logs("r1", 0).unwrap().len(), 1);
    assert!(store.logs("r1", 1).unwrap().is_empty());
    assert_eq!(store.runs().unwrap().len(), 1);
    assert!(store.run("r2").unwrap().is_none());
}

/// Regression: with sled's own background flusher, concurrent commits
/// in batched mode deadlocked (found by the benchmark at 64 concurrent
/// runs). The bound below only turns a hang into a failure.
#[test]
fn concurrent_batched_commits_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open_with(dir.path(), Durability::Batched).unwrap());
    let (done, finished) = std::sync::mpsc::channel();
    for thread in 0..64 {
        let store = store.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let run_id = format!("run{thread}");
            let record = run(&run_id);
            for index in 0..100 {
                let step = step(&run_id, index);
                store
                    .commit(Commit {
                        run: Some(&record),
                        steps: vec![&step],
                        ..Commit::default()
                    })
                    .unwrap();
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..64 {
        finished
            .recv_timeout(std::time::Duration::from_secs(300))
            .expect("concurrent commits deadlocked");
    }
    assert_eq!(store.runs().unwrap().len(), 64);
    assert_eq!(store.steps("run7").unwrap().len(), 100);
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    match SledStore::open(dir.path()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open succeeded"),
    }
}

#[test]
fn a_foreign_sled_database_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("accounts")
            .unwrap()
            .insert("alice", "42")
            .unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(dir.path()) {
        Err(StoreError::Foreign { found, .. }) => {
            assert!(found.contains("accounts"), "{found}")
        }
        Err(other) => panic!("expected Foreign, got {other}"),
        Ok(_) => panic!("a foreign database was accepted"),
    }
    // sled releases its file lock from a background thread after the
    // last handle is dropped; give it a moment rather than racing it.
    let mut attempts = 0;
    let db = loop {
        match sled::open(dir.path()) {
            Ok(db) => break db,
            Err(error) if attempts < 50 => {
                attempts += 1;
                let _ = error;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(error) => panic!("the database stays locked: {error}"),
        }
    };
    assert_eq!(
        db.open_tree("accounts")
            .unwrap()
            .get("alice")
            .unwrap()
            .as_deref(),
        Some(&b"42"[..])
    );
    assert!(
        !db.open_tree("meta")
            .unwrap()
            .contains_key("format")
            .unwrap()
    );
}

#[test]
fn a_store_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format", "plait-journal/99")
            .unwrap();
        db.flush().unwrap();
    }
    // sled releases its file lock from a background thread after the
    // last handle is dropped: wait for it rather than race it.
    let mut opened = SledStore::open(dir.path());
    for _ in 0..50 {
        if !matches!(opened, Err(StoreError::Locked { .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        opened = SledStore::open(dir.path());
    }
    match opened {
        Err(StoreError::Foreign { found, .. }) => {
            assert!(found.contains("plait-journal/99"), "{found}")
        }
        Err(other) => panic!("expected Foreign, got {other}"),
        Ok(_) => panic!("an unknown format was accepted"),
    }
}

#[test]
fn a_damaged_record_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store.runs.insert("r1", "{not json").unwrap();
    match store.run("r1") {
        Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "r1"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Copies the store's folder as it is on disk while the store is open:
/// what a crash at this moment would leave (sled's files, the write-ahead
/// log), minus sled's lock, which belongs to the open process.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_crash_after_durable_commits_loses_none_of_them_and_the_log_replays_once() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = SledStore::open(&live).unwrap();
    let records: Vec<RunRecord> = (0..50).map(|n| run(&format!("r{n:02}"))).collect();
    let mut finished = run("r00");
    finished.status = RunStatus::Succeeded;
    for record in &records {
        store
            .commit(Commit {
                run: Some(record),
                ..Commit::default()
            })
            .unwrap();
    }
    // An event has no sync of its own: it is durable with the next commit.
    store
        .append_event("r00", &serde_json::json!({"kind": "run.succeeded"}))
        .unwrap();
    store
        .commit(Commit {
            run: Some(&finished),
            ..Commit::default()
        })
        .unwrap();
    // No checkpoint has run (the log is far below its size): the commits
    // are in the log, whatever sled has written of its own.
    let log = wal::segments(&wal::dir(&live)).unwrap();
    assert_eq!(log.len(), 1);
    assert!(std::fs::metadata(&log[0]).unwrap().len() > 50 * 100);

    let crashed = dir.path().join("crashed");
    crash_copy(&live, &crashed);
    // A write the crash cut short, after the last acknowledged one.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(wal::segments(&wal::dir(&crashed)).unwrap()[0].clone())
        .unwrap();
    std::io::Write::write_all(&mut torn, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(torn);
    drop(store);

    let reopened = SledStore::open(&crashed).unwrap();
    let runs = reopened.runs().unwrap();
    assert_eq!(runs.len(), 50);
    assert_eq!(runs[0], finished, "the later commit of r00 wins");
    assert_eq!(runs[1..], records[1..]);
    assert_eq!(reopened.events("r00", None).unwrap().len(), 1);
    // The replay ended in a checkpoint: one fresh, empty log file.
    let log = wal::segments(&wal::dir(&crashed)).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(std::fs::metadata(&log[0]).unwrap().len(), 0);
    // New commits go on, numbered after the replayed ones, and survive a
    // second crash.
    reopened
        .commit(Commit {
            run: Some(&run("r99")),
            ..Commit::default()
        })
        .unwrap();
    let again = dir.path().join("again");
    crash_copy(&crashed, &again);
    drop(reopened);
    let store = SledStore::open(&again).unwrap();
    assert_eq!(store.runs().unwrap().len(), 51);
    // A clean close leaves no log to replay.
    drop(store);
    let store = reopen(&again);
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(wal::segments(&wal::dir(&again)).unwrap().is_empty());
}

#[test]
fn a_store_of_format_1_is_upgraded_in_place_to_the_format_an_older_plait_refuses() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(Commit {
                run: Some(&run("r1")),
                ..Commit::default()
            })
            .unwrap();
        store.meta_set("format", FORMAT_1.as_bytes()).unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.run("r1").unwrap(), Some(run("r1")));
    assert_eq!(
        store.meta_get("format").unwrap().as_deref(),
        Some(FORMAT.as_bytes())
    );
}
