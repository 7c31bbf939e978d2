//! The host side of the expression workers: starting them, the frames
//! they speak, the deadline, and telling why one died.
//!
//! Frames are a little-endian `u32` length and that many bytes. A request
//! is a `u32` filter count, each filter as a length and its text, then the
//! context as JSON; a response is a `u32` count and, per filter, a tag
//! byte (0 a value, 1 an error), a length and JSON.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::worker::{MEMORY_LIMIT_MIB, STACK_MIB};
use crate::definition::{EVAL_DEADLINE, JqEvalError};

/// Set to `1` in a worker's environment: [`super::serve_worker_if_requested`]
/// then serves instead of returning.
pub const WORKER_ENV: &str = "PLAIT_EXPRESSION_WORKER";

/// The program to start as the expression worker, when the running program
/// cannot serve as its own (a test harness, an embedder that does not call
/// [`super::serve_worker_if_requested`]): the path of a `plait` binary.
pub const WORKER_PROGRAM_ENV: &str = "PLAIT_WORKER_PROGRAM";

/// The first frame a worker sends, so that a program that is not one is
/// told apart from a worker at once.
pub(super) const HELLO: &[u8] = b"plait-expression-worker/1";

/// The largest frame either side accepts: a context past this is refused
/// before it is sent.
pub(super) const MAX_FRAME: usize = 256 << 20;

static HOOKED: AtomicBool = AtomicBool::new(false);
static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
static POOL: OnceLock<Pool> = OnceLock::new();

/// Notes that this program serves as its own worker.
pub(super) fn mark_hooked() {
    HOOKED.store(true, Ordering::Relaxed);
}

/// Names the program to start as the expression worker (a `plait`
/// binary), for programs that cannot serve as their own; the first call
/// wins. Without it, [`WORKER_PROGRAM_ENV`] or the running program itself
/// (when it called [`super::serve_worker_if_requested`]) is used.
pub fn set_worker_program(path: impl Into<PathBuf>) {
    let _ = PROGRAM.set(path.into());
}

fn program() -> Result<PathBuf, String> {
    if std::env::var_os(WORKER_ENV).is_some() {
        return Err("a worker cannot start workers of its own".to_owned());
    }
    if let Some(path) = PROGRAM.get() {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os(WORKER_PROGRAM_ENV).filter(|path| !path.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if HOOKED.load(Ordering::Relaxed) {
        return std::env::current_exe()
            .map_err(|error| format!("the host cannot find its own program: {error}"));
    }
    Err(format!(
        "this program cannot start an expression worker; call `plait::expressions::serve_worker_if_requested()` first in `main`, or set {WORKER_PROGRAM_ENV} to the path of a `plait` binary"
    ))
}

/// Idle workers, and a bound on how many evaluate at once.
struct Pool {
    idle: Mutex<Vec<Worker>>,
    slots: tokio::sync::Semaphore,
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Pool {
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(cores.clamp(2, 8)),
        }
    })
}

/// The process, shared with whoever may have to kill it at the deadline.
type ChildSlot = Arc<Mutex<Option<Child>>>;

/// One running worker.
struct Worker {
    child: ChildSlot,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
}

