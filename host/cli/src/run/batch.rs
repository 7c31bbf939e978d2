//! `plait run --batch`: one run per input line, a bounded number in flight.

use std::path::Path;
use std::process::ExitCode;

use plait::definition::Definition;
use plait::executor::{Origin, StartRequest};
use plait::plan::Plan;
use plait::store::RunStatus;

use super::input::read_blob;
use super::{RunArgs, check_input_size};
use crate::UsageError;
use crate::home::Home;
use crate::output;
use crate::progress::Progress;

/// How many runs of a batch are in flight at once (their steps are bounded
/// by the host's concurrency besides).
const BATCH_RUNS: usize = 64;

/// `plait run --batch FILE.jsonl`.
pub(super) async fn run_batch(args: &RunArgs, batch: &Path) -> anyhow::Result<ExitCode> {
    let text = plait::files::read(batch, plait::files::Kind::Input).map_err(|error| {
        UsageError(format!(
            "could not read `--batch {}`: {error}",
            batch.display()
        ))
    })?;
    let prefix = match &args.idempotency_key {
        Some(key) => key.clone(),
        None => format!("batch:{}", &plait::digest::digest(&text)[7..23]),
    };
    let text = String::from_utf8(text)
        .map_err(|_| UsageError(format!("`--batch {}` is not UTF-8 text", batch.display())))?;
    let mut inputs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let input: serde_json::Value = plait::json::from_str(line).map_err(|error| {
            UsageError(format!(
                "line {} of `{}` is not a JSON document: {error}; `--batch` takes one workflow input per line",
                number + 1,
                batch.display()
            ))
        })?;
        inputs.push((format!("{prefix}:{}", number + 1), input));
    }
    let origin = std::sync::Arc::new(args.observe.origin()?);
    let home = Home::resolve(args.store.store.clone())?;
    let policy = home.policy(args.store.policy.clone())?;
    check_input_size(args, policy.max_input)?;
    let blobs = args
        .files
        .iter()
        .map(|file| read_blob(file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let definition = Definition::load(&home.workflow_path(&args.workflow)?)?;
    let store = home.open_store()?;
    collect_if_due(&home, &store, &policy)?;
    let engine = home.engine(&policy)?;
    let plan = std::sync::Arc::new(Plan::build_with(&engine, definition, &policy).await?);
    let (executor, _server) = args.observe.executor(&store, policy.concurrency).await?;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(BATCH_RUNS));
    let mut tasks = tokio::task::JoinSet::new();
    let progress = Progress::new("runs", Some(inputs.len() as u64));
    for (index, (key, input)) in inputs.into_iter().enumerate() {
        let (executor, plan, blobs, gate, origin) = (
            executor.clone(),
            plan.clone(),
            blobs.clone(),
            gate.clone(),
            origin.clone(),
        );
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let report = executor
                .start(
                    &plan,
                    StartRequest::new(input)
                        .blobs(blobs)
                        .idempotency_key(Some(key.clone()))
                        .origin(Origin::clone(&origin)),
                )
                .await;
            (index, key, report)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let joined = joined?;
        progress.inc();
        progress.message(format!("{} done", joined.1));
        results.push(joined);
    }
    progress.finish();
    results.sort_by_key(|(index, _, _)| *index);
    let mut failed = 0;
    let mut reports = Vec::new();
    for (_, key, report) in results {
        match report {
            Ok(report) => {
                if report.run.status != RunStatus::Succeeded {
                    failed += 1;
                }
                if !args.json {
                    let mut line = format!(
                        "{key}  run {} {}",
                        report.run.id,
                        report.run.status.as_str()
                    );
                    if let Some(error) = &report.run.error {
                        line.push_str(&format!(": {error}"));
                    }
                    eprintln!("{}", plait::telemetry::escape::terminal(&line));
                }
                reports.push(output::run_json(&report, None));
            }
            Err(error) => {
                failed += 1;
                eprintln!(
                    "{}",
                    plait::telemetry::escape::terminal(&format!("{key}  error: {error}"))
                );
                reports.push(serde_json::json!({"idempotency_key": key, "status": "error", "error": error.to_string()}));
            }
        }
    }
    if args.json {
        output::print_json(&serde_json::Value::Array(reports))?;
    } else {
        eprintln!(
            "{} runs, {} succeeded, {failed} did not",
            reports.len(),
            reports.len() - failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_RUN_FAILED)
    })
}

/// The automatic collection: at most once a day, before anything runs.
pub(super) fn collect_if_due(
    home: &Home,
    store: &plait::store::SledStore,
    policy: &plait::policy::Policy,
) -> anyhow::Result<()> {
    if !policy.auto_gc {
        return Ok(());
    }
    let now = plait::clock::now_ms();
    if let Some(report) = store.gc_if_due(policy.retention.as_millis() as u64, now)? {
        if report.runs + report.blobs + report.cache_entries > 0 {
            crate::store::collected(home, store, &report)?;
        }
        tracing::info!(
            runs = report.runs,
            blobs = report.blobs,
            bytes = report.bytes,
            "collected finished runs past the retention period"
        );
    }
    Ok(())
}
