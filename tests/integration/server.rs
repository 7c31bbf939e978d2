//! `plait serve`: the real server on loopback, driven by a real HTTP client
//! (ureq), over a real store and real components.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plait_test_artifacts::{ECHO_COMPONENT, FAIL_COMPONENT, SLOW_COUNTER_COMPONENT};
use serde_json::{Value, json};

use crate::support::*;

mod exposure;
mod triggers;

/// A `plait serve` process on a free loopback port, killed when dropped.
pub(crate) struct Served {
    pub(crate) child: KillOnDrop,
    base: String,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
}

impl Served {
    /// Starts `plait serve` over `sandbox`'s store and `workflows/` folder,
    /// with `extra` arguments, and waits until it listens.
    pub(crate) fn start(sandbox: &Sandbox, extra: &[&str]) -> Served {
        let workflows = sandbox.dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        let mut child = sandbox
            .plait()
            .args(["serve", "--listen", "127.0.0.1:0", "--workflows"])
            .arg(&workflows)
            .args(extra)
            .env("PLAIT_LOG", "plait=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Kept before the address is sent, so a caller woken by the
                // address finds the `serving …` line (and all before it) in the log.
                let address = line
                    .split(" on http://")
                    .nth(1)
                    .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned());
                kept.lock().unwrap().push(line);
                if let Some(address) = address {
                    let _ = address_tx.send(address);
                }
            }
        });
        let child = KillOnDrop(child);
        let address = address_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!(
                    "plait serve did not start:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Served {
            child,
            base: format!("http://{address}"),
            log,
            agent,
        }
    }

    /// The `host:port` it listens on.
    pub(crate) fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.agent.get(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Reply::from(request.call().unwrap())
    }

    pub(crate) fn post(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.agent.post(self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        Reply::from(response.unwrap())
    }

    /// Polls run `id` until `done` says so, for up to a minute.
    pub(crate) fn run_until(
        &self,
        id: &str,
        token: Option<&str>,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let reply = self.get(&format!("/v1/runs/{id}"), token);
            assert_eq!(reply.status, 200, "{}", reply.text);
            if done(&reply.json) {
                return reply.json;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "run {id} never got there: {}\n{}",
                reply.json,
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let log = self.log.lock().unwrap().clone();
                return (status, log);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "plait serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: http::HeaderMap,
    pub(crate) text: String,
    pub(crate) json: Value,
}

impl From<http::Response<ureq::Body>> for Reply {
    fn from(mut response: http::Response<ureq::Body>) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts a problem+json error of `status` and kind `kind`.
    fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(
            self.json["type"],
            format!("urn:plait:problem:{kind}"),
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], status);
        assert!(
            self.json["detail"].as_str().is_some_and(|d| d.len() > 20),
            "{}",
            self.text
        );
    }
}

fn write_workflow(sandbox: &Sandbox, file: &str, text: &str) {
    sandbox.write(&format!("workflows/{file}"), text);
}

