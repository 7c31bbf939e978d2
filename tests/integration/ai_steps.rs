//! The AI steps doing their real job: the document-intake template (ocr →
//! classify → archive → notify) on every shipped sample, scored against the
//! samples' known text and labels, with the models run by the host from
//! the real model store; and the model grants refused where they must be.

use std::path::Path;

use plait::inference::{ErrorCode, Models, Tensor, TensorData};
use plait_test_artifacts::{OCR_PLUGIN, REPO_ROOT};
use serde_json::Value;

use crate::reference_steps::server;
use crate::support::*;

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Character error rate of `got` against `expected`, whitespace runs
/// counted as one space.
fn cer(got: &str, expected: &str) -> f64 {
    let normal = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let expected = normal(expected);
    edit_distance(&normal(got), &expected) as f64 / expected.chars().count() as f64
}

#[test]
fn the_error_rate_counts_edits_per_expected_character() {
    assert_eq!(cer("Invoice 42", "Invoice 42"), 0.0);
    assert_eq!(cer("lnvoice  42", "Invoice 42"), 0.1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

/// The template, copied next to the test's store with absolute component
/// paths and the webhook on `port`, and a policy allowing that webhook.
pub(crate) fn template(sandbox: &Sandbox, port: u16) -> (String, String) {
    let text = std::fs::read_to_string(
        Path::new(REPO_ROOT).join("templates/document-intake/workflow.yaml"),
    )
    .unwrap();
    let plugins = format!("{REPO_ROOT}/plugins/target/wasm32-wasip2/release/");
    let text = text
        .replace("../../plugins/target/wasm32-wasip2/release/", &plugins)
        .replace("127.0.0.1:8787", &format!("127.0.0.1:{port}"));
    assert!(text.contains(&plugins) && text.contains(&port.to_string()));
    std::fs::create_dir_all(sandbox.dir.path().join("intake/archive")).unwrap();
    let workflow = sandbox.write("intake/workflow.yaml", text);
    let policy = sandbox.write(
        "plait.toml",
        format!(
            "[grants]\noutbound_http = [\"http://127.0.0.1:{port}\"]\nprivate_networks = true\n"
        ),
    );
    (
        workflow.to_string_lossy().into_owned(),
        policy.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_intake_reads_and_labels_every_sample_within_the_error_targets() {
    let (port, received) = server(vec![(204, "", "")]).await;
    let sandbox = Sandbox::new();
    let (workflow, policy) = template(&sandbox, port);
    let samples = Path::new(REPO_ROOT).join("tests/samples");
    let manifest: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(samples.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest.len(), 16);
    let mut failures = Vec::new();
    let mut reviews = 0;
    for sample in &manifest {
        let file = sample["file"].as_str().unwrap();
        let kind = sample["kind"].as_str().unwrap();
        let label = sample["label"].as_str().unwrap();
        let expected: Vec<&str> = sample["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap())
            .collect();
        let document = format!("document={}", samples.join(file).display());
        let args = ["run", &workflow, "--policy", &policy, "--file", &document];
        let output = tokio::task::block_in_place(|| sandbox.run(&args));
        assert_exit(&output, 0);
        let result = json(&output);
        let rate = cer(result["text"].as_str().unwrap(), &expected.join("\n"));
        // The issue's targets: 3% on clean pages, 8% on scans; a text
        // layer is read, not recognized.
        let target = match kind {
            "clean" => 0.03,
            "scan" => 0.08,
            _ => 0.0,
        };
        println!("{file}: CER {rate:.4} (target {target}), {result}");
        if rate > target {
            failures.push(format!("{file}: CER {rate:.4} over {target}"));
        }
        if result["label"] != label {
            failures.push(format!("{file}: labelled {} not {label}", result["label"]));
        }
        // Routed for review exactly when the classifier was unsure.
        let unsure = result["needs_review"] == true;
        assert_eq!(
            result["review"],
            if unsure { "succeeded" } else { "skipped" },
            "{file}: {result}"
        );
        reviews += usize::from(unsure);
        let archived = result["archived_as"].as_str().unwrap();
        assert!(
            sandbox
                .dir
                .path()
                .join("intake/archive")
                .join(archived)
                .is_file(),
            "{file}: {archived} not in the archive"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // A stricter threshold routes a confident document for review too.
    let strict = std::fs::read_to_string(&workflow)
        .unwrap()
        .replace("review_below: 0.6", "review_below: 0.999");
    let strict = sandbox.write("intake/strict.yaml", strict);
    let document = format!(
        "document={}",
        samples
            .join(manifest[0]["file"].as_str().unwrap())
            .display()
    );
    let args = [
        "run",
        strict.to_str().unwrap(),
        "--policy",
        &policy,
        "--file",
        &document,
    ];
    let output = tokio::task::block_in_place(|| sandbox.run(&args));
    assert_exit(&output, 0);
    let result = json(&output);
    assert_eq!(result["needs_review"], true, "{result}");
    assert_eq!(result["review"], "succeeded", "{result}");
    reviews += 1;

    let received = received.lock().unwrap();
    let to = |path: &str| {
        received
            .iter()
            .filter(|request| request.head.starts_with(&format!("POST {path} ")))
            .map(|request| serde_json::from_slice::<Value>(&request.body).unwrap())
            .collect::<Vec<Value>>()
    };
    let notified = to("/notify");
    assert_eq!(
        notified.len(),
        manifest.len() + 1,
        "one notification per document"
    );
    assert_eq!(notified[0]["event"], "document.archived");
    assert_eq!(notified[0]["label"], manifest[0]["label"]);
    let reviewed = to("/review");
    assert_eq!(
        reviewed.len(),
        reviews,
        "one review request per unsure document"
    );
    assert!(
        reviewed
            .iter()
            .all(|request| request["event"] == "document.review_requested")
    );
}

fn ocr_workflow(sandbox: &Sandbox, grants: &str) -> String {
    sandbox
        .write(
            "ocr.yaml",
            format!(
                "name: ocr\nsteps:\n  - id: ocr\n    uses: {}\n{grants}",
                yaml_path(OCR_PLUGIN)
            ),
        )
        .to_string_lossy()
        .into_owned()
}

fn sample(name: &str) -> String {
    format!("document={REPO_ROOT}/tests/samples/{name}")
}

#[test]
fn a_model_the_workflow_did_not_grant_cannot_be_loaded() {
    let sandbox = Sandbox::new();
    let workflow = ocr_workflow(&sandbox, "");
    let output = sandbox.run(&["run", &workflow, "--file", &sample("receipt.png")]);
    assert_exit(&output, 1);
    let stderr = stderr(&output);
    assert!(
        stderr
            .contains("model `ppocrv6-tiny-det` is not granted to this step (it was granted none)"),
        "{stderr}"
    );
}

#[test]
fn a_model_the_policy_does_not_allow_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new();
    let workflow = ocr_workflow(
        &sandbox,
        "    grants:\n      models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]\n",
    );
    let policy = sandbox.write(
        "plait.toml",
        "[grants]\nmodels = [\"all-minilm-l6-v2-int8\"]\n",
    );
    let output = sandbox.run(&["validate", &workflow, "--policy", policy.to_str().unwrap()]);
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("model `ppocrv6-tiny-det` is not one the host policy"),
        "{stderr}"
    );
    assert!(
        stderr.contains("allowed: all-minilm-l6-v2-int8"),
        "{stderr}"
    );
}

#[test]
fn a_model_missing_from_the_store_says_how_to_fetch_it() {
    let sandbox = Sandbox::new();
    let workflow = ocr_workflow(
        &sandbox,
        "    grants:\n      models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]\n",
    );
    let empty = sandbox.dir.path().join("no-models");
    std::fs::create_dir(&empty).unwrap();
    let output = sandbox
        .plait()
        .args(["validate", &workflow])
        .env("PLAIT_MODELS", &empty)
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("model `ppocrv6-tiny-det` is not in the model store")
            && stderr.contains("run `scripts/models`"),
        "{stderr}"
    );
}

#[test]
fn a_component_that_does_not_declare_a_model_cannot_be_granted_one() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "w.yaml",
        format!(
            "name: w\nsteps:\n  - id: read\n    uses: {}\n    grants:\n      models: [ppocrv6-tiny-det]\n",
            yaml_path(plait_test_artifacts::READ_TEXT_PLUGIN)
        ),
    );
    let output = sandbox.run(&["validate", workflow.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains(
            "grants model `ppocrv6-tiny-det`, which component `read-text` does not ask for"
        ),
        "{}",
        stderr(&output)
    );
}

/// The host checks every call before the model sees it.
#[test]
fn inputs_that_do_not_fit_the_model_are_refused_with_the_reason() {
    let store = plait::inference::default_model_dir();
    let folder = plait::inference::find_model(&store, "all-minilm-l6-v2-int8").unwrap();
    let model = Models::global()
        .load("all-minilm-l6-v2-int8", &folder)
        .unwrap();
    assert_eq!(
        model.inputs(),
        ["input_ids", "attention_mask", "token_type_ids"]
    );
    let ids = |name: &str, shape: Vec<usize>, values: Vec<i64>| Tensor {
        name: name.to_owned(),
        shape,
        data: TensorData::I64(values),
    };
    let good = |name: &str| match name {
        "input_ids" => ids(name, vec![1, 4], vec![101, 7592, 2088, 102]),
        "attention_mask" => ids(name, vec![1, 4], vec![1; 4]),
        _ => ids(name, vec![1, 4], vec![0; 4]),
    };
    let cases = [
        (
            vec![good("input_ids"), good("attention_mask")],
            "input `token_type_ids` is missing",
        ),
        (vec![good("nope")], "it has no input `nope`"),
        (
            vec![
                ids("input_ids", vec![1, 5], vec![1, 2, 3]),
                good("attention_mask"),
                good("token_type_ids"),
            ],
            "has shape [1, 5] but 3 values",
        ),
        (
            vec![
                ids("input_ids", vec![1 << 20, 1 << 20], vec![1]),
                good("attention_mask"),
                good("token_type_ids"),
            ],
            "at most 33554432 values",
        ),
    ];
    for (inputs, expected) in cases {
        let error = model.run(inputs).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidInput, "{error}");
        assert!(error.message.contains(expected), "{error}");
    }
    // A token id past the vocabulary: refused, and the host lives on.
    let error = model
        .run(vec![
            ids("input_ids", vec![1, 4], vec![101, 99_999_999, 2088, 102]),
            good("attention_mask"),
            good("token_type_ids"),
        ])
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidInput, "{error}");
    let outputs = model
        .run(vec![
            good("input_ids"),
            good("attention_mask"),
            good("token_type_ids"),
        ])
        .unwrap();
    assert_eq!(outputs[0].shape, [1, 4, 384]);
    // A file beside the model, but nothing outside its folder.
    assert!(model.read_file("tokenizer.json").unwrap().starts_with(b"{"));
    for escape in ["../ppocrv6-tiny-det/model.onnx", "/etc/passwd", ".."] {
        assert_eq!(
            model.read_file(escape).unwrap_err().code,
            ErrorCode::InvalidInput,
            "{escape}"
        );
    }
    assert_eq!(
        model.read_file("missing.txt").unwrap_err().code,
        ErrorCode::NotFound
    );
}

/// `type: ai_inference` with `model: local`: the classify component's
/// offline mode, its model granted by the shorthand.
#[test]
fn ai_inference_with_the_local_model_classifies_offline() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "w.yaml",
        r#"name: shorthand
steps:
  - id: kind
    type: ai_inference
    model: local
    input:
      text: ${ .input.text }
    config:
      labels: '{"receipt": "a till receipt: items bought and the total paid", "letter": "a letter: Dear someone, Yours sincerely"}'
"#,
    );
    let input = sandbox.write(
        "input.json",
        r#"{"text": "Dear Mr Jones,\nThank you for your call today.\nYours sincerely,\nAnna Berg"}"#,
    );
    let output = sandbox.run(&[
        "run",
        workflow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_exit(&output, 0);
    let result = json(&output);
    assert_eq!(result["label"], "letter", "{result}");
    assert_eq!(result["mode"], "local");
    assert!(result["confidence"].as_f64().unwrap() > 0.5, "{result}");
}

/// `type: ai_inference` with an LLM: mode `llm` against the endpoint, its
/// host granted by the shorthand (within the operator's policy), the key
/// from the host's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_inference_with_an_llm_calls_the_endpoint_it_names() {
    let completion = r#"{"choices": [{"message": {"role": "assistant", "content": "{\"label\": \"letter\", \"confidence\": 0.9}"}}]}"#;
    let (port, received) = server(vec![(200, "", completion)]).await;
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "w.yaml",
        format!(
            r#"name: shorthand
steps:
  - id: kind
    type: ai_inference
    model: stand-in-1
    endpoint: http://127.0.0.1:{port}/v1
    api_key: llm_key
    prompt: "Label this as one of {{labels}}: {{text}}"
    input:
      text: ${{ .input.text }}
    config: {{ labels: '["receipt", "letter"]' }}
"#
        ),
    );
    let input = sandbox.write("input.json", r#"{"text": "Dear Mr Jones"}"#);
    let policy = sandbox.write("plait.toml", "[grants]\nprivate_networks = true\n");
    let args = [
        "run",
        workflow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ];
    let output = tokio::task::block_in_place(|| {
        sandbox
            .plait()
            .args(args)
            .env("PLAIT_SECRET_LLM_KEY", "sk-stand-in-key")
            .output()
            .unwrap()
    });
    assert_exit(&output, 0);
    let result = json(&output);
    assert_eq!(result["label"], "letter", "{result}");
    assert_eq!(result["mode"], "llm");
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1);
    assert!(
        received[0].head.starts_with("POST /v1/chat/completions"),
        "{}",
        received[0].head
    );
    assert!(
        received[0]
            .head
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-stand-in-key")
    );
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["model"], "stand-in-1");
    assert_eq!(
        body["messages"][1]["content"],
        "Label this as one of - letter\n- receipt: Dear Mr Jones"
    );

    // Without a policy allowing private networks, the same workflow is
    // refused its loopback endpoint before anything runs.
    let output = tokio::task::block_in_place(|| {
        sandbox
            .plait()
            .args(&args[..4])
            .env("PLAIT_SECRET_LLM_KEY", "sk-stand-in-key")
            .output()
            .unwrap()
    });
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("reaches a private or loopback address"),
        "{}",
        stderr(&output)
    );
}

