//! `limits:` (on the workflow and on a step) and a step's `grants:`.
//!
//! ```yaml
//! limits: { memory: 128MiB, timeout: 30s }   # defaults for every step
//! steps:
//!   - id: fetch
//!     uses: fetch.wasm
//!     limits: { timeout: 5s, fuel: 1e9, output: 1MiB, logs: 64KiB }
//!     grants:
//!       dirs:
//!         /data: ./data                      # read-only
//!         /out: { path: ./out, mode: rw }     # read-write
//!       http:
//!         - https://api.example.com
//!         - { url: "https://*.example.org", methods: [GET] }
//!       secrets: [api_token]
//!       models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]
//! ```

use std::path::PathBuf;

use super::super::yaml::{self, Node, NodeKind, Typed};
use super::{Validator, list};
use crate::grants::{DirGrant, HttpGrant, ModelGrant, OutboundRule, SecretGrant, StepGrants};
use crate::limits::{self, LimitSettings};

pub(crate) const LIMIT_KEYS: [&str; 5] = ["memory", "timeout", "fuel", "output", "logs"];
pub(crate) const GRANT_KEYS: [&str; 4] = ["dirs", "http", "secrets", "models"];
const DIR_KEYS: [&str; 2] = ["path", "mode"];
const HTTP_KEYS: [&str; 2] = ["url", "methods"];
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

