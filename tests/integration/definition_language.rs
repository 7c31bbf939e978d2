//! The definition language at work: every example under `examples/` runs,
//! and each feature does what it says: parallel steps overlap, `if` skips,
//! `for_each` fans out, retries wait out their backoff (durably), fatal
//! errors are not retried, timeouts stop an endless loop while another run
//! goes on, `on_error` continues or falls back, and a `wait` step survives
//! a SIGKILL of the host and completes after `plait signal`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use plait::definition::Definition;
use plait::engine::{Engine, EngineOptions};
use plait::executor::Executor;
use plait::plan::Plan;
use plait::policy::Policy;
use plait::step::FailureKind;
use plait::store::{RunStatus, SledStore, StepStatus};
use plait_test_artifacts::{
    ECHO_COMPONENT, FAIL_COMPONENT, HOSTILE_COMPONENT, NORMALIZE_TEXT_PLUGIN,
    SLOW_COUNTER_COMPONENT,
};
use serde_json::{Value, json};

use crate::support::*;

/// Runs `plait run` on an example from the repository root, with its
/// `input.json` when it has one; returns the run's JSON report.
fn run_example(sandbox: &Sandbox, name: &str) -> (i32, Value) {
    let root = repo_root();
    let dir = root.join("examples").join(name);
    let mut command = sandbox.plait();
    command
        .current_dir(&root)
        .args(["run", dir.to_str().unwrap(), "--json"]);
    if dir.join("input.json").exists() {
        command.args(["--input", dir.join("input.json").to_str().unwrap()]);
    }
    let output = command.output().unwrap();
    (output.status.code().unwrap_or(-1), json(&output))
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["id"] == id)
        .unwrap_or_else(|| panic!("no step `{id}` in {report:#}"))
}

