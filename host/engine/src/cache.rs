//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes far longer than running a
//! step, so the compiled artifact is kept on disk, keyed by the component's
//! sha256 digest and the engine's [`super::code_key`] (the wasmtime release,
//! the target and the settings that change code). A different engine or a
//! changed component therefore never reuses a stale artifact. The key is
//! Plait's own rather than wasmtime's compatibility hash, which also hashes
//! the compiler's flags and so differs between a compiling engine and an
//! edge build's engine that has no compiler: code compiled ahead of time
//! for a target must be found by both.

use std::path::{Path, PathBuf};

use wasmtime::component::Component;

/// A directory of `<digest>-<code key>.cwasm` files.
pub(super) struct ComponentCache {
    dir: PathBuf,
    code_key: String,
}

impl ComponentCache {
    pub(super) fn new(dir: PathBuf, code_key: &str) -> ComponentCache {
        ComponentCache {
            dir,
            code_key: code_key.to_owned(),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{}.cwasm", self.code_key))
    }

    /// Whether the cache holds code for the component.
    pub(super) fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
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
                tracing::warn!(target: "plait::engine::cache",
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
    #[cfg(feature = "compiler")]
    pub(super) fn store(&self, digest: &str, component: &Component) {
        if let Err(error) = self.try_store(digest, component) {
            tracing::warn!(target: "plait::engine::cache",
                dir = %self.dir.display(),
                error = format!("{error:#}"),
                "could not write the compiled-component cache"
            );
        }
    }

    #[cfg(feature = "compiler")]
    fn try_store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(digest);
        write_atomically(&path, &bytes)
    }

    /// Stores code compiled elsewhere (already checked by wasmtime);
    /// failures are logged, as with [`ComponentCache::store`].
    pub(super) fn store_bytes(&self, digest: &str, artifact: &[u8]) {
        let result = std::fs::create_dir_all(&self.dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| write_atomically(&self.path(digest), artifact));
        if let Err(error) = result {
            tracing::warn!(target: "plait::engine::cache",
                dir = %self.dir.display(),
                error = format!("{error:#}"),
                "could not write the compiled-component cache"
            );
        }
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
