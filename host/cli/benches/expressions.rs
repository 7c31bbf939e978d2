//! Criterion benchmark of the definition language's costs: compiling and
//! running a jq expression, a step input of three expressions on the
//! calling thread and under the evaluation deadline (its own thread), and a
//! no-op step run with and without such an input mapping, and as a fan-out.
//!
//! `cargo bench -p plait-cli --bench expressions`

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use plait::definition::{Definition, Jq, Template};
use plait::plan::Plan;
use plait::store::{Durability, RunStatus};
use serde_json::json;

fn context() -> serde_json::Value {
    json!({
        "input": {"title": "Plait", "n": 3},
        "steps": {"ocr": {"status": "succeeded", "output": {"text": "Invoice 42", "confidence": 0.93, "lines": [{"text": "Invoice 42"}]}}},
        "run": {"id": "r", "workflow": "w"},
    })
}

/// A step input with three expressions, as the validator builds it.
fn template() -> Template {
    let expr = |text: &str| Template::Expr(Jq::compile(text).unwrap());
    Template::Object(vec![
        ("text".into(), expr(".steps.ocr.output.text")),
        ("sure".into(), expr(".steps.ocr.output.confidence >= 0.8")),
        ("lines".into(), expr("[.steps.ocr.output.lines[].text]")),
    ])
}

fn workflow(dir: &std::path::Path, body: &str) -> Definition {
    let noop = serde_json::to_string(support::NOOP).unwrap();
    let text = format!("name: bench\nsteps:\n  - id: a\n    uses: {noop}\n{body}");
    Definition::parse(&text, &dir.join("workflow.yaml")).unwrap()
}

fn expressions(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("expressions");
    group.bench_function("compile `.steps.ocr.output.text`", |b| {
        b.iter(|| Jq::compile(".steps.ocr.output.text").unwrap())
    });
    let context = context();
    let template = template();
    group.bench_function("3-expression input, calling thread", |b| {
        b.iter(|| template.evaluate(&context).unwrap())
    });
    plait::expressions::set_worker_program(env!("CARGO_BIN_EXE_plait"));
    group.bench_function(
        "3-expression input, sandboxed (a path in-process, two in the worker)",
        |b| {
            b.to_async(&runtime).iter(|| {
                let context = context.clone();
                let template = &template;
                async move {
                    plait::expressions::evaluate("input", template, context)
                        .await
                        .unwrap()
                }
            })
        },
    );
    group.finish();

    let dir = tempfile::tempdir().unwrap();
    let engine = support::engine(None);
    let mut group = c.benchmark_group("one no-op step (batched store)");
    for (name, body) in [
        ("no mapping", ""),
        (
            "3-expression input",
            "    input: { t: \"${ .input.title }\", n: \"${ .input.n + 1 }\", r: \"${ .run.id }\" }\n",
        ),
        ("if: true", "    if: .input.n > 0\n"),
        ("for_each over 4 items", "    for_each: \"[range(4)]\"\n"),
    ] {
        let plan: Plan = runtime
            .block_on(Plan::build(&engine, workflow(dir.path(), body)))
            .unwrap();
        let executor = support::executor(
            &dir.path().join(name.replace(' ', "-")),
            Durability::Batched,
        );
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let report = executor
                    .start(
                        &plan,
                        plait::executor::StartRequest::new(json!({"title": "Plait", "n": 3})),
                    )
                    .await
                    .unwrap();
                assert_eq!(report.run.status, RunStatus::Succeeded);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, expressions);
criterion_main!(benches);
