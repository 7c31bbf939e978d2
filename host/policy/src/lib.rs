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

mod file;
mod secrets;
mod server;
#[cfg(test)]
mod tests;
#[cfg(feature = "triggers")]
pub mod triggers;

pub use secrets::SecretSource;
pub use server::{ServerSettings, TelemetrySettings, WEBHOOK_EVENTS, WebhookEndpoint};

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

impl Policy {
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
