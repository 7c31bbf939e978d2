//! Golden tests over `tests/cases/definitions/`, and tests of loading and
//! of the validated types.
//!
//! Each invalid case `NAME.yaml` (or `.yml`, `.json`) sits beside `NAME.err`,
//! the exact rendered errors. Run with `BLESS=1` to rewrite the `.err` files
//! after an intended change, then review the diff. Paths in messages are
//! relative to the repository root, so the files hold no machine paths.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// Where the cases live, relative to the repository root.
const CASES: &str = "tests/cases/definitions";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the definition crate is host/definition in the repository")
        .to_path_buf()
}

/// The definition files directly inside `dir`, sorted by name.
fn definition_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        })
        .collect();
    files.sort();
    files
}

/// Parses a case as `load` would, but reported under its repository-relative
/// path so that the rendering is the same on every machine.
fn parse_case(path: &Path, relative_dir: &Path) -> Result<Definition, DefinitionErrors> {
    let bytes =
        fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let relative = relative_dir.join(path.file_name().expect("a file name"));
    parse_bytes(&bytes, &relative, relative_dir)
}

#[test]
fn invalid_definitions_render_as_their_golden_files() {
    let bless = std::env::var_os("BLESS").is_some_and(|value| value == "1");
    let dir = repo_root().join(CASES);
    let files = definition_files(&dir);
    let mut failures = Vec::new();
    for path in &files {
        let golden = path.with_extension("err");
        let rendered = match parse_case(path, Path::new(CASES)) {
            Ok(_) => {
                failures.push(format!(
                    "{}: parsed, but errors were expected",
                    path.display()
                ));
                continue;
            }
            Err(errors) => format!("{errors}\n"),
        };
        if bless {
            fs::write(&golden, &rendered).expect("writing a golden file");
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => failures.push(format!(
                "{}: rendered errors differ from {}\n--- expected\n{expected}--- actual\n{rendered}",
                path.display(),
                golden.display()
            )),
            Err(error) => failures.push(format!(
                "{}: {error}; run with BLESS=1 to create it\n--- actual\n{rendered}",
                golden.display()
            )),
        }
    }
    // A golden file whose case was renamed or deleted would go stale unseen.
    for entry in fs::read_dir(&dir).expect("reading the cases directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|ext| ext == "err")
            && !files.iter().any(|file| file.with_extension("err") == path)
        {
            failures.push(format!("{}: no definition file beside it", path.display()));
        }
    }
    assert!(
        files.len() >= 20,
        "expected at least 20 cases, found {}",
        files.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_definitions_parse() {
    let relative = Path::new(CASES).join("valid");
    let files = definition_files(&repo_root().join(&relative));
    assert!(
        files.len() >= 3,
        "expected valid cases, found {}",
        files.len()
    );
    for path in files {
        if let Err(errors) = parse_case(&path, &relative) {
            panic!("{} should be valid:\n{errors}", path.display());
        }
    }
}

fn step(id: &str) -> StepId {
    StepId::new(id).unwrap()
}

fn json_expr(text: &str) -> Template {
    let body = text
        .strip_prefix("${")
        .and_then(|text| text.strip_suffix('}'))
        .unwrap();
    Template::Expr(Jq::compile(body).unwrap())
}

const CHAIN: &str = r#"
name: chain
version: 0.1.0
description: Normalize text, then count words.
input:
  schema: { type: object, required: [text] }
steps:
  - id: read
    uses: plugins/read.wasm
  - id: normalize
    uses: ../plugins/normalize_text.wasm
    input:
      text: ${ .input.text }
      options: { lower: true, source: "${ .steps.read.output.meta[0] }", note: "cost: ${ .x }" }
    blobs:
      text: ${ .steps.read.blobs.text }
      original: ${ .blobs["my doc"] }
    config:
      lowercase: true
      limit: 5
      ratio: 1.50
      mode: fast
  - id: stats
    uses: /opt/plait/stats.wasm
    blobs: ${ .steps.normalize.blobs }
output: ${ .steps.stats.output }
"#;

#[test]
fn parses_a_full_definition() {
    let definition = Definition::parse(CHAIN, Path::new("flows/chain/workflow.yaml")).unwrap();
    assert_eq!(definition.name, "chain");
    assert_eq!(definition.version, "0.1.0");
    assert_eq!(
        definition.description.as_deref(),
        Some("Normalize text, then count words.")
    );
    assert_eq!(
        definition.input_schema,
        Some(json!({"type": "object", "required": ["text"]}))
    );
    assert_eq!(
        definition.output,
        Some(json_expr("${ .steps.stats.output }"))
    );

    let [read, normalize, stats] = definition.steps.as_slice() else {
        panic!("three steps expected");
    };
    assert_eq!(read.id, step("read"));
    assert_eq!(read.uses, Path::new("flows/chain/plugins/read.wasm"));
    assert_eq!(read.uses_span, Span::new(9, 11, 17));
    assert_eq!(read.span, Span::new(8, 5, 2));
    assert_eq!((read.input.as_ref(), read.blobs.as_ref()), (None, None));
    assert!(read.config.is_empty());

    assert_eq!(
        normalize.uses,
        Path::new("flows/chain/../plugins/normalize_text.wasm")
    );
    assert_eq!(
        normalize.input,
        Some(Template::Object(vec![
            ("text".into(), json_expr("${ .input.text }")),
            (
                "options".into(),
                Template::Object(vec![
                    ("lower".into(), Template::Literal(json!(true))),
                    (
                        "source".into(),
                        json_expr("${ .steps.read.output.meta[0] }")
                    ),
                    ("note".into(), Template::Literal(json!("cost: ${ .x }"))),
                ])
            ),
        ]))
    );
    assert_eq!(
        normalize.blobs,
        Some(BlobMapping::Named(BTreeMap::from([
            (
                "text".to_owned(),
                BlobRef {
                    source: BlobSource::Step(step("read")),
                    name: "text".into()
                }
            ),
            (
                "original".to_owned(),
                BlobRef {
                    source: BlobSource::WorkflowInput,
                    name: "my doc".into()
                }
            ),
        ])))
    );
    let config: Vec<(&str, &str)> = normalize
        .config
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        config,
        [
            ("limit", "5"),
            ("lowercase", "true"),
            ("mode", "fast"),
            ("ratio", "1.50")
        ]
    );

    assert_eq!(definition.input_blob_names(), ["my doc"]);
    assert_eq!(stats.uses, Path::new("/opt/plait/stats.wasm"));
    assert_eq!(
        stats.blobs,
        Some(BlobMapping::All(BlobSource::Step(step("normalize"))))
    );

    let context = json!({
        "input": {"text": "Hello World"},
        "steps": {"read": {"status": "succeeded", "output": {"meta": ["utf-8"]}}},
        "run": {"id": "r1", "workflow": definition.name},
    });
    assert_eq!(
        normalize.input.as_ref().unwrap().evaluate(&context),
        Ok(json!({
            "text": "Hello World",
            "options": {"lower": true, "source": "utf-8", "note": "cost: ${ .x }"}
        }))
    );
}

#[test]
fn json_definitions_use_the_same_rules() {
    let text = r#"{
  "name": "j",
  "steps": [
    {"id": "a", "uses": "a.wasm", "input": {"n": 1, "x": "${ .input.x }"}}
  ]
}"#;
    let definition = Definition::parse(text, Path::new("workflow.json")).unwrap();
    // Compact JSON, with no space after `:`, is valid YAML flow syntax too.
    let compact: Value = serde_json::from_str(text).unwrap();
    let compact = Definition::parse(&compact.to_string(), Path::new("workflow.json")).unwrap();
    let parts = |d: &Definition| {
        let steps = d.steps.iter();
        steps
            .map(|s| (s.id.clone(), s.uses.clone(), s.input.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(parts(&compact), parts(&definition));
    assert_eq!(compact.steps[0].uses_span, Span::new(1, 75, 8));
    assert_eq!(definition.version, "0.0.0");
    assert_eq!(definition.steps[0].uses, Path::new("a.wasm"));
    assert_eq!(
        definition.steps[0].input,
        Some(Template::Object(vec![
            ("n".into(), Template::Literal(json!(1))),
            ("x".into(), json_expr("${ .input.x }")),
        ]))
    );
}

#[test]
fn explicit_nulls_and_anchors_are_values() {
    let text = "name: n\nsteps:\n  - id: a\n    uses: a.wasm\n    input: &shared { k: [1, null] }\n  - id: b\n    uses: b.wasm\n    input: *shared\n  - id: c\n    uses: c.wasm\n    input: ~\n";
    let definition = Definition::parse(text, Path::new("w.yaml")).unwrap();
    let inputs: Vec<Option<&Template>> =
        definition.steps.iter().map(|s| s.input.as_ref()).collect();
    let shared = Template::Literal(json!({"k": [1, null]}));
    assert_eq!(
        inputs,
        [
            Some(&shared),
            Some(&shared),
            Some(&Template::Literal(json!(null)))
        ]
    );
}

#[test]
fn engine_errors_render_like_parse_errors() {
    let definition = Definition::parse(CHAIN, Path::new("flows/chain/workflow.yaml")).unwrap();
    let stats = definition.step("stats").unwrap();
    let error = definition.error_at(
        stats.uses_span,
        "component not found",
        Some("build the plugins first".to_owned()),
    );
    assert_eq!(
        error.to_string(),
        "error: component not found
   --> flows/chain/workflow.yaml:24:11
    |
 24 |     uses: /opt/plait/stats.wasm
    |           ^^^^^^^^^^^^^^^^^^^^^
   = help: build the plugins first"
    );
}

#[test]
fn load_finds_the_file_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Definition::load(dir.path()).unwrap_err();
    assert!(matches!(missing, LoadError::NotFoundInDirectory { .. }));
    assert_eq!(
        missing.to_string(),
        format!(
            "no workflow definition in directory `{}`: looked for workflow.yaml, workflow.yml, workflow.json",
            dir.path().display()
        )
    );

    fs::write(
        dir.path().join("workflow.yml"),
        "name: d\nsteps:\n  - id: a\n    uses: ../a.wasm\n",
    )
    .unwrap();
    let definition = Definition::load(dir.path()).unwrap();
    assert_eq!(definition.source.path, dir.path().join("workflow.yml"));
    let expected = std::path::absolute(dir.path()).unwrap().join("../a.wasm");
    assert_eq!(definition.steps[0].uses, expected);
    assert!(definition.steps[0].uses.is_absolute());

    let not_there = Definition::load(&dir.path().join("nope.yaml")).unwrap_err();
    assert!(matches!(not_there, LoadError::Read { .. }), "{not_there:?}");

    fs::write(dir.path().join("workflow.yaml"), "name: [").unwrap();
    let invalid = Definition::load(dir.path()).unwrap_err();
    let LoadError::Invalid(errors) = invalid else {
        panic!("expected invalid, got {invalid:?}");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors.iter().next().unwrap().file,
        dir.path().join("workflow.yaml")
    );
}

#[test]
fn byte_order_marks_are_ignored() {
    let text = "\u{feff}name: b\nsteps:\n  - id: a\n    uses: a.wasm\n";
    let definition = Definition::parse(text, Path::new("w.yaml")).unwrap();
    assert_eq!(definition.steps[0].uses_span, Span::new(4, 11, 6));
    let from_bytes = parse_bytes(text.as_bytes(), Path::new("w.yaml"), Path::new("")).unwrap();
    assert_eq!(from_bytes.source.text, &text[3..]);
}

#[test]
fn step_ids_and_names_are_checked() {
    assert!(StepId::new("a-1_b").is_ok());
    assert_eq!(
        StepId::new("1a").unwrap_err().to_string(),
        "invalid step id `1a`: it must start with a lowercase letter"
    );
    assert_eq!(
        StepId::new("aB").unwrap_err().reason,
        "`B` is not allowed; use lowercase letters, digits, `-` and `_`"
    );
    assert!(StepId::new(&"a".repeat(64)).is_ok());
    assert!(StepId::new(&"a".repeat(65)).is_err());
    assert!(StepId::new("").is_err());
    assert_eq!(workflow_name_problem("1-flow"), None);
    assert!(workflow_name_problem("-flow").is_some());
}

#[test]
fn ai_inference_expands_to_the_classify_component() {
    let text = r#"
name: shorthand
steps:
  - id: local
    type: ai_inference
    model: local
    config: { labels: '["a", "b"]', review_below: 0.6 }
  - id: llm
    type: ai_inference
    model: gpt-4o-mini
    endpoint: https://api.example.com/v1
    api_key: example_key
    prompt: "Pick one of {labels} for {text}"
    config: { labels: '["a", "b"]' }
"#;
    let definition = Definition::parse(text, Path::new("/work/workflow.yaml")).unwrap();
    let local = &definition.steps[0];
    assert_eq!(local.uses, reference_plugin("classify"));
    assert!(local.uses.ends_with("classify.wasm"));
    assert_eq!(local.config["mode"], "local");
    assert_eq!(local.config["review_below"], "0.6");
    let models: Vec<&str> = local
        .grants
        .models
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(models, [LOCAL_MODEL]);
    assert!(local.grants.http.is_empty() && local.grants.secrets.is_empty());

    let llm = &definition.steps[1];
    assert_eq!(llm.config["mode"], "llm");
    assert_eq!(llm.config["model"], "gpt-4o-mini");
    assert_eq!(llm.config["endpoint"], "https://api.example.com/v1");
    assert_eq!(llm.config["prompt"], "Pick one of {labels} for {text}");
    assert_eq!(llm.grants.http.len(), 1);
    assert_eq!(
        llm.grants.http[0].rule.to_string(),
        "https://api.example.com (POST)"
    );
    assert_eq!(llm.grants.secrets[0].name, "api_key");
    assert_eq!(llm.grants.secrets[0].source, "example_key");
    assert!(llm.grants.models.is_empty());
}

/// The committed JSON Schema of the format, regenerated.
const SCHEMA: &str = "docs/workflow.schema.json";

#[test]
fn the_committed_json_schema_is_current() {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&format::json_schema()).unwrap()
    );
    let path = repo_root().join(SCHEMA);
    if std::env::var_os("BLESS").is_some_and(|value| value == "1") {
        fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA} is not what `plait schema` prints; regenerate it with `BLESS=1 cargo test -p plait-definition json_schema` (or `plait schema > {SCHEMA}`)"
    );
}

