//! Triggers of `plait serve`: webhook URLs, cron schedules and watched
//! folders, each starting real runs on the real server.

use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::Mac as _;
use plait_test_artifacts::ECHO_COMPONENT;
use serde_json::{Value, json};

use super::{Reply, Served, standard_workflows, write_workflow};
use crate::support::*;

/// `docs`: one echo step that keeps input blob `document`.
fn docs_workflow(sandbox: &Sandbox) {
    write_workflow(
        sandbox,
        "docs.yaml",
        &format!(
            "name: docs\nsteps:\n  - id: keep\n    uses: {}\n    blobs:\n      document: ${{ .blobs.document }}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
}

fn policy(sandbox: &Sandbox, text: &str) -> String {
    sandbox
        .write("plait.toml", text)
        .to_str()
        .unwrap()
        .to_owned()
}

/// The runs of `workflow`, newest first.
fn runs(server: &Served, workflow: &str, token: Option<&str>) -> Vec<Value> {
    let reply = server.get(&format!("/v1/runs?workflow={workflow}&limit=100"), token);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["runs"].as_array().unwrap().clone()
}

/// Waits until `workflow` has `count` runs that all ended, and returns them.
fn until_runs(server: &Served, workflow: &str, count: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let runs = runs(server, workflow, None);
        if runs.len() >= count
            && runs
                .iter()
                .all(|run| ["succeeded", "failed"].contains(&run["status"].as_str().unwrap()))
        {
            return runs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{workflow} never had {count} finished runs: {runs:#?}\n{}",
            server.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs a message as a Standard Webhooks sender does (from the spec).
fn standard_signature(secret: &str, id: &str, timestamp: u64, body: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn post_raw(
    server: &Served,
    path: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
) -> Reply {
    let mut request = server
        .agent
        .post(server.url(path))
        .content_type(content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::from(request.send(body).unwrap())
}

#[test]
fn webhook_triggers_start_runs_with_the_body_once_per_delivery() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    docs_workflow(&sandbox);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    sandbox.write(
        "secrets.toml",
        format!("hook_key = \"{secret}\"\ngithub_key = \"It's a Secret to Everybody\"\n"),
    );
    let policy = policy(
        &sandbox,
        r#"
[secrets]
file = "secrets.toml"

[[server.triggers]]
name = "echo-hook"
workflow = "echo"
type = "webhook"

[[server.triggers]]
name = "scans"
workflow = "docs"
type = "webhook"
blob = "document"

[[server.triggers]]
name = "signed"
workflow = "echo"
type = "webhook"
auth = "standard-webhooks"
secret = "hook_key"

[[server.triggers]]
name = "github"
workflow = "echo"
type = "webhook"
auth = "github"
secret = "github_key"
"#,
    );
    let create = |name: &str, scope: &str| {
        let output = sandbox.run(&["token", "create", "--name", name, "--scope", scope]);
        assert_exit(&output, 0);
        stdout(&output).trim().to_owned()
    };
    let writer = create("ci", "runs:write");
    let reader = create("dashboard", "runs:read");
    let server = Served::start(&sandbox, &["--policy", &policy]);

    // Token triggers: the JSON body is the input; the key replays.
    let auth = format!("Bearer {writer}");
    let first = post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[("Authorization", &auth), ("Idempotency-Key", "build-7")],
        "application/json",
        r#"{"text": "from the hook"}"#,
    );
    assert_eq!(first.status, 202, "{}", first.text);
    let id = first.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        first.header("location"),
        Some(format!("/v1/runs/{id}").as_str())
    );
    assert_eq!(first.json["idempotency_key"], "trigger:echo-hook:build-7");
    assert_eq!(first.json["started_by"], "token:ci via trigger:echo-hook");
    let again = post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[("Authorization", &auth), ("Idempotency-Key", "build-7")],
        "application/json",
        r#"{"text": "from the hook"}"#,
    );
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json["id"], id.as_str());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[("Authorization", &auth), ("Idempotency-Key", "build-7")],
        "application/json",
        r#"{"text": "another body"}"#,
    )
    .assert_problem(422, "idempotency-key-reused");
    post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[],
        "application/json",
        "{}",
    )
    .assert_problem(401, "unauthorized");
    post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[("Authorization", &format!("Bearer {reader}"))],
        "application/json",
        "{}",
    )
    .assert_problem(403, "insufficient-scope");
    post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[("Authorization", &auth)],
        "application/json",
        r#"{"text": 42}"#,
    )
    .assert_problem(422, "invalid-input");
    post_raw(
        &server,
        "/v1/triggers/echo-hook",
        &[("Authorization", &auth)],
        "text/plain",
        "not json",
    )
    .assert_problem(415, "unsupported-media-type");
    post_raw(
        &server,
        "/v1/triggers/nope",
        &[("Authorization", &auth)],
        "application/json",
        "{}",
    )
    .assert_problem(404, "trigger-not-found");

    // A non-JSON body becomes the trigger's input blob.
    let scan = post_raw(
        &server,
        "/v1/triggers/scans",
        &[("Authorization", &auth)],
        "text/plain; charset=utf-8",
        "a scanned page\n",
    );
    assert_eq!(scan.status, 202, "{}", scan.text);
    let scan_id = scan.json["id"].as_str().unwrap();
    let token = Some(reader.as_str());
    let scanned = server.run_until(scan_id, token, |run| run["status"] == "succeeded");
    let blob = &scanned["input_blobs"][0];
    assert_eq!(blob["name"], "document");
    assert_eq!(blob["media_type"], "text/plain");
    assert_eq!(
        server.get(blob["url"].as_str().unwrap(), token).text,
        "a scanned page\n"
    );

    // Standard Webhooks: signed, fresh, and the message id is the key.
    let body = r#"{"text": "signed"}"#;
    let now = now_seconds();
    let signature = standard_signature(secret, "msg_2Lq", now, body);
    let timestamp = now.to_string();
    let headers = [
        ("webhook-id", "msg_2Lq"),
        ("webhook-timestamp", timestamp.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let signed = post_raw(
        &server,
        "/v1/triggers/signed",
        &headers,
        "application/json",
        body,
    );
    assert_eq!(signed.status, 202, "{}", signed.text);
    assert_eq!(signed.json["idempotency_key"], "trigger:signed:msg_2Lq");
    assert_eq!(signed.json["started_by"], "trigger:signed");
    let signed_id = signed.json["id"].as_str().unwrap();
    let done = server.run_until(signed_id, token, |run| run["status"] == "succeeded");
    assert_eq!(done["input"], json!({"text": "signed"}));
    let redelivered = post_raw(
        &server,
        "/v1/triggers/signed",
        &headers,
        "application/json",
        body,
    );
    assert_eq!(redelivered.json["id"], signed_id);
    assert_eq!(redelivered.header("idempotent-replayed"), Some("true"));
    let tampered = post_raw(
        &server,
        "/v1/triggers/signed",
        &headers,
        "application/json",
        r#"{"text": "tampered"}"#,
    );
    tampered.assert_problem(401, "invalid-signature");
    let stale = now - 600;
    let stale_signature = standard_signature(secret, "msg_old", stale, body);
    let stale_text = stale.to_string();
    post_raw(
        &server,
        "/v1/triggers/signed",
        &[
            ("webhook-id", "msg_old"),
            ("webhook-timestamp", stale_text.as_str()),
            ("webhook-signature", stale_signature.as_str()),
        ],
        "application/json",
        body,
    )
    .assert_problem(401, "invalid-signature");
    // A bearer token does not stand in for the signature.
    post_raw(
        &server,
        "/v1/triggers/signed",
        &[("Authorization", &auth)],
        "application/json",
        body,
    )
    .assert_problem(401, "invalid-signature");

    // GitHub: X-Hub-Signature-256 over the body (GitHub's documented
    // example), X-GitHub-Delivery as the key.
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
    let github_body = r#"{"text": "pushed"}"#;
    mac.update(github_body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let github_signature = format!("sha256={hex}");
    let pushed = post_raw(
        &server,
        "/v1/triggers/github",
        &[
            ("X-Hub-Signature-256", github_signature.as_str()),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("X-GitHub-Event", "push"),
        ],
        "application/json",
        github_body,
    );
    assert_eq!(pushed.status, 202, "{}", pushed.text);
    assert_eq!(
        pushed.json["idempotency_key"],
        "trigger:github:72d3162e-cc78-11e3-81ab-4c9367dc0958"
    );
    post_raw(
        &server,
        "/v1/triggers/github",
        &[("X-Hub-Signature-256", github_signature.as_str())],
        "application/json",
        r#"{"text": "forged"}"#,
    )
    .assert_problem(401, "invalid-signature");

    // What the document promises is what the server serves.
    let document = server.get("/openapi.json", None);
    assert!(document.json["paths"]["/v1/triggers/{name}"]["post"].is_object());
    // Every run started above, and no other: 1 + 1 + 1 + 1.
    let echo_runs = runs(&server, "echo", token);
    assert_eq!(echo_runs.len(), 3, "{echo_runs:#?}");
    assert_eq!(runs(&server, "docs", token).len(), 1);
}

#[test]
fn a_trigger_configuration_mistake_stops_the_server_with_the_reason() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let cases = [
        (
            "name = \"inbox\"\nworkflow = \"echo\"\ntype = \"watch\"\ndir = \"no-such-folder\"",
            ["trigger `inbox` watches", "create it"],
        ),
        (
            "name = \"signed\"\nworkflow = \"echo\"\ntype = \"webhook\"\nauth = \"standard-webhooks\"\nsecret = \"nowhere\"",
            ["trigger `signed`", "PLAIT_SECRET_NOWHERE"],
        ),
        (
            "name = \"tick\"\nworkflow = \"echo\"\ntype = \"cron\"\nschedule = \"every minute\"",
            ["server.triggers.schedule (trigger `tick`)", "five fields"],
        ),
    ];
    for (table, said) in cases {
        let policy = policy(&sandbox, &format!("[[server.triggers]]\n{table}\n"));
        let output = sandbox.run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workflows",
            "workflows",
            "--policy",
            &policy,
        ]);
        assert_exit(&output, 2);
        for words in said {
            assert!(
                stderr(&output).contains(words),
                "{table}: {}",
                stderr(&output)
            );
        }
    }
}

