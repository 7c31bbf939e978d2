//! API bodies: a real `plait serve` sent random requests over raw TCP (so
//! that nothing in a client library tidies them): random JSON and
//! non-JSON bodies, multipart, lying `Content-Length`s, random
//! `Content-Type`, `Idempotency-Key` and `Authorization` headers, random
//! path segments, at the endpoints that take bodies. Every answer must be
//! a well-formed HTTP response below 500 (or the documented 503), every
//! problem must be JSON with its `title` and `status`, and afterwards the
//! server must still be healthy with nothing it stored lost.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use plait_test_artifacts::ECHO_COMPONENT;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use super::config;
use crate::server::Served;
use crate::support::*;

/// The request body cap the server runs with, small so that bodies past
/// it are cheap to send.
const MAX_BODY: usize = 256 << 10;

/// One request, as bytes on the wire.
#[derive(Clone)]
struct Request {
    method: &'static str,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// `Content-Length` minus the body's real length: a client that lies.
    length_lie: i64,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.body[..self.body.len().min(400)];
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target.chars().take(400).collect::<String>())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        let value: String =
                            String::from_utf8_lossy(value).chars().take(200).collect();
                        format!("{name}: {value}")
                    })
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("body", &String::from_utf8_lossy(shown))
            .field("length_lie", &self.length_lie)
            .finish()
    }
}

impl Request {
    fn bytes(&self, host: &str) -> Vec<u8> {
        let mut bytes = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n",
            self.method, self.target
        )
        .into_bytes();
        for (name, value) in &self.headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(b"\r\n");
        }
        let length = (self.body.len() as i64 + self.length_lie).max(0);
        bytes.extend_from_slice(format!("Content-Length: {length}\r\n\r\n").as_bytes());
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A response, parsed strictly.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Parses one HTTP/1.1 response; an error says what is malformed.
    fn parse(bytes: &[u8]) -> Result<Answer, String> {
        let end = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .ok_or("no end of headers")?;
        let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "headers not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().ok_or("no status line")?;
        let mut parts = status_line.splitn(3, ' ');
        if parts.next() != Some("HTTP/1.1") {
            return Err(format!("bad status line `{status_line}`"));
        }
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .filter(|code| (100..600).contains(code))
            .ok_or_else(|| format!("bad status in `{status_line}`"))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line `{line}`"))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad header name in `{line}`"));
            }
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        let rest = &bytes[end + 4..];
        answer.body = if answer
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            dechunk(rest)?
        } else if let Some(length) = answer.header("content-length") {
            let length: usize = length.parse().map_err(|_| "bad content-length")?;
            if rest.len() != length {
                return Err(format!(
                    "content-length {length}, body of {} bytes",
                    rest.len()
                ));
            }
            rest.to_vec()
        } else {
            rest.to_vec()
        };
        Ok(answer)
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("chunk size line never ends")?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| "chunk size not text")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err("a chunk is cut short".to_owned());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// What one exchange ended in.
enum Exchange {
    Answered(Answer),
    /// The server closed the connection while the body was still being
    /// sent, without a response the client could read.
    ResetWhileSending,
    /// The client stopped sending before the end of the body it declared,
    /// and the server closed the connection.
    GaveUp,
}

