//! Validated step inputs, blob wiring and workflow output, and their evaluation.
//!
//! A [`Template`] is a JSON value whose leaves may be expressions; the
//! executor evaluates it against a [`Context`] (the workflow input, the
//! outputs of steps that have run, run metadata) to get the JSON a step
//! receives. A [`BlobMapping`] says which blobs a step receives; the executor
//! resolves it against the blobs it holds.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::StepId;
use super::expr::{Accessor, BlobRef, BlobSource, JsonRef};

/// A JSON value with `${ ... }` expressions at some leaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A subtree with no expressions, used as is.
    Literal(Value),
    /// An array with at least one expression inside.
    Array(Vec<Template>),
    /// An object with at least one expression inside, members in file order.
    Object(Vec<(String, Template)>),
    /// An expression, replaced by the value it selects.
    Expr(JsonRef),
}

/// What expressions read from while a run executes.
pub trait Context {
    /// The workflow input document.
    fn input(&self) -> &Value;
    /// The output of step `step`, if it has run.
    fn step_output(&self, step: &StepId) -> Option<&Value>;
    /// The run's identifier.
    fn run_id(&self) -> &str;
    /// The workflow's name.
    fn workflow_name(&self) -> &str;
}

/// A [`Context`] that owns its values: the executor fills in step outputs
/// as steps finish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalContext {
    /// The workflow input document.
    pub input: Value,
    /// Outputs of the steps that have run, by step id.
    pub outputs: BTreeMap<String, Value>,
    /// The run's identifier.
    pub run_id: String,
    /// The workflow's name.
    pub workflow: String,
}

impl EvalContext {
    /// A context for a run of workflow `workflow` with `input`, before any
    /// step has run.
    #[must_use]
    pub fn new(input: Value, run_id: impl Into<String>, workflow: impl Into<String>) -> Self {
        Self {
            input,
            outputs: BTreeMap::new(),
            run_id: run_id.into(),
            workflow: workflow.into(),
        }
    }

    /// Records the output of step `id`, replacing any earlier one.
    pub fn insert_step(&mut self, id: impl Into<String>, output: Value) {
        self.outputs.insert(id.into(), output);
    }
}

impl Context for EvalContext {
    fn input(&self) -> &Value {
        &self.input
    }

    fn step_output(&self, step: &StepId) -> Option<&Value> {
        self.outputs.get(step.as_str())
    }

    fn run_id(&self) -> &str {
        &self.run_id
    }

    fn workflow_name(&self) -> &str {
        &self.workflow
    }
}

/// Why a template could not be evaluated.
///
/// Validation guarantees that expressions only name earlier steps, so this
/// means the executor did not supply an output it should have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The context has no output for a step an expression reads.
    #[error("the output of step `{0}` is not available")]
    MissingStepOutput(StepId),
}

impl Template {
    /// Computes the JSON value, replacing each expression by what it selects.
    ///
    /// Paths follow jq: a missing key, an index past the end, or indexing
    /// into something that is not an object or array gives `null`.
    ///
    /// # Errors
    /// [`EvalError::MissingStepOutput`] when `ctx` lacks a referenced step.
    pub fn evaluate(&self, ctx: &impl Context) -> Result<Value, EvalError> {
        match self {
            Template::Literal(value) => Ok(value.clone()),
            Template::Array(items) => items
                .iter()
                .map(|item| item.evaluate(ctx))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Template::Object(members) => {
                let mut map = Map::new();
                for (key, value) in members {
                    map.insert(key.clone(), value.evaluate(ctx)?);
                }
                Ok(Value::Object(map))
            }
            Template::Expr(expr) => expr.evaluate(ctx),
        }
    }

    /// The steps whose outputs evaluation reads, each once, in id order.
    #[must_use]
    pub fn steps(&self) -> Vec<&StepId> {
        let mut steps = Vec::new();
        self.collect_steps(&mut steps);
        steps.sort();
        steps.dedup();
        steps
    }

    fn collect_steps<'a>(&'a self, steps: &mut Vec<&'a StepId>) {
        match self {
            Template::Literal(_) => {}
            Template::Array(items) => items.iter().for_each(|item| item.collect_steps(steps)),
            Template::Object(members) => members
                .iter()
                .for_each(|(_, value)| value.collect_steps(steps)),
            Template::Expr(expr) => steps.extend(expr.step()),
        }
    }

    /// Builds an array template, collapsing to a literal when no item holds
    /// an expression.
    pub(crate) fn array(items: Vec<Template>) -> Template {
        if items
            .iter()
            .all(|item| matches!(item, Template::Literal(_)))
        {
            Template::Literal(Value::Array(
                items.into_iter().map(Template::into_literal).collect(),
            ))
        } else {
            Template::Array(items)
        }
    }

    /// Builds an object template, collapsing to a literal when no member
    /// holds an expression.
    pub(crate) fn object(members: Vec<(String, Template)>) -> Template {
        if members
            .iter()
            .all(|(_, value)| matches!(value, Template::Literal(_)))
        {
            Template::Literal(Value::Object(
                members
                    .into_iter()
                    .map(|(key, value)| (key, value.into_literal()))
                    .collect(),
            ))
        } else {
            Template::Object(members)
        }
    }

    fn into_literal(self) -> Value {
        match self {
            Template::Literal(value) => value,
            _ => unreachable!("only called on literals"),
        }
    }
}