/// The property names of `definition` in the generated schema.
fn schema_keys(schema: &Value, definition: Option<&str>) -> Vec<String> {
    let node = match definition {
        None => schema,
        Some(name) => &schema["$defs"][name],
    };
    let mut keys: Vec<String> = node["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties for {definition:?}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
    keys.sort();
    keys
}

#[test]
fn the_json_schema_and_the_validator_know_the_same_keys() {
    let schema = format::json_schema();
    assert_eq!(schema_keys(&schema, None), sorted(&validate::WORKFLOW_KEYS));
    assert_eq!(
        schema_keys(&schema, Some("Step")),
        sorted(&validate::STEP_KEYS)
    );
    assert_eq!(
        schema_keys(&schema, Some("Retry")),
        sorted(&validate::RETRY_KEYS)
    );
    assert_eq!(
        schema_keys(&schema, Some("Limits")),
        sorted(&validate::LIMIT_KEYS)
    );
    assert_eq!(
        schema_keys(&schema, Some("Grants")),
        sorted(&validate::GRANT_KEYS)
    );
}

/// A workflow file as JSON, the way an editor's schema check sees it.
fn as_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap();
    let source = SourceFile::new(path, text.as_str());
    let mut diag = error::Diagnostics::new(&source);
    let root = yaml::parse(&source.text, &mut diag).expect("YAML");
    yaml::to_json(&root, &mut diag).expect("JSON")
}

