//! `type: ai_inference`: a model call written without naming a component.
//!
//! ```yaml
//! - id: classify
//!   type: ai_inference
//!   model: local                  # offline MiniLM embeddings; or an LLM's name
//!   input: { text: "${ .steps.ocr.output.text }" }
//!   config: { labels: '{"invoice": "a bill", "letter": "correspondence"}' }
//!
//! - id: classify-llm
//!   type: ai_inference
//!   model: gpt-4o-mini
//!   endpoint: https://api.openai.com/v1
//!   api_key: openai_key           # the host's secret holding the key
//!   prompt: "Which of these is it? {labels}\n\n{text}"
//!   input: { text: "${ .steps.ocr.output.text }" }
//!   config: { labels: '["invoice", "letter"]' }
//! ```
//!
//! It runs the reference `classify` component: `model: local` (or the
//! embedding model's own name) in mode `local`, with that model granted;
//! any other model in mode `llm` against `endpoint`, with the endpoint's
//! host granted for outbound HTTP and `api_key` granted as its secret. The
//! expansion is what the author would have written by hand, so `plait
//! validate` shows it and the operator's policy applies to it unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::super::Span;
use super::super::yaml::Node;
use super::{Fields, Validator};
use crate::grants::{HttpGrant, ModelGrant, OutboundRule, SecretGrant, StepGrants};

/// Step types a workflow may write instead of `uses`.
pub(super) const STEP_TYPES: [&str; 3] = ["ai_inference", "wait", "sleep"];
/// Keys that belong to `type: ai_inference` only.
pub(super) const SHORTHAND_KEYS: [&str; 4] = ["model", "prompt", "endpoint", "api_key"];
/// The embedding model `model: local` means.
pub const LOCAL_MODEL: &str = "all-minilm-l6-v2-int8";
/// The environment variable naming the folder of the reference plugins.
pub const PLUGINS_ENV: &str = "PLAIT_PLUGINS";

/// Where the reference plugin `name` (for example `classify`) is:
/// `$PLAIT_PLUGINS/<name>.wasm`, else the plugins built in the source tree
/// this `plait` was built from (`scripts/setup` builds them).
pub fn reference_plugin(name: &str) -> PathBuf {
    let dir = match std::env::var_os(PLUGINS_ENV).filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../plugins/target/wasm32-wasip2/release"
        )),
    };
    dir.join(format!("{name}.wasm"))
}

/// The reference plugin `name` for a workflow in `base_dir`: the one its
/// bundle carries (`components/<name>.wasm` beside the workflow), else
/// [`reference_plugin`].
pub fn plugin_for(base_dir: &std::path::Path, name: &str) -> PathBuf {
    let bundled = base_dir.join("components").join(format!("{name}.wasm"));
    if bundled.is_file() {
        bundled
    } else {
        reference_plugin(name)
    }
}

