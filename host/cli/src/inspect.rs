//! `plait validate` and `plait inspect`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use plait::definition::Definition;
use plait::engine::Grant;
use plait::limits;
use plait::plan::Plan;
use plait::telemetry::escape::{terminal, terminal_lines};
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
    /// Print one JSON object on stdout, errors included (docs/cli.md).
    #[arg(long)]
    json: bool,
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
    if args.json {
        return super::validate_json::validate(&args.workflow, args.store).await;
    }
    let definition = Definition::load(&args.workflow)?;
    let home = Home::resolve(args.store.store)?;
    let policy = home.policy(args.store.policy)?;
    let engine = home.engine(&policy)?;
    let plan = Plan::build_with(&engine, definition, &policy).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "workflow `{}` {} is valid under {}: {} step{}",
        plan.definition.name,
        plan.definition.version,
        policy.origin(),
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" }
    )?;
    if let Some(timeout) = plan.definition.timeout {
        writeln!(out, "  run timeout {}", humantime::format_duration(timeout))?;
    }
    for step in &plan.steps {
        let definition = &step.definition;
        // How the step is ordered and what happens on failure, when it
        // says more than the defaults.
        let mut flow = Vec::new();
        if !definition.needs.is_empty() {
            let needs: Vec<&str> = definition.needs.iter().map(|id| id.as_str()).collect();
            flow.push(format!("after {}", needs.join(", ")));
        }
        if let Some(primary) = &definition.fallback_of {
            flow.push(format!("fallback of {primary}"));
        }
        if let Some(condition) = &definition.condition {
            flow.push(format!("if {}", condition.text()));
        }
        if let Some(items) = &definition.for_each {
            flow.push(format!(
                "for each of {} ({} at a time)",
                items.text(),
                definition.max_concurrency
            ));
        }
        if definition.retry.max_attempts > 1 {
            flow.push(format!("up to {} attempts", definition.retry.max_attempts));
        }
        match &definition.on_error {
            plait::definition::OnError::Fail => {}
            plait::definition::OnError::Continue => flow.push("continue on error".to_owned()),
            plait::definition::OnError::Fallback(fallback) => {
                flow.push(format!("on error run {fallback}"))
            }
        }
        let flow = if flow.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flow.join("; "))
        };
        match &definition.kind {
            plait::definition::StepKind::Sleep { duration } => {
                writeln!(
                    out,
                    "  {}: sleep {}{flow}",
                    definition.id,
                    humantime::format_duration(*duration)
                )?;
                continue;
            }
            plait::definition::StepKind::Wait { timeout, default } => {
                let timeout = timeout.map_or("no timeout".to_owned(), |timeout| {
                    format!("timeout {}", humantime::format_duration(timeout))
                });
                let default = if default.is_some() {
                    ", then its default"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  {}: wait for `plait signal RUN {}` ({timeout}{default}){flow}",
                    definition.id, definition.id
                )?;
                continue;
            }
            plait::definition::StepKind::Component => {}
        }
        let sandbox = &step.sandbox;
        let limits = &sandbox.limits;
        writeln!(
            out,
            "  {}: memory {}, timeout {}, fuel {}, output {}, logs {}{flow}",
            step.definition.id,
            limits::format_size(limits.memory),
            humantime::format_duration(limits.timeout),
            limits
                .fuel
                .map_or("unmetered".to_owned(), |f| f.to_string()),
            limits::format_size(limits.output),
            limits::format_size(limits.logs),
        )?;
        for dir in &sandbox.dirs {
            writeln!(
                out,
                "    dir {} -> {} ({})",
                dir.guest,
                dir.host.display(),
                if dir.writable {
                    "read-write"
                } else {
                    "read-only"
                }
            )?;
        }
        for rule in sandbox.http.iter() {
            writeln!(out, "    http {rule}")?;
        }
        for secret in &step.definition.grants.secrets {
            if secret.source == secret.name {
                writeln!(out, "    secret {}", secret.name)?;
            } else {
                writeln!(
                    out,
                    "    secret {} (the host's `{}`)",
                    secret.name, secret.source
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plait inspect`: what `describe()` says, plus imports and exports.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.store.store)?;
    let engine = home.engine(&home.policy(args.store.policy)?)?;
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
    // Everything `describe()` returned is the component's text: escaped,
    // so a description cannot clear the screen or forge lines.
    writeln!(
        out,
        "{} {}",
        terminal(&description.name),
        terminal(&description.version)
    )?;
    if !description.description.is_empty() {
        writeln!(out, "{}", terminal(&description.description))?;
    }
    writeln!(out)?;
    writeln!(out, "component  {}", component.path.display())?;
    writeln!(out, "digest     {}", component.digest)?;
    writeln!(out, "size       {} bytes", component.size)?;
    writeln!(
        out,
        "grants (what a workflow may give it, under the step's `config:` and `grants:`)"
    )?;
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
                "  config {}{}: {}",
                terminal(key),
                if *required { " (required)" } else { "" },
                terminal(description)
            )?,
            Grant::Secret { name } => writeln!(out, "  secret {}", terminal(name))?,
            Grant::Directory { path } => writeln!(out, "  directory {}", terminal(path))?,
            Grant::OutboundHttp { url } => writeln!(out, "  outbound http {}", terminal(url))?,
            Grant::Model { name } => writeln!(out, "  model {}", terminal(name))?,
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
                terminal_lines(&serde_json::to_string_pretty(schema)?).replace('\n', "\n  ")
            )?,
            None => writeln!(out, "{label}\n  (not declared)")?,
        }
    }
    writeln!(out, "imports")?;
    for import in &component.imports {
        writeln!(out, "  {}", terminal(&import.to_string()))?;
    }
    writeln!(out, "exports")?;
    for export in &component.exports {
        writeln!(out, "  {}", terminal(&export.to_string()))?;
    }
    Ok(ExitCode::SUCCESS)
}