fn ms(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

#[test]
fn the_parallel_example_joins_two_branches_with_jq() {
    let (code, report) = run_example(&Sandbox::new(), "parallel");
    assert_eq!(code, 0, "{report:#}");
    let output = &report["output"]["report"];
    assert_eq!(output["title"], "PLAIT");
    assert_eq!(output["summary"], "19 words, 5 lines");
    assert_eq!(output["top"], json!(["steps", "they"]));
    assert_eq!(report["output"]["run"], report["run_id"]);
    let report_step = step(&report, "report");
    // The join starts only after both of its needs finished.
    for need in ["normalize", "stats"] {
        assert!(
            ms(&report_step["started_at_ms"]) >= ms(&step(&report, need)["finished_at_ms"]),
            "{report:#}"
        );
    }
}

#[test]
fn parallel_steps_really_overlap_and_concurrency_bounds_them() {
    let sandbox = Sandbox::new();
    let component = yaml_path(SLOW_COUNTER_COMPONENT);
    let workflow = |concurrency: u32| {
        format!(
            "name: overlap\nconcurrency: {concurrency}\nsteps:\n  - id: a\n    uses: {component}\n    needs: []\n    config: {{ sleep_ms: 1500 }}\n  - id: b\n    uses: {component}\n    needs: []\n    config: {{ sleep_ms: 1500 }}\n  - id: join\n    uses: {component}\n    needs: [a, b]\n    input: {{ a: \"${{ .steps.a.output.attempt }}\", b: \"${{ .steps.b.output.attempt }}\" }}\n"
        )
    };
    sandbox.write("parallel.yaml", workflow(2));
    sandbox.write("serial.yaml", workflow(1));

    let output = sandbox.run(&["run", "parallel.yaml", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    let (a, b) = (step(&report, "a"), step(&report, "b"));
    // Each started before the other finished: they ran at the same time.
    assert!(
        ms(&a["started_at_ms"]) < ms(&b["finished_at_ms"]),
        "{report:#}"
    );
    assert!(
        ms(&b["started_at_ms"]) < ms(&a["finished_at_ms"]),
        "{report:#}"
    );
    assert_eq!(report["output"]["input"], json!({"a": 1, "b": 1}));

    // With `concurrency: 1` the same two steps run one after the other.
    let output = sandbox.run(&["run", "serial.yaml", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    let (a, b) = (step(&report, "a"), step(&report, "b"));
    let (first, second) = if ms(&a["started_at_ms"]) <= ms(&b["started_at_ms"]) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        ms(&second["started_at_ms"]) >= ms(&first["finished_at_ms"]),
        "{report:#}"
    );
}

#[test]
fn the_conditions_example_skips_a_branch_and_its_dependent_sees_it() {
    let sandbox = Sandbox::new();
    let (code, report) = run_example(&sandbox, "conditions");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(step(&report, "review")["status"], "succeeded");
    assert_eq!(step(&report, "fast-track")["status"], "skipped");
    assert_eq!(report["output"]["routed_to"], "review");
    assert_eq!(
        report["output"]["message"],
        "Please review: Invoice 42 from ACME, total 120 EUR"
    );

    // A confident score takes the other branch.
    sandbox.write("confident.json", r#"{"text": "Invoice 7", "score": 0.95}"#);
    let root = repo_root();
    let output = sandbox
        .plait()
        .args([
            "run",
            root.join("examples/conditions").to_str().unwrap(),
            "--input",
            "confident.json",
            "--json",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(step(&report, "review")["status"], "skipped");
    assert_eq!(report["output"]["routed_to"], "fast-track");
    assert_eq!(report["output"]["message"], "Accepted: Invoice 7");
}

#[test]
fn an_if_that_is_not_a_boolean_fails_the_step_naming_it() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: bad-if\nsteps:\n  - id: a\n    uses: {}\n    if: .input.maybe\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 1);
    let report = json(&output);
    let error = step(&report, "a")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("`if: .input.maybe` must yield true or false, but yielded null"),
        "{error}"
    );
}

#[test]
fn the_fan_out_example_collects_outputs_in_order() {
    let (code, report) = run_example(&Sandbox::new(), "fan-out");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["output"]["paragraphs"],
        json!([
            "1. the first paragraph.",
            "2. a second one.",
            "3. and a third."
        ])
    );
    assert_eq!(report["output"]["words"], 12);
    let items = step(&report, "paragraphs")["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|item| item["status"] == "succeeded" && item["attempts"] == 1)
    );
}

#[test]
fn max_concurrency_bounds_a_fan_out() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: items\nsteps:\n  - id: slow\n    uses: {}\n    for_each: \"[range(4)]\"\n    max_concurrency: 2\n    config: {{ sleep_ms: 700 }}\n",
            yaml_path(SLOW_COUNTER_COMPONENT),
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    let slow = step(&report, "slow");
    assert_eq!(slow["status"], "succeeded", "{report:#}");
    let outputs = slow["output"].as_array().unwrap();
    assert_eq!(outputs.len(), 4);
    // In order, each item its own input.
    for (index, output) in outputs.iter().enumerate() {
        assert_eq!(output["input"], json!(index), "{report:#}");
    }
    // Four 700 ms items two at a time take two rounds at least.
    let elapsed = ms(&slow["finished_at_ms"]) - ms(&slow["started_at_ms"]);
    assert!(
        elapsed >= 1400,
        "4 items in {elapsed} ms: more than 2 ran at once"
    );
}

#[test]
fn failing_items_with_continue_leave_error_objects_in_order() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            r#"name: items
steps:
  - id: each
    uses: {fail}
    for_each: .input.attempts
    input: {{ n: "${{ .item }}" }}
    config: {{ kind: fatal, message: item failed }}
    on_error: continue
  - id: after
    uses: {echo}
    input: {{ seen: "${{ [.steps.each.output[] | .error.message] }}", status: "${{ .steps.each.status }}" }}
"#,
            fail = yaml_path(FAIL_COMPONENT),
            echo = yaml_path(ECHO_COMPONENT),
        ),
    );
    sandbox.write("input.json", r#"{"attempts": [1, 2]}"#);
    let output = sandbox.run(&["run", "workflow.yaml", "--input", "input.json", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(
        report["output"],
        json!({"seen": ["item failed", "item failed"], "status": "failed"})
    );
    assert_eq!(
        step(&report, "each")["error"]["message"],
        "2 of 2 items failed"
    );
}

#[test]
fn a_retryable_failure_succeeds_on_attempt_3_after_the_configured_backoff() {
    let (code, report) = run_example(&Sandbox::new(), "retry");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["output"], json!({"attempt": 3, "input": {}}));
    let flaky = step(&report, "flaky");
    assert_eq!(flaky["attempts"], 3);
    let history = flaky["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{flaky:#}");
    assert_eq!(history[0]["error"]["kind"], "retryable");
    assert_eq!(history[1]["error"]["kind"], "retryable");
    assert!(history[2]["error"].is_null());
    // 200 ms, then 400 ms (exponential), each at most 10% shorter (jitter).
    let gap = |n: usize| ms(&history[n]["started_at_ms"]) - ms(&history[n - 1]["finished_at_ms"]);
    assert!(gap(1) >= 180, "first backoff {} ms: {flaky:#}", gap(1));
    assert!(gap(2) >= 360, "second backoff {} ms: {flaky:#}", gap(2));
}

#[test]
fn a_fatal_failure_is_not_retried() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: fatal\nretry: {{ max_attempts: 5, initial_interval: 10ms }}\nsteps:\n  - id: a\n    uses: {}\n    config: {{ kind: fatal, message: bad request }}\n",
            yaml_path(FAIL_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 1);
    let report = json(&output);
    assert_eq!(report["status"], "failed");
    let a = step(&report, "a");
    assert_eq!(a["attempts"], 1, "{a:#}");
    assert_eq!(a["history"].as_array().unwrap().len(), 1);
    assert_eq!(a["error"]["kind"], "fatal");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("step `a` failed: fatal error: bad request")
    );
}

