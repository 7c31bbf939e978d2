//! The `plait:step/inference` interface: granted models, run by the host.
//!
//! A step names a model; the host looks the name up among the step's
//! granted models only (never the store at large), loads it through the
//! process-wide [`Models`] registry, and runs it on a blocking thread so
//! that the step's timeout can still drop the call.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::StepState;
use crate::bindings::plait::step::inference as wit;
use crate::inference::{self, ErrorCode, InferenceError, LoadedModel, Models};

/// A model a step loaded: a handle in its resource table onto the shared
/// model.
pub struct ModelHandle {
    model: Arc<LoadedModel>,
}

fn to_wit(error: InferenceError) -> wit::Error {
    wit::Error {
        code: match error.code {
            ErrorCode::NotGranted => wit::ErrorCode::NotGranted,
            ErrorCode::NotFound => wit::ErrorCode::NotFound,
            ErrorCode::InvalidInput => wit::ErrorCode::InvalidInput,
            ErrorCode::Failed => wit::ErrorCode::Failed,
        },
        message: error.message,
    }
}

fn from_wit(tensor: wit::Tensor) -> inference::Tensor {
    inference::Tensor {
        name: tensor.name,
        shape: tensor.shape.into_iter().map(|d| d as usize).collect(),
        data: match tensor.data {
            wit::TensorData::F32(values) => inference::TensorData::F32(values),
            wit::TensorData::S64(values) => inference::TensorData::I64(values),
        },
    }
}

fn into_wit(tensor: inference::Tensor) -> Result<wit::Tensor, InferenceError> {
    let shape = tensor
        .shape
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            InferenceError::new(
                ErrorCode::Failed,
                format!("output `{}` has a dimension over 2^32", tensor.name),
            )
        })?;
    Ok(wit::Tensor {
        name: tensor.name,
        shape,
        data: match tensor.data {
            inference::TensorData::F32(values) => wit::TensorData::F32(values),
            inference::TensorData::I64(values) => wit::TensorData::S64(values),
        },
    })
}

/// Runs blocking model work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, InferenceError> + Send + 'static,
) -> Result<T, InferenceError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| {
            Err(InferenceError::new(
                ErrorCode::Failed,
                format!("the inference thread failed: {error}"),
            ))
        })
}

impl wit::Host for StepState {
    async fn load(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<ModelHandle>, wit::Error>> {
        let Some(folder) = self.models.get(&name).cloned() else {
            let granted: Vec<&str> = self.models.keys().map(String::as_str).collect();
            let granted = if granted.is_empty() {
                "it was granted none".to_owned()
            } else {
                format!("it was granted {}", granted.join(", "))
            };
            return Ok(Err(to_wit(InferenceError::new(
                ErrorCode::NotGranted,
                format!(
                    "model `{name}` is not granted to this step ({granted}); declare it in \
                     describe() and grant it under `grants.models` in the workflow"
                ),
            ))));
        };
        let loaded = blocking(move || Models::global().load(&name, &folder)).await;
        match loaded {
            Ok(model) => Ok(Ok(self.table.push(ModelHandle { model })?)),
            Err(error) => Ok(Err(to_wit(error))),
        }
    }
}

impl wit::HostModel for StepState {
    fn inputs(&mut self, model: Resource<ModelHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&model)?.model.inputs().to_vec())
    }

    async fn run(
        &mut self,
        model: Resource<ModelHandle>,
        inputs: Vec<wit::Tensor>,
    ) -> wasmtime::Result<Result<Vec<wit::Tensor>, wit::Error>> {
        let model = self.table.get(&model)?.model.clone();
        let inputs = inputs.into_iter().map(from_wit).collect();
        let outputs = blocking(move || {
            model
                .run(inputs)?
                .into_iter()
                .map(into_wit)
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        Ok(outputs.map_err(to_wit))
    }

    async fn read_file(
        &mut self,
        model: Resource<ModelHandle>,
        name: String,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::Error>> {
        let model = self.table.get(&model)?.model.clone();
        Ok(blocking(move || model.read_file(&name))
            .await
            .map_err(to_wit))
    }

    fn drop(&mut self, model: Resource<ModelHandle>) -> wasmtime::Result<()> {
        self.table.delete(model)?;
        Ok(())
    }
}
