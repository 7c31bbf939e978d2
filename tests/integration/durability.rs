//! Durability beyond one run: idempotent starts (`--idempotency-key`) and
//! the cross-run step cache (`cache:`). The witness of "not run again" is
//! outside the sandbox: `slow-counter` logs `invoked` through the host on
//! every invocation, and the host prints step logs on stderr.

use std::process::Stdio;
use std::time::Duration;

use plait_test_artifacts::SLOW_COUNTER_COMPONENT;
use serde_json::{Value, json};

use crate::support::*;

/// How many times a step was invoked, by the `invoked` lines on stderr.
fn invocations(output: &std::process::Output) -> usize {
    stderr(output)
        .lines()
        .filter(|line| line.contains(" invoked "))
        .count()
}

/// Starts `plait ARGS` with run events on stderr, waits for a line
/// containing `needle`, then SIGKILLs it; returns that line.
fn kill_at(sandbox: &Sandbox, args: &[&str], needle: &str) -> String {
    use std::io::BufRead as _;
    let mut child = sandbox
        .plait()
        .args(args)
        .env("PLAIT_LOG", "warn,plait::step=info,plait::executor=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let found = lines
        .map_while(Result::ok)
        .find(|line| line.contains(needle));
    child.kill().unwrap();
    child.wait().unwrap();
    found.unwrap_or_else(|| panic!("`plait {}` never logged `{needle}`", args.join(" ")))
}

/// The run id in a log line.
fn run_field(line: &str) -> String {
    run_id_in(line)
}

fn workflow(sandbox: &Sandbox, name: &str, step: &str) {
    sandbox.write(
        name,
        format!(
            "name: durable\nsteps:\n  - id: count\n    uses: {}\n{step}",
            yaml_path(SLOW_COUNTER_COMPONENT)
        ),
    );
}

fn run(sandbox: &Sandbox, args: &[&str]) -> (std::process::Output, Value) {
    let output = sandbox.run(args);
    let report = if output.status.code() == Some(2) {
        Value::Null
    } else {
        json(&output)
    };
    (output, report)
}

#[test]
fn an_idempotency_key_gives_back_the_same_run_and_refuses_another_input() {
    let sandbox = Sandbox::new();
    workflow(&sandbox, "workflow.yaml", "");
    sandbox.write("a.json", r#"{"order": 1, "lines": [1, 2]}"#);
    // The same document with its keys in another order.
    sandbox.write("a-again.json", r#"{"lines": [1, 2], "order": 1}"#);
    sandbox.write("b.json", r#"{"order": 2}"#);
    let args = |input: &'static str| -> Vec<&'static str> {
        vec![
            "run",
            "workflow.yaml",
            "--input",
            input,
            "--idempotency-key",
            "order-1",
            "--json",
        ]
    };

    let (first, report) = run(&sandbox, &args("a.json"));
    assert_exit(&first, 0);
    assert_eq!(invocations(&first), 1);
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(report["idempotency_key"], "order-1");

    let (again, report) = run(&sandbox, &args("a-again.json"));
    assert_exit(&again, 0);
    assert_eq!(report["run_id"], run_id.as_str(), "the same run");
    assert_eq!(invocations(&again), 0, "nothing ran again");

    let (other, _) = run(&sandbox, &args("b.json"));
    assert_exit(&other, 2);
    let error = stderr(&other);
    assert!(
        error.contains(&format!(
            "idempotency key `order-1` was used for run `{run_id}`"
        )),
        "{error}"
    );
    assert_eq!(invocations(&other), 0);

    let (empty, _) = run(
        &sandbox,
        &["run", "workflow.yaml", "--idempotency-key", "", "--json"],
    );
    assert_exit(&empty, 2);
    assert!(
        stderr(&empty).contains("invalid idempotency key"),
        "{}",
        stderr(&empty)
    );

    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");
}

#[test]
fn repeating_a_keyed_run_after_a_kill_continues_it() {
    let sandbox = Sandbox::new();
    // Sleeps on its first attempt only.
    workflow(
        &sandbox,
        "workflow.yaml",
        "    config: { sleep_ms: 600000 }\n",
    );
    // SIGKILL once the step is running (it logged `invoked`).
    kill_at(
        &sandbox,
        &["run", "workflow.yaml", "--idempotency-key", "job-7"],
        " invoked ",
    );

    let (again, report) = run(
        &sandbox,
        &[
            "run",
            "workflow.yaml",
            "--idempotency-key",
            "job-7",
            "--json",
        ],
    );
    assert_exit(&again, 0);
    assert_eq!(report["status"], "succeeded");
    // The interrupted attempt counted; the same key, attempt 2.
    assert_eq!(report["output"]["attempt"], 2);
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");
}

#[test]
fn a_cached_step_is_reused_across_runs_for_the_same_input_only() {
    let sandbox = Sandbox::new();
    workflow(&sandbox, "workflow.yaml", "    cache: true\n");
    sandbox.write("a.json", r#"{"doc": "a"}"#);
    sandbox.write("b.json", r#"{"doc": "b"}"#);
    let run_with = |input: &str| {
        run(
            &sandbox,
            &["run", "workflow.yaml", "--input", input, "--json"],
        )
    };

    let (first, report) = run_with("a.json");
    assert_exit(&first, 0);
    assert_eq!(invocations(&first), 1);
    let first_run = report["run_id"].as_str().unwrap().to_owned();
    let first_output = report["output"].clone();
    assert!(report["steps"][0]["cache_hit"].is_null());

    let (second, report) = run_with("a.json");
    assert_exit(&second, 0);
    assert_eq!(invocations(&second), 0, "reused, not run");
    let hit = &report["steps"][0]["cache_hit"];
    assert_eq!(hit["run_id"], first_run.as_str(), "{report:#}");
    assert_eq!(hit["step_id"], "count");
    assert_eq!(report["output"], first_output);
    assert_ne!(report["run_id"], first_run.as_str());

    let (other, report) = run_with("b.json");
    assert_exit(&other, 0);
    assert_eq!(invocations(&other), 1, "another input is another entry");
    assert!(report["steps"][0]["cache_hit"].is_null());
    assert_eq!(report["output"]["input"], json!({"doc": "b"}));
}

#[test]
fn a_cache_entry_expires_after_its_time_to_live() {
    let sandbox = Sandbox::new();
    workflow(&sandbox, "workflow.yaml", "    cache: 400ms\n");
    let (first, _) = run(&sandbox, &["run", "workflow.yaml", "--json"]);
    assert_exit(&first, 0);
    assert_eq!(invocations(&first), 1);
    std::thread::sleep(Duration::from_millis(600));
    let (later, report) = run(&sandbox, &["run", "workflow.yaml", "--json"]);
    assert_exit(&later, 0);
    assert_eq!(invocations(&later), 1, "expired: run again");
    assert!(report["steps"][0]["cache_hit"].is_null());
}

/// Two executors on one store (as two hosts would be on a shared backend):
/// while one runs a run, the other cannot take it; once it is done, the
/// other gets the finished run back without executing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_executed_by_one_executor_at_a_time() {
    use std::sync::Arc;

    use plait::definition::Definition;
    use plait::engine::{Engine, EngineOptions};
    use plait::executor::{Executor, ExecutorError};
    use plait::plan::Plan;
    use plait::store::{RunStatus, RunStore as _, SledStore, StepStatus, StoreError};

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(&EngineOptions {
        cache_dir: Some(shared_cache()),
        ..EngineOptions::default()
    })
    .unwrap();
    let text = format!(
        "name: leased\nsteps:\n  - id: slow\n    uses: {}\n    config: {{ sleep_ms: 1500 }}\n",
        yaml_path(SLOW_COUNTER_COMPONENT)
    );
    let definition = Definition::parse(&text, &dir.path().join("workflow.yaml")).unwrap();
    let plan = Arc::new(Plan::build(&engine, definition).await.unwrap());
    let store = Arc::new(SledStore::open(&dir.path().join("journal")).unwrap());
    let first = Executor::new(store.clone());
    let second = Executor::new(store.clone());

    let running = {
        let (first, plan) = (first.clone(), plan.clone());
        tokio::spawn(async move {
            first
                .start(&plan, plait::executor::StartRequest::new(json!({})))
                .await
        })
    };
    // Wait until the step runs.
    let run_id = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let runs = store.runs().unwrap();
        if let Some(run) = runs.first()
            && store.steps(&run.id).unwrap()[0].status == StepStatus::Running
        {
            break run.id.clone();
        }
    };
    match second.resume(&plan, &run_id).await {
        Err(ExecutorError::Store(StoreError::LeaseHeld { run_id: held, .. })) => {
            assert_eq!(held, run_id)
        }
        other => panic!("a second executor took a leased run: {other:?}"),
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.run.status, RunStatus::Succeeded);
    // Released: the second executor now gets the finished run, runs nothing.
    let again = second.resume(&plan, &run_id).await.unwrap();
    assert_eq!(again.run.status, RunStatus::Succeeded);
    assert_eq!(again.steps[0].attempts, 1);
}

#[test]
fn gc_removes_finished_runs_and_their_blobs_but_never_what_a_waiting_run_needs() {
    use plait_test_artifacts::{ECHO_COMPONENT, NORMALIZE_TEXT_PLUGIN};

    let sandbox = Sandbox::new();
    sandbox.write(
        "finished.yaml",
        format!(
            "name: finished\nsteps:\n  - id: normalize\n    uses: {}\n    input: {{ text: \"${{ .input.text }}\" }}\n",
            yaml_path(NORMALIZE_TEXT_PLUGIN)
        ),
    );
    sandbox.write(
        "waiting.yaml",
        format!(
            "name: waiting\nsteps:\n  - id: approve\n    type: wait\n  - id: after\n    uses: {}\n    blobs: \"${{ .blobs }}\"\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    for text in ["first  text", "second  text"] {
        sandbox.write("input.json", json!({ "text": text }).to_string());
        assert_exit(
            &sandbox.run(&["run", "finished.yaml", "--input", "input.json", "--json"]),
            0,
        );
    }
    // A run left waiting for a signal by a killed host, with an input blob.
    sandbox.write("document.txt", "keep me");
    let run_id = run_field(&kill_at(
        &sandbox,
        &["run", "waiting.yaml", "--file", "document=document.txt"],
        "waiting for a signal",
    ));

    let dry = json(&sandbox.run(&["gc", "--older-than", "0s", "--dry-run", "--json"]));
    assert_eq!(dry["runs"], 2, "{dry:#}");
    assert!(dry["blobs"].as_u64().unwrap() >= 2, "{dry:#}");
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "a dry run removes nothing"
    );

    let collected = json(&sandbox.run(&["gc", "--older-than", "0s", "--json"]));
    assert_eq!(collected["runs"], 2);
    assert_eq!(collected["kept_runs"], 1);
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["run_id"], run_id.as_str());
    let check = sandbox.run(&["store", "check", "--json"]);
    assert_exit(&check, 0);
    assert_eq!(json(&check)["problems"], json!([]));

    // The waiting run still has its blob, definition and components.
    let output = sandbox.run(&["signal", &run_id, "approve", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["output_blobs"][0]["name"], "document");
    assert_eq!(report["output_blobs"][0]["size"], 7);
}

#[test]
fn resume_all_continues_every_run_left_in_flight_but_not_those_awaiting_a_signal() {
    let sandbox = Sandbox::new();
    workflow(
        &sandbox,
        "workflow.yaml",
        "    config: { sleep_ms: 800, sleep_every_attempt: true }\n  - id: second\n    uses: SLOW\n    config: { sleep_ms: 300, sleep_every_attempt: true }\n",
    );
    let text = std::fs::read_to_string(sandbox.dir.path().join("workflow.yaml"))
        .unwrap()
        .replace("SLOW", &yaml_path(SLOW_COUNTER_COMPONENT));
    sandbox.write("workflow.yaml", text);
    sandbox.write(
        "waiting.yaml",
        "name: waiting\nsteps:\n  - id: approve\n    type: wait\n",
    );
    sandbox.write("inputs.jsonl", "{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3}\n");

    // A host waiting for a signal, killed.
    kill_at(&sandbox, &["run", "waiting.yaml"], "waiting for a signal");

    // A batch killed while its runs are inside their first step.
    let mut batch = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--batch", "inputs.jsonl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    batch.kill().unwrap();
    batch.wait().unwrap();
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    let in_flight = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["status"] == "running")
        .count();
    assert!(in_flight >= 1, "{listed:#}");

    let output = sandbox.run(&["resume", "--all", "--json"]);
    assert_exit(&output, 0);
    let reports = json(&output);
    assert_eq!(reports.as_array().unwrap().len(), in_flight);
    assert!(
        reports
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded")
    );
    assert!(
        stderr(&output).contains("waits for a signal"),
        "{}",
        stderr(&output)
    );
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|run| run["status"] == "waiting")
            .count(),
        1
    );
}

#[test]
fn an_input_over_the_hosts_limit_is_refused_before_anything_is_stored() {
    let sandbox = Sandbox::new();
    workflow(&sandbox, "workflow.yaml", "");
    sandbox.write("plait.toml", "[runtime]\nmax_input = \"1KiB\"\n");
    sandbox.write("big.bin", vec![b'x'; 2048]);
    let output = sandbox.run(&[
        "run",
        "workflow.yaml",
        "--policy",
        "plait.toml",
        "--file",
        "document=big.bin",
    ]);
    assert_exit(&output, 2);
    let error = stderr(&output);
    assert!(
        error.contains(
            "the run's input weighs 2 KiB (blob `document` 2 KiB), over this host's limit of 1 KiB"
        ),
        "{error}"
    );
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(runs, json!([]));
    // Within the limit it runs.
    sandbox.write("small.bin", vec![b'x'; 512]);
    let output = sandbox.run(&[
        "run",
        "workflow.yaml",
        "--policy",
        "plait.toml",
        "--file",
        "document=small.bin",
    ]);
    assert_exit(&output, 0);
}

/// A disk that refuses writes (here: a file size limit, as a full disk
/// would) stops the host with a clear error instead of hanging, loses
/// nothing committed before, and the run goes on with `plait resume --all`
/// once writes work again.
#[test]
fn a_store_that_cannot_write_stops_the_host_cleanly_and_the_run_resumes_later() {
    use plait_test_artifacts::HOSTILE_COMPONENT;

    let sandbox = Sandbox::new();
    let write = |name: &str, bytes: u32| {
        sandbox.write(
            name,
            format!(
                "name: big\nlimits: {{ output: 64MiB }}\nsteps:\n  - id: big\n    uses: {}\n    config: {{ attack: giant-blob, bytes: \"{bytes}\" }}\n",
                yaml_path(HOSTILE_COMPONENT)
            ),
        );
    };
    write("small.yaml", 1000);
    write("big.yaml", 3_000_001);
    assert_exit(&sandbox.run(&["run", "small.yaml"]), 0);

    // Files may not grow past 1 MiB: the 3 MB output cannot be written.
    let output = sandbox
        .shell("ulimit -f 1024; trap '' XFSZ; exec \"$PLAIT\" run big.yaml")
        .env("PLAIT", env!("CARGO_BIN_EXE_plait"))
        .env("PLAIT_STORE_TIMEOUT", "3s")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let error = stderr(&output);
    assert!(
        error.contains("has not finished a write in 3s: is the disk full"),
        "{error}"
    );

    // Room again: nothing was lost, and the interrupted run finishes.
    let check = sandbox.run(&["store", "check", "--json"]);
    assert_exit(&check, 0);
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(listed[0]["status"], "succeeded", "{listed:#}");
    let resumed = sandbox.run(&["resume", "--all", "--json"]);
    assert_exit(&resumed, 0);
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|run| run["status"] == "succeeded"),
        "{listed:#}"
    );
}

