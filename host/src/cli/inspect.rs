//! `plait validate` and `plait inspect`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use plait::definition::Definition;
use plait::engine::Grant;
use plait::plan::Plan;
use serde_json::json;

use super::StoreArgs;
use super::home::Home;
use super::output;

/// Arguments of `plait validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// A workflow file, or a folder holding `workflow.yaml`.
    #[arg(value_name = "WORKFLOW")]
    workflow: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// Arguments of `plait inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A step component (`.wasm`).
    #[arg(value_name = "COMPONENT")]
    component: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `plait validate`: the definition, then every component and grant.
pub async fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let definition = Definition::load(&args.workflow)?;
    let engine = Home::resolve(args.store.store)?.engine()?;
    let plan = Plan::build(&engine, definition).await?;
    println!(
        "workflow `{}` {} is valid: {} step{}",
        plan.definition.name,
        plan.definition.version,
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `plait inspect`: what `describe()` says, plus imports and exports.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let engine = Home::resolve(args.store.store)?.engine()?;
    let component = engine.load_component(&args.component).await?;
    let description = &component.description;
    if args.json {
        output::print_json(&json!({
            "path": component.path,
            "digest": component.digest,
            "size": component.size,
            "name": description.name,
            "version": description.version,
            "description": description.description,
            "input_schema": description.input_schema,
            "output_schema": description.output_schema,
            "grants": description.grants,
            "imports": component.imports,
            "exports": component.exports,
            "compiled_from_cache": component.from_cache,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} {}", description.name, description.version)?;
    if !description.description.is_empty() {
        writeln!(out, "{}", description.description)?;
    }
    writeln!(out)?;
    writeln!(out, "component  {}", component.path.display())?;
    writeln!(out, "digest     {}", component.digest)?;
    writeln!(out, "size       {} bytes", component.size)?;
    writeln!(out, "grants")?;
    if description.grants.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for grant in &description.grants {
        match grant {
            Grant::Config {
                key,
                description,
                required,
            } => writeln!(
                out,
                "  config {key}{}: {description}",
                if *required { " (required)" } else { "" }
            )?,
            Grant::Secret { name } => writeln!(out, "  secret {name}")?,
            Grant::Directory { path } => writeln!(out, "  directory {path}")?,
            Grant::OutboundHttp { url } => writeln!(out, "  outbound http {url}")?,
        }
    }
    for (label, schema) in [
        ("input schema", &description.input_schema),
        ("output schema", &description.output_schema),
    ] {
        match schema {
            Some(schema) => writeln!(
                out,
                "{label}\n  {}",
                serde_json::to_string_pretty(schema)?.replace('\n', "\n  ")
            )?,
            None => writeln!(out, "{label}\n  (not declared)")?,
        }
    }
    writeln!(out, "imports")?;
    for import in &component.imports {
        writeln!(out, "  {import}")?;
    }
    writeln!(out, "exports")?;
    for export in &component.exports {
        writeln!(out, "  {export}")?;
    }
    Ok(ExitCode::SUCCESS)
}
