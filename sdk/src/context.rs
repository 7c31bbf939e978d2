//! What a running step knows about its invocation, and its line to the host.

use crate::inference::{InferenceError, Model};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::json;

use crate::StepError;

/// Facts about one invocation of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The run this invocation belongs to.
    pub run_id: String,
    /// The step's `id` in the workflow definition.
    pub step_id: String,
    /// 1 for the first attempt, incremented by every retry or by a resume
    /// after the host stopped while the step was running.
    pub attempt: u32,
    /// Stays the same across every attempt of this step in this run. A step
    /// with an external side effect uses it to make that effect happen at
    /// most once.
    pub idempotency_key: String,
}

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Details useful when debugging the step.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the step worked around.
    Warn,
    /// A failure.
    Error,
}

/// How a [`Context`] reaches the host: the WIT imports inside a component,
/// an in-memory recorder under [`crate::testing`].
pub(crate) trait HostApi: Send + Sync {
    /// Writes one structured log record.
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
    /// Reads a configuration value; `None` when unset or undeclared.
    fn get_config(&self, key: &str) -> Option<String>;
    /// Loads a granted model.
    fn load_model(&self, name: &str) -> Result<Model, InferenceError>;
}

/// Everything a running step may ask of the host: facts about the
/// invocation, configuration values and logging.
pub struct Context {
    invocation: Invocation,
    host: Arc<dyn HostApi>,
}

impl Context {
    pub(crate) fn new(invocation: Invocation, host: Arc<dyn HostApi>) -> Self {
        Self { invocation, host }
    }

    pub(crate) fn host(&self) -> &Arc<dyn HostApi> {
        &self.host
    }

    /// The run, step and attempt this invocation belongs to.
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    /// The configuration value `key`, or `None` when the workflow did not set
    /// it. The host only passes keys the step declared in [`crate::Step::info`]
    /// with [`crate::StepInfo::config`] or [`crate::StepInfo::secret`].
    pub fn config(&self, key: &str) -> Option<String> {
        self.host.get_config(key)
    }

    /// Loads model `name`, which the step declared with
    /// [`crate::StepInfo::model`] and the workflow granted under
    /// `grants.models`. The host keeps it loaded between invocations.
    ///
    /// # Errors
    ///
    /// An [`InferenceError`] (which converts into a fatal [`StepError`] with
    /// `?`) when the model is not granted or not installed.
    pub fn load_model(&self, name: &str) -> Result<Model, InferenceError> {
        self.host.load_model(name)
    }

    /// The configuration value `key`.
    ///
    /// # Errors
    ///
    /// A fatal [`StepError`] naming the key when the workflow did not set it.
    pub fn require_config(&self, key: &str) -> Result<String, StepError> {
        self.config(key).ok_or_else(|| {
            StepError::fatal(format!(
                "missing config `{key}`: set it under `config:` for step `{}` in the workflow",
                self.invocation.step_id
            ))
            .with_details(json!({"missing_config": key}))
        })
    }

    /// The configuration value `key` parsed with [`FromStr`], or `None` when
    /// the workflow did not set it. Booleans are `true` or `false`.
    ///
    /// # Errors
    ///
    /// A fatal [`StepError`] naming the key, the value and the parse error
    /// when the value does not parse.
    pub fn config_parsed<T>(&self, key: &str) -> Result<Option<T>, StepError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(value) = self.config(key) else {
            return Ok(None);
        };
        value.parse().map(Some).map_err(|error| {
            StepError::fatal(format!(
                "config `{key}` has invalid value `{value}`: {error}"
            ))
            .with_details(json!({"config": key, "value": value}))
        })
    }

    /// Writes a structured log record into the step's log. The host keeps a
    /// bounded number of records (dropping and counting the rest), and a
    /// record that takes the step past its `logs` volume limit ends the
    /// step with a `logs` limit error.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.host.log(level, message, fields);
    }

    /// Logs `message` at [`Level::Trace`].
    pub fn trace(&self, message: &str) {
        self.log(Level::Trace, message, &[]);
    }

    /// Logs `message` at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message, &[]);
    }

    /// Logs `message` at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message, &[]);
    }

    /// Logs `message` at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message, &[]);
    }

    /// Logs `message` at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message, &[]);
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("invocation", &self.invocation)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TestContext;

    #[test]
    fn require_config_names_the_key_and_where_to_set_it() {
        let ctx = TestContext::new().step_id("reshape").build();
        let error = ctx.require_config("fields").unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(
            error.message(),
            "missing config `fields`: set it under `config:` for step `reshape` in the workflow"
        );
    }

    #[test]
    fn require_config_returns_a_set_value() {
        let ctx = TestContext::new().config("fields", "{}").build();
        assert_eq!(ctx.require_config("fields").unwrap(), "{}");
    }

    #[test]
    fn config_parsed_parses_or_names_the_bad_value() {
        let ctx = TestContext::new()
            .config("top", "3")
            .config("strict", "yes")
            .build();
        assert_eq!(ctx.config_parsed::<usize>("top").unwrap(), Some(3));
        assert_eq!(ctx.config_parsed::<usize>("unset").unwrap(), None);
        let error = ctx.config_parsed::<bool>("strict").unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error
                .message()
                .starts_with("config `strict` has invalid value `yes`"),
            "{error}"
        );
    }
}
