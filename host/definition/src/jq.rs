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

/// The deepest nesting of arrays and objects an expression may return,
/// the same as the JSON parser's limit for every document Plait reads
/// (serde_json reads 127 levels).
pub const MAX_DEPTH: usize = 127;

/// The largest result, as JSON, one expression may return.
pub const MAX_RESULT_BYTES: usize = 16 << 20;

/// The longest expression text: a filter is a line of a definition, not a
/// program; the parser would otherwise recurse as deep as the text nests.
pub const MAX_TEXT: usize = 16 << 10;

/// The deepest nesting of brackets, parentheses and braces in a filter's
/// text. jaq's parser is recursive, and a text of a hundred thousand `(`
/// would overflow the host's stack while the definition is validated.
pub const MAX_TEXT_NESTING: usize = 64;

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
    path: Option<Arc<[PathPart]>>,
}

/// One step of a plain path such as `.steps["ocr"].output.text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    /// `.key` or `["key"]`.
    Key(String),
    /// `[n]`, n not negative.
    Index(usize),
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
///
/// Serializable because filters that are more than a plain path run in a
/// worker process (see `plait::expressions`), which sends these back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
        help: String,
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
    #[error("`{filter}` produced an array or object of more than {MAX_ITEMS} items")]
    TooLarge {
        /// The filter.
        filter: String,
    },
    /// The result, written as JSON, is larger than [`MAX_RESULT_BYTES`].
    #[error(
        "`{filter}` produced {bytes} bytes of JSON; the limit is {MAX_RESULT_BYTES} bytes (16 MiB)"
    )]
    TooBig {
        /// The filter.
        filter: String,
        /// The size of its result.
        bytes: usize,
    },
    /// The result nests arrays and objects deeper than [`MAX_DEPTH`].
    #[error(
        "`{filter}` produced a value nested more than {MAX_DEPTH} levels deep; the limit is {MAX_DEPTH}"
    )]
    TooDeep {
        /// The filter.
        filter: String,
    },
    /// Evaluation needed more memory than the expression evaluator has.
    #[error(
        "`{filter}` needed more than {limit_mib} MiB of memory, the limit for expressions; a filter that builds a huge value (such as `[range(1e9)]`) cannot run"
    )]
    Memory {
        /// The filter.
        filter: String,
        /// The limit, in MiB.
        limit_mib: u64,
    },
    /// Evaluation recursed (or walked a value nested) too deeply for the
    /// evaluator's stack.
    #[error(
        "`{filter}` recursed too deeply: it used the whole {limit_mib} MiB stack of the expression evaluator (a recursive `def` without a base case, or a value nested thousands of levels deep)"
    )]
    Stack {
        /// The filter.
        filter: String,
        /// The stack size, in MiB.
        limit_mib: u64,
    },
    /// The evaluator could not be run at all (the host's fault, not the
    /// filter's).
    #[error("`{filter}` could not be evaluated: {message}")]
    Evaluator {
        /// The filter.
        filter: String,
        /// What went wrong.
        message: String,
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
        text_check(text)?;
        let filter = compile(text)?;
        root_check(text)?;
        Ok(Jq {
            text: text.to_owned(),
            steps: step_references(text),
            filter: Arc::new(filter),
            path: plain_path(text).map(Arc::from),
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

    /// The filter as a plain path (`.input.name`, `.steps["ocr"].output`,
    /// `.items[0]`), when it is nothing more. Such a filter cannot loop,
    /// recurse or allocate more than it reads, so the host evaluates it
    /// itself; everything else runs in the expression worker.
    pub fn plain_path(&self) -> Option<&[PathPart]> {
        self.path.as_deref()
    }

    /// Runs the filter on `input` on the calling thread; it must produce
    /// exactly one value. Only for filters the caller trusts (tests, the
    /// expression worker): a hostile filter can exhaust this thread's stack
    /// or the memory. The executor goes through `plait::expressions`.
    ///
    /// # Errors
    /// See [`JqEvalError`].
    pub fn run(&self, input: &Value) -> Result<Value, JqEvalError> {
        let input: Val = serde_json::from_value(input.clone()).unwrap_or(Val::Null);
        let json = self.run_val(input)?;
        serde_json::from_str(&json).map_err(|error| JqEvalError::Evaluator {
            filter: self.text.clone(),
            message: format!("its result is not JSON the host can read: {error}"),
        })
    }

    /// Runs the filter on a jaq value and returns its one result written as
    /// JSON, after checking it against [`MAX_ITEMS`], [`MAX_DEPTH`] and
    /// [`MAX_RESULT_BYTES`].
    ///
    /// # Errors
    /// See [`JqEvalError`].
    pub fn run_val(&self, input: Val) -> Result<String, JqEvalError> {
        let filter = &*self.filter;
        let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
        let mut values = Vec::new();
        for output in filter.id.run((ctx, input)) {
            match output {
                Ok(value) => values.push(value),
                // Never `unwrap_valr`: on `halt` it exits the process.
                Err(exn) => {
                    return Err(JqEvalError::Failed {
                        filter: self.text.clone(),
                        message: match exn.get_err() {
                            Ok(error) => error.to_string(),
                            Err(_) => "`halt` is not available in workflow expressions".to_owned(),
                        },
                    });
                }
            }
            if values.len() > 1 {
                break;
            }
        }
        let value = match values.len() {
            1 => values.pop().expect("one value"),
            0 => return Err(JqEvalError::NotOne {
                filter: self.text.clone(),
                count: 0,
                help: " (it produced none: `empty`, a `select` that matched nothing, or `.[]` of an empty array; use `first(...)` with a default or `// null`)".to_owned(),
            }),
            count => return Err(JqEvalError::NotOne {
                filter: self.text.clone(),
                count,
                help: " (it produced at least 2; collect them into an array with `[ ... ]`, or pick one with `first(...)`)".to_owned(),
            }),
        };
        match shape(&value) {
            Shape::Fits => {}
            Shape::TooDeep => {
                return Err(JqEvalError::TooDeep {
                    filter: self.text.clone(),
                });
            }
            Shape::TooLarge => {
                return Err(JqEvalError::TooLarge {
                    filter: self.text.clone(),
                });
            }
        }
        let json = value.to_string();
        if json.len() > MAX_RESULT_BYTES {
            return Err(JqEvalError::TooBig {
                filter: self.text.clone(),
                bytes: json.len(),
            });
        }
        Ok(json)
    }
}

/// Whether a result fits the limits on items and depth.
enum Shape {
    Fits,
    TooDeep,
    TooLarge,
}

/// Walks `value` without recursion (the value may be nested far deeper
/// than a stack allows) and stops at the first limit it crosses.
fn shape(value: &Val) -> Shape {
    let mut pending: Vec<(&Val, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Val>> = match value {
            Val::Arr(items) => {
                if items.len() > MAX_ITEMS {
                    return Shape::TooLarge;
                }
                Box::new(items.iter())
            }
            Val::Obj(map) => {
                if map.len() > MAX_ITEMS {
                    return Shape::TooLarge;
                }
                Box::new(map.values())
            }
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Shape::TooDeep;
        }
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    Shape::Fits
}

/// Refuses a filter text too long or nested too deeply to parse safely.
fn text_check(text: &str) -> Result<(), JqError> {
    if text.len() > MAX_TEXT {
        return Err(JqError {
            message: format!(
                "the expression is {} bytes long; the limit is {MAX_TEXT}",
                text.len()
            ),
            help: Some("an expression is one jq filter; move long logic into a step".to_owned()),
        });
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, '(') => {
                    // `"\(...)"` interpolates: a nested filter.
                    escaped = false;
                    depth += 1;
                    in_string = false;
                }
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '"' => in_string = true,
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    if deepest > MAX_TEXT_NESTING {
        return Err(JqError {
            message: format!(
                "the expression nests brackets {deepest} levels deep; the limit is {MAX_TEXT_NESTING}"
            ),
            help: Some("write it flatter, or move the logic into a step".to_owned()),
        });
    }
    Ok(())
}

/// `text` as a plain path: `.`, then `.key`, `["key"]` or `[n]` parts
/// with nothing else (no spaces, no `?`, no escapes in keys).
fn plain_path(text: &str) -> Option<Vec<PathPart>> {
    let mut rest = text.strip_prefix('.')?;
    let mut parts = Vec::new();
    let mut first = true;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']')?;
            let inner = &after[..close];
            if let Some(key) = inner
                .strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
            {
                if key.contains(['"', '\\']) {
                    return None;
                }
                parts.push(PathPart::Key(key.to_owned()));
            } else if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                parts.push(PathPart::Index(inner.parse().ok()?));
            } else {
                return None;
            }
            rest = &after[close + 1..];
        } else {
            let after = if first { rest } else { rest.strip_prefix('.')? };
            if after.starts_with('[') {
                rest = after;
                first = false;
                continue;
            }
            let length = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if length == 0 || after.as_bytes()[0].is_ascii_digit() {
                return None;
            }
            parts.push(PathPart::Key(after[..length].to_owned()));
            rest = &after[length..];
        }
        first = false;
    }
    Some(parts)
}

