//! The CLI contract: help, version, exit codes and usage errors.

use plait_test_artifacts::{ECHO_COMPONENT, NORMALIZE_TEXT_PLUGIN};

use crate::support::*;

#[test]
fn version_and_help() {
    let sandbox = Sandbox::new();
    let version = sandbox.run(&["--version"]);
    assert_exit(&version, 0);
    // `--version` also names the target and the features (an operator
    // compiling bundles for this host needs the first).
    let printed = stdout(&version);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], format!("plait {}", env!("CARGO_PKG_VERSION")));
    assert!(
        lines.contains(&format!("target: {}", plait::engine::HOST_TARGET).as_str()),
        "{printed}"
    );
    assert!(
        lines.contains(&"features: compiler, inference, server"),
        "{printed}"
    );
    let help = sandbox.run(&["help"]);
    assert_exit(&help, 0);
    for command in ["run", "resume", "runs", "validate", "inspect"] {
        assert!(stdout(&help).contains(command), "{}", stdout(&help));
    }
    for command in [
        &["run", "--help"][..],
        &["resume", "--help"],
        &["runs", "list", "--help"],
        &["runs", "show", "--help"],
        &["validate", "--help"],
        &["inspect", "--help"],
    ] {
        let output = sandbox.run(command);
        assert_exit(&output, 0);
        assert!(stdout(&output).contains("Usage: plait"), "{command:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: echo\nsteps:\n  - id: echo\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    sandbox.write("bad.json", "{not json");
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unrecognized subcommand"),
        (
            &["run", "workflow.yaml", "--file", "document"],
            "must be `NAME=PATH`",
        ),
        (
            &["run", "workflow.yaml", "--file", "document=missing.pdf"],
            "could not read `--file document=missing.pdf`",
        ),
        (
            &["run", "workflow.yaml", "--input", "bad.json"],
            "is not valid JSON",
        ),
        (
            &["run", "workflow.yaml", "--input", "absent.json"],
            "could not read input file `absent.json`",
        ),
        (&["run", "nowhere"], "nowhere"),
        (
            &["resume", "0190c3c4-0000-7000-8000-000000000000"],
            "no run starts with `0190c3c4-0000-7000-8000-000000000000`",
        ),
        (&["runs", "show", "nope"], "no run starts with `nope`"),
    ];
    for (args, expected) in cases {
        let output = sandbox.run(args);
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_workflow_reading_an_unattached_blob_is_refused_before_it_runs() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: needs-blob\nsteps:\n  - id: echo\n    uses: {}\n    blobs:\n      document: ${{ .blobs.document }}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("attach it with `--file document=PATH`"),
        "{}",
        stderr(&output)
    );
    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(runs, serde_json::json!([]), "no run is created");
}

#[test]
fn config_is_checked_against_what_the_component_declares() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: typo\nsteps:\n  - id: normalize\n    uses: {}\n    config:\n      lowercas: true\n",
            yaml_path(NORMALIZE_TEXT_PLUGIN)
        ),
    );
    let output = sandbox.run(&["validate", "workflow.yaml"]);
    assert_exit(&output, 2);
    let text = stderr(&output);
    assert!(
        text.contains("sets config `lowercas`, which component `normalize-text` does not declare"),
        "{text}"
    );
    assert!(text.contains("lowercase"), "{text}");
}

#[test]
fn validate_accepts_a_good_workflow() {
    let output = Sandbox::new()
        .plait()
        .current_dir(repo_root())
        .args(["validate", "examples/chain"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("is valid under the default host policy: 3 steps"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn every_invalid_definition_exits_2_with_its_golden_error() {
    // The definition module's unit tests compare the rendered errors with
    // the golden files; this checks the CLI prints the same and exits 2.
    let cases = repo_root().join("tests/cases/definitions");
    let mut checked = 0;
    for entry in std::fs::read_dir(&cases).unwrap() {
        let path = entry.unwrap().path();
        let Some(extension) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if !matches!(extension, "yaml" | "yml" | "json") {
            continue;
        }
        let relative = path.strip_prefix(repo_root()).unwrap();
        let output = Sandbox::new()
            .plait()
            .current_dir(repo_root())
            .args(["validate", relative.to_str().unwrap()])
            .output()
            .unwrap();
        assert_exit(&output, 2);
        let expected = std::fs::read_to_string(path.with_extension("err")).unwrap();
        assert!(
            stderr(&output).contains(expected.trim_end()),
            "{}:\nexpected:\n{expected}\nactual:\n{}",
            relative.display(),
            stderr(&output)
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} definition cases");
}

#[test]
fn without_address_space_for_the_pool_the_engine_allocates_on_demand() {
    // 16 GiB of address space: far less than the pooling allocator reserves,
    // enough for one on-demand instance at a time. The engine sees the
    // limit and does not try to reserve the pool.
    let sandbox = Sandbox::new();
    let command = format!(
        "ulimit -v 16777216 && exec {} run workflow.yaml --json",
        env!("CARGO_BIN_EXE_plait")
    );
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: echo\nsteps:\n  - id: echo\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let output = sandbox
        .shell(&command)
        .env("PLAIT_LOG", "warn,plait::engine=info")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let said = stderr(&output);
    assert!(said.contains("allocating instances on demand"), "{said}");
    assert!(said.contains("the address space"), "{said}");
    assert_eq!(json(&output)["status"], "succeeded");
}
