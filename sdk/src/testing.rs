//! Native unit testing of steps, without a WebAssembly runtime.
//!
//! [`TestContext`] builds a [`Context`] whose configuration comes from the
//! test and whose log records are captured in memory; [`run`] runs a step
//! through the same JSON (de)serialization path as the component export.
//!
//! ```
//! use plait_sdk::testing::{self, TestContext};
//! use plait_sdk::{Context, Input, Level, Output, Step, StepError, StepInfo};
//! use serde_json::{Value, json};
//!
//! /// Logs the attempt and echoes its input.
//! struct Echo;
//!
//! impl Step for Echo {
//!     type Input = Value;
//!     type Output = Value;
//!
//!     fn info() -> StepInfo {
//!         StepInfo::new("echo", "1.0.0")
//!     }
//!
//!     fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Value>, StepError> {
//!         let attempt = ctx.invocation().attempt.to_string();
//!         ctx.log(Level::Info, "echoing", &[("attempt", &attempt)]);
//!         Ok(Output::new(input.data).with_blobs(input.blobs))
//!     }
//! }
//!
//! let test = TestContext::new().attempt(2);
//! let (json, blobs) = testing::run::<Echo>(&test.build(), json!({"a": 1}), vec![])?;
//! assert_eq!(json, json!({"a": 1}));
//! assert!(blobs.is_empty());
//! assert_eq!(test.logs()[0].field("attempt"), Some("2"));
//! # Ok::<(), StepError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use crate::context::HostApi;
use crate::inference::{InferenceError, InferenceErrorCode, Model, ModelBackend};
use crate::runtime::run_json;
use crate::{Blob, Context, Invocation, Level, Step, StepError};

/// One log record a step wrote through a [`Context`] built by
/// [`TestContext`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's severity.
    pub level: Level,
    /// The record's message.
    pub message: String,
    /// The record's structured fields, in the order the step passed them.
    pub fields: Vec<(String, String)>,
}

impl LogRecord {
    /// The value of the first field called `key`, if any.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Builds a [`Context`] for native tests and captures what the step logs.
///
/// Defaults: run id `test-run`, step id `test-step`, attempt 1, idempotency
/// key `<run id>/<step id>`, no configuration. Keep the `TestContext` after
/// [`TestContext::build`] to read the captured [`TestContext::logs`].
#[derive(Clone)]
pub struct TestContext {
    run_id: String,
    step_id: String,
    attempt: u32,
    idempotency_key: Option<String>,
    config: BTreeMap<String, String>,
    models: BTreeMap<String, Arc<dyn ModelBackend + Send + Sync>>,
    logs: Arc<Mutex<Vec<LogRecord>>>,
}

impl std::fmt::Debug for TestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestContext")
            .field("run_id", &self.run_id)
            .field("step_id", &self.step_id)
            .field("attempt", &self.attempt)
            .field("config", &self.config)
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for TestContext {
    fn default() -> Self {
        Self {
            run_id: "test-run".to_owned(),
            step_id: "test-step".to_owned(),
            attempt: 1,
            idempotency_key: None,
            config: BTreeMap::new(),
            models: BTreeMap::new(),
            logs: Arc::default(),
        }
    }
}

impl TestContext {
    /// A context with the defaults described on [`TestContext`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the configuration value `key`, as the workflow's `config:` would.
    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Grants model `name`, run natively by `backend` (for example the
    /// model run with an ONNX runtime in the test), as the workflow's
    /// `grants.models` and the host's inference interface would.
    #[must_use]
    pub fn model(
        mut self,
        name: impl Into<String>,
        backend: impl ModelBackend + Send + Sync + 'static,
    ) -> Self {
        self.models.insert(name.into(), Arc::new(backend));
        self
    }

    /// Sets the attempt number (1 for the first attempt).
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the run id.
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Sets the step id.
    #[must_use]
    pub fn step_id(mut self, step_id: impl Into<String>) -> Self {
        self.step_id = step_id.into();
        self
    }

    /// Sets the idempotency key instead of deriving it from the run and step
    /// ids.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// A [`Context`] with this configuration. Every context built from one
    /// `TestContext` logs into the same capture.
    pub fn build(&self) -> Context {
        let idempotency_key = self
            .idempotency_key
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.run_id, self.step_id));
        let invocation = Invocation {
            run_id: self.run_id.clone(),
            step_id: self.step_id.clone(),
            attempt: self.attempt,
            idempotency_key,
        };
        let host = TestHost {
            config: self.config.clone(),
            models: self.models.clone(),
            logs: Arc::clone(&self.logs),
        };
        Context::new(invocation, Arc::new(host))
    }

