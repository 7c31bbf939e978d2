//! The Plait home folder: one layout for the CLI, `plait serve` and an
//! embedded [`Runtime`](crate::Runtime).
//!
//! Everything a host keeps between runs lives under one folder, and this
//! module is the only place that knows where:
//!
//! | path | what |
//! |---|---|
//! | `plait.toml` | the operator's policy (optional) |
//! | `journal/` | the run journal (sled) |
//! | `cache/components/` | compiled components (or `$PLAIT_CACHE_DIR`) |
//! | `bundles/` | installed template bundles |
//! | `trust.toml` | the publisher keys the operator trusts |
//! | `keys/` | keys made by `plait key generate` |
//! | `logs/` | each run's own log file |
//! | `workflows/` | what `plait serve` serves unless told otherwise |
//! | `tokens.json`, `webhook-secret` | `plait serve`'s API tokens and webhook signing secret (the CLI names them) |

use std::path::{Path, PathBuf};

use crate::bundle::BundleError;
use crate::bundle::install::Registry;
use crate::bundle::keys::{TRUST_FILE, TrustStore};
use crate::engine::{Engine, EngineError};
use crate::policy::{Policy, PolicyError};

/// The policy file looked for in the home.
pub const POLICY_FILE: &str = "plait.toml";

/// The environment variable that moves the compiled-component cache out of
/// the home (to share one cache between several homes).
pub const CACHE_DIR_ENV: &str = "PLAIT_CACHE_DIR";

/// Why a home's contents could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The folder cannot be made.
    #[error("cannot use `{}` as the Plait home", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy file is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The installed bundles could not be read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A name that is neither a file nor an installed bundle's workflow.
    #[error(
        "`{0}` is neither a workflow file nor the workflow of an installed bundle; `plait bundle list` shows what is installed"
    )]
    NoSuchWorkflow(String),
}

/// A Plait home folder.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The home at `dir`, made if missing.
    pub fn at(dir: impl Into<PathBuf>) -> Result<Home, HomeError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| HomeError::Folder {
            path: dir.clone(),
            source,
        })?;
        Ok(Home { dir })
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host policy: the file `explicit` names (`--policy`,
    /// `PLAIT_POLICY`), else [`POLICY_FILE`] in the home if it exists,
    /// else the defaults.
    pub fn policy(&self, explicit: Option<&Path>) -> Result<Policy, HomeError> {
        let path = explicit.map(Path::to_owned).or_else(|| {
            let path = self.dir.join(POLICY_FILE);
            path.exists().then_some(path)
        });
        Ok(match path {
            Some(path) => Policy::load(&path)?,
            None => Policy::default(),
        })
    }

    /// The run journal's folder.
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// Where compiled components are cached: `$PLAIT_CACHE_DIR` when set,
    /// else `cache/components` in the home.
    pub fn cache_dir(&self) -> PathBuf {
        match std::env::var_os(CACHE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.dir.join("cache").join("components"),
        }
    }

    /// The installed template bundles.
    pub fn bundles(&self) -> Registry {
        Registry::at(&self.dir.join("bundles"))
    }

    /// The publisher keys the operator trusts.
    pub fn trust_store(&self) -> TrustStore {
        TrustStore::at(&self.dir.join(TRUST_FILE))
    }

    /// Where `plait key generate` puts keys.
    pub fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// Where each run's own log file goes (`RUN_ID.jsonl`).
    pub fn run_logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The workflows `plait serve` serves unless told otherwise.
    pub fn workflows_dir(&self) -> PathBuf {
        self.dir.join("workflows")
    }

    /// The engine for `policy` (room for the largest memory it lets a step
    /// have), caching compiled components in [`Home::cache_dir`], with the
    /// compiled code of the installed bundles whose signer is trusted.
    pub fn engine(&self, policy: &Policy) -> Result<Engine, HomeError> {
        let engine = Engine::new(&crate::runtime::engine_options(
            policy,
            Some(self.cache_dir()),
        ))?;
        self.bundles().import_compiled(&engine, &self.trust_store());
        Ok(engine)
    }

    /// The workflow file `given` names: itself when it exists, else the
    /// workflow of an installed bundle (`NAME`, its highest version, or
    /// `NAME@VERSION`).
    pub fn workflow_path(&self, given: &Path) -> Result<PathBuf, HomeError> {
        if given.exists() {
            return Ok(given.to_owned());
        }
        let text = given.to_string_lossy();
        let name = text.split('@').next().unwrap_or(&text);
        if given.to_str().is_none() || crate::bundle::manifest::check_name(name).is_err() {
            // Not a bundle's name: the file, whose loader then says it is
            // not there.
            return Ok(given.to_owned());
        }
        match self.bundles().find_workflow(&text)? {
            Some((_, path)) => Ok(path),
            None => Err(HomeError::NoSuchWorkflow(text.into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Home, HomeError};

    #[test]
    fn a_workflow_is_a_file_else_an_installed_bundle_else_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home")).unwrap();
        let file = dir.path().join("flow.yaml");
        std::fs::write(&file, "name: f\nsteps: []\n").unwrap();
        assert_eq!(home.workflow_path(&file).unwrap(), file);
        let path = std::path::Path::new("./no/such.yaml");
        assert_eq!(
            home.workflow_path(path).unwrap(),
            path,
            "for its loader to name"
        );
        for missing in ["intake", "intake@1.0.0"] {
            match home.workflow_path(std::path::Path::new(missing)) {
                Err(HomeError::NoSuchWorkflow(name)) => assert_eq!(name, missing),
                other => panic!("{missing}: {other:?}"),
            }
        }
        assert_eq!(home.journal_dir(), dir.path().join("home/journal"));
    }
}
