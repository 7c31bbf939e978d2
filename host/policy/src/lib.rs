//! The operator's policy: `plait.toml`, what any workflow on this host may
//! grant and how much it may ask for, and where secrets come from.
//!
//! ```toml
//! [limits]                  # defaults for steps whose workflow sets none
//! memory = "256MiB"
//! timeout = "5m"
//! output = "64MiB"
//! logs = "1MiB"
//! # fuel = "1e9"            # default: unmetered
//!
//! [limits.max]              # the most a workflow may ask for
//! memory = "1GiB"
//! timeout = "1h"
//!
//! [grants]
//! dirs = ["/srv/plait"]     # host folders (and below) a workflow may grant; default: any
//! writable_dirs = false     # may a grant be read-write? default: true
//! outbound_http = ["https://*.example.com"]  # rules a grant must fall within; [] = no network; default: any
//! private_networks = false  # may requests reach loopback/private/link-local addresses? default: false
//! secrets = ["api_token"]   # secret names a workflow may grant; default: any
//! models = ["ppocrv6-tiny-det"]  # models a workflow may grant; default: any
//!
//! [models]
//! dir = "/var/lib/plait/models"  # the model store; default: $PLAIT_MODELS, else ~/.cache/plait/models
//!
//! [runtime]
//! concurrency = 8           # steps running at once on this host, over all runs; default: 8
//! max_input = "256MiB"      # a run's input document plus its input blobs; default: 256MiB
//! recover = false           # `plait run` first continues runs a dead host left in flight; default: false
//! max_interruptions = 3     # a run the host died in this often is failed, not resumed again; default: 3
//!
//! [retention]
//! runs = "30d"              # finished runs (and blobs only they use) are kept this long; default: 30d
//! auto_gc = true            # `plait run` collects at most once a day; default: true
//!
//! [telemetry]
//! log_format = "text"       # `text` or `json` lines on stderr; default: text
//! otlp_endpoint = "http://127.0.0.1:4318"  # export spans over OTLP/HTTP; default: none
//!                           # ($OTEL_EXPORTER_OTLP_ENDPOINT works too)
//! service_name = "plait"    # the `service.name` of exported spans; default: plait
//! run_logs = true           # each run's lines also in logs/RUN_ID.jsonl (`plait logs`); default: true
//!
//! [server]                  # `plait serve`
//! listen = "127.0.0.1:8080" # default: 127.0.0.1:8080 (a non-loopback address needs a token)
//! workflows = "workflows"   # the workflows it serves; default: workflows/ in the Plait home
//! max_body = "32MiB"        # the largest request body; default: 32MiB
//! rate_limit = 50           # requests per second per token (bursts of twice that); default: 50
//! max_active_runs = 32      # runs executing at once; more wait, queued; default: 32
//! max_queued_runs = 1000    # past this many queued runs a start gets 503 + Retry-After; default: 1000
//! shutdown_grace = "30s"    # how long running steps get to finish on shutdown; default: 30s
//! webhook_urls = ["https://hooks.example.com"]  # rules a run's own `webhook` URL must match; default: none allowed
//! webhook_retry_for = "7d"  # keep retrying a message this long (store and forward); default: 8 attempts
//!
//! [[server.webhooks]]       # told of every run's end (and waits), signed per Standard Webhooks
//! url = "https://ops.example.com/plait"
//! workflows = ["invoices"]  # default: every workflow
//! events = ["run.failed"]   # of run.succeeded, run.failed, run.cancelled, run.waiting; default: all
//!
//! [[server.triggers]]       # POST /v1/triggers/intake starts a run with the body
//! name = "intake"
//! workflow = "document-intake"
//! type = "webhook"
//! auth = "token"            # token (runs:write), standard-webhooks or github; default: token
//! # secret = "hook_key"     # the host secret signed webhooks are checked with
//! blob = "document"         # a non-JSON body becomes this input blob; default: JSON bodies only
//!
//! [[server.triggers]]       # a run per slot of a cron schedule
//! name = "nightly"
//! workflow = "report"
//! type = "cron"
//! schedule = "0 2 * * *"    # 5 fields, 6 with seconds first, or @hourly/@daily/...
//! timezone = "Europe/Paris" # default: UTC
//! catch_up = true           # the newest slot missed while down starts once; default: true
//! input = { period = "day" }  # the runs' input; default: {}
//!
//! [[server.triggers]]       # a run per file dropped into a folder, once
//! name = "inbox"
//! workflow = "document-intake"
//! type = "watch"
//! dir = "/srv/inbox"
//! blob = "document"         # the input blob the file becomes; default: document
//! extensions = ["pdf", "png", "jpg"]  # default: any file
//! move_to = "/srv/inbox/done"  # where a started file goes; default: it stays
//!
//! [bundles]
//! max_size = "2GiB"         # the most a template bundle may unpack to; default: 2GiB
//!
//! [secrets]
//! file = "/etc/plait/secrets.toml"  # `name = "value"` lines
//! env_prefix = "PLAIT_SECRET_"      # PLAIT_SECRET_API_TOKEN is secret `api_token`
//! ```
//!
//! Without a file, the policy is [`Policy::default`]: the documented
//! defaults, no caps beyond them, and private networks refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::grants::OutboundRule;
use crate::limits::{LimitSettings, Limits};
use crate::paths::normalize;

