//! `plait key` and `plait trust`: publisher keys that sign bundles, and the
//! trust store of keys whose bundles this host installs.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use plait::bundle::keys::{self, TrustStore};

use super::refused;
use crate::StoreArgs;
use crate::UsageError;
use crate::home::Home;

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

/// Runs a `plait key` command.
pub fn key(command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Generate { name, out, store } => {
            plait::bundle::manifest::check_name(&name)
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
                crate::output::print_json(&serde_json::Value::Array(list))?;
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