impl Worker {
    /// Starts a worker, its process put in `slot`, and waits for its hello.
    fn start(slot: ChildSlot) -> Result<Worker, String> {
        let program = program()?;
        let mut child = Command::new(&program)
            .env_clear()
            .env(WORKER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                format!(
                    "the expression worker `{}` could not be started: {error}",
                    program.display()
                )
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        *slot.lock().expect("not poisoned") = Some(child);
        let mut worker = Worker {
            child: slot,
            stdin,
            stdout: BufReader::new(stdout),
            stderr,
        };
        match read_frame(&mut worker.stdout, HELLO.len()) {
            Ok(Some(hello)) if hello == HELLO => Ok(worker),
            _ => Err(format!(
                "`{}` did not answer as an expression worker; {WORKER_PROGRAM_ENV} must name a `plait` binary, and a program embedding Plait must call `plait::expressions::serve_worker_if_requested()` first in `main`",
                program.display()
            )),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<Vec<u8>> {
        write_frame(&mut self.stdin, request)?;
        self.stdin.flush()?;
        read_frame(&mut self.stdout, MAX_FRAME)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    /// After the worker stopped answering: waits for it and reads why.
    fn autopsy(mut self) -> Death {
        let status = self
            .child
            .lock()
            .expect("not poisoned")
            .take()
            .and_then(|mut child| child.wait().ok());
        let mut stderr = Vec::new();
        let _ = (&mut self.stderr).take(64 << 10).read_to_end(&mut stderr);
        let stderr = String::from_utf8_lossy(&stderr);
        if stderr.contains("has overflowed its stack") {
            Death::Stack
        } else if stderr.contains("memory allocation of") {
            Death::Memory
        } else {
            let how = status.map_or_else(|| "ended".to_owned(), |status| status.to_string());
            let said = stderr.lines().last().unwrap_or("").trim();
            Death::Other(if said.is_empty() {
                format!("the expression worker {how}")
            } else {
                format!("the expression worker {how}: {}", said.escape_debug())
            })
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

enum Death {
    Stack,
    Memory,
    Other(String),
}

/// Runs `filters` on `context` in a worker, one result per filter.
/// `label` names the evaluation when it fails as a whole.
pub(super) async fn evaluate(
    label: &str,
    filters: &[&str],
    context: &Value,
) -> Result<Vec<Result<Value, JqEvalError>>, JqEvalError> {
    let failed = |message: String| JqEvalError::Evaluator {
        filter: label.to_owned(),
        message,
    };
    let request = Request::encode(filters, context)?;
    if request.len() > MAX_FRAME {
        return Err(failed(format!(
            "the run context is {} MiB; expressions can read at most {} MiB",
            request.len() >> 20,
            MAX_FRAME >> 20
        )));
    }
    let pool = pool();
    let _permit = pool
        .slots
        .acquire()
        .await
        .map_err(|_| failed("the host is shutting down".to_owned()))?;
    let idle = pool.idle.lock().expect("not poisoned").pop();
    let slot = idle
        .as_ref()
        .map_or_else(ChildSlot::default, |worker| worker.child.clone());
    let task_slot = slot.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut worker = match idle {
            Some(worker) => worker,
            None => Worker::start(task_slot).map_err(Err)?,
        };
        match worker.exchange(&request) {
            Ok(response) => Ok((worker, response)),
            Err(_) => Err(Ok(worker.autopsy())),
        }
    });
    match tokio::time::timeout(EVAL_DEADLINE, task).await {
        Ok(Ok(Ok((worker, response)))) => {
            pool.idle.lock().expect("not poisoned").push(worker);
            Response::decode(&response, filters.len())
                .map_err(|error| failed(format!("the expression worker answered badly: {error}")))
        }
        Ok(Ok(Err(Ok(death)))) => Err(match death {
            Death::Stack => JqEvalError::Stack {
                filter: label.to_owned(),
                limit_mib: STACK_MIB,
            },
            Death::Memory => JqEvalError::Memory {
                filter: label.to_owned(),
                limit_mib: MEMORY_LIMIT_MIB,
            },
            Death::Other(message) => failed(message),
        }),
        Ok(Ok(Err(Err(message)))) => Err(failed(message)),
        Ok(Err(join)) => Err(failed(format!("the evaluation stopped: {join}"))),
        Err(_) => {
            // The blocking task sees its pipe close and drops the worker,
            // which reaps it.
            if let Some(child) = slot.lock().expect("not poisoned").as_mut() {
                let _ = child.kill();
            }
            Err(JqEvalError::Deadline {
                filter: label.to_owned(),
                limit: EVAL_DEADLINE,
            })
        }
    }
}

/// Writes one frame.
pub(super) fn write_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let length = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    out.write_all(&length.to_le_bytes())?;
    out.write_all(payload)
}

/// Reads one frame of at most `max` bytes; `None` at a clean end of input.
pub(super) fn read_frame(input: &mut impl BufRead, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    if input.fill_buf()?.is_empty() {
        return Ok(None);
    }
    input.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes is over the limit of {max}"),
        ));
    }
    let mut payload = vec![0; length];
    input.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// A request: filters and the context they all run on.
pub(super) struct Request;

impl Request {
    fn encode(filters: &[&str], context: &Value) -> Result<Vec<u8>, JqEvalError> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(filters.len() as u32).to_le_bytes());
        for filter in filters {
            bytes.extend_from_slice(&(filter.len() as u32).to_le_bytes());
            bytes.extend_from_slice(filter.as_bytes());
        }
        // The context goes as its leaves below `CONTEXT_LEVELS` levels,
        // each parsed on its own: a step output may nest as deep as the
        // JSON parser allows, and `.steps.ID.output` adds three levels
        // that a parse of the whole would count against the same limit.
        let mut leaves = Vec::new();
        context_leaves(context, &mut Vec::new(), &mut leaves);
        bytes.extend_from_slice(&(leaves.len() as u32).to_le_bytes());
        for (path, value) in leaves {
            for part in [
                serde_json::to_vec(&path).expect("strings serialize"),
                serde_json::to_vec(value).map_err(|error| JqEvalError::Evaluator {
                    filter: filters.first().copied().unwrap_or_default().to_owned(),
                    message: format!("the run context cannot be written as JSON: {error}"),
                })?,
            ] {
                bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
                bytes.extend_from_slice(&part);
            }
        }
        Ok(bytes)
    }

