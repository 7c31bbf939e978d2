//! Test guest `bad-output`: returns a payload whose `json` is `{not json`,
//! or, with config `mode` `duplicate-key`, `{"a":1,"a":2}` (an object with
//! a key twice; with `mode` `nested-duplicate-key`,
//! `{"items":[{"id":1},{"id":1,"id":2}]}`).
//!
//! The contract says an output document must parse as JSON, and an
//! object's keys must be unique; the host must reject either output with a
//! clear error naming what is wrong (and not persist it or pass it to the
//! next step). It uses raw WIT bindings because the SDK cannot produce
//! invalid JSON.

// Generated code: the canonical ABI lowers `run` to an eleven-argument
// function.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "plait:step/step",
    });
}

use bindings::plait::step::host::get_config;
use bindings::plait::step::types::{ConfigGrant, Grant, Invocation, Payload, StepError, StepInfo};

/// Implements `plait:step/step` directly on the generated bindings.
pub struct BadOutput;

impl bindings::Guest for BadOutput {
    fn describe() -> StepInfo {
        StepInfo {
            name: "bad-output".to_owned(),
            version: "0.1.0".to_owned(),
            description: "Returns an output document that is not JSON.".to_owned(),
            input_schema: None,
            output_schema: None,
            grants: vec![Grant::Config(ConfigGrant {
                key: "mode".to_owned(),
                description: "`duplicate-key` or `nested-duplicate-key`: JSON with a key twice; \
                              unset: not JSON at all."
                    .to_owned(),
                required: false,
            })],
        }
    }

    fn run(_invocation: Invocation, _input: Payload) -> Result<Payload, StepError> {
        let json = match get_config("mode").as_deref() {
            Some("duplicate-key") => r#"{"a":1,"a":2}"#,
            Some("nested-duplicate-key") => r#"{"items":[{"id":1},{"id":1,"id":2}]}"#,
            _ => "{not json",
        };
        Ok(Payload {
            json: json.to_owned(),
            blobs: Vec::new(),
        })
    }
}

bindings::export!(BadOutput with_types_in bindings);
