//! A run killed with SIGKILL mid-step is finished by `plait resume`, and no
//! finished step runs again.
//!
//! The witness is outside the sandbox: the `slow-counter` guest logs
//! `invoked` through the host at the start of every invocation, the host
//! streams step logs to stderr as they happen, and this test counts those
//! lines across both processes.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use plait_test_artifacts::{ARCHIVE_PLUGIN, NORMALIZE_TEXT_PLUGIN, SLOW_COUNTER_COMPONENT};

use crate::support::*;

/// `(step_id, attempt, idempotency_key)` of every `invoked` line.
fn invocations(lines: &[String]) -> Vec<(String, u32, String)> {
    lines
        .iter()
        .filter(|line| line.contains(" invoked "))
        .map(|line| {
            let field = |name: &str| {
                let start = line
                    .find(&format!(" {name}="))
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
                    + name.len()
                    + 2;
                line[start..].split_whitespace().next().unwrap().to_owned()
            };
            (
                field("step_id"),
                field("attempt").parse().unwrap(),
                field("idempotency_key"),
            )
        })
        .collect()
}

#[test]
fn sigkill_mid_step_then_resume_runs_only_unfinished_steps() {
    let sandbox = Sandbox::new();
    let component = yaml_path(SLOW_COUNTER_COMPONENT);
    sandbox.write(
        "workflow.yaml",
        format!(
            r#"
name: crash
steps:
  - id: first
    uses: {component}
  - id: second
    uses: {component}
    config:
      sleep_ms: 600000
  - id: third
    uses: {component}
"#
        ),
    );
    sandbox.write("input.json", r#"{"document": 7}"#);

    let mut child = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--input", "input.json", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, receiver) = mpsc::channel();
    let child_stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(child_stderr).lines() {
            let line = line.unwrap();
            if line.contains(" invoked ") && line.contains("step_id=second") {
                sender.send(()).ok();
            }
            lines.push(line);
        }
        lines
    });
    // Wait until the second step is inside its (ten-minute) sleep.
    receiver
        .recv_timeout(Duration::from_secs(300))
        .expect("the second step never started");
    // Child::kill sends SIGKILL on Unix.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "plait should have died from SIGKILL");
    let first_lines = reader.join().unwrap();

    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["status"], "running");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_eq!(shown["steps"][0]["status"], "succeeded");
    assert_eq!(shown["steps"][1]["status"], "running");
    assert_eq!(shown["steps"][2]["status"], "pending");

    let resumed = sandbox.run(&["resume", &run_id, "--json"]);
    assert_exit(&resumed, 0);
    let resumed_lines: Vec<String> = stderr(&resumed).lines().map(str::to_owned).collect();
    let report = json(&resumed);
    assert_eq!(report["status"], "succeeded");
    let attempts: Vec<_> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 1]);

    let before = invocations(&first_lines);
    let after = invocations(&resumed_lines);
    let key = |step: &str| format!("{run_id}/{step}");
    assert_eq!(
        before,
        [
            ("first".into(), 1, key("first")),
            ("second".into(), 1, key("second"))
        ],
        "{first_lines:#?}"
    );
    // `first` finished before the kill and is not invoked again; `second`
    // is invoked again with the next attempt and the same idempotency key.
    assert_eq!(
        after,
        [
            ("second".into(), 2, key("second")),
            ("third".into(), 1, key("third"))
        ],
        "{resumed_lines:#?}"
    );
    // The output chain carries the resumed attempt through.
    assert_eq!(report["output"]["input"]["attempt"], 2);
    assert_eq!(report["output"]["input"]["idempotency_key"], key("second"));
    assert_eq!(
        report["output"]["input"]["input"]["input"],
        serde_json::json!({"document": 7})
    );
}

/// A small deterministic generator (xorshift), so a failing crash schedule
/// can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The crash test: many concurrent runs of a workflow with side effects
/// (an archive write, and steps counted outside the sandbox), the host
/// killed with SIGKILL at random moments again and again, and restarted
/// with the same command each time. At the end every run completed, no
/// step that committed its output was invoked again, the archive holds
/// each document exactly once, and the store checks out.
///
/// CI runs a short schedule; `PLAIT_CRASH_RUNS`, `PLAIT_CRASH_KILLS` and
/// `PLAIT_CRASH_SEED` make it longer locally, for example
/// `PLAIT_CRASH_RUNS=200 PLAIT_CRASH_KILLS=50 cargo test -p plait-cli --test integration crash::many`.
#[test]
fn many_concurrent_runs_survive_repeated_sigkills() {
    let runs = env_number("PLAIT_CRASH_RUNS", 24);
    let kills = env_number("PLAIT_CRASH_KILLS", 6);
    sigkill_schedule(runs, kills, 4);
}

/// The same with 64 runs in flight at once in `durable` mode, so that
/// kills land while commits share their syncs (group commit): a commit
/// acknowledged by a shared sync is never lost, and one a kill cut off
/// before its sync is never acknowledged, so its step runs again.
#[test]
fn sixty_four_concurrent_durable_runs_survive_repeated_sigkills() {
    let kills = env_number("PLAIT_CRASH_KILLS", 5);
    sigkill_schedule(64, kills, 64);
}

