//! Validation of what a step reads: `input:` templates and their jq
//! expressions, `blobs:` mappings, and the steps they may name.

use super::*;

impl Validator<'_, '_> {
    /// A JSON template: any value, with `${ ... }` strings as expressions.
    pub(super) fn template(
        &mut self,
        node: &Node,
        scope: Scope,
        section: Section,
    ) -> Option<Template> {
        match &node.kind {
            NodeKind::Scalar(scalar) => {
                let typed = match scalar.typed() {
                    Ok(typed) => typed,
                    Err(message) => {
                        self.diag.error(node.span, message, None);
                        return None;
                    }
                };
                let Typed::String(text) = typed else {
                    return Some(Template::Literal(typed.into_json()));
                };
                match self.expression(node, &text)? {
                    Parsed::Literal => Some(Template::Literal(Value::String(text))),
                    Parsed::Json(jq) => {
                        for step in jq.steps() {
                            self.check_step(step, node, scope)?;
                        }
                        Some(Template::Expr(jq))
                    }
                    Parsed::Blob(_) | Parsed::BlobSet(_) => {
                        let help = match section {
                            Section::Input => {
                                "pass blobs under the step's `blobs:`, for example `blobs: { doc: \"${ .blobs.doc }\" }`"
                            }
                            Section::Output => "the workflow `output` is JSON only",
                        };
                        self.diag.error(
                            node.span,
                            format!(
                                "`{text}` selects blobs, which cannot be used in `{}`",
                                section.key()
                            ),
                            Some(help.to_owned()),
                        );
                        None
                    }
                }
            }
            NodeKind::Sequence(items) => {
                let items: Vec<Option<Template>> = items
                    .iter()
                    .map(|item| self.template(item, scope, section))
                    .collect();
                items
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(Template::array)
            }
            NodeKind::Mapping(entries) => {
                let mut members = Vec::new();
                let mut ok = true;
                for (key, value) in entries {
                    let key = yaml::key_text(key, self.diag);
                    match (key, self.template(value, scope, section)) {
                        (Some(key), Some(value)) => members.push((key.to_owned(), value)),
                        _ => ok = false,
                    }
                }
                ok.then(|| Template::object(members))
            }
        }
    }

    /// Parses `text` as an expression, reporting a malformed one. Blob
    /// references keep their path grammar (`${ .blobs.NAME }`,
    /// `${ .steps.ID.blobs }`); everything else is a jq filter.
    pub(super) fn expression(&mut self, node: &Node, text: &str) -> Option<Parsed> {
        let Some(body) = expr::body(text) else {
            return Some(Parsed::Literal);
        };
        match Expression::parse(text) {
            Ok(Some(Expression::Blob(blob))) => return Some(Parsed::Blob(blob)),
            Ok(Some(Expression::BlobSet(source))) => return Some(Parsed::BlobSet(source)),
            _ => {}
        }
        match Jq::compile(body) {
            Ok(jq) => Some(Parsed::Json(jq)),
            Err(error) => {
                self.diag.error(
                    node.span,
                    format!("invalid expression `{text}`: {}", error.message),
                    error.help,
                );
                None
            }
        }
    }

