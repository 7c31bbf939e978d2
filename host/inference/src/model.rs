//! One loaded model: the parsed graph, and an optimized plan per set of
//! input shapes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTensor, TValue, Tensor as TractTensor, TypedRunnableModel,
};

use super::tensor::{ElementType, Tensor, TensorData};
use super::{
    ErrorCode, InferenceError, MAX_FILE_BYTES, MAX_INPUT_VALUES, MAX_PLANS_PER_MODEL, MODEL_FILE,
};

type Plan = Arc<TypedRunnableModel>;
type PlanKey = Vec<(ElementType, Vec<usize>)>;
type PlanList = Mutex<Vec<(PlanKey, Plan)>>;
type Plans = Arc<PlanList>;

/// Every model's plans, least recently used first: what the process-wide
/// budget ([`plan_budget`]) evicts from.
static ALL_PLANS: Mutex<Vec<(std::sync::Weak<PlanList>, PlanKey)>> = Mutex::new(Vec::new());

/// The optimized plans the process keeps over all models. A plan holds its
/// own copy of the weights in the form its kernels want (the int8 MiniLM
/// model's plans take about 80 MB each), so on a small machine (under
/// 2 GiB, a cgroup's limit included) the budget is one plan per 128 MiB
/// above 192 MiB, at least one: a step whose shape was evicted pays the
/// plan's optimization again (0.05 to 0.6 s) instead of the host running
/// out of memory. Elsewhere only [`MAX_PLANS_PER_MODEL`] bounds them.
fn plan_budget() -> usize {
    static BUDGET: std::sync::LazyLock<usize> =
        std::sync::LazyLock::new(|| match plait_types::machine::memory() {
            Some(memory) if memory < 2 << 30 => {
                let budget = (memory.saturating_sub(192 << 20) / (128 << 20)).max(1) as usize;
                tracing::info!(target: "plait::inference::model",
                    budget,
                    memory_mib = memory >> 20,
                    "a small machine: model plans kept over all models limited"
                );
                budget
            }
            _ => usize::MAX,
        });
    *BUDGET
}

/// A model parsed once and shared by every invocation that may use it.
pub struct LoadedModel {
    name: String,
    folder: PathBuf,
    graph: InferenceModel,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Most recently used last.
    plans: Plans,
    /// Recent results of small calls, by the SHA-256 of their inputs, most
    /// recently used last.
    results: Mutex<Vec<([u8; 32], Vec<Tensor>)>>,
}

