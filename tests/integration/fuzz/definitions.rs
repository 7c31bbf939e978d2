//! Definitions with expressions: structured workflow files (steps with
//! valid and invalid ids, `needs` with cycles and unknown ids, `if:`,
//! `for_each:`, templates, retries, timeouts), then mangled (cut short,
//! nested thousands deep, huge strings, control characters, duplicated
//! lines), validated by `Definition::parse`. It must never panic, every
//! error must point at a line of the file, and the result must be the same
//! on a second parse.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use plait::definition::{Definition, DefinitionErrors, StepId};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use super::{HOSTILE, any_filter, config, jq_filter_without_steps, nested_text};

const PATH: &str = "fuzz.yaml";

/// Step ids: mostly valid (so that `needs` can meet them), some not.
fn step_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(&["a", "b", "c", "ocr", "step-2", "x_y9"][..]).prop_map(str::to_owned),
        1 => proptest::sample::select(
            &["", "A", "1a", "a b", "a\u{1b}[2J", "é", "a:b", "-x", "a\nb", "a\u{202e}b"][..]
        )
        .prop_map(str::to_owned),
        1 => Just("z".repeat(65)),
    ]
}

/// A `${ ... }` leaf, alone or inside text, or a literal.
fn template_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any_filter().prop_map(|jq| Value::String(format!("${{ {jq} }}"))),
        2 => (any_filter(), "[a-z ]{0,6}").prop_map(|(jq, text)| Value::String(format!("{text} ${{ {jq} }} and ${{.input.x}}"))),
        1 => Just(Value::String("${ unclosed".to_owned())),
        1 => Just(Value::String("${}".to_owned())),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => "\\PC{0,12}".prop_map(Value::String),
    ]
}

/// An `input:` or `output:` template, nested a little.
fn template() -> impl Strategy<Value = Value> {
    template_leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..3)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A jq expression as YAML: quoted, with or without `${ }`, or plain
/// (where a `:` or `#` in it changes what YAML reads).
fn expression_yaml() -> impl Strategy<Value = String> {
    (any_filter(), 0..3u8).prop_map(|(jq, how)| match how {
        0 => json_text(&format!("${{ {jq} }}")),
        1 => json_text(&jq),
        _ => format!("${{ {jq} }}"),
    })
}

fn duration() -> impl Strategy<Value = String> {
    proptest::sample::select(
        &[
            "5s",
            "0s",
            "\"-1s\"",
            "1y",
            "forever",
            "99999999999999999h",
            "5",
            "\"\"",
            "1ms",
            "[1s]",
        ][..],
    )
    .prop_map(str::to_owned)
}

fn retry() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(&["-1", "0", "1", "3", "1000000", "99999999999999999999", "x"][..]),
        proptest::sample::select(&["constant", "exponential", "wild", "[]"][..]),
        proptest::sample::select(&["0.5", "2", "-1", "true", "nan", ".inf"][..]),
        duration(),
    )
        .prop_map(|(attempts, backoff, jitter, interval)| {
            format!(
                "{{ max_attempts: {attempts}, backoff: {backoff}, jitter: {jitter}, initial_interval: {interval} }}"
            )
        })
}

/// One step, as the lines of a YAML sequence entry.
fn step() -> impl Strategy<Value = String> {
    (
        step_id(),
        prop_oneof![
            Just("uses: echo.wasm".to_owned()),
            Just("uses: /dev/zero".to_owned()),
            Just("uses: \"\"".to_owned()),
            Just("type: wait\n    timeout: 1s\n    default: { approved: false }".to_owned()),
            Just("type: sleep\n    duration: 1s".to_owned()),
            Just("type: nonsense".to_owned()),
            Just(String::new()),
        ],
        prop::option::of(prop::collection::vec(step_id(), 0..4)),
        prop::option::of(expression_yaml()),
        prop::option::of(expression_yaml()),
        prop::option::of(template()),
        prop::option::of(retry()),
        prop::option::of(duration()),
        prop::option::of(prop_oneof![
            Just("fail".to_owned()),
            Just("continue".to_owned()),
            step_id().prop_map(|id| format!("{{ fallback: {} }}", json_text(&id))),
            Just("{ fallback: [] }".to_owned()),
        ]),
    )
        .prop_map(
            |(id, kind, needs, condition, for_each, input, retry, timeout, on_error)| {
                let mut lines = vec![format!("  - id: {}", json_text(&id))];
                if !kind.is_empty() {
                    lines.push(format!("    {kind}"));
                }
                if let Some(needs) = needs {
                    let needs: Vec<String> = needs.iter().map(|id| json_text(id)).collect();
                    lines.push(format!("    needs: [{}]", needs.join(", ")));
                }
                if let Some(condition) = condition {
                    lines.push(format!("    if: {condition}"));
                }
                if let Some(for_each) = for_each {
                    lines.push(format!("    for_each: {for_each}"));
                }
                if let Some(input) = input {
                    lines.push(format!("    input: {input}"));
                }
                if let Some(retry) = retry {
                    lines.push(format!("    retry: {retry}"));
                }
                if let Some(timeout) = timeout {
                    lines.push(format!("    timeout: {timeout}"));
                }
                if let Some(on_error) = on_error {
                    lines.push(format!("    on_error: {on_error}"));
                }
                lines.join("\n")
            },
        )
}