fn exchange(address: &str, request: &Request) -> Result<Exchange, String> {
    let mut stream = TcpStream::connect(address).map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let sent = stream.write_all(&request.bytes(address));
    if request.length_lie > 0 {
        // The body is shorter than its Content-Length: the client gives
        // up on it, and the server closes (it does not serve half-closed
        // connections) or answers.
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut bytes = Vec::new();
    let read = stream.read_to_end(&mut bytes);
    match (sent, read) {
        (_, Ok(_)) if !bytes.is_empty() => Answer::parse(&bytes).map(Exchange::Answered),
        (Err(_), _) => Ok(Exchange::ResetWhileSending),
        (Ok(()), Ok(_)) if request.length_lie > 0 => Ok(Exchange::GaveUp),
        (Ok(()), Ok(_)) => Err("the server closed the connection without a response".to_owned()),
        (Ok(()), Err(error)) => Err(format!("reading the response: {error}")),
    }
}

/// A `plait serve` on a free loopback port (the server tests' own
/// [`Served`]), killed when dropped, spoken to in raw HTTP.
struct Server {
    served: Served,
    address: String,
}

impl Server {
    fn start(sandbox: &Sandbox, policy: &std::path::Path) -> Server {
        let served = Served::start(sandbox, &["--policy", policy.to_str().unwrap()]);
        let address = served.address().to_owned();
        Server { served, address }
    }

    fn log(&self) -> String {
        self.served.log.lock().unwrap().join("\n")
    }

    /// A well-formed JSON request, answered.
    fn call(
        &self,
        method: &'static str,
        target: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut headers = vec![(
            "Authorization".to_owned(),
            format!("Bearer {token}").into_bytes(),
        )];
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), b"application/json".to_vec()));
        }
        let request = Request {
            method,
            target: target.to_owned(),
            headers,
            body: body
                .map(|body| body.to_string().into_bytes())
                .unwrap_or_default(),
            length_lie: 0,
        };
        match exchange(&self.address, &request) {
            Ok(Exchange::Answered(answer)) => (
                answer.status,
                serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
            ),
            Ok(Exchange::ResetWhileSending | Exchange::GaveUp) => {
                panic!("{target}: no answer\n{}", self.log())
            }
            Err(error) => panic!("{target}: {error}\n{}", self.log()),
        }
    }

    /// Polls run `id` until `done` says so.
    fn run_until(&self, id: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, run) = self.call("GET", &format!("/v1/runs/{id}"), token, None);
            if status == 200 && done(&run) {
                return run;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "run {id}: {status} {run}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the requests are made of: the token and the runs that exist.
struct Known {
    token: String,
    runs: Vec<String>,
}

/// A path segment: plain, percent-encoded bytes, dot segments, long.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._~-]{0,12}",
        2 => prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect()),
        2 => proptest::sample::select(
            &["..", "%2e%2e", "a%2Fb", "%00", "a%20b", "%", "%ZZ", "%C3%A9", "é", "a b", "{id}", "*"][..]
        )
        .prop_map(str::to_owned),
        1 => (1usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn query() -> impl Strategy<Value = String> {
    proptest::sample::select(
        &[
            "",
            "",
            "?wait=1ms",
            "?wait=abc",
            "?wait=",
            "?wait=-1s",
            "?wait=99999999999999999999s",
            "?x=%ZZ",
            "?wait=1ms&wait=2ms",
            "?&&=&",
        ][..],
    )
    .prop_map(str::to_owned)
}

fn target(known: &Known) -> impl Strategy<Value = String> {
    let run = prop_oneof![
        3 => proptest::sample::select(known.runs.clone()),
        1 => segment(),
    ];
    let workflow = prop_oneof![
        3 => proptest::sample::select(&["echo", "waits", "nope"][..]).prop_map(str::to_owned),
        1 => segment(),
    ];
    let step = prop_oneof![
        2 => proptest::sample::select(&["approve", "first"][..]).prop_map(str::to_owned),
        1 => segment(),
    ];
    prop_oneof![
        4 => (workflow, query()).prop_map(|(name, query)| format!("/v1/workflows/{name}/runs{query}")),
        2 => (run.clone(), step).prop_map(|(id, step)| format!("/v1/runs/{id}/signals/{step}")),
        1 => run.clone().prop_map(|id| format!("/v1/runs/{id}/cancel")),
        1 => run.prop_map(|id| format!("/v1/runs/{id}/retry")),
        1 => segment().prop_map(|name| format!("/v1/triggers/{name}")),
        1 => (segment(), segment()).prop_map(|(a, b)| format!("/{a}/{b}")),
    ]
}

/// JSON values for bodies, unicode and control characters included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        "[\u{0}-\u{1f}\u{202e}a-z]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    3 => proptest::sample::select(&["input", "text", "blobs", "webhook", "reason", "data", "name", "digest"][..])
                        .prop_map(str::to_owned),
                    1 => "\\PC{0,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Bodies: JSON that fits, JSON that does not, and what is not JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|input| json!({"input": input}).to_string().into_bytes()),
        1 => json_value().prop_map(|input| json!({"input": {"text": input}}).to_string().into_bytes()),
        2 => json_value().prop_map(|value| value.to_string().into_bytes()),
        1 => json_value().prop_map(|value| json!({"input": {}, "blobs": value}).to_string().into_bytes()),
        1 => json_value().prop_map(|value| json!({"input": {}, "webhook": value}).to_string().into_bytes()),
        1 => Just(br#"{"input": {"text": "a", "text": "b"}}"#.to_vec()),
        1 => Just(br#"{"input": {}, "input": {"text": "b"}}"#.to_vec()),
        1 => (1usize..100_000, proptest::sample::select(&["[", "{\"a\":"][..]))
            .prop_map(|(depth, open)| open.repeat(depth).into_bytes()),
        1 => (1usize..2_000_000).prop_map(|n| json!({"input": {"text": "x".repeat(n)}}).to_string().into_bytes()),
        1 => (json_value(), any::<prop::sample::Index>()).prop_map(|(value, at)| {
            let text = json!({"input": value}).to_string().into_bytes();
            let cut = at.index(text.len() + 1);
            text[..cut].to_vec()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => proptest::sample::select(&["", "   ", "\r\n", "null", "\u{feff}{}", "{\"input\": \"\u{0}\"}"][..])
            .prop_map(|text| text.as_bytes().to_vec()),
        1 => prop::collection::vec(("\\PC{0,8}", prop::collection::vec(any::<u8>(), 0..64), "[a-z/]{0,10}"), 0..3)
            .prop_map(|parts| multipart(&parts)),
    ]
}

const BOUNDARY: &str = "fuzzboundary";

fn multipart(parts: &[(String, Vec<u8>, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, data, media_type) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"../{name}\"\r\nContent-Type: {media_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(0x80u8..=0xff, 1..8),
        1 => (256usize..5000).prop_map(|n| "k".repeat(n).into_bytes()),
        1 => Just(b"a\x7fb".to_vec()),
    ]
}

fn headers(known: &Known) -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let bearer = format!("Bearer {}", known.token).into_bytes();
    let authorization = prop_oneof![
        8 => Just(Some(bearer)),
        1 => Just(None),
        1 => proptest::sample::select(&["Bearer plait_wrong", "Basic YTpi", "Bearer ", "bearer"][..])
            .prop_map(|value| Some(value.as_bytes().to_vec())),
        1 => header_value().prop_map(|value| Some([b"Bearer ".to_vec(), value].concat())),
    ];
    let content_type = prop_oneof![
        4 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        2 => proptest::sample::select(
            &[
                "text/plain",
                "application/json; charset=utf-16",
                "application/problem+json",
                "multipart/form-data; boundary=fuzzboundary",
                "multipart/form-data; boundary=other",
                "multipart/form-data",
                "",
                "application/x-www-form-urlencoded",
                ";;;",
            ][..]
        )
        .prop_map(|value| Some(value.as_bytes().to_vec())),
        1 => header_value().prop_map(Some),
    ];
    let idempotency_key = prop_oneof![
        4 => Just(None),
        2 => "[a-z0-9-]{1,12}".prop_map(|key| Some(key.into_bytes())),
        2 => header_value().prop_map(Some),
    ];
    let extra = prop::option::of((
        proptest::sample::select(
            &[
                "traceparent",
                "Last-Event-ID",
                "Content-Encoding",
                "Expect",
                "X-Forwarded-For",
                "Accept",
            ][..],
        ),
        header_value(),
    ));
    (authorization, content_type, idempotency_key, extra).prop_map(
        |(authorization, content_type, key, extra)| {
            let mut headers = Vec::new();
            if let Some(value) = authorization {
                headers.push(("Authorization".to_owned(), value));
            }
            if let Some(value) = content_type {
                headers.push(("Content-Type".to_owned(), value));
            }
            if let Some(value) = key {
                headers.push(("Idempotency-Key".to_owned(), value));
            }
            if let Some((name, value)) = extra {
                headers.push((name.to_owned(), value));
            }
            headers
        },
    )
}

fn request(known: &Known) -> impl Strategy<Value = Request> {
    (
        prop_oneof![8 => Just("POST"), 1 => Just("GET"), 1 => Just("PUT")],
        target(known),
        headers(known),
        body(),
        prop_oneof![8 => Just(0i64), 1 => 1i64..64, 1 => -64i64..0],
    )
        .prop_map(|(method, target, headers, body, length_lie)| Request {
            method,
            target,
            headers,
            body,
            length_lie,
        })
}

/// What must hold of one answer.
fn check(request: &Request, answer: &Answer) -> Result<(), TestCaseError> {
    let body = String::from_utf8_lossy(&answer.body);
    let refused_for_room =
        answer.status == 503 && (body.contains("queue-full") || body.contains("shutting-down"));
    prop_assert!(
        answer.status < 500 || refused_for_room,
        "{} for {:?}: {}",
        answer.status,
        request,
        body
    );
    let media_type = answer.header("content-type").unwrap_or("");
    if media_type.starts_with("application/problem+json") {
        let problem: Value = serde_json::from_slice(&answer.body).map_err(|error| {
            TestCaseError::fail(format!("a problem that is not JSON ({error}): {body}"))
        })?;
        prop_assert!(
            problem["title"]
                .as_str()
                .is_some_and(|title| !title.is_empty()),
            "no title: {}",
            body
        );
        prop_assert_eq!(
            problem["status"].as_u64(),
            Some(u64::from(answer.status)),
            "{}",
            body
        );
        prop_assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty()),
            "{}",
            body
        );
    } else if media_type.starts_with("application/json") {
        prop_assert!(
            serde_json::from_slice::<Value>(&answer.body).is_ok(),
            "JSON that does not parse: {}",
            body
        );
    }
    Ok(())
}

