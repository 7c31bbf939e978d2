//! `plait bundle`: template bundles packed, signed, compiled, verified,
//! inspected, installed and moved through OCI registries, one file per
//! group of subcommands; `plait key` and `plait trust` in [`publishers`].

mod install;
mod make;
mod publishers;
mod registry;
mod show;

pub use publishers::{KeyCommand, TrustCommand, key, trust};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use plait::bundle::keys;
use plait::bundle::{self, Bundle, BundleError, Trust, archive};
use plait::policy::Policy;

use crate::home::Home;
use crate::{StoreArgs, UsageError};

/// `plait bundle`.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Pack a template folder into a bundle: the workflow, every component
    /// and model it uses, a manifest pinning each by digest. The same
    /// folder always gives the same bytes.
    Pack(make::Pack),
    /// Sign a bundle's manifest (and so every file it pins) with a
    /// publisher key.
    Sign(make::Sign),
    /// Compile a bundle's components ahead of time for a target, for hosts
    /// that run without a compiler (edge builds); the bundle must be signed
    /// again afterwards (`--key` does it at once).
    #[cfg(feature = "compiler")]
    Compile(make::Compile),
    /// Check a bundle: every file's digest, the signature against the
    /// trust store, the Plait and WIT versions it targets.
    Verify(show::Verify),
    /// Show what a bundle holds, who signed it and what it will be granted.
    Inspect(show::Inspect),
    /// Verify and install a bundle: its workflows then run by name
    /// (`plait run NAME[@VERSION]`, `plait serve`).
    Install(install::Install),
    /// List the installed bundles.
    List(install::List),
    /// Remove an installed bundle version; refused while its runs are
    /// unfinished.
    Remove(install::Remove),
    /// Push a bundle to an OCI registry (`HOST/REPOSITORY:TAG`).
    Push(registry::Push),
    /// Pull a bundle from an OCI registry; `@sha256:...` pins its digest.
    Pull(registry::Pull),
}

/// How far a bundle's signature may fall short.
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// Take a bundle that is not signed.
    #[arg(long)]
    allow_unsigned: bool,
    /// Take a bundle signed by a key the trust store does not hold.
    #[arg(long)]
    allow_untrusted: bool,
}

impl BundleCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            BundleCommand::Pack(args) => &args.store,
            BundleCommand::Sign(args) => &args.store,
            #[cfg(feature = "compiler")]
            BundleCommand::Compile(args) => &args.store,
            BundleCommand::Verify(args) => &args.store,
            BundleCommand::Inspect(args) => &args.store,
            BundleCommand::Install(args) => &args.store,
            BundleCommand::List(args) => &args.store,
            BundleCommand::Remove(args) => &args.store,
            BundleCommand::Push(args) => &args.store,
            BundleCommand::Pull(args) => &args.store,
        }
    }
}

/// What every `plait bundle` subcommand works with.
struct Context {
    home: Home,
    policy: Policy,
    /// The policy's `[bundles] max_size`.
    max_size: u64,
}

/// Runs a `plait bundle` command.
pub async fn bundle(command: BundleCommand) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(command.store_args().store.clone())?;
    let policy = home.policy(command.store_args().policy.clone())?;
    let cx = Context {
        max_size: policy.bundle_max_size,
        home,
        policy,
    };
    match command {
        BundleCommand::Pack(args) => args.run(&cx),
        BundleCommand::Sign(args) => args.run(&cx),
        #[cfg(feature = "compiler")]
        BundleCommand::Compile(args) => args.run(&cx),
        BundleCommand::Verify(args) => args.run(&cx),
        BundleCommand::Inspect(args) => args.run(&cx),
        BundleCommand::Install(args) => args.run(&cx).await,
        BundleCommand::List(args) => args.run(&cx),
        BundleCommand::Remove(args) => args.run(&cx),
        BundleCommand::Push(args) => args.run(&cx).await,
        BundleCommand::Pull(args) => args.run(&cx).await,
    }
}

/// A bundle's refusal is the input's fault (exit 2); the rest is not.
fn refused(error: BundleError) -> anyhow::Error {
    match error {
        BundleError::Io { .. } | BundleError::Registry(_) => error.into(),
        other => UsageError(other.to_string()).into(),
    }
}

/// Reads a bundle file, refusing one over `max_size` before reading it.
fn read(file: &Path, max_size: u64) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading the bundle `{}`", file.display()))?
        .len();
    if size > max_size {
        return Err(UsageError(format!(
            "`{}` weighs {}, over this host's `[bundles] max_size` of {}",
            file.display(),
            plait::limits::format_size(size),
            plait::limits::format_size(max_size)
        ))
        .into());
    }
    plait::files::read(file, plait::files::Kind::Bundle)
        .with_context(|| format!("reading the bundle `{}`", file.display()))
}

