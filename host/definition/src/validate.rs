//! Checks a parsed YAML tree against the definition format and builds the
//! validated types from it.
//!
//! Validation goes on past every problem it can, so that one run reports
//! everything wrong with the file; a part with an error is left out of the
//! result, and the caller discards the result if any error was reported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{Diagnostics, closest, list};
use super::expr::{self, BlobRef, BlobSource, Expression};
use super::flow::{OnError, RetrySettings, StepKind};
use super::jq::Jq;
use super::template::{BlobMapping, Template};
use super::yaml::{self, Node, NodeKind, Typed};
use super::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_CONCURRENCY, Span, StepDefinition, StepId,
    workflow_name_problem,
};

mod flow;
mod sandbox;
mod shorthand;
mod steps;
mod templates;

#[cfg(test)]
pub(crate) use flow::RETRY_KEYS;
pub use flow::topological;
#[cfg(test)]
pub(crate) use sandbox::{GRANT_KEYS, LIMIT_KEYS};

pub use shorthand::{LOCAL_MODEL, PLUGINS_ENV, reference_plugin};

pub(crate) const WORKFLOW_KEYS: [&str; 10] = [
    "name",
    "version",
    "description",
    "input",
    "limits",
    "retry",
    "timeout",
    "concurrency",
    "steps",
    "output",
];
const INPUT_KEYS: [&str; 1] = ["schema"];
pub(crate) const STEP_KEYS: [&str; 22] = [
    "id",
    "uses",
    "type",
    "needs",
    "if",
    "for_each",
    "max_concurrency",
    "input",
    "blobs",
    "config",
    "limits",
    "timeout",
    "retry",
    "on_error",
    "cache",
    "grants",
    "duration",
    "default",
    "model",
    "prompt",
    "endpoint",
    "api_key",
];

/// Keys that only a component step (not `wait` or `sleep`) may have.
const COMPONENT_KEYS: [&str; 8] = [
    "cache",
    "input",
    "blobs",
    "config",
    "limits",
    "grants",
    "for_each",
    "max_concurrency",
];

const DEFAULT_VERSION: &str = "0.0.0";

/// Keys of other workflow languages, and the Plait key that means the same.
const ALIASES: [(&str, &str); 14] = [
    ("depends_on", "needs"),
    ("dependsOn", "needs"),
    ("depends-on", "needs"),
    ("when", "if"),
    ("condition", "if"),
    ("foreach", "for_each"),
    ("forEach", "for_each"),
    ("loop", "for_each"),
    ("retries", "retry"),
    ("catch", "on_error"),
    ("continue-on-error", "on_error"),
    ("continue_on_error", "on_error"),
    ("timeout-minutes", "timeout"),
    ("parallelism", "max_concurrency"),
];

/// The validated parts of a definition; the caller adds the source file.
pub(crate) struct Parts {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: Option<String>,
    pub(crate) input_schema: Option<Value>,
    pub(crate) limits: crate::limits::LimitSettings,
    pub(crate) steps: Vec<StepDefinition>,
    pub(crate) output: Option<Template>,
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) concurrency: u32,
}

/// Validates the document `root`. Returns `None` if a required part is
/// missing or invalid; the caller must also check for reported errors.
pub(crate) fn definition(
    root: &Node,
    base_dir: &Path,
    diag: &mut Diagnostics<'_>,
) -> Option<Parts> {
    let Some(entries) = root.as_mapping() else {
        diag.error(
            root.span,
            format!(
                "the top level of a workflow definition must be a mapping, found {}",
                root.describe()
            ),
            Some("start with `name: my-workflow`, then a `steps:` list".to_owned()),
        );
        return None;
    };
    let mut validator = Validator {
        diag,
        base_dir,
        step_ids: Vec::new(),
        retry: RetrySettings::default(),
        flows: Vec::new(),
    };
    validator.workflow(root, entries)
}

/// Which steps an expression may read, by where it is written.
#[derive(Clone, Copy)]
enum Scope {
    /// In the step at this index: only the steps it needs.
    Step { index: usize },
    /// In the workflow `output:`: every step.
    Output,
}

/// Where a template is written, for messages.
#[derive(Clone, Copy)]
enum Section {
    Input,
    Output,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Input => "input",
            Section::Output => "output",
        }
    }
}