/// `echo`: one echo step; `waits`: an echo step, then a wait step
/// `approve`; `flaky`: fails on its first attempt, with no retries.
fn standard_workflows(sandbox: &Sandbox) {
    write_workflow(
        sandbox,
        "echo.yaml",
        &format!(
            "name: echo\ninput:\n  schema:\n    type: object\n    properties:\n      text: {{type: string}}\nsteps:\n  - id: say\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    write_workflow(
        sandbox,
        "waits.yaml",
        &format!(
            "name: waits\nsteps:\n  - id: first\n    uses: {}\n  - id: approve\n    type: wait\n    needs: [first]\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    write_workflow(
        sandbox,
        "flaky.yaml",
        &format!(
            "name: flaky\nsteps:\n  - id: shaky\n    uses: {}\n    config:\n      kind: retryable\n      until_attempt: 2\n    retry:\n      max_attempts: 1\n",
            yaml_path(FAIL_COMPONENT)
        ),
    );
}

#[test]
fn a_run_started_over_http_executes_and_can_be_read_back() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let server = Served::start(&sandbox, &[]);

    let health = server.get("/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
    assert_eq!(server.get("/readyz", None).status, 200);

    let workflows = server.get("/v1/workflows", None);
    assert_eq!(workflows.status, 200, "{}", workflows.text);
    let names: Vec<&str> = workflows.json["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "flaky", "waits"]);

    // The caller's trace context: the run joins the caller's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let started = server.post(
        "/v1/workflows/echo/runs?wait=60s",
        None,
        &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
        Some(json!({"input": {"text": "hello over http"}})),
    );
    assert_eq!(started.status, 200, "{}", started.text);
    let run = &started.json;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["text"], "hello over http", "{run}");
    assert_eq!(run["trace_id"], trace_id);
    assert_eq!(run["started_by"], "local");
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        started.header("location"),
        Some(format!("/v1/runs/{id}").as_str())
    );
    assert!(
        started
            .header("traceresponse")
            .is_some_and(|t| t.contains(trace_id))
    );

    let read = server.get(&format!("/v1/runs/{id}"), None);
    assert_eq!(read.status, 200);
    assert_eq!(read.json["output"], run["output"]);
    let steps = server.get(&format!("/v1/runs/{id}/steps"), None);
    assert_eq!(steps.status, 200);
    assert_eq!(steps.json["steps"][0]["id"], "say");
    assert_eq!(steps.json["steps"][0]["status"], "succeeded");
    assert_eq!(steps.json["steps"][0]["attempts"], 1);

    // Without waiting: 202 at once, queued or already going.
    let accepted = server.post(
        "/v1/workflows/echo/runs",
        None,
        &[],
        Some(json!({"input": {"text": "two"}})),
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let second = accepted.json["id"].as_str().unwrap().to_owned();
    server.run_until(&second, None, |run| run["status"] == "succeeded");

    let listed = server.get("/v1/runs?workflow=echo&limit=1", None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.json["runs"][0]["id"],
        second.as_str(),
        "newest first"
    );
    let cursor = listed.json["next_cursor"].as_str().unwrap();
    let next = server.get(
        &format!("/v1/runs?workflow=echo&limit=1&cursor={cursor}"),
        None,
    );
    assert_eq!(next.json["runs"][0]["id"], id);
    assert!(next.json["next_cursor"].is_null());
    let failed = server.get("/v1/runs?status=failed", None);
    assert_eq!(failed.json["runs"], json!([]));

    let metrics = server.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text
            .contains("plait_runs_started_total{workflow=\"echo\"} 2"),
        "{}",
        metrics.text
    );

    // Bad requests: problem+json that says what to do.
    server
        .post("/v1/workflows/nope/runs", None, &[], Some(json!({})))
        .assert_problem(404, "workflow-not-found");
    server
        .post(
            "/v1/workflows/echo/runs",
            None,
            &[],
            Some(json!({"input": {"text": 5}})),
        )
        .assert_problem(422, "invalid-input");
    server
        .post(
            "/v1/workflows/echo/runs",
            None,
            &[],
            Some(json!({"inputs": {}})),
        )
        .assert_problem(400, "bad-request");
    server
        .get("/v1/runs/no-such-run", None)
        .assert_problem(404, "run-not-found");
    server
        .get("/v1/nothing-here", None)
        .assert_problem(404, "route-not-found");
    server
        .get("/v1/runs?limit=0", None)
        .assert_problem(400, "bad-request");
    let wrong_type = Reply::from(
        server
            .agent
            .post(server.url("/v1/workflows/echo/runs"))
            .content_type("text/plain")
            .send("hello")
            .unwrap(),
    );
    wrong_type.assert_problem(415, "unsupported-media-type");

    let document = server.get("/openapi.json", None);
    assert_eq!(document.status, 200);
    assert!(
        document.json["openapi"]
            .as_str()
            .unwrap()
            .starts_with("3.1")
    );
    for path in [
        "/v1/workflows/{name}/runs",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/signals/{step}",
    ] {
        assert!(
            document.json["paths"][path].is_object(),
            "{path} is documented"
        );
    }
}

