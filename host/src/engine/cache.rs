//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes far longer than running a
//! step, so the compiled artifact is kept on disk, keyed by the component's
//! sha256 digest and the engine's compatibility hash (which covers the
//! wasmtime version, the target and every codegen setting). A different
//! engine or a changed component therefore never reuses a stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

/// A directory of `<digest>-<engine hash>.cwasm` files.
pub(super) struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
}

impl ComponentCache {
    pub(super) fn new(dir: PathBuf, engine: &wasmtime::Engine) -> ComponentCache {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Loads a previously compiled component, or `None` on a miss. A cached
    /// file wasmtime refuses (truncated by a crash, written by another
    /// build) counts as a miss and is replaced by the next `store`.
    pub(super) fn load(&self, engine: &wasmtime::Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file lives in Plait's private cache directory, is only
        // written by `store` below from `Component::serialize` output, and is
        // renamed into place atomically, so it is a complete artifact produced
        // by a compatible engine (the engine hash is part of its name);
        // wasmtime additionally checks its header and version.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    error = format!("{error:#}"),
                    "ignoring an unusable compiled component in the cache"
                );
                None
            }
        }
    }

    /// Stores a compiled component. Failures are logged, never fatal: the
    /// cache only saves time.
    pub(super) fn store(&self, digest: &str, component: &Component) {
        if let Err(error) = self.try_store(digest, component) {
            tracing::warn!(
                dir = %self.dir.display(),
                error = format!("{error:#}"),
                "could not write the compiled-component cache"
            );
        }
    }

    fn try_store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(digest);
        write_atomically(&path, &bytes)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`, so readers never see a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
