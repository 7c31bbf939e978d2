//! `plait bundle pack`, `sign` and `compile`: making a bundle and the
//! files in it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use plait::bundle::keys;
use plait::bundle::{self, archive};

use super::{Context, default_output, read, refused, secret_key, sign_entries, write_file};
// What only `plait bundle compile` uses, which builds without the compiler
// (the edge build) do not have.
#[cfg(feature = "compiler")]
use super::{TrustArgs, open, open_any};
use crate::StoreArgs;

/// Arguments of `plait bundle pack`.
#[derive(Debug, clap::Args)]
pub struct Pack {
    /// The template folder (a `workflow.yaml`, optionally a source
    /// `bundle.toml`).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where to write it [default: NAME-VERSION.plait here].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Pack {
    /// `plait bundle pack`: a template folder into a deterministic bundle.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Pack { dir, output, .. } = self;
        let policy = &cx.policy;
        let packed = bundle::pack::pack(&dir, &policy.model_store()).map_err(refused)?;
        let output = output.unwrap_or_else(|| default_output(&packed.manifest));
        write_file(&output, &packed.bytes)?;
        writeln!(std::io::stdout(), "{}", output.display())?;
        eprintln!(
            "packed `{}` ({}, {} files, {}): {}",
            packed.manifest.id(),
            output.display(),
            packed.manifest.files().count(),
            plait::limits::format_size(packed.bytes.len() as u64),
            plait::digest::digest(&packed.bytes)
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `plait bundle sign`.
#[derive(Debug, clap::Args)]
pub struct Sign {
    /// The bundle.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The key: a name from `plait key generate`, or a key file.
    #[arg(long, value_name = "NAME|FILE")]
    key: String,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Sign {
    /// `plait bundle sign`: the manifest signed with a publisher key, the
    /// bundle read back.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Sign { file, key, .. } = self;
        let home = &cx.home;
        let max_size = cx.max_size;
        let secret = secret_key(home, &key)?;
        let bytes = read(&file, max_size)?;
        let entries = archive::read(&bytes, max_size).map_err(refused)?;
        let (signed, opened) = sign_entries(entries, &secret, &file, max_size)?;
        write_file(&file, &signed)?;
        eprintln!(
            "signed `{}` with key `{}` ({})",
            opened.manifest.id(),
            secret.name,
            keys::key_id(&secret.public_key)
        );
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(feature = "compiler")]
/// Arguments of `plait bundle compile`.
#[derive(Debug, clap::Args)]
pub struct Compile {
    /// The bundle (rewritten in place unless `--output` is given).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// A target triple (`x86_64-unknown-linux-gnu`,
    /// `aarch64-unknown-linux-gnu`); repeat for several [default: this
    /// host's].
    #[arg(long, value_name = "TRIPLE")]
    target: Vec<String>,
    /// Where to write the compiled bundle.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Sign the result with this key (a name from `plait key generate`,
    /// or a key file).
    #[arg(long, value_name = "NAME|FILE")]
    key: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

#[cfg(feature = "compiler")]
impl Compile {
    /// `plait bundle compile`: components compiled ahead of time for each
    /// target, then signed (`--key`) or written unsigned with a warning.
    pub(super) fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Compile {
            file,
            target,
            output,
            key,
            trust,
            ..
        } = self;
        let home = &cx.home;
        let max_size = cx.max_size;
        let secret = key.map(|key| secret_key(home, &key)).transpose()?;
        let bytes = read(&file, max_size)?;
        let mut opened = open(home, &bytes, max_size, &trust)?;
        let targets = if target.is_empty() {
            vec![plait::engine::HOST_TARGET.to_owned()]
        } else {
            target
        };
        for target in &targets {
            let started = std::time::Instant::now();
            let entries = bundle::compiled::compile(&opened, target).map_err(refused)?;
            let unsigned = archive::write(&entries).map_err(refused)?;
            opened = open_any(&unsigned, max_size)?;
            let code: u64 = opened
                .manifest
                .compiled
                .iter()
                .filter(|entry| entry.target == *target)
                .map(|entry| entry.size)
                .sum();
            eprintln!(
                "compiled {} components of `{}` for `{target}` ({}, {:.1} s)",
                opened.manifest.components.len(),
                opened.manifest.id(),
                plait::limits::format_size(code),
                started.elapsed().as_secs_f64()
            );
        }
        let output = output.unwrap_or(file);
        let mut entries = vec![(
            bundle::MANIFEST_FILE.to_owned(),
            opened.manifest_bytes.clone(),
        )];
        entries.extend(opened.files.iter().cloned());
        match secret {
            Some(secret) => {
                let (signed, _) = sign_entries(entries, &secret, &output, max_size)?;
                write_file(&output, &signed)?;
                eprintln!(
                    "signed with key `{}` ({}); wrote `{}`",
                    secret.name,
                    keys::key_id(&secret.public_key),
                    output.display()
                );
            }
            None => {
                write_file(&output, &archive::write(&entries).map_err(refused)?)?;
                eprintln!(
                    "wrote `{}`, unsigned: its manifest changed, and a host takes compiled code only from a bundle signed by a publisher it trusts; sign it (`plait bundle sign {} --key NAME`)",
                    output.display(),
                    output.display()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
