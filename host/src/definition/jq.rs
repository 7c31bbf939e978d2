//! jq expressions, run by `jaq` (a maintained jq implementation in Rust).
//!
//! Every computed value in a definition is a jq filter applied to the run
//! context (`.input`, `.steps.ID.output`, `.run.id`, `.item`, ...): the
//! leaves of `input:` and `output:` written as `${ ... }`, and the whole of
//! `if:` and `for_each:`. A filter must produce exactly one value, so a
//! stray `[]` that would make many is an error that says so, not a silent
//! first pick.
//!
//! Definitions are trusted less than the host: the filters get jq's
//! standard library minus what reaches outside the run (`env`, `$ENV`,
//! `input`, `halt`, module imports, logging to the host's stderr), and
//! evaluation runs on its own thread with a deadline, so `def f: f; f`
//! fails the step instead of hanging the run.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;
use serde_json::Value;

use super::StepId;

/// How long one evaluation (all the expressions of one template) may take.
pub const EVAL_DEADLINE: Duration = Duration::from_secs(2);

/// The most values a `for_each:` may yield, and the longest array any
/// expression may return inside a template, so that a filter like
/// `[range(1e9)]` is an error rather than the host's memory.
pub const MAX_ITEMS: usize = 10_000;

/// Standard library filters a definition may not call: they read the host's
/// environment, stop the process, or write to the host's stderr.
const DENIED: [&str; 4] = ["env", "input", "inputs", "$ENV"];

/// A compiled jaq filter.
type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// A jq filter, compiled once when the definition is validated and shared
/// by every evaluation (compiling takes about 0.3 ms, mostly the standard
/// library; running a path takes microseconds). Compared by its text.
#[derive(Clone)]
pub struct Jq {
    text: String,
    steps: Vec<StepId>,
    filter: Arc<Filter>,
}

impl fmt::Debug for Jq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Jq").field(&self.text).finish()
    }
}

impl PartialEq for Jq {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Jq {}

impl std::hash::Hash for Jq {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

/// Why a filter does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JqError {
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is a likely fix.
    pub help: Option<String>,
}

/// Why a filter failed on a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JqEvalError {
    /// jq raised an error (`error("...")`, `1 + "a"`, ...).
    #[error("`{filter}` failed: {message}")]
    Failed {
        /// The filter.
        filter: String,
        /// jq's error.
        message: String,
    },
    /// The filter produced no value or several.
    #[error("`{filter}` produced {count} values, but exactly one is needed{help}")]
    NotOne {
        /// The filter.
        filter: String,
        /// How many it produced (capped).
        count: usize,
        /// A hint.
        help: &'static str,
    },
    /// Evaluation took longer than [`EVAL_DEADLINE`].
    #[error("`{filter}` did not finish within {limit:?}; a filter that loops forever cannot run")]
    Deadline {
        /// The filter.
        filter: String,
        /// The deadline.
        limit: Duration,
    },
    /// The result is too big.
    #[error("`{filter}` produced an array of more than {MAX_ITEMS} items")]
    TooLarge {
        /// The filter.
        filter: String,
    },
}

impl Jq {
    /// Compiles `text` to check it, and records the step ids it reads as
    /// `.steps.ID` or `.steps["ID"]`.
    ///
    /// # Errors
    /// A syntax error, an undefined filter or variable, or a denied filter.
    pub fn compile(text: &str) -> Result<Jq, JqError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(JqError {
                message: "the expression is empty".to_owned(),
                help: Some("write a jq filter, for example `.input`".to_owned()),
            });
        }
        let filter = compile(text)?;
        root_check(text)?;
        Ok(Jq {
            text: text.to_owned(),
            steps: step_references(text),
            filter: Arc::new(filter),
        })
    }

    /// The filter as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Step ids the filter names with `.steps.ID` or `.steps["ID"]`, sorted,
    /// each once. Only a static view: evaluation sees just the steps the
    /// context holds, which is what enforces the rule.
    pub fn steps(&self) -> &[StepId] {
        &self.steps
    }

    /// Runs the filter on `input` on the calling thread; it must produce
    /// exactly one value. Callers that cannot trust the filter to finish use
    /// [`evaluate_bounded`].
    ///
    /// # Errors
    /// See [`JqEvalError`].
    pub fn run(&self, input: &Value) -> Result<Value, JqEvalError> {
        let filter = &*self.filter;
        let values = (|| -> Result<Vec<String>, String> {
            let input: Val = serde_json::from_value(input.clone()).unwrap_or(Val::Null);
            let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
            let outputs = filter.id.run((ctx, input));
            let mut values = Vec::new();
            for output in outputs {
                match output {
                    Ok(value) => values.push(value.to_string()),
                    // Never `unwrap_valr`: on `halt` it exits the process.
                    Err(exn) => {
                        return Err(match exn.get_err() {
                            Ok(error) => error.to_string(),
                            Err(_) => "`halt` is not available in workflow expressions".to_owned(),
                        });
                    }
                }
                if values.len() > 1 {
                    break;
                }
            }
            Ok(values)
        })();
        let values = match values {
            Ok(values) => values,
            Err(message) => {
                return Err(JqEvalError::Failed {
                    filter: self.text.clone(),
                    message,
                });
            }
        };
        match values.as_slice() {
            [value] => {
                let value: Value = serde_json::from_str(value).unwrap_or(Value::Null);
                if too_large(&value) {
                    return Err(JqEvalError::TooLarge {
                        filter: self.text.clone(),
                    });
                }
                Ok(value)
            }
            [] => Err(JqEvalError::NotOne {
                filter: self.text.clone(),
                count: 0,
                help: " (it produced none: `empty`, a `select` that matched nothing, or `.[]` of an empty array; use `first(...)` with a default or `// null`)",
            }),
            _ => Err(JqEvalError::NotOne {
                filter: self.text.clone(),
                count: values.len(),
                help: " (it produced at least 2; collect them into an array with `[ ... ]`, or pick one with `first(...)`)",
            }),
        }
    }
}

