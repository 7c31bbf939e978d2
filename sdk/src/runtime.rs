//! The glue between a [`Step`] and the component's WIT exports: the JSON
//! (de)serialization path shared by the wasm export and
//! [`crate::testing::run`], and the conversions to and from the generated
//! WIT types.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::json;

use crate::__private::bindings::{self, plait::step::host, plait::step::types as wit};
use crate::context::HostApi;
use crate::inference::{InferenceError, Model};
use crate::{Blob, Blobs, Context, ErrorKind, Grant, Input, Invocation, Level, Step, StepError};
use crate::{StepInfo, payload::Output};

/// Runs `S` on a serialized input document: deserializes it into
/// [`Step::Input`], runs the step and serializes its output.
///
/// Both the component export and [`crate::testing::run`] go through here, so
/// native tests see exactly the errors the host would.
pub(crate) fn run_json<S: Step>(
    ctx: &Context,
    json: &str,
    blobs: Vec<Blob>,
) -> Result<(String, Vec<Blob>), StepError> {
    let data = decode_input::<S::Input>(json)?;
    let Output { data, blobs } = S::run(
        ctx,
        Input {
            data,
            blobs: Blobs::from(blobs),
        },
    )?;
    check_unique_names(&blobs)?;
    let json = serde_json::to_string(&data).map_err(|error| {
        StepError::fatal(format!(
            "could not serialize the step's output as JSON: {error}"
        ))
    })?;
    Ok((json, blobs))
}

/// Deserializes the input document, turning a mismatch into a fatal error
/// that says where in the document it happened.
fn decode_input<T: DeserializeOwned>(json: &str) -> Result<T, StepError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // serde_path_to_error writes the document root as `.`; a missing
        // field at the root already names itself in `inner`.
        let message = if path == "." {
            format!("invalid input: {inner}")
        } else {
            format!("invalid input at `{path}`: {inner}")
        };
        StepError::fatal(message).with_details(json!({"path": path, "error": inner.to_string()}))
    })?;
    // Rejects trailing characters after the document, as
    // `serde_json::from_str` does.
    deserializer
        .end()
        .map_err(|error| StepError::fatal(format!("invalid input: {error}")))?;
    Ok(value)
}

/// The WIT contract requires blob names to be unique within a payload.
fn check_unique_names(blobs: &[Blob]) -> Result<(), StepError> {
    let mut seen = BTreeSet::new();
    for blob in blobs {
        if !seen.insert(blob.name.as_str()) {
            return Err(StepError::fatal(format!(
                "the step's output has more than one blob named `{}`",
                blob.name
            )));
        }
    }
    Ok(())
}

/// Compile-time check used by [`crate::export_step!`] off wasm32.
pub const fn assert_step<S: Step>() {}

/// Implements the generated WIT `Guest` trait for any [`Step`].
///
/// [`crate::export_step!`] exports `Adapter<MyStep>`; the type itself is
/// never constructed.
pub struct Adapter<S>(PhantomData<fn() -> S>);

impl<S: Step> bindings::Guest for Adapter<S> {
    fn describe() -> wit::StepInfo {
        S::info().into()
    }

    fn run(
        invocation: wit::Invocation,
        input: wit::Payload,
    ) -> Result<wit::Payload, wit::StepError> {
        let ctx = Context::new(invocation.into(), Arc::new(WitHost));
        let blobs = input.blobs.into_iter().map(Blob::from).collect();
        match run_json::<S>(&ctx, &input.json, blobs) {
            Ok((json, blobs)) => Ok(wit::Payload {
                json,
                blobs: blobs.into_iter().map(wit::Blob::from).collect(),
            }),
            Err(error) => Err(error.into()),
        }
    }
}

/// Reaches the host through the component's WIT imports.
struct WitHost;

