//! A host killed with SIGKILL and the next one taking over: what it says it
//! recovered, what `runs show` says of a run whose host is gone, the
//! interrupted attempt kept in the history, and a run that kills its host
//! on every recovery failed instead of resumed for ever.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use plait_test_artifacts::SLOW_COUNTER_COMPONENT;

use crate::support::*;

/// Starts `plait ARGS`, waits until `count` of its stderr lines contain
/// `needle`, then SIGKILLs it. Returns its stderr so far.
fn kill_after(sandbox: &Sandbox, args: &[&str], needle: &str, count: usize) -> Vec<String> {
    let mut child = KillOnDrop(
        sandbox
            .plait()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (sender, receiver) = mpsc::channel();
    let child_stderr = child.stderr.take().unwrap();
    let wanted = needle.to_owned();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
            if line.contains(&wanted) {
                sender.send(()).ok();
            }
            lines.push(line);
        }
        lines
    });
    for _ in 0..count {
        receiver
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("`plait {}` never logged `{needle}`", args.join(" ")));
    }
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().code(), None, "killed by SIGKILL");
    reader.join().unwrap()
}

/// A workflow whose `second` step sleeps ten minutes on its first attempt
/// (or on every attempt with `every`), between two quick steps.
fn slow_workflow(sandbox: &Sandbox, every: bool) {
    sandbox.write(
        "workflow.yaml",
        format!(
            r#"
name: recovery
steps:
  - id: first
    uses: {component}
  - id: second
    uses: {component}
    config:
      sleep_ms: 600000
      sleep_every_attempt: {every}
  - id: third
    uses: {component}
"#,
            component = yaml_path(SLOW_COUNTER_COMPONENT)
        ),
    );
}

#[test]
fn a_run_whose_host_was_killed_shows_interrupted_and_keeps_the_attempt_after_resume() {
    let sandbox = Sandbox::new();
    slow_workflow(&sandbox, false);
    kill_after(
        &sandbox,
        &["run", "workflow.yaml"],
        "invoked step_id=second",
        1,
    );
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    // Not `running` with a growing bar: interrupted, when last heard of,
    // and how to go on.
    let shown = sandbox.run(&["runs", "show", &run_id]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    let status = text
        .lines()
        .find(|line| line.starts_with("status"))
        .unwrap();
    assert!(status.contains("interrupted"), "{text}");
    assert!(status.contains("last heard of"), "{text}");
    assert!(status.contains(&format!("plait resume {run_id}")), "{text}");
    assert!(
        !text
            .lines()
            .any(|line| line.split_whitespace().any(|word| word == "running")
                && !line.starts_with("status")),
        "no step or attempt is shown running: {text}"
    );
    assert!(
        !text.contains('…'),
        "no attempt is shown still going: {text}"
    );
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_eq!(
        shown["interrupted"]["continue_with"],
        format!("plait resume {run_id}")
    );
    assert!(shown["interrupted"]["last_heard_at_ms"].as_u64().unwrap() > 0);

    let resumed = sandbox.run(&["resume", &run_id, "--json"]);
    assert_exit(&resumed, 0);
    assert_eq!(json(&resumed)["status"], "succeeded");

    // The attempt the host died in is in the step's history.
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    let history = shown["steps"][1]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0]["attempt"], 1);
    assert_eq!(history[0]["interrupted"], true);
    assert!(history[0]["error"].is_null());
    assert!(
        history[0]["finished_at_ms"].as_u64() >= history[0]["started_at_ms"].as_u64(),
        "{history:#?}"
    );
    assert_eq!(history[1]["attempt"], 2);
    assert!(history[1].get("interrupted").is_none());
    let text = stdout(&sandbox.run(&["runs", "show", &run_id]));
    let row = text
        .lines()
        .find(|line| line.trim_start().starts_with("attempt 1") && line.contains("interrupted"))
        .unwrap_or_else(|| panic!("no interrupted attempt in the timeline:\n{text}"));
    assert!(row.contains("the host stopped during it"), "{row}");
}