/// Evaluates `work` (which runs filters) on a thread of its own, giving up
/// after [`EVAL_DEADLINE`]. A filter that loops forever keeps its thread
/// busy; the run goes on without it, and no async worker is blocked.
///
/// # Errors
/// [`JqEvalError::Deadline`] naming `what`, or whatever `work` returns.
pub async fn evaluate_bounded<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, JqEvalError> + Send + 'static,
) -> Result<T, JqEvalError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("plait-jq".to_owned())
        .spawn(move || {
            let _ = sender.send(work());
        });
    let failed = |message: &str| JqEvalError::Failed {
        filter: what.to_owned(),
        message: message.to_owned(),
    };
    if spawned.is_err() {
        return Err(failed("the host could not start a thread to evaluate it"));
    }
    match tokio::time::timeout(EVAL_DEADLINE, receiver).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(failed("the evaluation stopped unexpectedly")),
        Err(_) => Err(JqEvalError::Deadline {
            filter: what.to_owned(),
            limit: EVAL_DEADLINE,
        }),
    }
}

fn too_large(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.len() > MAX_ITEMS || items.iter().any(too_large),
        Value::Object(map) => map.len() > MAX_ITEMS || map.values().any(too_large),
        _ => false,
    }
}

/// Loads and compiles `text`.
fn compile(text: &str) -> Result<Filter, JqError> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    // `env` is dropped (nothing in the standard library needs it); the
    // natives the library's own definitions call (`halt`, `stderr_empty`,
    // `debug_empty`) are replaced by ones that raise an error, so that
    // `halt` cannot end the host process and nothing writes to its stderr.
    let funs = jaq_core::funs()
        .chain(jaq_std::funs().filter(|(name, _, _)| *name != "env").map(
            |(name, binds, native)| {
                if ["halt", "stderr_empty", "debug_empty"].contains(&name) {
                    (
                        name,
                        binds,
                        jaq_core::Native::<data::JustLut<Val>>::new(denied),
                    )
                } else {
                    (name, binds, native)
                }
            },
        ))
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let program = File {
        code: text,
        path: (),
    };
    let modules = loader
        .load(&arena, program)
        .map_err(|errors| load_error(text, errors))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| compile_error(text, errors))
}

/// Common jq builtins, for "did you mean" on an undefined filter.
const BUILTINS: [&str; 72] = [
    "length",
    "keys",
    "values",
    "map",
    "map_values",
    "select",
    "has",
    "in",
    "contains",
    "startswith",
    "endswith",
    "ascii_downcase",
    "ascii_upcase",
    "tostring",
    "tonumber",
    "type",
    "add",
    "any",
    "all",
    "first",
    "last",
    "sort",
    "sort_by",
    "group_by",
    "unique",
    "unique_by",
    "min",
    "max",
    "min_by",
    "max_by",
    "join",
    "split",
    "test",
    "match",
    "capture",
    "sub",
    "gsub",
    "not",
    "empty",
    "error",
    "range",
    "floor",
    "ceil",
    "round",
    "sqrt",
    "to_entries",
    "from_entries",
    "with_entries",
    "paths",
    "flatten",
    "reverse",
    "ltrimstr",
    "rtrimstr",
    "trim",
    "tojson",
    "fromjson",
    "todate",
    "fromdate",
    "del",
    "getpath",
    "limit",
    "until",
    "recurse",
    "indices",
    "index",
    "objects",
    "arrays",
    "strings",
    "numbers",
    "isempty",
    "splits",
    "abs",
];

