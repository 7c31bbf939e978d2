//! The reference integration steps in `plugins/` doing their real job
//! inside the sandbox: `archive` files a document exactly once (under a
//! retry and under SIGKILL + resume), `http` and `notify` talk to a real
//! HTTP server on loopback with the retry rule of `http-client`, and
//! `email` takes apart the shipped sample invoice for `archive`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plait::definition::Definition;
use plait::engine::{Engine, EngineOptions};
use plait::executor::Executor;
use plait::plan::Plan;
use plait::policy::Policy;
use plait::step::{Blob, FailureKind, InvocationInfo, Payload};
use plait::store::SledStore;
use plait_test_artifacts::{
    ARCHIVE_PLUGIN, CLASSIFY_PLUGIN, EMAIL_PLUGIN, HTTP_PLUGIN, NOTIFY_PLUGIN,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

fn engine() -> Engine {
    Engine::new(&EngineOptions {
        cache_dir: Some(shared_cache()),
        ..EngineOptions::default()
    })
    .unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_writes_once_however_often_an_attempt_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let component = engine()
        .load_component(Path::new(ARCHIVE_PLUGIN))
        .await
        .unwrap();
    let sandbox = {
        let text = format!(
            "name: a\nsteps:\n  - id: archive\n    uses: {}\n    grants:\n      dirs:\n        /archive: {{ path: ./archive, mode: rw }}\n",
            yaml_path(ARCHIVE_PLUGIN)
        );
        let definition = Definition::parse(&text, &dir.path().join("workflow.yaml")).unwrap();
        let plan = Plan::build_with(&engine(), definition, &Policy::default())
            .await
            .unwrap();
        plan.steps[0].sandbox.clone()
    };
    let input = Payload {
        json: json!({"label": "invoice", "confidence": 0.91, "text": "Invoice 7"}),
        blobs: vec![Blob {
            name: "document".into(),
            media_type: "application/pdf".into(),
            data: b"%PDF-1.7 invoice seven".to_vec(),
        }],
    };
    let mut outputs = Vec::new();
    for attempt in 1..=3 {
        let invocation = InvocationInfo {
            run_id: "run-7".into(),
            step_id: "archive".into(),
            attempt,
            idempotency_key: InvocationInfo::idempotency_key("run-7", "archive"),
            traceparent: None,
        };
        let invoked = component.invoke(&invocation, &sandbox, &input).await;
        outputs.push(invoked.result.unwrap().json);
    }
    assert_eq!(outputs[0]["already_archived"], false);
    assert_eq!(outputs[1]["already_archived"], true);
    assert_eq!(outputs[2]["already_archived"], true);
    assert_eq!(outputs[1]["record"], outputs[0]["record"]);
    assert_eq!(files(&archive.join("records")).len(), 1);
    assert_eq!(files(&archive.join("documents")).len(), 1);
    assert!(files(&archive.join("tmp")).is_empty());
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(
            archive
                .join("records")
                .join(&files(&archive.join("records"))[0]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["label"], "invoice");
    assert_eq!(record["run_id"], "run-7");
    assert_eq!(record["step_id"], "archive");
    let document = record["document"].as_str().unwrap();
    assert_eq!(
        std::fs::read(archive.join(document)).unwrap(),
        b"%PDF-1.7 invoice seven"
    );
    // Without the grant, the step says how to give it, and is fatal.
    let invoked = component
        .invoke(
            &InvocationInfo {
                run_id: "run-8".into(),
                step_id: "archive".into(),
                attempt: 1,
                idempotency_key: "run-8/archive".into(),
                traceparent: None,
            },
            &plait::capabilities::Sandbox::default(),
            &input,
        )
        .await;
    let failure = invoked.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert!(
        failure.message.contains("grant it to this step"),
        "{}",
        failure.message
    );
}

#[test]
fn archive_after_sigkill_mid_write_and_resume_holds_one_copy() {
    let sandbox = Sandbox::new();
    let archive = sandbox.dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    // Large enough that writing and fsyncing it takes a while.
    let document: Vec<u8> = (0..48u32 << 20).map(|i| (i % 251) as u8).collect();
    sandbox.write("scan.pdf", &document);
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: archive-crash\nsteps:\n  - id: archive\n    uses: {}\n    grants:\n      dirs:\n        /archive: {{ path: ./archive, mode: rw }}\n",
            yaml_path(ARCHIVE_PLUGIN)
        ),
    );
    let mut child = sandbox
        .plait()
        .args([
            "run",
            "workflow.yaml",
            "--file",
            "document=scan.pdf",
            "--json",
        ])
        .env("PLAIT_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the host as soon as the step starts writing into the archive.
    let tmp = archive.join("tmp");
    let started = Instant::now();
    while files(&tmp).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the archive step never started writing"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut printed = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut printed)
        .unwrap();
    assert!(
        printed.is_empty(),
        "the run finished before the kill: {printed}"
    );

    let runs = json(&sandbox.run(&["runs", "list", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(runs[0]["status"], "running");
    let output = sandbox.run(&["resume", &run_id, "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["steps"][0]["attempts"], 2);
    // One document, one record, nothing half-written left behind.
    assert_eq!(files(&archive.join("documents")).len(), 1);
    assert_eq!(files(&archive.join("records")).len(), 1);
    assert!(files(&tmp).is_empty(), "{:?}", files(&tmp));
    let location = report["output"]["record"]["document"].as_str().unwrap();
    assert_eq!(std::fs::read(archive.join(location)).unwrap(), document);
}

/// What the stand-in server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// A real HTTP server on loopback that answers each request with the next
/// of `answers` (status, extra header lines, body), repeating the last.
pub(crate) async fn server(
    answers: Vec<(u16, &'static str, impl Into<String>)>,
) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let answers: Vec<(u16, &'static str, String)> = answers
        .into_iter()
        .map(|(status, headers, body)| (status, headers, body.into()))
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        let mut index = 0;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (status, headers, body) = answers[index.min(answers.len() - 1)].clone();
            index += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buffer = [0u8; 4096];
                let header_end = loop {
                    if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buffer[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&data[..header_end]).to_string();
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while data.len() < header_end + length {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => data.extend_from_slice(&buffer[..n]),
                    }
                }
                log.lock().unwrap().push(Received {
                    head,
                    body: data[header_end..].to_vec(),
                });
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, received)
}

/// Plans and runs a one-step workflow under a policy that allows loopback
/// and reads secrets from a file; returns the step record's output or
/// failure.
async fn run_step(dir: &Path, step: &str, input: Value) -> plait::store::StepRecord {
    let secrets = dir.join("secrets.toml");
    std::fs::write(
        &secrets,
        "token = \"sk-test-123456\"\napi_key = \"sk-llm-abcdef\"\n",
    )
    .unwrap();
    let policy_path = dir.join("plait.toml");
    std::fs::write(
        &policy_path,
        "[grants]\nprivate_networks = true\n[secrets]\nfile = \"secrets.toml\"\n",
    )
    .unwrap();
    let policy = Policy::load(&policy_path).unwrap();
    let text = format!("name: call\nsteps:\n{step}");
    let definition = Definition::parse(&text, &dir.join("workflow.yaml")).unwrap();
    let engine = engine();
    let plan = Plan::build_with(&engine, definition, &policy)
        .await
        .unwrap_or_else(|errors| panic!("{errors}"));
    let store = Arc::new(SledStore::open(&dir.join(format!("journal-{}", uuid_like()))).unwrap());
    let report = Executor::new(store)
        .start(&plan, plait::executor::StartRequest::new(input))
        .await
        .unwrap();
    report.steps[0].clone()
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn http_step(component: &str, port: u16, config: &str, grant_port: u16) -> String {
    format!(
        "  - id: call\n    uses: {}\n    config:\n      url: http://127.0.0.1:{port}/v1/items?x=1\n{config}    grants:\n      http: [\"http://127.0.0.1:{grant_port}\"]\n      secrets: [token]\n",
        yaml_path(component)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_posts_the_input_with_auth_and_parses_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (port, received) = server(vec![(201, "", r#"{"id": 42}"#)]).await;
    let step = http_step(
        HTTP_PLUGIN,
        port,
        "      method: POST\n      auth: bearer\n",
        port,
    );
    let record = run_step(dir.path(), &step, json!({"name": "widget"})).await;
    assert!(record.error.is_none(), "{:?}", record.error);
    let output = record.output.unwrap();
    assert_eq!(output["status"], 201);
    assert_eq!(output["body"], json!({"id": 42}));
    let received = received.lock().unwrap()[0].clone();
    assert!(
        received.head.starts_with("POST /v1/items?x=1 HTTP/1.1"),
        "{}",
        received.head
    );
    assert!(
        received
            .head
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-test-123456")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&received.body).unwrap(),
        json!({"name": "widget"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_failures_follow_the_retry_rule() {
    for (status, headers, kind, needle) in [
        (503, "", FailureKind::Retryable, "answered 503"),
        (
            429,
            "retry-after: 7\r\n",
            FailureKind::Retryable,
            "retry after 7",
        ),
        (404, "", FailureKind::Fatal, "answered 404"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (port, _) = server(vec![(status, headers, r#"{"error": "no"}"#)]).await;
        let record = run_step(
            dir.path(),
            &http_step(HTTP_PLUGIN, port, "", port),
            json!({}),
        )
        .await;
        let error = record.error.expect("the call failed");
        assert_eq!(error.kind, kind, "{status}: {}", error.message);
        assert!(error.message.contains(needle), "{}", error.message);
        assert_eq!(error.details.unwrap()["status"], status);
    }
    // A port the workflow did not grant: refused by the host, fatal.
    let dir = tempfile::tempdir().unwrap();
    let (port, received) = server(vec![(200, "", "{}")]).await;
    let record = run_step(
        dir.path(),
        &http_step(HTTP_PLUGIN, port, "", port.wrapping_add(1).max(1)),
        json!({}),
    )
    .await;
    let error = record.error.expect("the call was refused");
    assert_eq!(error.kind, FailureKind::Fatal, "{}", error.message);
    assert!(
        error
            .message
            .contains("was refused by the host (the host did not allow the request)"),
        "{}",
        error.message
    );
    assert_eq!(error.details.unwrap()["error"], "http-request-denied");
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_delivers_its_input_to_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (port, received) = server(vec![(200, "", "ok")]).await;
    let message = json!({"text": "Invoice 42 archived", "label": "invoice"});
    let record = run_step(
        dir.path(),
        &http_step(NOTIFY_PLUGIN, port, "", port),
        message.clone(),
    )
    .await;
    assert!(record.error.is_none(), "{:?}", record.error);
    assert_eq!(record.output.unwrap()["delivered"], true);
    let received = received.lock().unwrap()[0].clone();
    assert!(
        received.head.starts_with("POST /v1/items?x=1"),
        "{}",
        received.head
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&received.body).unwrap(),
        message
    );
}

/// Store and forward for a notification while the uplink is down: the step
/// keeps failing to connect, its retries wait in the journal, the host is
/// killed mid-outage, and once the webhook is back a resume delivers the
/// message exactly once.
#[test]
fn a_notification_waits_out_an_outage_and_a_crash_then_is_delivered_once() {
    let sandbox = Sandbox::new();
    // A port nobody listens on: the connection is refused, like a down
    // uplink's.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sandbox.write("plait.toml", "[grants]\nprivate_networks = true\n");
    sandbox.write(
        "message.json",
        r#"{"text": "scanned 12 documents while offline"}"#,
    );
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: offline-notify\nsteps:\n  - id: tell\n    uses: {}\n    config:\n      url: http://127.0.0.1:{port}/hook\n      timeout_ms: 500\n    grants:\n      http: [\"http://127.0.0.1:{port}\"]\n    retry: {{ max_attempts: 100, initial_interval: 200ms, max_interval: 500ms }}\n",
            yaml_path(NOTIFY_PLUGIN)
        ),
    );
    let child = KillOnDrop(
        sandbox
            .plait()
            .args([
                "run",
                "workflow.yaml",
                "--policy",
                "plait.toml",
                "--input",
                "message.json",
                "--json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Several attempts fail (the run's own log says so; the store is the
    // running host's).
    let logs = sandbox.store().join("logs");
    let started = Instant::now();
    let run_id = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the step never retried"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Some(log) = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|e| e == "jsonl"))
        else {
            continue;
        };
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"attempt\":3")
        {
            break log.file_stem().unwrap().to_string_lossy().into_owned();
        }
    };
    // The host dies mid-outage.
    drop(child);
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_ne!(shown["status"], "succeeded", "{shown}");
    assert!(
        shown["steps"][0]["attempts"].as_u64().unwrap() >= 2,
        "{shown}"
    );

    // The uplink is back: a real server on the same port.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut data = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&data);
                if let Some(at) = text.find("\r\n\r\n")
                    && text[at + 4..].contains('}')
                {
                    break;
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&data).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let resumed = sandbox.run(&["resume", &run_id, "--policy", "plait.toml", "--json"]);
    assert_exit(&resumed, 0);
    let report = json(&resumed);
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["output"]["delivered"], true);
    assert!(
        report["steps"][0]["attempts"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1, "delivered once: {received:?}");
    assert!(
        received[0].contains("scanned 12 documents while offline"),
        "{}",
        received[0]
    );
}

#[test]
fn an_emailed_invoice_is_taken_apart_and_archived() {
    let sandbox = Sandbox::new();
    let example = repo_root().join("examples/email-archive");
    // The shipped example is valid as it stands.
    let output = sandbox.run(&["validate", example.to_str().unwrap()]);
    assert_exit(&output, 0);
    // Run the same workflow from a scratch folder, so the archive it
    // writes is not in the repository.
    let text = std::fs::read_to_string(example.join("workflow.yaml"))
        .unwrap()
        .replace(
            "../../plugins/target/wasm32-wasip2/release/email.wasm",
            &yaml_path(EMAIL_PLUGIN),
        )
        .replace(
            "../../plugins/target/wasm32-wasip2/release/archive.wasm",
            &yaml_path(ARCHIVE_PLUGIN),
        );
    sandbox.write("workflow.yaml", text);
    std::fs::create_dir(sandbox.dir.path().join("archive")).unwrap();
    let eml = example.join("invoice.eml");
    let output = sandbox.run(&[
        "run",
        "workflow.yaml",
        "--file",
        &format!("message={}", eml.display()),
        "--json",
    ]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(
        report["output"],
        json!({
            "subject": "Invoice 2026-0042 for March",
            "attachment": "invoice-2026-0042.pdf",
            "archived_as": report["output"]["archived_as"],
            "already_archived": false,
        })
    );
    let archived = report["output"]["archived_as"].as_str().unwrap();
    assert!(archived.ends_with(".pdf"), "{archived}");
    assert_eq!(
        std::fs::read(sandbox.dir.path().join("archive").join(archived)).unwrap(),
        std::fs::read(example.join("invoice.pdf")).unwrap()
    );
    let email = &report["steps"][0];
    assert_eq!(email["status"], "succeeded");
}

/// A `classify` step in `llm` mode against the stand-in server on `port`,
/// granted `grant_port`.
fn classify_step(port: u16, grant_port: u16) -> String {
    format!(
        "  - id: classify\n    uses: {}\n    config:\n      mode: llm\n      endpoint: http://127.0.0.1:{port}/v1\n      model: stand-in-1\n      labels: '{{\"invoice\": \"a bill asking for payment\", \"letter\": \"correspondence\", \"receipt\": \"proof of a payment made\"}}'\n    grants:\n      http: [\"http://127.0.0.1:{grant_port}\"]\n      secrets: [api_key]\n",
        yaml_path(CLASSIFY_PLUGIN)
    )
}

/// The text of a shipped sample, as its manifest records it.
fn sample_text(file: &str) -> String {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/samples/manifest.json")).unwrap(),
    )
    .unwrap();
    let entry = manifest
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["file"] == file)
        .unwrap();
    entry["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_asks_the_granted_llm_endpoint_and_reads_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let completion = r#"{"id": "c1", "model": "stand-in-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"label\": \"invoice\", \"confidence\": 0.93, \"scores\": {\"invoice\": 0.93, \"letter\": 0.02, \"receipt\": 0.05}}"}}]}"#;
    let (port, received) = server(vec![(200, "", completion)]).await;
    let text = sample_text("invoice.png");
    let record = run_step(
        dir.path(),
        &classify_step(port, port),
        json!({"text": text}),
    )
    .await;
    assert!(record.error.is_none(), "{:?}", record.error);
    let output = record.output.unwrap();
    assert_eq!(output["label"], "invoice");
    assert_eq!(output["confidence"], 0.93);
    assert_eq!(output["mode"], "llm");
    assert_eq!(output["model"], "stand-in-1");
    let request = received.lock().unwrap()[0].clone();
    assert!(
        request
            .head
            .starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{}",
        request.head
    );
    assert!(
        request
            .head
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-llm-abcdef")
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["model"], "stand-in-1");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("Invoice number: 2026-0042"), "{user}");
    assert!(
        user.contains("- receipt: proof of a payment made"),
        "{user}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_failures_follow_its_documented_rule() {
    let answer = |content: &str| {
        format!(
            r#"{{"choices": [{{"message": {{"role": "assistant", "content": {}}}}}]}}"#,
            serde_json::to_string(content).unwrap()
        )
    };
    for (status, body, kind, needle) in [
        (
            200,
            answer("It looks like an invoice to me."),
            FailureKind::Retryable,
            "holds no JSON object",
        ),
        (
            200,
            answer(r#"{"label": "memo", "confidence": 1}"#),
            FailureKind::Retryable,
            "`memo`, which is not one of invoice, letter, receipt",
        ),
        (
            200,
            "<html>not an API</html>".to_owned(),
            FailureKind::Fatal,
            "did not answer with a chat completion",
        ),
        (
            429,
            r#"{"error": "slow down"}"#.to_owned(),
            FailureKind::Retryable,
            "answered 429",
        ),
        (
            401,
            r#"{"error": "bad key"}"#.to_owned(),
            FailureKind::Fatal,
            "answered 401",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (port, _) = server(vec![(status, "", body.clone())]).await;
        let record = run_step(dir.path(), &classify_step(port, port), json!({"text": "x"})).await;
        let error = record.error.expect("the classification failed");
        assert_eq!(error.kind, kind, "{body}: {}", error.message);
        assert!(error.message.contains(needle), "{}", error.message);
    }
    // An endpoint the workflow did not grant is refused by the host: fatal,
    // and the server never hears of it.
    let dir = tempfile::tempdir().unwrap();
    let (port, received) = server(vec![(200, "", "{}")]).await;
    let record = run_step(
        dir.path(),
        &classify_step(port, port.wrapping_add(1).max(1)),
        json!({"text": "x"}),
    )
    .await;
    let error = record.error.expect("the endpoint was refused");
    assert_eq!(error.kind, FailureKind::Fatal, "{}", error.message);
    assert!(
        error.message.contains("refused by the host"),
        "{}",
        error.message
    );
    assert!(received.lock().unwrap().is_empty());
}
