//! What a new user stumbled on (issue 20): inline `--input`, `--json` on
//! every listing, a closed stdout, shell completions, the examples and
//! templates as shipped, where errors point, and the workflow's output.

use std::process::Stdio;

use plait_test_artifacts::{ECHO_COMPONENT, NORMALIZE_TEXT_PLUGIN};
use serde_json::json;

use crate::support::*;

fn echo_workflow(sandbox: &Sandbox) {
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: echo\nsteps:\n  - id: echo\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
}

/// The run's output, from `plait run ... --json`.
fn run_output(sandbox: &Sandbox, args: &[&str]) -> serde_json::Value {
    let output = sandbox.run(args);
    assert_exit(&output, 0);
    json(&output)["output"].clone()
}

#[test]
fn run_input_took_only_files_not_inline_json() {
    let sandbox = Sandbox::new();
    echo_workflow(&sandbox);
    let run = |input: &str| {
        run_output(
            &sandbox,
            &["run", "workflow.yaml", "--input", input, "--json"],
        )
    };
    // Inline JSON, as `plait signal --data` takes it.
    assert_eq!(run(r#"{"text": "hi"}"#), json!({"text": "hi"}));
    assert_eq!(run(r#" [1, 2]"#), json!([1, 2]));
    // A file, by path or as `@FILE` (for a name that looks like JSON).
    sandbox.write("input.json", r#"{"from": "file"}"#);
    sandbox.write("5", r#"{"from": "a file named 5"}"#);
    assert_eq!(run("input.json"), json!({"from": "file"}));
    assert_eq!(run("@5"), json!({"from": "a file named 5"}));
    // Stdin.
    let mut child = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--input", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), br#"{"from": "stdin"}"#).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    assert_eq!(json(&output)["output"], json!({"from": "stdin"}));
    // Broken inline JSON says what `--input` takes.
    let output = sandbox.run(&["run", "workflow.yaml", "--input", "{not json"]);
    assert_exit(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains("the input from the command line is not valid JSON"),
        "{said}"
    );
    assert!(said.contains("@FILE"), "{said}");
}

#[test]
fn validate_had_no_json_output() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .plait()
        .current_dir(repo_root())
        .args(["validate", "examples/chain", "--json"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let valid = json(&output);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["workflow"]["name"], "chain", "{valid}");
    assert_eq!(valid["steps"].as_array().unwrap().len(), 3, "{valid}");
    assert_eq!(valid["steps"][1]["needs"], json!(["normalize"]), "{valid}");

    // Errors are JSON too, with their positions; nothing on stderr.
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: typo\nsteps:\n  - id: normalize\n    uses: {}\n    config:\n      lowercas: true\n",
            yaml_path(NORMALIZE_TEXT_PLUGIN)
        ),
    );
    let output = sandbox.run(&["validate", "workflow.yaml", "--json"]);
    assert_exit(&output, 2);
    assert_eq!(stderr(&output), "");
    let invalid = json(&output);
    assert_eq!(invalid["valid"], false, "{invalid}");
    let error = &invalid["errors"][0];
    assert_eq!(error["file"], "workflow.yaml", "{invalid}");
    assert_eq!(error["line"], 6, "{invalid}");
    assert_eq!(error["column"], 7, "{invalid}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("sets config `lowercas`"),
        "{invalid}"
    );
    assert!(
        error["help"].as_str().unwrap().contains("lowercase"),
        "{invalid}"
    );

    // A file that is not there is an error document too.
    let output = sandbox.run(&["validate", "absent.yaml", "--json"]);
    assert_exit(&output, 2);
    let absent = json(&output);
    assert_eq!(absent["valid"], false, "{absent}");
    assert!(
        absent["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("absent.yaml"),
        "{absent}"
    );
}

#[test]
fn token_list_and_trust_list_had_no_json_output() {
    let sandbox = Sandbox::new();
    let listed = |args: &[&str]| {
        let output = sandbox.run(args);
        assert_exit(&output, 0);
        json(&output)
    };
    assert_eq!(listed(&["token", "list", "--json"]), json!([]));
    assert_exit(
        &sandbox.run(&["token", "create", "--name", "ci", "--scope", "runs:read"]),
        0,
    );
    let tokens = listed(&["token", "list", "--json"]);
    assert_eq!(tokens[0]["name"], "ci", "{tokens}");
    assert_eq!(tokens[0]["scopes"], json!(["runs:read"]), "{tokens}");
    assert!(tokens[0]["created_at"].is_string(), "{tokens}");

    assert_eq!(listed(&["trust", "list", "--json"]), json!([]));
    let generated = sandbox.run(&["key", "generate", "--name", "acme"]);
    assert_exit(&generated, 0);
    let public_key = stdout(&generated).trim().to_owned();
    assert_exit(
        &sandbox.run(&["trust", "add", &public_key, "--name", "acme"]),
        0,
    );
    let keys = listed(&["trust", "list", "--json"]);
    assert_eq!(keys[0]["name"], "acme", "{keys}");
    assert_eq!(keys[0]["public_key"], public_key.as_str(), "{keys}");
    assert_eq!(keys[0]["key_id"].as_str().unwrap().len(), 16, "{keys}");
}

#[test]
fn bundle_verify_had_no_json_output() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "echo/workflow.yaml",
        format!(
            "name: echo-bundle\nversion: 1.0.0\nsteps:\n  - id: say\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    sandbox.write(
        "echo/bundle.toml",
        "name = \"echo-bundle\"\nversion = \"1.0.0\"\nworkflows = [\"workflow.yaml\"]\n",
    );
    assert_exit(
        &sandbox.run(&["bundle", "pack", "echo", "-o", "echo.plait"]),
        0,
    );

    // Unsigned: refused, as JSON.
    let output = sandbox.run(&["bundle", "verify", "echo.plait", "--json"]);
    assert_exit(&output, 2);
    let refused = json(&output);
    assert_eq!(refused["verified"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("not signed"),
        "{refused}"
    );

    let generated = sandbox.run(&["key", "generate", "--name", "acme"]);
    let public_key = stdout(&generated).trim().to_owned();
    assert_exit(
        &sandbox.run(&["bundle", "sign", "echo.plait", "--key", "acme"]),
        0,
    );
    assert_exit(
        &sandbox.run(&["trust", "add", &public_key, "--name", "acme"]),
        0,
    );
    let output = sandbox.run(&["bundle", "verify", "echo.plait", "--json"]);
    assert_exit(&output, 0);
    let verified = json(&output);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["bundle"]["name"], "echo-bundle", "{verified}");
    assert_eq!(verified["bundle"]["version"], "1.0.0", "{verified}");
    assert_eq!(verified["signer"]["name"], "acme", "{verified}");
    assert_eq!(verified["signer"]["trusted"], true, "{verified}");
    assert!(
        verified["digest"].as_str().unwrap().starts_with("sha256:"),
        "{verified}"
    );
}

#[test]
fn a_closed_stdout_printed_broken_pipe_and_exited_1() {
    let sandbox = Sandbox::new();
    echo_workflow(&sandbox);
    for args in [
        &["runs", "list"][..],
        &["runs", "list", "--json"],
        &["schema"],
        &["completions", "bash"],
        &["metrics"],
        &["--help"],
    ] {
        // The reader is gone before plait writes: every write fails with
        // EPIPE, deterministically.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = sandbox
            .plait()
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "plait {args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output), "", "plait {args:?}");
    }
}

#[test]
fn there_were_no_shell_completions() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = sandbox.run(&["completions", shell]);
        assert_exit(&output, 0);
        let script = stdout(&output);
        assert!(script.contains("plait"), "{shell}: {script}");
        assert!(script.contains("validate"), "{shell}: {script}");
    }
    let bash = stdout(&sandbox.run(&["completions", "bash"]));
    assert!(bash.contains("complete -F"), "{bash}");
    assert!(bash.contains("runs"), "{bash}");
    let output = sandbox.run(&["completions", "tcsh"]);
    assert_exit(&output, 2);
}

/// Splits a command line from a workflow's header comment the way a shell
/// would for these simple lines: words, and `'...'` quoted words.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').expect("a closing quote");
            words.push(quoted[..end].to_owned());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    words
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn four_examples_failed_after_scripts_example_for_lack_of_test_guests() {
    let root = repo_root();
    // Every component an example uses comes from a workspace that
    // `scripts/setup` (which `scripts/example` runs first) builds.
    let setup = std::fs::read_to_string(root.join("scripts/setup")).unwrap();
    let built: Vec<&str> = setup
        .lines()
        .filter_map(|line| line.trim().strip_prefix("build_wasm "))
        .collect();
    assert!(built.contains(&"plugins"), "{built:?}");
    let mut examples: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("workflow.yaml").is_file())
        .collect();
    examples.sort();
    assert!(examples.len() >= 10, "{examples:?}");
    for example in &examples {
        let text = std::fs::read_to_string(example.join("workflow.yaml")).unwrap();
        for line in text.lines() {
            let Some(uses) = line.trim().strip_prefix("uses: ") else {
                continue;
            };
            let uses = uses.trim_start_matches("../../");
            assert!(
                built.iter().any(|workspace| uses
                    .starts_with(&format!("{workspace}/target/wasm32-wasip2/release/"))),
                "{}: `{uses}` is not built by scripts/setup (it builds {built:?})",
                example.display()
            );
        }
    }

    // And each runs as its header comment says, in a copy of the examples
    // (one files into its own `archive/`).
    let sandbox = Sandbox::new();
    copy_dir(&root.join("examples"), &sandbox.dir.path().join("examples"));
    for workspace in ["plugins", "tests"] {
        std::os::unix::fs::symlink(root.join(workspace), sandbox.dir.path().join(workspace))
            .unwrap();
    }
    for example in &examples {
        let name = example.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(example.join("workflow.yaml")).unwrap();
        let commands: Vec<Vec<String>> = text
            .lines()
            .filter_map(|line| line.strip_prefix("#   plait "))
            .map(|line| words(line.split("   #").next().unwrap()))
            .collect();
        let run = commands
            .iter()
            .find(|command| command[0] == "run")
            .unwrap_or_else(|| panic!("examples/{name} says no `plait run` in its header"));
        let signal = commands.iter().find(|command| command[0] == "signal");
        let mut child = sandbox
            .plait()
            .args(run)
            .arg("--json")
            .env("PLAIT_LOG", "warn,plait::executor=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        if let Some(signal) = signal {
            // A wait: signal it once it waits, as the header says.
            let run_id = loop {
                let mut line = String::new();
                let read = std::io::BufRead::read_line(&mut log, &mut line).unwrap();
                assert!(read > 0, "examples/{name} ended before it waited:\n{said}");
                said.push_str(&line);
                if line.contains("waiting for a signal") {
                    break run_id_in(&line);
                }
            };
            let args: Vec<String> = signal
                .iter()
                .map(|word| {
                    if word == "RUN_ID" {
                        run_id.clone()
                    } else {
                        word.clone()
                    }
                })
                .collect();
            assert_exit(&sandbox.plait().args(&args).output().unwrap(), 0);
        }
        std::io::Read::read_to_string(&mut log, &mut said).unwrap();
        let mut stdout = Vec::new();
        std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "examples/{name}: `plait {}` failed:\n{said}",
            run.join(" ")
        );
        let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(report["status"], "succeeded", "examples/{name}: {report}");
    }
}

