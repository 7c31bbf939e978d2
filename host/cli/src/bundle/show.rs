//! `plait bundle verify` and `inspect`: what a bundle holds and whether
//! it can be trusted.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{Context, TrustArgs, grant_lines, open, open_any, read, signer_text};
use crate::StoreArgs;

/// Arguments of `plait bundle verify`.
#[derive(Debug, clap::Args)]
pub struct Verify {
    /// The bundle.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(super) store: StoreArgs,
    /// Print one JSON object on stdout: `{"verified": true, "bundle",
    /// "files", "signer", "requires", "digest"}`, or `{"verified":
    /// false, "error"}` (exit code 2).
    #[arg(long)]
    json: bool,
}

impl Verify {
    /// `plait bundle verify`: every digest and the signature checked under
    /// the trust store.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Verify {
            file, trust, json, ..
        } = self;
        let home = &cx.home;
        let max_size = cx.max_size;
        let verified = read(&file, max_size)
            .and_then(|bytes| Ok((open(home, &bytes, max_size, &trust)?, bytes)));
        let (bundle, bytes) = match verified {
            Ok(verified) => verified,
            Err(error) if json => {
                let value = serde_json::json!({
                    "verified": false,
                    "file": file,
                    "error": format!("{error:#}"),
                });
                crate::output::print_json(&value)?;
                return Ok(ExitCode::from(crate::exit_code(&error)));
            }
            Err(error) => return Err(error),
        };
        if json {
            let trusted = bundle.signer.as_ref().and_then(|signer| {
                home.trust_store()
                    .list()
                    .unwrap_or_default()
                    .into_iter()
                    .find(|key| key.public_key == signer.public_key)
            });
            let value = serde_json::json!({
                "verified": true,
                "file": file,
                "bundle": {"name": bundle.manifest.name, "version": bundle.manifest.version},
                "files": bundle.files.len(),
                "signer": bundle.signer.as_ref().map(|signer| serde_json::json!({
                    "public_key": signer.public_key,
                    "key_id": signer.key_id,
                    "trusted": trusted.is_some(),
                    "name": trusted.as_ref().map(|key| &key.name),
                })),
                "requires": {
                    "plait": bundle.manifest.requires.plait,
                    "wit": bundle.manifest.requires.wit,
                },
                "digest": plait::digest::digest(&bytes),
            });
            crate::output::print_json(&value)?;
            return Ok(ExitCode::SUCCESS);
        }
        writeln!(
            std::io::stdout(),
            "verified `{}`: {} files, every digest checks out; {}; for Plait {} and {}",
            bundle.manifest.id(),
            bundle.files.len(),
            signer_text(home, &bundle),
            bundle.manifest.requires.plait,
            bundle.manifest.requires.wit
        )?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `plait bundle inspect`.
#[derive(Debug, clap::Args)]
pub struct Inspect {
    /// The bundle.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print JSON: the manifest and the signer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Inspect {
    /// `plait bundle inspect`: the manifest, signer, files, compiled
    /// engines, grants and readme.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Inspect { file, json, .. } = self;
        let home = &cx.home;
        let max_size = cx.max_size;
        let bytes = read(&file, max_size)?;
        let bundle = open_any(&bytes, max_size)?;
        if json {
            let value = serde_json::json!({
                "manifest": serde_json::to_value(&bundle.manifest)?,
                "signer": bundle.signer.as_ref().map(|s| serde_json::json!({"public_key": s.public_key, "key_id": s.key_id})),
                "digest": plait::digest::digest(&bytes),
            });
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&value)?
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let manifest = &bundle.manifest;
        writeln!(std::io::stdout(), "{} {}", manifest.name, manifest.version)?;
        if let Some(description) = &manifest.description {
            writeln!(std::io::stdout(), "  {description}")?;
        }
        if !manifest.authors.is_empty() {
            writeln!(
                std::io::stdout(),
                "  authors:   {}",
                manifest.authors.join(", ")
            )?;
        }
        if let Some(license) = &manifest.license {
            writeln!(std::io::stdout(), "  license:   {license}")?;
        }
        writeln!(
            std::io::stdout(),
            "  publisher: {}",
            signer_text(home, &bundle)
        )?;
        writeln!(
            std::io::stdout(),
            "  requires:  Plait {}, {}",
            manifest.requires.plait,
            manifest.requires.wit
        )?;
        writeln!(std::io::stdout(), "  workflows:")?;
        for workflow in &manifest.workflows {
            writeln!(
                std::io::stdout(),
                "    {:<24} {}",
                workflow.name,
                workflow.path
            )?;
        }
        writeln!(std::io::stdout(), "  files:")?;
        for file in manifest.files() {
            writeln!(
                std::io::stdout(),
                "    {:<48} {:>10}  {}",
                file.path,
                plait::limits::format_size(file.size),
                &file.digest[..19]
            )?;
        }
        let mut engines: Vec<&str> = manifest
            .compiled
            .iter()
            .map(|entry| entry.engine.as_str())
            .collect();
        engines.dedup();
        if !engines.is_empty() {
            writeln!(std::io::stdout(), "  compiled for:")?;
            for engine in engines {
                let here = plait::engine::code_key(plait::engine::HOST_TARGET, true);
                let mark = if engine == here { "  (this host)" } else { "" };
                writeln!(std::io::stdout(), "    {engine}{mark}")?;
            }
        }
        for line in grant_lines(manifest) {
            writeln!(std::io::stdout(), "{line}")?;
        }
        if let Some(readme) = manifest
            .readme
            .as_deref()
            .and_then(|path| bundle.file(path))
        {
            writeln!(
                std::io::stdout(),
                "\n{}",
                String::from_utf8_lossy(readme).trim_end()
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