#[test]
fn random_requests_to_the_api_get_well_formed_answers_and_lose_nothing() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "workflows/echo.yaml",
        format!(
            "name: echo\ninput:\n  schema:\n    type: object\n    properties:\n      text: {{type: string}}\nsteps:\n  - id: say\n    uses: {}\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    sandbox.write(
        "workflows/waits.yaml",
        format!(
            "name: waits\nsteps:\n  - id: first\n    uses: {}\n  - id: approve\n    type: wait\n    needs: [first]\n",
            yaml_path(ECHO_COMPONENT)
        ),
    );
    let policy = sandbox.write(
        "plait.toml",
        format!(
            "[server]\nrate_limit = 100000\nmax_body = \"{}KiB\"\n",
            MAX_BODY >> 10
        ),
    );
    let created = sandbox.run(&["token", "create", "--name", "fuzzer", "--scope", "admin"]);
    assert_exit(&created, 0);
    let token = stdout(&created).trim().to_owned();
    let server = Server::start(&sandbox, &policy);

    // What is stored before: a finished run with its output, and a run
    // waiting for a signal (which the fuzzing may signal or cancel).
    let (status, kept) = server.call(
        "POST",
        "/v1/workflows/echo/runs?wait=60s",
        &token,
        Some(json!({"input": {"text": "kept"}})),
    );
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["output"], json!({"text": "kept"}));
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let (status, waiting) =
        server.call("POST", "/v1/workflows/waits/runs", &token, Some(json!({})));
    assert_eq!(status, 202, "{waiting}");
    let waiting_id = waiting["id"].as_str().unwrap().to_owned();
    server.run_until(&waiting_id, &token, |run| run["status"] == "waiting");

    let known = Known {
        token: token.clone(),
        runs: vec![kept_id.clone(), waiting_id],
    };
    let mut runner = TestRunner::new(config(150));
    let result = runner.run(&request(&known), |request| {
        match exchange(&server.address, &request) {
            Ok(Exchange::Answered(answer)) => check(&request, &answer),
            Ok(Exchange::ResetWhileSending) => {
                let declared = request.body.len() as i64 + request.length_lie;
                prop_assert!(
                    declared > MAX_BODY as i64,
                    "the connection was reset while sending {:?}",
                    request
                );
                Ok(())
            }
            Ok(Exchange::GaveUp) => Ok(()),
            Err(error) => Err(TestCaseError::fail(format!("{error} for {request:?}"))),
        }
    });
    if let Err(error) = result {
        panic!("{error}\nserver log:\n{}", server.log());
    }

    // The server lives, answers, and kept what it stored.
    let mut server = server;
    assert!(
        server.served.child.try_wait().unwrap().is_none(),
        "the server exited:\n{}",
        server.log()
    );
    let (status, health) = server.call("GET", "/healthz", &token, None);
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let (status, run) = server.call("GET", &format!("/v1/runs/{kept_id}"), &token, None);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], kept["output"]);
    let (status, steps) = server.call("GET", &format!("/v1/runs/{kept_id}/steps"), &token, None);
    assert_eq!(status, 200, "{steps}");
    assert_eq!(
        steps["steps"][0]["output"],
        json!({"text": "kept"}),
        "{steps}"
    );
}
