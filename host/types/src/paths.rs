//! Paths: compared without touching the file system, and the default
//! places of things on this machine.

use std::path::{Path, PathBuf};

/// `path` made absolute and with `.` and `..` resolved lexically, so a
/// policy prefix compares with a grant without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The environment variable naming the model store.
pub const MODELS_ENV: &str = "PLAIT_MODELS";

/// The model store when the policy names none: `$PLAIT_MODELS`, else
/// `~/.cache/plait/models` (where `scripts/models` puts them).
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODELS_ENV).filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("plait")
        .join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_resolve_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
