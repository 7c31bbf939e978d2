//! Test guest `hostile`: misbehaves on purpose, one attack per run, so the
//! host's integration tests can prove that the sandbox contains it.
//!
//! `describe` declares the required config `attack`, the optional config
//! `path`, `url`, `bytes`, `count` and `content`, the secret `api_token`,
//! the directory `/data`, and outbound HTTP to any host and port
//! (`http://*:*`, `https://*:*`), so a workflow can grant it anything.
//! Importing `wasi:http` for `http-get` makes the component import
//! `wasi:http/types` and `wasi:http/outgoing-handler` (WASI 0.2), so the
//! host must link those interfaces to instantiate it at all. `run` ignores
//! its input and does what config `attack` names:
//!
//! - `loop`: spins forever without returning or calling the host. The host
//!   must stop it with its step timeout, record the step as timed out, and
//!   keep running other work meanwhile.
//! - `memory`: allocates 1 MiB chunks forever, writing to every 4 KiB page
//!   of each and keeping them all alive. The host must cap the instance's
//!   memory: once `memory.grow` fails, the allocator reports the failure and
//!   Rust aborts (`memory allocation of ... failed` on stderr, then a trap).
//!   The host must record that trap without running out of memory itself.
//! - `recursion`: recurses without bound, and not in tail position, until
//!   the stack overflows: the engine's wasm stack, or Rust's shadow stack in
//!   linear memory, whichever runs out first; both trap. (The output it
//!   would return, `{"depth": n}`, would take 2^64 frames.) The host must
//!   record the trap and survive it.
//! - `giant-output`: returns `{"data": "xxx..."}` with config `bytes` `x`
//!   characters, 64 MiB when unset. The host must enforce its bound on the
//!   output document instead of buffering or persisting it without limit.
//! - `giant-blob`: returns `{}` and one blob `data` of config `bytes` bytes
//!   (all `x`, media type `application/octet-stream`), 64 MiB when unset.
//!   The host must enforce its bound on output blobs the same way.
//! - `log-flood`: calls the host's `log` at info level config `count` times
//!   (10 000 000 when unset), each with a 1 KiB message of `x`, then returns
//!   `{"logged": count}`. The host must keep a bounded number of records and
//!   drop and count the rest, without failing the step.
//! - `stdout-flood`: writes config `count` lines (10 000 000 when unset) of
//!   1 KiB each (1023 `x` and a newline) to stdout, stopping at the first
//!   write error, then returns `{"printed": n}` with the number of lines
//!   written before that. The host must keep a bounded amount of stdout.
//! - `read-file`: reads config `path` as UTF-8 text and returns
//!   `{"ok": true, "content": text}`.
//! - `write-file`: writes config `content` (`written` when unset) to config
//!   `path` and returns `{"ok": true}`.
//! - `list-dir`: lists config `path` and returns
//!   `{"ok": true, "entries": [names, sorted]}`.
//!
//!   For these three the host must answer with a permission-style error
//!   (see below) for any path outside the directories the workflow granted,
//!   `..` and symlinks out of them included.
//! - `tcp-connect`: connects a TCP socket to config `path`, read as
//!   `host:port`, and returns `{"ok": true}`. No grant opens a socket, so the
//!   host must always answer with a permission-style error: a refused
//!   connection would mean the sandbox let the socket through.
//! - `env`: returns `{"vars": [names, sorted]}` of its environment
//!   variables. The host must pass none of its own, and no secrets.
//! - `http-get`: sends `GET` config `url` (`scheme://host[:port]/path?query`)
//!   through `wasi:http/outgoing-handler` and returns
//!   `{"ok": true, "status": code, "body": text}`, the body cut to its first
//!   64 KiB and decoded as lossy UTF-8, or `{"ok": false, "error": text}`
//!   with the `Debug` form of the `wasi:http` error code, or a description
//!   of any other failure (such as an unparsable URL). The host must refuse
//!   a request to a destination the workflow did not grant, so that the
//!   output is `{"ok": false}` with an error code such as
//!   `HttpRequestDenied`.
//! - `leak`: increments a static counter and returns
//!   `{"invocations_before": n}`, its value before. The host must give each
//!   invocation a fresh instance, so `n` is always 0.
//! - `burn`: config `count` (10 000 000 when unset) rounds of xorshift,
//!   returned as `{"checksum": n}`: a CPU-bound step with no host calls, for
//!   measuring what epoch interruption and fuel metering cost.
//! - `echo-secret`: reads the secret `api_token` and leaks it through every
//!   channel it has: an info log record whose message is the secret and
//!   whose field `token` is the secret, a line on stdout and on stderr, the
//!   output `{"token": secret, "nested": {"list": ["prefix-<secret>-suffix"]}}`
//!   and a blob `token` (`text/plain`) holding the secret's bytes. When
//!   config `content` is `fail` it leaks through the log, stdout and stderr
//!   the same way but then returns a fatal error whose message and details
//!   (`{"token": secret}`) contain the secret, instead of the output. The
//!   host must redact the secret wherever it persists or shows any of
//!   these. A missing secret is a fatal error naming it.
//! - `terminal`: logs a message and a field holding ESC and OSC sequences
//!   (clear the screen, retitle the terminal), a bidi override, and a
//!   forged host line (`\r\n12:00:00.000  INFO plait::executor: run
//!   succeeded`), writes it to stderr, and returns `{"ok": true}`, or with
//!   config `content` `fail` a fatal error with that message. The host must
//!   never print any of it raw on a terminal. (Its description ends with an
//!   OSC sequence too, for `plait inspect`.)
//! - `blob-name`: returns `{}` and one blob `x` named config `path`
//!   (`../../etc/passwd` when unset) with media type config `content`
//!   (empty when unset). The HTTP API must not send that name or media type
//!   back as given.
//!
//! `read-file`, `write-file`, `list-dir` and `tcp-connect` never fail the
//! step for an I/O error: they return
//! `{"ok": false, "error": message, "kind": kind}` with the error's `Display`
//! and the `Debug` form of its [`std::io::ErrorKind`] (`list-dir` also for
//! the first entry it cannot read), and `http-get` returns its own
//! `{"ok": false}`. A missing `path` or `url`, an unparsable `bytes` or
//! `count`, and an unknown attack are fatal errors; the last one lists the
//! valid attacks.