#[test]
fn with_recover_on_plait_run_continues_what_a_dead_host_left_in_flight() {
    let sandbox = Sandbox::new();
    // Sleeps on its first attempt only, so the continued attempt is quick.
    workflow(&sandbox, "slow.yaml", "    config: { sleep_ms: 600000 }\n");
    workflow(&sandbox, "quick.yaml", "");
    sandbox.write("plait.toml", "[runtime]\nrecover = true\n");
    kill_at(&sandbox, &["run", "slow.yaml"], " invoked ");

    // Without the setting, another run leaves it alone.
    assert_exit(&sandbox.run(&["run", "quick.yaml"]), 0);
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(listed[0]["status"], "running", "{listed:#}");

    let output = sandbox.run(&["run", "quick.yaml", "--policy", "plait.toml"]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("recovered run"),
        "{}",
        stderr(&output)
    );
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|run| run["status"] == "succeeded"),
        "{listed:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pins_the_component_bytes_its_plan_loaded_not_the_file_as_it_is_now() {
    use plait::definition::Definition;
    use plait::digest::digest;
    use plait::engine::{Engine, EngineOptions};
    use plait::executor::{Executor, StartRequest};
    use plait::plan::Plan;
    use plait::store::{RunStatus, RunStore as _, SledStore};

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(&EngineOptions {
        cache_dir: Some(shared_cache()),
        ..EngineOptions::default()
    })
    .unwrap();
    let original = std::fs::read(SLOW_COUNTER_COMPONENT).unwrap();
    let component = dir.path().join("step.wasm");
    std::fs::write(&component, &original).unwrap();
    let text = format!(
        "name: pinned\nsteps:\n  - id: count\n    uses: {}\n",
        yaml_path(component.to_str().unwrap())
    );
    let definition = Definition::parse(&text, &dir.path().join("workflow.yaml")).unwrap();
    let plan = Plan::build(&engine, definition).await.unwrap();
    // Replaced after the plan checked it: the run must not see the new file.
    std::fs::write(&component, b"\0asm not the component that was checked").unwrap();
    let store = std::sync::Arc::new(SledStore::open(&dir.path().join("journal")).unwrap());
    let report = Executor::new(store.clone())
        .start(&plan, StartRequest::new(json!({})))
        .await
        .unwrap();
    assert_eq!(report.run.status, RunStatus::Succeeded);
    let pinned = store
        .blob(&report.steps[0].component_digest)
        .unwrap()
        .expect("the component is pinned in the blob store");
    assert_eq!(
        pinned, original,
        "the bytes the plan loaded, not the file's"
    );
    assert_eq!(digest(&original), report.steps[0].component_digest);
}