impl Validator<'_, '_> {
    /// `limits:`, on the workflow (`owner` "the workflow") or on a step.
    pub(super) fn limits(&mut self, node: &Node, owner: &str) -> Option<LimitSettings> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`limits` must be a mapping, found {}", node.describe()),
                Some("write for example `limits: { memory: 64MiB, timeout: 5s }`".to_owned()),
            );
            return None;
        };
        let fields = self.fields(entries, &format!("`limits` of {owner}"), &LIMIT_KEYS);
        let mut settings = LimitSettings {
            span: Some(node.span),
            ..LimitSettings::default()
        };
        let mut ok = true;
        for key in LIMIT_KEYS {
            let Some(value) = fields.get(key) else {
                continue;
            };
            let Some(text) = self.text(value, &format!("`limits.{key}`")) else {
                ok = false;
                continue;
            };
            let parsed = match key {
                "memory" => limits::parse_size(&text).map(|v| settings.memory = Some(v)),
                "output" => limits::parse_size(&text).map(|v| settings.output = Some(v)),
                "logs" => limits::parse_size(&text).map(|v| settings.logs = Some(v)),
                "timeout" => limits::parse_duration(&text).map(|v| settings.timeout = Some(v)),
                _ => limits::parse_fuel(&text).map(|v| settings.fuel = Some(v)),
            };
            if let Err(message) = parsed {
                ok = false;
                self.diag
                    .error(value.span, format!("`limits.{key}`: {message}"), None);
            }
        }
        ok.then_some(settings)
    }

    /// A step's `grants:`.
    pub(super) fn grants(&mut self, node: &Node, owner: &str) -> Option<StepGrants> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`grants` must be a mapping, found {}", node.describe()),
                Some(format!("allowed keys: {}", list(GRANT_KEYS))),
            );
            return None;
        };
        let fields = self.fields(entries, &format!("`grants` of {owner}"), &GRANT_KEYS);
        let dirs = fields.get("dirs").map(|node| self.dirs(node));
        let http = fields.get("http").map(|node| self.http(node));
        let secrets = fields.get("secrets").map(|node| self.secrets(node));
        let models = fields.get("models").map(|node| self.models(node));
        Some(StepGrants {
            dirs: dirs.unwrap_or(Some(Vec::new()))?,
            http: http.unwrap_or(Some(Vec::new()))?,
            secrets: secrets.unwrap_or(Some(Vec::new()))?,
            models: models.unwrap_or(Some(Vec::new()))?,
        })
    }

    fn dirs(&mut self, node: &Node) -> Option<Vec<DirGrant>> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`grants.dirs` must be a mapping, found {}", node.describe()),
                Some(
                    "map the path the step sees to a host folder: `dirs: { /data: ./data }`"
                        .to_owned(),
                ),
            );
            return None;
        };
        let mut dirs: Vec<DirGrant> = Vec::new();
        let mut ok = true;
        for (key, value) in entries {
            let Some(guest) = yaml::key_text(key, self.diag) else {
                ok = false;
                continue;
            };
            if !guest.starts_with('/') || guest.split('/').any(|part| part == ".." || part == ".") {
                self.diag.error(
                    key.span,
                    format!(
                        "`{guest}`: the path a step sees must be absolute, without `.` or `..`"
                    ),
                    Some("write it like `/data`".to_owned()),
                );
                ok = false;
                continue;
            }
            let guest = if guest.len() > 1 {
                guest.trim_end_matches('/')
            } else {
                guest
            };
            if dirs.iter().any(|dir| dir.guest == guest) {
                self.diag
                    .error(key.span, format!("`{guest}` is granted twice"), None);
                ok = false;
                continue;
            }
            let (path, writable) = match &value.kind {
                NodeKind::Mapping(fields) => {
                    let fields = self.fields(fields, &format!("directory `{guest}`"), &DIR_KEYS);
                    let path = match fields.get("path") {
                        Some(path) => self.text(path, "`path`"),
                        None => {
                            self.diag.error(
                                value.span,
                                format!("directory `{guest}` has no `path`"),
                                Some(
                                    "add `path: ./folder`, the host folder to show the step"
                                        .to_owned(),
                                ),
                            );
                            None
                        }
                    };
                    let writable = match fields.get("mode") {
                        None => Some(false),
                        Some(mode) => {
                            match self.text(mode, "`mode`").as_deref() {
                                Some("ro" | "read-only") => Some(false),
                                Some("rw" | "read-write") => Some(true),
                                Some(other) => {
                                    self.diag.error(
                                    mode.span,
                                    format!("unknown directory mode `{other}`"),
                                    Some("use `ro` (read-only, the default) or `rw` (read-write)".to_owned()),
                                );
                                    None
                                }
                                None => None,
                            }
                        }
                    };
                    (path, writable)
                }
                _ => (
                    self.text(value, &format!("directory `{guest}`")),
                    Some(false),
                ),
            };
            let (Some(path), Some(writable)) = (path, writable) else {
                ok = false;
                continue;
            };
            if path.trim().is_empty() {
                self.diag.error(
                    value.span,
                    format!("directory `{guest}` has an empty host path"),
                    None,
                );
                ok = false;
                continue;
            }
            dirs.push(DirGrant {
                guest: guest.to_owned(),
                host: crate::paths::normalize(&self.base_dir.join(PathBuf::from(path))),
                writable,
                span: key.span,
            });
        }
        ok.then_some(dirs)
    }

    fn http(&mut self, node: &Node) -> Option<Vec<HttpGrant>> {
        let NodeKind::Sequence(items) = &node.kind else {
            self.diag.error(
                node.span,
                format!("`grants.http` must be a list, found {}", node.describe()),
                Some(
                    "list the hosts the step may call: `http: [https://api.example.com]`"
                        .to_owned(),
                ),
            );
            return None;
        };
        let mut rules = Vec::new();
        let mut ok = true;
        for item in items {
            let (url, methods) = match &item.kind {
                NodeKind::Mapping(entries) => {
                    let fields = self.fields(entries, "an `http` grant", &HTTP_KEYS);
                    let url = match fields.get("url") {
                        Some(url) => self.text(url, "`url`"),
                        None => {
                            self.diag.error(
                                item.span,
                                "an `http` grant has no `url`",
                                Some(
                                    "write `{ url: https://api.example.com, methods: [GET] }`"
                                        .to_owned(),
                                ),
                            );
                            None
                        }
                    };
                    let methods = match fields.get("methods") {
                        None => Some(None),
                        Some(methods) => self.methods(methods).map(Some),
                    };
                    (url, methods)
                }
                _ => (self.text(item, "an `http` grant"), Some(None)),
            };
            let (Some(url), Some(methods)) = (url, methods) else {
                ok = false;
                continue;
            };
            match OutboundRule::parse(&url, methods) {
                Ok(rule) => rules.push(HttpGrant {
                    rule,
                    span: item.span,
                }),
                Err(message) => {
                    self.diag.error(item.span, message, None);
                    ok = false;
                }
            }
        }
        ok.then_some(rules)
    }

    fn methods(&mut self, node: &Node) -> Option<Vec<String>> {
        let NodeKind::Sequence(items) = &node.kind else {
            self.diag.error(
                node.span,
                format!("`methods` must be a list, found {}", node.describe()),
                Some("write for example `methods: [GET, POST]`".to_owned()),
            );
            return None;
        };
        let mut methods = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(text) = self.text(item, "a method") else {
                ok = false;
                continue;
            };
            let upper = text.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                methods.push(upper);
            } else {
                self.diag.error(
                    item.span,
                    format!("unknown HTTP method `{text}`"),
                    Some(format!("use one of {}", list(METHODS))),
                );
                ok = false;
            }
        }
        ok.then_some(methods)
    }

    fn secrets(&mut self, node: &Node) -> Option<Vec<SecretGrant>> {
        let NodeKind::Sequence(items) = &node.kind else {
            self.diag.error(
                node.span,
                format!(
                    "`grants.secrets` must be a list of names, found {}",
                    node.describe()
                ),
                Some("write for example `secrets: [api_token]`".to_owned()),
            );
            return None;
        };
        let mut secrets: Vec<SecretGrant> = Vec::new();
        let mut ok = true;
        let string = |node: &Node| match node.as_scalar() {
            Some(scalar)
                if matches!(scalar.typed(), Ok(Typed::String(_))) && !scalar.value.is_empty() =>
            {
                Some(scalar.value.clone())
            }
            _ => None,
        };
        for item in items {
            // `name`, or `{ name: host-name }` to read the host's secret
            // `host-name` as the step's `name`.
            let pair = match &item.kind {
                NodeKind::Mapping(entries) if entries.len() == 1 => {
                    string(&entries[0].0).zip(string(&entries[0].1))
                }
                _ => string(item).map(|name| (name.clone(), name)),
            };
            let Some((name, source)) = pair else {
                self.diag.error(
                    item.span,
                    format!("a secret is a name, or `{{ name: host-name }}`, found {}", item.describe()),
                    Some("write for example `secrets: [api_token]` or `secrets: [{ token: github_pat }]`".to_owned()),
                );
                ok = false;
                continue;
            };
            if secrets.iter().any(|secret| secret.name == name) {
                self.diag
                    .error(item.span, format!("secret `{name}` is granted twice"), None);
                ok = false;
                continue;
            }
            secrets.push(SecretGrant {
                name,
                source,
                span: item.span,
            });
        }
        ok.then_some(secrets)
    }

    fn models(&mut self, node: &Node) -> Option<Vec<ModelGrant>> {
        let help = || Some("write for example `models: [ppocrv6-tiny-det]`".to_owned());
        let NodeKind::Sequence(items) = &node.kind else {
            self.diag.error(
                node.span,
                format!(
                    "`grants.models` must be a list of model names, found {}",
                    node.describe()
                ),
                help(),
            );
            return None;
        };
        let mut models: Vec<ModelGrant> = Vec::new();
        let mut ok = true;
        for item in items {
            let name = match item.as_scalar() {
                Some(scalar) if matches!(scalar.typed(), Ok(Typed::String(_))) => {
                    scalar.value.clone()
                }
                _ => {
                    self.diag.error(
                        item.span,
                        format!("a model is a name, found {}", item.describe()),
                        help(),
                    );
                    ok = false;
                    continue;
                }
            };
            if let Err(message) = crate::grants::check_model_name(&name) {
                self.diag.error(item.span, message, help());
                ok = false;
                continue;
            }
            if models.iter().any(|model| model.name == name) {
                self.diag
                    .error(item.span, format!("model `{name}` is granted twice"), None);
                ok = false;
                continue;
            }
            models.push(ModelGrant {
                name,
                span: item.span,
            });
        }
        ok.then_some(models)
    }
}
