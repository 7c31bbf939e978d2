//! From a validated definition to a runnable plan: every component loaded,
//! compiled and checked, digests pinned, and each step's sandbox resolved.
//!
//! A step's sandbox is what three parties agree on: the component declares
//! what it may need (`describe()`), the workflow grants some of that
//! (`config`, `grants`, `limits`), and the operator's [`Policy`] caps what
//! any workflow may grant. A workflow granting what its component did not
//! declare, or what the policy forbids, is refused here, before anything
//! runs; what a component declared but the workflow did not grant, the step
//! simply does not get.
//!
//! Problems found here (a missing or broken component, a required config
//! key left out, a grant past the policy) are reported like definition
//! errors, at the line of the step's `uses`, `config` or grant, so
//! `plait validate` lists them all at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::capabilities::redact::MIN_SECRET_LEN;
use crate::capabilities::{PreopenDir, Sandbox};
use crate::definition::{
    Definition, DefinitionError, DefinitionErrors, Span, StepDefinition, StepKind,
};
use crate::digest::{Digest, digest};
use crate::engine::{Engine, Grant, LoadedComponent};
use crate::errors::error_chain;
use crate::grants::{OutboundRule, is_private};
use crate::ids::RunId;
use crate::limits::{Limit, LimitSettings, Limits};
use crate::policy::Policy;
use crate::schema::Schema;

/// A workflow ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The validated definition.
    pub definition: Definition,
    /// `sha256:<hex>` of the definition file.
    pub digest: Digest,
    /// One entry per step, in order.
    pub steps: Vec<PlannedStep>,
    /// The workflow's `input.schema`, compiled once for every run of the
    /// plan.
    pub input_schema: Option<Schema>,
}

/// A step with its loaded component.
#[derive(Debug)]
pub struct PlannedStep {
    /// The step as defined.
    pub definition: StepDefinition,
    /// The component it runs; `None` for the built-in `wait` and `sleep`.
    pub component: Option<Arc<LoadedComponent>>,
    /// What the step may reach and use: config, secrets, directories,
    /// outbound HTTP, limits.
    pub sandbox: Sandbox,
    /// The component's input schema, compiled.
    pub input_schema: Option<Schema>,
    /// The component's output schema, compiled.
    pub output_schema: Option<Schema>,
}

impl PlannedStep {
    /// The digest of the step's component; empty for a built-in step.
    pub fn component_digest(&self) -> &str {
        self.component
            .as_ref()
            .map_or("", |component| component.digest.as_str())
    }
}

/// Why the plan of a stored run could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RunPlanError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The definition pinned in the store is not text (the store is damaged).
    #[error("the stored definition of run `{0}` is not UTF-8 text; the store is damaged")]
    NotText(RunId),
    /// The definition (pinned, or the file of an old run) does not load.
    #[error("loading the workflow of run `{run_id}`")]
    Load {
        /// The run.
        run_id: RunId,
        /// Why.
        #[source]
        source: crate::definition::LoadError,
    },
    /// The definition or its components do not check out.
    #[error(transparent)]
    Definition(#[from] DefinitionErrors),
}

impl Plan {
    /// The plan run `run` started with: its definition and components as
    /// pinned in the store when it was created, whatever the files hold
    /// now. (Runs created before pinning fall back to the files, and a
    /// resume refuses if those changed.)
    pub async fn of_run(
        engine: &Engine,
        policy: &Policy,
        store: &dyn crate::store::RunStore,
        run: &crate::store::RunRecord,
    ) -> Result<Plan, RunPlanError> {
        let definition = match store.blob(&run.workflow.digest)? {
            Some(bytes) => {
                let text =
                    String::from_utf8(bytes).map_err(|_| RunPlanError::NotText(run.id.clone()))?;
                Definition::parse(&text, &run.workflow.path)?
            }
            None => Definition::load(&run.workflow.path).map_err(|source| RunPlanError::Load {
                run_id: run.id.clone(),
                source,
            })?,
        };
        let mut pinned = HashMap::new();
        for (record, step) in store.steps(&run.id)?.iter().zip(&definition.steps) {
            if record.component_digest.is_empty() {
                continue;
            }
            if let Some(bytes) = store.blob(&record.component_digest)? {
                pinned.insert(step.uses.clone(), bytes);
            }
        }
        Ok(Plan::build_pinned(engine, definition, policy, &pinned).await?)
    }

