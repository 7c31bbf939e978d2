//! Test guest `extra-import`: implements `plait:step/step` but also imports
//! `plait:missing/secret-store@0.1.0`, which no Plait host provides.
//!
//! The host must refuse it before running anything, with an error naming
//! the unsatisfied import, instead of trapping mid-run. `run` really calls
//! the import, so the toolchain keeps it in the component.

// Generated code: the canonical ABI lowers `run` to an eleven-argument
// function.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        path: ["../../../wit", "wit"],
        world: "plait:missing/extra-import",
        // The world pulls in `plait:step` from another package.
        generate_all,
    });
}

use bindings::plait::missing::secret_store;
use bindings::plait::step::types::{Invocation, Payload, StepError, StepInfo};

/// Implements the extended step world.
pub struct ExtraImport;

impl bindings::Guest for ExtraImport {
    fn describe() -> StepInfo {
        StepInfo {
            name: "extra-import".to_owned(),
            version: "0.1.0".to_owned(),
            description: "Reads a secret through an import the host does not provide.".to_owned(),
            input_schema: None,
            output_schema: None,
            grants: Vec::new(),
        }
    }

    fn run(_invocation: Invocation, input: Payload) -> Result<Payload, StepError> {
        let found = secret_store::get("token").is_some();
        Ok(Payload {
            json: format!(r#"{{"found": {found}}}"#),
            blobs: input.blobs,
        })
    }
}

bindings::export!(ExtraImport with_types_in bindings);
