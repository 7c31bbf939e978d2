//! The `inference` interface in a build without the `inference` feature:
//! every model load fails, naming the feature, so a step that needs a model
//! gets an error it can report instead of a missing import.

use std::path::Path;

use super::tensor::Tensor;
use super::{ErrorCode, InferenceError};

/// A loaded model; none can exist in this build.
#[derive(Debug)]
pub struct LoadedModel {
    never: std::convert::Infallible,
}

impl LoadedModel {
    /// Fails: this build has no model runtime.
    pub fn load(name: &str, _folder: &Path) -> Result<LoadedModel, InferenceError> {
        Err(InferenceError::new(
            ErrorCode::Failed,
            format!(
                "model `{name}`: this plait is built without the `inference` feature, so it runs no models; use a build with it (the default, or `--features runtime` at the edge)"
            ),
        ))
    }

    /// The model's name in the store.
    pub fn name(&self) -> &str {
        match self.never {}
    }

    /// The input names, in order.
    pub fn inputs(&self) -> &[String] {
        match self.never {}
    }

    /// Runs the model.
    pub fn run(&self, _inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferenceError> {
        match self.never {}
    }

    /// Reads a file beside the model.
    pub fn read_file(&self, _name: &str) -> Result<Vec<u8>, InferenceError> {
        match self.never {}
    }
}
