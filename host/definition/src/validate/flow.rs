//! Validation of what orders steps and handles their failures: `needs`,
//! `if`, `for_each`, `retry`, `on_error`, `timeout` and the built-in `wait`
//! and `sleep` kinds, then the checks over the whole graph (unknown and
//! duplicate needs, cycles, expressions reading steps that are not needed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::super::error::{closest, list};
use super::super::expr;
use super::super::flow::{Backoff, OnError, RetrySettings, StepCache};
use super::super::jq::Jq;
use super::super::yaml::{self, Node, NodeKind, Typed};
use super::super::{Span, StepId};
use super::Validator;
use crate::limits;

pub(crate) const RETRY_KEYS: [&str; 5] = [
    "max_attempts",
    "backoff",
    "initial_interval",
    "max_interval",
    "jitter",
];

/// The most attempts a retry policy may ask for.
const MAX_ATTEMPTS: u64 = 100;

/// The most items of a fan-out that may run at once, and the most steps of
/// a run.
const MAX_PARALLEL: u64 = 256;

/// A step as the graph pass sees it, valid or not.
pub(super) struct GraphStep {
    /// Its id as written (or `#N` without one).
    pub(super) id: String,
    /// Where it is written.
    pub(super) span: Span,
    /// Whether it runs a component (not `wait` or `sleep`).
    pub(super) component: bool,
    /// Whether it has `for_each`.
    pub(super) for_each: bool,
}

/// What the graph found: per step, the indices of the steps it needs and
/// of the step it is the fallback of.
pub(super) type Graph = Vec<(Vec<usize>, Option<usize>)>;

/// What the graph pass needs to know about each step beyond its definition.
#[derive(Default)]
pub(super) struct StepFlow {
    /// `needs:` as written: each id with its span, and the span of the
    /// whole value.
    pub(super) needs: Option<(Vec<(String, Span)>, Span)>,
    /// `on_error: { fallback: ID }`: the id and its span.
    pub(super) fallback: Option<(String, Span)>,
    /// Whether the step has `input:`.
    pub(super) has_input: bool,
    /// Whether it has `if:` or `for_each:`, which a fallback may not have.
    pub(super) conditional: Option<Span>,
    /// Steps its expressions and blob mappings read, with where.
    pub(super) reads: Vec<(StepId, Span)>,
}

