//! The workflow file format as Rust types, for its JSON Schema.
//!
//! [`WorkflowFile`] mirrors what a definition file may hold, key by key,
//! with each key's documentation; `plait schema` prints the JSON Schema
//! generated from it (`docs/workflow.schema.json` is that output, checked in
//! CI to be current), so editors complete and check workflow files. The
//! validator (`definition::validate`) is what Plait runs; a test checks that
//! both know the same keys.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A duration: a number and a unit, such as `250ms`, `5s`, `2m`, `1h`
/// (`1h 30m` too).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Duration(
    #[schemars(regex(
        pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zµ]+(\s+[0-9]+(\.[0-9]+)?\s*[a-zµ]+)*\s*$"
    ))]
    pub String,
);

/// A text value also written as a number or a boolean.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A number, taken as written.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
}

/// A Plait workflow: steps, the order they may run in, and how their inputs
/// are computed. See docs/definition-format.md.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Plait workflow definition")]
pub struct WorkflowFile {
    /// The workflow's name: lowercase letters, digits, `-` and `_`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"), length(max = 64))]
    pub name: String,
    /// The workflow's version; `0.0.0` when absent.
    pub version: Option<Scalar>,
    /// What the workflow does, for people.
    pub description: Option<String>,
    /// The workflow input.
    pub input: Option<InputSection>,
    /// Limits for every step that sets none of its own.
    pub limits: Option<Limits>,
    /// Retries for every step; a step's `retry` overrides it key by key.
    pub retry: Option<Retry>,
    /// The whole run's wall-clock limit, from its start.
    pub timeout: Option<Duration>,
    /// How many steps of one run may run at once (default 8).
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<u32>,
    /// The steps. When no step has `needs`, they run in order; otherwise
    /// each runs once the steps it `needs` are done.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
    /// The run's output: JSON whose strings may be `${ jq }` expressions over
    /// `.input`, `.steps.ID.output` and `.run`. Default: the output of
    /// the final step, the one no other step needs (required when several
    /// are final).
    pub output: Option<Value>,
}

/// The workflow input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// A JSON Schema the input must match before a run is created.
    pub schema: Option<BTreeMap<String, Value>>,
}

/// A step's (or the workflow's default) limits; the host policy caps them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory: `64MiB`, `1GiB`, ...
    pub memory: Option<Scalar>,
    /// Wall clock per attempt.
    pub timeout: Option<Duration>,
    /// Instruction budget (wasmtime fuel), for example `1e9`.
    pub fuel: Option<Scalar>,
    /// The most output JSON plus blobs.
    pub output: Option<Scalar>,
    /// The most log records plus stdout and stderr.
    pub logs: Option<Scalar>,
}

/// When and how often a failed attempt is tried again. Only retryable
/// failures are: a `retryable` step error, a trap, a timeout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included (1: no retry).
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// How the delay grows between attempts.
    pub backoff: Option<Backoff>,
    /// The delay before the second attempt (default 1s).
    pub initial_interval: Option<Duration>,
    /// The longest delay (default 1m).
    pub max_interval: Option<Duration>,
    /// The fraction of each delay that is random, 0 to 1; `true` is 1.
    pub jitter: Option<Jitter>,
}

/// How the delay grows between attempts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Constant,
    /// Doubled each time, up to `max_interval`.
    Exponential,
}

/// Jitter: a fraction or a boolean.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Jitter {
    /// The random fraction of each delay.
    Fraction(#[schemars(range(min = 0.0, max = 1.0))] f64),
    /// `true`: all of it; `false`: none.
    Bool(bool),
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's id: a lowercase letter, then lowercase letters, digits,
    /// `-` and `_`. Unique in the workflow.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_-]*$"), length(max = 64))]
    pub id: String,
    /// The component to run (`.wasm`), relative to this file.
    pub uses: Option<String>,
    /// A built-in step (`wait`, `sleep`) or a shorthand (`ai_inference`)
    /// instead of `uses`.
    #[serde(rename = "type")]
    pub kind: Option<StepType>,
    /// The steps that must finish before this one starts.
    pub needs: Option<Needs>,
    /// Run only when this jq expression yields `true`; otherwise the step is
    /// `skipped`.
    #[serde(rename = "if")]
    pub condition: Option<Condition>,
    /// Run once per item of the array this jq expression yields; `.item`
    /// and `.index` are the current item. The output is the items' outputs.
    pub for_each: Option<String>,
    /// How many items of a `for_each` run at once (default 4).
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrency: Option<u32>,
    /// The step's JSON input; strings that are wholly `${ jq }` are
    /// computed. Default: the output of the one step it needs, or the
    /// workflow input.
    pub input: Option<Value>,
    /// The step's blobs: `${ .blobs }`, `${ .steps.ID.blobs }`, or a mapping
    /// of names to `${ .blobs.NAME }` / `${ .steps.ID.blobs.NAME }`.
    pub blobs: Option<Blobs>,
    /// Values the component declared as config keys.
    pub config: Option<BTreeMap<String, Scalar>>,
    /// This step's limits, over the workflow's.
    pub limits: Option<Limits>,
    /// Wall clock per attempt; for a `wait` step, how long to wait.
    pub timeout: Option<Duration>,
    /// This step's retries, over the workflow's.
    pub retry: Option<Retry>,
    /// What a failure does: `fail` (default), `continue`, or run a fallback.
    pub on_error: Option<OnError>,
    /// Reuse this step's output across runs when the same component (by
    /// digest) with the same config receives the same input: `true` for
    /// ever, or for how long (`1h`). For deterministic steps only.
    pub cache: Option<Cache>,
    /// Directories, outbound HTTP, secrets and models the step may use.
    pub grants: Option<Grants>,
    /// How long a `type: sleep` step sleeps.
    pub duration: Option<Duration>,
    /// A `type: wait` step's output when its timeout passes.
    pub default: Option<Value>,
    /// `type: ai_inference`: `local`, or an LLM's name.
    pub model: Option<String>,
    /// `type: ai_inference` with an LLM: the prompt.
    pub prompt: Option<String>,
    /// `type: ai_inference` with an LLM: an OpenAI-compatible API URL.
    pub endpoint: Option<String>,
    /// `type: ai_inference` with an LLM: the host secret holding the key.
    pub api_key: Option<String>,
}

