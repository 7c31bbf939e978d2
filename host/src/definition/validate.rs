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
use super::expr::{BlobRef, Expression};
use super::template::{BlobMapping, Template};
use super::yaml::{self, Node, NodeKind, Typed};
use super::{Span, StepDefinition, StepId, workflow_name_problem};

mod sandbox;
mod shorthand;

pub use shorthand::{LOCAL_MODEL, PLUGINS_ENV, reference_plugin};

const WORKFLOW_KEYS: [&str; 7] = [
    "name",
    "version",
    "description",
    "input",
    "limits",
    "steps",
    "output",
];
const INPUT_KEYS: [&str; 1] = ["schema"];
const STEP_KEYS: [&str; 12] = [
    "id", "uses", "type", "input", "blobs", "config", "limits", "grants", "model", "prompt",
    "endpoint", "api_key",
];

const DEFAULT_VERSION: &str = "0.0.0";

/// The validated parts of a definition; the caller adds the source file.
pub(crate) struct Parts {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: Option<String>,
    pub(crate) input_schema: Option<Value>,
    pub(crate) limits: crate::limits::LimitSettings,
    pub(crate) steps: Vec<StepDefinition>,
    pub(crate) output: Option<Template>,
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
    };
    validator.workflow(root, entries)
}

/// Which steps an expression may read, by where it is written.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// In the step at this index (its id, if it has a valid one): only
    /// steps listed before it.
    Step { index: usize, id: Option<&'a str> },
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

        Some(Parts {
            name: name?,
            version: version?,
            description: optional(description)?,
            input_schema: optional(input_schema)?.flatten(),
            limits: optional(limits)?.unwrap_or_default(),
            steps: steps?,
            output: optional(output)?,
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
                    let close = closest(text, allowed.iter().copied());
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
        yaml::to_json(schema, self.diag).map(Some)
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
        let steps: Vec<Option<StepDefinition>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| self.step(index, item))
            .collect();
        steps.into_iter().collect()
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
        let scope = Scope::Step {
            index,
            id: id.as_ref().map(StepId::as_str),
        };
        let step_type = fields
            .get("type")
            .map(|value| (self.step_type(value), value.span));
        let uses = match (fields.get("uses"), &step_type) {
            (Some(value), None) => self.uses(value),
            (Some(value), Some(_)) => {
                self.diag.error(
                    value.span,
                    format!("{owner} has both `uses` and `type`"),
                    Some(
                        "keep `uses: PATH` to run a component, or `type:` for a shorthand"
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
        if step_type.is_none() {
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

        let mut config = config?;
        let mut grants = optional(grants)?.unwrap_or_default();
        let (uses, uses_span) = match step_type {
            Some((step_type, span)) => {
                step_type?;
                self.ai_inference(&fields, span, &owner, &mut config, &mut grants)?
            }
            None => uses?,
        };
        Some(StepDefinition {
            id: id?,
            uses,
            uses_span,
            input: optional(input)?,
            blobs: optional(blobs)?,
            config,
            limits: optional(limits)?.unwrap_or_default(),
            grants,
            span: node.span,
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
    fn template(&mut self, node: &Node, scope: Scope<'_>, section: Section) -> Option<Template> {
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
                    None => Some(Template::Literal(Value::String(text))),
                    Some(Expression::Json(json)) => {
                        if let Some(step) = json.step() {
                            self.check_step(step, node, scope)?;
                        }
                        Some(Template::Expr(json))
                    }
                    Some(Expression::Blob(_) | Expression::BlobSet(_)) => {
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

    /// Parses `text` as an expression, reporting a malformed one.
    /// `Some(None)` is literal text.
    fn expression(&mut self, node: &Node, text: &str) -> Option<Option<Expression>> {
        match Expression::parse(text) {
            Ok(expression) => Some(expression),
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
    fn blobs(&mut self, node: &Node, scope: Scope<'_>) -> Option<BlobMapping> {
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
                    Some(Expression::BlobSet(source)) => {
                        if let Some(step) = source.step() {
                            self.check_step(step, node, scope)?;
                        }
                        Some(BlobMapping::All(source))
                    }
                    Some(Expression::Blob(blob)) => {
                        let name = &blob.name;
                        self.diag.error(
                            node.span,
                            format!("`{text}` selects one blob, but a single `blobs:` expression must select every blob of a source"),
                            Some(format!("to pass one blob, name it: `blobs: {{ {name}: \"{text}\" }}`")),
                        );
                        None
                    }
                    Some(Expression::Json(_)) => {
                        self.diag.error(
                            node.span,
                            format!("`{text}` selects JSON, but `blobs:` takes blobs"),
                            Some(format!("pass JSON under `input:`; {FORMS}")),
                        );
                        None
                    }
                    None => {
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
    fn blob(&mut self, node: &Node, scope: Scope<'_>) -> Option<BlobRef> {
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
            Some(Expression::Blob(blob)) => {
                if let Some(step) = blob.source.step() {
                    self.check_step(step, node, scope)?;
                }
                Some(blob)
            }
            Some(Expression::BlobSet(_)) => {
                self.diag.error(
                    node.span,
                    format!("`{text}` selects every blob of a source, not one blob"),
                    Some(format!(
                        "{FORMS}; to pass every blob, write `blobs: \"{text}\"`"
                    )),
                );
                None
            }
            Some(Expression::Json(_)) => {
                self.diag.error(
                    node.span,
                    format!("`{text}` selects JSON, but `blobs:` takes blobs"),
                    Some(format!("pass JSON under `input:`; {FORMS}")),
                );
                None
            }
            None => {
                self.diag.error(
                    node.span,
                    format!("a blob must be given by an expression, found the text `{text}`"),
                    Some(FORMS.to_owned()),
                );
                None
            }
        }
    }

    /// Checks that an expression in `scope` may read step `step`: it must
    /// exist and, inside a step, be listed before that step.
    fn check_step(&mut self, step: &StepId, node: &Node, scope: Scope<'_>) -> Option<()> {
        let target = self
            .step_ids
            .iter()
            .find(|(id, _)| id == step.as_str())
            .map(|(_, index)| *index);
        let (current, current_id) = match scope {
            Scope::Output => (usize::MAX, None),
            Scope::Step { index, id } => (index, id),
        };
        let current_name = current_id.map_or_else(
            || format!("step {}", current.wrapping_add(1)),
            |id| format!("`{id}`"),
        );
        match target {
            Some(target) if target < current => return Some(()),
            Some(target) if target == current => {
                self.diag.error(
                    node.span,
                    format!("step {current_name} cannot read its own output"),
                    Some("a step's input is computed before it runs; read `.input` or an earlier step".to_owned()),
                );
            }
            Some(_) => {
                self.diag.error(
                    node.span,
                    format!("step `{step}` is not available yet in step {current_name}"),
                    Some(format!(
                        "steps run in the order they are listed and `{step}` runs after {current_name}; move it earlier or read an earlier step"
                    )),
                );
            }
            None => {
                let available: Vec<&str> = self
                    .step_ids
                    .iter()
                    .filter(|(_, index)| *index < current)
                    .map(|(id, _)| id.as_str())
                    .collect();
                let suggestion = closest(step.as_str(), available.iter().copied())
                    .map(|id| format!("did you mean `{id}`? "))
                    .unwrap_or_default();
                let help = match (scope, available.is_empty()) {
                    (Scope::Output, _) => format!("{suggestion}steps: {}", list(&available)),
                    (Scope::Step { .. }, false) => format!(
                        "{suggestion}steps before {current_name}: {}",
                        list(&available)
                    ),
                    (Scope::Step { .. }, true) => format!(
                        "no step runs before {current_name}; read the workflow input with `.input`"
                    ),
                };
                self.diag
                    .error(node.span, format!("unknown step `{step}`"), Some(help));
            }
        }
        None
    }
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