impl HostApi for WitHost {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<host::LogField> = fields
            .iter()
            .map(|(key, value)| host::LogField {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        host::log(level.into(), message, &fields);
    }

    fn get_config(&self, key: &str) -> Option<String> {
        host::get_config(key)
    }

    fn load_model(&self, name: &str) -> Result<Model, InferenceError> {
        #[cfg(target_arch = "wasm32")]
        {
            let model = crate::inference::wit::load(name)?;
            Ok(Model::new(Arc::new(model)))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Err(InferenceError {
                code: crate::inference::InferenceErrorCode::NotGranted,
                message: format!(
                    "model `{name}`: the host's inference interface exists only inside a component"
                ),
            })
        }
    }
}

impl From<Level> for host::LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

impl From<wit::Invocation> for Invocation {
    fn from(invocation: wit::Invocation) -> Self {
        Self {
            run_id: invocation.run_id,
            step_id: invocation.step_id,
            attempt: invocation.attempt,
            idempotency_key: invocation.idempotency_key,
        }
    }
}

impl From<wit::Blob> for Blob {
    fn from(blob: wit::Blob) -> Self {
        Self {
            name: blob.name,
            media_type: blob.media_type,
            data: blob.data,
        }
    }
}

impl From<Blob> for wit::Blob {
    fn from(blob: Blob) -> Self {
        Self {
            name: blob.name,
            media_type: blob.media_type,
            data: blob.data,
        }
    }
}

impl From<StepError> for wit::StepError {
    fn from(error: StepError) -> Self {
        Self {
            kind: match error.kind() {
                ErrorKind::Retryable => wit::ErrorKind::Retryable,
                ErrorKind::Fatal => wit::ErrorKind::Fatal,
            },
            // The contract asks for a one-line message; a multi-line one
            // would break the host's line-oriented logs.
            message: one_line(error.message()),
            details: error.details().map(|details| details.to_string()),
        }
    }
}

impl From<StepInfo> for wit::StepInfo {
    fn from(info: StepInfo) -> Self {
        Self {
            name: info.name,
            version: info.version,
            description: info.description,
            input_schema: info.input_schema.map(|schema| schema.to_string()),
            output_schema: info.output_schema.map(|schema| schema.to_string()),
            grants: info.grants.into_iter().map(wit::Grant::from).collect(),
        }
    }
}

impl From<Grant> for wit::Grant {
    fn from(grant: Grant) -> Self {
        match grant {
            Grant::Config {
                key,
                description,
                required,
            } => Self::Config(wit::ConfigGrant {
                key,
                description,
                required,
            }),
            Grant::Secret(name) => Self::Secret(name),
            Grant::Directory(path) => Self::Directory(path),
            Grant::OutboundHttp(url) => Self::OutboundHttp(url),
            Grant::Model(name) => Self::Model(name),
        }
    }
}

/// Joins the lines of `message` with spaces.
fn one_line(message: &str) -> String {
    if message.contains(['\n', '\r']) {
        message
            .split(['\n', '\r'])
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        message.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestContext;
    use serde::{Deserialize, Serialize};

    /// Expects `{"text": string, "nested": {"count": u32}}`.
    struct Typed;

    #[derive(Deserialize)]
    struct TypedInput {
        text: String,
        nested: Nested,
    }

    #[derive(Deserialize)]
    struct Nested {
        count: u32,
    }

    impl Step for Typed {
        type Input = TypedInput;
        type Output = (String, u32);

        fn info() -> StepInfo {
            StepInfo::new("typed", "0.1.0")
        }

        fn run(
            _ctx: &Context,
            input: Input<TypedInput>,
        ) -> Result<Output<(String, u32)>, StepError> {
            Ok((input.data.text, input.data.nested.count).into())
        }
    }

    fn run_typed(json: &str) -> Result<(String, Vec<Blob>), StepError> {
        run_json::<Typed>(&TestContext::new().build(), json, Vec::new())
    }

    #[test]
    fn input_that_matches_is_deserialized() {
        let (json, _) = run_typed(r#"{"text": "hi", "nested": {"count": 1}}"#).unwrap();
        assert_eq!(json, r#"["hi",1]"#);
    }

    #[test]
    fn missing_field_is_fatal_and_named() {
        let error = run_typed(r#"{"nested": {"count": 1}}"#).unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.message().contains("missing field `text`"), "{error}");
    }

    #[test]
    fn wrong_type_is_fatal_and_names_the_path() {
        let error = run_typed(r#"{"text": "hi", "nested": {"count": "many"}}"#).unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error
                .message()
                .starts_with("invalid input at `nested.count`: invalid type"),
            "{error}"
        );
        assert_eq!(error.details().unwrap()["path"], "nested.count");
    }

    #[test]
    fn trailing_characters_are_rejected() {
        let error = run_typed(r#"{"text": "hi", "nested": {"count": 1}} x"#).unwrap_err();
        assert!(error.message().contains("trailing characters"), "{error}");
    }

    /// Returns a map with non-string keys, which JSON cannot represent.
    struct Unserializable;

    impl Step for Unserializable {
        type Input = serde::de::IgnoredAny;
        type Output = std::collections::BTreeMap<Vec<u8>, u8>;

        fn info() -> StepInfo {
            StepInfo::new("unserializable", "0.1.0")
        }

        fn run(
            _ctx: &Context,
            _input: Input<Self::Input>,
        ) -> Result<Output<Self::Output>, StepError> {
            Ok(std::collections::BTreeMap::from([(vec![1], 1)]).into())
        }
    }

    #[test]
    fn output_serialization_failure_is_fatal() {
        let error = run_json::<Unserializable>(&TestContext::new().build(), "null", Vec::new())
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error
                .message()
                .starts_with("could not serialize the step's output"),
            "{error}"
        );
    }

    /// Emits two blobs with the same name.
    struct DuplicateBlobs;

    #[derive(Serialize)]
    struct Nothing {}

    impl Step for DuplicateBlobs {
        type Input = serde::de::IgnoredAny;
        type Output = Nothing;

        fn info() -> StepInfo {
            StepInfo::new("duplicate-blobs", "0.1.0")
        }

        fn run(_ctx: &Context, _input: Input<Self::Input>) -> Result<Output<Nothing>, StepError> {
            Ok(Output::new(Nothing {})
                .with_blob(Blob::new("a", "text/plain", "1"))
                .with_blob(Blob::new("a", "text/plain", "2")))
        }
    }

    #[test]
    fn duplicate_output_blob_names_are_fatal() {
        let error =
            run_json::<DuplicateBlobs>(&TestContext::new().build(), "{}", Vec::new()).unwrap_err();
        assert!(
            error.message().contains("more than one blob named `a`"),
            "{error}"
        );
    }

    #[test]
    fn wit_step_error_is_one_line_with_json_details() {
        let error: wit::StepError = StepError::retryable("first\nsecond")
            .with_details(json!({"a": 1}))
            .into();
        assert!(matches!(error.kind, wit::ErrorKind::Retryable));
        assert_eq!(error.message, "first second");
        assert_eq!(error.details.as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn wit_step_info_carries_schemas_and_grants() {
        let info: wit::StepInfo = StepInfo::new("n", "1.0.0")
            .description("d")
            .input_schema(json!({"type": "object"}))
            .config("k", "what k is", true)
            .secret("s")
            .directory("/data")
            .outbound_http("https://example.com")
            .into();
        assert_eq!(info.input_schema.as_deref(), Some(r#"{"type":"object"}"#));
        assert!(info.output_schema.is_none());
        assert_eq!(info.grants.len(), 4);
        assert!(
            matches!(&info.grants[0], wit::Grant::Config(grant) if grant.key == "k" && grant.required)
        );
        assert!(
            matches!(&info.grants[3], wit::Grant::OutboundHttp(url) if url == "https://example.com")
        );
    }
}