use std::hint::black_box;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

use plait_sdk::{Blob, Context, Input, Level, Output, Step, StepError, StepInfo};
use serde_json::{Value, json};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// Every value config `attack` may take, in the order the crate
/// documentation describes them.
const ATTACKS: &[&str] = &[
    "loop",
    "memory",
    "recursion",
    "giant-output",
    "giant-blob",
    "log-flood",
    "stdout-flood",
    "read-file",
    "write-file",
    "list-dir",
    "tcp-connect",
    "env",
    "http-get",
    "echo-secret",
    "leak",
    "burn",
    "terminal",
    "blob-name",
];

/// What `terminal` writes: clears the screen, retitles the terminal, and
/// forges a host log line after a carriage return and a newline.
const TERMINAL_ATTACK: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}cleared\r\n12:00:00.000  INFO plait::executor: run succeeded";

/// One mebibyte.
const MIB: usize = 1024 * 1024;

/// Bytes between the writes that touch every page of a `memory` chunk: the
/// host's usual page size, which divides the 64 KiB wasm page.
const PAGE_BYTES: usize = 4096;

/// Size of `giant-output` and `giant-blob` when config `bytes` is unset.
const DEFAULT_BYTES: usize = 64 * MIB;

/// Records of `log-flood`, and lines of `stdout-flood`, when config `count`
/// is unset.
const DEFAULT_COUNT: u64 = 10_000_000;

/// Bytes per `log-flood` message, and per `stdout-flood` line with its
/// newline.
const LINE_BYTES: usize = 1024;

/// What `write-file` writes when config `content` is unset.
const DEFAULT_CONTENT: &str = "written";

/// The most bytes of a response body `http-get` returns.
const HTTP_BODY_LIMIT: usize = 64 * 1024;

/// The secret `echo-secret` leaks.
const SECRET: &str = "api_token";

/// The `hostile` step.
pub struct Hostile;

impl Step for Hostile {
    type Input = Value;
    type Output = Value;

