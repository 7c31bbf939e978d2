//! `plait store check` (the store's integrity check) and `plait gc`.

use std::process::ExitCode;

use super::StoreArgs;
use super::home::Home;
use super::output;

/// `plait store ...`
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Check every record and every blob the records refer to (digests
    /// recomputed); exit 1 if anything is damaged or missing.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

impl StoreCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            StoreCommand::Check { store, .. } => store,
        }
    }
}

impl GcArgs {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        &self.store
    }
}

/// After a collection: removes the collected runs' log files and records
/// the collection in the audit log.
pub fn collected(
    home: &Home,
    store: &plait::store::SledStore,
    report: &plait::store::gc::GcReport,
) -> anyhow::Result<()> {
    use plait::store::RunStore as _;
    let dir = home.run_logs_dir();
    for run_id in &report.removed_run_ids {
        let _ = std::fs::remove_file(plait::telemetry::logs::run_log_path(&dir, run_id));
    }
    store.commit(plait::store::Commit {
        audit: Some(&plait::store::AuditRecord {
            at_ms: plait::clock::now_ms(),
            actor: super::actor(),
            action: plait::store::AuditAction::StoreGc,
            run_id: None,
            workflow: None,
            detail: serde_json::json!({
                "runs": report.runs,
                "blobs": report.blobs,
                "bytes": report.bytes,
                "cache_entries": report.cache_entries,
            }),
        }),
        ..plait::store::Commit::default()
    })?;
    Ok(())
}

/// Runs a `store` subcommand.
pub fn main(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Check { store, json } => {
            let store = Home::resolve(store.store)?.open_store()?;
            let report = plait::store::check::check(store.as_ref())?;
            if json {
                output::print_json(&serde_json::to_value(&report)?)?;
            } else {
                for problem in &report.problems {
                    eprintln!("problem: {problem}");
                }
                eprintln!(
                    "{} runs, {} steps, {} blobs ({} bytes) checked: {}",
                    report.runs,
                    report.steps,
                    report.blobs,
                    report.bytes,
                    if report.problems.is_empty() {
                        "sound".to_owned()
                    } else {
                        format!("{} problems", report.problems.len())
                    }
                );
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_RUN_FAILED)
            })
        }
    }
}

/// Arguments of `plait gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Remove finished runs last changed longer ago than this (and cache
    /// entries as old) [default: the policy's `[retention] runs`, else 30d].
    #[arg(long, value_name = "DURATION")]
    older_than: Option<String>,
    /// Count what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// `plait gc`.
pub fn gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.store.store)?;
    let policy = home.policy(args.store.policy)?;
    let retention = match &args.older_than {
        // Zero is allowed here: `--older-than 0s` collects every finished run.
        Some(text) => humantime::parse_duration(text.trim()).map_err(|error| {
            super::UsageError(format!(
                "`--older-than {text}` is not a duration ({error}); write for example `30d`, `12h` or `0s`"
            ))
        })?,
        None => policy.retention,
    };
    let store = home.open_store()?;
    let cutoff = plait::clock::now_ms().saturating_sub(retention.as_millis() as u64);
    let report = store.gc(cutoff, args.dry_run)?;
    if !args.dry_run {
        collected(&home, &store, &report)?;
    }
    if args.json {
        output::print_json(&serde_json::to_value(&report)?)?;
    } else {
        eprintln!(
            "{} {} finished runs older than {}, {} cache entries and {} blobs ({} bytes); kept {} runs and {} blobs",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            report.runs,
            humantime::format_duration(retention),
            report.cache_entries,
            report.blobs,
            report.bytes,
            report.kept_runs,
            report.kept_blobs
        );
    }
    Ok(ExitCode::SUCCESS)
}