/// The environment prefix of secrets when the policy names none.
pub const DEFAULT_SECRET_ENV_PREFIX: &str = "PLAIT_SECRET_";

#[cfg(feature = "triggers")]
pub mod triggers;

// The shared vocabulary, under the names this crate's modules use.
pub(crate) use plait_types::{files, grants, limits, paths};

/// How many steps run at once across every run of one executor, unless
/// the operator sets another number (`[runtime] concurrency`).
pub const DEFAULT_HOST_CONCURRENCY: usize = 8;

/// How many times the host may die while a run is running before a
/// recovery fails the run instead of resuming it (`[runtime]
/// max_interruptions`).
pub const DEFAULT_MAX_INTERRUPTIONS: u32 = 3;

/// The largest bundle unpacked, when the policy sets no other
/// (`[bundles] max_size`): the sum of its files, and so any one of them.
pub const DEFAULT_BUNDLE_MAX_SIZE: u64 = 2 * 1024 * 1024 * 1024;

pub use plait_types::paths::{MODELS_ENV, default_model_dir};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `HH:MM:SS.mmm LEVEL context: message key=value`, for people; one
    /// line per event whatever its text holds (control and bidi
    /// characters are escaped).
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`; use `text` or `json`"
            )),
        }
    }
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Defaults for steps whose workflow sets none.
    pub defaults: Limits,
    /// Caps on what a workflow may ask for.
    pub max: LimitSettings,
    /// Host folders a workflow may grant (each with everything below it);
    /// `None`: any.
    pub dirs: Option<Vec<PathBuf>>,
    /// Whether a directory grant may be read-write.
    pub writable_dirs: bool,
    /// Rules every outbound HTTP grant must fall within; `None`: any.
    pub outbound_http: Option<Vec<OutboundRule>>,
    /// Whether requests may reach non-public addresses.
    pub private_networks: bool,
    /// Secret names a workflow may grant; `None`: any.
    pub secrets: Option<Vec<String>>,
    /// Where secret values come from.
    pub secret_source: SecretSource,
    /// Model names a workflow may grant; `None`: any.
    pub models: Option<Vec<String>>,
    /// The model store folder, when the policy names one; otherwise
    /// [`default_model_dir`].
    pub model_dir: Option<PathBuf>,
    /// How many steps run at once on this host, over every run.
    pub concurrency: usize,
    /// The most a run's input (document plus blobs) may weigh, in bytes.
    pub max_input: u64,
    /// Whether `plait run` continues the runs a dead host left in flight.
    pub recover: bool,
    /// A run the host died in (with an attempt in flight) this many times
    /// in a row is failed by the next recovery instead of resumed; see
    /// the executor's `with_max_interruptions`.
    pub max_interruptions: u32,
    /// How long finished runs are kept.
    pub retention: std::time::Duration,
    /// Whether `plait run` collects garbage on its own (once a day).
    pub auto_gc: bool,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// `[server]`: how `plait serve` serves.
    pub server: ServerSettings,
    /// `[bundles] max_size`: the most a bundle may unpack to, in bytes.
    pub bundle_max_size: u64,
}

/// The `[server]` table: how `plait serve` listens, what it serves and how
/// much it takes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where it listens unless `--listen` says.
    pub listen: std::net::SocketAddr,
    /// The folder of workflow files it serves; `None`: `workflows/` in the
    /// Plait home.
    pub workflows: Option<PathBuf>,
    /// The largest request body, in bytes.
    pub max_body: u64,
    /// Requests per second each token may make (bursts of twice that).
    pub rate_limit: u32,
    /// Runs executing at once; more wait in the queue.
    pub max_active_runs: usize,
    /// Queued runs past which a new run is refused with 503 and
    /// `Retry-After`.
    pub max_queued_runs: usize,
    /// How long running steps get to finish when the server stops.
    pub shutdown_grace: std::time::Duration,
    /// Endpoints told of runs' ends and waits.
    pub webhooks: Vec<WebhookEndpoint>,
    /// Rules a run's own webhook URL must match; `None`: none may be given.
    pub webhook_urls: Option<Vec<OutboundRule>>,
    /// Keep trying a webhook message for this long (store and forward, for
    /// hosts whose uplink comes and goes); `None`: give up after
    /// 8 attempts (`server::webhooks::MAX_ATTEMPTS`).
    pub webhook_retry_for: Option<std::time::Duration>,
    /// What else starts runs: webhook URLs, schedules, watched folders.
    #[cfg(feature = "triggers")]
    pub triggers: Vec<triggers::Trigger>,
}

/// The webhook events a server sends.
pub const WEBHOOK_EVENTS: [&str; 4] = [
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.waiting",
];

/// One `[[server.webhooks]]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Where messages go (`http://` or `https://`).
    pub url: String,
    /// Only runs of these workflows; `None`: all.
    pub workflows: Option<Vec<String>>,
    /// Only these events; `None`: all of [`WEBHOOK_EVENTS`].
    pub events: Option<Vec<String>>,
}

