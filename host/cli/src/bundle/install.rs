//! `plait bundle install`, `list` and `remove`: the bundles installed in
//! the home.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use plait::bundle::install::InstallInfo;
use plait::bundle::{self, BundleError};
use plait::definition::Definition;
use plait::plan::Plan;

use super::{Context, TrustArgs, audit, grant_lines, open, read, refused, signer_text};
use crate::{StoreArgs, UsageError};

/// Arguments of `plait bundle install`.
#[derive(Debug, clap::Args)]
pub struct Install {
    /// The bundle.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Accept the grants the bundle asks for (it lists them), where
    /// the policy does not already restrict them.
    #[arg(long)]
    allow: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Install {
    /// `plait bundle install`: verified, grants accepted, components compiled
    /// or taken, each workflow planned under this policy, then committed and
    /// audited.
    pub(super) async fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Install {
            file, allow, trust, ..
        } = self;
        let home = &cx.home;
        let policy = &cx.policy;
        let max_size = cx.max_size;
        let bytes = read(&file, max_size)?;
        let bundle = open(home, &bytes, max_size, &trust)?;
        eprintln!(
            "installing `{}`, {}",
            bundle.manifest.id(),
            signer_text(home, &bundle)
        );
        for line in grant_lines(&bundle.manifest) {
            eprintln!("{line}");
        }
        let unrestricted = bundle::install::unrestricted_grants(&bundle.manifest, policy);
        if !unrestricted.is_empty() && !allow {
            return Err(UsageError(format!(
                    "`{}` asks for {} grants (listed above), which {} does not restrict; read them, then pass `--allow` to accept them (or restrict them in the policy's `[grants]`, and it is checked against that)",
                    bundle.manifest.id(),
                    unrestricted.join(", "),
                    policy.origin()
                ))
                .into());
        }
        let publisher = bundle.signer.as_ref().and_then(|signer| {
            home.trust_store()
                .list()
                .ok()?
                .into_iter()
                .find(|key| key.public_key == signer.public_key)
                .map(|key| key.name)
        });
        let trusted = publisher.is_some();
        let info = InstallInfo {
            installed_at_ms: plait::clock::now_ms(),
            actor: crate::actor(),
            signer: bundle.signer.as_ref().map(|signer| signer.key_id.clone()),
            publisher,
            accepted_grants: allow,
        };
        let registry = home.bundles();
        let staged = registry.stage(&bundle, &info).map_err(refused)?;
        // Each workflow checked against this host's policy, and its
        // components compiled for this engine, before it counts as
        // installed.
        let engine = home.engine(policy)?;
        let imported = bundle::compiled::import(&engine, &bundle.manifest, trusted, |path| {
            bundle
                .file(path)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| BundleError::Manifest(format!("`{path}` is missing")))
        })
        .map_err(refused)?;
        if imported.taken > 0 {
            eprintln!(
                "took {} components compiled ahead of time for `{}`",
                imported.taken,
                engine.code_key()
            );
        }
        if imported.untrusted > 0 {
            eprintln!(
                "warning: the bundle's compiled code for this host is not used: compiled code is native code, taken only from a bundle signed by a publisher in the trust store{}",
                if plait::engine::HAS_COMPILER {
                    "; compiling its components here instead"
                } else {
                    ""
                }
            );
        }
        if !plait::engine::HAS_COMPILER
            && !imported.engines.iter().any(|key| key == engine.code_key())
        {
            eprintln!(
                "this plait has no compiler and runs code compiled for `{}`; `{}` carries code for: {}",
                engine.code_key(),
                bundle.manifest.id(),
                if imported.engines.is_empty() {
                    "nothing".to_owned()
                } else {
                    imported.engines.join(", ")
                }
            );
        }
        for workflow in &bundle.manifest.workflows {
            let path = staged.dir.join(&workflow.path);
            let definition = Definition::load(&path)?;
            for step in &definition.steps {
                for dir in &step.grants.dirs {
                    if dir.host.starts_with(&staged.dir) {
                        std::fs::create_dir_all(&dir.host).with_context(|| {
                            format!("creating the granted folder `{}`", dir.host.display())
                        })?;
                    }
                }
            }
            Plan::build_with(&engine, definition, policy)
                .await
                .with_context(|| {
                    format!(
                        "workflow `{}` of `{}` cannot run under {}; nothing was installed",
                        workflow.name,
                        bundle.manifest.id(),
                        policy.origin()
                    )
                })?;
        }
        let dir = staged.commit().map_err(refused)?;
        audit(
            home,
            plait::store::AuditAction::BundleInstall,
            &bundle.manifest,
            serde_json::json!({
                "signer": info.signer,
                "publisher": info.publisher,
                "accepted_grants": allow,
            }),
        )?;
        let names: Vec<String> = bundle
            .manifest
            .workflows
            .iter()
            .map(|workflow| format!("`{}@{}`", workflow.name, bundle.manifest.version))
            .collect();
        writeln!(std::io::stdout(), "{}", dir.display())?;
        eprintln!(
            "installed `{}`: run {} (`plait run NAME[@VERSION]`, or over `plait serve`)",
            bundle.manifest.id(),
            names.join(", ")
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `plait bundle list`.
#[derive(Debug, clap::Args)]
pub struct List {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl List {
    /// `plait bundle list`.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let List { json, .. } = self;
        let home = &cx.home;
        let installed = home.bundles().list().map_err(refused)?;
        if json {
            let list: Vec<serde_json::Value> = installed
                    .iter()
                    .map(|bundle| {
                        serde_json::json!({
                            "name": bundle.manifest.name,
                            "version": bundle.manifest.version,
                            "workflows": bundle.manifest.workflows.iter().map(|w| &w.name).collect::<Vec<_>>(),
                            "dir": bundle.dir,
                            "installed": bundle.info,
                        })
                    })
                    .collect();
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&list)?
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        if installed.is_empty() {
            eprintln!("no bundles installed; `plait bundle install FILE` installs one");
        }
        for bundle in installed {
            let workflows: Vec<&str> = bundle
                .manifest
                .workflows
                .iter()
                .map(|w| w.name.as_str())
                .collect();
            let signer = bundle
                .info
                .as_ref()
                .and_then(|info| info.publisher.clone().or(info.signer.clone()))
                .unwrap_or_else(|| "unsigned".to_owned());
            writeln!(
                std::io::stdout(),
                "{:<24} {:<12} {:<32} {}",
                bundle.manifest.name,
                bundle.manifest.version,
                workflows.join(","),
                signer
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `plait bundle remove`.
#[derive(Debug, clap::Args)]
pub struct Remove {
    /// `NAME@VERSION`.
    #[arg(value_name = "NAME@VERSION")]
    reference: String,
    /// Also delete what its workflows wrote into folders inside it.
    #[arg(long)]
    purge: bool,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Remove {
    /// `plait bundle remove`: refused while a run of the bundle is unfinished;
    /// audited.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Remove {
            reference, purge, ..
        } = self;
        let home = &cx.home;
        let Some((name, version)) = reference.split_once('@') else {
            return Err(UsageError(format!(
                    "`{reference}` names no version; write `NAME@VERSION` (`plait bundle list` shows them)"
                ))
                .into());
        };
        let registry = home.bundles();
        let Some(installed) = registry.get(name, version).map_err(refused)? else {
            return Err(UsageError(format!(
                "`{reference}` is not installed; `plait bundle list` shows what is"
            ))
            .into());
        };
        let Some(store) = home.open_store_unless_held()? else {
            return Err(UsageError(
                    "another plait process holds the store, so the runs using this bundle cannot be checked; stop it (for example `plait serve`) and try again".to_owned(),
                )
                .into());
        };
        use plait::store::RunStore as _;
        let in_use: Vec<String> = store
            .runs()?
            .into_iter()
            .filter(|run| {
                !run.status.is_finished() && run.workflow.path.starts_with(&installed.dir)
            })
            .map(|run| format!("`{}`", run.id))
            .collect();
        drop(store);
        let removed = registry
            .remove(name, version, &in_use, purge)
            .map_err(refused)?;
        audit(
            home,
            plait::store::AuditAction::BundleRemove,
            &removed.manifest,
            serde_json::json!({"purge": purge}),
        )?;
        eprintln!("removed `{}`", removed.manifest.id());
        Ok(ExitCode::SUCCESS)
    }
}