#[test]
fn a_host_restart_during_backoff_resumes_the_wait_not_the_count() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: backoff\nsteps:\n  - id: flaky\n    uses: {}\n    retry: {{ max_attempts: 3, backoff: constant, initial_interval: 6s }}\n    config: {{ kind: retryable, until_attempt: 2 }}\n",
            yaml_path(FAIL_COMPONENT)
        ),
    );
    let (mut child, lines) = spawn_logged(&sandbox, &["run", "workflow.yaml"]);
    let run_id = wait_for_line(&lines, "retrying after backoff");
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();

    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    let flaky = step(&shown, "flaky");
    assert_eq!(flaky["status"], "waiting");
    let wake = ms(&flaky["wake_at_ms"]);
    let failed_at = ms(&flaky["history"][0]["finished_at_ms"]);
    assert!(wake >= failed_at + 6000);

    let resumed_at = plait::clock::now_ms();
    let output = sandbox.run(&["resume", &run_id, "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    let flaky = step(&report, "flaky");
    // The count went on (attempt 2, not 1 again) ...
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(report["output"]["attempt"], 2);
    // ... and attempt 2 started when the original wait ended, not a whole
    // backoff after the restart.
    let second = ms(&flaky["history"][1]["started_at_ms"]);
    assert!(second >= wake, "{flaky:#}");
    assert!(
        second < resumed_at + 6000,
        "the wait restarted: attempt 2 at {second}, resumed at {resumed_at}"
    );
}

#[test]
fn the_errors_example_continues_and_falls_back() {
    let (code, report) = run_example(&Sandbox::new(), "errors");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["status"], "succeeded");
    assert_eq!(step(&report, "optional")["status"], "failed");
    assert_eq!(step(&report, "primary")["status"], "recovered");
    assert_eq!(step(&report, "secondary")["status"], "succeeded");
    assert_eq!(
        report["output"],
        json!({
            "optional_failed": true,
            "optional_error": "the optional enrichment service refused the request",
            "primary_status": "recovered",
            "stored": {"stored_in": "secondary", "because": "the primary store is read-only"},
        })
    );
}

#[test]
fn a_fallback_that_is_not_needed_is_skipped() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: fine\nsteps:\n  - id: a\n    uses: {echo}\n    on_error: {{ fallback: b }}\n  - id: b\n    uses: {echo}\n",
            echo = yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(step(&report, "a")["status"], "succeeded");
    assert_eq!(step(&report, "b")["status"], "skipped");
}

#[test]
fn the_timeouts_example_stops_the_endless_loop_and_goes_on() {
    let (code, report) = run_example(&Sandbox::new(), "timeouts");
    assert_eq!(code, 0, "{report:#}");
    let stuck = step(&report, "stuck");
    assert_eq!(stuck["status"], "failed");
    assert_eq!(stuck["error"]["kind"], "timeout");
    assert_eq!(
        report["output"],
        json!({"stuck": "timeout", "quick": "succeeded"})
    );
}