/// The keys of the run context; a filter that starts with `.other`
/// always yields `null`, which is a typo rather than an intent.
pub const ROOTS: [&str; 6] = ["input", "steps", "run", "item", "index", "error"];

/// Checks the root of a filter that starts with a plain `.key`.
fn root_check(text: &str) -> Result<(), JqError> {
    let Some(rest) = text.strip_prefix('.') else {
        return Ok(());
    };
    let key: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if key.is_empty() || ROOTS.contains(&key.as_str()) {
        return Ok(());
    }
    let suggestion = super::error::closest(&key, ROOTS.iter().copied())
        .map(|root| format!("did you mean `.{root}`? "))
        .unwrap_or_default();
    Err(JqError {
        message: format!(
            "unknown root `.{key}`: the run context has no `{key}`, so this is always null"
        ),
        help: Some(format!(
            "{suggestion}the context holds `.input`, `.steps.ID`, `.run`, and `.item`/`.index` in a `for_each` step, `.error` in a fallback"
        )),
    })
}

/// The native behind a filter workflow expressions may not call.
fn denied<'a>(_: jaq_core::Cv<'a, data::JustLut<Val>>) -> jaq_core::ValXs<'a, Val> {
    jaq_core::box_iter::box_once(Err(jaq_core::Exn::from(jaq_core::Error::str(
        "this filter is not available in workflow expressions",
    ))))
}

/// Where `part` (a slice of `text`) starts in `text`, as a column hint.
fn at(text: &str, part: &str) -> String {
    let start = part.as_ptr() as usize;
    let base = text.as_ptr() as usize;
    if start >= base && start <= base + text.len() {
        let offset = start - base;
        if offset >= text.len() {
            "at the end".to_owned()
        } else {
            let rest: String = text[offset..].chars().take(12).collect();
            format!("at `{rest}`")
        }
    } else {
        format!("near `{part}`")
    }
}

fn load_error(text: &str, errors: jaq_core::load::Errors<&str, ()>) -> JqError {
    use jaq_core::load::Error;
    let mut messages = Vec::new();
    for (_, error) in errors {
        match error {
            Error::Io(items) => {
                for (path, _) in items {
                    messages.push(format!(
                        "cannot import `{path}`: modules are not available in workflow expressions"
                    ));
                }
            }
            Error::Lex(items) => {
                for (expect, found) in items {
                    messages.push(format!("expected {} {}", expect.as_str(), at(text, found)));
                }
            }
            Error::Parse(items) => {
                for (expect, found) in items {
                    messages.push(format!("expected {} {}", expect.as_str(), at(text, found)));
                }
            }
        }
    }
    JqError {
        message: format!("not a valid jq filter: {}", messages.join("; ")),
        help: Some(
            "expressions are jq (https://jqlang.org/manual/): paths such as `.input.name` or `.steps.ocr.output.text`, comparisons such as `.steps.kind.output.confidence < 0.8`".to_owned(),
        ),
    }
}

fn compile_error(text: &str, errors: jaq_core::compile::Errors<&str, ()>) -> JqError {
    use jaq_core::compile::Undefined;
    let mut messages = Vec::new();
    let mut help = None;
    for (_, items) in errors {
        for (name, undefined) in items {
            if DENIED.contains(&name) {
                messages.push(format!("`{name}` is not available in workflow expressions"));
                help = Some(if name == "input" && text.starts_with("input") {
                    format!("did you mean `.{text}`? paths into the run context start with a dot")
                } else {
                    "workflow expressions read only the run: `.input`, `.steps`, `.run`".to_owned()
                });
                continue;
            }
            if help.is_none()
                && let Some(known) = super::error::closest(name, BUILTINS.iter().copied())
            {
                help = Some(format!("did you mean `{known}`?"));
            }
            let what = match undefined {
                Undefined::Var => format!("undefined variable `${name}`"),
                Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                other => format!("undefined {} `{name}`", other.as_str()),
            };
            messages.push(what);
            // `.steps.read-file` parses as `.steps.read - file`.
            if help.is_none()
                && let Some(id) = dashed_step(text, name)
            {
                help = Some(format!(
                    "a step id with `-` must be quoted in jq: `.steps[\"{id}\"]`"
                ));
            }
        }
    }
    JqError {
        message: format!("not a valid jq filter: {}", messages.join("; ")),
        help,
    }
}

