//! Invalid components get a clear error naming the problem, and exit 2.
//!
//! Golden files in `tests/cases/components/<case>.err` hold the expected
//! stderr of `plait inspect <case>.wasm`; `BLESS=1` rewrites them.

use plait_test_artifacts::{
    CORE_MODULE_WAT, DESCRIBE_TRAP_COMPONENT, ECHO_COMPONENT, EXTRA_IMPORT_COMPONENT,
    WRONG_WORLD_COMPONENT,
};

use crate::support::*;

/// Copies or writes the bad component as `<case>.wasm` in a fresh sandbox,
/// runs `plait inspect` on it and checks stderr against the golden file.
fn check(case: &str, bytes: &[u8]) {
    let sandbox = Sandbox::new();
    sandbox.write(&format!("{case}.wasm"), bytes);
    let output = sandbox.run(&["inspect", &format!("{case}.wasm")]);
    assert_exit(&output, 2);
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    let golden = repo_root()
        .join("tests/cases/components")
        .join(format!("{case}.err"));
    assert_golden(&golden, &stderr(&output));

    // The same component in a workflow: `validate` lists it at the step's
    // `uses` line and exits 2 too.
    sandbox.write(
        "workflow.yaml",
        format!("name: bad\nsteps:\n  - id: bad\n    uses: {case}.wasm\n"),
    );
    let output = sandbox.run(&["validate", "workflow.yaml"]);
    assert_exit(&output, 2);
    let text = stderr(&output);
    assert!(text.contains("workflow.yaml:4:11"), "{text}");
    assert!(
        text.contains("step `bad` cannot use this component"),
        "{text}"
    );
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn random_bytes() {
    // A fixed pseudo-random sequence, so the golden output is stable.
    let mut state: u32 = 0x2545_f491;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    check("random-bytes", &bytes);
}

#[test]
fn empty_file() {
    check("empty-file", b"");
}

#[test]
fn core_module() {
    let module = wat::parse_file(CORE_MODULE_WAT).unwrap();
    check("core-module", &module);
}

#[test]
fn truncated_component() {
    // Assembled from text rather than cut from a built guest: a guest's
    // exact bytes depend on the path it was built in, and the golden
    // message quotes byte offsets.
    let component = wat::parse_str(
        r#"(component
             (core module $m (func (export "answer") (result i32) i32.const 42))
             (core instance $i (instantiate $m)))"#,
    )
    .unwrap();
    check("truncated-component", &component[..component.len() - 7]);
}

#[test]
fn component_of_another_world() {
    check("wrong-world", &read(WRONG_WORLD_COMPONENT));
}

#[test]
fn component_importing_what_the_host_lacks() {
    check("extra-import", &read(EXTRA_IMPORT_COMPONENT));
}

#[test]
fn component_trapping_in_describe() {
    check("describe-trap", &read(DESCRIBE_TRAP_COMPONENT));
}

#[test]
fn missing_component_file() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["inspect", "nowhere.wasm"]);
    assert_exit(&output, 2);
    assert_golden(
        &repo_root().join("tests/cases/components/missing-file.err"),
        &stderr(&output),
    );
}

#[test]
fn inspect_shows_the_contract() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&[
        "inspect",
        plait_test_artifacts::NORMALIZE_TEXT_PLUGIN,
        "--json",
    ]);
    assert_exit(&output, 0);
    let info = json(&output);
    assert_eq!(info["name"], "normalize-text");
    assert!(info["digest"].as_str().unwrap().starts_with("sha256:"));
    let grants = info["grants"].as_array().unwrap();
    assert!(
        grants
            .iter()
            .any(|grant| grant["kind"] == "config" && grant["key"] == "lowercase"),
        "{grants:?}"
    );
    assert_eq!(info["input_schema"]["type"], "object");
    let imports: Vec<_> = info["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(imports.contains(&"plait:step/host@0.2.0"), "{imports:?}");
    let exports: Vec<_> = info["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert_eq!(exports, ["describe", "run"]);

    let human = sandbox.run(&["inspect", plait_test_artifacts::NORMALIZE_TEXT_PLUGIN]);
    assert_exit(&human, 0);
    assert!(
        stdout(&human).contains("config lowercase"),
        "{}",
        stdout(&human)
    );
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let sandbox = Sandbox::new();
    let cache = sandbox.dir.path().join("cache");
    let inspect = || {
        let output = sandbox
            .plait()
            .env("PLAIT_CACHE_DIR", &cache)
            .args(["inspect", ECHO_COMPONENT, "--json"])
            .output()
            .unwrap();
        assert_exit(&output, 0);
        json(&output)
    };
    assert_eq!(inspect()["compiled_from_cache"], false);
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_str().unwrap().ends_with(".cwasm"));
    assert_eq!(inspect()["compiled_from_cache"], true);

    // A damaged cache entry is ignored and replaced, never fatal.
    std::fs::write(cache.join(&files[0]), b"garbage").unwrap();
    assert_eq!(inspect()["compiled_from_cache"], false);
    assert_eq!(inspect()["compiled_from_cache"], true);
}