#[test]
fn an_idempotency_key_starts_one_run_and_refuses_a_different_or_concurrent_request() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let server = Served::start(&sandbox, &[]);
    let body = json!({"input": {"text": "once"}});

    let first = server.post(
        "/v1/workflows/echo/runs",
        None,
        &[("Idempotency-Key", "order-1")],
        Some(body.clone()),
    );
    assert_eq!(first.status, 202, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());
    let id = first.json["id"].as_str().unwrap().to_owned();
    server.run_until(&id, None, |run| run["status"] == "succeeded");
    let again = server.post(
        "/v1/workflows/echo/runs",
        None,
        &[("Idempotency-Key", "order-1")],
        Some(body),
    );
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json["id"], id.as_str(), "the same run");
    assert_eq!(again.json["status"], "succeeded");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let runs = server.get("/v1/runs?workflow=echo", None);
    assert_eq!(
        runs.json["runs"].as_array().unwrap().len(),
        1,
        "one run for one key"
    );

    let other = server.post(
        "/v1/workflows/echo/runs",
        None,
        &[("Idempotency-Key", "order-1")],
        Some(json!({"input": {"text": "something else"}})),
    );
    other.assert_problem(422, "idempotency-key-reused");
    assert_eq!(other.json["run_id"], id.as_str());

    // A request still being handled holds its key: a concurrent duplicate
    // is told so (409), not queued behind it.
    let waiting = {
        let agent = server.agent.clone();
        let url = server.url("/v1/workflows/waits/runs?wait=20s");
        std::thread::spawn(move || {
            match agent
                .post(url)
                .header("Idempotency-Key", "approval-7")
                .send_json(json!({}))
            {
                Ok(response) => Reply::from(response),
                Err(error) => panic!("the waiting request failed: {error:?}"),
            }
        })
    };
    // Once the first request has created its run, it is still waiting.
    let start = Instant::now();
    while server.get("/v1/runs?workflow=waits", None).json["runs"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first request never created its run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!waiting.is_finished());
    let duplicate = server.post(
        "/v1/workflows/waits/runs",
        None,
        &[("Idempotency-Key", "approval-7")],
        Some(json!({})),
    );
    duplicate.assert_problem(409, "idempotency-key-in-use");
    let first = waiting.join().unwrap();
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.json["status"], "waiting", "{}", first.text);
}

#[test]
fn tokens_are_required_checked_and_scoped() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let create = |name: &str, scopes: &[&str]| {
        let mut args = vec!["token", "create", "--name", name];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let output = sandbox.run(&args);
        assert_exit(&output, 0);
        stdout(&output).trim().to_owned()
    };
    let reader = create("reader", &["runs:read"]);
    let writer = create("writer", &["runs:write", "runs:read"]);
    assert!(reader.starts_with("plait_") && reader != writer);
    let stored = std::fs::read_to_string(sandbox.store().join("tokens.json")).unwrap();
    assert!(
        !stored.contains(&reader) && !stored.contains(&writer),
        "only hashes are kept"
    );

    let server = Served::start(&sandbox, &[]);
    let anonymous = server.post("/v1/workflows/echo/runs", None, &[], Some(json!({})));
    anonymous.assert_problem(401, "unauthorized");
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    server
        .post(
            "/v1/workflows/echo/runs",
            Some("plait_not-a-real-token"),
            &[],
            Some(json!({})),
        )
        .assert_problem(401, "unauthorized");
    let forbidden = server.post(
        "/v1/workflows/echo/runs",
        Some(&reader),
        &[],
        Some(json!({})),
    );
    forbidden.assert_problem(403, "insufficient-scope");
    assert!(
        forbidden.json["detail"]
            .as_str()
            .unwrap()
            .contains("runs:write")
    );
    let started = server.post(
        "/v1/workflows/echo/runs?wait=60s",
        Some(&writer),
        &[],
        Some(json!({"input": {"text": "t"}})),
    );
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(started.json["started_by"], "token:writer");
    let id = started.json["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/v1/runs/{id}"), Some(&reader)).status,
        200
    );
    // Health stays open; metrics need a token.
    assert_eq!(server.get("/healthz", None).status, 200);
    server
        .get("/metrics", None)
        .assert_problem(401, "unauthorized");
    assert_eq!(server.get("/metrics", Some(&reader)).status, 200);

    // A revoked token stops working on the running server.
    assert_exit(&sandbox.run(&["token", "revoke", "reader"]), 0);
    std::thread::sleep(Duration::from_millis(20));
    server
        .get(&format!("/v1/runs/{id}"), Some(&reader))
        .assert_problem(401, "unauthorized");
    let audit = {
        drop(server);
        sandbox.run(&["audit", "--json"])
    };
    assert!(
        stdout(&audit).contains("token:writer"),
        "{}",
        stdout(&audit)
    );
}

