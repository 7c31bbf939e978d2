//! Template bundles through the `plait` CLI: pack, sign, verify, install,
//! run by name, serve, remove; tampering, hostile archives, and a real OCI
//! registry (Debian's `docker-registry`) on loopback.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use plait_test_artifacts::ECHO_COMPONENT;
use serde_json::Value;

use crate::reference_steps::server;
use crate::support::*;

/// A small template: one echo step, then a `wait` step, versioned.
fn echo_template(sandbox: &Sandbox, version: &str) -> PathBuf {
    let dir = format!("echo-{version}");
    sandbox.write(
        &format!("{dir}/workflow.yaml"),
        format!(
            "name: echo-bundle\nversion: {version}\nsteps:\n  - id: say\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    sandbox.write(
        &format!("{dir}/waits.yaml"),
        format!(
            "name: waits-bundle\nversion: {version}\nsteps:\n  - id: first\n    uses: {}\n  - id: approve\n    type: wait\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    sandbox.write(
        &format!("{dir}/bundle.toml"),
        format!(
            "name = \"echo-bundle\"\nversion = \"{version}\"\nauthors = [\"Plait tests\"]\nlicense = \"Apache-2.0\"\nworkflows = [\"workflow.yaml\", \"waits.yaml\"]\n"
        ),
    );
    sandbox.dir.path().join(dir)
}

fn plait_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let output = sandbox.run(args);
    assert_exit(&output, 0);
    stdout(&output)
}

fn refused(sandbox: &Sandbox, args: &[&str], words: &[&str]) -> String {
    let output = sandbox.run(args);
    assert_exit(&output, 2);
    let said = stderr(&output);
    for word in words {
        assert!(
            said.contains(word),
            "`plait {}` should say `{word}`:\n{said}",
            args.join(" ")
        );
    }
    said
}

/// Rewrites bundle `from` into `to` with `change` applied to entry `path`
/// (written back as a plain tar.gz: what an attacker would do).
fn altered(from: &Path, to: &Path, path: &str, change: impl Fn(&mut Vec<u8>)) {
    let bytes = std::fs::read(from).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut builder = tar::Builder::new(Vec::new());
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if name == path {
            change(&mut data);
            found = true;
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data.as_slice()).unwrap();
    }
    assert!(found, "{path} is not in the bundle");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&builder.into_inner().unwrap()).unwrap();
    std::fs::write(to, gzip.finish().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_template_is_packed_signed_verified_installed_and_run_by_name() {
    let (port, received) = server(vec![(204, "", "")]).await;
    let sandbox = Sandbox::new();
    let (workflow, policy) = crate::ai_steps::template(&sandbox, port);
    let template = Path::new(&workflow).parent().unwrap().to_owned();
    let template = template.to_str().unwrap();
    let run = |args: &[&str]| tokio::task::block_in_place(|| sandbox.run(args));

    // Deterministic: packing twice gives the same bytes.
    let packed = run(&["bundle", "pack", template, "-o", "intake.plait"]);
    assert_exit(&packed, 0);
    run(&["bundle", "pack", template, "-o", "again.plait"]);
    let bytes = std::fs::read(sandbox.dir.path().join("intake.plait")).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(sandbox.dir.path().join("again.plait")).unwrap()
    );

    // Unsigned: refused unless the operator says otherwise.
    tokio::task::block_in_place(|| {
        refused(
            &sandbox,
            &["bundle", "verify", "intake.plait"],
            &["not signed", "--allow-unsigned"],
        );
        refused(
            &sandbox,
            &["bundle", "install", "intake.plait"],
            &["not signed"],
        );
        plait_ok(
            &sandbox,
            &["bundle", "verify", "intake.plait", "--allow-unsigned"],
        );
    });

    // Signed by a key the host does not trust yet, then trusted.
    let public_key =
        tokio::task::block_in_place(|| plait_ok(&sandbox, &["key", "generate", "--name", "acme"]));
    let public_key = public_key.trim();
    assert!(public_key.starts_with("ed25519:"), "{public_key}");
    tokio::task::block_in_place(|| {
        plait_ok(
            &sandbox,
            &["bundle", "sign", "intake.plait", "--key", "acme"],
        );
        refused(
            &sandbox,
            &["bundle", "verify", "intake.plait"],
            &["not in the trust store", "plait trust add"],
        );
        plait_ok(&sandbox, &["trust", "add", public_key, "--name", "acme"]);
        let verified = plait_ok(&sandbox, &["bundle", "verify", "intake.plait"]);
        assert!(verified.contains("signed by `acme`"), "{verified}");
    });

    // What it holds and asks for, before anything is installed.
    let inspected = tokio::task::block_in_place(|| {
        plait_ok(&sandbox, &["bundle", "inspect", "intake.plait", "--json"])
    });
    let inspected: Value = serde_json::from_str(&inspected).unwrap();
    let manifest = &inspected["manifest"];
    assert_eq!(manifest["name"], "document-intake");
    let files: Vec<&str> = manifest["components"]
        .as_array()
        .unwrap()
        .iter()
        .chain(manifest["assets"].as_array().unwrap())
        .map(|file| file["path"].as_str().unwrap())
        .collect();
    for expected in [
        "components/ocr.wasm",
        "components/classify.wasm",
        "components/archive.wasm",
        "models/ppocrv6-tiny-det/model.onnx",
        "models/all-minilm-l6-v2-int8/tokenizer.json",
    ] {
        assert!(
            files.contains(&expected),
            "{expected} missing from {files:?}"
        );
    }
    let grants = manifest["grants"].to_string();
    assert!(
        grants.contains("/archive <- ./archive (read-write)"),
        "{grants}"
    );
    assert!(
        grants.contains(&format!("http://127.0.0.1:{port}")),
        "{grants}"
    );
    assert_eq!(inspected["signer"]["public_key"], public_key);

    // The bundle carries its models: installed and run with an empty
    // model store, it still reads and labels the invoice.
    let empty_models = sandbox.dir.path().join("no-models");
    std::fs::create_dir_all(&empty_models).unwrap();
    let with_models = |args: &[&str]| {
        tokio::task::block_in_place(|| {
            sandbox
                .plait()
                .args(args)
                .env("PLAIT_MODELS", &empty_models)
                .output()
                .unwrap()
        })
    };
    let install = with_models(&["bundle", "install", "intake.plait", "--policy", &policy]);
    assert_exit(&install, 2);
    assert!(stderr(&install).contains("--allow"), "{}", stderr(&install));
    assert!(
        !sandbox.store().join("bundles/document-intake").exists(),
        "a refused install leaves nothing"
    );
    let install = with_models(&[
        "bundle",
        "install",
        "intake.plait",
        "--policy",
        &policy,
        "--allow",
    ]);
    assert_exit(&install, 0);
    let installed = PathBuf::from(stdout(&install).trim());
    assert!(
        installed.ends_with("bundles/document-intake/0.1.0"),
        "{}",
        installed.display()
    );
    let document = format!(
        "document={}/tests/samples/invoice-scan.jpg",
        plait_test_artifacts::REPO_ROOT
    );
    let ran = with_models(&[
        "run",
        "document-intake",
        "--policy",
        &policy,
        "--file",
        &document,
        "--json",
    ]);
    assert_exit(&ran, 0);
    let result = json(&ran);
    assert_eq!(result["output"]["label"], "invoice", "{result}");
    assert_eq!(result["workflow"]["name"], "document-intake");
    // Its relative folder grant is a folder inside the installed version.
    let archived = result["output"]["archived_as"].as_str().unwrap();
    assert!(
        installed.join("archive").join(archived).is_file(),
        "{archived}"
    );
    assert_eq!(received.lock().unwrap().len(), 1, "one notification");
    let ran = with_models(&[
        "run",
        "document-intake@0.1.0",
        "--policy",
        &policy,
        "--file",
        &document,
        "--json",
    ]);
    assert_exit(&ran, 0);
    let missing = with_models(&["run", "document-intake@9.9.9", "--policy", &policy]);
    assert_exit(&missing, 2);
    assert!(
        stderr(&missing).contains("plait bundle list"),
        "{}",
        stderr(&missing)
    );

    // The audit log says who installed what.
    let audit = with_models(&["audit", "--json"]);
    assert!(
        stdout(&audit).contains("bundle.install"),
        "{}",
        stdout(&audit)
    );

    // Tampering with any byte of any file is detected and named.
    let cases = [
        ("components/ocr.wasm", "components/ocr.wasm"),
        (
            "models/ppocrv6-tiny-det/model.onnx",
            "models/ppocrv6-tiny-det/model.onnx",
        ),
        ("bundle.toml", "bundle.toml"),
    ];
    for (path, named) in cases {
        let from = sandbox.dir.path().join("intake.plait");
        let to = sandbox.dir.path().join("tampered.plait");
        altered(&from, &to, path, |data| {
            let middle = data.len() / 2;
            data[middle] ^= 0x01;
        });
        tokio::task::block_in_place(|| {
            refused(
                &sandbox,
                &["bundle", "verify", "tampered.plait"],
                &[named, "altered"],
            );
            refused(
                &sandbox,
                &["bundle", "install", "tampered.plait", "--allow"],
                &[named],
            );
        });
    }
}

