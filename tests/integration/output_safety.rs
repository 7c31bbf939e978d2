//! What reaches people and receivers from a step: terminal text escaped,
//! outputs with a key twice refused, transport failures in words, and the
//! idempotency key on every request a reference step sends.

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plait_test_artifacts::{BAD_OUTPUT_COMPONENT, HOSTILE_COMPONENT, HTTP_PLUGIN, NOTIFY_PLUGIN};

use crate::support::*;

/// Asserts `text` holds no raw ESC, CR, BEL or bidi override, and that no
/// line of it starts with the forged host line (after its timestamp).
#[track_caller]
fn assert_terminal_safe(text: &str) {
    for forbidden in ['\u{1b}', '\r', '\u{7}', '\u{202e}', '\u{9b}'] {
        assert!(
            !text.contains(forbidden),
            "raw {forbidden:?} reached the terminal:\n{text}"
        );
    }
    for line in text.lines() {
        assert!(
            !line.starts_with("12:00:00.000  INFO plait::executor"),
            "a step forged a host line:\n{text}"
        );
    }
}

fn hostile_workflow(sandbox: &Sandbox, content: &str) {
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: terminal\nsteps:\n  - id: noisy\n    uses: {}\n    config:\n      attack: terminal\n      content: {content}\n",
            yaml_path(HOSTILE_COMPONENT)
        ),
    );
}

#[test]
fn control_characters_from_a_step_never_reach_the_terminal_raw() {
    let sandbox = Sandbox::new();
    hostile_workflow(&sandbox, "ok");
    let output = sandbox.run(&["run", "workflow.yaml"]);
    assert_exit(&output, 0);
    let text = stderr(&output);
    // The record is shown, escaped.
    assert!(text.contains("\\u{1b}[2J"), "{text}");
    assert!(
        text.contains("\\r\\n12:00:00.000  INFO plait::executor: run succeeded"),
        "{text}"
    );
    assert!(text.contains("note=\\u{1b}[2J"), "{text}");
    assert_terminal_safe(&text);
    // The JSON log stays JSON: the message is the step's, exactly.
    let output = sandbox.run(&["run", "workflow.yaml", "--log-format", "json"]);
    assert_exit(&output, 0);
    let line = stderr(&output)
        .lines()
        .find(|line| line.contains("cleared"))
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .expect("the step's record is logged");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .starts_with("\u{1b}[2J\u{1b}]0;owned\u{7}"),
        "{line}"
    );
    assert_terminal_safe(&stderr(&output));
    // `runs show --logs` prints the kept record and the captured stderr.
    let run_id = line["run_id"].as_str().unwrap().to_owned();
    let shown = sandbox.run(&["runs", "show", &run_id, "--logs"]);
    assert_exit(&shown, 0);
    assert!(stdout(&shown).contains("\\u{1b}[2J"), "{}", stdout(&shown));
    assert_terminal_safe(&stdout(&shown));
}

#[test]
fn a_step_error_with_control_characters_is_printed_escaped() {
    let sandbox = Sandbox::new();
    hostile_workflow(&sandbox, "fail");
    let output = sandbox.run(&["run", "workflow.yaml"]);
    assert_exit(&output, 1);
    let text = stderr(&output);
    assert!(text.contains("\\u{1b}]0;owned\\u{7}"), "{text}");
    assert_terminal_safe(&text);
    assert_terminal_safe(&stdout(&output));
    // The timeline quotes the error too.
    let shown = sandbox.run(&["runs", "show", "--last"]);
    assert_exit(&shown, 0);
    assert!(
        stdout(&shown).contains("\\u{1b}]0;owned"),
        "{}",
        stdout(&shown)
    );
    assert_terminal_safe(&stdout(&shown));
}

#[test]
fn inspect_escapes_a_components_description() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["inspect", HOSTILE_COMPONENT]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("contains it.\\u{1b}]0;hostile\\u{7}"),
        "{text}"
    );
    assert_terminal_safe(&text);
}