/// A whole definition, well formed as YAML.
fn definition() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            4 => Just("fuzz".to_owned()),
            1 => proptest::sample::select(&["Fuzz", "", "9lives", "a\u{1b}]0;x\u{7}", "ünï"][..]).prop_map(str::to_owned),
            1 => Just("n".repeat(70)),
        ],
        prop::collection::vec(step(), 1..=6),
        prop::option::of(template()),
        prop::option::of(duration()),
        prop::option::of(proptest::sample::select(&["0", "1", "8", "-3", "1e10", "many"][..])),
    )
        .prop_map(|(name, steps, output, timeout, concurrency)| {
            let mut text = format!("name: {}\nsteps:\n{}\n", json_text(&name), steps.join("\n"));
            if let Some(output) = output {
                text.push_str(&format!("output: {output}\n"));
            }
            if let Some(timeout) = timeout {
                text.push_str(&format!("timeout: {timeout}\n"));
            }
            if let Some(concurrency) = concurrency {
                text.push_str(&format!("concurrency: {concurrency}\n"));
            }
            text
        })
}

/// Ways to break a file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the file at a point.
    Truncate(Index),
    /// Open `depth` flow sequences or mappings at a point.
    Nest(Index, usize, char),
    /// A huge plain scalar at a point.
    Huge(Index, usize),
    /// A control or unusual line-break character at a point.
    Control(Index, char),
    /// A line written twice (a duplicate key, or a second step).
    DuplicateLine(Index),
    /// A line removed.
    DeleteLine(Index),
    /// YAML punctuation at a point.
    Punctuation(Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (
            any::<Index>(),
            1usize..3000,
            proptest::sample::select(&['[', '{'][..])
        )
            .prop_map(|(at, depth, open)| Mutation::Nest(at, depth, open)),
        (any::<Index>(), 1usize..300_000).prop_map(|(at, size)| Mutation::Huge(at, size)),
        (
            any::<Index>(),
            proptest::sample::select(
                &[
                    '\0', '\u{1b}', '\r', '\u{7f}', '\u{85}', '\u{2028}', '\u{feff}', '\t',
                    '\u{b}', '\u{c}'
                ][..]
            )
        )
            .prop_map(|(at, c)| Mutation::Control(at, c)),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        any::<Index>().prop_map(Mutation::DeleteLine),
        (any::<Index>(), "[-:\\[\\]{}&*!|>%@`#'\" \n]{1,4}")
            .prop_map(|(at, text)| Mutation::Punctuation(at, text)),
    ]
}

/// The char boundary `at` picks in `text`.
fn boundary(text: &str, at: &Index) -> usize {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    boundaries[at.index(boundaries.len())]
}

fn apply(mut text: String, mutation: &Mutation) -> String {
    match mutation {
        Mutation::Truncate(at) => {
            let end = boundary(&text, at);
            text.truncate(end);
        }
        Mutation::Nest(at, depth, open) => {
            let at = boundary(&text, at);
            text.insert_str(at, &open.to_string().repeat(*depth));
        }
        Mutation::Huge(at, size) => {
            let at = boundary(&text, at);
            text.insert_str(at, &"x".repeat(*size));
        }
        Mutation::Control(at, c) => {
            let at = boundary(&text, at);
            text.insert(at, *c);
        }
        Mutation::DuplicateLine(at) | Mutation::DeleteLine(at) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let index = at.index(lines.len());
            if matches!(mutation, Mutation::DuplicateLine(_)) {
                lines.insert(index, lines[index]);
            } else {
                lines.remove(index);
            }
            text = lines.join("\n");
        }
        Mutation::Punctuation(at, punctuation) => {
            let at = boundary(&text, at);
            text.insert_str(at, punctuation);
        }
    }
    text
}

