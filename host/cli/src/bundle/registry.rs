//! `plait bundle push` and `pull`: bundles through an OCI registry.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use plait::bundle::oci;

use super::{Context, default_output, open_any, read, refused, signer_text, write_file};
use crate::StoreArgs;

/// Arguments of `plait bundle push`.
#[derive(Debug, clap::Args)]
pub struct Push {
    /// The bundle.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where: `HOST[:PORT]/REPOSITORY:TAG`.
    #[arg(value_name = "REFERENCE")]
    reference: String,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Push {
    /// `plait bundle push`: prints the reference pinned to the manifest
    /// digest.
    pub(super) async fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Push {
            file, reference, ..
        } = self;
        let max_size = cx.max_size;
        let reference = oci::Reference::parse(&reference).map_err(refused)?;
        let bytes = read(&file, max_size)?;
        let bundle = open_any(&bytes, max_size)?;
        let digest = oci::push(&bytes, &bundle.manifest, &bundle.manifest_bytes, &reference)
            .await
            .map_err(refused)?;
        writeln!(std::io::stdout(), "{reference}@{digest}")?;
        eprintln!(
            "pushed `{}` ({}) to {reference}; pin it with `@{digest}`",
            bundle.manifest.id(),
            plait::limits::format_size(bytes.len() as u64)
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Arguments of `plait bundle pull`.
#[derive(Debug, clap::Args)]
pub struct Pull {
    /// `HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`.
    #[arg(value_name = "REFERENCE")]
    reference: String,
    /// Where to write it [default: NAME-VERSION.plait here].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl Pull {
    /// `plait bundle pull`: the files checked now, the signature on install.
    pub(super) async fn run(self, cx: &Context) -> anyhow::Result<ExitCode> {
        let Pull {
            reference, output, ..
        } = self;
        let home = &cx.home;
        let max_size = cx.max_size;
        let reference = oci::Reference::parse(&reference).map_err(refused)?;
        let (bytes, digest) = oci::pull(&reference, max_size).await.map_err(refused)?;
        // Its files checked now; its signature is checked on install.
        let bundle = open_any(&bytes, max_size)?;
        let output = output.unwrap_or_else(|| default_output(&bundle.manifest));
        write_file(&output, &bytes)?;
        writeln!(std::io::stdout(), "{}", output.display())?;
        eprintln!(
            "pulled `{}` from {reference} (manifest {digest}), {}",
            bundle.manifest.id(),
            signer_text(home, &bundle)
        );
        Ok(ExitCode::SUCCESS)
    }
}
