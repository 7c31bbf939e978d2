//! Following a run from the outside: JSON log lines with the run's fields,
//! spans received by a real OTLP/HTTP receiver on loopback with the right
//! parents (and the trace passed on to a step's HTTP call), Prometheus
//! series on `/metrics` after a known workload, the timeline, `plait logs`,
//! and the audit log.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::Stdio;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use plait::definition::Definition;
use plait::engine::{Engine, EngineOptions};
use plait::executor::Executor;
use plait::plan::Plan;
use plait::policy::Policy;
use plait::store::SledStore;
use plait::telemetry::Metrics;
use plait_test_artifacts::{ECHO_COMPONENT, FAIL_COMPONENT, HOSTILE_COMPONENT, HTTP_PLUGIN};
use prost::Message as _;
use serde_json::Value;

use crate::reference_steps::server;
use crate::support::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// A workflow whose second step fails once (retryable) and succeeds on its
/// second attempt; `third` is its third step.
fn three_steps(sandbox: &Sandbox, name: &str, third: &str) -> std::path::PathBuf {
    sandbox.write(
        &format!("{name}.yaml"),
        format!(
            "name: {name}\nversion: 1.2.3\nretry:\n  max_attempts: 3\n  initial_interval: 100ms\n  jitter: false\nsteps:\n  - id: first\n    uses: {echo}\n  - id: flaky\n    uses: {fail}\n    config: {{ kind: retryable, message: busy, until_attempt: \"2\" }}\n{third}",
            echo = yaml_path(ECHO_COMPONENT),
            fail = yaml_path(FAIL_COMPONENT),
        ),
    )
}

fn echo_step(id: &str) -> String {
    format!("  - id: {id}\n    uses: {}\n", yaml_path(ECHO_COMPONENT))
}

