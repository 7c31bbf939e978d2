//! Validation of the `steps:` list: each step's id, `uses:`, `config:`,
//! kind and flow fields, and the step definitions built from them.

use super::*;

impl Validator<'_, '_> {
    pub(super) fn steps(&mut self, node: &Node) -> Option<Vec<StepDefinition>> {
        let NodeKind::Sequence(items) = &node.kind else {
            self.diag.error(
                node.span,
                format!("`steps` must be a list of steps, found {}", node.describe()),
                Some(
                    "write each step as a list item: `- id: NAME` with `uses: PATH` below it"
                        .to_owned(),
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.diag.error(
                node.span,
                "`steps` is empty: a workflow needs at least one step",
                Some("add a step: `- id: NAME` with `uses: PATH` below it".to_owned()),
            );
            return None;
        }
        // Record every id first: a reference to a later step is then
        // reported as such rather than as an unknown step.
        for (index, item) in items.iter().enumerate() {
            let id = item
                .as_mapping()
                .and_then(|entries| entries.iter().find(|(key, _)| scalar_is(key, "id")))
                .and_then(|(_, value)| value.as_scalar())
                .map(|scalar| scalar.value.clone());
            if let Some(id) = id
                && !self.step_ids.iter().any(|(known, _)| *known == id)
            {
                self.step_ids.push((id, index));
            }
        }
        self.flows = items.iter().map(|_| flow::StepFlow::default()).collect();
        let steps: Vec<Option<StepDefinition>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| self.step(index, item))
            .collect();
        // The graph is checked even when some steps are invalid, so that
        // one run of `plait validate` reports everything it can.
        let flows = std::mem::take(&mut self.flows);
        let graph_steps: Vec<flow::GraphStep> = items
            .iter()
            .zip(&steps)
            .enumerate()
            .map(|(index, (item, step))| flow::GraphStep {
                id: self
                    .step_ids
                    .iter()
                    .find(|(_, first)| *first == index)
                    .map_or_else(|| format!("#{}", index + 1), |(id, _)| id.clone()),
                span: item.span,
                component: step
                    .as_ref()
                    .is_none_or(|step| matches!(step.kind, StepKind::Component)),
                for_each: step.as_ref().is_some_and(|step| step.for_each.is_some()),
            })
            .collect();
        let graph = self.graph(&graph_steps, &flows);
        let mut steps: Vec<StepDefinition> = steps.into_iter().collect::<Option<_>>()?;
        let graph = graph?;
        let ids: Vec<StepId> = steps.iter().map(|step| step.id.clone()).collect();
        for (step, (needs, fallback_of)) in steps.iter_mut().zip(graph) {
            step.needs = needs.into_iter().map(|need| ids[need].clone()).collect();
            step.fallback_of = fallback_of.map(|primary| ids[primary].clone());
        }
        Some(steps)
    }

    pub(super) fn step(&mut self, index: usize, node: &Node) -> Option<StepDefinition> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("each step must be a mapping, found {}", node.describe()),
                Some("write a step as `- id: NAME` with `uses: PATH` below it".to_owned()),
            );
            return None;
        };
        let written_id = entries
            .iter()
            .find(|(key, _)| scalar_is(key, "id"))
            .and_then(|(_, value)| value.as_scalar())
            .map(|scalar| scalar.value.clone());
        let owner = match &written_id {
            Some(id) => format!("step `{id}`"),
            None => format!("step {}", index + 1),
        };
        let fields = self.fields(entries, &owner, &STEP_KEYS);

        let id = match fields.get("id") {
            Some(value) => self.step_id(index, value),
            None if fields.suggested("id") => None,
            None => {
                self.diag.error(
                    node.span,
                    format!("{owner} has no `id`"),
                    Some("add `id: NAME`, a lowercase name unique in the workflow".to_owned()),
                );
                None
            }
        };
        let scope = Scope::Step { index };
        let step_type = fields
            .get("type")
            .map(|value| (self.step_type(value), value.span));
        let builtin = match &step_type {
            Some((Some(name), _)) if name == "wait" || name == "sleep" => Some(name.clone()),
            _ => None,
        };
        if let Some(builtin) = &builtin {
            for key in COMPONENT_KEYS {
                if let Some(value) = fields.get(key) {
                    self.diag.error(
                        value.span,
                        format!("`{key}` does not apply to a `type: {builtin}` step, which runs no component"),
                        Some(match builtin.as_str() {
                            "wait" => "a wait step takes `timeout` and `default`; its output is the signal's data".to_owned(),
                            _ => "a sleep step takes `duration`".to_owned(),
                        }),
                    );
                }
            }
        }
        let flow_fields = self.step_flow(index, &fields, &owner, builtin.as_deref());
        let uses = match (fields.get("uses"), &step_type) {
            (Some(value), None) => self.uses(value),
            (Some(value), Some(_)) => {
                self.diag.error(
                    value.span,
                    format!("{owner} has both `uses` and `type`"),
                    Some(
                        "keep `uses: PATH` to run a component, or `type:` for a built-in step or a shorthand"
                            .to_owned(),
                    ),
                );
                None
            }
            // Expanded below, once config and grants are known.
            (None, Some(_)) => None,
            (None, None) if fields.suggested("uses") => None,
            (None, None) => {
                self.diag.error(
                    node.span,
                    format!("{owner} has no `uses`"),
                    Some(
                        "add `uses: PATH`, the step's component (`.wasm`) relative to this file \
                         (or `type: ai_inference` for a model call)"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        if !matches!(&step_type, Some((Some(name), _)) if name == "ai_inference") {
            for key in shorthand::SHORTHAND_KEYS {
                if let Some(value) = fields.get(key) {
                    self.diag.error(
                        value.span,
                        format!("`{key}` belongs to `type: ai_inference` steps"),
                        Some("move it under `config:` if component `uses` reads it".to_owned()),
                    );
                }
            }
        }
        let input = fields
            .get("input")
            .map(|value| self.template(value, scope, Section::Input));
        let blobs = fields.get("blobs").map(|value| self.blobs(value, scope));
        let config = match fields.get("config") {
            Some(value) => self.config(value),
            None => Some(BTreeMap::new()),
        };
        let limits = fields.get("limits").map(|value| self.limits(value, &owner));
        let grants = fields.get("grants").map(|value| self.grants(value, &owner));

        let cache = fields.get("cache").map(|node| self.cache(node));
        let cache = optional(cache)?.flatten();
        let mut config = config?;
        // Where each key is written, so that a problem with one (a key
        // the component does not declare) points at it.
        let config_spans: BTreeMap<String, Span> = fields
            .get("config")
            .and_then(|node| node.as_mapping())
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|(key, _)| Some((key.as_scalar()?.value.clone(), key.span)))
                    .collect()
            })
            .unwrap_or_default();
        let mut grants = optional(grants)?.unwrap_or_default();
        let (kind, condition, for_each, max_concurrency, retry, on_error, timeout) = flow_fields?;
        let (uses, uses_span) = match step_type {
            Some((step_type, span)) => match step_type?.as_str() {
                "ai_inference" => {
                    self.ai_inference(&fields, span, &owner, &mut config, &mut grants)?
                }
                _ => (PathBuf::new(), span),
            },
            None => uses?,
        };
        let mut limits = optional(limits)?.unwrap_or_default();
        if let Some(timeout) = timeout {
            limits.timeout = Some(timeout);
        }
        Some(StepDefinition {
            id: id?,
            uses,
            uses_span,
            input: optional(input)?,
            blobs: optional(blobs)?,
            config,
            config_spans,
            limits,
            grants,
            span: node.span,
            kind,
            needs: Vec::new(),
            condition,
            for_each,
            max_concurrency,
            retry,
            on_error,
            fallback_of: None,
            cache,
        })
    }

    /// The flow fields of step `index`: `needs`, `if`, `for_each`,
    /// `max_concurrency`, `retry`, `on_error`, `timeout`, and the built-in
    /// kinds' `duration` and `default`. Records what the graph pass needs.
    #[allow(clippy::type_complexity)]
    pub(super) fn step_flow(
        &mut self,
        index: usize,
        fields: &Fields<'_>,
        owner: &str,
        builtin: Option<&str>,
    ) -> Option<(
        StepKind,
        Option<Jq>,
        Option<Jq>,
        u32,
        crate::RetryPolicy,
        OnError,
        Option<std::time::Duration>,
    )> {
        let mut ok = true;
        if let Some(value) = fields.get("needs") {
            let needs = self.needs(value);
            ok &= needs.is_some();
            self.flows[index].needs = needs;
        }
        self.flows[index].has_input = fields.get("input").is_some();
        let filter = |this: &mut Self, key: &str| -> Option<Option<Jq>> {
            let Some(node) = fields.get(key) else {
                return Some(None);
            };
            this.flows[index].conditional.get_or_insert(node.span);
            let jq = this.filter(node, key)?;
            for step in jq.steps() {
                this.flows[index].reads.push((step.clone(), node.span));
            }
            Some(Some(jq))
        };
        let condition = filter(self, "if");
        let for_each = filter(self, "for_each");
        let max_concurrency = match fields.get("max_concurrency") {
            Some(node) => {
                if fields.get("for_each").is_none() {
                    self.diag.error(
                        node.span,
                        format!("{owner} has `max_concurrency` but no `for_each`"),
                        Some(
                            "`max_concurrency` bounds how many items of a `for_each` run at once"
                                .to_owned(),
                        ),
                    );
                    ok = false;
                }
                self.parallelism(node, "max_concurrency")
            }
            None => Some(DEFAULT_MAX_CONCURRENCY),
        };
        let retry = match fields.get("retry") {
            Some(node) => self.retry(node, owner).map(|step| step.over(self.retry)),
            None => Some(self.retry),
        };
        let on_error = match fields.get("on_error") {
            Some(node) => self.on_error(node).map(|(on_error, fallback)| {
                self.flows[index].fallback = fallback;
                on_error
            }),
            None => Some(OnError::Fail),
        };
        let timeout = fields.get("timeout").map(|node| {
            if builtin == Some("sleep") {
                self.diag.error(
                    node.span,
                    "a `type: sleep` step has `duration`, not `timeout`",
                    Some("write `duration: 5s`".to_owned()),
                );
                return None;
            }
            if let Some(limits) = fields.get("limits")
                && limits
                    .as_mapping()
                    .is_some_and(|entries| entries.iter().any(|(key, _)| scalar_is(key, "timeout")))
            {
                self.diag.error(
                    node.span,
                    format!("{owner} sets both `timeout` and `limits.timeout`"),
                    Some("keep one of them; they mean the same".to_owned()),
                );
                return None;
            }
            self.duration(node, "timeout")
        });
        let duration = fields.get("duration").map(|node| {
            if builtin != Some("sleep") {
                self.diag.error(
                    node.span,
                    "`duration` belongs to `type: sleep` steps",
                    Some("for a step's time limit write `timeout`".to_owned()),
                );
                return None;
            }
            self.duration(node, "duration")
        });
        let default = fields.get("default").map(|node| {
            if builtin != Some("wait") {
                self.diag.error(
                    node.span,
                    "`default` belongs to `type: wait` steps",
                    Some("it is the wait's output when its timeout passes".to_owned()),
                );
                return None;
            }
            self.default_output(node)
        });
        let (condition, for_each, max_concurrency, retry, on_error, timeout, duration, default) = (
            condition?,
            for_each?,
            max_concurrency?,
            retry?,
            on_error?,
            optional(timeout)?,
            optional(duration)?,
            optional(default)?,
        );
        let kind = match builtin {
            Some("wait") => StepKind::Wait { timeout, default },
            Some(_) => match duration {
                Some(duration) => StepKind::Sleep { duration },
                None => {
                    self.diag.error(
                        fields
                            .get("type")
                            .map_or(Span::new(1, 1, 1), |node| node.span),
                        format!("{owner} is a `type: sleep` step without `duration`"),
                        Some("add `duration: 5s` (ms, s, m, h)".to_owned()),
                    );
                    return None;
                }
            },
            None => StepKind::Component,
        };
        ok.then(|| {
            (
                kind,
                condition,
                for_each,
                max_concurrency,
                retry.resolve(),
                on_error,
                if builtin.is_some() { None } else { timeout },
            )
        })
    }

    pub(super) fn step_id(&mut self, index: usize, node: &Node) -> Option<StepId> {
        let text = self.text(node, "a step `id`")?;
        let id = match StepId::new(&text) {
            Ok(id) => id,
            Err(error) => {
                self.diag.error(
                    node.span,
                    error.to_string(),
                    Some(name_help(&text, false, "my-step")),
                );
                return None;
            }
        };
        let first = self
            .step_ids
            .iter()
            .find(|(known, _)| *known == text)
            .map(|(_, first)| *first);
        if let Some(first) = first
            && first != index
        {
            self.diag.error(
                node.span,
                format!("duplicate step id `{text}`"),
                Some(format!(
                    "step {} already has the id `{text}`; step ids must be unique",
                    first + 1
                )),
            );
            return None;
        }
        Some(id)
    }

    pub(super) fn uses(&mut self, node: &Node) -> Option<(PathBuf, Span)> {
        let text = self.text(node, "`uses`")?;
        if text.trim().is_empty() {
            self.diag.error(
                node.span,
                "`uses` is empty",
                Some(
                    "set it to the path of the step's component (`.wasm`), relative to this file"
                        .to_owned(),
                ),
            );
            return None;
        }
        Some((self.base_dir.join(text), node.span))
    }

    /// `config:`: a mapping of scalar values kept as their text.
    pub(super) fn config(&mut self, node: &Node) -> Option<BTreeMap<String, String>> {
        let Some(entries) = node.as_mapping() else {
            self.diag.error(
                node.span,
                format!("`config` must be a mapping, found {}", node.describe()),
                Some("write configuration as `key: value` pairs, for example `config: { lowercase: true }`".to_owned()),
            );
            return None;
        };
        let mut config = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let Some(key) = yaml::key_text(key, self.diag) else {
                ok = false;
                continue;
            };
            match value.as_scalar() {
                Some(scalar) if !matches!(scalar.typed(), Ok(Typed::Null)) => {
                    config.insert(key.to_owned(), scalar.value.clone());
                }
                _ => {
                    ok = false;
                    let help = if value.as_scalar().is_some() {
                        "write `\"\"` for an empty value".to_owned()
                    } else {
                        format!(
                            "config values are text; to pass structured data, write it as a JSON string: `{key}: '{{\"a\": 1}}'`"
                        )
                    };
                    self.diag.error(
                        value.span,
                        format!(
                            "config value `{key}` must be a string, number or boolean, found {}",
                            value.describe()
                        ),
                        Some(help),
                    );
                }
            }
        }
        ok.then_some(config)
    }
}