/// Opens a bundle under the home's trust store.
fn open(home: &Home, bytes: &[u8], max_size: u64, args: &TrustArgs) -> anyhow::Result<Bundle> {
    let trust = Trust {
        keys: home.trust_store().list().map_err(refused)?,
        allow_unsigned: args.allow_unsigned,
        allow_untrusted: args.allow_untrusted,
    };
    bundle::open(bytes, max_size, &trust).map_err(refused)
}

/// The secret key `key` names: a key file, or a name in the home's keys.
fn secret_key(home: &Home, key: &str) -> anyhow::Result<keys::SecretKey> {
    let path = if Path::new(key).is_file() {
        PathBuf::from(key)
    } else {
        home.keys_dir().join(format!("{key}.key"))
    };
    keys::read_secret(&path).map_err(refused)
}

/// Signs a bundle's entries (replacing any signature) and reads the result
/// back, every digest checked.
fn sign_entries(
    mut entries: Vec<(String, Vec<u8>)>,
    secret: &keys::SecretKey,
    file: &Path,
    max_size: u64,
) -> anyhow::Result<(Vec<u8>, Bundle)> {
    entries.retain(|(path, _)| path != bundle::SIGNATURE_FILE);
    let manifest = entries
        .iter()
        .find(|(path, _)| path == bundle::MANIFEST_FILE)
        .map(|(_, bytes)| bytes.clone())
        .ok_or_else(|| {
            UsageError(format!(
                "`{}` holds no manifest: it is not a bundle",
                file.display()
            ))
        })?;
    entries.push((
        bundle::SIGNATURE_FILE.to_owned(),
        keys::sign(&manifest, secret).map_err(refused)?,
    ));
    let signed = archive::write(&entries).map_err(refused)?;
    let opened = open_any(&signed, max_size)?;
    Ok((signed, opened))
}

/// Opens a bundle checking its files and signature, whoever signed it.
fn open_any(bytes: &[u8], max_size: u64) -> anyhow::Result<Bundle> {
    let trust = Trust {
        keys: Vec::new(),
        allow_unsigned: true,
        allow_untrusted: true,
    };
    bundle::open(bytes, max_size, &trust).map_err(refused)
}

/// The signer as people read it: the trust store's name, or the key id.
fn signer_text(home: &Home, bundle: &Bundle) -> String {
    match &bundle.signer {
        None => "not signed".to_owned(),
        Some(signer) => {
            let trusted = home
                .trust_store()
                .list()
                .unwrap_or_default()
                .into_iter()
                .find(|key| key.public_key == signer.public_key);
            match trusted {
                Some(key) => format!("signed by `{}` (key {}, trusted)", key.name, signer.key_id),
                None => format!("signed by key {} (NOT in the trust store)", signer.key_id),
            }
        }
    }
}

/// The grants a bundle asks for, as lines to show before installing it.
fn grant_lines(manifest: &bundle::Manifest) -> Vec<String> {
    if manifest.grants.is_empty() {
        return vec!["  grants: none (no files, network, secrets or models)".to_owned()];
    }
    let mut lines = vec!["  grants it asks for:".to_owned()];
    for grant in &manifest.grants {
        lines.push(format!("    {}/{}:", grant.workflow, grant.step));
        for (kind, values) in [
            ("dirs", &grant.dirs),
            ("http", &grant.http),
            ("secrets", &grant.secrets),
            ("models", &grant.models),
        ] {
            for value in values {
                lines.push(format!("      {kind:<8} {value}"));
            }
        }
    }
    lines
}

fn default_output(bundle: &bundle::Manifest) -> PathBuf {
    PathBuf::from(format!("{}-{}.plait", bundle.name, bundle.version))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("plait.tmp");
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("writing `{}`", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing `{}`", path.display()))
}

/// Records an installation or a removal in the audit log, when the store
/// is free to write (a running server holds it).
fn audit(
    home: &Home,
    action: plait::store::AuditAction,
    manifest: &bundle::Manifest,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    use plait::store::RunStore as _;
    let Some(store) = home.open_store_unless_held()? else {
        eprintln!(
            "warning: another plait process holds the store; `{action}` is recorded in the bundle's `installed.json` only"
        );
        return Ok(());
    };
    let mut detail = detail;
    detail["version"] = serde_json::Value::String(manifest.version.clone());
    store.commit(plait::store::Commit {
        audit: Some(&plait::store::AuditRecord {
            at_ms: plait::clock::now_ms(),
            actor: crate::actor(),
            action,
            run_id: None,
            workflow: Some(manifest.name.clone()),
            detail,
        }),
        ..plait::store::Commit::default()
    })?;
    Ok(())
}