impl Validator<'_, '_> {
    /// Expands `type: ai_inference` into `config` and `grants`, returning
    /// the component it runs.
    pub(super) fn ai_inference(
        &mut self,
        fields: &Fields<'_>,
        type_span: Span,
        owner: &str,
        config: &mut BTreeMap<String, String>,
        grants: &mut StepGrants,
    ) -> Option<(PathBuf, Span)> {
        let text = |this: &mut Self, key: &str| -> Option<Option<(String, Span)>> {
            match fields.get(key) {
                None => Some(None),
                Some(node) => this
                    .text(node, &format!("`{key}`"))
                    .map(|text| Some((text, node.span))),
            }
        };
        let model = text(self, "model")?;
        let prompt = text(self, "prompt")?;
        let endpoint = text(self, "endpoint")?;
        let api_key = text(self, "api_key")?;
        let Some((model, model_span)) = model else {
            self.diag.error(
                type_span,
                format!("{owner} is `type: ai_inference` but has no `model`"),
                Some(format!(
                    "add `model: local` (offline, {LOCAL_MODEL}) or the name of an LLM with its `endpoint`"
                )),
            );
            return None;
        };
        let mut ok = true;
        for key in ["mode", "model", "endpoint", "prompt"] {
            if let Some(set) = fields.get("config").filter(|_| config.contains_key(key)) {
                self.diag.error(
                    set.span,
                    format!("`config.{key}` is set by `type: ai_inference`"),
                    Some(if key == "mode" {
                        "the mode follows from `model:` (`local`, or an LLM's name)".to_owned()
                    } else {
                        format!("write `{key}:` on the step, or drop `type` and write `uses:`")
                    }),
                );
                ok = false;
            }
        }
        if model == "local" || model == LOCAL_MODEL {
            for (key, value) in [
                ("prompt", &prompt),
                ("endpoint", &endpoint),
                ("api_key", &api_key),
            ] {
                if let Some((_, span)) = value {
                    self.diag.error(
                        *span,
                        format!("`{key}` applies to an LLM model, not to `model: {model}`"),
                        Some("the local model compares embeddings; it takes no prompt and calls no endpoint".to_owned()),
                    );
                    ok = false;
                }
            }
            config.insert("mode".to_owned(), "local".to_owned());
            if !grants.models.iter().any(|m| m.name == LOCAL_MODEL) {
                grants.models.push(ModelGrant {
                    name: LOCAL_MODEL.to_owned(),
                    span: model_span,
                });
            }
        } else {
            let Some((endpoint, endpoint_span)) = endpoint else {
                self.diag.error(
                    model_span,
                    format!("`model: {model}` is an LLM, which needs an `endpoint`"),
                    Some("add `endpoint: https://api.openai.com/v1` (any OpenAI-compatible API), or use `model: local`".to_owned()),
                );
                return None;
            };
            let origin = endpoint.split_once("://").map(|(scheme, rest)| {
                format!("{scheme}://{}", rest.split('/').next().unwrap_or(""))
            });
            match origin
                .as_deref()
                .map(|origin| OutboundRule::parse(origin, Some(vec!["POST".to_owned()])))
            {
                Some(Ok(rule)) => {
                    if !grants.http.iter().any(|grant| grant.rule.covers(&rule)) {
                        grants.http.push(HttpGrant {
                            rule,
                            span: endpoint_span,
                        });
                    }
                }
                Some(Err(message)) => {
                    self.diag
                        .error(endpoint_span, format!("`endpoint`: {message}"), None);
                    ok = false;
                }
                None => {
                    self.diag.error(
                        endpoint_span,
                        format!("`endpoint` `{endpoint}` is not a URL"),
                        Some("write it like `https://api.openai.com/v1`".to_owned()),
                    );
                    ok = false;
                }
            }
            config.insert("mode".to_owned(), "llm".to_owned());
            config.insert("model".to_owned(), model);
            config.insert("endpoint".to_owned(), endpoint);
            if let Some((prompt, _)) = prompt {
                config.insert("prompt".to_owned(), prompt);
            }
            if let Some((source, span)) = api_key
                && !grants.secrets.iter().any(|secret| secret.name == "api_key")
            {
                grants.secrets.push(SecretGrant {
                    name: "api_key".to_owned(),
                    source,
                    span,
                });
            }
        }
        ok.then(|| (plugin_for(self.base_dir, "classify"), type_span))
    }

    /// `type:`, one of [`STEP_TYPES`].
    pub(super) fn step_type(&mut self, node: &Node) -> Option<String> {
        let text = self.text(node, "`type`")?;
        if STEP_TYPES.contains(&text.as_str()) {
            Some(text)
        } else {
            self.diag.error(
                node.span,
                format!("unknown step type `{text}`"),
                Some(format!(
                    "known types: {}; or write `uses: PATH` to run a component",
                    STEP_TYPES.join(", ")
                )),
            );
            None
        }
    }
}