/// A timeout ends a step even while the host runs a model for it: the call
/// runs on a blocking thread and the step's future is dropped.
#[test]
fn a_timeout_ends_a_step_in_the_middle_of_inference() {
    let sandbox = Sandbox::new();
    let workflow = ocr_workflow(
        &sandbox,
        "    limits: { timeout: 100ms }\n    grants:\n      models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]\n",
    );
    let output = sandbox.run(&["run", &workflow, "--file", &sample("contract.png")]);
    assert_exit(&output, 1);
    assert!(
        stderr(&output).contains("timeout limit 100ms exceeded"),
        "{}",
        stderr(&output)
    );
    // The host is fine: the same step without the limit reads the page.
    let workflow = ocr_workflow(
        &sandbox,
        "    grants:\n      models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]\n",
    );
    let output = sandbox.run(&["run", &workflow, "--file", &sample("contract.png")]);
    assert_exit(&output, 0);
    assert!(
        json(&output)["text"]
            .as_str()
            .unwrap()
            .starts_with("SERVICE AGREEMENT")
    );
}

/// `plait inspect` lists the models a component asks for.
#[test]
fn inspect_lists_the_models_a_step_asks_for() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["inspect", OCR_PLUGIN]);
    assert_exit(&output, 0);
    let shown = format!("{}{}", stdout(&output), stderr(&output));
    assert!(shown.contains("model ppocrv6-tiny-det"), "{shown}");
    assert!(shown.contains("model ppocrv6-tiny-rec"), "{shown}");
}