#[test]
fn a_missing_example_component_said_nothing_about_how_to_build_it() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "examples/x/workflow.yaml",
        "name: x\nsteps:\n  - id: a\n    uses: ../../tests/guests/target/wasm32-wasip2/release/absent.wasm\n",
    );
    let output = sandbox.run(&["validate", "examples/x"]);
    assert_exit(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains("`cargo build --release --target wasm32-wasip2` in `tests/guests`"),
        "{said}"
    );
    assert!(said.contains("scripts/setup"), "{said}");
}

#[test]
fn the_shipped_template_failed_validate_without_naming_the_policy_line() {
    let root = repo_root();
    let validate = |args: &[&str]| {
        Sandbox::new()
            .plait()
            .current_dir(&root)
            .arg("validate")
            .args(args)
            .output()
            .unwrap()
    };
    // Under the default policy: refused, with the line that allows it and
    // the policy the template ships.
    let output = validate(&["templates/document-intake"]);
    assert_exit(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains("set `private_networks = true` under `[grants]` in a host policy"),
        "{said}"
    );
    assert!(
        said.contains("`--policy templates/document-intake/plait.toml`"),
        "{said}"
    );
    // With the policy it ships, as scripts/example runs it: valid.
    let output = validate(&[
        "templates/document-intake",
        "--policy",
        "templates/document-intake/plait.toml",
    ]);
    assert_exit(&output, 0);

    // A policy that lists other hosts: the line to write lists them too.
    let sandbox = Sandbox::new();
    let policy = sandbox.write(
        "plait.toml",
        "[grants]\noutbound_http = [\"https://hooks.example.com\"]\nmodels = [\"ppocrv6-tiny-det\"]\n",
    );
    let output = validate(&[
        "templates/document-intake",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_exit(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains(r#"set `outbound_http = ["https://hooks.example.com", "http://127.0.0.1:8787"]` under `[grants]` in the host policy"#),
        "{said}"
    );
    assert!(
        said.contains(
            r#"set `models = ["ppocrv6-tiny-det", "ppocrv6-tiny-rec"]` under `[grants]`"#
        ),
        "{said}"
    );
}

#[test]
fn bundle_install_refused_a_grant_without_naming_the_policy_line() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "hook/workflow.yaml",
        format!(
            "name: hook\nversion: 1.0.0\nsteps:\n  - id: tell\n    uses: {}\n    config:\n      url: http://127.0.0.1:9/hook\n    grants:\n      http: [\"http://127.0.0.1:9\"]\n",
            yaml_path(plait_test_artifacts::NOTIFY_PLUGIN)
        ),
    );
    sandbox.write(
        "hook/bundle.toml",
        "name = \"hook\"\nversion = \"1.0.0\"\nworkflows = [\"workflow.yaml\"]\n",
    );
    assert_exit(
        &sandbox.run(&["bundle", "pack", "hook", "-o", "hook.plait"]),
        0,
    );
    let output = sandbox.run(&[
        "bundle",
        "install",
        "hook.plait",
        "--allow",
        "--allow-unsigned",
    ]);
    assert_exit(&output, 2);
    let said = stderr(&output);
    assert!(
        said.contains(
            "to allow it, set `private_networks = true` under `[grants]` in a host policy"
        ),
        "{said}"
    );
}

#[test]
fn an_undeclared_config_key_pointed_at_the_step_not_the_key() {
    // Golden errors found once the components are loaded (the cases at the
    // top of tests/cases/definitions fail while parsing).
    let cases = repo_root().join("tests/cases/definitions/plan");
    let mut checked = 0;
    for entry in std::fs::read_dir(&cases).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "yaml") {
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
        assert_golden(&path.with_extension("err"), &stderr(&output));
        checked += 1;
    }
    assert!(checked >= 1);
    let golden = std::fs::read_to_string(cases.join("undeclared_config_key.err")).unwrap();
    assert!(
        golden.contains("undeclared_config_key.yaml:10:7"),
        "{golden}"
    );
}

