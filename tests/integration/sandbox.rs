//! A step sees nothing the workflow did not grant: no environment, no
//! arguments, no files, no network; and only the config keys it declared.

use plait_test_artifacts::{HOSTILE_COMPONENT, SANDBOX_PROBE_COMPONENT};

use crate::support::*;

#[test]
fn a_step_sees_no_env_files_or_network() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: probe\nsteps:\n  - id: probe\n    uses: {}\n",
            yaml_path(SANDBOX_PROBE_COMPONENT)
        ),
    );
    let output = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--json"])
        .env("PLAIT_SECRET_FOR_THE_PROBE", "must not leak")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let probe = &json(&output)["output"];
    assert_eq!(probe["env"], serde_json::json!([]), "{probe}");
    let args = probe["args"].as_array().unwrap();
    assert!(args.len() <= 1, "{probe}");
    for key in ["read_etc_passwd", "list_root", "tcp_connect"] {
        let result = probe[key].as_str().unwrap();
        assert_ne!(result, "ok", "{key} should be denied: {probe}");
    }
    assert!(!probe.to_string().contains("must not leak"));
    assert!(!probe.to_string().contains("root:x:0:0"));
}

/// A workflow whose one `hostile` step asks for `extra` (YAML under the
/// step), written into `sandbox`.
fn hostile_workflow(sandbox: &Sandbox, attack: &str, extra: &str) {
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: hostile\nsteps:\n  - id: hostile\n    uses: {}\n    config:\n      attack: {attack}\n{extra}",
            yaml_path(HOSTILE_COMPONENT)
        ),
    );
}

#[test]
fn validate_refuses_grants_and_limits_beyond_the_policy_naming_each() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.dir.path().join("data")).unwrap();
    sandbox.write(
        "plait.toml",
        "[limits.max]\nmemory = \"64MiB\"\n\n[grants]\noutbound_http = []\ndirs = [\"/srv/plait\"]\nwritable_dirs = false\nsecrets = []\n",
    );
    hostile_workflow(
        &sandbox,
        "env",
        "    limits:\n      memory: 128MiB\n    grants:\n      dirs:\n        /data: { path: ./data, mode: rw }\n      http: [https://api.example.com]\n      secrets: [api_token]\n",
    );
    let output = sandbox.run(&["validate", "workflow.yaml", "--policy", "plait.toml"]);
    assert_exit(&output, 2);
    let errors = stderr(&output);
    for expected in [
        "`limits.memory` asks for 128 MiB, above the 64 MiB that the host policy `plait.toml` allows",
        "is outside the folders the host policy `plait.toml` allows",
        "outbound HTTP to `https://api.example.com` is not allowed by the host policy `plait.toml`",
        "this host allows no outbound network at all",
        "secret `api_token` is not one the host policy `plait.toml` allows workflows to grant",
        "4 errors found; nothing was run",
    ] {
        assert!(
            errors.contains(expected),
            "missing `{expected}` in:\n{errors}"
        );
    }
    // `plait run` refuses the same workflow before running anything.
    let output = sandbox.run(&["run", "workflow.yaml", "--policy", "plait.toml"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("nothing was run"));
    let runs = sandbox.run(&["runs", "list", "--json"]);
    assert_eq!(json(&runs), serde_json::json!([]));
}

#[test]
fn a_grant_the_component_did_not_ask_for_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: probe\nsteps:\n  - id: probe\n    uses: {}\n    grants:\n      dirs:\n        /data: .\n      secrets: [token]\n",
            yaml_path(SANDBOX_PROBE_COMPONENT)
        ),
    );
    let output = sandbox.run(&["validate", "workflow.yaml"]);
    assert_exit(&output, 2);
    let errors = stderr(&output);
    assert!(
        errors.contains("step `probe` grants directory `/data`, which component `sandbox-probe` does not ask for"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "step `probe` grants secret `token`, which component `sandbox-probe` does not ask for"
        ),
        "{errors}"
    );
}

