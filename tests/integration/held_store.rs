//! The store while another process holds it: `plait runs list`, `runs
//! show`, `logs` and `signal` read it through the holder's socket (a
//! waiting `plait run`, a `plait serve`), and run ids may be shortened to
//! a unique start or given as `--last`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plait_test_artifacts::ECHO_COMPONENT;
use serde_json::{Value, json};

use crate::support::*;

/// Starts `plait ARGS` with executor logs on stderr, streamed line by line.
fn spawn_logged(sandbox: &Sandbox, args: &[&str], log: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = sandbox
        .plait()
        .args(args)
        .env("PLAIT_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// Waits for a line containing `needle` and returns it.
fn line_with(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no `{needle}` line within 2 minutes"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// `plait run examples/approval` as a child, and the id of its run once
/// it waits for the approval.
fn start_approval(sandbox: &Sandbox) -> (KillOnDrop, mpsc::Receiver<String>, String) {
    let example = repo_root().join("examples/approval");
    let input = example.join("input.json");
    let (child, lines) = spawn_logged(
        sandbox,
        &[
            "run",
            example.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--json",
        ],
        "warn,plait::executor=info",
    );
    let run_id = run_id_in(&line_with(&lines, "waiting for a signal"));
    (KillOnDrop(child), lines, run_id)
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["id"] == id)
        .unwrap_or_else(|| panic!("no step `{id}` in {report:#}"))
}

#[test]
fn runs_list_show_logs_and_signal_work_while_a_waiting_run_holds_the_store() {
    let sandbox = Sandbox::new();
    let (mut child, _lines, run_id) = start_approval(&sandbox);
    let pid = format!("pid {}", child.id());

    // Reads go through the process that holds the store.
    let listed = sandbox.run(&["runs", "list", "--json"]);
    assert_exit(&listed, 0);
    let runs = json(&listed);
    assert_eq!(runs[0]["run_id"], run_id.as_str(), "{runs:#}");
    assert_eq!(runs[0]["status"], "waiting");
    let table = sandbox.run(&["runs", "list"]);
    assert_exit(&table, 0);
    assert!(stdout(&table).contains(&run_id), "{}", stdout(&table));

    let shown = sandbox.run(&["runs", "show", &run_id[..13], "--logs"]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    assert!(text.contains(&format!("run       {run_id}")), "{text}");
    assert!(text.contains("approve"), "{text}");
    let shown = json(&sandbox.run(&["runs", "show", "--last", "--json"]));
    assert_eq!(shown["run_id"], run_id.as_str(), "{shown:#}");
    assert_eq!(step(&shown, "approve")["status"], "waiting");
    assert_eq!(step(&shown, "request")["status"], "succeeded");

    // Run log lines reach the store every 100 ms (a writer thread of the
    // holder's), so the line the holder has just printed may still be on
    // its way.
    let start = Instant::now();
    loop {
        let logs = sandbox.run(&["logs", &run_id[..13]]);
        assert_exit(&logs, 0);
        if stdout(&logs).contains("waiting for a signal") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            stdout(&logs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_exit(&sandbox.run(&["metrics"]), 0);
    assert_exit(&sandbox.run(&["audit", "--json"]), 0);

    // What needs the store to itself names the process that holds it.
    let gc = sandbox.run(&["gc"]);
    assert_exit(&gc, 2);
    assert!(
        stderr(&gc).contains("is in use by `plait run") && stderr(&gc).contains(&pid),
        "{}",
        stderr(&gc)
    );

    // A signal for a step that is not a wait step is refused here.
    let refused = sandbox.run(&["signal", "--last", "request"]);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("not a `type: wait` step"),
        "{}",
        stderr(&refused)
    );
    // The signal reaches the waiting run, which finishes.
    let sent = sandbox.run(&[
        "signal",
        "--last",
        "approve",
        "--data",
        r#"{"approved": true, "by": "dana"}"#,
    ]);
    assert_exit(&sent, 0);
    assert!(
        stderr(&sent).contains(&pid) && stderr(&sent).contains(&run_id),
        "{}",
        stderr(&sent)
    );
    let mut printed = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut printed).unwrap();
    assert!(child.wait().unwrap().success());
    let report: Value = serde_json::from_slice(&printed).unwrap();
    assert_eq!(report["output"], json!({"approved": true, "paid": true}));

    // The holder is gone, and its socket with it: the commands open the
    // store themselves again.
    assert!(
        !sandbox.store().join("journal/store.sock").exists(),
        "the socket outlived its process"
    );
    let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
    assert_eq!(shown["status"], "succeeded");
}

#[test]
fn runs_list_show_logs_and_signal_work_while_plait_serve_holds_the_store() {
    let sandbox = Sandbox::new();
    // A run left waiting by a host that was killed...
    let (mut child, _lines, run_id) = start_approval(&sandbox);
    child.kill().unwrap();
    child.wait().unwrap();
    // SIGKILL left its socket behind: the server replaces it.
    assert!(sandbox.store().join("journal/store.sock").exists());
    // ... which the server picks up.
    let workflows = sandbox.dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let (server, server_lines) = spawn_logged(
        &sandbox,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workflows",
            workflows.to_str().unwrap(),
        ],
        "plait=info",
    );
    let server = KillOnDrop(server);
    line_with(&server_lines, " on http://");
    let pid = format!("pid {}", server.id());

    // The server takes the unfinished run up as it starts (`running`) and
    // parks it again at its approval (`waiting`): list until it has.
    let start = Instant::now();
    loop {
        let listed = sandbox.run(&["runs", "list"]);
        assert_exit(&listed, 0);
        assert!(stdout(&listed).contains(&run_id), "{}", stdout(&listed));
        if stdout(&listed).contains("waiting") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run never waited again under the server: {}",
            stdout(&listed)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = sandbox.run(&["runs", "show", &run_id]);
    assert_exit(&shown, 0);
    assert!(
        stdout(&shown).contains(&format!("run       {run_id}")),
        "{}",
        stdout(&shown)
    );
    let logs = sandbox.run(&["logs", "--last"]);
    assert_exit(&logs, 0);
    assert!(stdout(&logs).contains("run started"), "{}", stdout(&logs));
    // `plait run` needs the store to itself: the error says who has it.
    let run = sandbox.run(&[
        "run",
        repo_root().join("examples/approval").to_str().unwrap(),
    ]);
    assert_exit(&run, 2);
    assert!(
        stderr(&run).contains("is in use by `plait serve") && stderr(&run).contains(&pid),
        "{}",
        stderr(&run)
    );

    let sent = sandbox.run(&[
        "signal",
        &run_id[..13],
        "approve",
        "--data",
        r#"{"approved": false}"#,
    ]);
    assert_exit(&sent, 0);
    assert!(stderr(&sent).contains(&pid), "{}", stderr(&sent));
    // The server continues the run.
    let start = Instant::now();
    loop {
        let shown = json(&sandbox.run(&["runs", "show", &run_id, "--json"]));
        if shown["status"] == "succeeded" {
            assert_eq!(shown["output"], json!({"approved": false, "paid": false}));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never finished: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The longest start two strings share.
fn common_start(a: &str, b: &str) -> String {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

#[test]
fn a_run_id_may_be_shortened_to_a_unique_start_or_given_as_last() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflow.yaml",
        format!(
            "name: echo\nsteps:\n  - id: say\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let first = json(&sandbox.run(&["run", "workflow.yaml", "--json"]))["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = json(&sandbox.run(&["run", "workflow.yaml", "--json"]))["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // UUIDv7 ids made moments apart share their start.
    let shared = common_start(&first, &second);
    assert!(!shared.is_empty(), "{first} {second}");

    let ambiguous = sandbox.run(&["runs", "show", &shared]);
    assert_exit(&ambiguous, 2);
    let message = stderr(&ambiguous);
    assert!(
        message.contains(&format!("`{shared}` is the start of 2 runs"))
            && message.contains(&first)
            && message.contains(&second),
        "{message}"
    );
    let none = sandbox.run(&["logs", "zzz"]);
    assert_exit(&none, 2);
    assert!(
        stderr(&none).contains("no run starts with `zzz`"),
        "{}",
        stderr(&none)
    );

    let unique = &first[..shared.len() + 1];
    let shown = json(&sandbox.run(&["runs", "show", unique, "--json"]));
    assert_eq!(shown["run_id"], first.as_str());
    let last = json(&sandbox.run(&["runs", "show", "--last", "--json"]));
    assert_eq!(last["run_id"], second.as_str());
    let logs = sandbox.run(&["logs", "--last"]);
    assert_exit(&logs, 0);
    assert!(stdout(&logs).contains("say"), "{}", stdout(&logs));
    let resumed = json(&sandbox.run(&["resume", unique, "--json"]));
    assert_eq!(resumed["run_id"], first.as_str());
    assert_eq!(resumed["status"], "succeeded");
    let both = sandbox.run(&["runs", "show", unique, "--last"]);
    assert_exit(&both, 2);
}