impl WebhookEndpoint {
    /// Whether this endpoint wants `event` of a run of `workflow`.
    pub fn wants(&self, workflow: &str, event: &str) -> bool {
        self.workflows
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == workflow))
            && self
                .events
                .as_ref()
                .is_none_or(|events| events.iter().any(|e| e == event))
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            workflows: None,
            max_body: 32 * 1024 * 1024,
            rate_limit: 50,
            max_active_runs: 32,
            max_queued_runs: 1000,
            shutdown_grace: std::time::Duration::from_secs(30),
            webhooks: Vec::new(),
            webhook_urls: None,
            webhook_retry_for: None,
            #[cfg(feature = "triggers")]
            triggers: Vec::new(),
        }
    }
}

/// The `[telemetry]` table: how the host reports what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// `text` or `json`; `None`: text (or the command line's choice).
    pub log_format: Option<LogFormat>,
    /// The OTLP/HTTP collector spans go to; `None`: none (unless the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` names one).
    pub otlp_endpoint: Option<String>,
    /// The exported `service.name`; `None`: `plait`.
    pub service_name: Option<String>,
    /// Whether each run's lines also go to its own file for `plait logs`
    /// (one file created per run); `None`: yes.
    pub run_logs: Option<bool>,
}

/// The most a run's input may weigh when the policy sets nothing.
pub const DEFAULT_MAX_INPUT: u64 = 256 * 1024 * 1024;

/// The retention of finished runs when the policy sets none.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            source: None,
            defaults: Limits::DEFAULT,
            max: LimitSettings::default(),
            dirs: None,
            writable_dirs: true,
            outbound_http: None,
            private_networks: false,
            secrets: None,
            secret_source: SecretSource::default(),
            models: None,
            model_dir: None,
            concurrency: DEFAULT_HOST_CONCURRENCY,
            max_input: DEFAULT_MAX_INPUT,
            recover: false,
            max_interruptions: DEFAULT_MAX_INTERRUPTIONS,
            retention: DEFAULT_RETENTION,
            auto_gc: true,
            telemetry: TelemetrySettings::default(),
            server: ServerSettings::default(),
            bundle_max_size: DEFAULT_BUNDLE_MAX_SIZE,
        }
    }
}

/// Where secret values are read from: a file first, then the environment.
#[derive(Debug, Clone)]
pub struct SecretSource {
    /// A TOML file of `name = "value"`.
    pub file: Option<PathBuf>,
    /// `PREFIX` + the upper-cased name, for example `PLAIT_SECRET_API_TOKEN`.
    pub env_prefix: String,
}

impl Default for SecretSource {
    fn default() -> Self {
        SecretSource {
            file: None,
            env_prefix: DEFAULT_SECRET_ENV_PREFIX.to_owned(),
        }
    }
}