#[test]
fn a_non_loopback_address_without_tokens_is_refused() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.dir.path().join("workflows")).unwrap();
    let output = sandbox.run(&["serve", "--listen", "0.0.0.0:0", "--workflows", "workflows"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("without authentication"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("plait token create"),
        "{}",
        stderr(&output)
    );
}

/// Reads Server-Sent Events from `reader` until one named `until`;
/// returns (id, event, data) of each.
fn read_events(reader: &mut impl BufRead, until: &str) -> Vec<(u64, String, Value)> {
    let mut events = Vec::new();
    let (mut id, mut name, mut data) = (None, None, None);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended before `{until}`: {events:?}");
        }
        let line = line.trim_end();
        if line.is_empty() {
            if let (Some(i), Some(n), Some(d)) = (id.take(), name.take(), data.take()) {
                let done = n == until;
                events.push((i, n, d));
                if done {
                    return events;
                }
            }
            continue;
        }
        if let Some(value) = line
            .strip_prefix("id: ")
            .or_else(|| line.strip_prefix("id:"))
        {
            id = Some(value.trim().parse().unwrap());
        } else if let Some(value) = line
            .strip_prefix("event: ")
            .or_else(|| line.strip_prefix("event:"))
        {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
        {
            data = Some(serde_json::from_str(value.trim()).unwrap());
        }
    }
}

#[test]
fn a_signal_completes_a_waiting_run_and_the_event_stream_resumes_where_it_left_off() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let server = Served::start(&sandbox, &[]);
    let started = server.post("/v1/workflows/waits/runs", None, &[], Some(json!({})));
    assert_eq!(started.status, 202, "{}", started.text);
    let id = started.json["id"].as_str().unwrap().to_owned();

    // Follow the stream until the run waits, then drop the connection.
    let response = server
        .agent
        .get(server.url(&format!("/v1/runs/{id}/events")))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut reader = BufReader::new(response.into_body().into_reader());
    let before = read_events(&mut reader, "paused");
    drop(reader);
    let kinds: Vec<&str> = before.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_queued"), "{kinds:?}");
    assert!(kinds.contains(&"step_finished"), "{kinds:?}");
    let (last_id, _, paused) = before.last().unwrap();
    assert_eq!(paused["step"], "approve");
    assert_eq!(paused["kind"], "wait");
    assert!(
        before.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "ids increase"
    );
    server.run_until(&id, None, |run| run["status"] == "waiting");

    // Signals: a wrong step is refused, the right one continues the run.
    server
        .post(
            &format!("/v1/runs/{id}/signals/first"),
            None,
            &[],
            Some(json!({})),
        )
        .assert_problem(409, "signal-refused");
    let signalled = server.post(
        &format!("/v1/runs/{id}/signals/approve"),
        None,
        &[],
        Some(json!({"approved": true, "by": "ops"})),
    );
    assert_eq!(signalled.status, 202, "{}", signalled.text);
    let run = server.run_until(&id, None, |run| run["status"] == "succeeded");
    let steps = server.get(&format!("/v1/runs/{id}/steps"), None);
    assert_eq!(
        steps.json["steps"][1]["output"],
        json!({"approved": true, "by": "ops"})
    );
    assert_eq!(run["status"], "succeeded");

    // Reconnecting with Last-Event-ID replays exactly what was missed.
    let response = server
        .agent
        .get(server.url(&format!("/v1/runs/{id}/events")))
        .header("Last-Event-ID", last_id.to_string())
        .call()
        .unwrap();
    let mut reader = BufReader::new(response.into_body().into_reader());
    let after = read_events(&mut reader, "run_finished");
    assert!(
        after.iter().all(|(seq, _, _)| seq > last_id),
        "nothing seen is sent again"
    );
    let kinds: Vec<&str> = after
        .iter()
        .map(|(_, kind, _)| kind.as_str())
        .filter(|kind| *kind != "progress")
        .collect();
    assert_eq!(kinds.first(), Some(&"signal_received"), "{kinds:?}");
    assert_eq!(after.last().unwrap().2["status"], "succeeded");
    // The stream ends after run_finished.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(!rest.contains("event:"), "{rest}");
    // Asking for what came after the last event of an ended run: nothing,
    // and the stream ends.
    let (final_id, _, _) = after.last().unwrap();
    let response = server
        .agent
        .get(server.url(&format!("/v1/runs/{id}/events?after={final_id}")))
        .call()
        .unwrap();
    let rest = response.into_body().read_to_string().unwrap();
    assert!(!rest.contains("event:"), "{rest}");
    server
        .get(&format!("/v1/runs/{id}/events?after=x"), None)
        .assert_problem(400, "bad-request");
    let empty = Reply::from(
        server
            .agent
            .get(server.url(&format!("/v1/runs/{id}/events")))
            .header("Last-Event-ID", "")
            .call()
            .unwrap(),
    );
    empty.assert_problem(400, "bad-request");
}

