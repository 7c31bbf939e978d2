//! Expressions evaluated without a crash: filters of the jq grammar on
//! random run contexts (deep, large, unicode) give in the expression
//! worker exactly what they give in-process, and the hostile filters end
//! in one of the named limits while the host goes on evaluating.

use std::time::{Duration, Instant};

use plait::definition::{Jq, JqEvalError};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use super::{HOSTILE, config, jq_filter, nested_text};

/// JSON values: unicode and control characters in strings and keys,
/// floats, nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        "[\u{0}-\u{1f}\u{7f}\u{202e}\u{fffd}a-z]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// `value` inside `depth` arrays.
fn nest(value: Value, depth: usize) -> Value {
    (0..depth).fold(value, |inner, _| Value::Array(vec![inner]))
}

/// A run context as the executor builds it, with random values where the
/// filters look, sometimes deeply nested or large. The deepest stays
/// within the 128 levels every JSON document Plait reads may have.
fn context() -> impl Strategy<Value = Value> {
    (
        json_value(),
        "\\PC{0,40}",
        prop_oneof![
            3 => prop::collection::vec(json_value(), 0..6),
            1 => (0usize..20_000).prop_map(|n| (0..n).map(Value::from).collect()),
        ],
        json_value(),
        (json_value(), 0usize..120).prop_map(|(value, depth)| nest(value, depth)),
        json_value(),
        0u32..100,
    )
        .prop_map(|(x, text, items, odd, output, item, index)| {
            json!({
                "input": {"x": x, "text": text, "items": items, "odd key": odd},
                "steps": {
                    "a": {"output": output, "status": "succeeded"},
                    "b": {"output": {"text": text}, "status": "skipped"},
                },
                "run": {"id": "019a0000-0000-7000-8000-000000000000", "workflow": "fuzz"},
                "item": item,
                "index": index,
            })
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn grammar_filters_give_in_the_worker_what_they_give_in_process() {
    let runtime = runtime();
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&(jq_filter(), context()), |(text, context)| {
            let Ok(jq) = Jq::compile(&text) else {
                // The grammar writes only jq; what jaq refuses to compile
                // (a path on a literal) never reaches evaluation.
                return Ok(());
            };
            // The grammar is bounded, so in-process is safe here.
            let local = jq.run(&context);
            let remote = runtime.block_on(plait::expressions::run(&jq, context.clone()));
            prop_assert_eq!(remote, local, "`{}` on {}", text, context);
            Ok(())
        })
        .unwrap();
}

/// The errors a hostile filter may end in: each names its limit.
fn is_named_limit(error: &JqEvalError) -> bool {
    matches!(
        error,
        JqEvalError::Stack { .. }
            | JqEvalError::Memory { .. }
            | JqEvalError::Deadline { .. }
            | JqEvalError::TooDeep { .. }
            | JqEvalError::TooBig { .. }
            | JqEvalError::TooLarge { .. }
            | JqEvalError::Failed { .. }
    )
}

#[test]
fn hostile_filters_end_in_a_named_limit_and_the_host_goes_on() {
    let runtime = runtime();
    let mut runner = TestRunner::new(config(2));
    runner
        .run(&context(), |mut context| {
            // The depth of what `reduce` builds comes from the input.
            context["input"]["text"] = Value::String("é".repeat(3000));
            let started = Instant::now();
            let results = runtime.block_on(async {
                let evaluations = HOSTILE.iter().map(|text| {
                    let jq = Jq::compile(text).unwrap();
                    let context = context.clone();
                    async move { (*text, plait::expressions::run(&jq, context).await) }
                });
                futures_util::future::join_all(evaluations).await
            });
            for (text, result) in results {
                match result {
                    Ok(value) => {
                        return Err(TestCaseError::fail(format!(
                            "`{text}` gave a value of {} bytes",
                            value.to_string().len()
                        )));
                    }
                    Err(error) => prop_assert!(is_named_limit(&error), "`{}`: {:?}", text, error),
                }
            }
            // Two workers at a time, each stopped by its 2 s deadline at
            // the latest.
            prop_assert!(started.elapsed() < Duration::from_secs(40));
            // The workers that died were replaced: the next filter runs.
            let jq = Jq::compile("[(.input.text | length), .index + 1]").unwrap();
            let value = runtime.block_on(plait::expressions::run(&jq, context.clone()));
            let index = context["index"].as_u64().unwrap();
            prop_assert_eq!(value, Ok(json!([3000, index + 1])));
            Ok(())
        })
        .unwrap();
}

#[test]
fn filter_text_nested_past_the_limit_is_refused_when_compiled() {
    for depth in [65, 1000, 100_000] {
        let error = Jq::compile(&nested_text(depth)).unwrap_err();
        assert!(
            error.message.contains("nest") || error.message.contains("long"),
            "{depth}: {error}"
        );
    }
    let deepest_allowed = Jq::compile(&nested_text(60)).unwrap();
    assert_eq!(deepest_allowed.run(&json!(1)).unwrap(), json!(1));
}