/// Calls with at most this many input values have their results
/// remembered: a model is a pure function, and steps ask the same small
/// question again and again (a classifier embeds the same label
/// descriptions on every invocation). Token batches are this small; images
/// never are (the smallest OCR line is 23,040 values), so pixels are never
/// hashed or kept.
pub const MEMO_MAX_VALUES: usize = 16 * 1024;
/// Results remembered per model.
pub const MEMO_ENTRIES: usize = 64;

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.name)
            .field("folder", &self.folder)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Parses `folder/model.onnx`.
    pub fn load(name: &str, folder: &Path) -> Result<LoadedModel, InferenceError> {
        let path = folder.join(MODEL_FILE);
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            InferenceError::new(
                ErrorCode::Failed,
                format!(
                    "model `{name}`: {what} `{}`: {error}; run `scripts/models --check` to \
                     verify the model store",
                    path.display()
                ),
            )
        };
        // The PP-OCR exports declare symbolic dimensions in their value
        // info that refuse to unify with the fixed shapes each plan sets;
        // the shapes are inferred from the inputs instead.
        let graph = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(&path)
            .map_err(|error| failed("could not parse", &format!("{error:#}")))?;
        let names = |outlets: &[tract_onnx::prelude::OutletId]| -> Vec<String> {
            outlets
                .iter()
                .map(|outlet| graph.node(outlet.node).name.clone())
                .collect()
        };
        let inputs = names(
            graph
                .input_outlets()
                .map_err(|error| failed("no inputs in", &error))?,
        );
        let outputs = names(
            graph
                .output_outlets()
                .map_err(|error| failed("no outputs in", &error))?,
        );
        Ok(LoadedModel {
            name: name.to_owned(),
            folder: folder.to_owned(),
            graph,
            inputs,
            outputs,
            plans: Plans::default(),
            results: Mutex::new(Vec::new()),
        })
    }

    /// The model's name in the store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The input names, in order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// Runs the model on `inputs`, one per model input, by name. Blocking
    /// and CPU-bound: call it off the async runtime.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferenceError> {
        let invalid = |message: String| {
            InferenceError::new(
                ErrorCode::InvalidInput,
                format!("model `{}`: {message}", self.name),
            )
        };
        let mut ordered: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        let mut total = 0usize;
        for tensor in inputs {
            let Some(index) = self.inputs.iter().position(|name| *name == tensor.name) else {
                return Err(invalid(format!(
                    "it has no input `{}`; its inputs are {}",
                    tensor.name,
                    self.inputs.join(", ")
                )));
            };
            if ordered[index].is_some() {
                return Err(invalid(format!("input `{}` is given twice", tensor.name)));
            }
            if tensor.shape.is_empty() || tensor.shape.len() > 8 || tensor.shape.contains(&0) {
                return Err(invalid(format!(
                    "input `{}` has shape {:?}; give 1 to 8 dimensions, none of them 0",
                    tensor.name, tensor.shape
                )));
            }
            let values = tensor
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .filter(|&n| n <= MAX_INPUT_VALUES);
            if values != Some(tensor.data.len()) {
                return Err(invalid(format!(
                    "input `{}` has shape {:?} but {} values (and at most {MAX_INPUT_VALUES} \
                     values are accepted per call)",
                    tensor.name,
                    tensor.shape,
                    tensor.data.len()
                )));
            }
            total += tensor.data.len();
            ordered[index] = Some(tensor);
        }
        if total > MAX_INPUT_VALUES {
            return Err(invalid(format!(
                "the inputs hold {total} values; at most {MAX_INPUT_VALUES} are accepted per call"
            )));
        }
        let mut tensors = Vec::with_capacity(ordered.len());
        for (name, tensor) in self.inputs.iter().zip(ordered) {
            tensors.push(tensor.ok_or_else(|| invalid(format!("input `{name}` is missing")))?);
        }
        let digest = (total <= MEMO_MAX_VALUES).then(|| digest(&tensors));
        if let Some(digest) = &digest {
            let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(index) = results.iter().position(|(d, _)| d == digest) {
                let entry = results.remove(index);
                let outputs = entry.1.clone();
                results.push(entry);
                return Ok(outputs);
            }
        }
        let key: PlanKey = tensors
            .iter()
            .map(|t| (t.data.element_type(), t.shape.clone()))
            .collect();
        let plan = self.plan(&key)?;
        let values = tensors
            .into_iter()
            .map(|tensor| {
                let made = match tensor.data {
                    TensorData::F32(values) => TractTensor::from_shape(&tensor.shape, &values),
                    TensorData::I64(values) => TractTensor::from_shape(&tensor.shape, &values),
                };
                made.map(TValue::from)
                    .map_err(|error| invalid(format!("input `{}`: {error}", tensor.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // tract indexes with the values it is given (a token id past the
        // vocabulary, say) and panics on some out-of-range ones: a step's
        // bad input must be its error, never the host's crash.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            plan.run(values.into_iter().collect())
        }));
        let outputs = match run {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(error)) => {
                return Err(InferenceError::new(
                    ErrorCode::Failed,
                    format!("model `{}` failed to run: {error:#}", self.name),
                ));
            }
            Err(panic) => {
                let reason = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                return Err(InferenceError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "model `{}` cannot run on these input values (an index out of range?): {reason}",
                        self.name
                    ),
                ));
            }
        };
        let outputs = outputs
            .into_iter()
            .zip(&self.outputs)
            .map(|(value, name)| self.output(name, value.into_tensor()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(digest) = digest {
            let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
            if results.len() >= MEMO_ENTRIES {
                results.remove(0);
            }
            results.push((digest, outputs.clone()));
        }
        Ok(outputs)
    }

    /// The plan for `key`, optimized on first use.
    fn plan(&self, key: &PlanKey) -> Result<Plan, InferenceError> {
        {
            let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(index) = plans.iter().position(|(k, _)| k == key) {
                let entry = plans.remove(index);
                let plan = entry.1.clone();
                plans.push(entry);
                drop(plans);
                self.touch(key);
                return Ok(plan);
            }
        }
        let failed = |error: &dyn std::fmt::Display| {
            InferenceError::new(
                ErrorCode::InvalidInput,
                format!(
                    "model `{}` cannot run on inputs of shapes {:?}: {error}",
                    self.name,
                    key.iter().map(|(_, shape)| shape).collect::<Vec<_>>()
                ),
            )
        };
        let started = std::time::Instant::now();
        let mut graph = self.graph.clone();
        for (index, (element, shape)) in key.iter().enumerate() {
            let datum = match element {
                ElementType::F32 => f32::datum_type(),
                ElementType::I64 => i64::datum_type(),
            };
            graph = graph
                .with_input_fact(index, InferenceFact::dt_shape(datum, shape.as_slice()))
                .map_err(|error| failed(&format!("{error:#}")))?;
        }
        let plan = graph
            .into_optimized()
            .and_then(|model| model.into_runnable())
            .map_err(|error| failed(&format!("{error:#}")))?;
        tracing::debug!(target: "plait::inference::model",
            model = %self.name,
            shapes = ?key,
            ms = started.elapsed().as_millis() as u64,
            "model plan optimized"
        );
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() >= MAX_PLANS_PER_MODEL {
            let (evicted, _) = plans.remove(0);
            self.forget(&evicted);
        }
        plans.push((key.clone(), plan.clone()));
        drop(plans);
        self.touch(key);
        Ok(plan)
    }

    /// Marks `key`'s plan most recently used in the process-wide order, and
    /// evicts the least recently used plans (of any model) past the budget.
    /// Never called with a model's plans locked.
    fn touch(&self, key: &PlanKey) {
        let mut evicted = Vec::new();
        {
            let mut all = ALL_PLANS.lock().unwrap_or_else(|p| p.into_inner());
            let owner = Arc::downgrade(&self.plans);
            all.retain(|(plans, k)| {
                !(plans.ptr_eq(&owner) && k == key) && plans.strong_count() > 0
            });
            all.push((owner, key.clone()));
            while all.len() > plan_budget() {
                evicted.push(all.remove(0));
            }
        }
        for (plans, key) in evicted {
            if let Some(plans) = plans.upgrade() {
                plans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(k, _)| *k != key);
            }
        }
    }

    /// Drops `key` from the process-wide order (its plan was evicted by
    /// this model's own limit).
    fn forget(&self, key: &PlanKey) {
        let owner = Arc::downgrade(&self.plans);
        ALL_PLANS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(plans, k)| !(plans.ptr_eq(&owner) && k == key));
    }

    fn output(&self, name: &str, tensor: TractTensor) -> Result<Tensor, InferenceError> {
        let shape = tensor.shape().to_vec();
        let failed = |error: &dyn std::fmt::Display| {
            InferenceError::new(
                ErrorCode::Failed,
                format!("model `{}` output `{name}`: {error}", self.name),
            )
        };
        let data = if tensor.datum_type() == DatumType::I64 {
            let view = tensor
                .to_plain_array_view::<i64>()
                .map_err(|e| failed(&e))?;
            TensorData::I64(view.iter().copied().collect())
        } else {
            let cast = tensor.cast_to::<f32>().map_err(|e| failed(&e))?;
            let view = cast.to_plain_array_view::<f32>().map_err(|e| failed(&e))?;
            TensorData::F32(view.iter().copied().collect())
        };
        Ok(Tensor {
            name: name.to_owned(),
            shape,
            data,
        })
    }

    /// Reads `name` from the model's folder: a plain file name, at most
    /// [`MAX_FILE_BYTES`].
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, InferenceError> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0'])
            && name != "..";
        if !plain {
            return Err(InferenceError::new(
                ErrorCode::InvalidInput,
                format!(
                    "`{name}` is not a plain file name; a step may read only files beside its model"
                ),
            ));
        }
        let path = self.folder.join(name);
        let not_found = || {
            InferenceError::new(
                ErrorCode::NotFound,
                format!("model `{}` has no file `{name}`", self.name),
            )
        };
        let metadata = std::fs::metadata(&path).map_err(|_| not_found())?;
        if !metadata.is_file() {
            return Err(not_found());
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(InferenceError::new(
                ErrorCode::InvalidInput,
                format!(
                    "`{name}` of model `{}` is {} bytes, over the {MAX_FILE_BYTES}-byte bound of read-file",
                    self.name,
                    metadata.len()
                ),
            ));
        }
        plait_types::files::read(&path, plait_types::files::Kind::Model).map_err(|error| {
            InferenceError::new(
                ErrorCode::Failed,
                format!("could not read `{}`: {error}", path.display()),
            )
        })
    }
}

/// The SHA-256 of `tensors`: names, element types, shapes and values.
fn digest(tensors: &[Tensor]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    for tensor in tensors {
        hasher.update((tensor.name.len() as u64).to_le_bytes());
        hasher.update(tensor.name.as_bytes());
        hasher.update((tensor.shape.len() as u64).to_le_bytes());
        for dim in &tensor.shape {
            hasher.update((*dim as u64).to_le_bytes());
        }
        match &tensor.data {
            TensorData::F32(values) => {
                hasher.update([0u8]);
                for value in values {
                    hasher.update(value.to_le_bytes());
                }
            }
            TensorData::I64(values) => {
                hasher.update([1u8]);
                for value in values {
                    hasher.update(value.to_le_bytes());
                }
            }
        }
    }
    hasher.finalize().into()
}
