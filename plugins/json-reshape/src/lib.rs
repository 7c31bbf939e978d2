//! `json-reshape`: a Plait step that builds a new JSON object from parts of
//! its input, addressed by RFC 6901 JSON pointers.
//!
//! Config `fields` maps each output key to a pointer into the input
//! document, for example `{"title": "/meta/title", "first": "/items/0"}`.
//! A pointer that matches nothing yields `null`, or a fatal error when
//! config `strict` is `true`. Input blobs pass through unchanged.

use plait_sdk::{Context, Input, Level, Output, Step, StepError, StepInfo};
use serde_json::{Map, Value, json};

/// The `json-reshape` step.
pub struct JsonReshape;

/// One output key and the pointer it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The key in the output object.
    pub key: String,
    /// The RFC 6901 JSON pointer into the input document.
    pub pointer: String,
}

/// Parses config `fields`: a JSON object whose values are JSON pointers.
///
/// # Errors
///
/// A fatal [`StepError`] when `fields` is not such an object, naming the
/// offending key or pointer.
pub fn parse_fields(fields: &str) -> Result<Vec<Field>, StepError> {
    let map: Map<String, Value> = serde_json::from_str(fields).map_err(|error| {
        StepError::fatal(format!(
            "config `fields` must be a JSON object mapping output keys to JSON pointers: {error}"
        ))
    })?;
    map.into_iter()
        .map(|(key, pointer)| {
            let Value::String(pointer) = pointer else {
                return Err(StepError::fatal(format!(
                    "config `fields`: the pointer for key `{key}` must be a string, not {pointer}"
                )));
            };
            validate_pointer(&pointer).map_err(|problem| {
                StepError::fatal(format!(
                    "config `fields`: `{pointer}` (for key `{key}`) is not a JSON pointer: {problem}"
                ))
            })?;
            Ok(Field { key, pointer })
        })
        .collect()
}

/// Checks RFC 6901 syntax: empty, or `/`-separated tokens in which `~` is
/// only ever followed by `0` or `1`. `serde_json` would silently treat a
/// malformed pointer as matching nothing, hiding a configuration mistake.
fn validate_pointer(pointer: &str) -> Result<(), &'static str> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("it must be empty or start with `/`");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("`~` must be followed by `0` or `1`");
        }
    }
    Ok(())
}

/// Builds the output object; also returns the fields whose pointer matched
/// nothing (their output value is `null`).
pub fn reshape(input: &Value, fields: &[Field]) -> (Map<String, Value>, Vec<Field>) {
    let mut output = Map::new();
    let mut missing = Vec::new();
    for field in fields {
        let value = match input.pointer(&field.pointer) {
            Some(value) => value.clone(),
            None => {
                missing.push(field.clone());
                Value::Null
            }
        };
        output.insert(field.key.clone(), value);
    }
    (output, missing)
}

impl Step for JsonReshape {
    type Input = Value;
    type Output = Map<String, Value>;

    fn info() -> StepInfo {
        StepInfo::new("json-reshape", env!("CARGO_PKG_VERSION"))
            .description(
                "Builds a JSON object whose keys are read from the input through RFC 6901 \
                 JSON pointers; passes input blobs through.",
            )
            .output_schema(json!({"type": "object"}))
            .config(
                "fields",
                "A JSON object mapping each output key to a JSON pointer into the input, \
                 for example {\"title\": \"/meta/title\"}.",
                true,
            )
            .config(
                "strict",
                "`true` to fail when a pointer matches nothing instead of writing null; \
                 `false` when unset.",
                false,
            )
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Map<String, Value>>, StepError> {
        let fields = parse_fields(&ctx.require_config("fields")?)?;
        let strict = ctx.config_parsed::<bool>("strict")?.unwrap_or(false);
        let (output, missing) = reshape(&input.data, &fields);
        if strict && !missing.is_empty() {
            let named: Vec<String> = missing
                .iter()
                .map(|field| format!("`{}` (for key `{}`)", field.pointer, field.key))
                .collect();
            return Err(StepError::fatal(format!(
                "JSON pointer {} matched nothing in the input, and `strict` is true",
                named.join(", ")
            ))
            .with_details(json!({
                "missing": missing
                    .iter()
                    .map(|field| json!({"key": field.key, "pointer": field.pointer}))
                    .collect::<Vec<_>>(),
            })));
        }
        for field in &missing {
            ctx.log(
                Level::Warn,
                "JSON pointer matched nothing; wrote null",
                &[("key", &field.key), ("pointer", &field.pointer)],
            );
        }
        Ok(Output::new(output).with_blobs(input.blobs))
    }
}

plait_sdk::export_step!(JsonReshape);

#[cfg(test)]
mod tests {
    use super::*;
    use plait_sdk::testing::{TestContext, run};
    use plait_sdk::{Blob, Level};

