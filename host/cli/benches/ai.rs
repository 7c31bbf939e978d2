//! The AI steps (`ocr`, `classify` in mode `local`) in the sandbox beside
//! the same work run natively, on one shipped sample page, printed as a
//! markdown table.
//!
//! "Natively" is the steps' own pre- and post-processing (the `plait-ai`
//! crate, compiled for the host) calling the host's model runner directly:
//! what the component does minus WebAssembly, the component boundary and
//! the JSON and blob plumbing. Both sides share one process-wide model
//! registry, so both are measured warm (models parsed, plans optimized);
//! the first, cold call is reported on its own.
//!
//! - `cargo bench -p plait-cli --bench ai`: the full run.
//! - `cargo test -p plait-cli --bench ai`: one iteration each, to check it works.
//!
//! Needs the model store (`scripts/models`). Results live in
//! `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plait::capabilities::Sandbox;
use plait::engine::{Engine, EngineOptions, LoadedComponent};
use plait::inference::{self, LoadedModel, Models};
use plait::step::{Blob, InvocationInfo, Payload};
use plait_ai::{embed, ocr};
use plait_sdk::inference::{
    InferenceError, InferenceErrorCode, Model, ModelBackend, Tensor, TensorData,
};
use plait_test_artifacts::{CLASSIFY_PLUGIN, OCR_PLUGIN, REPO_ROOT};
use serde_json::{Value, json};

const SAMPLE: &str = "tests/samples/invoice-scan.jpg";

/// The host's model runner behind the SDK's model type.
struct Native(Arc<LoadedModel>);