#[test]
fn a_run_timeout_stops_the_whole_run() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: slow\ntimeout: 1s\nsteps:\n  - id: a\n    uses: {}\n    config: {{ sleep_ms: 60000 }}\n",
            yaml_path(SLOW_COUNTER_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 1);
    let report = json(&output);
    assert_eq!(
        report["error"],
        "the run did not finish within its timeout of 1s"
    );
    assert_eq!(step(&report, "a")["error"]["kind"], "timeout");
}

fn engine() -> Engine {
    Engine::new(&EngineOptions {
        cache_dir: Some(shared_cache()),
        ..EngineOptions::default()
    })
    .unwrap()
}

async fn plan(engine: &Engine, dir: &Path, name: &str, text: &str) -> Plan {
    let definition = Definition::parse(text, &dir.join(format!("{name}.yaml"))).unwrap();
    Plan::build_with(engine, definition, &Policy::default())
        .await
        .unwrap()
}

/// One host, two runs: a step spinning forever is stopped at its timeout
/// while the other run, sharing the host's workers, goes on and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_endless_loop_is_stopped_while_another_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let looping = plan(
        &engine,
        dir.path(),
        "loop",
        &format!(
            "name: loop\nsteps:\n  - id: spin\n    uses: {}\n    timeout: 1s\n    config: {{ attack: loop }}\n",
            yaml_path(HOSTILE_COMPONENT)
        ),
    )
    .await;
    let steady = plan(
        &engine,
        dir.path(),
        "steady",
        &format!(
            "name: steady\nsteps:\n  - id: one\n    uses: {c}\n    config: {{ sleep_ms: 1500 }}\n  - id: two\n    uses: {c}\n    config: {{ sleep_ms: 1500 }}\n",
            c = yaml_path(SLOW_COUNTER_COMPONENT)
        ),
    )
    .await;
    let store = Arc::new(SledStore::open(&dir.path().join("journal")).unwrap());
    let executor = Executor::with_concurrency(store, 2);
    let (looped, steadied) = tokio::join!(
        executor.start(&looping, plait::executor::StartRequest::new(json!({}))),
        executor.start(&steady, plait::executor::StartRequest::new(json!({}))),
    );
    let (looped, steadied) = (looped.unwrap(), steadied.unwrap());
    assert_eq!(looped.run.status, RunStatus::Failed);
    let spin = &looped.steps[0];
    assert_eq!(spin.error.as_ref().unwrap().kind, FailureKind::Timeout);
    assert!(spin.duration_ms.unwrap() >= 1000, "{spin:?}");
    assert_eq!(steadied.run.status, RunStatus::Succeeded);
    assert!(
        steadied
            .steps
            .iter()
            .all(|step| step.status == StepStatus::Succeeded)
    );
    // The steady run was still going when the loop was stopped.
    assert!(steadied.steps[1].finished_at_ms.unwrap() > spin.finished_at_ms.unwrap());
}

#[test]
fn the_schemas_example_checks_the_input_before_running() {
    let sandbox = Sandbox::new();
    let (code, report) = run_example(&sandbox, "schemas");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["output"]["text"], "Please call me back.");

    let root = repo_root();
    let output = sandbox
        .plait()
        .current_dir(&root)
        .args([
            "run",
            "examples/schemas",
            "--input",
            "examples/schemas/bad-input.json",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let error = stderr(&output);
    assert!(error.contains("at `/customer/email`"), "{error}");
    assert!(error.contains("(rule `pattern`)"), "{error}");
    assert!(
        error.contains("at `/note`: 42 is not of type \"string\" (rule `type`)"),
        "{error}"
    );
    assert!(error.contains("no run was created"), "{error}");
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "only the good run is stored"
    );
}