#[test]
fn a_failed_run_is_retried_and_a_waiting_one_cancelled() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let server = Served::start(&sandbox, &[]);
    let failed = server.post(
        "/v1/workflows/flaky/runs?wait=60s",
        None,
        &[],
        Some(json!({})),
    );
    assert_eq!(failed.status, 200, "{}", failed.text);
    assert_eq!(failed.json["status"], "failed");
    let id = failed.json["id"].as_str().unwrap().to_owned();
    let retried = server.post(&format!("/v1/runs/{id}/retry"), None, &[], None);
    assert_eq!(retried.status, 202, "{}", retried.text);
    server.run_until(&id, None, |run| run["status"] == "succeeded");
    let steps = server.get(&format!("/v1/runs/{id}/steps"), None);
    assert_eq!(steps.json["steps"][0]["attempts"], 2);
    server
        .post(&format!("/v1/runs/{id}/retry"), None, &[], None)
        .assert_problem(409, "run-not-failed");

    let waiting = server.post("/v1/workflows/waits/runs", None, &[], Some(json!({})));
    let waiting = waiting.json["id"].as_str().unwrap().to_owned();
    server.run_until(&waiting, None, |run| run["status"] == "waiting");
    let cancelled = server.post(
        &format!("/v1/runs/{waiting}/cancel"),
        None,
        &[],
        Some(json!({"reason": "not needed"})),
    );
    assert!(matches!(cancelled.status, 200 | 202), "{}", cancelled.text);
    let run = server.run_until(&waiting, None, |run| run["status"] == "cancelled");
    assert!(
        run["error"].as_str().unwrap().contains("not needed"),
        "{run}"
    );
    server
        .post(&format!("/v1/runs/{waiting}/cancel"), None, &[], None)
        .assert_problem(409, "run-finished");
    server
        .post(
            &format!("/v1/runs/{waiting}/signals/approve"),
            None,
            &[],
            None,
        )
        .assert_problem(409, "signal-refused");
}

#[test]
fn requests_past_the_rate_limit_or_the_body_cap_are_refused_with_a_problem() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let policy = sandbox.write(
        "plait.toml",
        "[server]\nrate_limit = 2\nmax_body = \"1KiB\"\n",
    );
    let server = Served::start(&sandbox, &["--policy", policy.to_str().unwrap()]);
    let big = json!({"input": {"text": "x".repeat(4096)}});
    server
        .post("/v1/workflows/echo/runs", None, &[], Some(big))
        .assert_problem(413, "body-too-large");
    // Bursts of twice the rate pass; then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let reply = server.get("/v1/runs", None);
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200);
    }
    let limited = limited.expect("the rate limit never applied");
    limited.assert_problem(429, "rate-limited");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Health checks are not rate limited.
    for _ in 0..10 {
        assert_eq!(server.get("/healthz", None).status, 200);
    }
}