/// `plait --log-format json run WORKFLOW --json`, which must succeed.
fn run_logged_as_json(sandbox: &Sandbox, workflow: &std::path::Path) -> std::process::Output {
    let output = sandbox.run(&[
        "--log-format",
        "json",
        "run",
        workflow.to_str().unwrap(),
        "--json",
    ]);
    assert_exit(&output, 0);
    output
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn is_hex(value: &Value, len: usize) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A workflow: an echo step, then a `wait` step `approve`.
fn waits_workflow(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write(
        "waits.yaml",
        format!(
            "name: waits\nsteps:\n  - id: first\n    uses: {}\n  - id: approve\n    type: wait\n",
            yaml_path(ECHO_COMPONENT)
        ),
    )
}

/// Starts a run of [`waits_workflow`] (`plait OPTIONS run`) and returns
/// the process once the run waits, with that log line.
fn start_waiting(sandbox: &Sandbox, options: &[&str]) -> (KillOnDrop, String) {
    let workflow = waits_workflow(sandbox);
    let mut args = options.to_vec();
    args.extend(["run", workflow.to_str().unwrap()]);
    let (child, mut lines) = spawn_until(sandbox, &[], &args, "waiting for a signal");
    (child, lines.pop().unwrap())
}

/// Starts `plait ARGS` (with `env`) and reads its stderr up to the first
/// line containing `needle`; returns the process (killed when dropped, so
/// a failing test leaves none behind) and the lines read.
fn spawn_until(
    sandbox: &Sandbox,
    env: &[(&str, &str)],
    args: &[&str],
    needle: &str,
) -> (KillOnDrop, Vec<String>) {
    let mut child = sandbox
        .plait()
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut read = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let found = line.contains(needle);
        read.push(line);
        if found {
            // Keep reading, so the process never writes to a full or
            // closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (KillOnDrop(child), read);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "`plait {}` never logged `{needle}`:\n{}",
        args.join(" "),
        read.join("\n")
    );
}

#[test]
fn json_logs_carry_the_run_step_and_trace_fields() {
    let sandbox = Sandbox::new();
    let workflow = three_steps(&sandbox, "logged", &echo_step("last"));
    let output = run_logged_as_json(&sandbox, &workflow);
    let run_id = json(&output)["run_id"].as_str().unwrap().to_owned();
    let lines = json_lines(&stderr(&output));
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "step attempt finished")
        .collect();
    let seen: Vec<(String, u64, String)> = finished
        .iter()
        .map(|line| {
            (
                line["step"].as_str().unwrap().to_owned(),
                line["attempt"].as_u64().unwrap(),
                line["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("first".to_owned(), 1, "succeeded".to_owned()),
            ("flaky".to_owned(), 1, "retrying".to_owned()),
            ("flaky".to_owned(), 2, "succeeded".to_owned()),
            ("last".to_owned(), 1, "succeeded".to_owned()),
        ]
    );
    let trace_id = &finished[0]["trace_id"];
    assert!(is_hex(trace_id, 32), "{trace_id}");
    let mut span_ids = std::collections::HashSet::new();
    for line in &finished {
        // The seed's fields, and the ones the issue adds.
        assert_eq!(line["workflow_id"], "logged", "{line}");
        assert_eq!(line["workflow_version"], "1.2.3", "{line}");
        assert_eq!(line["run_id"], run_id.as_str(), "{line}");
        assert!(line["latency_ms"].is_u64(), "{line}");
        assert_eq!(&line["trace_id"], trace_id, "one trace per run: {line}");
        assert!(is_hex(&line["span_id"], 16), "{line}");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(line["level"], "INFO");
        span_ids.insert(line["span_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(span_ids.len(), 4, "every attempt has its own span");
    // The failed attempt says why; the run's end closes the story.
    assert_eq!(finished[1]["error"], "retryable error: busy");
    let end = lines
        .iter()
        .find(|line| line["run_status"] == "succeeded")
        .expect("a line for the run's end");
    assert_eq!(end["run_id"], run_id.as_str());
    assert!(end["duration_ms"].is_u64());
    // The run's record keeps its trace, for `resume` and for operators.
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_eq!(&shown["trace_id"], trace_id);
}

#[test]
fn a_noisy_step_cannot_flood_the_log_stream_but_keeps_its_records() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "noisy.yaml",
        format!(
            "name: noisy\nsteps:\n  - id: noise\n    uses: {}\n    config: {{ attack: log-flood, count: 800 }}\n",
            yaml_path(HOSTILE_COMPONENT)
        ),
    );
    let output = run_logged_as_json(&sandbox, &workflow);
    let lines = json_lines(&stderr(&output));
    let noise: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("xxxx"))
        })
        .collect();
    // A burst of 100, then 20 a second for as long as the step runs.
    assert!(
        (100..400).contains(&noise.len()),
        "{} of 800 records shown",
        noise.len()
    );
    // Guest records carry the step's context like the host's own.
    assert_eq!(noise[0]["step"], "noise");
    assert_eq!(noise[0]["attempt"], 1);
    assert_eq!(noise[0]["target"], "plait::step");
    let warning = lines
        .iter()
        .find(|line| line["suppressed"].is_u64())
        .expect("a line counting the records held back");
    assert_eq!(warning["level"], "WARN");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("plait runs show")
    );
    // Nothing held back from the stream is lost from the run's record.
    let run_id = json(&output)["run_id"].as_str().unwrap().to_owned();
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--logs", "--json"]));
    let kept = shown["steps"][0]["logs"][0]["records"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(kept, 800, "every record is kept with the run");
}

/// One exported span, ids in hex.
#[derive(Debug)]
struct Exported {
    name: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    status: i32,
}