/// Whole documents that attack the YAML reader itself.
fn hostile_document() -> impl Strategy<Value = String> {
    prop_oneof![
        // Billion laughs: aliases of aliases.
        Just(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\nname: fuzz\nsteps: [{id: a, uses: echo.wasm}]\n".to_owned()
        ),
        // A mapping nested by indentation, thousands deep.
        (100usize..3000).prop_map(|depth| {
            (0..depth).map(|level| format!("{}k:\n", " ".repeat(level))).collect()
        }),
        // Block sequences nested thousands deep on one line.
        (100usize..3000).prop_map(|depth| format!("steps: {}x\n", "- ".repeat(depth))),
        // A duplicate key at the top and inside a step.
        Just("name: fuzz\nname: other\nsteps:\n  - id: a\n    id: b\n    uses: echo.wasm\n".to_owned()),
        // An expression as deep as the text allows, and past it.
        (1usize..2000).prop_map(|depth| format!(
            "name: fuzz\nsteps:\n  - id: a\n    uses: echo.wasm\n    if: {}\n",
            json_text(&format!("${{ {} }}", nested_text(depth)))
        )),
        // Every hostile filter in one definition: they compile (they are
        // jq), and validating them runs none of them.
        Just(format!(
            "name: fuzz\nsteps:\n  - id: a\n    uses: echo.wasm\n    input: {}\n",
            Value::Array(HOSTILE.iter().map(|jq| json!(format!("${{ {jq} }}"))).collect())
        )),
        // Tags, anchors and directives in odd places.
        Just("%YAML 1.2\n---\n!!map {name: !!str fuzz, steps: !!seq [!!map {id: a, uses: !!binary eA==}]}\n...\n---\nsecond: doc\n".to_owned()),
    ]
}

/// A definition that should validate: unique ids, `needs` only of
/// earlier steps, expressions that read no step, an `output:`.
fn well_formed() -> impl Strategy<Value = String> {
    let step = (
        prop_oneof![
            4 => Just("uses: echo.wasm"),
            1 => Just("type: wait\n    timeout: 1h\n    default: { approved: false }"),
            1 => Just("type: sleep\n    duration: 1s"),
        ],
        any::<u8>(),
        prop::option::of(jq_filter_without_steps()),
        prop::option::of(jq_filter_without_steps()),
        prop::option::of(template_without_steps()),
        prop::option::of(Just(
            "{ max_attempts: 3, backoff: constant, initial_interval: 1s }",
        )),
        prop::option::of(proptest::sample::select(&["5s", "1m", "250ms"][..])),
    );
    (
        prop::collection::vec(step, 1..=6),
        any::<bool>(),
        template_without_steps(),
    )
        .prop_map(|(steps, pipeline, output)| {
            let mut text = String::from("name: fuzz\nsteps:\n");
            for (i, (kind, mask, condition, for_each, input, retry, timeout)) in
                steps.iter().enumerate()
            {
                text.push_str(&format!("  - id: s{i}\n    {kind}\n"));
                if !pipeline {
                    let needs: Vec<String> = (0..i)
                        .filter(|j| mask & (1 << j) != 0)
                        .map(|j| format!("s{j}"))
                        .collect();
                    text.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
                }
                let component = kind.starts_with("uses");
                if let (Some(condition), true) = (condition, component) {
                    text.push_str(&format!(
                        "    if: {}\n",
                        json_text(&format!("${{ {condition} }}"))
                    ));
                }
                if let (Some(for_each), true) = (for_each, component) {
                    text.push_str(&format!(
                        "    for_each: {}\n",
                        json_text(&format!("${{ [{for_each}] }}"))
                    ));
                }
                if let (Some(input), true) = (input, component) {
                    text.push_str(&format!("    input: {input}\n"));
                }
                if let (Some(retry), true) = (retry, component) {
                    text.push_str(&format!("    retry: {retry}\n"));
                }
                if let (Some(timeout), true) = (timeout, component) {
                    text.push_str(&format!("    timeout: {timeout}\n"));
                }
            }
            text.push_str(&format!("output: {output}\n"));
            text
        })
}

