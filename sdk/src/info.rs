//! What a step says about itself: name, version, schemas and grants.

use serde_json::Value;

/// Something a step needs from the host beyond its input. A step gets
/// nothing it did not declare and the workflow did not grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A configuration value, read with [`crate::Context::config`].
    Config {
        /// The key, as written under `config:` in the workflow.
        key: String,
        /// What the value means, for the operator.
        description: String,
        /// Whether the step cannot run without it; the host refuses a
        /// workflow that omits a required key before anything runs.
        required: bool,
    },
    /// A secret (an API key, a token), read like a configuration value but
    /// never persisted or logged by the host.
    Secret(String),
    /// A directory, by the path the step expects to see it at.
    Directory(String),
    /// Outbound HTTP to a host, written as `scheme://host[:port]`.
    OutboundHttp(String),
    /// A model the host runs for the step, by its name in the model store,
    /// loaded with [`crate::Context::load_model`].
    Model(String),
}

/// What a step says about itself, returned by [`crate::Step::info`] and
/// exported as the component's `describe`.
///
/// ```
/// use plait_sdk::StepInfo;
/// use serde_json::json;
///
/// let info = StepInfo::new("fetch-page", "0.2.0")
///     .description("Downloads one web page.")
///     .input_schema(json!({"type": "object", "required": ["path"]}))
///     .config("timeout_ms", "How long to wait for the server.", false)
///     .secret("api_token")
///     .outbound_http("https://example.com");
/// assert_eq!(info.grants().len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: String,
    pub(crate) input_schema: Option<Value>,
    pub(crate) output_schema: Option<Value>,
    pub(crate) grants: Vec<Grant>,
}

impl StepInfo {
    /// A step with a short, stable `name` (for example `normalize-text`) and
    /// its own semantic `version`, with no description, schemas or grants.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            input_schema: None,
            output_schema: None,
            grants: Vec::new(),
        }
    }

    /// Sets one or two sentences describing the step for the operator.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the JSON Schema of the input document.
    #[must_use]
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }

    /// Sets the JSON Schema of the output document.
    #[must_use]
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    /// Declares a configuration key. The host passes only declared keys to
    /// [`crate::Context::config`].
    #[must_use]
    pub fn config(
        mut self,
        key: impl Into<String>,
        description: impl Into<String>,
        required: bool,
    ) -> Self {
        self.grants.push(Grant::Config {
            key: key.into(),
            description: description.into(),
            required,
        });
        self
    }

    /// Declares a secret, read with [`crate::Context::config`] like a
    /// configuration value.
    #[must_use]
    pub fn secret(mut self, name: impl Into<String>) -> Self {
        self.grants.push(Grant::Secret(name.into()));
        self
    }

    /// Declares a directory the step expects to see at `path`.
    #[must_use]
    pub fn directory(mut self, path: impl Into<String>) -> Self {
        self.grants.push(Grant::Directory(path.into()));
        self
    }

    /// Declares outbound HTTP to `url`, written as `scheme://host[:port]`.
    #[must_use]
    pub fn outbound_http(mut self, url: impl Into<String>) -> Self {
        self.grants.push(Grant::OutboundHttp(url.into()));
        self
    }

    /// Declares a model the step loads with [`crate::Context::load_model`],
    /// by its name in the operator's model store.
    #[must_use]
    pub fn model(mut self, name: impl Into<String>) -> Self {
        self.grants.push(Grant::Model(name.into()));
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Everything the step declared it needs, in declaration order.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The keys [`crate::Context::config`] may return a value for: declared
    /// configuration keys and secrets.
    pub(crate) fn readable_keys(&self) -> impl Iterator<Item = &str> {
        self.grants.iter().filter_map(|grant| match grant {
            Grant::Config { key, .. } => Some(key.as_str()),
            Grant::Secret(name) => Some(name.as_str()),
            Grant::Directory(_) | Grant::OutboundHttp(_) | Grant::Model(_) => None,
        })
    }
}