/// `runs` runs, `concurrency` steps at a time, the host killed `kills`
/// times at random moments; see [`many_concurrent_runs_survive_repeated_sigkills`].
fn sigkill_schedule(runs: u64, kills: u64, concurrency: u64) {
    let seed = env_number("PLAIT_CRASH_SEED", 0x5eed_cafe);
    let mut rng = Rng(seed | 1);
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.dir.path().join("archive")).unwrap();
    sandbox.write(
        "workflow.yaml",
        format!(
            r#"name: crash
steps:
  - id: count
    uses: {slow}
    config: {{ sleep_ms: 600, sleep_every_attempt: true }}
  - id: normalize
    uses: {normalize}
    input: {{ text: "${{ \"document \\(.input.n)\" }}" }}
  - id: archive
    uses: {archive}
    input: {{ label: "crash-test" }}
    blobs: {{ document: "${{ .steps.normalize.blobs.text }}" }}
    grants:
      dirs:
        /archive: {{ path: ./archive, mode: rw }}
  - id: tally
    uses: {slow}
    input: {{ archived: "${{ .steps.archive.output.record.document }}" }}
    config: {{ sleep_ms: 400, sleep_every_attempt: true }}
"#,
            slow = yaml_path(SLOW_COUNTER_COMPONENT),
            normalize = yaml_path(NORMALIZE_TEXT_PLUGIN),
            archive = yaml_path(ARCHIVE_PLUGIN),
        ),
    );
    let lines: String = (0..runs).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    sandbox.write("inputs.jsonl", lines);
    // A few steps at a time per host, so the batch takes a while and kills
    // land everywhere: mid-step, between steps, mid-commit; or all of them
    // at once, so that commits group.
    sandbox.write(
        "plait.toml",
        format!("[runtime]\nconcurrency = {concurrency}\n"),
    );
    let command = [
        "run",
        "workflow.yaml",
        "--batch",
        "inputs.jsonl",
        "--policy",
        "plait.toml",
        "--json",
    ];

    let mut all_lines: Vec<String> = Vec::new();
    let mut killed = 0;
    let mut finished = None;
    for round in 0.. {
        assert!(round < kills + 20, "the batch never finished");
        let mut child = sandbox
            .plait()
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let child_stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(child_stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        if killed < kills {
            // Let it work for a random while, then SIGKILL.
            std::thread::sleep(Duration::from_millis(150 + rng.below(1200)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                all_lines.extend(reader.join().unwrap());
                continue;
            }
        }
        let output = child.wait_with_output().unwrap();
        all_lines.extend(reader.join().unwrap());
        assert_eq!(output.status.code(), Some(0), "{}", all_lines.join("\n"));
        finished = Some(serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap());
        break;
    }
    let reports = finished.unwrap();
    let reports = reports.as_array().unwrap();
    println!("{runs} runs, {killed} kills (seed {seed:#x})");

    // Every run completed, one run per input line.
    assert_eq!(reports.len() as u64, runs);
    assert!(reports.iter().all(|report| report["status"] == "succeeded"));
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(
        listed.as_array().unwrap().len() as u64,
        runs,
        "no duplicate runs"
    );

    // No committed step was invoked again: per run and step, each attempt
    // was invoked at most once, and none after the recorded last attempt
    // (an invocation whose log line the kill cut off may be missing).
    let invoked = invocations(&all_lines);
    for report in reports {
        let run_id = report["run_id"].as_str().unwrap();
        for step in ["count", "tally"] {
            let recorded = report["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == step)
                .unwrap()["attempts"]
                .as_u64()
                .unwrap() as u32;
            let mut attempts: Vec<u32> = invoked
                .iter()
                .filter(|(id, _, key)| id == step && key == &format!("{run_id}/{step}"))
                .map(|(_, attempt, _)| *attempt)
                .collect();
            attempts.sort_unstable();
            let distinct = {
                let mut d = attempts.clone();
                d.dedup();
                d
            };
            assert_eq!(attempts, distinct, "{run_id}/{step}: an attempt ran twice");
            assert!(
                attempts.iter().all(|attempt| *attempt <= recorded),
                "{run_id}/{step}: invoked after its output was committed ({attempts:?}, recorded {recorded})"
            );
        }
    }

    // The archive holds each document once and one record per run.
    let archive = sandbox.dir.path().join("archive");
    let count = |dir: &str| std::fs::read_dir(archive.join(dir)).unwrap().count() as u64;
    assert_eq!(count("documents"), runs);
    assert_eq!(count("records"), runs);

    // The store checks out.
    let check = sandbox.run(&["store", "check", "--json"]);
    assert_exit(&check, 0);
    let check = json(&check);
    assert_eq!(check["runs"].as_u64(), Some(runs));
    assert_eq!(check["problems"], serde_json::json!([]));
}