/// Every span in `requests`, with the trace id checked to be `TRACE_ID`.
fn spans(requests: &[Vec<u8>]) -> Vec<Exported> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut spans = Vec::new();
    for body in requests {
        let request =
            ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP protobuf body");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(service, Some(AnyValue::StringValue("plait".into())));
            for scope in resource.scope_spans {
                for span in scope.spans {
                    assert_eq!(
                        hex(&span.trace_id),
                        TRACE_ID,
                        "every span is in the caller's trace"
                    );
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                Some(AnyValue::StringValue(text)) => text,
                                Some(AnyValue::IntValue(n)) => n.to_string(),
                                Some(AnyValue::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    spans.push(Exported {
                        name: span.name.clone(),
                        id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        attributes,
                        status: span.status.map(|s| s.code).unwrap_or(0),
                    });
                }
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_their_parents_and_the_trace_reaches_http_calls() {
    let sandbox = Sandbox::new();
    // The collector, and the server the third step calls.
    let (collector, exports) = server(vec![(200, "", "")]).await;
    let (hook, calls) = server(vec![(200, "", r#"{"ok": true}"#)]).await;
    let workflow = three_steps(
        &sandbox,
        "traced",
        &format!(
            "  - id: call\n    uses: {}\n    config:\n      url: http://127.0.0.1:{hook}/hook\n      method: POST\n    grants:\n      http: [\"http://127.0.0.1:{hook}\"]\n",
            yaml_path(HTTP_PLUGIN)
        ),
    );
    let policy = sandbox.write("policy.toml", "[grants]\nprivate_networks = true\n");
    let mut command = sandbox.plait();
    command.args([
        "--log-format",
        "json",
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{collector}"),
        "run",
        workflow.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--traceparent",
        &format!("00-{TRACE_ID}-{PARENT_SPAN}-01"),
        "--json",
    ]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_exit(&output, 0);

    let bodies: Vec<Vec<u8>> = exports
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert!(!bodies.is_empty(), "no export reached the collector");
    let heads: Vec<String> = exports
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.head.clone())
        .collect();
    assert!(heads[0].starts_with("POST /v1/traces "), "{}", heads[0]);
    let spans = spans(&bodies);
    let named =
        |name: &str| -> Vec<&Exported> { spans.iter().filter(|span| span.name == name).collect() };
    let run = named("run traced");
    assert_eq!(run.len(), 1, "{spans:#?}");
    let run = run[0];
    assert_eq!(
        run.parent, PARENT_SPAN,
        "the run is a child of the caller's span"
    );
    assert_eq!(run.attributes["workflow_id"], "traced");
    assert_eq!(run.attributes["workflow_version"], "1.2.3");
    assert_eq!(run.status, 1, "the run's span is OK");

    // One span per attempt, each a child of the run: the retry is visible.
    let mut attempts: Vec<(String, String, i32)> = spans
        .iter()
        .filter(|span| span.name.starts_with("step "))
        .map(|span| {
            assert_eq!(span.parent, run.id, "{} is a child of the run", span.name);
            (
                span.attributes["step"].clone(),
                span.attributes["attempt"].clone(),
                span.status,
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [
            ("call".to_owned(), "1".to_owned(), 1),
            ("first".to_owned(), "1".to_owned(), 1),
            ("flaky".to_owned(), "1".to_owned(), 2),
            ("flaky".to_owned(), "2".to_owned(), 1),
        ],
        "(step, attempt, status code: 1 ok, 2 error)"
    );
    // The backoff between the two attempts is a span of its own.
    let backoff = named("backoff flaky");
    assert_eq!(backoff.len(), 1, "{spans:#?}");
    assert_eq!(backoff[0].parent, run.id);

    // The step's HTTP request carried its attempt's trace context.
    let call_span = named("step call")[0].id.clone();
    let call = calls.lock().unwrap()[0].head.to_ascii_lowercase();
    assert!(
        call.contains(&format!("traceparent: 00-{TRACE_ID}-{call_span}-01")),
        "{call}"
    );

    // The log lines name the same spans.
    let lines = json_lines(&stderr(&output));
    let logged: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|line| line["message"] == "step attempt finished")
        .map(|line| {
            assert_eq!(line["trace_id"], TRACE_ID);
            line["span_id"].as_str().unwrap()
        })
        .collect();
    let exported: std::collections::HashSet<&str> = spans
        .iter()
        .filter(|span| span.name.starts_with("step "))
        .map(|span| span.id.as_str())
        .collect();
    assert_eq!(logged, exported);
}

#[test]
fn a_resumed_run_continues_its_trace() {
    let sandbox = Sandbox::new();
    let (mut child, line) = start_waiting(&sandbox, &["--log-format", "json"]);
    let waiting: Value = serde_json::from_str(&line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let run_id = waiting["run_id"].as_str().unwrap();
    let output = sandbox.run(&[
        "--log-format",
        "json",
        "signal",
        run_id,
        "approve",
        "--traceparent",
        &format!("00-{TRACE_ID}-{PARENT_SPAN}-01"),
    ]);
    assert_exit(&output, 0);
    let resumed = json_lines(&stderr(&output));
    let end = resumed
        .iter()
        .find(|line| line["run_status"] == "succeeded")
        .expect("the run ended");
    // The run's own trace, not the signaller's: one run, one trace.
    assert_eq!(end["trace_id"], waiting["trace_id"]);
    assert_eq!(end["resumed"], true);
    // Who signalled and who resumed, in the audit log.
    let audit = json(&sandbox.run(&["audit", "--json", "--run", run_id]));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["run.start", "run.signal", "run.resume"]);
}

/// `plait logs --follow` prints a run's lines while another process runs
/// it, and ends when the run ends.
#[test]
fn logs_follow_a_run_another_process_is_running() {
    let sandbox = Sandbox::new();
    let (mut child, line) = start_waiting(&sandbox, &[]);
    let run_id = run_id_in(&line);
    let followed = sandbox.dir.path().join("followed.txt");
    let mut follower = KillOnDrop(
        sandbox
            .plait()
            .args(["logs", &run_id, "--follow"])
            .stdout(std::fs::File::create(&followed).unwrap())
            .spawn()
            .unwrap(),
    );
    // The store is held: the signal goes through the inbox.
    assert_exit(&sandbox.run(&["signal", &run_id, "approve"]), 0);
    assert!(exit_within_a_minute(&mut child).success());
    assert!(exit_within_a_minute(&mut follower).success());
    let text = std::fs::read_to_string(&followed).unwrap();
    let started = text.find("run started").expect(&text);
    let received = text.find("signal received").expect(&text);
    let ended = text.find("run succeeded").expect(&text);
    assert!(started < received && received < ended, "{text}");
}

/// `GET path` on loopback `port`: (status line, content type, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|line| line.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (
        head.lines().next().unwrap().to_owned(),
        content_type,
        body.to_owned(),
    )
}

/// The value of series `name` (labels included, exactly) in `text`.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_are_served_while_a_run_waits_and_rebuilt_from_the_store() {
    let sandbox = Sandbox::new();
    let workflow = three_steps(&sandbox, "metered", "  - id: approve\n    type: wait\n");
    let (mut child, lines) = spawn_until(
        &sandbox,
        &[],
        &[
            "run",
            workflow.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        "waiting for a signal",
    );
    let port = lines.iter().find_map(|line| {
        let at = line.find("metrics at http://127.0.0.1:")?;
        let rest = &line[at + "metrics at http://127.0.0.1:".len()..];
        rest.split('/').next()?.parse::<u16>().ok()
    });
    let run_id = run_id_in(lines.last().unwrap());
    let port = port.expect("the metrics address was logged");

    let (status, content_type, text) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    for (name, expected) in [
        ("plait_runs_started_total{workflow=\"metered\"}", 1.0),
        ("plait_runs_active", 1.0),
        (
            "plait_step_duration_seconds_count{component=\"echo\",status=\"ok\"}",
            1.0,
        ),
        (
            "plait_step_duration_seconds_count{component=\"fail\",status=\"error\"}",
            1.0,
        ),
        (
            "plait_step_duration_seconds_count{component=\"fail\",status=\"ok\"}",
            1.0,
        ),
        ("plait_step_retries_total{component=\"fail\"}", 1.0),
        (
            "plait_component_instantiation_seconds_count{component=\"fail\"}",
            2.0,
        ),
        ("plait_queue_depth", 0.0),
    ] {
        assert_eq!(series(&text, name), Some(expected), "{name} in\n{text}");
    }
    assert!(
        series(&text, "plait_store_size_bytes").unwrap() > 0.0,
        "{text}"
    );
    assert!(
        series(
            &text,
            "plait_runs_finished_total{workflow=\"metered\",status=\"succeeded\"}"
        )
        .is_none()
    );
    assert_eq!(get(port, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(get(port, "/nothing").0, "HTTP/1.1 404 Not Found");

    // The signal goes through the inbox; the run ends, the process too.
    assert_exit(&sandbox.run(&["signal", &run_id, "approve"]), 0);
    let status = child.wait().unwrap();
    assert!(status.success());

    // `plait metrics` rebuilds the series from the store.
    let output = sandbox.run(&["metrics"]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    for (name, expected) in [
        ("plait_runs_started_total{workflow=\"metered\"}", 1.0),
        (
            "plait_runs_finished_total{workflow=\"metered\",status=\"succeeded\"}",
            1.0,
        ),
        ("plait_runs{workflow=\"metered\",status=\"succeeded\"}", 1.0),
        ("plait_step_retries_total{component=\"fail\"}", 1.0),
        (
            "plait_step_duration_seconds_count{component=\"fail\",status=\"error\"}",
            1.0,
        ),
        (
            "plait_step_duration_seconds_count{component=\"echo\",status=\"ok\"}",
            1.0,
        ),
    ] {
        assert_eq!(series(&text, name), Some(expected), "{name} in\n{text}");
    }
    assert!(series(&text, "plait_store_size_bytes").unwrap() > 0.0);
}

/// The library's endpoint after a known workload: two good runs, one step
/// stopped at its timeout, one by its memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_timeouts_and_limit_hits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(&EngineOptions {
        cache_dir: Some(shared_cache()),
        ..EngineOptions::default()
    })
    .unwrap();
    let plan = |text: String| {
        let definition = Definition::parse(&text, &dir.path().join("w.yaml")).unwrap();
        let engine = &engine;
        async move {
            Plan::build_with(engine, definition, &Policy::default())
                .await
                .unwrap()
        }
    };
    let good = plan(format!(
        "name: good\nsteps:\n  - id: one\n    uses: {}\n",
        yaml_path(ECHO_COMPONENT)
    ))
    .await;
    let looping = plan(format!(
        "name: looping\nsteps:\n  - id: spin\n    uses: {}\n    timeout: 300ms\n    retry: {{ max_attempts: 1 }}\n    config: {{ attack: loop }}\n",
        yaml_path(HOSTILE_COMPONENT)
    ))
    .await;
    let greedy = plan(format!(
        "name: greedy\nsteps:\n  - id: grab\n    uses: {}\n    limits: {{ memory: 16MiB }}\n    config: {{ attack: memory }}\n",
        yaml_path(HOSTILE_COMPONENT)
    ))
    .await;
    let store = Arc::new(SledStore::open(&dir.path().join("journal")).unwrap());
    let metrics = Arc::new(Metrics::new());
    let executor = Executor::new(store.clone()).with_metrics(metrics.clone());
    for plan in [&good, &good, &looping, &greedy] {
        executor
            .start(
                plan,
                plait::executor::StartRequest::new(serde_json::json!({})),
            )
            .await
            .unwrap();
    }
    let (address, server) = plait::telemetry::metrics::listen(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        Some(store as Arc<dyn plait::store::RunStore>),
    )
    .await
    .unwrap();
    let (status, _, text) = tokio::task::spawn_blocking(move || get(address.port(), "/metrics"))
        .await
        .unwrap();
    server.abort();
    assert_eq!(status, "HTTP/1.1 200 OK");
    for (name, expected) in [
        ("plait_runs_started_total{workflow=\"good\"}", 2.0),
        (
            "plait_runs_finished_total{workflow=\"good\",status=\"succeeded\"}",
            2.0,
        ),
        (
            "plait_runs_finished_total{workflow=\"looping\",status=\"failed\"}",
            1.0,
        ),
        (
            "plait_runs_finished_total{workflow=\"greedy\",status=\"failed\"}",
            1.0,
        ),
        ("plait_step_timeouts_total{component=\"hostile\"}", 1.0),
        (
            "plait_limit_hits_total{component=\"hostile\",limit=\"memory\"}",
            1.0,
        ),
        (
            "plait_step_duration_seconds_count{component=\"hostile\",status=\"error\"}",
            2.0,
        ),
        (
            "plait_step_duration_seconds_count{component=\"echo\",status=\"ok\"}",
            2.0,
        ),
        ("plait_runs_active", 0.0),
    ] {
        assert_eq!(series(&text, name), Some(expected), "{name} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

/// Lines of `plait logs`, in the order they must come.
const MARKERS: [&str; 5] = [
    "run started",
    "flaky#1: step attempt finished",
    "flaky#1: attempt failed; retrying after backoff",
    "flaky#2: step attempt finished",
    "run succeeded",
];

#[test]
fn the_timeline_logs_listing_and_audit_tell_what_happened() {
    let sandbox = Sandbox::new();
    let workflow = three_steps(&sandbox, "story", &echo_step("last"));
    let output = sandbox
        .plait()
        .env("PLAIT_ACTOR", "ada")
        .args(["run", workflow.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    // Piped: no progress bar, no colour.
    assert!(!stderr(&output).contains('\u{1b}'), "{}", stderr(&output));
    let run_id = json(&output)["run_id"].as_str().unwrap().to_owned();
    let failing = sandbox.write(
        "failing.yaml",
        format!(
            "name: failing\nsteps:\n  - id: boom\n    uses: {}\n    config: {{ kind: fatal, message: no }}\n",
            yaml_path(FAIL_COMPONENT)
        ),
    );
    assert_exit(&sandbox.run(&["run", failing.to_str().unwrap()]), 1);

    // The timeline: every attempt, the backoff, the error, the durations.
    let shown = sandbox.run(&["runs", "show", &run_id]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("STEP"))
        .collect();
    assert!(
        rows[0].contains("START") && rows[0].contains("TOOK"),
        "{text}"
    );
    let starts = |prefix: &str| {
        rows.iter()
            .find(|row| row.trim_start().starts_with(prefix))
            .copied()
    };
    assert!(starts("first").unwrap().contains("succeeded"), "{text}");
    let flaky = starts("flaky").unwrap();
    assert!(
        flaky.contains("succeeded") && flaky.contains('▒') && flaky.contains('█'),
        "{text}"
    );
    let attempt = starts("attempt 1  failed").expect(&text);
    assert!(attempt.contains("retryable error: busy"), "{text}");
    assert!(starts("backoff").is_some(), "{text}");
    assert!(starts("attempt 2  succeeded").is_some(), "{text}");
    assert!(text.contains("by        user:ada"), "{text}");

    // Listing by workflow and status.
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "list", "--json"];
        all.extend_from_slice(args);
        json(&sandbox.run(&all))
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["workflow"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&[]), ["story", "failing"]);
    assert_eq!(listed(&["--status", "failed"]), ["failing"]);
    assert_eq!(listed(&["--workflow", "story"]), ["story"]);
    assert_eq!(listed(&["--since", "1h"]).len(), 2);
    assert!(listed(&["--until", "1h"]).is_empty());
    assert_eq!(listed(&["--limit", "1"]), ["failing"]);
    let bad = sandbox.run(&["runs", "list", "--status", "done"]);
    assert_exit(&bad, 2);
    assert!(stderr(&bad).contains("running, waiting, succeeded, failed or cancelled"));

    // `plait logs`: the run's events in order, as text or as stored.
    let logs = sandbox.run(&["logs", &run_id]);
    assert_exit(&logs, 0);
    let text = stdout(&logs);
    let order: Vec<&str> = text
        .lines()
        .filter_map(|line| MARKERS.into_iter().find(|m| line.contains(m)))
        .collect();
    assert_eq!(order, MARKERS, "{text}");
    let raw = json_lines(&stdout(&sandbox.run(&["logs", &run_id, "--json"])));
    assert!(raw.iter().all(|line| line["run_id"] == run_id.as_str()));
    // `--follow` on a finished run prints it and ends.
    assert_exit(&sandbox.run(&["logs", &run_id, "--follow"]), 0);
    let missing = sandbox.run(&["logs", "no-such-run"]);
    assert_exit(&missing, 2);
    assert!(stderr(&missing).contains("no run starts with `no-such-run`"));

    // The audit log: who started what; gc is recorded too.
    assert_exit(&sandbox.run(&["gc", "--older-than", "0s"]), 0);
    let audit = json(&sandbox.run(&["audit", "--json"]));
    let entries: Vec<(String, String, Option<String>)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap().to_owned(),
                entry["action"].as_str().unwrap().to_owned(),
                entry["run_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(entries[0].0, "user:ada");
    assert_eq!(entries[0].1, "run.start");
    assert_eq!(entries[0].2.as_deref(), Some(run_id.as_str()));
    assert_eq!(entries.last().unwrap().1, "store.gc");
    assert_eq!(
        audit.as_array().unwrap().last().unwrap()["detail"]["runs"],
        2
    );
    // The collected runs' log files went with them.
    assert_exit(&sandbox.run(&["logs", &run_id]), 2);
    let filtered = json(&sandbox.run(&["audit", "--json", "--action", "run.start"]));
    assert_eq!(filtered.as_array().unwrap().len(), 2);
}

/// Waits up to a minute for `child` to exit.
fn exit_within_a_minute(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("the process did not stop within a minute");
}

#[test]
fn a_run_in_progress_is_cancelled_through_the_inbox_and_audited() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "slow.yaml",
        format!(
            "name: slow\nsteps:\n  - id: slow\n    uses: {}\n    config: {{ sleep_ms: 60000 }}\n    timeout: 5m\n  - id: after\n    uses: {}\n",
            yaml_path(plait_test_artifacts::SLOW_COUNTER_COMPONENT),
            yaml_path(ECHO_COMPONENT)
        ),
    );
    // The guest's first log line: the step is running.
    let (mut child, lines) = spawn_until(
        &sandbox,
        &[("PLAIT_ACTOR", "ops")],
        &["run", workflow.to_str().unwrap()],
        " invoked ",
    );
    let run_id = run_id_in(lines.last().unwrap());
    let cancel = sandbox
        .plait()
        .env("PLAIT_ACTOR", "bob")
        .args(["cancel", &run_id, "--reason", "wrong input"])
        .output()
        .unwrap();
    assert_exit(&cancel, 0);
    assert!(
        stderr(&cancel).contains("waits in its inbox"),
        "{}",
        stderr(&cancel)
    );
    // The 60 s step is abandoned: the process ends long before.
    let status = exit_within_a_minute(&mut child);
    assert_eq!(status.code(), Some(1), "a cancelled run is not a success");

    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(shown["error"], "cancelled by user:bob: wrong input");
    assert_eq!(shown["steps"][0]["status"], "failed");
    assert_eq!(
        shown["steps"][0]["error"]["message"],
        "cancelled by user:bob: wrong input"
    );
    assert_eq!(
        shown["steps"][1]["status"], "pending",
        "nothing after it started"
    );

    // Final: not resumed, not cancelled twice.
    let resumed = sandbox.run(&["resume", &run_id]);
    assert_exit(&resumed, 2);
    assert!(
        stderr(&resumed).contains("was cancelled"),
        "{}",
        stderr(&resumed)
    );
    let again = sandbox.run(&["cancel", &run_id]);
    assert_exit(&again, 2);
    assert!(
        stderr(&again).contains("already cancelled"),
        "{}",
        stderr(&again)
    );

    let audit = json(&sandbox.run(&["audit", "--json", "--run", &run_id]));
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().unwrap(),
                entry["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("user:ops", "run.start"), ("user:bob", "run.cancel")]
    );
    assert_eq!(audit[1]["detail"]["reason"], "wrong input");
    let metrics = stdout(&sandbox.run(&["metrics"]));
    assert_eq!(
        series(
            &metrics,
            "plait_runs_finished_total{workflow=\"slow\",status=\"cancelled\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(listed_statuses(&sandbox, "cancelled"), 1);
}

fn listed_statuses(sandbox: &Sandbox, status: &str) -> usize {
    json(&sandbox.run(&["runs", "list", "--json", "--status", status]))
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_waiting_run_no_process_holds_is_cancelled_at_once() {
    let sandbox = Sandbox::new();
    let (mut child, line) = start_waiting(&sandbox, &[]);
    let run_id = run_id_in(&line);
    child.kill().unwrap();
    child.wait().unwrap();
    let output = sandbox.run(&["cancel", &run_id, "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    assert_eq!(report["status"], "cancelled");
    assert_eq!(
        report["steps"][0]["status"], "succeeded",
        "finished work stays"
    );
    assert_eq!(report["steps"][1]["status"], "failed");
    let late = sandbox.run(&["signal", &run_id, "approve"]);
    assert_exit(&late, 2);
    assert!(
        stderr(&late).contains("is already cancelled"),
        "{}",
        stderr(&late)
    );
    assert_exit(&sandbox.run(&["cancel", "no-such-run"]), 2);
}

/// On a terminal (a pseudo-terminal from `script`, util-linux), `plait
/// run` draws a progress bar of the steps and clears it before the report.
#[test]
fn a_terminal_gets_a_progress_bar() {
    let sandbox = Sandbox::new();
    // A sleep in the middle: the bar is drawn (every 120 ms) while it lasts.
    let workflow = sandbox.write(
        "shown.yaml",
        format!(
            "name: shown\nsteps:\n{}  - id: pause\n    type: sleep\n    duration: 800ms\n{}",
            echo_step("first"),
            echo_step("last")
        ),
    );
    let command = format!(
        "{} run {}",
        env!("CARGO_BIN_EXE_plait"),
        workflow.to_str().unwrap()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(sandbox.dir.path())
        .env("PLAIT_HOME", sandbox.store())
        .env("PLAIT_CACHE_DIR", shared_cache())
        .env("TERM", "xterm")
        .env_remove("PLAIT_LOG")
        .output()
        .expect("`script` (util-linux) runs a command on a pseudo-terminal");
    assert_exit(&output, 0);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("1/3 steps"),
        "no bar with the first step done in:\n{text}"
    );
    // Cleared (erase line) before the report is printed.
    let report = text.find("✓ last").expect("the report");
    assert!(text[..report].rfind("\u{1b}[2K").is_some(), "{text}");
}

/// A malformed `--traceparent` is a usage error naming the format; a
/// malformed ambient `TRACEPARENT` starts a new trace with a warning, as
/// the W3C spec asks of a bad header.
#[test]
fn a_bad_traceparent_is_refused_on_the_command_line_and_ignored_from_the_environment() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "one.yaml",
        format!("name: one\nsteps:\n{}", echo_step("only")),
    );
    let refused = sandbox.run(&[
        "run",
        workflow.to_str().unwrap(),
        "--traceparent",
        "00-nope",
    ]);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("W3C format"),
        "{}",
        stderr(&refused)
    );
    assert!(
        json(&sandbox.run(&["runs", "list", "--json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );
    let ambient = sandbox
        .plait()
        .env("TRACEPARENT", "00-nope")
        .args(["run", workflow.to_str().unwrap()])
        .output()
        .unwrap();
    assert_exit(&ambient, 0);
    assert!(
        stderr(&ambient).contains("ignoring $TRACEPARENT"),
        "{}",
        stderr(&ambient)
    );
}