    fn info() -> StepInfo {
        StepInfo::new("hostile", "0.1.0")
            .description(
                // The OSC sequence retitles a terminal that prints it raw.
                "Misbehaves on purpose, one attack per run, to prove the sandbox contains it.\u{1b}]0;hostile\u{7}",
            )
            .config(
                "attack",
                format!("Which attack to run: {}.", ATTACKS.join(", ")),
                true,
            )
            .config(
                "path",
                "The file or directory of `read-file`, `write-file` and `list-dir`, \
                 or the `host:port` of `tcp-connect`.",
                false,
            )
            .config("url", "The URL `http-get` requests.", false)
            .config(
                "bytes",
                "Size of `giant-output` and `giant-blob`, in bytes; 64 MiB when unset.",
                false,
            )
            .config(
                "count",
                "Records `log-flood` logs, or lines `stdout-flood` prints; \
                 10 000 000 when unset.",
                false,
            )
            .config(
                "content",
                "What `write-file` writes, `written` when unset; \
                 `fail` makes `echo-secret` fail with the secret in its error.",
                false,
            )
            .secret(SECRET)
            .directory("/data")
            .outbound_http("http://*:*")
            .outbound_http("https://*:*")
    }

    fn run(ctx: &Context, _input: Input<Value>) -> Result<Output<Value>, StepError> {
        let attack = ctx.require_config("attack")?;
        match attack.as_str() {
            "loop" => spin(),
            "memory" => exhaust_memory(),
            "recursion" => Ok(json!({"depth": recurse(0)}).into()),
            "giant-output" => {
                let bytes = bytes(ctx)?;
                Ok(json!({"data": "x".repeat(bytes)}).into())
            }
            "giant-blob" => {
                let data = vec![b'x'; bytes(ctx)?];
                let blob = Blob::new("data", "application/octet-stream", data);
                Ok(Output::new(json!({})).with_blob(blob))
            }
            "log-flood" => Ok(log_flood(ctx, count(ctx)?).into()),
            "stdout-flood" => Ok(stdout_flood(count(ctx)?).into()),
            "read-file" => Ok(read_file(&ctx.require_config("path")?).into()),
            "write-file" => {
                let content = ctx
                    .config("content")
                    .unwrap_or_else(|| DEFAULT_CONTENT.to_owned());
                Ok(write_file(&ctx.require_config("path")?, &content).into())
            }
            "list-dir" => Ok(list_dir(&ctx.require_config("path")?).into()),
            "tcp-connect" => Ok(tcp_connect(&ctx.require_config("path")?).into()),
            "env" => Ok(env().into()),
            "http-get" => Ok(http_get(&ctx.require_config("url")?).into()),
            "echo-secret" => echo_secret(ctx),
            "leak" => {
                let before = INVOCATIONS.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"invocations_before": before}).into())
            }
            "burn" => Ok(json!({"checksum": burn(count(ctx)?)}).into()),
            "terminal" => terminal(ctx),
            "blob-name" => {
                let name = ctx
                    .config("path")
                    .unwrap_or_else(|| "../../etc/passwd".to_owned());
                let media_type = ctx.config("content").unwrap_or_default();
                Ok(Output::new(json!({})).with_blob(Blob::new(name, media_type, b"x".to_vec())))
            }
            other => Err(unknown_attack(other)),
        }
    }
}

plait_sdk::export_step!(Hostile);

/// Invocations this instance has served: the `leak` attack. A host that
/// reused an instance (or its memory) across invocations would show a
/// count above zero.
static INVOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The `burn` workload: `rounds` of xorshift, folded into a checksum. Pure
/// computation with no host calls, for measuring what epoch interruption
/// and fuel metering cost a CPU-bound step.
fn burn(rounds: u64) -> u64 {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut checksum: u64 = 0;
    for _ in 0..rounds {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        checksum = checksum.wrapping_add(state.rotate_left((state & 31) as u32));
    }
    black_box(checksum)
}

/// The `loop` attack: spins forever without calling the host. The counter
/// goes through [`black_box`] so the loop cannot be optimized away.
fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// The `memory` attack: allocates 1 MiB chunks, touching every page of each
/// and keeping them all, until an allocation fails and Rust aborts.
fn exhaust_memory() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0_u8; MIB];
        // A zeroed allocation may never touch fresh pages; a write to each
        // one makes the host really back them.
        for byte in chunk.iter_mut().step_by(PAGE_BYTES) {
            *byte = 1;
        }
        chunks.push(black_box(chunk));
    }
}

/// The `recursion` attack: calls itself one level deeper until the stack
/// overflows, and never returns in practice.
///
/// The depth goes through [`black_box`] on the way down and the result on
/// the way up, so the compiler can neither prove the recursion endless nor
/// turn it into a loop; the addition after the call keeps it out of tail
/// position. The base case exists only so the function is not
/// unconditionally recursive: reaching it would take 2^64 frames.
fn recurse(depth: u64) -> u64 {
    let depth = black_box(depth);
    if depth == u64::MAX {
        return depth;
    }
    black_box(recurse(depth + 1)).wrapping_add(depth)
}