    /// [`Plan::build_with`] under the default policy.
    pub async fn build(engine: &Engine, definition: Definition) -> Result<Plan, DefinitionErrors> {
        Plan::build_with(engine, definition, &Policy::default()).await
    }

    /// Loads every component of `definition`, checks each step against its
    /// component and `policy`, and resolves each step's sandbox. Reports
    /// every problem found, not only the first.
    pub async fn build_with(
        engine: &Engine,
        definition: Definition,
        policy: &Policy,
    ) -> Result<Plan, DefinitionErrors> {
        Plan::build_pinned(engine, definition, policy, &HashMap::new()).await
    }

    /// Like [`Plan::build_with`], but a component whose `uses` path is in
    /// `pinned` is loaded from those bytes, not from the file: a resumed run
    /// executes the components it started with, whatever is on disk now.
    pub async fn build_pinned(
        engine: &Engine,
        definition: Definition,
        policy: &Policy,
        pinned: &HashMap<PathBuf, Vec<u8>>,
    ) -> Result<Plan, DefinitionErrors> {
        let mut errors = Vec::new();
        let mut loaded: HashMap<PathBuf, Option<Arc<LoadedComponent>>> = HashMap::new();
        let mut steps = Vec::new();
        let mut checker = Checker {
            definition: &definition,
            policy,
            engine,
            errors: Vec::new(),
        };
        let workflow_limits = checker.limits(&definition.limits, None);
        errors.append(&mut checker.errors);
        for step in &definition.steps {
            if !matches!(step.kind, StepKind::Component) {
                steps.push(PlannedStep {
                    definition: step.clone(),
                    component: None,
                    sandbox: Sandbox::default(),
                    input_schema: None,
                    output_schema: None,
                });
                continue;
            }
            let component = match loaded.get(&step.uses) {
                Some(component) => component.clone(),
                None => {
                    let from = match pinned.get(&step.uses) {
                        Some(bytes) => engine.load_component_bytes(&step.uses, bytes).await,
                        None => engine.load_component(&step.uses).await,
                    };
                    let component = match from {
                        Ok(component) => Some(component),
                        Err(error) => {
                            errors.push(DefinitionError::at(
                                &definition.source,
                                step.uses_span,
                                format!(
                                    "step `{}` cannot use this component: {}",
                                    step.id,
                                    error_chain(&error)
                                ),
                                build_hint(&step.uses),
                            ));
                            None
                        }
                    };
                    loaded.insert(step.uses.clone(), component.clone());
                    component
                }
            };
            let Some(component) = component else { continue };
            check_grants(&definition, step, &component, &mut errors);
            let limits = checker.limits(&step.limits, Some(workflow_limits));
            let sandbox = checker.sandbox(step, &component, limits);
            errors.append(&mut checker.errors);
            let mut schema = |which: &str, schema: &Option<serde_json::Value>| {
                let schema = schema.as_ref()?;
                match Schema::compile(schema) {
                    Ok(schema) => Some(schema),
                    Err(error) => {
                        errors.push(DefinitionError::at(
                            &definition.source,
                            step.uses_span,
                            format!(
                                "component `{}` of step `{}` declares an invalid {which} schema: {error}",
                                component.description.name, step.id
                            ),
                            Some("fix the schema the component returns from `describe()`".to_owned()),
                        ));
                        None
                    }
                }
            };
            let input_schema = schema("input", &component.description.input_schema);
            let output_schema = schema("output", &component.description.output_schema);
            steps.push(PlannedStep {
                definition: step.clone(),
                component: Some(component),
                sandbox,
                input_schema,
                output_schema,
            });
        }
        // Validation compiled it already; a definition built some other way
        // is still refused here rather than run unchecked.
        let input_schema = match definition.input_schema.as_ref().map(Schema::compile) {
            None => None,
            Some(Ok(schema)) => Some(schema),
            Some(Err(error)) => {
                errors.push(DefinitionError::at(
                    &definition.source,
                    Span::new(1, 1, 1),
                    format!("`input.schema` is not a valid JSON Schema: {error}"),
                    None,
                ));
                None
            }
        };
        if !errors.is_empty() {
            return Err(DefinitionErrors::new(errors));
        }
        Ok(Plan {
            digest: digest(definition.source.text.as_bytes()),
            definition,
            steps,
            input_schema,
        })
    }
}

