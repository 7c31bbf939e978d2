//! A three-step chain with blobs, persisted and idempotent.

use plait_test_artifacts::{NORMALIZE_TEXT_PLUGIN, READ_TEXT_PLUGIN, TEXT_STATS_PLUGIN};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::*;

fn chain_workflow(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write(
        "chain/workflow.yaml",
        format!(
            r#"
name: chain-test
version: 1.0.0
steps:
  - id: read
    uses: {read}
    blobs:
      document: ${{ .blobs.document }}
  - id: normalize
    uses: {normalize}
    input:
      text: ${{ .steps.read.output.text }}
    config:
      lowercase: true
  - id: stats
    uses: {stats}
    blobs:
      text: ${{ .steps.normalize.blobs.text }}
    config:
      top: 2
"#,
            read = yaml_path(READ_TEXT_PLUGIN),
            normalize = yaml_path(NORMALIZE_TEXT_PLUGIN),
            stats = yaml_path(TEXT_STATS_PLUGIN),
        ),
    )
}

const DOCUMENT: &str = "  The  Quick brown fox\n\n\n\njumps over the LAZY dog.  The end.  \n";
const NORMALIZED: &str = "the quick brown fox\n\njumps over the lazy dog. the end.";

#[test]
fn three_steps_chain_json_and_blobs() {
    let sandbox = Sandbox::new();
    chain_workflow(&sandbox);
    sandbox.write("document.txt", DOCUMENT);
    let output = sandbox.run(&["run", "chain", "--file", "document=document.txt", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["status"], "succeeded");
    let steps = report["steps"].as_array().unwrap();
    let ids: Vec<_> = steps
        .iter()
        .map(|step| step["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["read", "normalize", "stats"]);
    for step in steps {
        assert_eq!(step["status"], "succeeded", "{step}");
        assert_eq!(step["attempts"], 1, "{step}");
        assert!(step["duration_ms"].is_u64(), "{step}");
        // Fuel is metered by default, so every step reports what it used.
        assert!(step["fuel_consumed"].as_u64().unwrap() > 0, "{step}");
    }
    // The stats step read the blob the normalize step produced.
    let stats = &report["output"];
    assert_eq!(stats["words"], 11, "{stats}");
    assert_eq!(stats["lines"], 3, "{stats}");
    assert_eq!(stats["characters"], NORMALIZED.chars().count(), "{stats}");
    assert_eq!(
        stats["top_words"],
        json!([{"word": "the", "count": 3}, {"word": "brown", "count": 1}])
    );

    // The normalize step's blob is persisted, content-addressed.
    let normalize_blobs = steps[1]["output_blobs"].as_array().unwrap();
    assert_eq!(normalize_blobs.len(), 1);
    assert_eq!(normalize_blobs[0]["name"], "text");
    let expected_digest = format!("sha256:{:x}", Sha256::digest(NORMALIZED.as_bytes()));
    assert_eq!(normalize_blobs[0]["digest"], expected_digest.as_str());
    assert_eq!(normalize_blobs[0]["size"], NORMALIZED.len());
}

#[test]
fn outputs_are_persisted_and_a_finished_run_is_never_executed_again() {
    let sandbox = Sandbox::new();
    chain_workflow(&sandbox);
    sandbox.write("document.txt", DOCUMENT);
    let first = json(&sandbox.run(&["run", "chain", "--file", "document=document.txt", "--json"]));
    let run_id = first["run_id"].as_str().unwrap();

    // A new process reads the same run back from sled.
    let shown = sandbox.run(&["runs", "show", run_id, "--json", "--logs"]);
    assert_exit(&shown, 0);
    let shown = json(&shown);
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["output"], first["output"]);
    assert_eq!(shown["input_blobs"][0]["name"], "document");
    assert_eq!(shown["input_blobs"][0]["media_type"], "text/plain");
    // The run was started with a relative path; the journal keeps it
    // absolute so `resume` works from any directory.
    let workflow_path = std::path::PathBuf::from(shown["workflow"]["path"].as_str().unwrap());
    assert!(workflow_path.is_absolute(), "{workflow_path:?}");
    assert!(
        workflow_path.ends_with("chain/workflow.yaml"),
        "{workflow_path:?}"
    );
    assert_eq!(shown["steps"][0]["logs"].as_array().unwrap().len(), 1);

    // Resuming a finished run reports it without running anything: the
    // attempt counts stay at 1.
    let resumed = sandbox.run(&["resume", run_id, "--json"]);
    assert_exit(&resumed, 0);
    let resumed = json(&resumed);
    assert_eq!(resumed["output"], first["output"]);
    for step in resumed["steps"].as_array().unwrap() {
        assert_eq!(step["attempts"], 1, "{step}");
    }

    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["run_id"], run_id);
    assert_eq!(listed[0]["workflow"], "chain-test");
}

#[test]
fn human_output_prints_the_final_document_on_stdout() {
    let sandbox = Sandbox::new();
    chain_workflow(&sandbox);
    sandbox.write("document.txt", DOCUMENT);
    let output = sandbox.run(&[
        "run",
        "chain/workflow.yaml",
        "--file",
        "document=document.txt",
    ]);
    assert_exit(&output, 0);
    let document: serde_json::Value =
        serde_json::from_str(&stdout(&output)).expect("stdout holds the output JSON");
    assert_eq!(document["words"], 11);
    let report = stderr(&output);
    assert!(report.contains("✓ normalize"), "{report}");
    assert!(report.contains("succeeded"), "{report}");
}

#[test]
fn the_shipped_example_runs() {
    let sandbox = Sandbox::new();
    let root = repo_root();
    let output = sandbox
        .plait()
        .current_dir(&root)
        .args([
            "run",
            "examples/chain",
            "--input",
            "examples/chain/input.json",
            "--json",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["steps"].as_array().unwrap().len(), 3);
}
