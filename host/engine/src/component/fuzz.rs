//! Fuzzing what a component returns: random output JSON (valid, broken,
//! huge, nested past the limit, with duplicate keys), random blob lists and
//! random step errors, through the host's checks of them. Part of the fuzz
//! suite (`tests/integration/fuzz.rs`); `PROPTEST_CASES` overrides the
//! case counts.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{Value, json};

use super::{MAX_ERROR_MESSAGE, failure_from_wit, payload_from_wit, wit};
use crate::step::FailureKind;

/// The most [`super::cut`] adds past its limit: `… (N more bytes not kept)`.
const CUT_SUFFIX: usize = 48;

fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        "[\u{0}-\u{1f}\u{7f}\u{202e}\u{fffd}\u{10ffff}a-z]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Output JSON text, and what it must be read as (`None`: refused).
fn output_json() -> impl Strategy<Value = (String, Option<Value>)> {
    prop_oneof![
        4 => json_value().prop_map(|value| (value.to_string(), Some(value))),
        1 => json_value().prop_map(|value| {
            (serde_json::to_string_pretty(&value).unwrap(), Some(value))
        }),
        // A key twice in some object, at some depth.
        2 => (json_value(), "\\PC{0,6}", 0usize..6).prop_map(|(value, key, depth)| {
            let key = serde_json::to_string(&key).unwrap();
            let object = format!("{{{key}: {value}, {key}: {value}}}");
            let text = (0..depth).fold(object, |inner, _| format!("{{\"a\": [{inner}]}}"));
            (text, None)
        }),
        // Nested within the 128-level limit, and far past it.
        1 => (1usize..100).prop_map(|depth| {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let value = serde_json::from_str(&text).unwrap();
            (text, Some(value))
        }),
        1 => (200usize..100_000).prop_map(|depth| {
            (format!("{}{}", "[".repeat(depth), "]".repeat(depth)), None)
        }),
        1 => (200usize..100_000).prop_map(|depth| ("{\"a\":".repeat(depth), None)),
        1 => (0usize..2_000_000).prop_map(|n| {
            let value = json!({"text": "é".repeat(n / 2)});
            (value.to_string(), Some(value))
        }),
        // Broken: cut short, or with punctuation put in; whether that is
        // still JSON is for a lenient parser to say (with no quote or
        // backslash put in, two keys of an object stay different but for
        // keys a punctuation mark apart, too rare to meet).
        2 => (json_value(), any::<Index>(), "[\\[\\]{},:\u{0}\u{feff} ]{0,3}")
            .prop_map(|(value, at, insert)| {
                let text = value.to_string();
                let boundaries: Vec<usize> = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([text.len()])
                    .collect();
                let at = boundaries[at.index(boundaries.len())];
                let text = if insert.is_empty() {
                    text[..at].to_owned()
                } else {
                    format!("{}{insert}{}", &text[..at], &text[at..])
                };
                let expected = serde_json::from_str(&text).ok();
                (text, expected)
            }),
        1 => proptest::sample::select(
            &[
                "", " ", "NaN", "1e400", "-0", "\"\\ud800\"", "\u{feff}{}", "{} {}", "[1,]",
                "{\"a\":1,}", "'a'", "tru", "\"\u{1b}\"", "18446744073709551616",
            ][..]
        )
        .prop_map(|text| (text.to_owned(), serde_json::from_str(text).ok())),
    ]
}

/// Blob names: ordinary, and ones a file system or terminal would take
/// for something else.
fn blob_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&["document", "page-1.png", "out", "a_b"][..]).prop_map(str::to_owned),
        2 => proptest::sample::select(
            &[
                "", "../../etc/passwd", "a/b", "/abs", "..", ".", "a\u{1b}[2Jb", "a\nb", "a\u{0}b",
                "x\u{202e}gpj.exe", "\u{feff}", " ", "日本",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => (1usize..5000).prop_map(|n| "n".repeat(n)),
        1 => "\\PC{0,12}",
    ]
}

fn blobs() -> impl Strategy<Value = Vec<wit::Blob>> {
    let blob = (
        blob_name(),
        prop_oneof![
            Just(String::new()),
            Just("application/octet-stream".to_owned()),
            Just("text/plain; charset=utf-8".to_owned()),
            Just("\r\nX-Injected: 1".to_owned()),
            "\\PC{0,20}",
        ],
        prop_oneof![4 => 0usize..64, 1 => 0usize..(4 << 20)],
        any::<u8>(),
    )
        .prop_map(|(name, media_type, size, byte)| wit::Blob {
            name,
            media_type,
            data: vec![byte; size],
        });
    prop::collection::vec(blob, 0..5)
}

