//! Evaluating a definition's jq expressions without trusting them.
//!
//! A workflow's `if:`, `for_each:`, `input:` and `output:` expressions are
//! written by whoever wrote the definition, and their values can come from
//! a run's input. jq can recurse without end (`def f: [f]; f`), build a
//! value nested a million levels deep (`reduce`), or allocate gigabytes
//! (`[range(1e9)]`); in the host's own process the first two overflow a
//! stack, which aborts the process and every run in it, and none of them
//! can be stopped once started.
//!
//! So the host evaluates in-process only what cannot do any of that: a
//! plain path such as `.steps.ocr.output.text`, which reads and copies.
//! Every other filter runs in an **expression worker**: a child process
//! (the `plait` binary itself, see [`serve_worker_if_requested`]) with a
//! memory limit, a large stack of its own, and a deadline after which the
//! host kills it. A worker that overflows its stack, runs out of memory or
//! is killed takes only itself down; the step fails with the limit it hit
//! named ([`JqEvalError::Stack`], [`JqEvalError::Memory`],
//! [`JqEvalError::Deadline`]), and the next evaluation starts a fresh
//! worker. A run whose expression killed a worker fails the same way when
//! it is recovered, instead of taking the host down again.
//!
//! Workers are kept and reused (one per core, started on first use); a
//! round trip costs tens of microseconds, a worker start a few
//! milliseconds.

mod pool;
mod worker;

use serde_json::Value;

use crate::definition::{Jq, JqEvalError, Template, follow};

pub use pool::{WORKER_ENV, WORKER_PROGRAM_ENV, set_worker_program};
pub use worker::{MEMORY_LIMIT_MIB, STACK_MIB, serve_worker_if_requested};

/// Whether evaluating `jq` may go to an expression worker (anything but a
/// plain path): it may then take up to the worker's deadline, so the
/// scheduler makes what it holds durable before it starts one.
pub fn needs_worker(jq: &Jq) -> bool {
    jq.plain_path().is_none()
}

/// Whether one of `template`'s expressions needs a worker (see
/// [`needs_worker`]).
pub fn template_needs_worker(template: &Template) -> bool {
    template.expressions().into_iter().any(needs_worker)
}

/// Runs `jq` on `context`; it must produce exactly one value.
///
/// # Errors
/// What the filter did wrong, or the limit it crossed.
pub async fn run(jq: &Jq, context: Value) -> Result<Value, JqEvalError> {
    if let Some(value) = jq.plain_path().and_then(|path| follow(&context, path)) {
        return Ok(value.clone());
    }
    let mut values = pool::evaluate(jq.text(), &[jq.text()], &context).await?;
    values.pop().expect("one value per filter")
}

/// Computes `template` on `context`: each expression replaced by its one
/// value. `what` names the template in errors (`input`, `output`).
///
/// # Errors
/// The first expression, in file order, that fails.
pub async fn evaluate(
    what: &str,
    template: &Template,
    context: Value,
) -> Result<Value, JqEvalError> {
    let expressions = template.expressions();
    let mut values: Vec<Option<Value>> = expressions
        .iter()
        .map(|jq| {
            jq.plain_path()
                .and_then(|path| follow(&context, path))
                .cloned()
        })
        .collect();
    let remote: Vec<&str> = expressions
        .iter()
        .zip(&values)
        .filter(|(_, value)| value.is_none())
        .map(|(jq, _)| jq.text())
        .collect();
    if !remote.is_empty() {
        let label = match remote.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("{what} (one of its {} expressions)", many.len()),
        };
        let mut results = pool::evaluate(&label, &remote, &context).await?.into_iter();
        for slot in values.iter_mut().filter(|value| value.is_none()) {
            *slot = Some(results.next().expect("one value per filter")?);
        }
    }
    Ok(template.fill(&mut values.into_iter().map(|value| value.expect("filled"))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn plain_paths_need_no_worker() {
        // Lib tests have no worker program: a path must not ask for one.
        let jq = Jq::compile(".input.name").unwrap();
        let value = run(&jq, json!({"input": {"name": "x"}})).await.unwrap();
        assert_eq!(value, json!("x"));
    }
}