/// Config `bytes`, or [`DEFAULT_BYTES`].
fn bytes(ctx: &Context) -> Result<usize, StepError> {
    Ok(ctx.config_parsed("bytes")?.unwrap_or(DEFAULT_BYTES))
}

/// Config `count`, or [`DEFAULT_COUNT`].
fn count(ctx: &Context) -> Result<u64, StepError> {
    Ok(ctx.config_parsed("count")?.unwrap_or(DEFAULT_COUNT))
}

/// The `log-flood` attack: `count` info records of [`LINE_BYTES`] each.
fn log_flood(ctx: &Context, count: u64) -> Value {
    let message = "x".repeat(LINE_BYTES);
    for _ in 0..count {
        ctx.log(Level::Info, &message, &[]);
    }
    json!({"logged": count})
}

/// The `stdout-flood` attack: up to `count` lines of [`LINE_BYTES`] each,
/// stopping at the first write error.
fn stdout_flood(count: u64) -> Value {
    let line = "x".repeat(LINE_BYTES - 1);
    let mut stdout = std::io::stdout().lock();
    let mut printed: u64 = 0;
    while printed < count && writeln!(stdout, "{line}").is_ok() {
        printed += 1;
    }
    // A failed flush changes nothing: the lines counted were accepted.
    let _ = stdout.flush();
    json!({"printed": printed})
}

/// The `read-file` attack.
fn read_file(path: &str) -> Value {
    match std::fs::read_to_string(path) {
        Ok(content) => json!({"ok": true, "content": content}),
        Err(error) => io_failure(&error),
    }
}

/// The `write-file` attack.
fn write_file(path: &str, content: &str) -> Value {
    match std::fs::write(path, content) {
        Ok(()) => json!({"ok": true}),
        Err(error) => io_failure(&error),
    }
}

/// The `list-dir` attack.
fn list_dir(path: &str) -> Value {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) => return io_failure(&error),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name().to_string_lossy().into_owned()),
            Err(error) => return io_failure(&error),
        }
    }
    names.sort();
    json!({"ok": true, "entries": names})
}

/// The `tcp-connect` attack.
fn tcp_connect(address: &str) -> Value {
    match TcpStream::connect(address) {
        Ok(_stream) => json!({"ok": true}),
        Err(error) => io_failure(&error),
    }
}

/// The `env` attack. `vars_os` rather than `vars`, which panics on a
/// non-UTF-8 variable.
fn env() -> Value {
    let mut names: Vec<String> = std::env::vars_os()
        .map(|(name, _value)| name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    json!({"vars": names})
}

/// The output of a file or network attack that the sandbox refused.
fn io_failure(error: &std::io::Error) -> Value {
    json!({
        "ok": false,
        "error": error.to_string(),
        "kind": format!("{:?}", error.kind()),
    })
}

/// The `http-get` attack.
fn http_get(url: &str) -> Value {
    match fetch(url) {
        Ok((status, body)) => json!({"ok": true, "status": status, "body": body}),
        Err(error) => json!({"ok": false, "error": error}),
    }
}

/// A URL split into the parts `wasi:http` takes separately.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    /// `http`, `https` or another scheme.
    scheme: &'a str,
    /// `host` or `host:port`.
    authority: &'a str,
    /// The path and query, at least `/`.
    path_with_query: String,
}

/// Splits `scheme://host[:port][/path][?query][#fragment]`, dropping the
/// fragment, which is never sent.
fn parse_url(url: &str) -> Result<Url<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("invalid URL `{url}`: expected `scheme://host[:port]/path`"))?;
    let rest = rest
        .split_once('#')
        .map_or(rest, |(before, _fragment)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_with_query) = rest.split_at(end);
    if scheme.is_empty() || authority.is_empty() {
        return Err(format!(
            "invalid URL `{url}`: expected `scheme://host[:port]/path`"
        ));
    }
    let path_with_query = if path_with_query.starts_with('/') {
        path_with_query.to_owned()
    } else {
        format!("/{path_with_query}")
    };
    Ok(Url {
        scheme,
        authority,
        path_with_query,
    })
}

