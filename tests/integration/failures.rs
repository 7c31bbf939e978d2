//! Step failures are recorded values with the right kind and exit code;
//! noisy steps are bounded.

use plait_test_artifacts::{
    BAD_OUTPUT_COMPONENT, ECHO_COMPONENT, FAIL_COMPONENT, NOISY_COMPONENT, TRAP_COMPONENT,
};
use serde_json::Value;

use crate::support::*;

/// Runs a two-step workflow: `uses` with `config`, then echo.
fn run_failing(component: &str, config: &str) -> (std::process::Output, Value, Sandbox) {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: failing\nsteps:\n  - id: failing\n    uses: {}\n{config}  - id: after\n    uses: {}\n",
            yaml_path(component),
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    let report = json(&output);
    (output, report, sandbox)
}

#[test]
fn fatal_error_fails_the_run_with_exit_1_and_stops() {
    let (output, report, _sandbox) = run_failing(
        FAIL_COMPONENT,
        "    config:\n      kind: fatal\n      message: invoice total missing\n",
    );
    assert_exit(&output, 1);
    assert_eq!(report["status"], "failed");
    let step = &report["steps"][0];
    assert_eq!(step["status"], "failed");
    assert_eq!(step["error"]["kind"], "fatal");
    assert_eq!(step["error"]["message"], "invoice total missing");
    assert_eq!(step["error"]["details"]["attempt"], 1);
    assert_eq!(
        report["steps"][1]["status"], "pending",
        "nothing runs after a failed step"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("step `failing` failed"),
        "{report}"
    );
}

#[test]
fn retryable_error_is_recorded_as_retryable_and_resume_retries_it() {
    let (output, report, sandbox) =
        run_failing(FAIL_COMPONENT, "    config:\n      kind: retryable\n");
    assert_exit(&output, 1);
    assert_eq!(report["steps"][0]["error"]["kind"], "retryable");
    assert_eq!(report["steps"][0]["error"]["message"], "requested failure");

    // Resuming a failed run retries the failed step with the next attempt.
    let run_id = report["run_id"].as_str().unwrap();
    let resumed = sandbox.run(&["resume", run_id, "--json"]);
    assert_exit(&resumed, 1);
    let resumed = json(&resumed);
    assert_eq!(resumed["steps"][0]["attempts"], 2);
    assert_eq!(resumed["steps"][0]["error"]["details"]["attempt"], 2);
}

#[test]
fn a_panicking_guest_is_a_trap_not_a_host_crash() {
    let (output, report, _sandbox) = run_failing(TRAP_COMPONENT, "");
    assert_exit(&output, 1);
    let error = &report["steps"][0]["error"];
    assert_eq!(error["kind"], "trap");
    assert!(
        error["message"].as_str().unwrap().contains("unreachable"),
        "{error}"
    );
}

#[test]
fn output_that_is_not_json_breaks_the_contract() {
    let (output, report, _sandbox) = run_failing(BAD_OUTPUT_COMPONENT, "");
    assert_exit(&output, 1);
    let error = &report["steps"][0]["error"];
    assert_eq!(error["kind"], "invalid_output");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{error}"
    );
}

#[test]
fn stdout_stderr_and_logs_are_captured_and_bounded() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            // 4 MiB of stdio plus the records: within an 8 MiB log volume,
            // so the step succeeds and only the capture bounds apply.
            "name: noisy\nlimits:\n  logs: 8MiB\nsteps:\n  - id: noisy\n    uses: {}\n",
            yaml_path(NOISY_COMPONENT)
        ),
    );
    let output = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--json"])
        .env("PLAIT_LOG", "off")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["output"]["ok"], true);
    // Nothing the guest printed reached the host's own streams.
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 1);

    let run_id = report["run_id"].as_str().unwrap();
    let shown = json(&sandbox.run(&["runs", "show", run_id, "--json", "--logs"]));
    let logs = &shown["steps"][0]["logs"][0];
    assert_eq!(logs["records"].as_array().unwrap().len(), 1000);
    assert_eq!(logs["dropped_records"], 9000);
    let stdout_text = logs["stdout"]["text"].as_str().unwrap();
    assert_eq!(stdout_text.len(), 64 * 1024);
    assert_eq!(logs["stdout"]["dropped_bytes"], 2 * 1024 * 1024 - 64 * 1024);
    assert_eq!(logs["stderr"]["dropped_bytes"], 2 * 1024 * 1024 - 64 * 1024);
}

#[test]
fn a_resumed_run_executes_the_definition_and_components_it_started_with() {
    let sandbox = Sandbox::new();
    // A copy of the component that this test may overwrite.
    let component = sandbox.write("fail.wasm", std::fs::read(FAIL_COMPONENT).unwrap());
    let path = sandbox.write(
        "workflow.yaml",
        format!(
            "name: failing\nsteps:\n  - id: failing\n    uses: fail.wasm\n    config:\n      kind: retryable\n      message: still failing\n  - id: after\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 1);
    let report = json(&output);
    let run_id = report["run_id"].as_str().unwrap();

    // Both files change after the run started: the step now says `fatal`,
    // and the component file becomes another component (echo, which
    // would succeed).
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("kind: retryable", "kind: fatal");
    std::fs::write(&path, text).unwrap();
    std::fs::write(&component, std::fs::read(ECHO_COMPONENT).unwrap()).unwrap();

    let resumed = sandbox.run(&["resume", run_id, "--json"]);
    assert_exit(&resumed, 1);
    let resumed = json(&resumed);
    // The pinned component and definition ran: the same retryable failure.
    let step = &resumed["steps"][0];
    assert_eq!(step["attempts"], 2);
    assert_eq!(step["error"]["kind"], "retryable");
    assert_eq!(step["error"]["message"], "still failing");
    assert_eq!(
        step["component_digest"],
        report["steps"][0]["component_digest"]
    );

    // A new run takes the files as they are now: echo declares no config.
    let fresh = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&fresh, 2);
    assert!(
        stderr(&fresh).contains("sets config `kind`, which component `echo` does not declare"),
        "{}",
        stderr(&fresh)
    );
}
