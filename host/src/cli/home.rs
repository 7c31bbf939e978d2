//! The Plait home directory: the journal and the compiled-component cache.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use plait::engine::{Engine, EngineOptions};
use plait::policy::Policy;
use plait::store::SledStore;

/// The policy file looked for in the Plait home.
pub const POLICY_FILE: &str = "plait.toml";

/// The resolved home directory.
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `--store`/`PLAIT_HOME` if given, else `<data dir>/plait`.
    pub fn resolve(store: Option<PathBuf>) -> anyhow::Result<Home> {
        let dir = match store {
            Some(dir) => dir,
            None => dirs::data_dir().map(|dir| dir.join("plait")).context(
                "no data directory is known for this user; pass `--store DIR` or set PLAIT_HOME",
            )?,
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the Plait home `{}`", dir.display()))?;
        Ok(Home { dir })
    }

    /// The host policy: `explicit` (from `--policy`/`PLAIT_POLICY`), else
    /// `plait.toml` in the home if it exists, else the defaults.
    pub fn policy(&self, explicit: Option<PathBuf>) -> anyhow::Result<Policy> {
        let path = explicit.or_else(|| {
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

    /// Opens the run journal.
    pub fn open_store(&self) -> anyhow::Result<Arc<SledStore>> {
        Ok(Arc::new(SledStore::open(&self.journal_dir())?))
    }

    /// Creates the engine, caching compiled components under the home, or in
    /// `PLAIT_CACHE_DIR` when set (for example to share one cache between
    /// several homes).
    /// The engine reserves room for the largest memory `policy` lets a
    /// step have.
    pub fn engine(&self, policy: &Policy) -> anyhow::Result<Engine> {
        let cache = match std::env::var_os("PLAIT_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.dir.join("cache").join("components"),
        };
        let defaults = EngineOptions::default();
        let largest = policy
            .max
            .memory
            .unwrap_or(0)
            .max(policy.defaults.memory)
            .max(defaults.max_memory_bytes as u64);
        let options = EngineOptions {
            cache_dir: Some(cache),
            max_memory_bytes: usize::try_from(largest).unwrap_or(usize::MAX),
            ..defaults
        };
        Ok(Engine::new(&options)?)
    }
}