/// Whether `name` is one no rule about names could refuse.
fn ordinary(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

fn step_error() -> impl Strategy<Value = (wit::StepError, u64)> {
    let message = prop_oneof![
        3 => "\\PC{0,80}",
        // Multi-byte characters across the cut.
        2 => (0usize..40_000, proptest::sample::select(&["a", "é", "日", "😀", "\u{1b}"][..]))
            .prop_map(|(n, unit)| unit.repeat(n)),
        1 => (0usize..3_000_000).prop_map(|n| "m".repeat(n)),
    ];
    let details = prop_oneof![
        2 => Just(None),
        2 => json_value().prop_map(|value| Some(value.to_string())),
        1 => "\\PC{0,20}".prop_map(Some),
        1 => Just(Some("{\"code\": 1, \"code\": 2}".to_owned())),
        1 => (0usize..2_000_000).prop_map(|n| Some(json!({"log": "d".repeat(n)}).to_string())),
    ];
    (
        prop_oneof![Just(wit::ErrorKind::Retryable), Just(wit::ErrorKind::Fatal)],
        message,
        details,
        prop_oneof![Just(0u64), 0u64..4096, Just(1 << 20), Just(10 << 20)],
    )
        .prop_map(|(kind, message, details, limit)| {
            (
                wit::StepError {
                    kind,
                    message,
                    details,
                },
                limit,
            )
        })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn output_json_is_read_exactly_or_refused_as_invalid_output(
        (text, expected) in output_json(),
    ) {
        let result = payload_from_wit(wit::Payload { json: text.clone(), blobs: Vec::new() });
        match (result, expected) {
            (Ok(payload), Some(value)) => prop_assert_eq!(payload.json, value),
            (Err(failure), None) => {
                prop_assert_eq!(failure.kind, FailureKind::InvalidOutput);
                prop_assert!(
                    failure.message.starts_with("the step's output is not valid JSON: ")
                        && failure.message.len() > 40,
                    "{}", failure.message
                );
            }
            (Ok(payload), None) => {
                return Err(TestCaseError::fail(format!(
                    "accepted {:?} as {}", cut(&text), payload.json
                )));
            }
            (Err(failure), Some(_)) => {
                return Err(TestCaseError::fail(format!(
                    "refused {:?}: {}", cut(&text), failure.message
                )));
            }
        }
    }

    #[test]
    fn blobs_are_kept_as_returned_or_refused_naming_the_blob(blobs in blobs()) {
        let given = blobs.clone();
        let result = payload_from_wit(wit::Payload { json: "{}".to_owned(), blobs });
        let empty = given.iter().any(|blob| blob.name.is_empty());
        let twice = given
            .iter()
            .enumerate()
            .any(|(i, blob)| given[..i].iter().any(|earlier| earlier.name == blob.name));
        match result {
            Ok(payload) => {
                prop_assert!(!empty && !twice, "accepted an empty or repeated name");
                prop_assert_eq!(payload.blobs.len(), given.len());
                for (kept, returned) in payload.blobs.iter().zip(&given) {
                    prop_assert_eq!(&kept.name, &returned.name);
                    prop_assert_eq!(&kept.media_type, &returned.media_type);
                    prop_assert!(kept.data == returned.data, "the bytes of `{}` changed", kept.name);
                }
            }
            Err(failure) => {
                prop_assert_eq!(failure.kind, FailureKind::InvalidOutput);
                prop_assert!(failure.message.contains("blob"), "{}", failure.message);
                prop_assert!(
                    empty || twice || !given.iter().all(|blob| ordinary(&blob.name)),
                    "refused ordinary blobs: {}", failure.message
                );
            }
        }
    }

    #[test]
    fn a_step_error_is_kept_within_its_limits((error, limit) in step_error()) {
        let given = error.clone();
        let failure = failure_from_wit(error, limit);
        let size = given.message.len() + given.details.as_ref().map_or(0, String::len);
        prop_assert!(
            failure.message.len() <= MAX_ERROR_MESSAGE + CUT_SUFFIX,
            "a message of {} bytes", failure.message.len()
        );
        if size as u64 > limit {
            prop_assert_eq!(failure.kind, FailureKind::LimitExceeded);
            prop_assert!(failure.message.contains("output limit"), "{}", failure.message);
            prop_assert_eq!(
                failure.details.as_ref().map(|details| details["limit"].clone()),
                Some(json!("output"))
            );
            return Ok(());
        }
        let kind = match given.kind {
            wit::ErrorKind::Retryable => FailureKind::Retryable,
            wit::ErrorKind::Fatal => FailureKind::Fatal,
        };
        prop_assert_eq!(failure.kind, kind);
        if given.message.len() <= MAX_ERROR_MESSAGE {
            prop_assert_eq!(&failure.message, &given.message);
        } else {
            let (kept, note) = failure.message.split_once('…').expect("a cut message says so");
            prop_assert!(kept.len() <= MAX_ERROR_MESSAGE && given.message.starts_with(kept));
            prop_assert!(note.contains("more bytes not kept"), "{}", note);
        }
        match (&failure.details, &given.details) {
            (None, None) => {}
            (Some(kept), Some(text)) => {
                match crate::json::from_str::<Value>(text) {
                    Ok(value) => prop_assert_eq!(kept, &value),
                    // Not JSON, or JSON with a key twice (which readers
                    // would read differently): kept as the text it was.
                    Err(_) => prop_assert_eq!(kept, &Value::String(text.clone())),
                }
            }
            (kept, text) => {
                return Err(TestCaseError::fail(format!("details {text:?} became {kept:?}")));
            }
        }
    }
}

/// At most 300 characters of `text`, for a failure message.
fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}