/// Checks the step's `config` against the grants its component declares.
fn check_grants(
    definition: &Definition,
    step: &StepDefinition,
    component: &LoadedComponent,
    errors: &mut Vec<DefinitionError>,
) {
    let name = &component.description.name;
    let mut declared = Vec::new();
    for grant in &component.description.grants {
        match grant {
            Grant::Config {
                key,
                description,
                required,
            } => {
                declared.push(key.as_str());
                if *required && !step.config.contains_key(key) {
                    errors.push(DefinitionError::at(
                        &definition.source,
                        step.span,
                        format!("step `{}` needs config `{key}` ({description})", step.id),
                        Some(format!("add `{key}: <value>` under the step's `config:`")),
                    ));
                }
            }
            // Checked against the step's `grants:` in `Checker::sandbox`.
            Grant::Secret { .. }
            | Grant::Directory { .. }
            | Grant::OutboundHttp { .. }
            | Grant::Model { .. } => {}
        }
    }
    for key in step.config.keys() {
        if !declared.contains(&key.as_str()) {
            let known = if declared.is_empty() {
                "it declares no config keys".to_owned()
            } else {
                format!("it declares: {}", declared.join(", "))
            };
            errors.push(DefinitionError::at(
                &definition.source,
                step.config_spans.get(key).copied().unwrap_or(step.span),
                format!(
                    "step `{}` sets config `{key}`, which component `{name}` does not declare",
                    step.id
                ),
                Some(format!("remove it or fix its spelling; {known}")),
            ));
        }
    }
}

/// Checks a definition's grants and limits against the components and the
/// policy, collecting errors.
struct Checker<'a> {
    definition: &'a Definition,
    policy: &'a Policy,
    engine: &'a Engine,
    errors: Vec<DefinitionError>,
}

