//! What a hostile workflow writer and a careless file broke, fixed: jq that
//! recursed or allocated without end (the host aborted, and aborted again
//! on every recovery), files read without a size limit, step errors stored
//! at any size, and a server held back by one component's `describe()`.

use std::process::Stdio;
use std::time::Duration;

use plait_test_artifacts::{DESCRIBE_LOOP_COMPONENT, ECHO_COMPONENT, FAIL_COMPONENT};
use serde_json::{Value, json};

use crate::server::Served;
use crate::support::*;

/// A one-step workflow whose input is `expression`, a jq filter.
fn expression_workflow(sandbox: &Sandbox, expression: &str) -> String {
    let path = sandbox.write(
        "expr.yaml",
        format!(
            "name: expr\nsteps:\n  - id: say\n    uses: {}\n    input:\n      value: '${{ {} }}'\n",
            yaml_path(ECHO_COMPONENT),
            expression.replace('\'', "''")
        ),
    );
    path.to_str().unwrap().to_owned()
}

/// The error of the failed run `plait run --json` reported.
fn run_error(output: &std::process::Output) -> String {
    let report = json(output);
    report["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no run error in {report:#}"))
        .to_owned()
}

#[test]
fn jq_that_recurses_forever_fails_its_step_instead_of_aborting_the_host() {
    let sandbox = Sandbox::new();
    for (filter, limit) in [
        ("def f: [f]; f", "recursed too deeply"),
        ("def f: 1 + f; f", "recursed too deeply"),
    ] {
        let workflow = expression_workflow(&sandbox, filter);
        let output = sandbox.run(&["run", &workflow, "--json"]);
        // Exit 1 (a failed run), not a signal: the host lived.
        assert_exit(&output, 1);
        let error = run_error(&output);
        assert!(error.contains(limit), "{filter}: {error}");
        assert!(error.contains("64 MiB stack"), "{filter}: {error}");
        assert!(
            !stderr(&output).contains("overflowed"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn a_value_nested_by_the_runs_input_fails_that_run_and_not_the_others_in_the_batch() {
    let sandbox = Sandbox::new();
    let workflow = expression_workflow(
        &sandbox,
        r#".input.text | split("") | reduce .[] as $c (null; {c: $c, next: .})"#,
    );
    let deep = "x".repeat(3000);
    let batch = sandbox.write(
        "batch.jsonl",
        format!("{}\n{}\n", json!({"text": "abc"}), json!({"text": deep})),
    );
    let output = sandbox.run(&[
        "run",
        &workflow,
        "--batch",
        batch.to_str().unwrap(),
        "--json",
    ]);
    assert_exit(&output, 1);
    let text = stdout(&output);
    let reports: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(reports)) => reports,
        _ => text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
    };
    let statuses: Vec<&str> = reports
        .iter()
        .map(|report| report["status"].as_str().unwrap_or_default())
        .collect();
    assert!(statuses.contains(&"succeeded"), "{reports:#?}");
    let failed = reports
        .iter()
        .find(|report| report["status"] == "failed")
        .unwrap_or_else(|| panic!("{reports:#?}"));
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("nested more than 127 levels deep") || error.contains("recursed too deeply"),
        "{error}"
    );
}

#[test]
fn jq_that_allocates_without_bound_stops_at_the_memory_limit_or_the_deadline() {
    let sandbox = Sandbox::new();
    for filter in [
        "[range(1e9)]",
        "\"x\" | reduce range(40) as $i (.; . + .)",
        "last(repeat(1))",
    ] {
        let workflow = expression_workflow(&sandbox, filter);
        let output = sandbox.run(&["run", &workflow, "--json"]);
        assert_exit(&output, 1);
        let error = run_error(&output);
        assert!(
            error.contains("needed more than 512 MiB of memory")
                || error.contains("did not finish within 2s"),
            "{filter}: {error}"
        );
    }
}

#[test]
fn a_host_killed_while_jq_runs_recovers_the_run_without_aborting_again() {
    let sandbox = Sandbox::new();
    let workflow = expression_workflow(&sandbox, "last(repeat(1))");
    let mut child = KillOnDrop(
        sandbox
            .plait()
            .args(["run", &workflow])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Kill it while the worker evaluates (the step starts within a second).
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let output = sandbox.run(&["resume", "--all", "--json"]);
    assert_exit(&output, 1);
    let reports = json(&output);
    let error = reports[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not finish within 2s"), "{reports:#}");
    // Once more: nothing left to do, and no abort either.
    let output = sandbox.run(&["resume", "--all"]);
    assert_exit(&output, 0);
}

#[test]
fn expressions_under_plait_serve_leave_the_servers_memory_alone() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflows/hog.yaml",
        format!(
            "name: hog\nsteps:\n  - id: say\n    uses: {}\n    input:\n      value: '${{ [range(1e9)] }}'\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let served = Served::start(&sandbox, &[]);
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let reply = served.post("/v1/workflows/hog/runs", None, &[], Some(json!({})));
            assert_eq!(reply.status, 202, "{}", reply.text);
            reply.json["id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        let run = served.run_until(id, None, |run| run["status"] == "failed");
        let error = run["error"].as_str().unwrap();
        assert!(
            error.contains("512 MiB") || error.contains("within 2s"),
            "{error}"
        );
    }
    let rss = rss_kib(served.child.id());
    assert!(
        rss < 400 << 10,
        "plait serve holds {rss} KiB after three runaway expressions"
    );
    // The workers were killed or went back to idle: none holds the memory.
    for worker in children(served.child.id()) {
        let rss = rss_kib(worker);
        assert!(rss < 100 << 10, "an expression worker holds {rss} KiB");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok()),
        );
    }
    found
}

#[test]
fn a_uses_of_dev_zero_or_a_huge_file_is_refused_without_reading_it() {
    let sandbox = Sandbox::new();
    let zero = sandbox.write(
        "zero.yaml",
        "name: zero\nsteps:\n  - id: a\n    uses: /dev/zero\n",
    );
    let huge = sandbox.dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let huge_workflow = sandbox.write(
        "huge.yaml",
        format!(
            "name: huge\nsteps:\n  - id: a\n    uses: {}\n",
            yaml_path(huge.to_str().unwrap())
        ),
    );
    for args in [
        vec!["validate", zero.to_str().unwrap()],
        vec!["run", zero.to_str().unwrap()],
        vec!["inspect", "/dev/zero"],
    ] {
        let output = sandbox.run(&args);
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains("must be a regular file"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = sandbox.run(&["validate", huge_workflow.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("a component may be at most 256 MiB"),
        "{}",
        stderr(&output)
    );
    // The definition, the input and the policy are capped too.
    let output = sandbox.run(&["validate", "/dev/zero"]);
    assert_exit(&output, 2);
    let echo = sandbox.write(
        "echo.yaml",
        format!(
            "name: echo\nsteps:\n  - id: a\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", echo.to_str().unwrap(), "--input", "/dev/zero"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("must be a regular file"),
        "{}",
        stderr(&output)
    );
    let output = sandbox.run(&["run", echo.to_str().unwrap(), "--policy", "/dev/zero"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("must be a regular file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_20_mb_step_error_is_cut_and_counts_against_the_output_limit() {
    let sandbox = Sandbox::new();
    let message = "x".repeat(1000);
    let workflow = sandbox.write(
        "big-error.yaml",
        format!(
            "name: big-error\nsteps:\n  - id: boom\n    uses: {}\n    config:\n      message: {message}\n      repeat: \"20000\"\n",
            yaml_path(FAIL_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", workflow.to_str().unwrap(), "--json"]);
    assert_exit(&output, 1);
    // The whole report, with the step's error, its history and the run's
    // error, stays small.
    assert!(
        output.stdout.len() < 64 << 10,
        "{} bytes",
        output.stdout.len()
    );
    let error = run_error(&output);
    assert!(
        error.contains("more bytes not kept"),
        "{}",
        &error[..200.min(error.len())]
    );
    // Past the output limit, the error is a limit failure.
    let limited = sandbox.write(
        "limited.yaml",
        format!(
            "name: limited\nsteps:\n  - id: boom\n    uses: {}\n    limits: {{ output: 1MiB }}\n    config:\n      message: {message}\n      repeat: \"20000\"\n",
            yaml_path(FAIL_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", limited.to_str().unwrap(), "--json"]);
    assert_exit(&output, 1);
    let error = run_error(&output);
    assert!(
        error.contains("output limit") && error.contains("an error of 19.1 MiB"),
        "{error}"
    );
    let store_size = dir_size(&sandbox.store());
    assert!(
        store_size < 40 << 20,
        "the store grew to {store_size} bytes"
    );
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let metadata = entry.metadata().unwrap();
            total += if metadata.is_dir() {
                dir_size(&entry.path())
            } else {
                // Allocated blocks, not the apparent size of sparse files.
                std::os::unix::fs::MetadataExt::blocks(&metadata) * 512
            };
        }
    }
    total
}

#[test]
fn a_component_whose_describe_loops_does_not_hold_the_other_workflows() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflows/stuck.yaml",
        format!(
            "name: stuck\nsteps:\n  - id: a\n    uses: {}\n",
            yaml_path(DESCRIBE_LOOP_COMPONENT)
        ),
    );
    sandbox.write(
        "workflows/echo.yaml",
        format!(
            "name: echo\nsteps:\n  - id: a\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let served = Served::start(&sandbox, &[]);
    let log = served.log.lock().unwrap().join("\n");
    assert!(log.contains("serving 1 workflow"), "{log}");
    assert!(
        log.contains("still loading") && log.contains("stuck.yaml"),
        "{log}"
    );
    let reply = served.post(
        "/v1/workflows/echo/runs",
        None,
        &[],
        Some(json!({"input": {"n": 1}})),
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.json["id"].as_str().unwrap().to_owned();
    let run = served.run_until(&id, None, |run| run["status"] == "succeeded");
    assert_eq!(run["output"], json!({"n": 1}));
    // The stuck one is refused once its describe times out, naming why. Until then
    // (compiling it and the 10 s describe bound can outlast the echo run on a loaded
    // machine) it is refused as still loading.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let reply = loop {
        let reply = served.post("/v1/workflows/stuck/runs", None, &[], Some(json!({})));
        assert!(reply.status >= 400, "{}", reply.text);
        if !reply.text.contains("still loading") || std::time::Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reply.text.contains("did not return within"),
        "{}",
        reply.text
    );
}