struct Validator<'v, 'd> {
    diag: &'v mut Diagnostics<'d>,
    base_dir: &'v Path,
    /// Every step id as written (valid or not), with the index of its first
    /// definition, so that references can say "later", "itself" or "unknown"
    /// without piling errors onto a step whose id was already reported.
    step_ids: Vec<(String, usize)>,
    /// The workflow's `retry:`, which each step's is laid over.
    retry: RetrySettings,
    /// Per step, what the graph checks need (reads, needs as written).
    flows: Vec<flow::StepFlow>,
}

impl Validator<'_, '_> {
    fn workflow(&mut self, root: &Node, entries: &[(Node, Node)]) -> Option<Parts> {
        let fields = self.fields(entries, "the workflow", &WORKFLOW_KEYS);

        let name = match fields.get("name") {
            Some(value) => self.workflow_name(value),
            None if fields.suggested("name") => None,
            None => {
                self.diag.error(
                    root.span,
                    "the workflow has no `name`",
                    Some(
                        "add `name: my-workflow` (lowercase letters, digits, `-` and `_`)"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let version = match fields.get("version") {
            Some(value) => self.text(value, "`version`"),
            None => Some(DEFAULT_VERSION.to_owned()),
        };
        let description = fields
            .get("description")
            .map(|value| self.text(value, "`description`"));
        let input_schema = fields.get("input").map(|value| self.input_section(value));
        let limits = fields
            .get("limits")
            .map(|value| self.limits(value, "the workflow"));
        let retry = fields
            .get("retry")
            .map(|value| self.retry(value, "the workflow"));
        if let Some(Some(retry)) = retry {
            self.retry = retry;
        }
        let timeout = fields
            .get("timeout")
            .map(|value| self.duration(value, "timeout"));
        let concurrency = fields
            .get("concurrency")
            .map(|value| self.parallelism(value, "concurrency"));

        let steps = match fields.get("steps") {
            Some(value) => self.steps(value),
            None if fields.suggested("steps") => None,
            None => {
                self.diag.error(
                    root.span,
                    "the workflow has no `steps`",
                    Some("add a `steps:` list; each step has an `id` and `uses`".to_owned()),
                );
                None
            }
        };
        let output = fields
            .get("output")
            .map(|value| self.template(value, Scope::Output, Section::Output));
        // Without `output:`, the run outputs the graph's one sink.
        let sink_output = match (&steps, &output) {
            (Some(steps), None) if !self.diag.has_errors() => self.sink_output(steps),
            _ => Some(None),
        };

        Some(Parts {
            name: name?,
            version: version?,
            description: optional(description)?,
            input_schema: optional(input_schema)?.flatten(),
            limits: optional(limits)?.unwrap_or_default(),
            steps: steps?,
            output: optional(output)?.or(sink_output?),
            timeout: optional(timeout)?,
            concurrency: optional(concurrency)?.unwrap_or(DEFAULT_CONCURRENCY),
        })
    }

    /// The values of the allowed keys in a mapping; other keys are reported.
    fn fields<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        owner: &str,
        allowed: &[&'static str],
    ) -> Fields<'n> {
        let mut fields = Fields::default();
        for (key, value) in entries {
            let Some(text) = yaml::key_text(key, self.diag) else {
                continue;
            };
            match allowed.iter().find(|allowed| **allowed == text) {
                Some(known) => {
                    fields.values.insert(*known, value);
                }
                None => {
                    // Names other workflow languages use for the same thing.
                    let alias = ALIASES
                        .iter()
                        .find(|(other, ours)| *other == text && allowed.contains(ours))
                        .map(|(_, ours)| *ours);
                    let close = alias.or_else(|| closest(text, allowed.iter().copied()));
                    fields.suggested.extend(close);
                    let suggestion = close
                        .map(|known| format!("did you mean `{known}`? "))
                        .unwrap_or_default();
                    self.diag.error(
                        key.span,
                        format!("unknown key `{text}` in {owner}"),
                        Some(format!("{suggestion}allowed keys: {}", list(allowed))),
                    );
                }
            }
        }
        fields
    }

    /// A scalar field taken as the text written (numbers and booleans
    /// included, so `version: 1.0` is "1.0"); null and collections are errors.
    fn text(&mut self, node: &Node, field: &str) -> Option<String> {
        match node.as_scalar() {
            Some(scalar) if !matches!(scalar.typed(), Ok(Typed::Null)) => {
                Some(scalar.value.clone())
            }
            _ => {
                self.diag.error(
                    node.span,
                    format!("{field} must be a string, found {}", node.describe()),
                    None,
                );
                None
            }
        }
    }

    fn workflow_name(&mut self, node: &Node) -> Option<String> {
        let name = self.text(node, "`name`")?;
        match workflow_name_problem(&name) {
            None => Some(name),
            Some(reason) => {
                self.diag.error(
                    node.span,
                    format!("invalid workflow name `{name}`: {reason}"),
                    Some(name_help(&name, true, "my-workflow")),
                );
                None
            }
        }
    }

    /// The workflow `input:` section; returns its schema, if any.
    fn input_section(&mut self, node: &Node) -> Option<Option<Value>> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`input` must be a mapping, found {}", node.describe()),
                Some(
                    "describe the workflow input as `input: { schema: { type: object } }`"
                        .to_owned(),
                ),
            );
            return None;
        };
        let fields = self.fields(entries, "`input`", &INPUT_KEYS);
        let Some(schema) = fields.get("schema") else {
            return Some(None);
        };
        if schema.as_mapping().is_none() {
            self.diag.error(
                schema.span,
                format!(
                    "`schema` must be a JSON Schema mapping, found {}",
                    schema.describe()
                ),
                Some("for example `schema: { type: object }`".to_owned()),
            );
            return None;
        }
        let json = yaml::to_json(schema, self.diag)?;
        // Compiled here, once, so a misspelt keyword is an error at its
        // line rather than a schema the run would fail to apply.
        if let Err(error) = crate::schema::Schema::compile(&json) {
            self.diag.error(
                schema.span,
                format!("`input.schema` is not a valid JSON Schema: {error}"),
                Some(
                    "fix the schema (https://json-schema.org/understanding-json-schema), for example `schema: { type: object, required: [text] }`"
                        .to_owned(),
                ),
            );
            return None;
        }
        Some(Some(json))
    }
}