#[test]
fn validate_lists_each_steps_sandbox_and_inspect_lists_requested_grants() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.dir.path().join("data")).unwrap();
    sandbox.write("plait.toml", "[grants]\nprivate_networks = true\n");
    hostile_workflow(
        &sandbox,
        "env",
        "    limits: { timeout: 5s, fuel: 1e9 }\n    grants:\n      dirs: { /data: ./data }\n      http: [http://127.0.0.1:8080]\n",
    );
    let output = sandbox
        .plait()
        .args(["validate", "workflow.yaml"])
        .env("PLAIT_POLICY", "plait.toml")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("is valid under the host policy `plait.toml`: 1 step"),
        "{text}"
    );
    assert!(
        text.contains(
            "hostile: memory 256 MiB, timeout 5s, fuel 1000000000, output 64 MiB, logs 1 MiB"
        ),
        "{text}"
    );
    assert!(
        text.contains("dir /data -> ") && text.contains("(read-only)"),
        "{text}"
    );
    assert!(text.contains("http http://127.0.0.1:8080"), "{text}");

    let output = sandbox.run(&["inspect", HOSTILE_COMPONENT]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    for line in [
        "  config attack (required)",
        "  secret api_token",
        "  directory /data",
        "  outbound http http://*:*",
        "  outbound http https://*:*",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    let output = sandbox.run(&["inspect", HOSTILE_COMPONENT, "--json"]);
    let grants = json(&output)["grants"].to_string();
    assert!(
        grants.contains("api_token") && grants.contains("https://*:*"),
        "{grants}"
    );
}

#[test]
fn secrets_come_from_the_environment_and_are_redacted() {
    const SECRET: &str = "env-secret-9f8e7d";
    let sandbox = Sandbox::new();
    hostile_workflow(
        &sandbox,
        "echo-secret",
        "    grants:\n      secrets: [api_token]\n",
    );
    // Without the variable, the run is refused, naming where to set it.
    let output = sandbox.run(&["run", "workflow.yaml"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains(
            "secret `api_token` has no value: set environment variable `PLAIT_SECRET_API_TOKEN`"
        ),
        "{}",
        stderr(&output)
    );
    let output = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--json"])
        .env("PLAIT_SECRET_API_TOKEN", SECRET)
        .env("PLAIT_LOG", "info")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["output"]["token"], "[REDACTED]");
    // Not in the live log on stderr either, nor in the stored logs.
    assert!(!stderr(&output).contains(SECRET), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("[REDACTED]"),
        "{}",
        stderr(&output)
    );
    let run_id = report["run_id"].as_str().unwrap();
    let shown = sandbox.run(&["runs", "show", run_id, "--json", "--logs"]);
    assert!(!stdout(&shown).contains(SECRET));
    assert!(stdout(&shown).contains("[REDACTED]"));
}

#[test]
fn a_secret_can_be_read_under_the_hosts_name_for_it() {
    const SECRET: &str = "mapped-secret-5a4b3c";
    let sandbox = Sandbox::new();
    // The step reads `api_token`; the host keeps it as `billing_key`, and
    // the policy allows only that name.
    sandbox.write("plait.toml", "[grants]\nsecrets = [\"billing_key\"]\n");
    hostile_workflow(
        &sandbox,
        "echo-secret",
        "    grants:\n      secrets: [{ api_token: billing_key }]\n",
    );
    let output = sandbox
        .plait()
        .args(["validate", "workflow.yaml", "--policy", "plait.toml"])
        .env("PLAIT_SECRET_BILLING_KEY", SECRET)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(
        stdout(&output).contains("secret api_token (the host's `billing_key`)"),
        "{}",
        stdout(&output)
    );
    let output = sandbox
        .plait()
        .args(["run", "workflow.yaml", "--policy", "plait.toml", "--json"])
        .env("PLAIT_SECRET_BILLING_KEY", SECRET)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(json(&output)["output"]["token"], "[REDACTED]");
    assert!(!stdout(&output).contains(SECRET));
    // Granting it under its own name is what the policy forbids.
    hostile_workflow(
        &sandbox,
        "echo-secret",
        "    grants:\n      secrets: [api_token]\n",
    );
    let output = sandbox
        .plait()
        .args(["validate", "workflow.yaml", "--policy", "plait.toml"])
        .env("PLAIT_SECRET_API_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(
        stderr(&output)
            .contains("secret `api_token` is not one the host policy `plait.toml` allows"),
        "{}",
        stderr(&output)
    );
}