#[test]
fn an_error_quoting_a_name_with_control_characters_is_escaped() {
    let sandbox = Sandbox::new();
    // An unknown config key whose name forges a line.
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: names\nsteps:\n  - id: a\n    uses: {}\n    config:\n      attack: leak\n      \"x\\e[2J\\r\\n12:00:00.000  INFO plait::executor: run succeeded\": 1\n",
            yaml_path(HOSTILE_COMPONENT)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml"]);
    assert_exit(&output, 2);
    assert_terminal_safe(&stderr(&output));
    // A missing input file whose name does the same.
    let output = sandbox.run(&[
        "run",
        "workflow.yaml",
        "--input",
        "in\u{1b}]0;owned\u{7}\n12:00:00.000  INFO plait::executor: run succeeded.json",
    ]);
    assert_exit(&output, 2);
    assert_terminal_safe(&stderr(&output));
}

#[test]
fn a_step_output_with_a_duplicate_key_is_refused_naming_the_key_and_path() {
    let sandbox = Sandbox::new();
    for (mode, key, path) in [
        ("duplicate-key", "a", "."),
        ("nested-duplicate-key", "id", ".items[1]"),
    ] {
        sandbox.write(
            "workflow.yaml",
            format!(
                "name: dup\nsteps:\n  - id: out\n    uses: {}\n    config:\n      mode: {mode}\n",
                yaml_path(BAD_OUTPUT_COMPONENT)
            ),
        );
        let output = sandbox.run(&["run", "workflow.yaml", "--json"]);
        assert_exit(&output, 1);
        let report = json(&output);
        assert_eq!(report["status"], "failed", "{report}");
        let error = &report["steps"][0]["error"];
        assert_eq!(error["kind"], "invalid_output", "{report}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("duplicate key `{key}` in the object at `{path}`")),
            "{message}"
        );
        assert!(report["output"].is_null(), "{report}");
    }
    // The same rule for a run's input.
    sandbox.write("input.json", r#"{"text": "a", "text": "b"}"#);
    let output = sandbox.run(&["run", "workflow.yaml", "--input", "input.json"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("duplicate key `text`"),
        "{}",
        stderr(&output)
    );
}

/// A loopback server that answers every request with `answer`, then
/// closes the connection.
fn broken_server(answer: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut data = Vec::new();
            let mut buffer = [0u8; 4096];
            while !data.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = stream.write_all(answer);
            let _ = stream.flush();
            drop(stream);
        }
    });
    port
}

#[test]
fn a_connection_closed_mid_response_is_reported_in_words_not_debug_text() {
    for answer in [
        // Mid-body: the headers promise 100 bytes.
        &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"part"
            [..],
        // Mid-headers.
        &b"HTTP/1.1 200 OK\r\ncontent-le"[..],
    ] {
        let port = broken_server(answer);
        let sandbox = Sandbox::new();
        sandbox.write("plait.toml", "[grants]\nprivate_networks = true\n");
        sandbox.write(
            "workflow.yaml",
            format!(
                "name: broken\nsteps:\n  - id: call\n    uses: {}\n    config:\n      url: http://127.0.0.1:{port}/x\n    grants:\n      http: [\"http://127.0.0.1:{port}\"]\n    retry: {{ max_attempts: 1 }}\n",
                yaml_path(HTTP_PLUGIN)
            ),
        );
        let output = sandbox.run(&["run", "workflow.yaml", "--policy", "plait.toml", "--json"]);
        assert_exit(&output, 1);
        let report = json(&output);
        let message = report["steps"][0]["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{report}"))
            .to_owned();
        assert!(message.contains("closed the connection"), "{message}");
        let everything = format!("{report}\n{}", stderr(&output));
        for debug in [
            "ErrorCode",
            "hyper::Error",
            "IncompleteMessage",
            "HttpProtocolError",
        ] {
            assert!(
                !everything.contains(debug),
                "`{debug}` reached the user:\n{everything}"
            );
        }
    }
}

