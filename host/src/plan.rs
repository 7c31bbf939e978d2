//! From a validated definition to a runnable plan: every component loaded,
//! compiled and checked, digests pinned, grants checked against what each
//! component declares.
//!
//! Problems found here (a missing or broken component, a required config
//! key left out) are reported like definition errors, at the line of the
//! step's `uses` or `config`, so `plait validate` lists them all at once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::definition::{Definition, DefinitionError, DefinitionErrors, StepDefinition};
use crate::engine::{Engine, Grant, LoadedComponent, digest};

/// A workflow ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The validated definition.
    pub definition: Definition,
    /// `sha256:<hex>` of the definition file.
    pub digest: String,
    /// One entry per step, in order.
    pub steps: Vec<PlannedStep>,
}

/// A step with its loaded component.
#[derive(Debug)]
pub struct PlannedStep {
    /// The step as defined.
    pub definition: StepDefinition,
    /// The component it runs.
    pub component: Arc<LoadedComponent>,
    /// The config values granted to the step (only keys it declared).
    pub config: BTreeMap<String, String>,
}

impl Plan {
    /// Loads every component of `definition` and checks each step against
    /// its component. Reports every problem found, not only the first.
    pub async fn build(engine: &Engine, definition: Definition) -> Result<Plan, DefinitionErrors> {
        let mut errors = Vec::new();
        let mut loaded: HashMap<PathBuf, Option<Arc<LoadedComponent>>> = HashMap::new();
        let mut steps = Vec::new();
        for step in &definition.steps {
            let component = match loaded.get(&step.uses) {
                Some(component) => component.clone(),
                None => {
                    let component = match engine.load_component(&step.uses).await {
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
                                None,
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
            steps.push(PlannedStep {
                definition: step.clone(),
                config: step.config.clone(),
                component,
            });
        }
        if !errors.is_empty() {
            return Err(DefinitionErrors::new(errors));
        }
        Ok(Plan {
            digest: digest(definition.source.text.as_bytes()),
            definition,
            steps,
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
            // These grants belong to the sandbox's capability model, which
            // this host does not offer yet; refusing up front is better than
            // a step that fails half-way through a run.
            Grant::Secret { name: secret } => errors.push(unsupported(
                definition,
                step,
                name,
                &format!("secret `{secret}`"),
            )),
            Grant::Directory { path } => errors.push(unsupported(
                definition,
                step,
                name,
                &format!("directory `{path}`"),
            )),
            Grant::OutboundHttp { url } => errors.push(unsupported(
                definition,
                step,
                name,
                &format!("outbound HTTP to `{url}`"),
            )),
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
                step.span,
                format!(
                    "step `{}` sets config `{key}`, which component `{name}` does not declare",
                    step.id
                ),
                Some(format!("remove it or fix its spelling; {known}")),
            ));
        }
    }
}

fn unsupported(
    definition: &Definition,
    step: &StepDefinition,
    component: &str,
    what: &str,
) -> DefinitionError {
    DefinitionError::at(
        &definition.source,
        step.uses_span,
        format!(
            "step `{}`: component `{component}` needs {what}, which this version of Plait cannot grant",
            step.id
        ),
        Some("only `config` grants are supported so far".to_owned()),
    )
}

/// `error` and its sources on one line, `outer: inner: innermost`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