impl Validator<'_, '_> {
    /// `needs:`: a step id or a list of them.
    pub(super) fn needs(&mut self, node: &Node) -> Option<(Vec<(String, Span)>, Span)> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Sequence(items) => items.iter().collect(),
            NodeKind::Scalar(_) => vec![node],
            NodeKind::Mapping(_) => {
                self.diag.error(
                    node.span,
                    format!(
                        "`needs` must be a step id or a list of them, found {}",
                        node.describe()
                    ),
                    Some("write `needs: [ocr, classify]`".to_owned()),
                );
                return None;
            }
        };
        let mut ids = Vec::new();
        let mut ok = true;
        for item in items {
            match self.text(item, "an entry of `needs`") {
                Some(id) => ids.push((id, item.span)),
                None => ok = false,
            }
        }
        ok.then_some((ids, node.span))
    }

    /// A field holding one jq filter, with or without `${ }` around it:
    /// `if:`, `for_each:`.
    pub(super) fn filter(&mut self, node: &Node, key: &str) -> Option<Jq> {
        let text = match node.as_scalar().map(yaml::Scalar::typed) {
            Some(Ok(Typed::String(text))) => text,
            Some(Ok(Typed::Bool(value))) if key == "if" => value.to_string(),
            _ => {
                self.diag.error(
                    node.span,
                    format!("`{key}` must be a jq expression, found {}", node.describe()),
                    Some(match key {
                        "if" => "for example `if: .steps.kind.output.confidence < 0.8`".to_owned(),
                        _ => "for example `for_each: .input.documents`".to_owned(),
                    }),
                );
                return None;
            }
        };
        let body = expr::body(text.trim()).unwrap_or(&text);
        match Jq::compile(body) {
            Ok(jq) => Some(jq),
            Err(error) => {
                self.diag.error(
                    node.span,
                    format!(
                        "invalid `{key}` expression `{}`: {}",
                        text.trim(),
                        error.message
                    ),
                    error.help,
                );
                None
            }
        }
    }

    /// A whole number in `1..=max`.
    pub(super) fn count(&mut self, node: &Node, key: &str, max: u64) -> Option<u32> {
        let value = match node.as_scalar().map(yaml::Scalar::typed) {
            Some(Ok(Typed::Number(value))) => value.as_u64(),
            _ => None,
        };
        match value {
            Some(value) if (1..=max).contains(&value) => Some(value as u32),
            _ => {
                self.diag.error(
                    node.span,
                    format!(
                        "`{key}` must be a whole number from 1 to {max}, found {}",
                        shown(node)
                    ),
                    None,
                );
                None
            }
        }
    }

    /// `concurrency:` of the workflow, `max_concurrency:` of a step.
    pub(super) fn parallelism(&mut self, node: &Node, key: &str) -> Option<u32> {
        self.count(node, key, MAX_PARALLEL)
    }

    /// A duration such as `250ms`, `5s`, `2m`.
    pub(super) fn duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let text = self.text(node, &format!("`{key}`"))?;
        match limits::parse_duration(&text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.diag
                    .error(node.span, format!("`{key}`: {message}"), None);
                None
            }
        }
    }

    /// `retry:` of the workflow or a step.
    pub(super) fn retry(&mut self, node: &Node, owner: &str) -> Option<RetrySettings> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`retry` must be a mapping, found {}", node.describe()),
                Some("write for example `retry: { max_attempts: 3, backoff: exponential, initial_interval: 1s }`".to_owned()),
            );
            return None;
        };
        let fields = self.fields(entries, &format!("`retry` of {owner}"), &RETRY_KEYS);
        let mut settings = RetrySettings::default();
        let mut ok = true;
        if let Some(value) = fields.get("max_attempts") {
            settings.max_attempts = self.count(value, "retry.max_attempts", MAX_ATTEMPTS);
            ok &= settings.max_attempts.is_some();
        }
        if let Some(value) = fields.get("backoff") {
            settings.backoff = match self.text(value, "`retry.backoff`").as_deref() {
                Some("constant") => Some(Backoff::Constant),
                Some("exponential") => Some(Backoff::Exponential),
                Some(other) => {
                    self.diag.error(
                        value.span,
                        format!("unknown backoff `{other}`"),
                        Some("`backoff` is `constant` or `exponential`".to_owned()),
                    );
                    None
                }
                None => None,
            };
            ok &= settings.backoff.is_some();
        }
        for key in ["initial_interval", "max_interval"] {
            if let Some(value) = fields.get(key) {
                let duration = self.duration(value, &format!("retry.{key}"));
                ok &= duration.is_some();
                if key == "initial_interval" {
                    settings.initial_interval = duration;
                } else {
                    settings.max_interval = duration;
                }
            }
        }
        if let (Some(initial), Some(max), Some(node)) = (
            settings.initial_interval,
            settings.max_interval,
            fields.get("max_interval"),
        ) && max < initial
        {
            ok = false;
            self.diag.error(
                node.span,
                format!(
                    "`retry.max_interval` ({}) is shorter than `initial_interval` ({})",
                    humantime::format_duration(max),
                    humantime::format_duration(initial)
                ),
                Some("the longest delay cannot be shorter than the first".to_owned()),
            );
        }
        if let Some(value) = fields.get("jitter") {
            settings.jitter = match value.as_scalar().map(yaml::Scalar::typed) {
                Some(Ok(Typed::Bool(true))) => Some(1.0),
                Some(Ok(Typed::Bool(false))) => Some(0.0),
                Some(Ok(Typed::Number(value)))
                    if value.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) =>
                {
                    value.as_f64()
                }
                _ => {
                    self.diag.error(
                        value.span,
                        format!(
                            "`retry.jitter` must be a fraction from 0 to 1 or a boolean, found {}",
                            shown(value)
                        ),
                        Some(
                            "`jitter: 0.2` makes a fifth of each delay random; `true` all of it"
                                .to_owned(),
                        ),
                    );
                    None
                }
            };
            ok &= settings.jitter.is_some();
        }
        ok.then_some(settings)
    }

    /// `on_error:`: `fail`, `continue`, or `{ fallback: STEP }`.
    pub(super) fn on_error(&mut self, node: &Node) -> Option<(OnError, Option<(String, Span)>)> {
        const FORMS: &str =
            "`on_error` is `fail` (the default), `continue`, or `{ fallback: STEP_ID }`";
        match &node.kind {
            NodeKind::Scalar(scalar) => match scalar.value.as_str() {
                "fail" => Some((OnError::Fail, None)),
                "continue" => Some((OnError::Continue, None)),
                other => {
                    let help = if self.step_ids.iter().any(|(id, _)| id == other) {
                        format!(
                            "{FORMS}; to run step `{other}` when this one fails, write `on_error: {{ fallback: {other} }}`"
                        )
                    } else if other == "retry" {
                        format!("{FORMS}; retries are set with the step's `retry:`")
                    } else {
                        let close = closest(other, ["fail", "continue"])
                            .map(|known| format!("did you mean `{known}`? "))
                            .unwrap_or_default();
                        format!("{close}{FORMS}")
                    };
                    self.diag.error(
                        node.span,
                        format!("unknown `on_error` value `{other}`"),
                        Some(help),
                    );
                    None
                }
            },
            NodeKind::Mapping(entries) => {
                let fields = self.fields(entries, "`on_error`", &["fallback"]);
                let Some(target) = fields.get("fallback") else {
                    if !fields.suggested("fallback") {
                        self.diag.error(
                            node.span,
                            "`on_error` mapping without `fallback`",
                            Some(FORMS.to_owned()),
                        );
                    }
                    return None;
                };
                let id = self.text(target, "`on_error.fallback`")?;
                let step = match StepId::new(&id) {
                    Ok(step) => step,
                    Err(error) => {
                        self.diag
                            .error(target.span, error.to_string(), Some(FORMS.to_owned()));
                        return None;
                    }
                };
                Some((OnError::Fallback(step), Some((id, target.span))))
            }
            NodeKind::Sequence(_) => {
                self.diag.error(
                    node.span,
                    format!(
                        "`on_error` must be `fail`, `continue` or a mapping, found {}",
                        node.describe()
                    ),
                    Some(FORMS.to_owned()),
                );
                None
            }
        }
    }

    /// `cache:`: `true`, `false`, or how long an entry may be reused.
    pub(super) fn cache(&mut self, node: &Node) -> Option<Option<StepCache>> {
        match node.as_scalar().map(yaml::Scalar::typed) {
            Some(Ok(Typed::Bool(true))) => Some(Some(StepCache { ttl: None })),
            Some(Ok(Typed::Bool(false))) => Some(None),
            Some(Ok(Typed::String(_))) => self
                .duration(node, "cache")
                .map(|ttl| Some(StepCache { ttl: Some(ttl) })),
            _ => {
                self.diag.error(
                    node.span,
                    format!(
                        "`cache` must be `true`, `false` or a duration, found {}",
                        shown(node)
                    ),
                    Some(
                        "`cache: true` reuses outputs for ever, `cache: 1h` for an hour".to_owned(),
                    ),
                );
                None
            }
        }
    }

    /// The wait's `default:` output as JSON.
    pub(super) fn default_output(&mut self, node: &Node) -> Option<Value> {
        yaml::to_json(node, self.diag)
    }

    /// Resolves every step's needs and checks the graph: needs name known,
    /// other, distinct steps; there is no cycle; fallbacks are plain steps
    /// used once; and each expression reads only steps its step needs,
    /// directly or through other needs.
    pub(super) fn graph(&mut self, steps: &[GraphStep], flows: &[StepFlow]) -> Option<Graph> {
        let ids: Vec<&str> = steps.iter().map(|step| step.id.as_str()).collect();
        let index_of: BTreeMap<&str, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut ok = true;

        // Fallbacks first: they are left out of the pipeline order.
        let mut fallback_of: BTreeMap<usize, usize> = BTreeMap::new();
        for (index, flow) in flows.iter().enumerate() {
            let Some((target, span)) = &flow.fallback else {
                continue;
            };
            match index_of.get(target.as_str()) {
                None => {
                    ok = false;
                    self.unknown_step(target, *span, &ids, "steps");
                }
                Some(&target_index) if target_index == index => {
                    ok = false;
                    self.diag.error(
                        *span,
                        format!("step `{target}` cannot be its own fallback"),
                        Some("name another step, which runs when this one fails".to_owned()),
                    );
                }
                Some(&target_index) => {
                    if let Some(&first) = fallback_of.get(&target_index) {
                        ok = false;
                        self.diag.error(
                            *span,
                            format!(
                                "step `{target}` is already the fallback of step `{}`",
                                ids[first]
                            ),
                            Some(
                                "a fallback step serves one step; copy it under another id"
                                    .to_owned(),
                            ),
                        );
                        continue;
                    }
                    let target_flow = &flows[target_index];
                    if let Some((_, needs_span)) = &target_flow.needs {
                        ok = false;
                        self.diag.error(
                            *needs_span,
                            format!("step `{target}` is the fallback of `{}`, so it cannot have `needs`", ids[index]),
                            Some(format!("a fallback runs when `{}` fails and reads what that step reads; remove `needs`", ids[index])),
                        );
                    }
                    if let Some((_, own)) = &target_flow.fallback {
                        ok = false;
                        self.diag.error(
                            *own,
                            format!("step `{target}` is the fallback of `{}`, so it cannot have a fallback of its own", ids[index]),
                            Some("give the fallback `on_error: continue`, or handle the failure in one fallback".to_owned()),
                        );
                    }
                    if let Some(span) = target_flow.conditional {
                        ok = false;
                        self.diag.error(
                            span,
                            format!("step `{target}` is the fallback of `{}`, so it cannot have `if` or `for_each`", ids[index]),
                            Some("a fallback runs exactly when its step fails".to_owned()),
                        );
                    }
                    if steps[index].for_each {
                        ok = false;
                        self.diag.error(
                            *span,
                            format!("step `{}` runs `for_each`, which cannot have a fallback step", ids[index]),
                            Some("use `on_error: continue`: each failed item's output is `{\"error\": ...}`, which a later step can handle".to_owned()),
                        );
                    }
                    if !steps[target_index].component {
                        ok = false;
                        self.diag.error(*span, format!("step `{target}` is a `wait` or `sleep` step and cannot be a fallback"), Some("a fallback runs a component in place of the failed step".to_owned()));
                    }
                    fallback_of.insert(target_index, index);
                }
            }
        }

        let pipeline = flows.iter().all(|flow| flow.needs.is_none());
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        let mut previous: Option<usize> = None;
        for (index, flow) in flows.iter().enumerate() {
            if fallback_of.contains_key(&index) {
                continue;
            }
            if pipeline {
                needs[index].extend(previous);
                previous = Some(index);
                continue;
            }
            let Some((written, _)) = &flow.needs else {
                continue;
            };
            for (id, span) in written {
                match index_of.get(id.as_str()) {
                    None => {
                        ok = false;
                        self.unknown_step(id, *span, &ids, "steps");
                    }
                    Some(&target) if target == index => {
                        ok = false;
                        self.diag.error(
                            *span,
                            format!("step `{id}` cannot need itself"),
                            Some("list the steps that must finish before this one".to_owned()),
                        );
                    }
                    Some(&target) if needs[index].contains(&target) => {
                        ok = false;
                        self.diag.error(
                            *span,
                            format!("step `{id}` is listed twice in `needs`"),
                            Some("list each step once".to_owned()),
                        );
                    }
                    Some(&target) if fallback_of.contains_key(&target) => {
                        ok = false;
                        let primary = ids[fallback_of[&target]];
                        self.diag.error(
                            *span,
                            format!("step `{id}` only runs as the fallback of `{primary}`; need `{primary}` instead"),
                            Some(format!("when `{primary}` fails and `{id}` runs, its output becomes `{primary}`'s output")),
                        );
                    }
                    Some(&target) => needs[index].push(target),
                }
            }
        }
        if !ok {
            return None;
        }
        if let Some(cycle) = find_cycle(&needs) {
            let path: Vec<&str> = cycle.iter().map(|&i| ids[i]).collect();
            let first = cycle[0];
            let span = flows[first]
                .needs
                .as_ref()
                .map_or(steps[first].span, |(_, span)| *span);
            self.diag.error(
                span,
                format!("the steps' `needs` form a cycle: {}", path.join(" → ")),
                Some("a step cannot wait, directly or not, for a step that waits for it; remove one of these needs".to_owned()),
            );
            return None;
        }

        // What each step may read: its needs, transitively. A fallback
        // reads what its step reads, and that step itself.
        let mut reach: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); steps.len()];
        for index in topological(&needs) {
            let mut set = BTreeSet::new();
            for &need in &needs[index] {
                set.insert(need);
                set.extend(reach[need].iter().copied());
            }
            reach[index] = set;
        }
        for (&fallback, &primary) in &fallback_of {
            let mut set = reach[primary].clone();
            set.insert(primary);
            reach[fallback] = set;
        }

        for (index, flow) in flows.iter().enumerate() {
            let direct = if let Some(&primary) = fallback_of.get(&index) {
                vec![primary]
            } else {
                needs[index].clone()
            };
            if !flow.has_input && direct.len() > 1 && steps[index].component {
                ok = false;
                let names: Vec<&str> = direct.iter().map(|&i| ids[i]).collect();
                self.diag.error(
                    steps[index].span,
                    format!(
                        "step `{}` needs {}, so it must say what its input is",
                        ids[index],
                        list(&names)
                    ),
                    Some(format!(
                        "add `input:`, for example `input: {{ a: \"${{ .steps.{}.output }}\" }}`",
                        names[0]
                    )),
                );
            }
            for (step, span) in &flow.reads {
                let Some(&target) = index_of.get(step.as_str()) else {
                    ok = false;
                    let available: Vec<&str> = reach[index].iter().map(|&i| ids[i]).collect();
                    if available.is_empty() {
                        self.diag.error(
                            *span,
                            format!("unknown step `{step}`"),
                            Some(format!(
                                "`{}` needs no step, so it can only read `.input` and `.run`",
                                ids[index]
                            )),
                        );
                    } else {
                        self.unknown_step(
                            step.as_str(),
                            *span,
                            &available,
                            &format!("steps `{}` may read", ids[index]),
                        );
                    }
                    continue;
                };
                if reach[index].contains(&target) {
                    continue;
                }
                ok = false;
                if target == index {
                    self.diag.error(
                        *span,
                        format!("step `{}` cannot read its own output", ids[index]),
                        Some("a step's input is computed before it runs; read `.input` or a step it needs".to_owned()),
                    );
                } else if pipeline && target > index {
                    self.diag.error(
                        *span,
                        format!("step `{step}` is not available yet in step `{}`", ids[index]),
                        Some(format!("steps run in the order they are listed and `{step}` runs after `{}`; move it earlier or read an earlier step", ids[index])),
                    );
                } else {
                    self.diag.error(
                        *span,
                        format!(
                            "step `{}` reads step `{step}` but does not need it",
                            ids[index]
                        ),
                        Some(format!(
                            "add `{step}` to the step's `needs`, so it runs first: `needs: [{}]`",
                            needs[index]
                                .iter()
                                .map(|&i| ids[i])
                                .chain([step.as_str()])
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    );
                }
            }
        }
        if !ok {
            return None;
        }
        Some(
            needs
                .into_iter()
                .enumerate()
                .map(|(index, needs)| (needs, fallback_of.get(&index).copied()))
                .collect(),
        )
    }

    /// The workflow's output when it has no `output:`: its one sink's
    /// (the step no other step needs). Several sinks are refused: which of
    /// them the run returns is for the author to say. `Some(None)`: the
    /// executor's default (the last step listed that is not a fallback) is
    /// the sink already.
    pub(super) fn sink_output(
        &mut self,
        steps: &[super::super::StepDefinition],
    ) -> Option<Option<super::super::template::Template>> {
        let sinks = super::super::flow::sinks(steps);
        match sinks.as_slice() {
            [] => Some(None),
            // The executor outputs the one final step's output and blobs
            // (`Definition::output_step`).
            [_] => Some(None),
            several => {
                let names: Vec<&str> = several.iter().map(|&i| steps[i].id.as_str()).collect();
                let example: Vec<String> = names
                    .iter()
                    .map(|id| {
                        if id.contains('-') {
                            format!("{id}: '${{ .steps[\"{id}\"].output }}'")
                        } else {
                            format!("{id}: \"${{ .steps.{id}.output }}\"")
                        }
                    })
                    .collect();
                self.diag.error(
                    steps[several[0]].span,
                    format!(
                        "the workflow ends in {} steps ({}) and has no `output:`, so what the run outputs is ambiguous",
                        names.len(),
                        list(names.iter().map(|id| format!("`{id}`")))
                    ),
                    Some(format!(
                        "add a top-level `output:` saying what the run returns, for example `output: {{ {} }}`, or make one final step need the others",
                        example.join(", ")
                    )),
                );
                None
            }
        }
    }

    fn unknown_step(&mut self, id: &str, span: Span, available: &[&str], what: &str) {
        let suggestion = closest(id, available.iter().copied())
            .map(|id| format!("did you mean `{id}`? "))
            .unwrap_or_default();
        let help = if available.is_empty() {
            "no step is available here; read the workflow input with `.input`".to_owned()
        } else {
            format!("{suggestion}{what}: {}", list(available))
        };
        self.diag
            .error(span, format!("unknown step `{id}`"), Some(help));
    }
}

