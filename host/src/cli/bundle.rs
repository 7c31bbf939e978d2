//! `plait bundle`, `plait key` and `plait trust`: template bundles, the
//! keys that sign them and the keys an operator trusts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use plait::bundle::install::InstallInfo;
use plait::bundle::keys::{self, TrustStore};
use plait::bundle::{self, Bundle, BundleError, Trust, archive, oci};
use plait::definition::Definition;
use plait::plan::Plan;

use super::home::Home;
use super::{StoreArgs, UsageError};

/// `plait bundle`.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Pack a template folder into a bundle: the workflow, every component
    /// and model it uses, a manifest pinning each by digest. The same
    /// folder always gives the same bytes.
    Pack {
        /// The template folder (a `workflow.yaml`, optionally a source
        /// `bundle.toml`).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Where to write it [default: NAME-VERSION.plait here].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Sign a bundle's manifest (and so every file it pins) with a
    /// publisher key.
    Sign {
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The key: a name from `plait key generate`, or a key file.
        #[arg(long, value_name = "NAME|FILE")]
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Compile a bundle's components ahead of time for a target, for hosts
    /// that run without a compiler (edge builds); the bundle must be signed
    /// again afterwards (`--key` does it at once).
    #[cfg(feature = "compiler")]
    Compile {
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
        store: StoreArgs,
    },
    /// Check a bundle: every file's digest, the signature against the
    /// trust store, the Plait and WIT versions it targets.
    Verify {
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON object on stdout: `{"verified": true, "bundle",
        /// "files", "signer", "requires", "digest"}`, or `{"verified":
        /// false, "error"}` (exit code 2).
        #[arg(long)]
        json: bool,
    },
    /// Show what a bundle holds, who signed it and what it will be granted.
    Inspect {
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print JSON: the manifest and the signer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Verify and install a bundle: its workflows then run by name
    /// (`plait run NAME[@VERSION]`, `plait serve`).
    Install {
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
        store: StoreArgs,
    },
    /// List the installed bundles.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an installed bundle version; refused while its runs are
    /// unfinished.
    Remove {
        /// `NAME@VERSION`.
        #[arg(value_name = "NAME@VERSION")]
        reference: String,
        /// Also delete what its workflows wrote into folders inside it.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Push a bundle to an OCI registry (`HOST/REPOSITORY:TAG`).
    Push {
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Where: `HOST[:PORT]/REPOSITORY:TAG`.
        #[arg(value_name = "REFERENCE")]
        reference: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pull a bundle from an OCI registry; `@sha256:...` pins its digest.
    Pull {
        /// `HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`.
        #[arg(value_name = "REFERENCE")]
        reference: String,
        /// Where to write it [default: NAME-VERSION.plait here].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
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

/// `plait key`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a publisher key for signing bundles; prints its public key.
    Generate {
        /// Its name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Where to write the secret key [default: keys/NAME.key in the
        /// Plait home].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `plait trust`.
#[derive(Debug, clap::Subcommand)]
pub enum TrustCommand {
    /// Trust a publisher's key: bundles it signed are installed.
    Add {
        /// The public key (`ed25519:...`, as `plait key generate` prints).
        #[arg(value_name = "KEY")]
        key: String,
        /// A name for the publisher.
        #[arg(long, value_name = "NAME")]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the trusted keys.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON array on stdout: `[{"name", "key_id",
        /// "public_key"}]`.
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key (by name, id or public key).
    Remove {
        /// The key.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl BundleCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            #[cfg(feature = "compiler")]
            BundleCommand::Compile { store, .. } => store,
            BundleCommand::Pack { store, .. }
            | BundleCommand::Sign { store, .. }
            | BundleCommand::Verify { store, .. }
            | BundleCommand::Inspect { store, .. }
            | BundleCommand::Install { store, .. }
            | BundleCommand::List { store, .. }
            | BundleCommand::Remove { store, .. }
            | BundleCommand::Push { store, .. }
            | BundleCommand::Pull { store, .. } => store,
        }
    }
}

impl KeyCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            KeyCommand::Generate { store, .. } => store,
        }
    }
}

impl TrustCommand {
    /// The store it works on.
    pub fn store_args(&self) -> &StoreArgs {
        match self {
            TrustCommand::Add { store, .. }
            | TrustCommand::List { store, .. }
            | TrustCommand::Remove { store, .. } => store,
        }
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

/// Opens a bundle checking its files and signature, whoever signed it.
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
fn sign(
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

/// Runs a `plait bundle` command.
pub async fn bundle(command: BundleCommand) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(command.store_args().store.clone())?;
    let policy = home.policy(command.store_args().policy.clone())?;
    let max_size = policy.bundle_max_size;
    match command {
        BundleCommand::Pack { dir, output, .. } => {
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
        }
        BundleCommand::Sign { file, key, .. } => {
            let secret = secret_key(&home, &key)?;
            let bytes = read(&file, max_size)?;
            let entries = archive::read(&bytes, max_size).map_err(refused)?;
            let (signed, opened) = sign(entries, &secret, &file, max_size)?;
            write_file(&file, &signed)?;
            eprintln!(
                "signed `{}` with key `{}` ({})",
                opened.manifest.id(),
                secret.name,
                keys::key_id(&secret.public_key)
            );
        }
        #[cfg(feature = "compiler")]
        BundleCommand::Compile {
            file,
            target,
            output,
            key,
            trust,
            ..
        } => {
            let secret = key.map(|key| secret_key(&home, &key)).transpose()?;
            let bytes = read(&file, max_size)?;
            let mut opened = open(&home, &bytes, max_size, &trust)?;
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
                    let (signed, _) = sign(entries, &secret, &output, max_size)?;
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
        }
        BundleCommand::Verify {
            file, trust, json, ..
        } => {
            let verified = read(&file, max_size)
                .and_then(|bytes| Ok((open(&home, &bytes, max_size, &trust)?, bytes)));
            let (bundle, bytes) = match verified {
                Ok(verified) => verified,
                Err(error) if json => {
                    let value = serde_json::json!({
                        "verified": false,
                        "file": file,
                        "error": format!("{error:#}"),
                    });
                    super::output::print_json(&value)?;
                    return Ok(ExitCode::from(super::exit_code(&error)));
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
                super::output::print_json(&value)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(
                std::io::stdout(),
                "verified `{}`: {} files, every digest checks out; {}; for Plait {} and {}",
                bundle.manifest.id(),
                bundle.files.len(),
                signer_text(&home, &bundle),
                bundle.manifest.requires.plait,
                bundle.manifest.requires.wit
            )?;
        }
        BundleCommand::Inspect { file, json, .. } => {
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
                signer_text(&home, &bundle)
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
        }
        BundleCommand::Install {
            file, allow, trust, ..
        } => {
            let bytes = read(&file, max_size)?;
            let bundle = open(&home, &bytes, max_size, &trust)?;
            eprintln!(
                "installing `{}`, {}",
                bundle.manifest.id(),
                signer_text(&home, &bundle)
            );
            for line in grant_lines(&bundle.manifest) {
                eprintln!("{line}");
            }
            let unrestricted = bundle::install::unrestricted_grants(&bundle.manifest, &policy);
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
                actor: super::actor(),
                signer: bundle.signer.as_ref().map(|signer| signer.key_id.clone()),
                publisher,
                accepted_grants: allow,
            };
            let registry = home.bundles();
            let staged = registry.stage(&bundle, &info).map_err(refused)?;
            // Each workflow checked against this host's policy, and its
            // components compiled for this engine, before it counts as
            // installed.
            let engine = home.engine(&policy)?;
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
                Plan::build_with(&engine, definition, &policy)
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
                &home,
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
        }
        BundleCommand::List { json, .. } => {
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
        }
        BundleCommand::Remove {
            reference, purge, ..
        } => {
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
                &home,
                plait::store::AuditAction::BundleRemove,
                &removed.manifest,
                serde_json::json!({"purge": purge}),
            )?;
            eprintln!("removed `{}`", removed.manifest.id());
        }
        BundleCommand::Push {
            file, reference, ..
        } => {
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
        }
        BundleCommand::Pull {
            reference, output, ..
        } => {
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
                signer_text(&home, &bundle)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
            actor: super::actor(),
            action,
            run_id: None,
            workflow: Some(manifest.name.clone()),
            detail,
        }),
        ..plait::store::Commit::default()
    })?;
    Ok(())
}

/// Runs a `plait key` command.
pub fn key(command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Generate { name, out, store } => {
            bundle::manifest::check_name(&name)
                .map_err(|message| UsageError(message.replace("bundle name", "key name")))?;
            let home = Home::resolve(store.store)?;
            let path = out.unwrap_or_else(|| home.keys_dir().join(format!("{name}.key")));
            let key = keys::generate(&name).map_err(refused)?;
            keys::write_secret(&path, &key).map_err(refused)?;
            writeln!(std::io::stdout(), "{}", key.public_key)?;
            eprintln!(
                "key `{name}` ({}) written to `{}` (keep it secret); give the public key above to those who install your bundles: `plait trust add {} --name {name}`",
                keys::key_id(&key.public_key),
                path.display(),
                key.public_key
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a `plait trust` command.
pub fn trust(command: TrustCommand) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(command.store_args().store.clone())?;
    let store: TrustStore = home.trust_store();
    match command {
        TrustCommand::Add { key, name, .. } => {
            let added = store.add(&name, &key).map_err(refused)?;
            eprintln!(
                "trusting `{}` (key {}): bundles it signed are installed",
                added.name,
                keys::key_id(&added.public_key)
            );
        }
        TrustCommand::List { json, .. } => {
            let keys = store.list().map_err(refused)?;
            if json {
                let list: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|key| {
                        serde_json::json!({
                            "name": key.name,
                            "key_id": keys::key_id(&key.public_key),
                            "public_key": key.public_key,
                        })
                    })
                    .collect();
                super::output::print_json(&serde_json::Value::Array(list))?;
                return Ok(ExitCode::SUCCESS);
            }
            if keys.is_empty() {
                eprintln!("no trusted keys; `plait trust add KEY --name NAME` adds one");
            }
            for key in keys {
                writeln!(
                    std::io::stdout(),
                    "{:<24} {}  {}",
                    key.name,
                    keys::key_id(&key.public_key),
                    key.public_key
                )?;
            }
        }
        TrustCommand::Remove { name, .. } => {
            let removed = store.remove(&name).map_err(refused)?;
            eprintln!("no longer trusting `{}`", removed.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