/// The dashed step id `.steps.a-NAME` in `text`, if there is one ending in
/// the undefined filter `name`.
fn dashed_step(text: &str, name: &str) -> Option<String> {
    let mut rest = text;
    while let Some(found) = rest.find(".steps.") {
        let after = &rest[found + ".steps.".len()..];
        let id: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if id.contains('-') && id.ends_with(name) {
            return Some(id);
        }
        rest = after;
    }
    None
}

/// Step ids read as `.steps.ID` or `.steps["ID"]` (also `.steps."ID"` and
/// `.steps | .ID` are not seen: the context enforces the rule anyway).
fn step_references(text: &str) -> Vec<StepId> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(found) = rest.find(".steps") {
        let after = &rest[found + ".steps".len()..];
        let after_trim = after.trim_start();
        let id = if let Some(plain) = after_trim.strip_prefix('.') {
            let plain = plain.strip_prefix('"').unwrap_or(plain);
            plain
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        } else if let Some(quoted) = after_trim.strip_prefix('[') {
            let quoted = quoted.trim_start();
            match quoted.strip_prefix('"') {
                Some(inner) => inner.chars().take_while(|c| *c != '"').collect(),
                None => String::new(),
            }
        } else {
            String::new()
        };
        if let Ok(id) = StepId::new(&id) {
            ids.push(id);
        }
        rest = after;
    }
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(filter: &str, input: Value) -> Result<Value, JqEvalError> {
        Jq::compile(filter).unwrap().run(&input)
    }

    #[test]
    fn runs_jq() {
        let context = json!({"input": {"n": 2, "names": ["a", "b"]}, "steps": {"kind": {"output": {"confidence": 0.5}}}});
        assert_eq!(run(".input.n * 3", context.clone()), Ok(json!(6)));
        assert_eq!(
            run(".steps.kind.output.confidence < 0.8", context.clone()),
            Ok(json!(true))
        );
        assert_eq!(
            run("[.input.names[] | ascii_upcase]", context.clone()),
            Ok(json!(["A", "B"]))
        );
        assert_eq!(run(".input.missing", context.clone()), Ok(Value::Null));
        assert_eq!(
            run("{a: .input.n, b: (.input.names | length)}", context),
            Ok(json!({"a": 2, "b": 2}))
        );
    }

    #[test]
    fn exactly_one_value() {
        let error = run(".[]", json!([1, 2])).unwrap_err();
        assert!(
            error.to_string().contains("collect them into an array"),
            "{error}"
        );
        let error = run("empty", json!(1)).unwrap_err();
        assert!(error.to_string().contains("produced 0 values"), "{error}");
        let error = run("error(\"boom\")", json!(1)).unwrap_err();
        assert!(error.to_string().contains("boom"), "{error}");
        assert!(matches!(
            run("[range(20000)]", json!(1)),
            Err(JqEvalError::TooLarge { .. })
        ));
    }

    #[test]
    fn reports_syntax_and_denied_filters() {
        let error = Jq::compile(".input |").unwrap_err();
        assert!(
            error.message.starts_with("not a valid jq filter"),
            "{error}"
        );
        for denied in ["env", "$ENV", "input", "import \"x\" as x; ."] {
            assert!(Jq::compile(denied).is_err(), "{denied} compiled");
        }
        for denied in ["halt", "halt_error", "debug", "stderr"] {
            let error = run(denied, json!(1)).unwrap_err();
            assert!(
                error.to_string().contains("not available"),
                "{denied}: {error}"
            );
        }
        let error = Jq::compile(".steps.read-file.output").unwrap_err();
        assert_eq!(
            error.help.as_deref(),
            Some("a step id with `-` must be quoted in jq: `.steps[\"read-file\"]`")
        );
    }

    #[test]
    fn finds_step_references() {
        let jq = Jq::compile(
            r#".steps.ocr.output.text + .steps["kind"].output.label + (.steps.ocr | tostring)"#,
        )
        .unwrap();
        let ids: Vec<&str> = jq.steps().iter().map(StepId::as_str).collect();
        assert_eq!(ids, ["kind", "ocr"]);
    }

    #[tokio::test]
    async fn bounded_evaluation_gives_up_on_endless_filters() {
        let jq = Jq::compile("last(repeat(1))").unwrap();
        let error = evaluate_bounded("last(repeat(1))", move || jq.run(&Value::Null))
            .await
            .unwrap_err();
        assert!(matches!(error, JqEvalError::Deadline { .. }), "{error}");
    }
}