/// What a string in a template is.
enum Parsed {
    /// Plain text.
    Literal,
    /// A jq filter producing JSON.
    Json(Jq),
    /// One blob.
    Blob(BlobRef),
    /// Every blob of a source.
    BlobSet(BlobSource),
}

/// The allowed keys found in a mapping.
#[derive(Default)]
struct Fields<'n> {
    values: HashMap<&'static str, &'n Node>,
    /// Allowed keys offered as "did you mean" for an unknown key: when one
    /// is missing, that suggestion already says so, and a second error
    /// would only repeat it.
    suggested: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.values.get(key).copied()
    }

    fn suggested(&self, key: &str) -> bool {
        self.suggested.contains(&key)
    }
}

/// An optional field's outcome: absent (`None`) is fine, present but
/// invalid (`Some(None)`) fails the whole.
fn optional<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    match field {
        None => Some(None),
        Some(value) => value.map(Some),
    }
}

fn scalar_is(node: &Node, text: &str) -> bool {
    node.as_scalar().is_some_and(|scalar| scalar.value == text)
}

/// Help for an invalid name: the rules, and a valid name close to the one
/// written when there is one. Workflow names may start with a digit
/// (`digit_first`), step ids may not.
fn name_help(written: &str, digit_first: bool, example: &str) -> String {
    let mut fixed = String::new();
    for c in written.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            fixed.push(c);
        } else if !fixed.is_empty() && !fixed.ends_with('-') {
            fixed.push('-');
        }
    }
    let fixed: String = fixed
        .trim_start_matches(['-', '_'])
        .trim_end_matches('-')
        .chars()
        .take(super::MAX_NAME_LEN)
        .collect();
    // A step id cannot start with a digit: keep the digits behind a prefix
    // rather than dropping them.
    let fixed = if !digit_first && fixed.starts_with(|c: char| c.is_ascii_digit()) {
        format!("step-{fixed}")
    } else {
        fixed
    };
    let example = if fixed.is_empty() || fixed == written {
        example.to_owned()
    } else {
        fixed
    };
    let first = if digit_first {
        "a letter or a digit"
    } else {
        "a letter"
    };
    format!(
        "use lowercase letters, digits, `-` and `_`, starting with {first}, for example `{example}`"
    )
}
