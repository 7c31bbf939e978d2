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

use plait_test_artifacts::SLOW_COUNTER_COMPONENT;

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