#[test]
fn a_step_input_that_breaks_the_component_schema_fails_naming_path_and_rule() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: typed\nsteps:\n  - id: normalize\n    uses: {}\n    input: {{ text: \"${{ .input.n }}\" }}\n",
            yaml_path(NORMALIZE_TEXT_PLUGIN)
        ),
    );
    sandbox.write("input.json", r#"{"n": 5}"#);
    let output = sandbox.run(&["run", "workflow.yaml", "--input", "input.json", "--json"]);
    assert_exit(&output, 1);
    let report = json(&output);
    let error = &step(&report, "normalize")["error"];
    assert_eq!(error["kind"], "fatal");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("does not match the input schema of its component: at `/text`: 5 is not of type \"string\" (rule `type`)"),
        "{message}"
    );
    // Rejected before the component ran.
    assert_eq!(step(&report, "normalize")["attempts"], 0);
}

/// Starts `plait ARGS` with executor logs on stderr, streamed line by line.
fn spawn_logged(sandbox: &Sandbox, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = sandbox
        .plait()
        .args(args)
        .env("PLAIT_LOG", "warn,plait::executor=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// Waits for a log line containing `needle` and returns its run id.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no `{needle}` line within 2 minutes"));
        if line.contains(needle) {
            return run_id_in(&line);
        }
    }
}

#[test]
fn a_wait_step_survives_sigkill_and_completes_after_plait_signal() {
    let sandbox = Sandbox::new();
    let root = repo_root();
    let example = root.join("examples/approval");
    let input = example.join("input.json");
    let (mut child, lines) = spawn_logged(
        &sandbox,
        &[
            "run",
            example.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
    );
    let run_id = wait_for_line(&lines, "waiting for a signal");
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();

    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(runs[0]["status"], "waiting", "{runs:#}");
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_eq!(step(&shown, "approve")["status"], "waiting");
    assert_eq!(step(&shown, "cool-down")["status"], "succeeded");

    // A signal for a step that is not a wait step is refused.
    let refused = sandbox.run(&["signal", &run_id, "request", "--data", "{}"]);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("not a `type: wait` step"),
        "{}",
        stderr(&refused)
    );

    let output = sandbox.run(&[
        "signal",
        &run_id,
        "approve",
        "--data",
        r#"{"approved": true, "by": "dana"}"#,
        "--json",
    ]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["output"], json!({"approved": true, "paid": true}));
    assert_eq!(step(&report, "pay")["output"]["approved_by"], "dana");
    // The steps finished before the kill did not run again.
    assert_eq!(step(&report, "request")["attempts"], 1);

    // The run is over: a second signal is refused.
    let late = sandbox.run(&["signal", &run_id, "approve"]);
    assert_exit(&late, 2);
}

#[test]
fn a_signal_reaches_a_running_host_through_the_store_inbox() {
    let sandbox = Sandbox::new();
    let root = repo_root();
    let example = root.join("examples/approval");
    let input = example.join("input.json");
    let mut child = sandbox
        .plait()
        .args([
            "run",
            example.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--json",
        ])
        .env("PLAIT_LOG", "warn,plait::executor=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let run_id = wait_for_line(&lines, "waiting for a signal");
    // The running host holds the store; the signal goes to its inbox.
    let sent = sandbox.run(&[
        "signal",
        &run_id,
        "approve",
        "--data",
        r#"{"approved": false}"#,
    ]);
    assert_exit(&sent, 0);
    assert!(
        stderr(&sent).contains("waits in its inbox"),
        "{}",
        stderr(&sent)
    );
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["output"], json!({"approved": false, "paid": false}));
    assert_eq!(step(&report, "pay")["status"], "skipped");
}

#[test]
fn a_wait_without_a_signal_takes_its_default_at_its_timeout() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: wait\nsteps:\n  - id: approve\n    type: wait\n    timeout: 300ms\n    default: {{ approved: false }}\n  - id: nap\n    type: sleep\n    duration: 200ms\n  - id: after\n    uses: {}\n    input: {{ approved: \"${{ .steps.approve.output.approved }}\" }}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["output"], json!({"approved": false}));
    let nap = step(&report, "nap");
    assert!(nap["duration_ms"].as_u64().unwrap() >= 200, "{nap:#}");
}

#[test]
fn plait_schema_prints_the_committed_json_schema() {
    let output = Sandbox::new().run(&["schema"]);
    assert_exit(&output, 0);
    let printed: Value = json(&output);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/workflow.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
    assert_eq!(printed["title"], "Plait workflow definition");
}