/// A receiver recording each request's head; the first `hang` requests
/// get no answer (the connection is held open), the rest a 200 (or the
/// statuses of `statuses` in turn, then 200).
fn receiver(hang: usize, statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut data = Vec::new();
            let mut buffer = [0u8; 4096];
            while !data.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buffer[..n]),
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&data).to_ascii_lowercase());
            if index < hang {
                held.push(stream);
                continue;
            }
            let status = statuses.get(index - hang).copied().unwrap_or(200);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                )
                .as_bytes(),
            );
        }
    });
    (port, received)
}

/// The value of header `name` (lower-case) in a recorded head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

#[test]
fn reference_steps_send_the_same_idempotency_key_on_every_retry() {
    let (port, received) = receiver(0, vec![503, 503]);
    let sandbox = Sandbox::new();
    sandbox.write("plait.toml", "[grants]\nprivate_networks = true\n");
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: keys\nsteps:\n  - id: tell\n    uses: {}\n    config:\n      url: http://127.0.0.1:{port}/hook\n    grants:\n      http: [\"http://127.0.0.1:{port}\"]\n    retry: {{ max_attempts: 3, initial_interval: 50ms }}\n  - id: call\n    needs: [tell]\n    uses: {}\n    config:\n      url: http://127.0.0.1:{port}/items\n      method: POST\n    grants:\n      http: [\"http://127.0.0.1:{port}\"]\n",
            yaml_path(NOTIFY_PLUGIN),
            yaml_path(HTTP_PLUGIN)
        ),
    );
    let output = sandbox.run(&["run", "workflow.yaml", "--policy", "plait.toml", "--json"]);
    assert_exit(&output, 0);
    let report = json(&output);
    let run_id = report["run_id"]
        .as_str()
        .or(report["id"].as_str())
        .unwrap_or_else(|| panic!("{report}"))
        .to_owned();
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        4,
        "three notify attempts, one http call: {received:?}"
    );
    for head in &received[..3] {
        assert_eq!(
            header(head, "idempotency-key"),
            Some(&*format!("{run_id}/tell")),
            "{head}"
        );
        assert_eq!(
            header(head, "webhook-id"),
            Some(&*format!("{run_id}/tell")),
            "{head}"
        );
    }
    assert_eq!(
        header(&received[3], "idempotency-key"),
        Some(&*format!("{run_id}/call")),
        "{}",
        received[3]
    );
}

#[test]
fn a_notification_resumed_after_a_kill_mid_post_repeats_its_idempotency_key() {
    // The first delivery is never answered: the host is killed during it.
    let (port, received) = receiver(1, Vec::new());
    let sandbox = Sandbox::new();
    sandbox.write("plait.toml", "[grants]\nprivate_networks = true\n");
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: resumed\nsteps:\n  - id: tell\n    uses: {}\n    config:\n      url: http://127.0.0.1:{port}/hook\n      timeout_ms: 60000\n    grants:\n      http: [\"http://127.0.0.1:{port}\"]\n",
            yaml_path(NOTIFY_PLUGIN)
        ),
    );
    let child = KillOnDrop(
        sandbox
            .plait()
            .args(["run", "workflow.yaml", "--policy", "plait.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while received.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the notification was never sent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);
    let listed = json(&sandbox.run(&["runs", "list", "--json"]));
    let run_id = listed[0]["id"]
        .as_str()
        .or(listed[0]["run_id"].as_str())
        .unwrap_or_else(|| panic!("{listed}"))
        .to_owned();
    let resumed = sandbox.run(&["resume", &run_id, "--policy", "plait.toml", "--json"]);
    assert_exit(&resumed, 0);
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "{received:?}");
    let key = format!("{run_id}/tell");
    for head in &received {
        assert_eq!(
            header(head, "idempotency-key"),
            Some(key.as_str()),
            "{head}"
        );
        assert_eq!(header(head, "webhook-id"), Some(key.as_str()), "{head}");
    }
}
