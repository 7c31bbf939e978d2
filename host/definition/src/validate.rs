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

    fn steps(&mut self, node: &Node) -> Option<Vec<StepDefinition>> {
        let NodeKind::Sequence(items) = &node.kind else {
            self.diag.error(
                node.span,
                format!("`steps` must be a list of steps, found {}", node.describe()),
                Some(
                    "write each step as a list item: `- id: NAME` with `uses: PATH` below it"
                        .to_owned(),
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.diag.error(
                node.span,
                "`steps` is empty: a workflow needs at least one step",
                Some("add a step: `- id: NAME` with `uses: PATH` below it".to_owned()),
            );
            return None;
        }
        // Record every id first: a reference to a later step is then
        // reported as such rather than as an unknown step.
        for (index, item) in items.iter().enumerate() {
            let id = item
                .as_mapping()
                .and_then(|entries| entries.iter().find(|(key, _)| scalar_is(key, "id")))
                .and_then(|(_, value)| value.as_scalar())
                .map(|scalar| scalar.value.clone());
            if let Some(id) = id
                && !self.step_ids.iter().any(|(known, _)| *known == id)
            {
                self.step_ids.push((id, index));
            }
        }
        self.flows = items.iter().map(|_| flow::StepFlow::default()).collect();
        let steps: Vec<Option<StepDefinition>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| self.step(index, item))
            .collect();
        // The graph is checked even when some steps are invalid, so that
        // one run of `plait validate` reports everything it can.
        let flows = std::mem::take(&mut self.flows);
        let graph_steps: Vec<flow::GraphStep> = items
            .iter()
            .zip(&steps)
            .enumerate()
            .map(|(index, (item, step))| flow::GraphStep {
                id: self
                    .step_ids
                    .iter()
                    .find(|(_, first)| *first == index)
                    .map_or_else(|| format!("#{}", index + 1), |(id, _)| id.clone()),
                span: item.span,
                component: step
                    .as_ref()
                    .is_none_or(|step| matches!(step.kind, StepKind::Component)),
                for_each: step.as_ref().is_some_and(|step| step.for_each.is_some()),
            })
            .collect();
        let graph = self.graph(&graph_steps, &flows);
        let mut steps: Vec<StepDefinition> = steps.into_iter().collect::<Option<_>>()?;
        let graph = graph?;
        let ids: Vec<StepId> = steps.iter().map(|step| step.id.clone()).collect();
        for (step, (needs, fallback_of)) in steps.iter_mut().zip(graph) {
            step.needs = needs.into_iter().map(|need| ids[need].clone()).collect();
            step.fallback_of = fallback_of.map(|primary| ids[primary].clone());
        }
        Some(steps)
    }

    fn step(&mut self, index: usize, node: &Node) -> Option<StepDefinition> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("each step must be a mapping, found {}", node.describe()),
                Some("write a step as `- id: NAME` with `uses: PATH` below it".to_owned()),
            );
            return None;
        };
        let written_id = entries
            .iter()
            .find(|(key, _)| scalar_is(key, "id"))
            .and_then(|(_, value)| value.as_scalar())
            .map(|scalar| scalar.value.clone());
        let owner = match &written_id {
            Some(id) => format!("step `{id}`"),
            None => format!("step {}", index + 1),
        };
        let fields = self.fields(entries, &owner, &STEP_KEYS);

        let id = match fields.get("id") {
            Some(value) => self.step_id(index, value),
            None if fields.suggested("id") => None,
            None => {
                self.diag.error(
                    node.span,
                    format!("{owner} has no `id`"),
                    Some("add `id: NAME`, a lowercase name unique in the workflow".to_owned()),
                );
                None
            }
        };
        let scope = Scope::Step { index };
        let step_type = fields
            .get("type")
            .map(|value| (self.step_type(value), value.span));
        let builtin = match &step_type {
            Some((Some(name), _)) if name == "wait" || name == "sleep" => Some(name.clone()),
            _ => None,
        };
        if let Some(builtin) = &builtin {
            for key in COMPONENT_KEYS {
                if let Some(value) = fields.get(key) {
                    self.diag.error(
                        value.span,
                        format!("`{key}` does not apply to a `type: {builtin}` step, which runs no component"),
                        Some(match builtin.as_str() {
                            "wait" => "a wait step takes `timeout` and `default`; its output is the signal's data".to_owned(),
                            _ => "a sleep step takes `duration`".to_owned(),
                        }),
                    );
                }
            }
        }
        let flow_fields = self.step_flow(index, &fields, &owner, builtin.as_deref());
        let uses = match (fields.get("uses"), &step_type) {
            (Some(value), None) => self.uses(value),
            (Some(value), Some(_)) => {
                self.diag.error(
                    value.span,
                    format!("{owner} has both `uses` and `type`"),
                    Some(
                        "keep `uses: PATH` to run a component, or `type:` for a built-in step or a shorthand"
                            .to_owned(),
                    ),
                );
                None
            }
            // Expanded below, once config and grants are known.
            (None, Some(_)) => None,
            (None, None) if fields.suggested("uses") => None,
            (None, None) => {
                self.diag.error(
                    node.span,
                    format!("{owner} has no `uses`"),
                    Some(
                        "add `uses: PATH`, the step's component (`.wasm`) relative to this file \
                         (or `type: ai_inference` for a model call)"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        if !matches!(&step_type, Some((Some(name), _)) if name == "ai_inference") {
            for key in shorthand::SHORTHAND_KEYS {
                if let Some(value) = fields.get(key) {
                    self.diag.error(
                        value.span,
                        format!("`{key}` belongs to `type: ai_inference` steps"),
                        Some("move it under `config:` if component `uses` reads it".to_owned()),
                    );
                }
            }
        }
        let input = fields
            .get("input")
            .map(|value| self.template(value, scope, Section::Input));
        let blobs = fields.get("blobs").map(|value| self.blobs(value, scope));
        let config = match fields.get("config") {
            Some(value) => self.config(value),
            None => Some(BTreeMap::new()),
        };
        let limits = fields.get("limits").map(|value| self.limits(value, &owner));
        let grants = fields.get("grants").map(|value| self.grants(value, &owner));

        let cache = fields.get("cache").map(|node| self.cache(node));
        let cache = optional(cache)?.flatten();
        let mut config = config?;
        // Where each key is written, so that a problem with one (a key
        // the component does not declare) points at it.
        let config_spans: BTreeMap<String, Span> = fields
            .get("config")
            .and_then(|node| node.as_mapping())
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|(key, _)| Some((key.as_scalar()?.value.clone(), key.span)))
                    .collect()
            })
            .unwrap_or_default();
        let mut grants = optional(grants)?.unwrap_or_default();
        let (kind, condition, for_each, max_concurrency, retry, on_error, timeout) = flow_fields?;
        let (uses, uses_span) = match step_type {
            Some((step_type, span)) => match step_type?.as_str() {
                "ai_inference" => {
                    self.ai_inference(&fields, span, &owner, &mut config, &mut grants)?
                }
                _ => (PathBuf::new(), span),
            },
            None => uses?,
        };
        let mut limits = optional(limits)?.unwrap_or_default();
        if let Some(timeout) = timeout {
            limits.timeout = Some(timeout);
        }
        Some(StepDefinition {
            id: id?,
            uses,
            uses_span,
            input: optional(input)?,
            blobs: optional(blobs)?,
            config,
            config_spans,
            limits,
            grants,
            span: node.span,
            kind,
            needs: Vec::new(),
            condition,
            for_each,
            max_concurrency,
            retry,
            on_error,
            fallback_of: None,
            cache,
        })
    }

    /// The flow fields of step `index`: `needs`, `if`, `for_each`,
    /// `max_concurrency`, `retry`, `on_error`, `timeout`, and the built-in
    /// kinds' `duration` and `default`. Records what the graph pass needs.
    #[allow(clippy::type_complexity)]
    fn step_flow(
        &mut self,
        index: usize,
        fields: &Fields<'_>,
        owner: &str,
        builtin: Option<&str>,
    ) -> Option<(
        StepKind,
        Option<Jq>,
        Option<Jq>,
        u32,
        super::RetryPolicy,
        OnError,
        Option<std::time::Duration>,
    )> {
        let mut ok = true;
        if let Some(value) = fields.get("needs") {
            let needs = self.needs(value);
            ok &= needs.is_some();
            self.flows[index].needs = needs;
        }
        self.flows[index].has_input = fields.get("input").is_some();
        let filter = |this: &mut Self, key: &str| -> Option<Option<Jq>> {
            let Some(node) = fields.get(key) else {
                return Some(None);
            };
            this.flows[index].conditional.get_or_insert(node.span);
            let jq = this.filter(node, key)?;
            for step in jq.steps() {
                this.flows[index].reads.push((step.clone(), node.span));
            }
            Some(Some(jq))
        };
        let condition = filter(self, "if");
        let for_each = filter(self, "for_each");
        let max_concurrency = match fields.get("max_concurrency") {
            Some(node) => {
                if fields.get("for_each").is_none() {
                    self.diag.error(
                        node.span,
                        format!("{owner} has `max_concurrency` but no `for_each`"),
                        Some(
                            "`max_concurrency` bounds how many items of a `for_each` run at once"
                                .to_owned(),
                        ),
                    );
                    ok = false;
                }
                self.parallelism(node, "max_concurrency")
            }
            None => Some(DEFAULT_MAX_CONCURRENCY),
        };
        let retry = match fields.get("retry") {
            Some(node) => self.retry(node, owner).map(|step| step.over(self.retry)),
            None => Some(self.retry),
        };
        let on_error = match fields.get("on_error") {
            Some(node) => self.on_error(node).map(|(on_error, fallback)| {
                self.flows[index].fallback = fallback;
                on_error
            }),
            None => Some(OnError::Fail),
        };
        let timeout = fields.get("timeout").map(|node| {
            if builtin == Some("sleep") {
                self.diag.error(
                    node.span,
                    "a `type: sleep` step has `duration`, not `timeout`",
                    Some("write `duration: 5s`".to_owned()),
                );
                return None;
            }
            if let Some(limits) = fields.get("limits")
                && limits
                    .as_mapping()
                    .is_some_and(|entries| entries.iter().any(|(key, _)| scalar_is(key, "timeout")))
            {
                self.diag.error(
                    node.span,
                    format!("{owner} sets both `timeout` and `limits.timeout`"),
                    Some("keep one of them; they mean the same".to_owned()),
                );
                return None;
            }
            self.duration(node, "timeout")
        });
        let duration = fields.get("duration").map(|node| {
            if builtin != Some("sleep") {
                self.diag.error(
                    node.span,
                    "`duration` belongs to `type: sleep` steps",
                    Some("for a step's time limit write `timeout`".to_owned()),
                );
                return None;
            }
            self.duration(node, "duration")
        });
        let default = fields.get("default").map(|node| {
            if builtin != Some("wait") {
                self.diag.error(
                    node.span,
                    "`default` belongs to `type: wait` steps",
                    Some("it is the wait's output when its timeout passes".to_owned()),
                );
                return None;
            }
            self.default_output(node)
        });
        let (condition, for_each, max_concurrency, retry, on_error, timeout, duration, default) = (
            condition?,
            for_each?,
            max_concurrency?,
            retry?,
            on_error?,
            optional(timeout)?,
            optional(duration)?,
            optional(default)?,
        );
        let kind = match builtin {
            Some("wait") => StepKind::Wait { timeout, default },
            Some(_) => match duration {
                Some(duration) => StepKind::Sleep { duration },
                None => {
                    self.diag.error(
                        fields
                            .get("type")
                            .map_or(Span::new(1, 1, 1), |node| node.span),
                        format!("{owner} is a `type: sleep` step without `duration`"),
                        Some("add `duration: 5s` (ms, s, m, h)".to_owned()),
                    );
                    return None;
                }
            },
            None => StepKind::Component,
        };
        ok.then(|| {
            (
                kind,
                condition,
                for_each,
                max_concurrency,
                retry.resolve(),
                on_error,
                if builtin.is_some() { None } else { timeout },
            )
        })
    }

    fn step_id(&mut self, index: usize, node: &Node) -> Option<StepId> {
        let text = self.text(node, "a step `id`")?;
        let id = match StepId::new(&text) {
            Ok(id) => id,
            Err(error) => {
                self.diag.error(
                    node.span,
                    error.to_string(),
                    Some(name_help(&text, false, "my-step")),
                );
                return None;
            }
        };
        let first = self
            .step_ids
            .iter()
            .find(|(known, _)| *known == text)
            .map(|(_, first)| *first);
        if let Some(first) = first
            && first != index
        {
            self.diag.error(
                node.span,
                format!("duplicate step id `{text}`"),
                Some(format!(
                    "step {} already has the id `{text}`; step ids must be unique",
                    first + 1
                )),
            );
            return None;
        }
        Some(id)
    }

    fn uses(&mut self, node: &Node) -> Option<(PathBuf, Span)> {
        let text = self.text(node, "`uses`")?;
        if text.trim().is_empty() {
            self.diag.error(
                node.span,
                "`uses` is empty",
                Some(
                    "set it to the path of the step's component (`.wasm`), relative to this file"
                        .to_owned(),
                ),
            );
            return None;
        }
        Some((self.base_dir.join(text), node.span))
    }

    /// `config:`: a mapping of scalar values kept as their text.
    fn config(&mut self, node: &Node) -> Option<BTreeMap<String, String>> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`config` must be a mapping, found {}", node.describe()),
                Some("write configuration as `key: value` pairs, for example `config: { lowercase: true }`".to_owned()),
            );
            return None;
        };
        let mut config = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let Some(key) = yaml::key_text(key, self.diag) else {
                ok = false;
                continue;
            };
            match value.as_scalar() {
                Some(scalar) if !matches!(scalar.typed(), Ok(Typed::Null)) => {
                    config.insert(key.to_owned(), scalar.value.clone());
                }
                _ => {
                    ok = false;
                    let help = if value.as_scalar().is_some() {
                        "write `\"\"` for an empty value".to_owned()
                    } else {
                        format!(
                            "config values are text; to pass structured data, write it as a JSON string: `{key}: '{{\"a\": 1}}'`"
                        )
                    };
                    self.diag.error(
                        value.span,
                        format!(
                            "config value `{key}` must be a string, number or boolean, found {}",
                            value.describe()
                        ),
                        Some(help),
                    );
                }
            }
        }
        ok.then_some(config)
    }

    /// A JSON template: any value, with `${ ... }` strings as expressions.
    fn template(&mut self, node: &Node, scope: Scope, section: Section) -> Option<Template> {
        match &node.kind {
            NodeKind::Scalar(scalar) => {
                let typed = match scalar.typed() {
                    Ok(typed) => typed,
                    Err(message) => {
                        self.diag.error(node.span, message, None);
                        return None;
                    }
                };
                let Typed::String(text) = typed else {
                    return Some(Template::Literal(typed.into_json()));
                };
                match self.expression(node, &text)? {
                    Parsed::Literal => Some(Template::Literal(Value::String(text))),
                    Parsed::Json(jq) => {
                        for step in jq.steps() {
                            self.check_step(step, node, scope)?;
                        }
                        Some(Template::Expr(jq))
                    }
                    Parsed::Blob(_) | Parsed::BlobSet(_) => {
                        let help = match section {
                            Section::Input => {
                                "pass blobs under the step's `blobs:`, for example `blobs: { doc: \"${ .blobs.doc }\" }`"
                            }
                            Section::Output => "the workflow `output` is JSON only",
                        };
                        self.diag.error(
                            node.span,
                            format!(
                                "`{text}` selects blobs, which cannot be used in `{}`",
                                section.key()
                            ),
                            Some(help.to_owned()),
                        );
                        None
                    }
                }
            }
            NodeKind::Sequence(items) => {
                let items: Vec<Option<Template>> = items
                    .iter()
                    .map(|item| self.template(item, scope, section))
                    .collect();
                items
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(Template::array)
            }
            NodeKind::Mapping(entries) => {
                let mut members = Vec::new();
                let mut ok = true;
                for (key, value) in entries {
                    let key = yaml::key_text(key, self.diag);
                    match (key, self.template(value, scope, section)) {
                        (Some(key), Some(value)) => members.push((key.to_owned(), value)),
                        _ => ok = false,
                    }
                }
                ok.then(|| Template::object(members))
            }
        }
    }

    /// Parses `text` as an expression, reporting a malformed one. Blob
    /// references keep their path grammar (`${ .blobs.NAME }`,
    /// `${ .steps.ID.blobs }`); everything else is a jq filter.
    fn expression(&mut self, node: &Node, text: &str) -> Option<Parsed> {
        let Some(body) = expr::body(text) else {
            return Some(Parsed::Literal);
        };
        match Expression::parse(text) {
            Ok(Some(Expression::Blob(blob))) => return Some(Parsed::Blob(blob)),
            Ok(Some(Expression::BlobSet(source))) => return Some(Parsed::BlobSet(source)),
            _ => {}
        }
        match Jq::compile(body) {
            Ok(jq) => Some(Parsed::Json(jq)),
            Err(error) => {
                self.diag.error(
                    node.span,
                    format!("invalid expression `{text}`: {}", error.message),
                    error.help,
                );
                None
            }
        }
    }

    /// `blobs:`: a blob-set expression, or a mapping of names to blobs.
    fn blobs(&mut self, node: &Node, scope: Scope) -> Option<BlobMapping> {
        const FORMS: &str = "`blobs:` takes `${ .blobs }` or `${ .steps.ID.blobs }` for every blob, or a mapping `NAME: ${ .blobs.NAME }`";
        match &node.kind {
            NodeKind::Mapping(entries) => {
                let mut named = BTreeMap::new();
                let mut ok = true;
                for (key, value) in entries {
                    let name = yaml::key_text(key, self.diag);
                    if name == Some("") {
                        self.diag
                            .error(key.span, "a blob name cannot be empty", None);
                        ok = false;
                    }
                    match (name, self.blob(value, scope)) {
                        (Some(key), Some(blob)) => {
                            named.insert(key.to_owned(), blob);
                        }
                        _ => ok = false,
                    }
                }
                ok.then_some(BlobMapping::Named(named))
            }
            NodeKind::Scalar(scalar) if matches!(scalar.typed(), Ok(Typed::String(_))) => {
                let text = &scalar.value;
                match self.expression(node, text)? {
                    Parsed::BlobSet(source) => {
                        if let Some(step) = source.step() {
                            self.check_step(step, node, scope)?;
                        }
                        Some(BlobMapping::All(source))
                    }
                    Parsed::Blob(blob) => {
                        let name = &blob.name;
                        self.diag.error(
                            node.span,
                            format!("`{text}` selects one blob, but a single `blobs:` expression must select every blob of a source"),
                            Some(format!("to pass one blob, name it: `blobs: {{ {name}: \"{text}\" }}`")),
                        );
                        None
                    }
                    Parsed::Json(_) => {
                        self.diag.error(
                            node.span,
                            format!("`{text}` selects JSON, but `blobs:` takes blobs"),
                            Some(format!("pass JSON under `input:`; {FORMS}")),
                        );
                        None
                    }
                    Parsed::Literal => {
                        self.diag.error(
                            node.span,
                            format!("`blobs` must be an expression or a mapping, found the text `{text}`"),
                            Some(FORMS.to_owned()),
                        );
                        None
                    }
                }
            }
            _ => {
                self.diag.error(
                    node.span,
                    format!(
                        "`blobs` must be an expression or a mapping, found {}",
                        node.describe()
                    ),
                    Some(FORMS.to_owned()),
                );
                None
            }
        }
    }

    /// One value of a `blobs:` mapping: a single-blob expression.
    fn blob(&mut self, node: &Node, scope: Scope) -> Option<BlobRef> {
        const FORMS: &str = "a named blob is `${ .blobs.NAME }` or `${ .steps.ID.blobs.NAME }`";
        let text = match node.as_scalar().map(yaml::Scalar::typed) {
            Some(Ok(Typed::String(text))) => text,
            _ => {
                self.diag.error(
                    node.span,
                    format!(
                        "a blob must be given by an expression, found {}",
                        node.describe()
                    ),
                    Some(FORMS.to_owned()),
                );
                return None;
            }
        };
        match self.expression(node, &text)? {
            Parsed::Blob(blob) => {
                if let Some(step) = blob.source.step() {
                    self.check_step(step, node, scope)?;
                }
                Some(blob)
            }
            Parsed::BlobSet(_) => {
                self.diag.error(
                    node.span,
                    format!("`{text}` selects every blob of a source, not one blob"),
                    Some(format!(
                        "{FORMS}; to pass every blob, write `blobs: \"{text}\"`"
                    )),
                );
                None
            }
            Parsed::Json(_) => {
                self.diag.error(
                    node.span,
                    format!("`{text}` selects JSON, but `blobs:` takes blobs"),
                    Some(format!("pass JSON under `input:`; {FORMS}")),
                );
                None
            }
            Parsed::Literal => {
                self.diag.error(
                    node.span,
                    format!("a blob must be given by an expression, found the text `{text}`"),
                    Some(FORMS.to_owned()),
                );
                None
            }
        }
    }

    /// Notes that an expression in `scope` reads step `step`. Inside a
    /// step the graph pass checks it once every step's needs are known; in
    /// the workflow `output:` any step may be read, so it only has to exist.
    fn check_step(&mut self, step: &StepId, node: &Node, scope: Scope) -> Option<()> {
        match scope {
            Scope::Step { index, .. } => {
                self.flows[index].reads.push((step.clone(), node.span));
                Some(())
            }
            Scope::Output => {
                if self.step_ids.iter().any(|(id, _)| id == step.as_str()) {
                    return Some(());
                }
                let available: Vec<&str> =
                    self.step_ids.iter().map(|(id, _)| id.as_str()).collect();
                let suggestion = closest(step.as_str(), available.iter().copied())
                    .map(|id| format!("did you mean `{id}`? "))
                    .unwrap_or_default();
                self.diag.error(
                    node.span,
                    format!("unknown step `{step}`"),
                    Some(format!("{suggestion}steps: {}", list(&available))),
                );
                None
            }
        }
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