/// Sends `GET url` and returns the status and at most [`HTTP_BODY_LIMIT`]
/// bytes of the body, or a description of what failed.
fn fetch(url: &str) -> Result<(u16, String), String> {
    let url = parse_url(url)?;
    let scheme = match url.scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };

    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&Method::Get)
        .map_err(|()| "the host refused method GET".to_owned())?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| format!("the host refused scheme `{}`", url.scheme))?;
    request
        .set_authority(Some(url.authority))
        .map_err(|()| format!("the host refused authority `{}`", url.authority))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| format!("the host refused path `{}`", url.path_with_query))?;
    // A GET has an empty body, finished before the request is sent.
    let body = request
        .body()
        .map_err(|()| "the request body was already taken".to_owned())?;
    OutgoingBody::finish(body, None).map_err(|code| format!("{code:?}"))?;

    let future = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    // The pollable is a child of the future, so it is dropped before it.
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("{code:?}")),
        Some(Err(())) => return Err("the response was already taken".to_owned()),
        None => return Err("the response was not ready after blocking on it".to_owned()),
    };
    let status = response.status();

    // Children are dropped before their parents: the stream (declared last)
    // before the body, the body before the response.
    let body = response
        .consume()
        .map_err(|()| "the response body was already taken".to_owned())?;
    let stream = body
        .stream()
        .map_err(|()| "the response body stream was already taken".to_owned())?;
    let mut bytes = Vec::new();
    while bytes.len() < HTTP_BODY_LIMIT {
        let wanted = HTTP_BODY_LIMIT - bytes.len();
        match stream.blocking_read(wanted as u64) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(match wasi::http::types::http_error_code(&error) {
                    Some(code) => format!("{code:?}"),
                    None => error.to_debug_string(),
                });
            }
        }
    }
    // A reader asked for at most `wanted` bytes never gets more, but a host
    // that sends more must not make the body exceed the limit.
    bytes.truncate(HTTP_BODY_LIMIT);
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The `echo-secret` attack: leaks the secret through the log, stdout,
/// stderr, and the output or the error.
fn echo_secret(ctx: &Context) -> Result<Output<Value>, StepError> {
    let token = ctx.config(SECRET).ok_or_else(|| {
        StepError::fatal(format!(
            "missing secret `{SECRET}`: grant it to step `{}` in the workflow",
            ctx.invocation().step_id
        ))
        .with_details(json!({"missing_secret": SECRET}))
    })?;
    ctx.log(Level::Info, &token, &[("token", &token)]);
    // Ignored on purpose: a host may close or cap either stream.
    let _ = writeln!(std::io::stdout(), "{token}");
    let _ = writeln!(std::io::stderr(), "{token}");
    if ctx.config("content").as_deref() == Some("fail") {
        return Err(
            StepError::fatal(format!("echo-secret failed on purpose with token {token}"))
                .with_details(json!({"token": token})),
        );
    }
    let output = json!({
        "token": token,
        "nested": {"list": [format!("prefix-{token}-suffix")]},
    });
    Ok(Output::new(output).with_blob(Blob::new("token", "text/plain", token.into_bytes())))
}

/// The fatal error for an `attack` this guest does not know.
/// The `terminal` attack: [`TERMINAL_ATTACK`] as a log message, a log
/// field, a line on stderr, and (config `content` `fail`) a fatal error.
fn terminal(ctx: &Context) -> Result<Output<Value>, StepError> {
    ctx.log(Level::Info, TERMINAL_ATTACK, &[("note", TERMINAL_ATTACK)]);
    eprintln!("{TERMINAL_ATTACK}");
    if ctx.config("content").as_deref() == Some("fail") {
        return Err(StepError::fatal(TERMINAL_ATTACK));
    }
    Ok(json!({"ok": true}).into())
}

fn unknown_attack(attack: &str) -> StepError {
    let valid: Vec<String> = ATTACKS.iter().map(|name| format!("`{name}`")).collect();
    StepError::fatal(format!(
        "unknown attack `{attack}`: expected one of {}",
        valid.join(", ")
    ))
    .with_details(json!({"attack": attack, "valid": ATTACKS}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_url_splits_scheme_authority_and_path() {
        assert_eq!(
            parse_url("https://example.com:8443/a/b?c=d#frag").unwrap(),
            Url {
                scheme: "https",
                authority: "example.com:8443",
                path_with_query: "/a/b?c=d".to_owned(),
            }
        );
        assert_eq!(parse_url("http://127.0.0.1").unwrap().path_with_query, "/");
        assert_eq!(
            parse_url("http://host?q=1").unwrap().path_with_query,
            "/?q=1"
        );
        assert!(parse_url("example.com/path").is_err());
        assert!(parse_url("http:///path").is_err());
    }
}
