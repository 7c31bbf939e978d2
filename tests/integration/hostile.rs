//! Hostile and broken guests are contained: each attack of
//! `tests/guests/hostile` (and each broken component) ends with its own
//! named error while a well-behaved run on the same host, started at the
//! same moment, completes correctly, and the runs already in the store are
//! untouched.
//!
//! These tests drive the library in-process, as `plait` and the HTTP
//! service do, because "the same host" means one engine, one executor and
//! one sled store shared by concurrent runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plait::definition::Definition;
use plait::engine::{Engine, EngineOptions};
use plait::executor::{Executor, RunReport};
use plait::plan::Plan;
use plait::policy::Policy;
use plait::store::{Durability, RunStatus, RunStore as _, SledStore, StepRecord};
use plait_test_artifacts::{
    ECHO_COMPONENT, EXTRA_IMPORT_COMPONENT, HOSTILE_COMPONENT, SLOW_COUNTER_COMPONENT,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{shared_cache, yaml_path};

/// One host: engine, store, executor and policy, plus a finished run
/// recorded before any attack, to check the store afterwards.
struct Host {
    dir: tempfile::TempDir,
    engine: Engine,
    store: Arc<SledStore>,
    executor: Executor,
    policy: Policy,
    baseline: RunReport,
}

impl Host {
    async fn new(policy: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("plait.toml");
        std::fs::write(&policy_path, policy).unwrap();
        let policy = Policy::load(&policy_path).unwrap();
        let engine = Engine::new(&EngineOptions {
            cache_dir: Some(shared_cache()),
            ..EngineOptions::default()
        })
        .unwrap();
        let store = Arc::new(
            SledStore::open_with(&dir.path().join("journal"), Durability::Durable).unwrap(),
        );
        let executor = Executor::new(store.clone());
        let plan = plan_in(dir.path(), &engine, &policy, &echo_step())
            .await
            .unwrap();
        let baseline = executor
            .start(
                &plan,
                plait::executor::StartRequest::new(json!({"before": "the attack"})),
            )
            .await
            .unwrap();
        assert_eq!(baseline.run.status, RunStatus::Succeeded);
        Host {
            dir,
            engine,
            store,
            executor,
            policy,
            baseline,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Plans a one-step workflow whose step is `step` (YAML, indented as a
    /// list item under `steps:`).
    async fn plan(&self, step: &str) -> Result<Plan, plait::definition::DefinitionErrors> {
        plan_in(self.dir.path(), &self.engine, &self.policy, step).await
    }

    /// Runs `step` next to a well-behaved run started at the same moment;
    /// checks the good run and the store, and returns the attacked step's
    /// record and the run's logs.
    async fn contained(&self, step: &str) -> StepRecord {
        let plan = self
            .plan(step)
            .await
            .unwrap_or_else(|errors| panic!("{errors}"));
        let good = self.plan(&good_step()).await.unwrap();
        let started = Instant::now();
        let attack = async {
            let report = self
                .executor
                .start(&plan, plait::executor::StartRequest::new(json!({})))
                .await
                .unwrap();
            (report, started.elapsed())
        };
        let well_behaved = async {
            let report = self
                .executor
                .start(&good, plait::executor::StartRequest::new(json!({"n": 7})))
                .await
                .unwrap();
            (report, started.elapsed())
        };
        let ((attacked, attack_took), (good_report, good_took)) =
            tokio::join!(attack, well_behaved);
        assert_eq!(
            good_report.run.status,
            RunStatus::Succeeded,
            "the well-behaved run failed next to the attack: {:?}",
            good_report.steps[0].error
        );
        assert_eq!(
            good_report.run.output.as_ref().unwrap()["input"],
            json!({"n": 7})
        );
        self.assert_store_intact(&good_report);
        eprintln!("attack took {attack_took:?}, the good run {good_took:?}");
        attacked.steps[0].clone()
    }

    /// The baseline run and `good` read back exactly as written, and the
    /// store lists them.
    fn assert_store_intact(&self, good: &RunReport) {
        for report in [&self.baseline, good] {
            let run = self
                .store
                .run(&report.run.id)
                .unwrap()
                .expect("the run is stored");
            assert_eq!(run, report.run);
            assert_eq!(self.store.steps(&run.id).unwrap(), report.steps);
        }
    }

    /// Runs `step` alone and returns its output document.
    async fn output(&self, step: &str) -> Value {
        let record = self.contained(step).await;
        assert!(record.error.is_none(), "{:?}", record.error);
        record.output.unwrap()
    }
}

/// Plans a one-step workflow written in `dir`.
async fn plan_in(
    dir: &Path,
    engine: &Engine,
    policy: &Policy,
    step: &str,
) -> Result<Plan, plait::definition::DefinitionErrors> {
    let text = format!("name: attack\nsteps:\n{step}");
    let definition = Definition::parse(&text, &dir.join("workflow.yaml")).unwrap();
    Plan::build_with(engine, definition, policy).await
}

fn echo_step() -> String {
    format!("  - id: echo\n    uses: {}\n", yaml_path(ECHO_COMPONENT))
}

/// A step that takes a little while (it sleeps 300 ms) and echoes its input.
fn good_step() -> String {
    format!(
        "  - id: good\n    uses: {}\n    config:\n      sleep_ms: 300\n",
        yaml_path(SLOW_COUNTER_COMPONENT)
    )
}

/// The hostile step with `attack` and extra YAML lines under the step.
fn hostile(attack: &str, config: &[(&str, &str)], extra: &str) -> String {
    let mut step = format!(
        "  - id: hostile\n    uses: {}\n    config:\n      attack: {attack}\n",
        yaml_path(HOSTILE_COMPONENT)
    );
    for (key, value) in config {
        step.push_str(&format!(
            "      {key}: {}\n",
            serde_json::to_string(value).unwrap()
        ));
    }
    step.push_str(extra);
    step
}

fn failure(record: &StepRecord) -> (&str, &str, Value) {
    let error = record.error.as_ref().expect("the attacked step failed");
    let kind = match error.kind {
        plait::step::FailureKind::Timeout => "timeout",
        plait::step::FailureKind::LimitExceeded => "limit_exceeded",
        plait::step::FailureKind::Trap => "trap",
        plait::step::FailureKind::Fatal => "fatal",
        plait::step::FailureKind::Retryable => "retryable",
        plait::step::FailureKind::InvalidOutput => "invalid_output",
    };
    (
        kind,
        error.message.as_str(),
        error.details.clone().unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_by_its_timeout_while_other_runs_go_on() {
    let host = Host::new("").await;
    let started = Instant::now();
    let record = host
        .contained(&hostile("loop", &[], "    limits:\n      timeout: 2s\n"))
        .await;
    let (kind, message, details) = failure(&record);
    assert_eq!(kind, "timeout");
    assert_eq!(message, "timeout limit 2s exceeded");
    assert_eq!(details["limit"], "timeout");
    assert!(record.error.as_ref().unwrap().kind.is_retryable());
    // The loop never yields on its own: the step ended because the host
    // interrupted it, not because it finished.
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_stops_a_loop_deterministically() {
    let host = Host::new("").await;
    let record = host
        .contained(&hostile("loop", &[], "    limits:\n      fuel: 1e8\n"))
        .await;
    let (kind, message, _) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert_eq!(message, "fuel limit 1e8 exceeded");
    assert_eq!(record.fuel_consumed, Some(100_000_000));
    assert!(!record.error.as_ref().unwrap().kind.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_used_is_recorded_for_every_step() {
    let host = Host::new("").await;
    let step = &host.baseline.steps[0];
    let fuel = step.fuel_consumed.expect("fuel is metered by default");
    assert!(fuel > 1_000, "{fuel}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_limit() {
    let host = Host::new("").await;
    let record = host
        .contained(&hostile(
            "memory",
            &[],
            "    limits:\n      memory: 64MiB\n",
        ))
        .await;
    let (kind, message, details) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert!(
        message.starts_with("memory limit 64 MiB exceeded"),
        "{message}"
    );
    assert_eq!(details["limit"], "memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_memory_limit_holds_too() {
    let host = Host::new("[limits]\nmemory = \"32MiB\"\n").await;
    let record = host.contained(&hostile("memory", &[], "")).await;
    let (kind, message, _) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert!(
        message.starts_with("memory limit 32 MiB exceeded"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_overflows_the_stack_and_is_named() {
    let host = Host::new("").await;
    let record = host.contained(&hostile("recursion", &[], "")).await;
    let (kind, message, details) = failure(&record);
    assert_eq!(kind, "limit_exceeded", "{message}");
    assert_eq!(
        message,
        "stack limit 512 KiB exceeded (the step recursed too deeply)"
    );
    assert_eq!(details["limit"], "stack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_giant_output_document_hits_the_output_limit() {
    let host = Host::new("").await;
    let record = host
        .contained(&hostile(
            "giant-output",
            &[("bytes", "8388608")],
            "    limits:\n      output: 1MiB\n",
        ))
        .await;
    let (kind, message, _) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert_eq!(
        message,
        "output limit 1 MiB exceeded (the step returned 8.0 MiB)"
    );
    assert!(record.output.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_giant_blob_hits_the_output_limit() {
    let host = Host::new("").await;
    let record = host
        .contained(&hostile(
            "giant-blob",
            &[("bytes", "8388608")],
            "    limits:\n      output: 4MiB\n",
        ))
        .await;
    let (kind, message, _) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert_eq!(
        message,
        "output limit 4 MiB exceeded (the step returned 8.0 MiB)"
    );
    assert!(record.output_blobs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_hits_the_log_limit() {
    let host = Host::new("").await;
    let record = host
        .contained(&hostile(
            "log-flood",
            &[],
            "    limits:\n      logs: 256KiB\n",
        ))
        .await;
    let (kind, message, _) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert_eq!(
        message,
        "logs limit 256 KiB exceeded (the step logged or printed more than 256 KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_hits_the_log_limit() {
    let host = Host::new("").await;
    let record = host.contained(&hostile("stdout-flood", &[], "")).await;
    let (kind, message, _) = failure(&record);
    assert_eq!(kind, "limit_exceeded");
    assert_eq!(
        message,
        "logs limit 1 MiB exceeded (the step logged or printed more than 1 MiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_grants_are_unreachable() {
    let host = Host::new("").await;
    let data = host.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("note.txt"), "granted content").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", data.join("passwd-link")).unwrap();
    std::os::unix::fs::symlink("/etc", data.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", data.join("up-link")).unwrap();
    std::fs::write(host.path("secret.txt"), "outside the grant").unwrap();
    let grant = "    grants:\n      dirs:\n        /data: ./data\n";

    // Positive control: the granted file is readable.
    let out = host
        .output(&hostile("read-file", &[("path", "/data/note.txt")], grant))
        .await;
    assert_eq!(out, json!({"ok": true, "content": "granted content"}));

    for path in [
        "/etc/passwd",
        "/data/../etc/passwd",
        "/data/../../../../etc/passwd",
        "/data/../secret.txt",
        "/data/passwd-link",
        "/data/etc-link/passwd",
        "/data/up-link",
    ] {
        let out = host
            .output(&hostile("read-file", &[("path", path)], grant))
            .await;
        assert_eq!(out["ok"], false, "{path}: {out}");
        let text = out.to_string();
        assert!(
            !text.contains("root:") && !text.contains("outside the grant"),
            "{path}: {out}"
        );
    }
    // Without a grant, not even the folder is there.
    let out = host
        .output(&hostile("list-dir", &[("path", "/data")], ""))
        .await;
    assert_eq!(out["ok"], false, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_grants_refuse_writes_and_read_write_grants_allow_them() {
    let host = Host::new("").await;
    let data = host.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let read_only = "    grants:\n      dirs:\n        /data: ./data\n";
    let out = host
        .output(&hostile(
            "write-file",
            &[("path", "/data/new.txt")],
            read_only,
        ))
        .await;
    assert_eq!(out["ok"], false, "{out}");
    assert!(!data.join("new.txt").exists());

    let read_write = "    grants:\n      dirs:\n        /data: { path: ./data, mode: rw }\n";
    let out = host
        .output(&hostile(
            "write-file",
            &[("path", "/data/new.txt")],
            read_write,
        ))
        .await;
    assert_eq!(out, json!({"ok": true}));
    assert_eq!(
        std::fs::read_to_string(data.join("new.txt")).unwrap(),
        "written"
    );
    // Even read-write, nothing outside.
    let out = host
        .output(&hostile(
            "write-file",
            &[("path", "/data/../escaped.txt")],
            read_write,
        ))
        .await;
    assert_eq!(out["ok"], false, "{out}");
    assert!(!host.path("escaped.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reads_no_environment_and_opens_no_socket() {
    let host = Host::new("").await;
    let out = host.output(&hostile("env", &[], "")).await;
    assert_eq!(out, json!({"vars": []}));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let out = host
        .output(&hostile("tcp-connect", &[("path", &address)], ""))
        .await;
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["kind"], "PermissionDenied", "{out}");
}

/// A real HTTP server on loopback answering every request with `hello`.
async fn http_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_the_allow_list() {
    let host = Host::new("[grants]\nprivate_networks = true\n").await;
    let (port, _server) = http_server().await;
    let grant = format!("    grants:\n      http:\n        - http://127.0.0.1:{port}\n");

    // Positive control: the granted host answers.
    let url = format!("http://127.0.0.1:{port}/hello");
    let out = host
        .output(&hostile("http-get", &[("url", &url)], &grant))
        .await;
    assert_eq!(out, json!({"ok": true, "status": 200, "body": "hello"}));

    for url in [
        format!("http://127.0.0.1:{}/", port.wrapping_add(1).max(1)),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://example.com/".to_owned(),
        format!("https://127.0.0.1:{port}/"),
    ] {
        let record = host
            .contained(&hostile("http-get", &[("url", &url)], &grant))
            .await;
        let out = record.output.unwrap();
        assert_eq!(out["ok"], false, "{url}: {out}");
        assert!(
            out["error"].as_str().unwrap().contains("HttpRequestDenied"),
            "{url}: {out}"
        );
    }
    // A rule limited to some methods refuses the others.
    let post_only = format!(
        "    grants:\n      http:\n        - {{ url: \"http://127.0.0.1:{port}\", methods: [POST] }}\n"
    );
    let out = host
        .output(&hostile("http-get", &[("url", &url)], &post_only))
        .await;
    assert!(
        out["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{out}"
    );
    // A step without an HTTP grant is denied everything.
    let out = host
        .output(&hostile("http-get", &[("url", &url)], ""))
        .await;
    assert!(
        out["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_after_dns_unless_the_policy_allows_them() {
    // The default policy: no private networks. The grant allows any host,
    // so only the address check stands between the step and loopback.
    let host = Host::new("").await;
    let (port, _server) = http_server().await;
    let grant = "    grants:\n      http:\n        - http://*:*\n";
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
    ] {
        let record = host
            .contained(&hostile("http-get", &[("url", &url)], grant))
            .await;
        let out = record.output.unwrap();
        assert_eq!(out["ok"], false, "{url}: {out}");
        assert!(
            out["error"]
                .as_str()
                .unwrap()
                .contains("DestinationIpProhibited"),
            "{url}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_everywhere_and_never_stored() {
    const SECRET: &str = "s3cr3t-T0KEN-value";
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, format!("api_token = \"{SECRET}\"\n")).unwrap();
    let policy = format!("[secrets]\nfile = {:?}\n", secrets.display().to_string());
    let host = Host::new(&policy).await;
    let grant = "    grants:\n      secrets: [api_token]\n";

    let record = host.contained(&hostile("echo-secret", &[], grant)).await;
    assert!(record.error.is_none(), "{:?}", record.error);
    assert_eq!(
        record.output.unwrap(),
        json!({"token": "[REDACTED]", "nested": {"list": ["prefix-[REDACTED]-suffix"]}})
    );
    let blob = &record.output_blobs[0];
    assert_eq!(
        host.store.blob(&blob.digest).unwrap().unwrap(),
        b"[REDACTED]"
    );
    let logs = host.store.logs(&record.run_id, 0).unwrap();
    let logs = serde_json::to_string(&logs).unwrap();
    assert!(
        logs.contains("[REDACTED]") && !logs.contains(SECRET),
        "{logs}"
    );

    let record = host
        .contained(&hostile("echo-secret", &[("content", "fail")], grant))
        .await;
    let error = record.error.unwrap();
    assert!(error.message.contains("[REDACTED]") && !error.message.contains(SECRET));
    assert!(!error.details.unwrap().to_string().contains(SECRET));

    // Not one byte of the secret anywhere in the store's files.
    drop(host.executor);
    drop(host.store);
    for entry in walk(&host.dir.path().join("journal")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_components_are_refused_while_other_runs_go_on() {
    let host = Host::new("").await;
    let broken = host.path("broken.wasm");
    let mut bytes = std::fs::read(ECHO_COMPONENT).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&broken, bytes).unwrap();
    for (component, expected) in [
        (
            EXTRA_IMPORT_COMPONENT.to_owned(),
            "imports something this host does not provide",
        ),
        (
            plait_test_artifacts::DESCRIBE_TRAP_COMPONENT.to_owned(),
            "describe",
        ),
        (
            broken.display().to_string(),
            "is not a valid WebAssembly component",
        ),
    ] {
        let step = format!("  - id: broken\n    uses: {}\n", yaml_path(&component));
        let good = host.plan(&good_step()).await.unwrap();
        let (planned, report) = tokio::join!(
            host.plan(&step),
            host.executor
                .start(&good, plait::executor::StartRequest::new(json!({"n": 7})))
        );
        let Err(errors) = planned else {
            panic!("{component} was accepted");
        };
        let errors = errors.to_string();
        assert!(errors.contains(expected), "{component}: {errors}");
        let report = report.unwrap();
        assert_eq!(report.run.status, RunStatus::Succeeded);
        host.assert_store_intact(&report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invocation_gets_a_fresh_instance() {
    let host = Host::new("").await;
    let leak = |id: &str| {
        format!(
            "  - id: {id}\n    uses: {}\n    config:\n      attack: leak\n",
            yaml_path(HOSTILE_COMPONENT)
        )
    };
    let plan = host
        .plan(&format!("{}{}{}", leak("one"), leak("two"), leak("three")))
        .await
        .unwrap();
    for _ in 0..2 {
        let report = host
            .executor
            .start(&plan, plait::executor::StartRequest::new(json!({})))
            .await
            .unwrap();
        assert_eq!(report.run.status, RunStatus::Succeeded);
        for step in &report.steps {
            assert_eq!(
                step.output,
                Some(json!({"invocations_before": 0})),
                "{}",
                step.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_is_refused_on_an_engine_without_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(&EngineOptions {
        cache_dir: Some(shared_cache()),
        fuel: false,
        ..EngineOptions::default()
    })
    .unwrap();
    let step = hostile("burn", &[], "    limits:\n      fuel: 1e9\n");
    let errors = match plan_in(dir.path(), &engine, &Policy::default(), &step).await {
        Ok(_) => panic!("a fuel budget was accepted without fuel metering"),
        Err(errors) => errors.to_string(),
    };
    assert!(
        errors.contains("`limits.fuel` needs fuel metering"),
        "{errors}"
    );
    // Without the budget the same step plans and runs, and reports no fuel.
    let plan = plan_in(
        dir.path(),
        &engine,
        &Policy::default(),
        &hostile("burn", &[("count", "1000")], ""),
    )
    .await
    .unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("journal")).unwrap());
    let report = Executor::new(store)
        .start(&plan, plait::executor::StartRequest::new(json!({})))
        .await
        .unwrap();
    assert_eq!(report.run.status, RunStatus::Succeeded);
    assert_eq!(report.steps[0].fuel_consumed, None);
}
