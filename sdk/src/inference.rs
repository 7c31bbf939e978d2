//! Models the host runs for the step: `plait:step/inference`.
//!
//! A step declares each model it uses with [`crate::StepInfo::model`], the
//! workflow grants it under `grants.models`, and the step loads it with
//! [`crate::Context::load_model`]. The host keeps every model loaded and
//! optimized between invocations, so a step pays only for its own pre- and
//! post-processing and the inference itself.
//!
//! ```no_run
//! use plait_sdk::inference::{Tensor, TensorData};
//! # fn run(ctx: &plait_sdk::Context) -> Result<(), plait_sdk::StepError> {
//! let model = ctx.load_model("all-minilm-l6-v2-int8")?;
//! let ids = Tensor::i64("input_ids", &[1, 3], vec![101, 7592, 102]);
//! let outputs = model.run(vec![ids])?;
//! let TensorData::F32(values) = &outputs[0].data else { unreachable!() };
//! # Ok(()) }
//! ```

use std::sync::Arc;

use serde_json::json;

use crate::StepError;

/// A tensor's values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats: images, embeddings, scores.
    F32(Vec<f32>),
    /// 64-bit integers: token ids, masks.
    I64(Vec<i64>),
}

/// A named, shaped tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The model's name for this input or output.
    pub name: String,
    /// The size of each dimension.
    pub shape: Vec<u32>,
    /// The values.
    pub data: TensorData,
}

impl Tensor {
    /// An `f32` tensor.
    pub fn f32(name: impl Into<String>, shape: &[u32], values: Vec<f32>) -> Tensor {
        Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: TensorData::F32(values),
        }
    }

    /// An `i64` tensor.
    pub fn i64(name: impl Into<String>, shape: &[u32], values: Vec<i64>) -> Tensor {
        Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: TensorData::I64(values),
        }
    }

    /// The values as `f32`, or a fatal error naming the tensor when they are
    /// integers.
    pub fn as_f32(&self) -> Result<&[f32], StepError> {
        match &self.data {
            TensorData::F32(values) => Ok(values),
            TensorData::I64(_) => Err(StepError::fatal(format!(
                "model output `{}` holds integers where floats were expected",
                self.name
            ))),
        }
    }
}

/// Why an inference call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferenceErrorCode {
    /// Not declared, not granted, or not allowed by the operator.
    NotGranted,
    /// Not in the operator's model store, or no such file beside it.
    NotFound,
    /// Inputs that do not fit the model.
    InvalidInput,
    /// The model failed to load or run.
    Failed,
}

/// An inference failure, with the host's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceError {
    /// The cause.
    pub code: InferenceErrorCode,
    /// What the host said.
    pub message: String,
}

impl std::fmt::Display for InferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InferenceError {}

/// Every inference failure is fatal: a model that is not granted or not
/// installed, inputs that do not fit, or a model that cannot run stay so on
/// a retry; the operator has to act.
impl From<InferenceError> for StepError {
    fn from(error: InferenceError) -> StepError {
        let code = match error.code {
            InferenceErrorCode::NotGranted => "not_granted",
            InferenceErrorCode::NotFound => "not_found",
            InferenceErrorCode::InvalidInput => "invalid_input",
            InferenceErrorCode::Failed => "failed",
        };
        StepError::fatal(error.message).with_details(json!({ "inference_error": code }))
    }
}

/// What runs a model: the host inside a component, or whatever a native
/// test registers with [`crate::testing::TestContext::model`].
pub trait ModelBackend {
    /// The model's input names, in order.
    fn inputs(&self) -> Vec<String>;
    /// Runs the model once.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferenceError>;
    /// Reads a file shipped beside the model.
    fn read_file(&self, name: &str) -> Result<Vec<u8>, InferenceError>;
}

/// A loaded model.
pub struct Model {
    backend: Arc<dyn ModelBackend>,
}

impl Model {
    pub(crate) fn new(backend: Arc<dyn ModelBackend>) -> Model {
        Model { backend }
    }

    /// A model run by `backend` rather than the host: for running a step's
    /// model code natively, as the benchmarks do to compare the sandbox
    /// with native.
    pub fn from_backend(backend: Arc<dyn ModelBackend>) -> Model {
        Model { backend }
    }

    /// The model's input names, in order.
    pub fn inputs(&self) -> Vec<String> {
        self.backend.inputs()
    }

    /// Runs the model: one tensor per input, by name; returns every output
    /// in the model's order.
    ///
    /// # Errors
    ///
    /// The host's [`InferenceError`], for example inputs of the wrong shape.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferenceError> {
        self.backend.run(inputs)
    }

    /// Reads a file shipped beside the model (a tokenizer, a label list),
    /// by its plain name.
    ///
    /// # Errors
    ///
    /// [`InferenceErrorCode::NotFound`] when there is no such file.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, InferenceError> {
        self.backend.read_file(name)
    }
}

#[cfg(target_arch = "wasm32")]
pub(crate) mod wit {
    //! The WIT-backed [`ModelBackend`].

    use super::{InferenceError, InferenceErrorCode, ModelBackend, Tensor, TensorData};
    use crate::__private::bindings::plait::step::inference as wit;

    pub(crate) struct WitModel(pub(crate) wit::Model);

    pub(crate) fn load(name: &str) -> Result<WitModel, InferenceError> {
        wit::load(name).map(WitModel).map_err(error)
    }

    fn error(error: wit::Error) -> InferenceError {
        InferenceError {
            code: match error.code {
                wit::ErrorCode::NotGranted => InferenceErrorCode::NotGranted,
                wit::ErrorCode::NotFound => InferenceErrorCode::NotFound,
                wit::ErrorCode::InvalidInput => InferenceErrorCode::InvalidInput,
                wit::ErrorCode::Failed => InferenceErrorCode::Failed,
            },
            message: error.message,
        }
    }

    impl ModelBackend for WitModel {
        fn inputs(&self) -> Vec<String> {
            self.0.inputs()
        }

        fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferenceError> {
            let inputs: Vec<wit::Tensor> = inputs
                .into_iter()
                .map(|tensor| wit::Tensor {
                    name: tensor.name,
                    shape: tensor.shape,
                    data: match tensor.data {
                        TensorData::F32(values) => wit::TensorData::F32(values),
                        TensorData::I64(values) => wit::TensorData::S64(values),
                    },
                })
                .collect();
            let outputs = self.0.run(&inputs).map_err(error)?;
            Ok(outputs
                .into_iter()
                .map(|tensor| Tensor {
                    name: tensor.name,
                    shape: tensor.shape,
                    data: match tensor.data {
                        wit::TensorData::F32(values) => TensorData::F32(values),
                        wit::TensorData::S64(values) => TensorData::I64(values),
                    },
                })
                .collect())
        }

        fn read_file(&self, name: &str) -> Result<Vec<u8>, InferenceError> {
            self.0.read_file(name).map_err(error)
        }
    }
}
