//! The fuzz suite: generated definitions, expressions and API bodies thrown
//! at the real host, run by `cargo test` for a bounded number of cases
//! (`PROPTEST_CASES` overrides each property's count; a failure prints the
//! shrunk input and nothing is persisted between runs). The component
//! output checks are fuzzed beside their private code, in
//! `host/src/engine/component/fuzz.rs`.

use proptest::prelude::*;
use proptest::test_runner::Config;

mod api;
mod definitions;
mod expressions;

/// A property's configuration: `cases` cases unless `PROPTEST_CASES` says
/// otherwise, no failure files, shrinking bounded in time.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// Filters a definition may hold that a host must survive: unbounded
/// recursion, values built thousands of levels deep, gigabytes, loops
/// that never end, text nested past the parser's limit.
pub const HOSTILE: &[&str] = &[
    "def f: [f]; f",
    "def f: 1 + f; f",
    "[range(1e9)]",
    "reduce range(100000) as $i (null; [.])",
    "\"x\" * 1000000000",
    "last(repeat(1))",
    ".input.text | split(\"\") | reduce .[] as $c (null; {c: $c, next: .})",
    "[limit(20000; repeat(1))]",
    "reduce range(40) as $i (\"ab\"; . + .)",
];

/// A filter nested `depth` parentheses deep.
pub fn nested_text(depth: usize) -> String {
    format!("{}.{}", "(".repeat(depth), ")".repeat(depth))
}

/// Leaves of the jq grammar: paths into the run context, literals.
fn jq_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(".steps.a.output".to_owned()),
        Just(".steps.b.output.text".to_owned()),
        Just(".steps.a.status".to_owned()),
        jq_leaf_without_steps(),
    ]
}

/// Leaves that read no step, valid in any step of any definition.
fn jq_leaf_without_steps() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(".".to_owned()),
        Just(".input".to_owned()),
        Just(".input.x".to_owned()),
        Just(".input.text".to_owned()),
        Just(".input.items".to_owned()),
        Just(".input[\"odd key\"]".to_owned()),
        Just(".item".to_owned()),
        Just(".index".to_owned()),
        Just(".run.id".to_owned()),
        Just(".input.items[0]".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        (-1000i64..1000).prop_map(|n| n.to_string()),
        "[a-z ]{0,8}".prop_map(|s| format!("{s:?}")),
    ]
}

/// jq filters from a small grammar: paths, arithmetic, pipes,
/// constructors, string interpolation, conditionals and the common
/// builtins; some fail at run time, some yield no value or several.
pub fn jq_filter() -> impl Strategy<Value = String> {
    grammar(jq_leaf().boxed())
}

/// [`jq_filter`] without `.steps`: filters no definition refuses for
/// reading a step that does not run before.
pub fn jq_filter_without_steps() -> impl Strategy<Value = String> {
    grammar(jq_leaf_without_steps().boxed())
}

fn grammar(leaf: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} | {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} + {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) == ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} // {b}")),
            inner.clone().prop_map(|a| format!("[{a}]")),
            inner.clone().prop_map(|a| format!("{{k: {a}}}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("{a} | length")),
            inner.clone().prop_map(|a| format!("{a} | tostring")),
            inner.clone().prop_map(|a| format!("[{a} | .[]? | . + 1]")),
            inner.clone().prop_map(|a| format!("\"pre \\({a}) post\"")),
            inner.clone().prop_map(|a| format!("try ({a}) catch .")),
            inner.clone().prop_map(|a| format!("first({a})")),
            inner.clone().prop_map(|a| format!("{a} | keys?")),
            inner.clone().prop_map(|a| format!("[{a}] | map(type)")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} as $v | {b}")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(a, b, c)| format!("if {a} then {b} else {c} end")),
        ]
    })
}

/// A filter of the grammar most of the time, a hostile one sometimes.
pub fn any_filter() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => jq_filter(),
        1 => proptest::sample::select(HOSTILE).prop_map(str::to_owned),
        1 => (1usize..400).prop_map(nested_text),
    ]
}