#[test]
fn the_output_was_the_last_step_listed_not_the_final_step_of_the_graph() {
    let sandbox = Sandbox::new();
    let echo = yaml_path(ECHO_COMPONENT);
    // `report` needs `collect`, listed after it: `report` is the sink.
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: sink\nsteps:\n  - id: report\n    uses: {echo}\n    needs: [collect]\n    input: {{ from: report, saw: \"${{ .steps.collect.output.from }}\" }}\n  - id: collect\n    uses: {echo}\n    needs: []\n    input: {{ from: collect }}\n"
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
    assert_exit(&output, 0);
    assert_eq!(
        json(&output)["output"],
        json!({"from": "report", "saw": "collect"})
    );

    // A pipeline's sink is its last step, as before.
    sandbox.write(
        "pipeline.yaml",
        format!(
            "name: pipeline\nsteps:\n  - id: a\n    uses: {echo}\n    input: {{ at: a }}\n  - id: b\n    uses: {echo}\n    input: {{ at: b }}\n"
        ),
    );
    let output = sandbox.run(&["run", "pipeline.yaml", "--json"]);
    assert_exit(&output, 0);
    assert_eq!(json(&output)["output"], json!({"at": "b"}));

    // Two sinks and no `output:`: refused, naming both, before any run.
    sandbox.write(
        "two.yaml",
        format!(
            "name: two\nsteps:\n  - id: left\n    uses: {echo}\n    needs: []\n  - id: right\n    uses: {echo}\n    needs: []\n"
        ),
    );
    let output = sandbox.run(&["run", "two.yaml"]);
    assert_exit(&output, 2);
    let said = stderr(&output);
    assert!(said.contains("ends in 2 steps (`left`, `right`)"), "{said}");
    assert!(said.contains("two.yaml:3:5"), "{said}");
    assert!(
        said.contains(r#"output: { left: "${ .steps.left.output }""#),
        "{said}"
    );
}