    fn document() -> Value {
        json!({
            "meta": {"title": "Report", "a/b": 1, "m~n": 2},
            "items": [{"id": 7}, {"id": 8}],
        })
    }

    #[test]
    fn picks_values_by_pointer() {
        let ctx = TestContext::new()
            .config(
                "fields",
                r#"{"title": "/meta/title", "second": "/items/1/id", "slash": "/meta/a~1b",
                    "tilde": "/meta/m~0n", "all": ""}"#,
            )
            .build();
        let (json, _) = run::<JsonReshape>(&ctx, document(), vec![]).expect("step succeeds");
        assert_eq!(
            json,
            json!({"title": "Report", "second": 8, "slash": 1, "tilde": 2, "all": document()})
        );
    }

    #[test]
    fn missing_pointer_is_null_and_logged() {
        let test = TestContext::new().config("fields", r#"{"x": "/nope"}"#);
        let (json, _) = run::<JsonReshape>(&test.build(), document(), vec![]).expect("succeeds");
        assert_eq!(json, json!({"x": null}));
        let logs = test.logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].level, Level::Warn);
        assert_eq!(logs[0].field("pointer"), Some("/nope"));
    }

    #[test]
    fn strict_missing_pointer_is_fatal_and_named() {
        let ctx = TestContext::new()
            .config("fields", r#"{"t": "/meta/title", "x": "/items/5"}"#)
            .config("strict", "true")
            .build();
        let error = run::<JsonReshape>(&ctx, document(), vec![]).expect_err("strict");
        assert!(!error.is_retryable());
        assert!(
            error.message().contains("`/items/5` (for key `x`)"),
            "{error}"
        );
        assert_eq!(
            error.details(),
            Some(&json!({"missing": [{"key": "x", "pointer": "/items/5"}]}))
        );
    }

    #[test]
    fn passes_blobs_through() {
        let ctx = TestContext::new().config("fields", "{}").build();
        let blob = Blob::new("document", "application/pdf", vec![1, 2, 3]);
        let (json, blobs) =
            run::<JsonReshape>(&ctx, json!(null), vec![blob.clone()]).expect("succeeds");
        assert_eq!(json, json!({}));
        assert_eq!(blobs, [blob]);
    }

    #[test]
    fn bad_fields_config_is_fatal() {
        let cases = [
            (r#"["/a"]"#, "must be a JSON object"),
            (r#"{"a": 1}"#, "pointer for key `a` must be a string"),
            (r#"{"a": "meta"}"#, "must be empty or start with `/`"),
            (r#"{"a": "/m~2"}"#, "`~` must be followed by `0` or `1`"),
        ];
        for (fields, expected) in cases {
            let ctx = TestContext::new().config("fields", fields).build();
            let error = run::<JsonReshape>(&ctx, document(), vec![]).expect_err(fields);
            assert!(!error.is_retryable());
            assert!(error.message().contains(expected), "{fields}: {error}");
        }
    }

    #[test]
    fn missing_fields_config_is_fatal() {
        let error = run::<JsonReshape>(&TestContext::new().build(), document(), vec![])
            .expect_err("no fields");
        assert!(
            error.message().contains("missing config `fields`"),
            "{error}"
        );
    }
}
