//! Reading the files Plait is given, each kind under a size cap.
//!
//! Every file a user, an operator or a bundle names (a definition, a
//! component, a policy, an input, a key, a bundle, a model) is read through
//! [`read`]: it must be a regular file (not `/dev/zero`, a FIFO or a
//! folder), no larger than its kind's cap, and it is read with that cap as
//! a bound, so that a file that grows while it is read cannot take the
//! host's memory either. The caps are far above what a real file of each
//! kind needs; `docs/security.md` lists them.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// What a file is for, which sets how large it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A workflow definition (YAML or JSON): 4 MiB.
    Definition,
    /// A WebAssembly component: 256 MiB.
    Component,
    /// The operator's `plait.toml`, token and trust files, keys: 4 MiB.
    Config,
    /// A run's input document or an input blob: the policy's `max_input`
    /// applies after reading; the file itself at most 4 GiB.
    Input,
    /// A template bundle or a file inside one being packed: 4 GiB (the
    /// policy's `[bundles] max_size` applies to what it unpacks to).
    Bundle,
    /// An ONNX model: 2 GiB.
    Model,
}

impl Kind {
    /// The most bytes a file of this kind may hold.
    #[must_use]
    pub const fn cap(self) -> u64 {
        match self {
            Kind::Definition | Kind::Config => 4 << 20,
            Kind::Component => 256 << 20,
            Kind::Input | Kind::Bundle => 4 << 30,
            Kind::Model => 2 << 30,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Definition => "a workflow definition",
            Kind::Component => "a component",
            Kind::Config => "a configuration file",
            Kind::Input => "an input file",
            Kind::Bundle => "a bundle file",
            Kind::Model => "a model",
        }
    }
}

/// Reads `path`, a regular file of `kind` no larger than its cap.
///
/// # Errors
/// The file cannot be opened or read, is not a regular file, or is larger
/// than the cap; the message names the cap and the kind, the caller adds
/// the path.
pub fn read(path: &Path, kind: Kind) -> io::Result<Vec<u8>> {
    read_capped(path, kind, kind.cap())
}

/// [`read`] as UTF-8 text.
///
/// # Errors
/// As [`read`], or the file is not UTF-8.
pub fn read_to_string(path: &Path, kind: Kind) -> io::Result<String> {
    String::from_utf8(read(path, kind)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} must be UTF-8 text", kind.noun()),
        )
    })
}

/// [`read`] with a cap of `cap` bytes (at most the kind's).
///
/// # Errors
/// As [`read`].
pub fn read_capped(path: &Path, kind: Kind, cap: u64) -> io::Result<Vec<u8>> {
    let cap = cap.min(kind.cap());
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let what = if metadata.is_dir() {
            "a folder"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}; {} must be a regular file", kind.noun()),
        ));
    }
    if metadata.len() > cap {
        return Err(too_large(kind, metadata.len(), cap));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large(kind, bytes.len() as u64, cap));
    }
    Ok(bytes)
}

fn too_large(kind: Kind, size: u64, cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "it holds {}; {} may be at most {}",
            crate::limits::format_size(size),
            kind.noun(),
            crate::limits::format_size(cap)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_folders_are_refused_without_reading() {
        let error = read(Path::new("/dev/zero"), Kind::Definition).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = read(dir.path(), Kind::Component).unwrap_err();
        assert!(error.to_string().contains("a folder"), "{error}");
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b' '; (4 << 20) + 1]).unwrap();
        let error = read(&path, Kind::Definition).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert!(
            error.to_string().contains("may be at most 4 MiB"),
            "{error}"
        );
        std::fs::write(&path, b"name: x\n").unwrap();
        assert_eq!(read(&path, Kind::Definition).unwrap(), b"name: x\n");
    }
}
