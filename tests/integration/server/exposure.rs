//! What the server lets through and sends back: loopback open mode ends
//! the moment a token exists, and a blob's name and media type are never
//! sent back as a step gave them.

use std::time::Duration;

use plait_test_artifacts::HOSTILE_COMPONENT;
use serde_json::json;

use super::{Served, standard_workflows, write_workflow};
use crate::support::*;

#[test]
fn a_token_created_while_serving_closes_loopback_mode() {
    let sandbox = Sandbox::new();
    standard_workflows(&sandbox);
    let server = Served::start(&sandbox, &[]);
    // Open: loopback, no tokens.
    let started = server.post("/v1/workflows/echo/runs", None, &[], Some(json!({})));
    assert_eq!(started.status, 202, "{}", started.text);
    assert_eq!(server.get("/v1/runs", None).status, 200);
    assert_eq!(server.get("/metrics", None).status, 200);

    // A token made by another process while the server runs.
    let output = sandbox.run(&["token", "create", "--name", "ops", "--scope", "admin"]);
    assert_exit(&output, 0);
    let token = stdout(&output).trim().to_owned();
    server
        .post("/v1/workflows/echo/runs", None, &[], Some(json!({})))
        .assert_problem(401, "unauthorized");
    server
        .get("/v1/runs", None)
        .assert_problem(401, "unauthorized");
    server
        .get("/metrics", None)
        .assert_problem(401, "unauthorized");
    assert_eq!(server.get("/v1/runs", Some(&token)).status, 200);
    let started = server.post(
        "/v1/workflows/echo/runs",
        Some(&token),
        &[],
        Some(json!({})),
    );
    assert_eq!(started.status, 202, "{}", started.text);

    // A second token, then the first revoked: it stops working, and the
    // server stays closed while any token exists.
    let output = sandbox.run(&[
        "token",
        "create",
        "--name",
        "reader",
        "--scope",
        "runs:read",
    ]);
    assert_exit(&output, 0);
    let reader = stdout(&output).trim().to_owned();
    assert_exit(&sandbox.run(&["token", "revoke", "ops"]), 0);
    std::thread::sleep(Duration::from_millis(20));
    server
        .get("/v1/runs", Some(&token))
        .assert_problem(401, "unauthorized");
    server
        .get("/v1/runs", None)
        .assert_problem(401, "unauthorized");
    assert_eq!(server.get("/v1/runs", Some(&reader)).status, 200);
}

#[test]
fn a_blob_name_is_sanitized_in_content_disposition_and_an_empty_media_type_is_octet_stream() {
    let sandbox = Sandbox::new();
    for (file, name, media_type) in [
        ("traversal.yaml", "../../etc/passwd", ""),
        (
            "bidi.yaml",
            "invoice\u{202e}fdp.exe\"\r\nx: y",
            "text/plain\r\nx-injected: 1",
        ),
        (
            "unicode.yaml",
            "C:\\Users\\me\\Résumé 2026.pdf",
            "application/pdf",
        ),
    ] {
        write_workflow(
            &sandbox,
            file,
            &format!(
                "name: {}\nsteps:\n  - id: out\n    uses: {}\n    config:\n      attack: blob-name\n      path: {}\n      content: {}\n",
                file.trim_end_matches(".yaml"),
                yaml_path(HOSTILE_COMPONENT),
                serde_json::to_string(name).unwrap(),
                serde_json::to_string(media_type).unwrap(),
            ),
        );
    }
    let server = Served::start(&sandbox, &[]);
    for (workflow, ascii, encoded, content_type) in [
        ("traversal", "passwd", "passwd", "application/octet-stream"),
        (
            "bidi",
            "invoicefdp.exex: y",
            "invoicefdp.exe%22x%3A%20y",
            "application/octet-stream",
        ),
        (
            "unicode",
            "Rsum 2026.pdf",
            "R%C3%A9sum%C3%A9%202026.pdf",
            "application/pdf",
        ),
    ] {
        let run = server.post(
            &format!("/v1/workflows/{workflow}/runs?wait=60s"),
            None,
            &[],
            Some(json!({})),
        );
        assert_eq!(run.status, 200, "{}", run.text);
        assert_eq!(run.json["status"], "succeeded", "{}", run.text);
        let blob = &run.json["output_blobs"][0];
        let url = blob["url"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", run.text));
        let download = server.get(url, None);
        assert_eq!(download.status, 200, "{}", download.text);
        assert_eq!(download.text, "x");
        assert_eq!(
            download.header("content-type"),
            Some(content_type),
            "{workflow}"
        );
        let disposition = download.header("content-disposition").unwrap();
        assert_eq!(
            disposition,
            format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"),
            "{workflow}"
        );
        assert!(download.header("x-injected").is_none());
    }
}