impl SecretSource {
    /// The environment variable that holds secret `name`.
    pub fn env_var(&self, name: &str) -> String {
        format!(
            "{}{}",
            self.env_prefix,
            name.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Reads the values of `names`. A name found nowhere is an error that
    /// says where it was looked for.
    pub fn resolve(&self, names: &[&str]) -> Result<BTreeMap<String, String>, PolicyError> {
        let file = match &self.file {
            Some(path) => read_secrets_file(path)?,
            None => BTreeMap::new(),
        };
        let mut values = BTreeMap::new();
        for name in names {
            let value = file
                .get(*name)
                .cloned()
                .or_else(|| std::env::var(self.env_var(name)).ok());
            match value {
                Some(value) => {
                    values.insert((*name).to_owned(), value);
                }
                None => {
                    let mut places = format!("environment variable `{}`", self.env_var(name));
                    if let Some(path) = &self.file {
                        places = format!("`{}` or {places}", path.display());
                    }
                    return Err(PolicyError::MissingSecret {
                        name: (*name).to_owned(),
                        places,
                    });
                }
            }
        }
        Ok(values)
    }
}

fn read_secrets_file(path: &Path) -> Result<BTreeMap<String, String>, PolicyError> {
    let text =
        files::read_to_string(path, files::Kind::Config).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).map_err(|error| PolicyError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    table
        .into_iter()
        .map(|(name, value)| match value {
            toml::Value::String(text) => Ok((name, text)),
            other => Err(PolicyError::Invalid {
                path: path.to_owned(),
                key: name,
                message: format!("a secret must be a string, found a {}", other.type_str()),
            }),
        })
        .collect()
}

/// Why a policy could not be loaded or a secret read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("could not read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("`{}` is not a valid policy file: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A value is of the right type but not acceptable.
    #[error("`{}`: `{key}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong and how to write it.
        message: String,
    },
    /// A granted secret has no value.
    #[error("secret `{name}` has no value: set {places}")]
    MissingSecret {
        /// The secret's name.
        name: String,
        /// Where it was looked for.
        places: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    grants: GrantsTable,
    #[serde(default)]
    secrets: SecretsTable,
    #[serde(default)]
    models: ModelsTable,
    #[serde(default)]
    runtime: RuntimeTable,
    #[serde(default)]
    retention: RetentionTable,
    #[serde(default)]
    telemetry: TelemetryTable,
    #[serde(default)]
    server: ServerTable,
    #[serde(default)]
    bundles: BundlesTable,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BundlesTable {
    max_size: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerTable {
    listen: Option<String>,
    workflows: Option<PathBuf>,
    max_body: Option<String>,
    rate_limit: Option<u32>,
    max_active_runs: Option<usize>,
    max_queued_runs: Option<usize>,
    shutdown_grace: Option<String>,
    #[serde(default)]
    webhooks: Vec<WebhookEndpoint>,
    webhook_urls: Option<Vec<String>>,
    webhook_retry_for: Option<String>,
    #[serde(default)]
    #[cfg(feature = "triggers")]
    triggers: Vec<triggers::TriggerTable>,
    /// A build without the server reads a shared policy file but has no
    /// triggers to run.
    #[serde(default)]
    #[cfg(not(feature = "triggers"))]
    #[allow(dead_code)]
    triggers: Vec<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TelemetryTable {
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    run_logs: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetentionTable {
    runs: Option<String>,
    auto_gc: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RuntimeTable {
    concurrency: Option<usize>,
    max_input: Option<String>,
    recover: Option<bool>,
    max_interruptions: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ModelsTable {
    dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsTable {
    memory: Option<toml::Value>,
    timeout: Option<toml::Value>,
    fuel: Option<toml::Value>,
    output: Option<toml::Value>,
    logs: Option<toml::Value>,
    max: Option<LimitValues>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitValues {
    memory: Option<toml::Value>,
    timeout: Option<toml::Value>,
    fuel: Option<toml::Value>,
    output: Option<toml::Value>,
    logs: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantsTable {
    dirs: Option<Vec<PathBuf>>,
    writable_dirs: Option<bool>,
    outbound_http: Option<Vec<String>>,
    private_networks: Option<bool>,
    secrets: Option<Vec<String>>,
    models: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SecretsTable {
    file: Option<PathBuf>,
    env_prefix: Option<String>,
}

impl Policy {
    /// Loads a policy file. Relative paths inside it are relative to the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = files::read_to_string(path, files::Kind::Config).map_err(|source| {
            PolicyError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        Policy::parse(&text, path)
    }

    /// Parses policy `text`, read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| PolicyError::Parse {
            path: path.to_owned(),
            message: error.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let invalid = |key: &str, message: String| PolicyError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let settings = |prefix: &str,
                        values: [(&str, &Option<toml::Value>); 5]|
         -> Result<LimitSettings, PolicyError> {
            let mut settings = LimitSettings::default();
            for (key, value) in values {
                let Some(value) = value else { continue };
                let text = match value {
                    toml::Value::String(text) => text.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    other => {
                        return Err(invalid(
                            &format!("{prefix}{key}"),
                            format!(
                                "expected a string such as \"64MiB\" or \"5s\", found a {}",
                                other.type_str()
                            ),
                        ));
                    }
                };
                let dotted = format!("{prefix}{key}");
                match key {
                    "memory" => {
                        settings.memory =
                            Some(limits::parse_size(&text).map_err(|m| invalid(&dotted, m))?)
                    }
                    "output" => {
                        settings.output =
                            Some(limits::parse_size(&text).map_err(|m| invalid(&dotted, m))?)
                    }
                    "logs" => {
                        settings.logs =
                            Some(limits::parse_size(&text).map_err(|m| invalid(&dotted, m))?)
                    }
                    "timeout" => {
                        settings.timeout =
                            Some(limits::parse_duration(&text).map_err(|m| invalid(&dotted, m))?)
                    }
                    "fuel" => {
                        settings.fuel =
                            Some(limits::parse_fuel(&text).map_err(|m| invalid(&dotted, m))?)
                    }
                    _ => unreachable!("the keys are listed above"),
                }
            }
            Ok(settings)
        };
        let l = &file.limits;
        let defaults = settings(
            "limits.",
            [
                ("memory", &l.memory),
                ("timeout", &l.timeout),
                ("fuel", &l.fuel),
                ("output", &l.output),
                ("logs", &l.logs),
            ],
        )?;
        let max_values = l.max.as_ref();
        let none = None;
        let max = settings(
            "limits.max.",
            [
                ("memory", max_values.map_or(&none, |m| &m.memory)),
                ("timeout", max_values.map_or(&none, |m| &m.timeout)),
                ("fuel", max_values.map_or(&none, |m| &m.fuel)),
                ("output", max_values.map_or(&none, |m| &m.output)),
                ("logs", max_values.map_or(&none, |m| &m.logs)),
            ],
        )?;
        // An explicit default above its own cap would refuse every workflow
        // that sets nothing: say so here rather than at every run. A
        // built-in default above a cap is lowered to the cap.
        if let Some((limit, asked, cap)) = defaults.exceeding(&max).into_iter().next() {
            return Err(invalid(
                &format!("limits.{limit}"),
                format!(
                    "the default {asked} is above `limits.max.{limit}` ({cap}); lower the default or raise the cap"
                ),
            ));
        }
        let builtin = Limits::DEFAULT;
        let capped = |value: u64, cap: Option<u64>| cap.map_or(value, |cap| value.min(cap));
        let defaults = Limits {
            memory: defaults
                .memory
                .unwrap_or(capped(builtin.memory, max.memory)),
            timeout: defaults.timeout.unwrap_or(
                max.timeout
                    .map_or(builtin.timeout, |cap| builtin.timeout.min(cap)),
            ),
            fuel: defaults.fuel.or(max.fuel),
            output: defaults
                .output
                .unwrap_or(capped(builtin.output, max.output)),
            logs: defaults.logs.unwrap_or(capped(builtin.logs, max.logs)),
        };

        // An allow-list of outbound rules, each checked, under `key`.
        let rules = |key: &str,
                     rules: &Option<Vec<String>>|
         -> Result<Option<Vec<OutboundRule>>, PolicyError> {
            rules
                .as_ref()
                .map(|rules| {
                    rules
                        .iter()
                        .map(|rule| OutboundRule::parse(rule, None).map_err(|m| invalid(key, m)))
                        .collect()
                })
                .transpose()
        };
        let outbound_http = rules("grants.outbound_http", &file.grants.outbound_http)?;
        let dirs = file.grants.dirs.as_ref().map(|dirs| {
            dirs.iter()
                .map(|dir| normalize(&base.join(dir)))
                .collect::<Vec<_>>()
        });
        Ok(Policy {
            source: Some(path.to_owned()),
            defaults,
            max,
            dirs,
            writable_dirs: file.grants.writable_dirs.unwrap_or(true),
            outbound_http,
            private_networks: file.grants.private_networks.unwrap_or(false),
            secrets: file.grants.secrets.clone(),
            secret_source: SecretSource {
                file: file.secrets.file.as_ref().map(|f| base.join(f)),
                env_prefix: file
                    .secrets
                    .env_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SECRET_ENV_PREFIX.to_owned()),
            },
            models: file.grants.models.clone(),
            model_dir: file.models.dir.as_ref().map(|dir| base.join(dir)),
            retention: match &file.retention.runs {
                None => DEFAULT_RETENTION,
                Some(text) => limits::parse_duration(text)
                    .map_err(|message| invalid("retention.runs", message))?,
            },
            auto_gc: file.retention.auto_gc.unwrap_or(true),
            telemetry: TelemetrySettings {
                log_format: match &file.telemetry.log_format {
                    None => None,
                    Some(text) => Some(
                        text.parse()
                            .map_err(|message| invalid("telemetry.log_format", message))?,
                    ),
                },
                otlp_endpoint: match &file.telemetry.otlp_endpoint {
                    Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                        return Err(invalid(
                            "telemetry.otlp_endpoint",
                            format!(
                                "`{url}` is not an http:// or https:// URL (OTLP/HTTP, port 4318 on most collectors)"
                            ),
                        ));
                    }
                    other => other.clone(),
                },
                service_name: file.telemetry.service_name.clone(),
                run_logs: file.telemetry.run_logs,
            },
            server: {
                let defaults = ServerSettings::default();
                let table = &file.server;
                let positive = |key: &str, value: Option<usize>, default: usize| match value {
                    None => Ok(default),
                    Some(0) => Err(invalid(key, "must be at least 1".to_owned())),
                    Some(n) => Ok(n),
                };
                ServerSettings {
                    listen: match &table.listen {
                        None => defaults.listen,
                        Some(text) => text.parse().map_err(|_| {
                            invalid(
                                "server.listen",
                                format!("`{text}` is not an address and port, for example `127.0.0.1:8080`"),
                            )
                        })?,
                    },
                    workflows: table.workflows.as_ref().map(|dir| base.join(dir)),
                    max_body: match &table.max_body {
                        None => defaults.max_body,
                        Some(text) => limits::parse_size(text)
                            .map_err(|message| invalid("server.max_body", message))?,
                    },
                    rate_limit: match table.rate_limit {
                        None => defaults.rate_limit,
                        Some(0) => return Err(invalid("server.rate_limit", "must be at least 1 request per second".to_owned())),
                        Some(n) => n,
                    },
                    max_active_runs: positive("server.max_active_runs", table.max_active_runs, defaults.max_active_runs)?,
                    max_queued_runs: positive("server.max_queued_runs", table.max_queued_runs, defaults.max_queued_runs)?,
                    shutdown_grace: match &table.shutdown_grace {
                        None => defaults.shutdown_grace,
                        Some(text) => limits::parse_duration(text)
                            .map_err(|message| invalid("server.shutdown_grace", message))?,
                    },
                    webhook_retry_for: match &table.webhook_retry_for {
                        None => None,
                        Some(text) => Some(
                            limits::parse_duration(text)
                                .map_err(|message| invalid("server.webhook_retry_for", message))?,
                        ),
                    },
                    webhooks: {
                        for endpoint in &table.webhooks {
                            if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) || endpoint.url.parse::<http::Uri>().is_err() {
                                return Err(invalid("server.webhooks.url", format!("`{}` is not an http:// or https:// URL", endpoint.url)));
                            }
                            for event in endpoint.events.iter().flatten() {
                                if !WEBHOOK_EVENTS.contains(&event.as_str()) {
                                    return Err(invalid("server.webhooks.events", format!("`{event}` is not an event; the events are {}", WEBHOOK_EVENTS.join(", "))));
                                }
                            }
                        }
                        table.webhooks.clone()
                    },
                    webhook_urls: rules("server.webhook_urls", &table.webhook_urls)?,
                    #[cfg(feature = "triggers")]
                    triggers: triggers::parse_all(&table.triggers, base)
                        .map_err(|(key, message)| invalid(&format!("server.triggers.{key}"), message))?,
                }
            },
            bundle_max_size: match &file.bundles.max_size {
                None => DEFAULT_BUNDLE_MAX_SIZE,
                Some(text) => limits::parse_size(text)
                    .map_err(|message| invalid("bundles.max_size", message))?,
            },
            recover: file.runtime.recover.unwrap_or(false),
            max_interruptions: file
                .runtime
                .max_interruptions
                .unwrap_or(DEFAULT_MAX_INTERRUPTIONS)
                .max(1),
            max_input: match &file.runtime.max_input {
                None => DEFAULT_MAX_INPUT,
                Some(text) => limits::parse_size(text)
                    .map_err(|message| invalid("runtime.max_input", message))?,
            },
            concurrency: match file.runtime.concurrency {
                None => DEFAULT_HOST_CONCURRENCY,
                Some(n @ 1..=1024) => n,
                Some(n) => {
                    return Err(invalid(
                        "runtime.concurrency",
                        format!("{n} is not between 1 and 1024"),
                    ));
                }
            },
        })
    }

    /// The model store: the policy's `[models] dir`, else
    /// [`default_model_dir`].
    pub fn model_store(&self) -> PathBuf {
        self.model_dir.clone().unwrap_or_else(default_model_dir)
    }

    /// Where this policy came from, for messages.
    pub fn origin(&self) -> String {
        match &self.source {
            Some(path) => format!("the host policy `{}`", path.display()),
            None => "the default host policy".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("/etc/plait/plait.toml"))
    }

    #[test]
    fn an_empty_file_is_the_default_policy() {
        let policy = parse("").unwrap();
        assert_eq!(policy.defaults, Limits::DEFAULT);
        assert!(policy.dirs.is_none() && policy.outbound_http.is_none());
        assert!(!policy.private_networks);
    }

    #[test]
    fn a_full_file_parses() {
        let policy = parse(
            r#"
            [limits]
            memory = "128MiB"
            timeout = "10s"
            fuel = "1e9"
            [limits.max]
            memory = "256MiB"
            [grants]
            dirs = ["data"]
            writable_dirs = false
            outbound_http = ["https://*.example.com"]
            private_networks = true
            secrets = ["api_token"]
            [secrets]
            file = "secrets.toml"
            "#,
        )
        .unwrap();
        assert_eq!(policy.defaults.memory, 128 << 20);
        assert_eq!(policy.defaults.timeout, Duration::from_secs(10));
        assert_eq!(policy.defaults.fuel, Some(1_000_000_000));
        assert_eq!(policy.max.memory, Some(256 << 20));
        assert_eq!(policy.dirs.unwrap(), vec![PathBuf::from("/etc/plait/data")]);
        assert!(!policy.writable_dirs && policy.private_networks);
        assert_eq!(
            policy.secret_source.file.unwrap(),
            PathBuf::from("/etc/plait/secrets.toml")
        );
    }

    #[test]
    fn mistakes_are_named() {
        let error = parse("[limits]\nmemroy = \"1GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `memroy`"), "{error}");
        let error = parse("[limits]\nmemory = \"1 gigabyte\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`limits.memory`") && error.contains("unknown size unit"),
            "{error}"
        );
        // A cap below a built-in default lowers the default.
        let capped = parse("[limits.max]\nmemory = \"64MiB\"\nfuel = \"1e6\"\n").unwrap();
        assert_eq!(capped.defaults.memory, 64 << 20);
        assert_eq!(capped.defaults.fuel, Some(1_000_000));
        let error = parse("[limits]\nmemory = \"1GiB\"\n[limits.max]\nmemory = \"512MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("above `limits.max.memory`"), "{error}");
        let error = parse("[grants]\noutbound_http = [\"example.com\"]\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no scheme"), "{error}");
    }

    #[test]
    fn secrets_come_from_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "api_token = \"from-file\"\n").unwrap();
        let source = SecretSource {
            file: Some(file),
            env_prefix: "PLAIT_TEST_POLICY_SECRET_".into(),
        };
        let values = source.resolve(&["api_token"]).unwrap();
        assert_eq!(values["api_token"], "from-file");
        let error = source.resolve(&["other-key"]).unwrap_err().to_string();
        assert!(
            error.contains("PLAIT_TEST_POLICY_SECRET_OTHER_KEY"),
            "{error}"
        );
    }
}