#[test]
fn versions_install_side_by_side_run_by_name_serve_and_are_removed_only_when_unused() {
    let sandbox = Sandbox::new();
    let one = echo_template(&sandbox, "0.1.0");
    let two = echo_template(&sandbox, "0.2.0");
    for (dir, file) in [(&one, "one.plait"), (&two, "two.plait")] {
        plait_ok(
            &sandbox,
            &["bundle", "pack", dir.to_str().unwrap(), "-o", file],
        );
        plait_ok(&sandbox, &["bundle", "install", file, "--allow-unsigned"]);
    }
    let listed = plait_ok(&sandbox, &["bundle", "list"]);
    assert!(
        listed.contains("0.1.0") && listed.contains("0.2.0"),
        "{listed}"
    );
    // The name runs the highest version; NAME@VERSION that one.
    let latest = json(&sandbox.run(&["run", "echo-bundle", "--json"]));
    assert_eq!(latest["workflow"]["version"], "0.2.0", "{latest}");
    let pinned = json(&sandbox.run(&["run", "echo-bundle@0.1.0", "--json"]));
    assert_eq!(pinned["workflow"]["version"], "0.1.0", "{pinned}");

    // `plait serve` runs installed workflows too.
    std::fs::create_dir_all(sandbox.dir.path().join("served")).unwrap();
    let mut server = sandbox
        .plait()
        .args(["serve", "--listen", "127.0.0.1:0", "--workflows", "served"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_lines = std::io::BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr_lines, &mut line).unwrap() > 0,
            "serve ended"
        );
        if let Some(rest) = line.split(" on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr_lines, &mut std::io::sink()));
    let server = KillOnDrop(server);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for (name, version) in [("echo-bundle", "0.2.0"), ("echo-bundle@0.1.0", "0.1.0")] {
        let mut response = agent
            .post(format!(
                "http://{address}/v1/workflows/{name}/runs?wait=60s"
            ))
            .send_json(serde_json::json!({"input": {}}))
            .unwrap();
        let run: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["workflow"]["version"], version, "{run}");
    }
    drop(server);

    // A waiting run of 0.1.0 keeps it installed until it ends.
    let mut waiting = sandbox
        .plait()
        .args(["run", "waits-bundle@0.1.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let start = Instant::now();
    let run_id = loop {
        line.clear();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        if line.contains("waiting for a signal") {
            break run_id_in(&line);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never waited"
        );
    };
    waiting.kill().unwrap();
    waiting.wait().unwrap();
    refused(
        &sandbox,
        &["bundle", "remove", "echo-bundle@0.1.0"],
        &["unfinished runs", &run_id],
    );
    // The killed process's claim on the run may have reached the disk: the
    // cancel is then recorded, and carried out by a cancel made once the
    // claim has lapsed (30 s).
    let start = Instant::now();
    loop {
        plait_ok(&sandbox, &["cancel", &run_id]);
        let shown = plait_ok(&sandbox, &["runs", "show", &run_id, "--json"]);
        if serde_json::from_str::<Value>(&shown).unwrap()["status"] == "cancelled" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "the run was never cancelled: {shown}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    plait_ok(&sandbox, &["bundle", "remove", "echo-bundle@0.1.0"]);
    let listed = plait_ok(&sandbox, &["bundle", "list"]);
    assert!(
        !listed.contains("0.1.0") && listed.contains("0.2.0"),
        "{listed}"
    );
    refused(
        &sandbox,
        &["bundle", "remove", "echo-bundle@0.1.0"],
        &["not installed"],
    );
    // The removed version's blobs are gone, the kept version's stay.
    let latest = json(&sandbox.run(&["run", "echo-bundle", "--json"]));
    assert_eq!(latest["status"], "succeeded");
}

/// A gzip-compressed tar built entry by entry, headers written raw.
fn hostile(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&builder.into_inner().unwrap()).unwrap();
    gzip.finish().unwrap()
}

#[test]
fn malicious_archives_are_refused_and_write_nothing() {
    let sandbox = Sandbox::new();
    let manifest = b"format = 1\n";
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            hostile(&[
                ("bundle.toml", tar::EntryType::Regular, manifest, None),
                ("../../escaped.txt", tar::EntryType::Regular, b"pwned", None),
            ]),
            "not a bundle path",
        ),
        (
            "absolute",
            hostile(&[("/tmp/escaped.txt", tar::EntryType::Regular, b"pwned", None)]),
            "not a bundle path",
        ),
        (
            "symlink",
            hostile(&[(
                "components/x.wasm",
                tar::EntryType::Symlink,
                b"",
                Some("/etc/passwd"),
            )]),
            "symbolic link",
        ),
        (
            "device",
            hostile(&[("dev", tar::EntryType::Block, b"", None)]),
            "device",
        ),
        (
            "bomb",
            hostile(&[(
                "models/big/model.onnx",
                tar::EntryType::Regular,
                &zeros,
                None,
            )]),
            "over the 16 MiB limit",
        ),
        (
            "garbage",
            b"\x1f\x8b not really".to_vec(),
            "not a gzip-compressed tar",
        ),
    ];
    let policy = sandbox.write("plait.toml", "[bundles]\nmax_size = \"16MiB\"\n");
    let policy = policy.to_str().unwrap();
    for (name, bytes, said) in &cases {
        let file = format!("{name}.plait");
        sandbox.write(&file, bytes);
        if *name == "bomb" {
            assert!(
                bytes.len() < 1024 * 1024,
                "the bomb is small: {}",
                bytes.len()
            );
        }
        refused(
            &sandbox,
            &[
                "bundle",
                "verify",
                &file,
                "--allow-unsigned",
                "--policy",
                policy,
            ],
            &[said],
        );
        refused(
            &sandbox,
            &[
                "bundle",
                "install",
                &file,
                "--allow-unsigned",
                "--allow",
                "--policy",
                policy,
            ],
            &[said],
        );
    }
    assert!(!sandbox.dir.path().join("escaped.txt").exists());
    assert!(!sandbox.store().join("escaped.txt").exists());
    let installed: Vec<_> = std::fs::read_dir(sandbox.store().join("bundles"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        installed.iter().all(|name| name == "blobs"),
        "nothing installed: {installed:?}"
    );
}

/// Debian's `docker-registry` (the CNCF distribution registry) on a free
/// loopback port, with its storage in the sandbox.
fn registry(sandbox: &Sandbox) -> (KillOnDrop, String) {
    let binary = ["/usr/bin/docker-registry", "/usr/bin/registry"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect(
            "the OCI registry is missing: `apt-get install docker-registry` (scripts/test does)",
        );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = sandbox.write(
        "registry.yml",
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            sandbox.dir.path().join("registry-data").display()
        ),
    );
    let child = std::process::Command::new(binary)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let address = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, address)
}