impl JsonRef {
    /// The value this expression selects in `ctx`.
    ///
    /// # Errors
    /// [`EvalError::MissingStepOutput`] when `ctx` lacks the step's output.
    pub fn evaluate(&self, ctx: &impl Context) -> Result<Value, EvalError> {
        Ok(match self {
            JsonRef::Input(path) => select(ctx.input(), path),
            JsonRef::StepOutput { step, path } => {
                let output = ctx
                    .step_output(step)
                    .ok_or_else(|| EvalError::MissingStepOutput(step.clone()))?;
                select(output, path)
            }
            JsonRef::RunId => Value::String(ctx.run_id().to_owned()),
            JsonRef::WorkflowName => Value::String(ctx.workflow_name().to_owned()),
        })
    }
}

/// Follows `path` from `value`; anything that is not there is `null`.
#[must_use]
pub fn select(value: &Value, path: &[Accessor]) -> Value {
    let mut current = value;
    for accessor in path {
        let next = match (accessor, current) {
            (Accessor::Key(key), Value::Object(map)) => map.get(key),
            (Accessor::Index(index), Value::Array(items)) => items.get(*index),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return Value::Null,
        }
    }
    current.clone()
}

/// Which blobs a step receives, when its definition says (`blobs:`).
///
/// A step without `blobs:` receives the previous step's blobs (the workflow
/// input blobs for the first step); the executor applies that default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobMapping {
    /// `blobs: ${ .blobs }` or `blobs: ${ .steps.ID.blobs }`: every blob of
    /// the source, under its own name.
    All(BlobSource),
    /// `blobs: { NAME: ${ ... } }`: exactly these blobs, each under the name
    /// given by its key (so a blob may be renamed). Empty means no blobs.
    Named(BTreeMap<String, BlobRef>),
}

impl BlobMapping {
    /// The steps whose blobs this mapping reads, each once, in id order.
    #[must_use]
    pub fn steps(&self) -> Vec<&StepId> {
        let mut steps: Vec<&StepId> = match self {
            BlobMapping::All(source) => source.step().into_iter().collect(),
            BlobMapping::Named(named) => named
                .values()
                .filter_map(|blob| blob.source.step())
                .collect(),
        };
        steps.sort();
        steps.dedup();
        steps
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::definition::expr::Expression;

    fn expr(text: &str) -> Template {
        match Expression::parse(text) {
            Ok(Some(Expression::Json(json))) => Template::Expr(json),
            other => panic!("{text}: {other:?}"),
        }
    }

    fn context() -> EvalContext {
        let input = json!({"text": "Hello", "list": [1, {"deep": true}], "odd key": 5});
        let mut context = EvalContext::new(input, "run-1", "chain");
        context.insert_step("read", json!({"meta": ["m0", "m1"], "n": 3}));
        context
    }

    #[test]
    fn evaluates_expressions_at_any_depth() {
        let template = Template::object(vec![
            ("text".into(), expr("${ .input.text }")),
            ("fixed".into(), Template::Literal(json!({"lower": true}))),
            (
                "list".into(),
                Template::array(vec![
                    expr("${ .steps.read.output.meta[1] }"),
                    expr("${ .input.list[1].deep }"),
                    expr("${ .input[\"odd key\"] }"),
                ]),
            ),
            ("run".into(), expr("${ .run.id }")),
            ("workflow".into(), expr("${ .run.workflow }")),
            ("all".into(), expr("${ .steps.read.output }")),
        ]);
        assert_eq!(
            template.evaluate(&context()),
            Ok(json!({
                "text": "Hello",
                "fixed": {"lower": true},
                "list": ["m1", true, 5],
                "run": "run-1",
                "workflow": "chain",
                "all": {"meta": ["m0", "m1"], "n": 3},
            }))
        );
        assert_eq!(template.steps(), [&StepId::new("read").unwrap()]);
    }

    #[test]
    fn missing_paths_are_null() {
        for text in [
            "${ .input.nope }",
            "${ .input.list[9] }",
            "${ .input.text.x }",
            "${ .input.text[0] }",
            "${ .input.list.x }",
            "${ .input[0] }",
            "${ .input.nope.deeper[3] }",
            "${ .steps.read.output.n.x }",
        ] {
            assert_eq!(expr(text).evaluate(&context()), Ok(Value::Null), "{text}");
        }
    }

    #[test]
    fn a_missing_step_output_is_an_error() {
        assert_eq!(
            expr("${ .steps.later.output }").evaluate(&context()),
            Err(EvalError::MissingStepOutput(StepId::new("later").unwrap()))
        );
    }

    #[test]
    fn literal_only_trees_collapse() {
        let template = Template::object(vec![(
            "a".into(),
            Template::array(vec![Template::Literal(json!(1))]),
        )]);
        assert_eq!(template, Template::Literal(json!({"a": [1]})));
        assert!(template.steps().is_empty());
    }
}