impl Checker<'_> {
    /// Help for a grant the policy refuses: the exact line that allows it,
    /// and the file it goes in. A policy file beside the workflow (as
    /// templates ship one) is named, never read on its own.
    fn policy_line(&self, line: &str) -> String {
        let file = match &self.policy.source {
            Some(path) => format!("the host policy `{}`", path.display()),
            None => {
                "a host policy (`plait.toml` in the Plait home, or a file given with `--policy`)"
                    .to_owned()
            }
        };
        let mut help = format!("to allow it, set `{line}` under `[grants]` in {file}");
        let beside = self
            .definition
            .source
            .path
            .parent()
            .map(|dir| dir.join("plait.toml"))
            .filter(|path| path.is_file());
        let same = |path: &Path| {
            std::fs::canonicalize(path).ok()
                == beside
                    .as_deref()
                    .and_then(|b| std::fs::canonicalize(b).ok())
        };
        if let Some(beside) = &beside
            && !self.policy.source.as_deref().is_some_and(same)
        {
            help.push_str(&format!(
                "; the workflow's folder ships a policy for it: `--policy {}`",
                beside.display()
            ));
        }
        help
    }

    fn error(&mut self, span: Span, message: String, help: Option<String>) {
        self.errors.push(DefinitionError::at(
            &self.definition.source,
            span,
            message,
            help,
        ));
    }

    /// `settings` over `base` (the policy's defaults when `None`), with
    /// every value checked against the policy's caps and the engine.
    fn limits(&mut self, settings: &LimitSettings, base: Option<Limits>) -> Limits {
        let span = settings
            .span
            .unwrap_or_else(|| self.definition.steps[0].span);
        let origin = self.policy.origin();
        for (limit, asked, cap) in settings.exceeding(&self.policy.max) {
            self.error(
                span,
                format!("`limits.{limit}` asks for {asked}, above the {cap} that {origin} allows"),
                Some(format!(
                    "lower it to at most {cap}, or raise `limits.max.{limit}` in the policy"
                )),
            );
        }
        let limits = base.unwrap_or(self.policy.defaults).with(settings);
        if settings.fuel.is_some() && !self.engine.fuel_enabled() {
            self.error(
                span,
                "`limits.fuel` needs fuel metering, which this host's engine has switched off"
                    .to_owned(),
                Some("remove the fuel limit, or run on an engine with fuel metering".to_owned()),
            );
        }
        let ceiling = self.engine.max_memory_bytes() as u64;
        if settings.memory.is_some() && limits.memory > ceiling {
            self.error(
                span,
                format!(
                    "`limits.memory` asks for {}, above this host's largest instance ({})",
                    Limit::Memory.format(limits.memory),
                    Limit::Memory.format(ceiling)
                ),
                Some("lower it, or raise `limits.max.memory` in the host policy".to_owned()),
            );
        }
        limits
    }

    /// The step's sandbox: its grants checked against what the component
    /// declared and what the policy allows.
    fn sandbox(
        &mut self,
        step: &StepDefinition,
        component: &LoadedComponent,
        limits: Limits,
    ) -> Sandbox {
        let mut sandbox = Sandbox {
            config: step.config.clone(),
            limits,
            private_networks: self.policy.private_networks,
            ..Sandbox::default()
        };
        self.dirs(step, component, &mut sandbox);
        self.http(step, component, &mut sandbox);
        self.secrets(step, component, &mut sandbox);
        self.models(step, component, &mut sandbox);
        sandbox
    }

    /// The granted directories that the component declared and the policy allows.
    fn dirs(&mut self, step: &StepDefinition, component: &LoadedComponent, sandbox: &mut Sandbox) {
        let name = component.description.name.clone();
        let declared = &component.description.grants;
        let origin = self.policy.origin();
        let declared_dirs = declared_names(declared, |g| match g {
            Grant::Directory { path } => Some(path),
            _ => None,
        });
        for dir in &step.grants.dirs {
            if !declared_dirs.contains(&dir.guest.as_str()) {
                self.error(
                    dir.span,
                    format!(
                        "step `{}` grants directory `{}`, which component `{name}` does not ask for",
                        step.id, dir.guest
                    ),
                    Some(asks_for("directories", &declared_dirs)),
                );
                continue;
            }
            if !dir.host.is_dir() {
                self.error(
                    dir.span,
                    format!(
                        "directory `{}` is granted as `{}`, which is not a folder on this host",
                        dir.guest,
                        dir.host.display()
                    ),
                    Some("create it, or fix the path (relative paths start at the workflow file's folder)".to_owned()),
                );
                continue;
            }
            if let Some(allowed) = &self.policy.dirs
                && !allowed.iter().any(|prefix| dir.host.starts_with(prefix))
            {
                self.error(
                    dir.span,
                    format!(
                        "directory `{}` (`{}`) is outside the folders {origin} allows",
                        dir.guest,
                        dir.host.display()
                    ),
                    Some({
                        let paths: Vec<String> = allowed
                            .iter()
                            .chain([&dir.host])
                            .map(|path| path.display().to_string())
                            .collect();
                        let line = self.policy_line(&format!(
                            "dirs = {}",
                            toml_list(paths.iter().map(String::as_str))
                        ));
                        format!(
                            "{}; {line}",
                            allowed_help(allowed.iter().map(|p| format!("`{}`", p.display())))
                        )
                    }),
                );
                continue;
            }
            if dir.writable && !self.policy.writable_dirs {
                self.error(
                    dir.span,
                    format!(
                        "directory `{}` is granted read-write, which {origin} does not allow",
                        dir.guest
                    ),
                    Some(format!(
                        "grant it read-only (`mode: ro`, the default), or {}",
                        self.policy_line("writable_dirs = true")
                    )),
                );
                continue;
            }
            sandbox.dirs.push(PreopenDir {
                host: dir.host.clone(),
                guest: dir.guest.clone(),
                writable: dir.writable,
            });
        }
    }

    /// The granted outbound HTTP rules within the component's declared patterns and the policy.
    fn http(&mut self, step: &StepDefinition, component: &LoadedComponent, sandbox: &mut Sandbox) {
        let name = component.description.name.clone();
        let declared = &component.description.grants;
        let origin = self.policy.origin();
        let mut declared_http = Vec::new();
        for grant in declared {
            if let Grant::OutboundHttp { url } = grant {
                match OutboundRule::parse(url, None) {
                    Ok(rule) => declared_http.push(rule),
                    Err(problem) => self.error(
                        step.uses_span,
                        format!(
                            "component `{name}` declares an invalid outbound HTTP grant: {problem}"
                        ),
                        Some("the component's author must fix its `describe()`".to_owned()),
                    ),
                }
            }
        }
        let mut rules = Vec::new();
        for grant in &step.grants.http {
            let rule = &grant.rule;
            if !declared_http.iter().any(|declared| declared.covers(rule)) {
                let asked: Vec<String> = declared_http.iter().map(ToString::to_string).collect();
                let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
                self.error(
                    grant.span,
                    format!(
                        "step `{}` grants outbound HTTP to `{rule}`, which component `{name}` does not ask for",
                        step.id
                    ),
                    Some(asks_for("outbound HTTP", &asked)),
                );
                continue;
            }
            if let Some(allowed) = &self.policy.outbound_http
                && !allowed.iter().any(|cap| cap.covers(rule))
            {
                let rules: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                let line = self.policy_line(&format!(
                    "outbound_http = {}",
                    toml_list(
                        rules
                            .iter()
                            .map(String::as_str)
                            .chain([rule.to_string().as_str()])
                    )
                ));
                let help = if rules.is_empty() {
                    format!("this host allows no outbound network at all; {line}")
                } else {
                    format!("allowed: {}; {line}", rules.join(", "))
                };
                self.error(
                    grant.span,
                    format!("outbound HTTP to `{rule}` is not allowed by {origin}"),
                    Some(help),
                );
                continue;
            }
            let names_private = rule.ip().is_some_and(is_private) || rule.host == "localhost";
            if names_private && !self.policy.private_networks {
                self.error(
                    grant.span,
                    format!("outbound HTTP to `{rule}` reaches a private or loopback address, which {origin} does not allow"),
                    Some(self.policy_line("private_networks = true")),
                );
                continue;
            }
            rules.push(rule.clone());
        }
        sandbox.http = Arc::new(rules);
    }

    /// The granted secrets the component declared and the policy allows, with their values.
    fn secrets(
        &mut self,
        step: &StepDefinition,
        component: &LoadedComponent,
        sandbox: &mut Sandbox,
    ) {
        let name = component.description.name.clone();
        let declared = &component.description.grants;
        let declared_secrets = declared_names(declared, |g| match g {
            Grant::Secret { name } => Some(name),
            _ => None,
        });
        for secret in &step.grants.secrets {
            // The component reads the step's name; the policy and the
            // secret store speak of the host's.
            let named = Named {
                kind: "secret",
                kinds: "secrets",
                declared_as: &secret.name,
                allowed_as: &secret.source,
                span: secret.span,
            };
            if !self.named_grant(
                step,
                &name,
                &named,
                &declared_secrets,
                self.policy.secrets.as_deref(),
            ) {
                continue;
            }
            match self.policy.secret_source.resolve(&[secret.source.as_str()]) {
                Ok(values) => {
                    let value = values.into_values().next().unwrap_or_default();
                    if value.len() < MIN_SECRET_LEN {
                        self.error(
                            secret.span,
                            format!("secret `{}` is shorter than {MIN_SECRET_LEN} bytes, too short to redact reliably", secret.source),
                            Some("use the real credential".to_owned()),
                        );
                        continue;
                    }
                    sandbox.config.insert(secret.name.clone(), value.clone());
                    sandbox.secrets.push(value);
                }
                Err(error) => self.error(secret.span, error.to_string(), None),
            }
        }
    }

    /// Whether a grant by name (a secret, a model) is one the component
    /// declared and the policy allows; reports it if not.
    fn named_grant(
        &mut self,
        step: &StepDefinition,
        component: &str,
        named: &Named<'_>,
        declared: &[&str],
        allowed: Option<&[String]>,
    ) -> bool {
        let Named {
            kind,
            kinds,
            declared_as,
            allowed_as,
            span,
        } = *named;
        if !declared.contains(&declared_as) {
            self.error(
                span,
                format!(
                    "step `{}` grants {kind} `{declared_as}`, which component `{component}` does not ask for",
                    step.id
                ),
                Some(asks_for(kinds, declared)),
            );
            return false;
        }
        if let Some(allowed) = allowed
            && !allowed.iter().any(|name| name == allowed_as)
        {
            let origin = self.policy.origin();
            let line = self.policy_line(&format!(
                "{kinds} = {}",
                toml_list(allowed.iter().map(String::as_str).chain([allowed_as]))
            ));
            let help = format!("{}; {line}", allowed_help(allowed.iter().cloned()));
            self.error(
                span,
                format!("{kind} `{allowed_as}` is not one {origin} allows workflows to grant"),
                Some(help),
            );
            return false;
        }
        true
    }

    /// The granted models the component declared, the policy allows and
    /// the model store holds.
    fn models(
        &mut self,
        step: &StepDefinition,
        component: &LoadedComponent,
        sandbox: &mut Sandbox,
    ) {
        let name = component.description.name.clone();
        let declared = declared_names(&component.description.grants, |g| match g {
            Grant::Model { name } => Some(name),
            _ => None,
        });
        let store = self.policy.model_store();
        for model in &step.grants.models {
            let named = Named {
                kind: "model",
                kinds: "models",
                declared_as: &model.name,
                allowed_as: &model.name,
                span: model.span,
            };
            if !self.named_grant(
                step,
                &name,
                &named,
                &declared,
                self.policy.models.as_deref(),
            ) {
                continue;
            }
            if !crate::inference::AVAILABLE {
                self.error(
                    model.span,
                    format!(
                        "model `{}` is granted, and this plait is built without the `inference` feature, so it runs no models; use a build with it (the default, or `--features runtime` at the edge)",
                        model.name
                    ),
                    None,
                );
                continue;
            }
            match crate::inference::find_model_for(
                &self.definition.source.path,
                &store,
                &model.name,
            ) {
                Ok(folder) => {
                    sandbox.models.insert(model.name.clone(), folder);
                }
                Err(message) => self.error(model.span, message, None),
            }
        }
    }
}