/// `durable` means on disk: every commit is appended to the journal's
/// write-ahead log (`journal/wal/`) and `fdatasync`ed before it returns
/// (sled's own flush is `sync_file_range`, which flushes neither the
/// drive's cache nor the file's size). A power cut cannot be staged here,
/// so the test watches the syscalls (strace, installed by `scripts/test`):
/// a 3-step run commits its creation, each step's start, each step's end
/// (the one before sharing a commit with the next one's start) and its
/// own end; creation does not wait, the first step's start covers it, so
/// at least four commits wait for a sync (one run, nothing to group with),
/// every sync succeeds, and the folders the log's files and sled's files
/// were created in are synced too.
#[test]
fn every_commit_of_a_durable_run_is_fdatasynced_to_the_journal() {
    let sandbox = Sandbox::new();
    let echo = yaml_path(plait_test_artifacts::ECHO_COMPONENT);
    sandbox.write(
        "three.yaml",
        format!(
            "name: three\nsteps:\n  - id: a\n    uses: {echo}\n  - id: b\n    uses: {echo}\n    needs: [a]\n  - id: c\n    uses: {echo}\n    needs: [b]\n"
        ),
    );
    let trace = sandbox.dir.path().join("syncs.trace");
    let output = sandbox
        .shell(r#"exec strace -f -qq -y -e trace=fdatasync,fsync -o "$TRACE" "$PLAIT" run three.yaml --input '{"n": 1}' --json"#)
        .env("TRACE", &trace)
        .env("PLAIT", env!("CARGO_BIN_EXE_plait"))
        .output()
        .expect("running strace (apt-get install strace; scripts/test does)");
    assert_exit(&output, 0);
    assert_eq!(json(&output)["status"], "succeeded");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let journal = sandbox.store().join("journal");
    let journal = journal.to_str().unwrap();
    let log_syncs: Vec<&str> = trace
        .lines()
        .filter(|line| line.contains("fdatasync(") && line.contains(&format!("{journal}/wal/")))
        .collect();
    assert!(
        log_syncs.len() >= 4,
        "{} fdatasync of the journal's write-ahead log for a 3-step run:\n{trace}",
        log_syncs.len()
    );
    assert!(
        log_syncs
            .iter()
            .all(|line| line.trim_end().ends_with("= 0")),
        "a sync failed:\n{trace}"
    );
    // The folders the journal's files were created in are synced too, and
    // sled's own log at the checkpoints (opening and closing the store).
    for synced in [format!("{journal}>"), format!("{journal}/wal>")] {
        assert!(
            trace
                .lines()
                .any(|line| line.contains("fsync(") && line.contains(&synced)),
            "`{synced}` is never synced:\n{trace}"
        );
    }
    assert!(
        trace
            .lines()
            .any(|line| line.contains("fdatasync(") && line.contains(&format!("{journal}/db>"))),
        "sled's log is never synced:\n{trace}"
    );
}

/// `fdatasync`s of the journal's write-ahead log while `plait run` runs
/// `file`.
fn log_syncs(sandbox: &Sandbox, file: &str) -> usize {
    let trace = sandbox.dir.path().join(format!("{file}.trace"));
    let output = sandbox
        .shell(r#"exec strace -f -qq -y -e trace=fdatasync -o "$TRACE" "$PLAIT" run "$FILE" --input '{"n": 1}' --json"#)
        .env("TRACE", &trace)
        .env("FILE", file)
        .env("PLAIT", env!("CARGO_BIN_EXE_plait"))
        .output()
        .expect("running strace (apt-get install strace; scripts/test does)");
    assert_exit(&output, 0);
    assert_eq!(json(&output)["status"], "succeeded");
    let journal = sandbox.store().join("journal");
    let log = format!("{}/wal/", journal.to_str().unwrap());
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|line| line.contains("fdatasync(") && line.contains(&log))
        .count()
}

/// A step's `succeeded` record shares a commit with the next step's
/// `running` one (docs/architecture.md, "What reaches the disk"): each
/// further step of a chain costs one synced commit, not two. Counted on
/// the journal's log with strace, a 1-step and a 3-step run of JSON-only
/// steps, each in a fresh home.
#[test]
fn a_steps_success_shares_the_sync_of_the_next_steps_start() {
    let echo = yaml_path(plait_test_artifacts::ECHO_COMPONENT);
    let one = Sandbox::new();
    one.write(
        "one.yaml",
        format!("name: one\nsteps:\n  - id: a\n    uses: {echo}\n"),
    );
    let three = Sandbox::new();
    three.write(
        "three.yaml",
        format!(
            "name: three\nsteps:\n  - id: a\n    uses: {echo}\n  - id: b\n    uses: {echo}\n    needs: [a]\n  - id: c\n    uses: {echo}\n    needs: [b]\n"
        ),
    );
    let (one, three) = (log_syncs(&one, "one.yaml"), log_syncs(&three, "three.yaml"));
    assert_eq!(
        three - one,
        2,
        "two more steps took {} more syncs ({one} for one step, {three} for three)",
        three - one
    );
}

/// A commit acknowledged to a step is in the journal when the process dies
/// right after it: `second` needs `first`, so it is invoked only once the
/// commit of `first`'s output returned. A SIGKILL the moment `second` logs
/// `invoked` finds `first` succeeded with its output stored, and a resume
/// runs `second` alone.
#[test]
fn a_commit_acknowledged_before_a_sigkill_is_in_the_journal() {
    let sandbox = Sandbox::new();
    let slow = yaml_path(SLOW_COUNTER_COMPONENT);
    sandbox.write(
        "two.yaml",
        format!(
            "name: two\nsteps:\n  - id: first\n    uses: {slow}\n  - id: second\n    uses: {slow}\n    needs: [first]\n    config: {{ sleep_ms: 600000 }}\n"
        ),
    );
    let line = kill_at(&sandbox, &["run", "two.yaml"], "step_id=second");
    assert!(line.contains(" invoked "), "{line}");
    let run_id = run_field(&line);

    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(steps[0]["id"], "first");
    assert_eq!(steps[0]["status"], "succeeded", "{shown:#}");
    assert_eq!(steps[0]["output"]["attempt"], 1, "{shown:#}");
    assert_eq!(steps[1]["status"], "running", "{shown:#}");

    let (resumed, report) = run(&sandbox, &["resume", &run_id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(invocations(&resumed), 1, "only `second` ran again");
}
