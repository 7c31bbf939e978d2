//! Test guest `bad-output`: returns a payload whose `json` is `{not json`.
//!
//! The contract says an output document must parse as JSON; the host must
//! reject this output with a clear error (and not persist it or pass it to
//! the next step). It uses raw WIT bindings because the SDK cannot produce
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

use bindings::plait::step::types::{Invocation, Payload, StepError, StepInfo};

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
            grants: Vec::new(),
        }
    }

    fn run(_invocation: Invocation, _input: Payload) -> Result<Payload, StepError> {
        Ok(Payload {
            json: "{not json".to_owned(),
            blobs: Vec::new(),
        })
    }
}

bindings::export!(BadOutput with_types_in bindings);