/// CRC-32 (IEEE), for hand-made PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG that claims `width` × `height` pixels and holds none.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png
}

/// Broken and hostile documents get a fatal error that names the problem,
/// and the step is not retried.
#[test]
fn bad_documents_are_refused_with_the_reason() {
    let sandbox = Sandbox::new();
    let workflow = ocr_workflow(
        &sandbox,
        "    grants:\n      models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]\n",
    );
    let invoice = std::fs::read(format!("{REPO_ROOT}/tests/samples/invoice.png")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "notes.txt",
            b"just some text".to_vec(),
            "is not a PNG, JPEG, TIFF or PDF file",
        ),
        (
            "cut.png",
            invoice[..400].to_vec(),
            "could not decode the Png image",
        ),
        (
            "broken.pdf",
            b"%PDF-1.7\nnot really".to_vec(),
            "is not a readable PDF",
        ),
        // A 100,000 x 100,000 image would need 30 GB: refused from its header.
        (
            "huge.png",
            png_header(100_000, 100_000),
            "could not decode the Png image",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = sandbox.write(name, bytes);
        let document = format!("document={}", path.display());
        let output = sandbox.run(&["run", &workflow, "--file", &document]);
        assert_exit(&output, 1);
        let stderr = stderr(&output);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains("fatal"), "{name}: {stderr}");
    }
}