/// `cache:`: on or off, or a time to live.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Cache {
    /// `true`: reuse for ever; `false`: no cache.
    Enabled(bool),
    /// Reuse for this long.
    Ttl(Duration),
}

/// What a step is when it has no `uses`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    /// A model call through the reference `classify` component.
    AiInference,
    /// Pause until `plait signal RUN STEP` delivers the step's output.
    Wait,
    /// Pause for `duration`.
    Sleep,
}

/// One step id or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Needs {
    /// One step.
    One(String),
    /// Several steps (`[]`: none).
    Many(Vec<String>),
}

/// A jq expression (with or without `${ }`), or a constant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Condition {
    /// A jq expression yielding a boolean.
    Expression(String),
    /// A constant.
    Constant(bool),
}

/// A step's blobs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Blobs {
    /// Every blob of a source: `${ .blobs }` or `${ .steps.ID.blobs }`.
    All(String),
    /// Named blobs: `NAME: ${ .blobs.NAME }`.
    Named(BTreeMap<String, String>),
}

/// What a failure does.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OnError {
    /// `fail` or `continue`.
    Simple(OnErrorMode),
    /// Run another step in this one's place.
    Fallback(FallbackStep),
}

/// `fail` or `continue`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnErrorMode {
    /// The run fails.
    Fail,
    /// The run goes on; the output is `{"error": ...}`.
    Continue,
}

/// `{ fallback: STEP }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackStep {
    /// The step that runs when this one fails; its output becomes this
    /// step's output.
    pub fallback: String,
}

/// What a step may reach.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Guest path to host folder (relative to this file).
    pub dirs: Option<BTreeMap<String, DirGrant>>,
    /// Outbound HTTP allow-list: `scheme://host[:port]`, `*.` subdomains.
    pub http: Option<Vec<HttpGrant>>,
    /// Host secrets, read with `get-config(name)`.
    pub secrets: Option<Vec<SecretGrant>>,
    /// Models from the host's model store.
    pub models: Option<Vec<String>>,
}

/// A directory grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DirGrant {
    /// A host folder, read-only.
    Path(String),
    /// A host folder and its mode.
    Detailed(DirGrantDetail),
}

/// A host folder and its mode.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirGrantDetail {
    /// The host folder.
    pub path: String,
    /// `ro` (default) or `rw`.
    pub mode: Option<DirMode>,
}

/// A directory's mode.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub enum DirMode {
    /// Read-only.
    #[serde(rename = "ro", alias = "read-only")]
    ReadOnly,
    /// Read-write.
    #[serde(rename = "rw", alias = "read-write")]
    ReadWrite,
}

/// An outbound HTTP grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HttpGrant {
    /// Any method to this origin.
    Origin(String),
    /// Only these methods.
    Detailed(HttpGrantDetail),
}

/// An origin and its methods.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrantDetail {
    /// `scheme://host[:port]`.
    pub url: String,
    /// Allowed methods, for example `[GET, POST]`.
    pub methods: Option<Vec<String>>,
}

/// A secret grant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SecretGrant {
    /// The host secret of this name, under the same name.
    Name(String),
    /// `{ step_name: host_name }`.
    Renamed(BTreeMap<String, String>),
}

/// The JSON Schema of the workflow file format, as `plait schema` prints it.
#[must_use]
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(WorkflowFile);
    serde_json::to_value(schema).expect("a schema serializes")
}
