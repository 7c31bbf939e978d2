//! Models the host runs for steps: the `plait:step/inference` interface.
//!
//! Parsing and optimizing an ONNX model costs far more than a step's own
//! work (about 0.1–0.6 s for the reference models, natively), and every
//! invocation gets a fresh instance, so a model inside the guest would be
//! loaded on every call. Instead the host loads each model once per process
//! with tract (pure Rust, no system libraries) and keeps an optimized plan
//! per input shape; the guest does the pre- and post-processing. Isolation
//! is kept: a step reaches only the models it declared, its workflow granted
//! and the operator's policy allows, each call's inputs are bounded, and the
//! time a call takes counts against the step's `timeout`.
//!
//! Models live in the **model store**, a folder with one folder per model
//! holding `model.onnx` and any files its steps read beside it
//! (`tokenizer.json`, `inference.yml`). `scripts/models` fills it from
//! pinned registry packages; nothing is downloaded at run time.

#[cfg(feature = "onnx")]
mod model;
/// Without the `inference` feature there is no model runtime: loading a
/// model says so.
#[cfg(not(feature = "onnx"))]
#[path = "without_models.rs"]
mod model;
mod tensor;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

pub use model::LoadedModel;
pub use tensor::{ElementType, Tensor, TensorData};

/// Whether this build runs models (the `inference` feature).
pub const AVAILABLE: bool = cfg!(feature = "onnx");

pub use plait_types::paths::MODELS_ENV;
/// The file holding a model's graph, inside its folder.
pub const MODEL_FILE: &str = "model.onnx";
/// The most values one call may pass in all its input tensors together
/// (32 Mi, 128 MiB of `f32`): a full page at the OCR model's resolution is
/// under 3 Mi.
pub const MAX_INPUT_VALUES: usize = 32 * 1024 * 1024;
/// The most optimized plans kept per model. Each distinct set of input
/// shapes needs its own; a step that keeps inventing shapes evicts the
/// least recently used instead of growing the host's memory.
pub const MAX_PLANS_PER_MODEL: usize = 32;
/// The largest file `read-file` returns.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why an inference call failed, by the WIT `error-code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not declared, not granted or not allowed.
    NotGranted,
    /// Not in the model store.
    NotFound,
    /// Inputs that do not fit the model.
    InvalidInput,
    /// The model failed to load or run.
    Failed,
}

/// An inference failure, as the step sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InferenceError {
    /// The cause.
    pub code: ErrorCode,
    /// A one-line message naming the problem and the fix.
    pub message: String,
}

impl InferenceError {
    /// An error of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> InferenceError {
        InferenceError {
            code,
            message: message.into(),
        }
    }
}

pub use plait_types::grants::check_model_name;
pub use plait_types::paths::default_model_dir;

/// Where model `name` lives in `store`, if it is there.
pub fn find_model(store: &Path, name: &str) -> Result<PathBuf, String> {
    check_model_name(name)?;
    let folder = store.join(name);
    if folder.join(MODEL_FILE).is_file() {
        Ok(folder)
    } else {
        Err(format!(
            "model `{name}` is not in the model store `{}` (no `{name}/{MODEL_FILE}`); \
             run `scripts/models` to fetch the pinned models, or point `{MODELS_ENV}` or the \
             policy's `[models] dir` at the store that has it",
            store.display()
        ))
    }
}

/// Where model `name` is for the workflow in file `workflow`: the copy its
/// bundle carries (`models/<name>/` beside the workflow file), else the
/// model store's.
pub fn find_model_for(workflow: &Path, store: &Path, name: &str) -> Result<PathBuf, String> {
    check_model_name(name)?;
    let dir = std::path::absolute(workflow)
        .ok()
        .and_then(|file| file.parent().map(Path::to_path_buf));
    if let Some(dir) = dir {
        let bundled = dir.join("models").join(name);
        if bundled.join(MODEL_FILE).is_file() {
            return Ok(bundled);
        }
    }
    find_model(store, name)
}

/// The models loaded in this process, by folder, shared by every engine,
/// plan and invocation: each is parsed once.
pub struct Models {
    loaded: Mutex<HashMap<PathBuf, Arc<Slot>>>,
}

/// One model's place in [`Models`]; loading holds its lock, so two steps
/// asking for the same model at once parse it once.
#[derive(Default)]
struct Slot {
    model: Mutex<Option<Arc<LoadedModel>>>,
}

impl Models {
    /// The process-wide registry.
    pub fn global() -> &'static Models {
        static MODELS: LazyLock<Models> = LazyLock::new(|| Models {
            loaded: Mutex::new(HashMap::new()),
        });
        &MODELS
    }

    /// The model in `folder`, parsed on first use. Blocking: call it off
    /// the async runtime.
    pub fn load(&self, name: &str, folder: &Path) -> Result<Arc<LoadedModel>, InferenceError> {
        let slot = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(folder.to_owned())
            .or_default()
            .clone();
        let mut model = slot.model.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(model) = &*model {
            return Ok(model.clone());
        }
        let loaded = Arc::new(LoadedModel::load(name, folder)?);
        tracing::info!(target: "plait::inference", model = name, folder = %folder.display(), "model loaded");
        *model = Some(loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_cannot_leave_the_store() {
        for bad in ["", "../etc", "a/b", ".hidden", "Upper", "a\\b", "a b"] {
            assert!(check_model_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["ppocrv6-tiny-det", "all-minilm-l6-v2-int8", "m.v2_1"] {
            assert_eq!(check_model_name(good), Ok(()));
        }
    }

    #[test]
    fn a_missing_model_says_how_to_fetch_it() {
        let store = tempfile::tempdir().unwrap();
        let message = find_model(store.path(), "ppocrv6-tiny-det").unwrap_err();
        assert!(message.contains("scripts/models"), "{message}");
        std::fs::create_dir(store.path().join("ppocrv6-tiny-det")).unwrap();
        std::fs::write(store.path().join("ppocrv6-tiny-det/model.onnx"), b"x").unwrap();
        assert_eq!(
            find_model(store.path(), "ppocrv6-tiny-det").unwrap(),
            store.path().join("ppocrv6-tiny-det")
        );
    }
}