/// A grant by name, for [`Checker::named_grant`].
struct Named<'a> {
    /// `secret`, `model`.
    kind: &'static str,
    /// `secrets`, `models`.
    kinds: &'static str,
    /// The name the component declared it under.
    declared_as: &'a str,
    /// The name the policy allows it under.
    allowed_as: &'a str,
    /// Where it is written.
    span: Span,
}

/// The names of the grants of one kind a component declared.
fn declared_names(grants: &[Grant], pick: impl Fn(&Grant) -> Option<&String>) -> Vec<&str> {
    grants.iter().filter_map(pick).map(String::as_str).collect()
}

/// How to build a component that is missing from a Cargo workspace's
/// wasm32-wasip2 output (`plugins/target/wasm32-wasip2/release/x.wasm`):
/// examples point at components built from source.
fn build_hint(uses: &Path) -> Option<String> {
    if uses.exists() {
        return None;
    }
    // `examples/retry/../../tests/guests/...` as `tests/guests/...`.
    let mut path = PathBuf::new();
    for part in uses.components() {
        match part {
            std::path::Component::ParentDir if path.file_name().is_some() => {
                path.pop();
            }
            other => path.push(other),
        }
    }
    // Relative to where the command runs, as the user would type it.
    let path = std::env::current_dir()
        .ok()
        .and_then(|dir| path.strip_prefix(dir).ok().map(Path::to_path_buf))
        .unwrap_or(path);
    let text = path.to_string_lossy().replace('\\', "/");
    let (workspace, _) = text.split_once("/target/wasm32-wasip2/")?;
    Some(format!(
        "it is built from source: `cargo build --release --target wasm32-wasip2` in `{workspace}`; `scripts/setup` builds the reference plugins (plugins/) and the test guests (tests/guests/)"
    ))
}

/// Help listing what the policy allows.
fn allowed_help(allowed: impl Iterator<Item = String>) -> String {
    let allowed: Vec<String> = allowed.collect();
    if allowed.is_empty() {
        "allowed: none".to_owned()
    } else {
        format!("allowed: {}", allowed.join(", "))
    }
}

/// A TOML array of strings: `["a", "b"]`.
fn toml_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items
        .into_iter()
        .map(|item| toml::Value::String(item.to_owned()).to_string())
        .collect();
    format!("[{}]", items.join(", "))
}

/// Help naming what a component asks for.
fn asks_for(what: &str, declared: &[&str]) -> String {
    if declared.is_empty() {
        format!("it asks for no {what}; `plait inspect` lists what it needs")
    } else {
        format!("it asks for: {}", declared.join(", "))
    }
}
