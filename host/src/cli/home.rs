//! The Plait home directory: the journal and the compiled-component cache.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use plait::engine::{Engine, EngineOptions};
use plait::store::SledStore;

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

    /// Opens the run journal.
    pub fn open_store(&self) -> anyhow::Result<Arc<SledStore>> {
        let path = self.dir.join("journal");
        Ok(Arc::new(SledStore::open(&path)?))
    }

    /// Creates the engine, caching compiled components under the home, or in
    /// `PLAIT_CACHE_DIR` when set (for example to share one cache between
    /// several homes).
    pub fn engine(&self) -> anyhow::Result<Engine> {
        let cache = match std::env::var_os("PLAIT_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.dir.join("cache").join("components"),
        };
        engine(Some(cache))
    }
}

/// An engine with the given compiled-component cache.
pub fn engine(cache_dir: Option<PathBuf>) -> anyhow::Result<Engine> {
    let options = EngineOptions {
        cache_dir,
        ..EngineOptions::default()
    };
    Ok(Engine::new(&options)?)
}