/// The value as written, for messages: `` `abc` `` or "a list".
fn shown(node: &Node) -> String {
    match node.as_scalar() {
        Some(scalar) => format!("`{}`", scalar.value),
        None => node.describe().to_owned(),
    }
}

/// A cycle in `needs` (indices, the first repeated at the end), if any.
fn find_cycle(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: usize,
        needs: &[Vec<usize>],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[node] = Mark::Open;
        path.push(node);
        for &next in &needs[node] {
            match marks[next] {
                Mark::Open => {
                    let start = path.iter().position(|&n| n == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, needs, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[node] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; needs.len()];
    for node in 0..needs.len() {
        if marks[node] == Mark::New
            && let Some(mut cycle) = visit(node, needs, &mut marks, &mut Vec::new())
        {
            // Report it in the direction the steps run: a needs b means b first.
            cycle.reverse();
            return Some(cycle);
        }
    }
    None
}

/// The steps in an order where each comes after its needs (no cycles).
pub fn topological(needs: &[Vec<usize>]) -> Vec<usize> {
    let mut order = Vec::with_capacity(needs.len());
    let mut placed = vec![false; needs.len()];
    while order.len() < needs.len() {
        let before = order.len();
        for index in 0..needs.len() {
            if !placed[index] && needs[index].iter().all(|&need| placed[need]) {
                placed[index] = true;
                order.push(index);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order
}
