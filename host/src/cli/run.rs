//! `plait run` and `plait resume`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use plait::definition::Definition;
use plait::executor::{Executor, RunReport};
use plait::plan::Plan;
use plait::step::Blob;
use plait::store::{RunStatus, RunStore as _};

use super::home::Home;
use super::output;
use super::{StoreArgs, UsageError};

/// Arguments of `plait run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A workflow file, or a folder holding `workflow.yaml`.
    #[arg(value_name = "WORKFLOW")]
    workflow: PathBuf,
    /// The workflow input: a JSON file, or `-` for stdin [default: {}].
    #[arg(long, value_name = "FILE|-")]
    input: Option<String>,
    /// Attach a file as a named input blob; repeatable.
    #[arg(long = "file", value_name = "NAME=PATH")]
    files: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print exactly one JSON object describing the run on stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `plait resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run to continue.
    #[arg(value_name = "RUN_ID")]
    run_id: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Print exactly one JSON object describing the run on stdout.
    #[arg(long)]
    json: bool,
}

/// `plait run`.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(args.input.as_deref())?;
    let blobs = args
        .files
        .iter()
        .map(|file| read_blob(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let definition = Definition::load(&args.workflow)?;
    let home = Home::resolve(args.store.store)?;
    let policy = home.policy(args.store.policy)?;
    let store = home.open_store()?;
    let engine = home.engine(&policy)?;
    let plan = Plan::build_with(&engine, definition, &policy).await?;
    let executor = Executor::new(store);
    let report = executor.start(&plan, input, blobs).await?;
    finish(&report, args.json)
}

/// `plait resume`.
pub async fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.store.store)?;
    let policy = home.policy(args.store.policy)?;
    let store = home.open_store()?;
    let run = store
        .run(&args.run_id)?
        .ok_or_else(|| plait::store::StoreError::UnknownRun(args.run_id.clone()))?;
    let executor = Executor::new(store.clone());
    if run.status == RunStatus::Succeeded {
        // Nothing to execute: report the stored result.
        let steps = store.steps(&run.id)?;
        return finish(&RunReport { run, steps }, args.json);
    }
    let definition = Definition::load(&run.workflow.path)
        .with_context(|| format!("loading the workflow of run `{}`", run.id))?;
    let engine = home.engine(&policy)?;
    let plan = Plan::build_with(&engine, definition, &policy).await?;
    let report = executor.resume(&plan, &run.id).await?;
    finish(&report, args.json)
}

fn finish(report: &RunReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        output::print_json(&output::run_json(report, None))?;
    } else {
        output::print_run(report)?;
    }
    Ok(match report.run.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(super::EXIT_RUN_FAILED),
    })
}

/// Reads `--input`: a JSON file, `-` for stdin, or `{}` when absent.
fn read_input(input: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let (text, source) = match input {
        None => return Ok(serde_json::json!({})),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the input from stdin")?;
            (text, "stdin".to_owned())
        }
        Some(path) => (
            std::fs::read_to_string(path).map_err(|error| {
                UsageError(format!("could not read input file `{path}`: {error}"))
            })?,
            format!("`{path}`"),
        ),
    };
    serde_json::from_str(&text).map_err(|error| {
        UsageError(format!(
            "the input from {source} is not valid JSON: {error}; `--input` takes a JSON document"
        ))
        .into()
    })
}

/// Reads one `--file NAME=PATH`.
fn read_blob(argument: &str) -> anyhow::Result<Blob> {
    let (name, path) = argument
        .split_once('=')
        .filter(|(name, path)| !name.is_empty() && !path.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "`--file {argument}` must be `NAME=PATH`, for example `--file document=scan.png`"
            ))
        })?;
    let data = std::fs::read(path)
        .map_err(|error| UsageError(format!("could not read `--file {name}={path}`: {error}")))?;
    Ok(Blob {
        name: name.to_owned(),
        media_type: media_type(Path::new(path)).to_owned(),
        data,
    })
}

/// The media type of a file, by extension.
fn media_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "txt" | "text" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "eml" => "message/rfc822",
        "zip" => "application/zip",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
