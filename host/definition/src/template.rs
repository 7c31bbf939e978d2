//! Validated step inputs, blob wiring and workflow output, and their evaluation.
//!
//! A [`Template`] is a JSON value whose leaves may be expressions; the
//! executor evaluates it against the run context (the workflow input, the
//! steps the step needs, run metadata) to get the JSON a step receives. A [`BlobMapping`] says which blobs a step receives; the executor
//! resolves it against the blobs it holds.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::StepId;
use super::expr::{BlobRef, BlobSource};
use super::jq::{Jq, JqEvalError};

/// A JSON value with `${ ... }` jq expressions at some leaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A subtree with no expressions, used as is.
    Literal(Value),
    /// An array with at least one expression inside.
    Array(Vec<Template>),
    /// An object with at least one expression inside, members in file order.
    Object(Vec<(String, Template)>),
    /// An expression, replaced by the value it produces.
    Expr(Jq),
}

impl Template {
    /// Computes the JSON value, replacing each expression by what it
    /// produces from `context` (the run context: `.input`, `.steps`,
    /// `.run`, and `.item`/`.index` in a fan-out).
    ///
    /// Runs on the calling thread, for trusted templates only; the
    /// executor evaluates through `plait::expressions`, which bounds time,
    /// memory and stack.
    ///
    /// # Errors
    /// The first expression that fails, names it.
    pub fn evaluate(&self, context: &Value) -> Result<Value, JqEvalError> {
        match self {
            Template::Literal(value) => Ok(value.clone()),
            Template::Array(items) => items
                .iter()
                .map(|item| item.evaluate(context))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Template::Object(members) => {
                let mut map = Map::new();
                for (key, value) in members {
                    map.insert(key.clone(), value.evaluate(context)?);
                }
                Ok(Value::Object(map))
            }
            Template::Expr(expr) => expr.run(context),
        }
    }

    /// Its expressions, in file order (the order [`Template::fill`] takes
    /// their values in).
    #[must_use]
    pub fn expressions(&self) -> Vec<&Jq> {
        let mut found = Vec::new();
        self.collect_expressions(&mut found);
        found
    }

    fn collect_expressions<'a>(&'a self, found: &mut Vec<&'a Jq>) {
        match self {
            Template::Literal(_) => {}
            Template::Array(items) => items
                .iter()
                .for_each(|item| item.collect_expressions(found)),
            Template::Object(members) => members
                .iter()
                .for_each(|(_, value)| value.collect_expressions(found)),
            Template::Expr(expr) => found.push(expr),
        }
    }

    /// Builds the value with each expression replaced by the next of
    /// `values` (computed elsewhere, in [`Template::expressions`] order).
    ///
    /// # Panics
    /// When `values` holds fewer values than the template has expressions.
    pub fn fill(&self, values: &mut impl Iterator<Item = Value>) -> Value {
        match self {
            Template::Literal(value) => value.clone(),
            Template::Array(items) => {
                Value::Array(items.iter().map(|item| item.fill(values)).collect())
            }
            Template::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(key, value)| (key.clone(), value.fill(values)))
                    .collect(),
            ),
            Template::Expr(_) => values.next().expect("one value per expression"),
        }
    }

    /// The steps its expressions name, each once, in id order.
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
            Template::Expr(expr) => steps.extend(expr.steps()),
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

    fn expr(text: &str) -> Template {
        Template::Expr(Jq::compile(text).unwrap())
    }

    fn context() -> Value {
        json!({
            "input": {"text": "Hello", "list": [1, {"deep": true}], "odd key": 5},
            "steps": {"read": {"status": "succeeded", "output": {"meta": ["m0", "m1"], "n": 3}}},
            "run": {"id": "run-1", "workflow": "chain"},
        })
    }

    #[test]
    fn evaluates_expressions_at_any_depth() {
        let template = Template::object(vec![
            ("text".into(), expr(".input.text")),
            ("fixed".into(), Template::Literal(json!({"lower": true}))),
            (
                "list".into(),
                Template::array(vec![
                    expr(".steps.read.output.meta[1]"),
                    expr(".input.list[1].deep"),
                    expr(".input[\"odd key\"]"),
                ]),
            ),
            ("run".into(), expr(".run.id")),
            ("count".into(), expr(".steps.read.output.n + 1")),
        ]);
        assert_eq!(
            template.evaluate(&context()),
            Ok(json!({
                "text": "Hello",
                "fixed": {"lower": true},
                "list": ["m1", true, 5],
                "run": "run-1",
                "count": 4,
            }))
        );
        assert_eq!(template.steps(), [&StepId::new("read").unwrap()]);
    }

    #[test]
    fn missing_paths_are_null_and_errors_name_the_filter() {
        assert_eq!(
            expr(".input.nope.deeper[3]").evaluate(&context()),
            Ok(Value::Null)
        );
        let error = expr(".input.text + 1").evaluate(&context()).unwrap_err();
        assert!(
            error.to_string().contains("`.input.text + 1` failed"),
            "{error}"
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