    /// `blobs:`: a blob-set expression, or a mapping of names to blobs.
    pub(super) fn blobs(&mut self, node: &Node, scope: Scope) -> Option<BlobMapping> {
        const FORMS: &str = "`blobs:` takes `${ .blobs }` or `${ .steps.ID.blobs }` for every blob, or a mapping `NAME: ${ .blobs.NAME }`";
        match &node.kind {
            NodeKind::Mapping(entries) => {
                let mut named = BTreeMap::new();
                let mut ok = true;
                for (key, value) in entries {
                    let name = yaml::key_text(key, self.diag);
                    if name == Some("") {
                        self.diag
                            .error(key.span, "a blob name cannot be empty", None);
                        ok = false;
                    }
                    match (name, self.blob(value, scope)) {
                        (Some(key), Some(blob)) => {
                            named.insert(key.to_owned(), blob);
                        }
                        _ => ok = false,
                    }
                }
                ok.then_some(BlobMapping::Named(named))
            }
            NodeKind::Scalar(scalar) if matches!(scalar.typed(), Ok(Typed::String(_))) => {
                let text = &scalar.value;
                match self.expression(node, text)? {
                    Parsed::BlobSet(source) => {
                        if let Some(step) = source.step() {
                            self.check_step(step, node, scope)?;
                        }
                        Some(BlobMapping::All(source))
                    }
                    Parsed::Blob(blob) => {
                        let name = &blob.name;
                        self.diag.error(
                            node.span,
                            format!("`{text}` selects one blob, but a single `blobs:` expression must select every blob of a source"),
                            Some(format!("to pass one blob, name it: `blobs: {{ {name}: \"{text}\" }}`")),
                        );
                        None
                    }
                    Parsed::Json(_) => {
                        self.diag.error(
                            node.span,
                            format!("`{text}` selects JSON, but `blobs:` takes blobs"),
                            Some(format!("pass JSON under `input:`; {FORMS}")),
                        );
                        None
                    }
                    Parsed::Literal => {
                        self.diag.error(
                            node.span,
                            format!("`blobs` must be an expression or a mapping, found the text `{text}`"),
                            Some(FORMS.to_owned()),
                        );
                        None
                    }
                }
            }
            _ => {
                self.diag.error(
                    node.span,
                    format!(
                        "`blobs` must be an expression or a mapping, found {}",
                        node.describe()
                    ),
                    Some(FORMS.to_owned()),
                );
                None
            }
        }
    }

    /// One value of a `blobs:` mapping: a single-blob expression.
    pub(super) fn blob(&mut self, node: &Node, scope: Scope) -> Option<BlobRef> {
        const FORMS: &str = "a named blob is `${ .blobs.NAME }` or `${ .steps.ID.blobs.NAME }`";
        let text = match node.as_scalar().map(yaml::Scalar::typed) {
            Some(Ok(Typed::String(text))) => text,
            _ => {
                self.diag.error(
                    node.span,
                    format!(
                        "a blob must be given by an expression, found {}",
                        node.describe()
                    ),
                    Some(FORMS.to_owned()),
                );
                return None;
            }
        };
        match self.expression(node, &text)? {
            Parsed::Blob(blob) => {
                if let Some(step) = blob.source.step() {
                    self.check_step(step, node, scope)?;
                }
                Some(blob)
            }
            Parsed::BlobSet(_) => {
                self.diag.error(
                    node.span,
                    format!("`{text}` selects every blob of a source, not one blob"),
                    Some(format!(
                        "{FORMS}; to pass every blob, write `blobs: \"{text}\"`"
                    )),
                );
                None
            }
            Parsed::Json(_) => {
                self.diag.error(
                    node.span,
                    format!("`{text}` selects JSON, but `blobs:` takes blobs"),
                    Some(format!("pass JSON under `input:`; {FORMS}")),
                );
                None
            }
            Parsed::Literal => {
                self.diag.error(
                    node.span,
                    format!("a blob must be given by an expression, found the text `{text}`"),
                    Some(FORMS.to_owned()),
                );
                None
            }
        }
    }

    /// Notes that an expression in `scope` reads step `step`. Inside a
    /// step the graph pass checks it once every step's needs are known; in
    /// the workflow `output:` any step may be read, so it only has to exist.
    pub(super) fn check_step(&mut self, step: &StepId, node: &Node, scope: Scope) -> Option<()> {
        match scope {
            Scope::Step { index, .. } => {
                self.flows[index].reads.push((step.clone(), node.span));
                Some(())
            }
            Scope::Output => {
                if self.step_ids.iter().any(|(id, _)| id == step.as_str()) {
                    return Some(());
                }
                let available: Vec<&str> =
                    self.step_ids.iter().map(|(id, _)| id.as_str()).collect();
                let suggestion = closest(step.as_str(), available.iter().copied())
                    .map(|id| format!("did you mean `{id}`? "))
                    .unwrap_or_default();
                self.diag.error(
                    node.span,
                    format!("unknown step `{step}`"),
                    Some(format!("{suggestion}steps: {}", list(&available))),
                );
                None
            }
        }
    }
}