#[test]
fn a_bundle_round_trips_through_a_real_oci_registry_byte_for_byte() {
    let sandbox = Sandbox::new();
    let (_registry, address) = registry(&sandbox);
    let dir = echo_template(&sandbox, "1.0.0");
    plait_ok(
        &sandbox,
        &["bundle", "pack", dir.to_str().unwrap(), "-o", "echo.plait"],
    );
    plait_ok(&sandbox, &["key", "generate", "--name", "ci"]);
    plait_ok(&sandbox, &["bundle", "sign", "echo.plait", "--key", "ci"]);
    let reference = format!("{address}/plait/echo-bundle:1.0.0");
    let pushed = plait_ok(&sandbox, &["bundle", "push", "echo.plait", &reference]);
    let pinned = pushed.trim().to_owned();
    assert!(
        pinned.starts_with(&format!("{reference}@sha256:")),
        "{pinned}"
    );
    let original = std::fs::read(sandbox.dir.path().join("echo.plait")).unwrap();
    for (source, file) in [
        (reference.as_str(), "by-tag.plait"),
        (pinned.as_str(), "by-digest.plait"),
    ] {
        plait_ok(&sandbox, &["bundle", "pull", source, "-o", file]);
        assert_eq!(
            std::fs::read(sandbox.dir.path().join(file)).unwrap(),
            original,
            "{source} came back altered"
        );
    }
    // A digest the registry does not hold is not silently replaced.
    let wrong = format!("{address}/plait/echo-bundle@sha256:{}", "0".repeat(64));
    let output = sandbox.run(&["bundle", "pull", &wrong, "-o", "wrong.plait"]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("has no"), "{}", stderr(&output));
    assert!(!sandbox.dir.path().join("wrong.plait").exists());
    // Pulled, it installs as any bundle: its signature checked.
    refused(
        &sandbox,
        &["bundle", "install", "by-digest.plait"],
        &["not in the trust store"],
    );
    plait_ok(
        &sandbox,
        &["bundle", "install", "by-digest.plait", "--allow-untrusted"],
    );
    let ran = json(&sandbox.run(&["run", "echo-bundle", "--json"]));
    assert_eq!(ran["status"], "succeeded", "{ran}");
}