/// Follows a plain path through `value` as jq would, when jq would not
/// fail: `None` when a part meets a value it cannot index (jq's own error
/// then says which), so that the caller asks jq.
#[must_use]
pub fn follow<'a>(value: &'a Value, path: &[PathPart]) -> Option<&'a Value> {
    static NULL: Value = Value::Null;
    let mut at = value;
    for part in path {
        at = match (at, part) {
            (Value::Null, _) => &NULL,
            (Value::Object(map), PathPart::Key(key)) => map.get(key).unwrap_or(&NULL),
            (Value::Array(items), PathPart::Index(index)) => items.get(*index).unwrap_or(&NULL),
            _ => return None,
        };
    }
    Some(at)
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

/// An expression that fails to evaluate fails its step for good: running
/// it again gives the same error.
impl From<JqEvalError> for plait_types::step::StepFailure {
    fn from(error: JqEvalError) -> Self {
        plait_types::step::StepFailure {
            kind: plait_types::step::FailureKind::Fatal,
            message: error.to_string(),
            details: None,
        }
    }
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

    #[test]
    fn plain_paths_are_recognised_and_followed() {
        let context =
            json!({"input": {"a": [10, {"b": "x"}]}, "steps": {"read-file": {"output": 3}}});
        for (text, expected) in [
            (".", Some(context.clone())),
            (".input.a[1].b", Some(json!("x"))),
            (".input[\"a\"][0]", Some(json!(10))),
            (".steps[\"read-file\"].output", Some(json!(3))),
            (".input.missing.deeper", Some(Value::Null)),
            (".input.a.b", None),
        ] {
            let jq = Jq::compile(text).unwrap();
            let path = jq
                .plain_path()
                .unwrap_or_else(|| panic!("{text} is a plain path"));
            assert_eq!(follow(&context, path).cloned(), expected, "{text}");
        }
        for text in [
            ".input | length",
            ".input.a[-1]",
            ".input.a?",
            ". input",
            ".input.a[1:2]",
            "..",
            ".input.\"a\"",
        ] {
            assert!(
                Jq::compile(text)
                    .map(|jq| jq.plain_path().is_none())
                    .unwrap_or(true),
                "{text}"
            );
        }
    }

    #[test]
    fn deep_and_huge_results_are_named_limits() {
        let deep = run("reduce range(300) as $i (null; [.])", json!(null)).unwrap_err();
        assert!(matches!(deep, JqEvalError::TooDeep { .. }), "{deep}");
        let big = run("\"x\" * 20000000", json!(null)).unwrap_err();
        assert!(matches!(big, JqEvalError::TooBig { .. }), "{big}");
    }

    #[test]
    fn deeply_nested_text_is_refused_before_parsing() {
        let text = format!("{}.{}", "(".repeat(100_000), ")".repeat(100_000));
        let error = Jq::compile(&text).unwrap_err();
        assert!(error.message.contains("bytes long"), "{error}");
        let text = format!("{}.{}", "[".repeat(200), "]".repeat(200));
        let error = Jq::compile(&text).unwrap_err();
        assert!(error.message.contains("levels deep"), "{error}");
        assert!(Jq::compile("\"a(\\(.input | [[1]])b\" | [.]").is_ok());
    }
}
