//! The `plait.toml` format: its tables as serde reads them, and how
//! [`Policy::load`] turns them into a checked [`Policy`].

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
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
pub(crate) struct BundlesTable {
    max_size: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerTable {
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
pub(crate) struct TelemetryTable {
    log_format: Option<String>,
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    run_logs: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionTable {
    runs: Option<String>,
    auto_gc: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeTable {
    concurrency: Option<usize>,
    max_input: Option<String>,
    recover: Option<bool>,
    max_interruptions: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelsTable {
    dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsTable {
    memory: Option<toml::Value>,
    timeout: Option<toml::Value>,
    fuel: Option<toml::Value>,
    output: Option<toml::Value>,
    logs: Option<toml::Value>,
    max: Option<LimitValues>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitValues {
    memory: Option<toml::Value>,
    timeout: Option<toml::Value>,
    fuel: Option<toml::Value>,
    output: Option<toml::Value>,
    logs: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantsTable {
    dirs: Option<Vec<PathBuf>>,
    writable_dirs: Option<bool>,
    outbound_http: Option<Vec<String>>,
    private_networks: Option<bool>,
    secrets: Option<Vec<String>>,
    models: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretsTable {
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
}