#[test]
fn a_file_sent_as_multipart_reaches_the_run_and_can_be_downloaded() {
    let sandbox = Sandbox::new();
    write_workflow(
        &sandbox,
        "docs.yaml",
        &format!(
            "name: docs\nsteps:\n  - id: keep\n    uses: {}\n    blobs:\n      document: ${{ .blobs.document }}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let server = Served::start(&sandbox, &[]);
    let boundary = "plait-boundary-42";
    let document = "an invoice, line 1\nline 2\n";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"input\"\r\nContent-Type: application/json\r\n\r\n{{\"customer\": \"acme\"}}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"invoice.txt\"\r\nContent-Type: text/plain\r\n\r\n{document}\r\n--{boundary}--\r\n"
    );
    let reply = Reply::from(
        server
            .agent
            .post(server.url("/v1/workflows/docs/runs?wait=60s"))
            .content_type(format!("multipart/form-data; boundary={boundary}"))
            .send(body)
            .unwrap(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let run = &reply.json;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["input"], json!({"customer": "acme"}));
    let blob = &run["input_blobs"][0];
    assert_eq!(blob["name"], "document");
    assert_eq!(blob["media_type"], "text/plain");
    let download = server.get(blob["url"].as_str().unwrap(), None);
    assert_eq!(download.status, 200);
    assert_eq!(download.text, document);
    assert_eq!(download.header("content-type"), Some("text/plain"));
    let id = run["id"].as_str().unwrap();
    server
        .get(
            &format!("/v1/runs/{id}/blobs/sha256:{}", "0".repeat(64)),
            None,
        )
        .assert_problem(404, "blob-not-found");
    // The same blob by reference: no upload again.
    let by_reference = server.post(
        "/v1/workflows/docs/runs?wait=60s",
        None,
        &[],
        Some(json!({"blobs": [{"name": "document", "digest": blob["digest"], "media_type": "text/plain"}]})),
    );
    assert_eq!(by_reference.status, 200, "{}", by_reference.text);
    assert_eq!(
        by_reference.json["input_blobs"][0]["digest"],
        blob["digest"]
    );
    server
        .post("/v1/workflows/docs/runs", None, &[], Some(json!({})))
        .assert_problem(422, "missing-blob");
}

#[test]
fn shutdown_lets_a_running_step_finish_and_the_next_start_continues_the_run() {
    let sandbox = Sandbox::new();
    write_workflow(
        &sandbox,
        "slow.yaml",
        &format!(
            "name: slow\nsteps:\n  - id: slow\n    uses: {}\n    config:\n      sleep_ms: 3000\n  - id: after\n    uses: {}\n    needs: [slow]\n",
            yaml_path(SLOW_COUNTER_COMPONENT),
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let server = Served::start(&sandbox, &[]);
    let started = server.post("/v1/workflows/slow/runs", None, &[], Some(json!({})));
    assert_eq!(started.status, 202, "{}", started.text);
    let id = started.json["id"].as_str().unwrap().to_owned();
    let start = Instant::now();
    loop {
        let steps = server.get(&format!("/v1/runs/{id}/steps"), None);
        if steps.json["steps"][0]["status"] == "running" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the step never started: {}",
            steps.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    // The running step was let finish and recorded; the next was not begun.
    let shown = sandbox.run(&["runs", "show", &id, "--json"]);
    assert_exit(&shown, 0);
    let run = json(&shown);
    assert_eq!(run["steps"][0]["status"], "succeeded", "{run}");
    assert_eq!(run["steps"][0]["attempts"], 1);
    assert_eq!(run["steps"][1]["status"], "pending", "{run}");
    assert!(matches!(run["status"].as_str(), Some("running")), "{run}");

    // The next server continues it, without running the finished step again.
    let server = Served::start(&sandbox, &[]);
    let run = server.run_until(&id, None, |run| run["status"] == "succeeded");
    let steps = server.get(&format!("/v1/runs/{id}/steps"), None);
    assert_eq!(steps.json["steps"][0]["attempts"], 1, "{}", steps.text);
    assert_eq!(run["status"], "succeeded");
}

/// A run the server answered for is on disk, whatever happens next: the
/// server dispatches a queued run before its record's sync ends and
/// awaits that sync before it answers, so a SIGKILL right after a burst of
/// `202`s finds every answered run recorded (the journal's log holds what
/// sled had not flushed).
#[test]
fn every_run_answered_with_202_survives_a_sigkill_right_after() {
    let sandbox = Sandbox::new();
    write_workflow(
        &sandbox,
        "slow.yaml",
        &format!(
            "name: slow\nsteps:\n  - id: slow\n    uses: {}\n    config:\n      sleep_ms: 600000\n",
            yaml_path(SLOW_COUNTER_COMPONENT),
        ),
    );
    // A few rounds: the unsynced window after an answer is short.
    for round in 0..5 {
        let mut server = Served::start(&sandbox, &[]);
        let ids: Vec<String> = std::thread::scope(|scope| {
            let server = &server;
            let clients: Vec<_> = (0..4)
                .map(|client| {
                    scope.spawn(move || {
                        (0..8)
                            .map(|n| {
                                let started = server.post(
                                "/v1/workflows/slow/runs",
                                None,
                                &[],
                                Some(json!({"input": {"round": round, "client": client, "n": n}})),
                            );
                                assert_eq!(started.status, 202, "{}", started.text);
                                started.json["id"].as_str().unwrap().to_owned()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|client| client.join().unwrap())
                .collect()
        });
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        assert_eq!(ids.len(), 32);
        for id in &ids {
            let shown = sandbox.run(&["runs", "show", id, "--json"]);
            assert_exit(&shown, 0);
            let run = json(&shown);
            assert_eq!(run["run_id"], id.as_str(), "{run}");
            assert!(
                matches!(run["status"].as_str(), Some("queued" | "running")),
                "{run}"
            );
        }
    }
}

/// A request a receiver got: path, headers (lowercase names), body.
type Request = (String, Vec<(String, String)>, String);

/// A webhook receiver on loopback: records each request (path, headers,
/// body) and answers with the next of `statuses` (repeating the last).
fn receiver(statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<Request>>>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buffer = [0u8; 4096];
            let head_end = loop {
                if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break 0,
                    Ok(n) => data.extend_from_slice(&buffer[..n]),
                }
            };
            if head_end == 0 {
                continue;
            }
            let head = String::from_utf8_lossy(&data[..head_end]).to_string();
            let mut lines = head.lines();
            let path = lines
                .next()
                .unwrap_or("")
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0);
            while data.len() < head_end + length {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buffer[..n]),
                }
            }
            let body = String::from_utf8_lossy(&data[head_end..]).to_string();
            log.lock().unwrap().push((path, headers, body));
            let status = statuses[index.min(statuses.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (port, received)
}

/// Verifies a message as the Standard Webhooks specification says, written
/// from the spec (not the host's code): HMAC-SHA256 over
/// `{webhook-id}.{webhook-timestamp}.{body}` keyed with the base64 part of
/// the `whsec_` secret, compared with each `v1,` signature of the header,
/// and a timestamp within five minutes.
fn verify_standard_webhook(
    secret: &str,
    headers: &[(String, String)],
    body: &str,
) -> Result<(), String> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or(format!("no {name} header"))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let sent: u64 = timestamp.parse().map_err(|_| "bad timestamp".to_owned())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(sent) > 300 {
        return Err(format!("timestamp {sent} is too far from now {now}"));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(
            secret
                .strip_prefix("whsec_")
                .ok_or("the secret is not whsec_")?,
        )
        .map_err(|e| e.to_string())?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if signatures
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .any(|signature| signature == expected)
    {
        Ok(())
    } else {
        Err(format!("no signature in `{signatures}` matches"))
    }
}

#[test]
fn webhooks_are_signed_retried_and_recorded() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    // The first message is refused (500): it must be tried again.
    let (port, log) = receiver(vec![500, 200]);
    let policy = sandbox.write(
        "plait.toml",
        format!(
            "[server]\nwebhook_urls = [\"http://127.0.0.1:*\"]\n\n[[server.webhooks]]\nurl = \"http://127.0.0.1:{port}/all\"\nevents = [\"run.succeeded\", \"run.waiting\"]\n"
        ),
    );
    let secret_output = sandbox.run(&["webhooks", "secret"]);
    assert_exit(&secret_output, 0);
    let secret = stdout(&secret_output).trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let server = Served::start(&sandbox, &["--policy", policy.to_str().unwrap()]);

    let started = server.post(
        "/v1/workflows/echo/runs?wait=60s",
        None,
        &[],
        Some(
            json!({"input": {"text": "hook"}, "webhook": format!("http://127.0.0.1:{port}/mine")}),
        ),
    );
    assert_eq!(started.status, 200, "{}", started.text);
    let id = started.json["id"].as_str().unwrap().to_owned();

    // Both endpoints get the message; the refused one on a second attempt.
    let start = Instant::now();
    let webhooks = loop {
        let reply = server.get(&format!("/v1/runs/{id}/webhooks"), None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let all = reply.json["webhooks"].as_array().unwrap().clone();
        if all.len() == 2 && all.iter().all(|w| w["state"] == "delivered") {
            break all;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{}", reply.text);
        std::thread::sleep(Duration::from_millis(100));
    };
    let attempts: Vec<usize> = webhooks
        .iter()
        .map(|w| w["attempts"].as_array().unwrap().len())
        .collect();
    assert_eq!(attempts.iter().sum::<usize>(), 3, "{webhooks:?}");
    let retried = webhooks
        .iter()
        .find(|w| w["attempts"].as_array().unwrap().len() == 2)
        .unwrap();
    assert_eq!(retried["attempts"][0]["status"], 500);
    assert!(
        retried["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    assert_eq!(retried["attempts"][1]["status"], 200);
    assert!(webhooks.iter().all(|w| w["event"] == "run.succeeded"));

    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 3, "{received:?}");
    let mut paths: Vec<&str> = received.iter().map(|(path, _, _)| path.as_str()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths, ["/all", "/mine"]);
    for (_, headers, body) in &received {
        verify_standard_webhook(&secret, headers, body).unwrap();
        let message: Value = serde_json::from_str(body).unwrap();
        assert_eq!(message["type"], "run.succeeded");
        assert_eq!(message["data"]["id"], id.as_str());
        assert_eq!(message["data"]["output"]["text"], "hook");
        // A forged body does not verify.
        assert!(verify_standard_webhook(&secret, headers, &body.replace("hook", "hack")).is_err());
    }
    // The retry carries the same message id, so receivers can drop repeats.
    let retried_id = retried["id"].as_str().unwrap();
    let with_id = received
        .iter()
        .filter(|(_, headers, _)| {
            headers
                .iter()
                .any(|(n, v)| n == "webhook-id" && v == retried_id)
        })
        .count();
    assert_eq!(with_id, 2);

    // A run waiting for a signal is announced, naming the step.
    let waiting = server.post("/v1/workflows/waits/runs", None, &[], Some(json!({})));
    let waiting = waiting.json["id"].as_str().unwrap().to_owned();
    let start = Instant::now();
    let message = loop {
        let reply = server.get(&format!("/v1/runs/{waiting}/webhooks"), None);
        if reply.json["webhooks"][0]["state"] == "delivered" {
            break reply.json["webhooks"][0].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{}", reply.text);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(message["event"], "run.waiting");
    let last: Value = serde_json::from_str(&log.lock().unwrap().last().unwrap().2).unwrap();
    assert_eq!(last["type"], "run.waiting");
    assert_eq!(last["data"]["waiting_at"], "approve");

    // A URL the operator did not allow is refused before anything runs.
    server
        .post(
            "/v1/workflows/echo/runs",
            None,
            &[],
            Some(json!({"webhook": "http://10.9.8.7/steal"})),
        )
        .assert_problem(422, "webhook-refused");
}

#[test]
fn the_server_speaks_http2_with_prior_knowledge() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let server = Served::start(&sandbox, &[]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (version, status, body) = runtime.block_on(async move {
        use http_body_util::BodyExt as _;
        let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://{address}/v1/workflows"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (version, status) = (response.version(), response.status());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (version, status, body)
    });
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(status, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["workflows"][0]["name"], "echo");
}