    /// The filters and the context's leaves (path and value, as JSON).
    pub(super) fn decode(bytes: &[u8]) -> io::Result<(Vec<&str>, Vec<Leaf<'_>>)> {
        let mut rest = bytes;
        let count = take_u32(&mut rest)?;
        let mut filters = Vec::new();
        for _ in 0..count {
            let length = take_u32(&mut rest)? as usize;
            let text = rest.get(..length).ok_or_else(short)?;
            filters.push(std::str::from_utf8(text).map_err(|_| bad("filter is not UTF-8"))?);
            rest = &rest[length..];
        }
        let count = take_u32(&mut rest)?;
        let mut leaves = Vec::new();
        for _ in 0..count {
            let path = take_bytes(&mut rest)?;
            let value = take_bytes(&mut rest)?;
            leaves.push((path, value));
        }
        Ok((filters, leaves))
    }
}

/// One leaf of a context as sent: its path and its value, both as JSON.
pub(super) type Leaf<'a> = (&'a [u8], &'a [u8]);

/// How many levels of objects at the top of a context are sent as
/// structure rather than as JSON text (`steps`, `ID`, `output`).
const CONTEXT_LEVELS: usize = 3;

fn context_leaves<'a>(
    value: &'a Value,
    path: &mut Vec<&'a str>,
    leaves: &mut Vec<(Vec<&'a str>, &'a Value)>,
) {
    match value {
        Value::Object(map) if path.len() < CONTEXT_LEVELS && !map.is_empty() => {
            for (key, value) in map {
                path.push(key);
                context_leaves(value, path, leaves);
                path.pop();
            }
        }
        _ => leaves.push((path.clone(), value)),
    }
}

/// Builds the context back from its leaves.
pub(super) fn context_from_leaves(leaves: &[Leaf<'_>]) -> Result<Value, String> {
    let mut context = Value::Null;
    for (path, value) in leaves {
        let path: Vec<String> = serde_json::from_slice(path).map_err(|error| error.to_string())?;
        let value: Value = serde_json::from_slice(value).map_err(|error| error.to_string())?;
        let mut at = &mut context;
        for key in path {
            if !at.is_object() {
                *at = Value::Object(serde_json::Map::new());
            }
            at = at
                .as_object_mut()
                .expect("an object")
                .entry(key)
                .or_insert(Value::Null);
        }
        *at = value;
    }
    Ok(context)
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> io::Result<&'a [u8]> {
    let length = take_u32(rest)? as usize;
    let bytes = rest.get(..length).ok_or_else(short)?;
    *rest = &rest[length..];
    Ok(bytes)
}

/// A response: one value (as JSON) or error per filter.
#[derive(Default)]
pub(super) struct Response {
    results: Vec<Result<String, JqEvalError>>,
}

impl Response {
    pub(super) fn push(&mut self, result: Result<String, JqEvalError>) {
        self.results.push(result);
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(self.results.len() as u32).to_le_bytes());
        for result in &self.results {
            let (tag, body) = match result {
                Ok(json) => (0u8, json.clone().into_bytes()),
                Err(error) => (1u8, serde_json::to_vec(error).expect("an error serializes")),
            };
            bytes.push(tag);
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    fn decode(bytes: &[u8], expected: usize) -> io::Result<Vec<Result<Value, JqEvalError>>> {
        let mut rest = bytes;
        let count = take_u32(&mut rest)? as usize;
        if count != expected {
            return Err(bad("wrong number of results"));
        }
        let mut results = Vec::with_capacity(count);
        for _ in 0..count {
            let (&tag, after) = rest.split_first().ok_or_else(short)?;
            rest = after;
            let length = take_u32(&mut rest)? as usize;
            let body = rest.get(..length).ok_or_else(short)?;
            rest = &rest[length..];
            results.push(match tag {
                0 => Ok(serde_json::from_slice(body).map_err(|error| bad(&error.to_string()))?),
                _ => Err(serde_json::from_slice(body).map_err(|error| bad(&error.to_string()))?),
            });
        }
        Ok(results)
    }
}

fn take_u32(rest: &mut &[u8]) -> io::Result<u32> {
    let (head, tail) = rest.split_at_checked(4).ok_or_else(short)?;
    *rest = tail;
    Ok(u32::from_le_bytes(head.try_into().expect("four bytes")))
}

fn short() -> io::Error {
    bad("frame ends early")
}

fn bad(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn a_context_holding_an_output_as_deep_as_the_parser_allows_travels_whole() {
        // serde_json reads at most 127 nested arrays or objects.
        assert!(serde_json::from_str::<Value>(&nested(128).to_string()).is_err());
        let deepest = serde_json::from_str::<Value>(&nested(127).to_string()).unwrap();
        let context = json!({"input": {"x": 1}, "steps": {"a": {"output": deepest, "error": null}}, "run": {}});
        let bytes = Request::encode(&[".input.x + 1"], &context).unwrap();
        let (filters, leaves) = Request::decode(&bytes).unwrap();
        assert_eq!(filters, [".input.x + 1"]);
        assert_eq!(context_from_leaves(&leaves).unwrap(), context);
    }
}
