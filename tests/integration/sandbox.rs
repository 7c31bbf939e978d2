//! A step sees nothing the workflow did not grant: no environment, no
//! arguments, no files, no network; and only the config keys it declared.

use plait_test_artifacts::SANDBOX_PROBE_COMPONENT;

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
