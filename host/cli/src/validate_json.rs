//! `plait validate --json`: one JSON document on stdout, whether the
//! workflow is valid or not, so that editors and CI can read the
//! diagnostics with their positions (docs/cli.md).

use std::path::Path;
use std::process::ExitCode;

use plait::definition::{Definition, DefinitionError, DefinitionErrors, LoadError};
use plait::plan::Plan;
use serde_json::{Value, json};

use super::StoreArgs;
use super::home::Home;
use super::output;

/// Validates like `plait validate` and prints `{"valid": true, "workflow",
/// "policy", "steps"}` or `{"valid": false, "errors": [...]}`; exits 0 or
/// with the code the error would have had.
pub async fn validate(workflow: &Path, store: StoreArgs) -> anyhow::Result<ExitCode> {
    match check(workflow, store).await {
        Ok(value) => {
            output::print_json(&value)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let errors = match definition_errors(&error) {
                Some(errors) => errors.iter().map(diagnostic).collect(),
                None => vec![json!({
                    "file": workflow,
                    "line": null,
                    "column": null,
                    "message": format!("{error:#}"),
                    "help": null,
                })],
            };
            output::print_json(&json!({"valid": false, "errors": errors}))?;
            Ok(ExitCode::from(super::exit_code(&error)))
        }
    }
}

async fn check(workflow: &Path, store: StoreArgs) -> anyhow::Result<Value> {
    let definition = Definition::load(workflow)?;
    let home = Home::resolve(store.store)?;
    let policy = home.policy(store.policy)?;
    let engine = home.engine(&policy)?;
    let plan = Plan::build_with(&engine, definition, &policy).await?;
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|step| {
            let definition = &step.definition;
            json!({
                "id": definition.id.as_str(),
                "kind": definition.kind.name(),
                "uses": matches!(definition.kind, plait::definition::StepKind::Component)
                    .then(|| definition.uses.display().to_string()),
                "needs": definition.needs.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "valid": true,
        "workflow": {
            "name": plan.definition.name,
            "version": plan.definition.version,
            "path": plan.definition.source.path,
        },
        "policy": policy.origin().to_string(),
        "steps": steps,
    }))
}

/// The definition errors an error carries, if it is about the definition.
fn definition_errors(error: &anyhow::Error) -> Option<&DefinitionErrors> {
    error.chain().find_map(|cause| {
        cause.downcast_ref::<DefinitionErrors>().or_else(|| {
            match cause.downcast_ref::<LoadError>() {
                Some(LoadError::Invalid(errors)) => Some(errors),
                _ => None,
            }
        })
    })
}

/// `{"file", "line", "column", "length", "message", "help", "source"}`:
/// line and column 1-based (characters), `null` for a file-wide error.
fn diagnostic(error: &DefinitionError) -> Value {
    json!({
        "file": error.file.to_string_lossy().replace('\\', "/"),
        "line": error.span.map(|span| span.line),
        "column": error.span.map(|span| span.column),
        "length": error.span.map(|span| span.len),
        "message": error.message,
        "help": error.help,
        "source": error.snippet(),
    })
}