#[test]
fn resume_all_after_a_kill_says_what_it_recovered() {
    let sandbox = Sandbox::new();
    slow_workflow(&sandbox, false);
    sandbox.write(
        "inputs.jsonl",
        (0..4)
            .map(|n| format!("{{\"n\": {n}}}\n"))
            .collect::<String>(),
    );
    kill_after(
        &sandbox,
        &["run", "workflow.yaml", "--batch", "inputs.jsonl"],
        "invoked step_id=second",
        4,
    );
    let output = sandbox.run(&["resume", "--all", "--json"]);
    assert_exit(&output, 0);
    let reports = json(&output);
    assert_eq!(reports.as_array().unwrap().len(), 4);
    let log = stderr(&output);
    let line = log
        .lines()
        .find(|line| line.contains("recovered 4 runs in "))
        .unwrap_or_else(|| panic!("no recovery line:\n{log}"));
    assert!(line.contains("(4 steps interrupted, 0 waiting)"), "{line}");
    // Taken over at once, not after the dead host's 30 s lease.
    let ms: u64 = line
        .split("runs in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap();
    assert!(ms < 30_000, "{line}");
    // With nothing left, nothing is said to be recovered.
    let output = sandbox.run(&["resume", "--all"]);
    assert_exit(&output, 0);
    assert!(
        !stderr(&output).contains("recovered"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_run_that_kills_its_host_on_every_recovery_is_failed_after_three() {
    let sandbox = Sandbox::new();
    // Every attempt of `second` outlasts the test: each host dies in it.
    slow_workflow(&sandbox, true);
    kill_after(
        &sandbox,
        &["run", "workflow.yaml"],
        "invoked step_id=second",
        1,
    );
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    // The host dies in it twice more, each time after taking it over.
    for _ in 0..2 {
        kill_after(&sandbox, &["resume", "--all"], "invoked step_id=second", 1);
    }

    // The third takeover does not run it again: it fails it.
    let output = sandbox.run(&["resume", "--all", "--json"]);
    assert_exit(&output, 1);
    assert!(!stderr(&output).contains("invoked"), "{}", stderr(&output));
    let report = &json(&output)[0];
    assert_eq!(report["status"], "failed");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("the host stopped 3 times while running this run; it was not resumed again"),
        "{error}"
    );
    assert!(
        error.contains(&format!("plait runs show {run_id}")),
        "{error}"
    );
    assert!(error.contains(&format!("plait resume {run_id}")), "{error}");
    let history = report["steps"][1]["history"].as_array().unwrap();
    let interrupted: Vec<_> = history
        .iter()
        .filter(|attempt| attempt["interrupted"] == true)
        .map(|attempt| attempt["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(interrupted, [1, 2, 3], "{history:#?}");
    // Recovery leaves it failed from now on.
    let output = sandbox.run(&["resume", "--all"]);
    assert_exit(&output, 0);
    assert!(!stderr(&output).contains("invoked"), "{}", stderr(&output));

    // Asked for by id, it is tried again.
    let lines = kill_after(&sandbox, &["resume", &run_id], "invoked step_id=second", 1);
    assert!(
        lines.iter().any(|line| line.contains("attempt=4")),
        "{lines:#?}"
    );
}

#[test]
fn plait_serve_takes_a_killed_hosts_run_over_and_its_api_shows_the_interrupted_attempt() {
    let sandbox = Sandbox::new();
    slow_workflow(&sandbox, false);
    kill_after(
        &sandbox,
        &["run", "workflow.yaml"],
        "invoked step_id=second",
        1,
    );
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    let served = crate::server::Served::start(&sandbox, &[]);
    let run = served.run_until(&run_id, None, |run| run["status"] == "succeeded");
    assert_eq!(run["status"], "succeeded");
    let log = served.log.lock().unwrap().join("\n");
    assert!(
        log.contains("recovered 1 runs in ") && log.contains("(1 steps interrupted, 0 waiting)"),
        "{log}"
    );
    let base = log
        .split(" on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let steps: serde_json::Value = ureq::get(format!("http://{base}/v1/runs/{run_id}/steps"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let second = &steps["steps"][1];
    assert_eq!(second["attempts"], 2, "{steps:#}");
    let interrupted = second["interrupted"].as_array().unwrap();
    assert_eq!(interrupted.len(), 1, "{steps:#}");
    assert_eq!(interrupted[0]["attempt"], 1);
    assert!(
        interrupted[0]["found_at"].as_str().unwrap()
            >= interrupted[0]["started_at"].as_str().unwrap()
    );
    assert_eq!(steps["steps"][0]["interrupted"], serde_json::json!([]));
}