#[test]
fn every_shipped_workflow_matches_the_json_schema() {
    let schema = schema::Schema::compile(&format::json_schema()).unwrap();
    let root = repo_root();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["examples", "templates"] {
        for entry in fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path().join("workflow.yaml");
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.extend(definition_files(&root.join(CASES).join("valid")));
    assert!(files.len() >= 12, "{files:?}");
    for path in &files {
        if let Err(violations) = schema.check(&as_json(path)) {
            panic!("{} breaks the schema: {violations}", path.display());
        }
    }
    // And the schema does catch a mistake the validator reports.
    let bad = as_json(&root.join(CASES).join("unknown_step_key.yaml"));
    assert!(schema.check(&bad).is_err());
}

#[test]
fn an_invalid_input_schema_is_a_definition_error_at_its_line() {
    for (schema, expected) in [
        ("{ type: objekt }", "at `/type`"),
        ("{ required: 5 }", "at `/required`"),
        (
            "{ properties: { a: { minimum: high } } }",
            "at `/properties/a/minimum`",
        ),
    ] {
        let text =
            format!("name: w\ninput:\n  schema: {schema}\nsteps:\n  - id: a\n    uses: a.wasm\n");
        let errors = Definition::parse(&text, Path::new("w.yaml"))
            .expect_err("an invalid input schema must not validate");
        let rendered = errors.to_string();
        assert!(
            rendered.contains("`input.schema` is not a valid JSON Schema")
                && rendered.contains(expected)
                && rendered.contains("w.yaml:3:11"),
            "{schema}: {rendered}"
        );
    }
    let valid = "name: w\ninput:\n  schema: { type: object, required: [text], x-note: kept }\nsteps:\n  - id: a\n    uses: a.wasm\n";
    Definition::parse(valid, Path::new("w.yaml")).expect("a valid schema validates");
}
