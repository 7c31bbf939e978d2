//! The expression worker: the child process side.
//!
//! A loop on its own thread (with a [`STACK_MIB`] stack) that reads a
//! request frame from stdin, evaluates every filter in it on the request's
//! context, and writes one response frame to stdout. Its memory is capped
//! with `RLIMIT_DATA` at [`MEMORY_LIMIT_MIB`] (plus its stack), so that an
//! allocation past it fails and the process ends instead of the machine
//! swapping; the host reads why from the worker's stderr.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};

use jaq_json::Val;

use super::pool::{
    HELLO, MAX_FRAME, Request, Response, WORKER_ENV, context_from_leaves, mark_hooked, read_frame,
    write_frame,
};
use crate::definition::{Jq, JqEvalError};

/// The memory an expression evaluation may use, in MiB.
pub const MEMORY_LIMIT_MIB: u64 = 512;

/// The stack the worker evaluates on, in MiB. jaq recurses once per nested
/// call and per nesting level of the values it builds and drops; 64 MiB
/// holds filters far deeper than any definition needs.
pub const STACK_MIB: u64 = 64;

/// Compiled filters a worker keeps (compiling costs about 0.3 ms); past
/// this many it starts again from none.
const CACHE: usize = 512;

/// Call this first thing in `main` of a program that runs workflows.
///
/// In the program itself it only notes that the program can serve as its
/// own expression worker, and returns. In a child started as a worker (the
/// [`WORKER_ENV`] variable set) it serves requests until its stdin closes,
/// then exits the process: it never returns there.
pub fn serve_worker_if_requested() {
    mark_hooked();
    if std::env::var_os(WORKER_ENV).is_none_or(|value| value != "1") {
        return;
    }
    limit_memory();
    // A panic is answered as an error; printing it could fill the stderr
    // pipe nobody reads while the worker lives.
    std::panic::set_hook(Box::new(|_| {}));
    watch_parent();
    let served = std::thread::Builder::new()
        .name("plait-expression-worker".to_owned())
        .stack_size((STACK_MIB << 20) as usize)
        .spawn(serve)
        .map(|thread| thread.join());
    let code = match served {
        Ok(Ok(Ok(()))) => 0,
        Ok(Ok(Err(error))) => {
            eprintln!("plait expression worker: {error}");
            3
        }
        _ => 3,
    };
    std::process::exit(code);
}

/// Ends the worker when the host that started it is gone (killed while
/// the worker was busy, so that its stdin never closed): a filter looping
/// forever must not outlive the host.
fn watch_parent() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let _ = std::thread::Builder::new()
        .name("plait-worker-watch".to_owned())
        .stack_size(64 << 10)
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                // SAFETY: as above.
                if unsafe { libc::getppid() } != parent {
                    std::process::exit(4);
                }
            }
        });
}

/// Caps the data segment (heap and anonymous mappings, the evaluation
/// stack among them) at the memory limit plus the stack plus room for the
/// binary's own start-up allocations.
fn limit_memory() {
    let bytes = (MEMORY_LIMIT_MIB + STACK_MIB + 64) << 20;
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    let result = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    if result != 0 {
        eprintln!(
            "plait expression worker: could not limit its memory: {}",
            io::Error::last_os_error()
        );
    }
}

/// The request/response loop.
fn serve() -> io::Result<()> {
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    write_frame(&mut output, HELLO)?;
    output.flush()?;
    let mut compiled: HashMap<String, Jq> = HashMap::new();
    while let Some(frame) = read_frame(&mut input, MAX_FRAME)? {
        let (filters, leaves) = Request::decode(&frame)?;
        let context: Result<Val, String> = context_from_leaves(&leaves)
            .and_then(|context| serde_json::from_value(context).map_err(|error| error.to_string()));
        let mut response = Response::default();
        for text in filters {
            response.push(match &context {
                Ok(context) => evaluate(&mut compiled, text, context.clone()),
                Err(error) => Err(JqEvalError::Failed {
                    filter: text.to_owned(),
                    message: format!("the run context cannot be read: {error}"),
                }),
            });
        }
        write_frame(&mut output, &response.encode())?;
        output.flush()?;
    }
    Ok(())
}

fn evaluate(
    compiled: &mut HashMap<String, Jq>,
    text: &str,
    context: Val,
) -> Result<String, JqEvalError> {
    if !compiled.contains_key(text) {
        if compiled.len() >= CACHE {
            compiled.clear();
        }
        let jq = Jq::compile(text).map_err(|error| JqEvalError::Failed {
            filter: text.to_owned(),
            message: error.to_string(),
        })?;
        compiled.insert(text.to_owned(), jq);
    }
    let jq = &compiled[text];
    // A panic in jaq is a bug there, not a reason to lose the worker.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| jq.run_val(context))).unwrap_or_else(
        |_| {
            Err(JqEvalError::Evaluator {
                filter: text.to_owned(),
                message: "the jq implementation panicked on it".to_owned(),
            })
        },
    )
}
