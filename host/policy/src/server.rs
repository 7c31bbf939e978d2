//! The `[server]` and `[telemetry]` settings of `plait serve`.

use super::*;

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