impl ModelBackend for Native {
    fn inputs(&self) -> Vec<String> {
        self.0.inputs().to_vec()
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferenceError> {
        let inputs = inputs
            .into_iter()
            .map(|t| inference::Tensor {
                name: t.name,
                shape: t.shape.iter().map(|&d| d as usize).collect(),
                data: match t.data {
                    TensorData::F32(v) => inference::TensorData::F32(v),
                    TensorData::I64(v) => inference::TensorData::I64(v),
                },
            })
            .collect();
        let outputs = self.0.run(inputs).map_err(failed)?;
        Ok(outputs
            .into_iter()
            .map(|t| Tensor {
                name: t.name,
                shape: t.shape.iter().map(|&d| d as u32).collect(),
                data: match t.data {
                    inference::TensorData::F32(v) => TensorData::F32(v),
                    inference::TensorData::I64(v) => TensorData::I64(v),
                },
            })
            .collect())
    }

    fn read_file(&self, name: &str) -> Result<Vec<u8>, InferenceError> {
        self.0.read_file(name).map_err(failed)
    }
}

fn failed(error: inference::InferenceError) -> InferenceError {
    InferenceError {
        code: InferenceErrorCode::Failed,
        message: error.message,
    }
}

fn folder(name: &str) -> std::path::PathBuf {
    inference::find_model(&inference::default_model_dir(), name)
        .unwrap_or_else(|message| panic!("{message}"))
}

fn native(name: &str) -> Model {
    let model = Models::global().load(name, &folder(name)).unwrap();
    Model::from_backend(Arc::new(Native(model)))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Times `iterations` calls of `call` after one cold call; returns the
/// cold time, the median and the last result.
async fn time<T, F, Fut>(iterations: usize, mut call: F) -> (Duration, Duration, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let started = Instant::now();
    let mut last = call().await;
    let cold = started.elapsed();
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        last = call().await;
        samples.push(started.elapsed());
    }
    (cold, median(samples), last)
}

async fn invoke(component: &LoadedComponent, sandbox: &Sandbox, input: &Payload) -> Value {
    let invocation = InvocationInfo {
        run_id: "bench".into(),
        step_id: "step".into(),
        attempt: 1,
        idempotency_key: "bench/step".into(),
        traceparent: None,
    };
    let invoked = component.invoke(&invocation, sandbox, input).await;
    invoked.result.expect("the step succeeds").json
}

fn labels() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        Path::new(REPO_ROOT).join("templates/document-intake/workflow.yaml"),
    )
    .unwrap();
    // The template's labels: the folded scalar after `labels: >-`.
    let start = text.find("labels: >-").expect("the template has labels") + "labels: >-".len();
    let block: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("        "))
        .collect::<Vec<_>>()
        .join(" ");
    let map: BTreeMap<String, String> = serde_json::from_str(&block).unwrap();
    map.into_iter().collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick" || arg == "--test")
        || !std::env::args().any(|arg| arg == "--bench");
    let (ocr_iterations, classify_iterations) = if quick { (1, 1) } else { (10, 30) };
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let ocr_step = engine.load_component(Path::new(OCR_PLUGIN)).await.unwrap();
    let classify_step = engine
        .load_component(Path::new(CLASSIFY_PLUGIN))
        .await
        .unwrap();
    let bytes = std::fs::read(Path::new(REPO_ROOT).join(SAMPLE)).unwrap();

    // OCR in the sandbox.
    let mut ocr_sandbox = Sandbox::default();
    for name in [ocr::DET_MODEL, ocr::REC_MODEL] {
        ocr_sandbox.models.insert(name.to_owned(), folder(name));
    }
    let ocr_input = Payload {
        json: json!({}),
        blobs: vec![Blob {
            name: "document".into(),
            media_type: "image/jpeg".into(),
            data: bytes.clone(),
        }],
    };
    let (ocr_cold, ocr_sandboxed, output) = time(ocr_iterations, || {
        invoke(&ocr_step, &ocr_sandbox, &ocr_input)
    })
    .await;
    let text = output["text"].as_str().unwrap().to_owned();

    // OCR natively: the same decode, detection, recognition.
    let models = ocr::Ocr::new(native(ocr::DET_MODEL), native(ocr::REC_MODEL)).unwrap();
    let (_, ocr_native, native_text) = time(ocr_iterations, || {
        let format = match ocr::kind("image/jpeg", &bytes).unwrap() {
            ocr::Kind::Image(format) => format,
            ocr::Kind::Pdf => unreachable!("the sample is a JPEG"),
        };
        let image = ocr::decode_image(format, &bytes).unwrap();
        let text = models.page(&image).unwrap().text();
        async { text }
    })
    .await;
    assert_eq!(
        native_text, text,
        "native and sandboxed OCR read the same text"
    );

    // Classify (local) in the sandbox, on the OCR'd text.
    let labels = labels();
    let labels_json: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(label, description)| (label.as_str(), description.as_str()))
        .collect();
    let mut classify_sandbox = Sandbox::default();
    classify_sandbox
        .models
        .insert(embed::MODEL.to_owned(), folder(embed::MODEL));
    classify_sandbox
        .config
        .insert("mode".into(), "local".into());
    classify_sandbox.config.insert(
        "labels".into(),
        serde_json::to_string(&labels_json).unwrap(),
    );
    // Each call gets a text of its own (a reference line added), so that no
    // call is answered from the host's memo of small results, except the
    // label descriptions, which are the same on every call, as in use.
    let texts: Vec<String> = (0..=(classify_iterations + 1) * 2)
        .map(|i| format!("{text}\nReference {i}"))
        .collect();
    let mut next = 0;
    let (classify_cold, classify_sandboxed, output) = time(classify_iterations, || {
        next += 1;
        let input = Payload {
            json: json!({ "text": texts[next] }),
            blobs: Vec::new(),
        };
        let (step, sandbox) = (&classify_step, &classify_sandbox);
        async move { invoke(step, sandbox, &input).await }
    })
    .await;
    let label = output["label"].as_str().unwrap().to_owned();

    // Classify natively: the tokenizer read and the same embeddings.
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(label, description)| (label.as_str(), description.as_str()))
        .collect();
    let (_, classify_native, native_scores) = time(classify_iterations, || {
        next += 1;
        let embedder =
            embed::Embedder::new(native(embed::MODEL), embed::DEFAULT_MAX_TOKENS).unwrap();
        let scores = embed::zero_shot(&embedder, &texts[next], &pairs, 0.05).unwrap();
        async { scores }
    })
    .await;
    let best = native_scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(index, _)| pairs[index].0)
        .unwrap();
    assert_eq!(best, label, "native and sandboxed classify agree");

    println!(
        "AI steps on `{SAMPLE}` ({} text lines), label `{label}`:\n",
        text.lines().count()
    );
    println!(
        "| step | sandbox (median) | native (median) | sandbox ÷ native | target | cold first call (sandbox) |"
    );
    println!("|---|---|---|---|---|---|");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "| ocr, one page | {} | {} | {:.2}× | ≤ 2 s, ≤ 1.5× | {} |",
        ms(ocr_sandboxed),
        ms(ocr_native),
        ratio(ocr_sandboxed, ocr_native),
        ms(ocr_cold)
    );
    println!(
        "| classify (local) | {} | {} | {:.2}× | ≤ 200 ms, ≤ 1.5× | {} |",
        ms(classify_sandboxed),
        ms(classify_native),
        ratio(classify_sandboxed, classify_native),
        ms(classify_cold)
    );
    println!(
        "\n{ocr_iterations} OCR and {classify_iterations} classify iterations after one cold call each; \
         the cold call includes parsing the models and optimizing their plans."
    );
}