    /// The log records written so far, oldest first.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs step `S` on a JSON document and blobs, through the same JSON
/// (de)serialization path as the component export, and returns the output
/// document and blobs.
///
/// Like the real host, the step sees only configuration keys and secrets it
/// declared in [`Step::info`]: a test that sets an undeclared key sees
/// [`Context::config`] return `None`, exactly as in a workflow.
///
/// # Errors
///
/// The [`StepError`] the step returned, or the fatal error the SDK produces
/// when `input` does not deserialize into [`Step::Input`] or the output does
/// not serialize.
pub fn run<S: Step>(
    ctx: &Context,
    input: Value,
    blobs: Vec<Blob>,
) -> Result<(Value, Vec<Blob>), StepError> {
    let info = S::info();
    let host = DeclaredOnly {
        declared: info.readable_keys().map(str::to_owned).collect(),
        models: info
            .grants()
            .iter()
            .filter_map(|grant| match grant {
                crate::Grant::Model(name) => Some(name.clone()),
                _ => None,
            })
            .collect(),
        inner: Arc::clone(ctx.host()),
    };
    let ctx = Context::new(ctx.invocation().clone(), Arc::new(host));
    let (json, blobs) = run_json::<S>(&ctx, &input.to_string(), blobs)?;
    let output = serde_json::from_str(&json)
        .unwrap_or_else(|error| panic!("the SDK serialized output that is not JSON: {error}"));
    Ok((output, blobs))
}

/// Holds a test's configuration and captures log records.
struct TestHost {
    config: BTreeMap<String, String>,
    models: BTreeMap<String, Arc<dyn ModelBackend + Send + Sync>>,
    logs: Arc<Mutex<Vec<LogRecord>>>,
}

impl HostApi for TestHost {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let record = LogRecord {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        };
        // A panicking test thread must not hide the records of others.
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    fn get_config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    fn load_model(&self, name: &str) -> Result<Model, InferenceError> {
        match self.models.get(name) {
            Some(backend) => Ok(Model::new(backend.clone())),
            None => Err(InferenceError {
                code: InferenceErrorCode::NotGranted,
                message: format!("model `{name}` is not granted to this step"),
            }),
        }
    }
}

/// Hides configuration keys the step did not declare, as the host does.
struct DeclaredOnly {
    declared: BTreeSet<String>,
    models: BTreeSet<String>,
    inner: Arc<dyn HostApi>,
}

impl HostApi for DeclaredOnly {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.inner.log(level, message, fields);
    }

    fn get_config(&self, key: &str) -> Option<String> {
        if self.declared.contains(key) {
            self.inner.get_config(key)
        } else {
            None
        }
    }

    fn load_model(&self, name: &str) -> Result<Model, InferenceError> {
        if self.models.contains(name) {
            self.inner.load_model(name)
        } else {
            Err(InferenceError {
                code: InferenceErrorCode::NotGranted,
                message: format!("model `{name}` is not declared in the step's info()"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Input, Output, StepInfo};
    use serde_json::json;

    #[test]
    fn logs_are_captured_in_order_with_fields() {
        let test = TestContext::new();
        let ctx = test.build();
        ctx.info("first");
        ctx.log(Level::Warn, "second", &[("pages", "3"), ("file", "a.pdf")]);
        ctx.debug("third");
        let logs = test.logs();
        assert_eq!(logs.len(), 3);
        assert_eq!(logs[0].level, Level::Info);
        assert_eq!(logs[0].message, "first");
        assert_eq!(logs[1].level, Level::Warn);
        assert_eq!(logs[1].field("pages"), Some("3"));
        assert_eq!(logs[1].field("file"), Some("a.pdf"));
        assert_eq!(logs[1].field("nope"), None);
        assert_eq!(logs[2].level, Level::Debug);
    }

    #[test]
    fn builder_sets_the_invocation() {
        let ctx = TestContext::new()
            .run_id("r1")
            .step_id("s1")
            .attempt(3)
            .build();
        let invocation = ctx.invocation();
        assert_eq!(invocation.run_id, "r1");
        assert_eq!(invocation.step_id, "s1");
        assert_eq!(invocation.attempt, 3);
        assert_eq!(invocation.idempotency_key, "r1/s1");
        let ctx = TestContext::new().idempotency_key("k").build();
        assert_eq!(ctx.invocation().idempotency_key, "k");
    }

    /// Reports which configuration keys it can see.
    struct ConfigProbe;

    impl Step for ConfigProbe {
        type Input = serde::de::IgnoredAny;
        type Output = Value;

        fn info() -> StepInfo {
            StepInfo::new("config-probe", "0.1.0")
                .config("declared", "a declared key", false)
                .secret("token")
        }

        fn run(ctx: &Context, _input: Input<Self::Input>) -> Result<Output<Value>, StepError> {
            Ok(json!({
                "declared": ctx.config("declared"),
                "token": ctx.config("token"),
                "undeclared": ctx.config("undeclared"),
            })
            .into())
        }
    }

    #[test]
    fn run_hides_undeclared_config_like_the_host() {
        let test = TestContext::new()
            .config("declared", "1")
            .config("token", "t")
            .config("undeclared", "2");
        let (json, _) = run::<ConfigProbe>(&test.build(), json!(null), vec![]).unwrap();
        assert_eq!(
            json,
            json!({"declared": "1", "token": "t", "undeclared": null})
        );
    }

    /// Expects `{"count": u32}`.
    struct Count;

    #[derive(serde::Deserialize)]
    struct CountInput {
        count: u32,
    }

    impl Step for Count {
        type Input = CountInput;
        type Output = u32;

        fn info() -> StepInfo {
            StepInfo::new("count", "0.1.0")
        }

        fn run(_ctx: &Context, input: Input<CountInput>) -> Result<Output<u32>, StepError> {
            Ok(input.data.count.into())
        }
    }

    #[test]
    fn run_reports_input_errors_as_fatal_naming_the_field() {
        let ctx = TestContext::new().build();
        let error = run::<Count>(&ctx, json!({"count": "three"}), vec![]).unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.message().contains("`count`"), "{error}");
        let error = run::<Count>(&ctx, json!({}), vec![]).unwrap_err();
        assert!(error.message().contains("missing field `count`"), "{error}");
        assert_eq!(
            run::<Count>(&ctx, json!({"count": 3}), vec![]).unwrap().0,
            json!(3)
        );
    }
}