#[test]
fn a_schedule_starts_one_run_per_slot_and_the_newest_missed_slot_once_after_downtime() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let schedule = |schedule: &str| {
        policy(
            &sandbox,
            &format!(
                "[[server.triggers]]\nname = \"tick\"\nworkflow = \"echo\"\ntype = \"cron\"\nschedule = \"{schedule}\"\ninput = {{ text = \"scheduled\" }}\n"
            ),
        )
    };
    // Every second: a run per slot, each slot its own key.
    let every_second = schedule("* * * * * *");
    let server = Served::start(&sandbox, &["--policy", &every_second]);
    // A slot's run may still be going when the next one starts: the
    // finished ones are looked at.
    let start = Instant::now();
    let ran = loop {
        let succeeded: Vec<Value> = runs(&server, "echo", None)
            .into_iter()
            .filter(|run| run["status"] == "succeeded")
            .collect();
        if succeeded.len() >= 3 {
            break succeeded;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the schedule did not start 3 runs: {succeeded:#?}\n{}",
            server.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, log) = server.terminate();
    let mut keys: Vec<&str> = ran
        .iter()
        .map(|run| run["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), ran.len(), "one run per slot: {keys:?}");
    for run in &ran {
        assert!(
            run["idempotency_key"]
                .as_str()
                .unwrap()
                .starts_with("cron:tick:"),
            "{run}"
        );
        assert_eq!(run["started_by"], "trigger:tick");
        assert_eq!(run["input"], json!({"text": "scheduled"}));
        assert_eq!(run["status"], "succeeded");
    }
    assert!(
        log.iter().any(|line| line.contains("schedule armed")),
        "{}",
        log.join("\n")
    );

    // Down while a slot passes (the schedule changed meanwhile; its last
    // handled slot is kept under the trigger's name): at the next start
    // that slot runs, once.
    let slot_time = now_seconds() + 2;
    let expected = format!(
        "cron:tick:{}",
        jiff::Timestamp::from_second(slot_time as i64)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
    );
    std::thread::sleep(Duration::from_secs(4));
    let once_a_minute = schedule(&format!("{} * * * * *", slot_time % 60));
    let server = Served::start(&sandbox, &["--policy", &once_a_minute]);
    let start = Instant::now();
    let keys = || -> Vec<String> {
        runs(&server, "echo", None)
            .iter()
            .map(|run| run["idempotency_key"].as_str().unwrap().to_owned())
            .collect()
    };
    while !keys().contains(&expected) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the missed slot {expected} never ran: {:?}\n{}",
            keys(),
            server.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its next slot is a minute away: nothing else starts meanwhile, and
    // the slots missed before it (none here) are not run.
    std::thread::sleep(Duration::from_secs(3));
    let keys = keys();
    assert_eq!(keys.iter().filter(|key| **key == expected).count(), 1);
    assert!(
        keys.iter().all(|key| *key <= expected),
        "a slot after the caught-up one ran: {keys:?}"
    );
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("missed while the server was down")),
        "{}",
        server.log.lock().unwrap().join("\n")
    );
}

#[test]
fn a_file_dropped_in_a_watched_folder_starts_one_run_even_across_restarts() {
    let sandbox = Sandbox::new();
    docs_workflow(&sandbox);
    std::fs::create_dir_all(sandbox.dir.path().join("inbox")).unwrap();
    std::fs::create_dir_all(sandbox.dir.path().join("outbox")).unwrap();
    let policy = policy(
        &sandbox,
        r#"
[[server.triggers]]
name = "inbox"
workflow = "docs"
type = "watch"
dir = "inbox"

[[server.triggers]]
name = "outbox"
workflow = "docs"
type = "watch"
dir = "outbox"
extensions = ["txt"]
move_to = "outbox/done"
"#,
    );
    let inbox = sandbox.dir.path().join("inbox");
    // Written under a dot-name and renamed, as a careful writer does.
    let put = |dir: &std::path::Path, name: &str, text: &str| {
        let hidden = dir.join(format!(".{name}"));
        std::fs::write(&hidden, text).unwrap();
        std::fs::rename(&hidden, dir.join(name)).unwrap();
    };
    let server = Served::start(&sandbox, &["--policy", &policy]);
    put(&inbox, "invoice.txt", "invoice 1\n");
    // Never taken: partial downloads, hidden files, links.
    std::fs::write(inbox.join("upload.part"), "half").unwrap();
    std::fs::write(inbox.join(".hidden"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", inbox.join("link.txt")).unwrap();
    let ran = until_runs(&server, "docs", 1);
    let run = &ran[0];
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["started_by"], "trigger:inbox");
    let key = run["idempotency_key"].as_str().unwrap();
    assert!(
        key.starts_with("watch:inbox:") && key.ends_with(":invoice.txt"),
        "{key}"
    );
    let blob = &run["input_blobs"][0];
    assert_eq!(blob["name"], "document");
    assert_eq!(blob["media_type"], "text/plain");
    assert_eq!(
        server.get(blob["url"].as_str().unwrap(), None).text,
        "invoice 1\n"
    );

    // Restarted: the file is still there, and starts nothing new.
    let (status, _) = server.terminate();
    assert!(status.success());
    let server = Served::start(&sandbox, &["--policy", &policy]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs(&server, "docs", None).len(), 1);

    // A new file, and a changed one, are new documents.
    put(&inbox, "receipt.txt", "receipt\n");
    std::fs::write(inbox.join("invoice.txt"), "invoice 1, corrected\n").unwrap();
    let ran = until_runs(&server, "docs", 3);
    assert_eq!(ran.len(), 3, "{ran:#?}");
    let mut inputs: Vec<String> = ran
        .iter()
        .map(|run| {
            server
                .get(run["input_blobs"][0]["url"].as_str().unwrap(), None)
                .text
        })
        .collect();
    inputs.sort();
    assert_eq!(
        inputs,
        ["invoice 1\n", "invoice 1, corrected\n", "receipt\n"]
    );

    // With `move_to`, a started file moves out; other extensions stay.
    let outbox = sandbox.dir.path().join("outbox");
    put(&outbox, "letter.txt", "dear operator\n");
    put(&outbox, "photo.png", "not text");
    let ran = until_runs(&server, "docs", 4);
    assert_eq!(ran[0]["started_by"], "trigger:outbox");
    let start = Instant::now();
    while !outbox.join("done/letter.txt").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "letter.txt was not moved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!outbox.join("letter.txt").exists());
    assert!(outbox.join("photo.png").exists());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&server, "docs", None).len(), 4);
    // The ignored files started nothing, and are untouched.
    assert_eq!(
        std::fs::read_to_string(inbox.join("upload.part")).unwrap(),
        "half"
    );
}