/// Bundles compiled ahead of time (`plait bundle compile`): the code for
/// this host is taken at install only from a trusted signed bundle; code
/// that does not fit (another target under this host's key, untrusted, or
/// altered) is never loaded, and a host with a compiler compiles instead.
/// (The edge build, which cannot compile, is run by `scripts/edge`.)
#[test]
fn compiled_code_is_taken_only_when_signed_trusted_and_made_for_this_engine() {
    let sandbox = Sandbox::new();
    let cache = sandbox.dir.path().join("own-cache");
    let run = |args: &[&str]| {
        sandbox
            .plait()
            .env("PLAIT_CACHE_DIR", &cache)
            .args(args)
            .output()
            .unwrap()
    };
    let host = plait::engine::HOST_TARGET;
    let other = if host.starts_with("aarch64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    };
    let template = echo_template(&sandbox, "0.1.0");
    plait_ok(
        &sandbox,
        &[
            "bundle",
            "pack",
            template.to_str().unwrap(),
            "-o",
            "echo.plait",
        ],
    );
    let public_key = plait_ok(&sandbox, &["key", "generate", "--name", "acme"]);
    let public_key = public_key.trim();

    // An unknown target is named.
    let bad = run(&[
        "bundle",
        "compile",
        "echo.plait",
        "--allow-unsigned",
        "--target",
        "vax-dec-ultrix",
    ]);
    assert_exit(&bad, 2);
    assert!(stderr(&bad).contains("vax-dec-ultrix"), "{}", stderr(&bad));

    // Compiled for this host and another target, and signed in one go.
    let compiled = run(&[
        "bundle",
        "compile",
        "echo.plait",
        "--allow-unsigned",
        "--target",
        host,
        "--target",
        other,
        "--key",
        "acme",
        "-o",
        "compiled.plait",
    ]);
    assert_exit(&compiled, 0);
    assert!(
        stderr(&compiled).contains(&format!("for `{other}`")),
        "{}",
        stderr(&compiled)
    );
    let inspected: Value = serde_json::from_str(&plait_ok(
        &sandbox,
        &["bundle", "inspect", "compiled.plait", "--json"],
    ))
    .unwrap();
    let entries = inspected["manifest"]["compiled"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let ours = entries
        .iter()
        .find(|entry| entry["target"] == host)
        .expect("code for this host");
    assert_eq!(ours["engine"], plait::engine::code_key(host, true));
    assert_eq!(ours["component"], "components/echo.wasm");
    let ours_path = ours["path"].as_str().unwrap().to_owned();

    // Not yet trusted: installed with `--allow-untrusted`, its code is not
    // taken, and the component is compiled here instead.
    let untrusted = run(&["bundle", "install", "compiled.plait", "--allow-untrusted"]);
    assert_exit(&untrusted, 0);
    assert!(
        stderr(&untrusted)
            .contains("taken only from a bundle signed by a publisher in the trust store"),
        "{}",
        stderr(&untrusted)
    );
    let cached_file = || -> Vec<u8> {
        let entry = std::fs::read_dir(&cache)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|e| e == "cwasm"))
            .expect("a cache entry");
        std::fs::read(entry).unwrap()
    };
    let bytes = std::fs::read(sandbox.dir.path().join("compiled.plait")).unwrap();
    let bundle = plait::bundle::open(
        &bytes,
        1 << 30,
        &plait::bundle::Trust {
            allow_untrusted: true,
            ..Default::default()
        },
    )
    .unwrap();
    let shipped = bundle.file(&ours_path).unwrap().to_vec();
    assert_ne!(cached_file(), shipped, "compiled here, not taken");
    plait_ok(&sandbox, &["bundle", "remove", "echo-bundle@0.1.0"]);
    std::fs::remove_dir_all(&cache).unwrap();

    // Trusted: the shipped code is what the engine runs.
    plait_ok(&sandbox, &["trust", "add", public_key, "--name", "acme"]);
    let installed = run(&["bundle", "install", "compiled.plait"]);
    assert_exit(&installed, 0);
    assert!(
        stderr(&installed).contains("took 1 components compiled ahead of time"),
        "{}",
        stderr(&installed)
    );
    assert_eq!(cached_file(), shipped, "the shipped code is in the cache");
    sandbox.write("input.json", r#"{"hello": "edge"}"#);
    let ran = run(&["run", "echo-bundle", "--input", "input.json", "--json"]);
    assert_exit(&ran, 0);
    assert_eq!(json(&ran)["output"]["hello"], "edge");
    // With the cache cleared, the next start takes it from the installed
    // bundle again.
    std::fs::remove_dir_all(&cache).unwrap();
    assert_exit(&run(&["run", "echo-bundle"]), 0);
    assert_eq!(cached_file(), shipped);
    plait_ok(&sandbox, &["bundle", "remove", "echo-bundle@0.1.0"]);
    std::fs::remove_dir_all(&cache).unwrap();

    // Signed and trusted, but the entry for this host holds the other
    // target's code: wasmtime refuses it, and the host compiles instead.
    let mut entries = plait::bundle::archive::read(&bytes, 1 << 30).unwrap();
    entries.retain(|(path, _)| path != "bundle.sig");
    let mut manifest = bundle.manifest.clone();
    let (a, b) = (
        manifest
            .compiled
            .iter()
            .position(|e| e.target == host)
            .unwrap(),
        manifest
            .compiled
            .iter()
            .position(|e| e.target == other)
            .unwrap(),
    );
    let theirs = manifest.compiled[b].clone();
    manifest.compiled[b].path = manifest.compiled[a].path.clone();
    manifest.compiled[b].digest = manifest.compiled[a].digest.clone();
    manifest.compiled[b].size = manifest.compiled[a].size;
    manifest.compiled[a].path = theirs.path;
    manifest.compiled[a].digest = theirs.digest;
    manifest.compiled[a].size = theirs.size;
    for (path, data) in &mut entries {
        if path == "bundle.toml" {
            *data = manifest.to_toml().into_bytes();
        }
    }
    std::fs::write(
        sandbox.dir.path().join("mislabeled.plait"),
        plait::bundle::archive::write(&entries).unwrap(),
    )
    .unwrap();
    plait_ok(
        &sandbox,
        &["bundle", "sign", "mislabeled.plait", "--key", "acme"],
    );
    let mislabeled = run(&["bundle", "install", "mislabeled.plait"]);
    assert_exit(&mislabeled, 0);
    assert!(
        stderr(&mislabeled).contains("compiled code in the bundle does not run here"),
        "{}",
        stderr(&mislabeled)
    );
    assert_ne!(cached_file(), shipped);
    assert_exit(&run(&["run", "echo-bundle"]), 0);

    // Altered code is refused before anything else, naming the file.
    altered(
        &sandbox.dir.path().join("compiled.plait"),
        &sandbox.dir.path().join("altered.plait"),
        &ours_path,
        |data| data[100] ^= 1,
    );
    refused(
        &sandbox,
        &["bundle", "verify", "altered.plait"],
        &[&ours_path, "altered"],
    );
}