/// A template whose expressions read no step.
fn template_without_steps() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => jq_filter_without_steps().prop_map(|jq| Value::String(format!("${{ {jq} }}"))),
        1 => (jq_filter_without_steps(), "[a-z ]{0,6}")
            .prop_map(|(jq, text)| Value::String(format!("{text} ${{ {jq} }}!"))),
        1 => any::<i64>().prop_map(Value::from),
        1 => "[a-z ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
            .prop_map(|entries| Value::Object(entries.into_iter().collect()))
    })
}

fn document() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => well_formed(),
        6 => (definition(), prop::collection::vec(mutation(), 0..3)).prop_map(|(text, mutations)| {
            mutations.iter().fold(text, apply)
        }),
        1 => hostile_document(),
    ]
}

fn json_text(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// What must hold of the errors for `text`: each with a position names
/// `fuzz.yaml:LINE:COLUMN` in its rendering and quotes that line; only an
/// empty file has an error without one.
fn check_errors(text: &str, errors: &DefinitionErrors) -> Result<(), TestCaseError> {
    let rendered = errors.to_string();
    prop_assert!(!errors.is_empty() && !rendered.trim().is_empty());
    let lines: Vec<&str> = text.split('\n').collect();
    let mut positioned = false;
    for error in errors {
        prop_assert!(
            !error.message.trim().is_empty(),
            "an empty message in {rendered}"
        );
        match error.span {
            Some(span) => {
                positioned = true;
                let place = format!("{PATH}:{}:{}", span.line, span.column);
                prop_assert!(
                    rendered.contains(&place),
                    "`{place}` is not in:\n{rendered}"
                );
                prop_assert!(
                    span.line >= 1 && span.line <= lines.len(),
                    "line {} of a file of {} lines:\n{rendered}",
                    span.line,
                    lines.len()
                );
                let line = lines[span.line - 1];
                let line = line.strip_suffix('\r').unwrap_or(line);
                prop_assert_eq!(
                    error.snippet(),
                    Some(line),
                    "the quoted line is not line {}",
                    span.line
                );
            }
            None => prop_assert_eq!(
                error.message.as_str(),
                "the workflow definition is empty",
                "only an empty file has an error without a position"
            ),
        }
    }
    prop_assert!(
        positioned || text.trim().is_empty() || !text.contains(|c: char| c.is_alphanumeric()),
        "no error has a position:\n{rendered}"
    );
    Ok(())
}

/// What must hold of a definition that validated.
fn check_definition(definition: &Definition) -> Result<(), TestCaseError> {
    prop_assert!(!definition.steps.is_empty());
    let mut index = HashMap::new();
    for (i, step) in definition.steps.iter().enumerate() {
        prop_assert!(StepId::new(step.id.as_str()).is_ok());
        prop_assert!(
            index.insert(step.id.as_str(), i).is_none(),
            "`{}` twice",
            step.id
        );
    }
    let mut needs = Vec::new();
    for step in &definition.steps {
        let mut of_step = Vec::new();
        for need in &step.needs {
            let Some(&i) = index.get(need.as_str()) else {
                return Err(TestCaseError::fail(format!(
                    "`{}` needs unknown `{need}`",
                    step.id
                )));
            };
            of_step.push(i);
        }
        needs.push(of_step);
    }
    // Every step can be placed after the ones it needs: no cycle.
    let mut placed = HashSet::new();
    while placed.len() < needs.len() {
        let before = placed.len();
        for (i, of_step) in needs.iter().enumerate() {
            if of_step.iter().all(|need| placed.contains(need)) {
                placed.insert(i);
            }
        }
        prop_assert!(placed.len() > before, "a cycle validated: {:?}", needs);
    }
    Ok(())
}

#[test]
fn generated_definitions_never_panic_and_every_error_names_its_line() {
    let mut runner = TestRunner::new(config(128));
    runner
        .run(&document(), |text| {
            let path = Path::new(PATH);
            match Definition::parse(&text, path) {
                Ok(definition) => {
                    check_definition(&definition)?;
                    let again = Definition::parse(&text, path);
                    prop_assert_eq!(again.as_ref(), Ok(&definition), "a second parse differs");
                }
                Err(errors) => {
                    check_errors(&text, &errors)?;
                    let again = Definition::parse(&text, path)
                        .err()
                        .map(|errors| errors.to_string());
                    prop_assert_eq!(again, Some(errors.to_string()), "a second parse differs");
                }
            }
            Ok(())
        })
        .unwrap();
}
