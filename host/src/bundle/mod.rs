//! Template bundles: a workflow with everything it runs, in one signed file.
//!
//! A bundle (`NAME-VERSION.plait`) is a gzip-compressed tar archive holding
//! a manifest (`bundle.toml`, [`manifest`]) that pins every other file by
//! SHA-256 digest and size: the workflow files, their components, their
//! models and other assets, and a readme. An optional `bundle.sig`
//! ([`keys`]) is an ed25519 signature over the manifest's bytes, so one
//! signature covers every byte of the bundle. docs/bundle-format.md
//! specifies the format.
//!
//! The life of a bundle: [`pack`] builds one from a template folder,
//! deterministically (the same folder gives the same bytes);
//! [`keys::sign`] signs it; [`open`] reads one back, refusing unsafe
//! archives ([`archive`]) and checking every digest, the signature against
//! the trust store and the versions it targets; [`install`] stores a
//! verified bundle under the Plait home, where `plait run NAME[@VERSION]`
//! and `plait serve` find its workflows; [`oci`] pushes and pulls bundles
//! to and from OCI registries.

pub mod archive;
pub mod compiled;
pub mod install;
pub mod keys;
pub mod manifest;
pub mod oci;
pub mod pack;

use std::path::PathBuf;

pub use manifest::Manifest;

/// The bundle format this host writes and reads (`format` in the manifest).
pub const FORMAT: u32 = 1;

/// The manifest's name in the archive.
pub const MANIFEST_FILE: &str = "bundle.toml";

/// The signature's name in the archive.
pub const SIGNATURE_FILE: &str = "bundle.sig";

/// The WIT world this host runs components of, as a manifest names it.
pub const WIT_WORLD: &str = "plait:step@0.2.0";

pub use plait_policy::DEFAULT_BUNDLE_MAX_SIZE as DEFAULT_MAX_SIZE;

/// Why a bundle cannot be packed, read, trusted, installed or moved.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{what} `{}`", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The archive is not a safe, well-formed bundle archive.
    #[error("the bundle archive is refused: {0}")]
    Unsafe(String),
    /// The manifest is missing, malformed, or does not match the files.
    #[error("the bundle's manifest is invalid: {0}")]
    Manifest(String),
    /// A file's bytes are not those the manifest pins.
    #[error(
        "`{path}` was altered: the manifest pins {expected}, the bundle holds {found}; the bundle is not the one that was packed (or signed)"
    )]
    Tampered {
        /// The file in the bundle.
        path: String,
        /// What the manifest says.
        expected: String,
        /// What the file is.
        found: String,
    },
    /// The signature is missing, invalid or by an untrusted key.
    #[error("{0}")]
    Signature(String),
    /// The bundle targets another host or WIT version.
    #[error("{0}")]
    Version(String),
    /// A template folder cannot be packed.
    #[error("cannot pack `{}`: {message}", dir.display())]
    Pack {
        /// The folder.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// Installing, listing or removing failed.
    #[error("{0}")]
    Install(String),
    /// A registry refused or failed.
    #[error("{0}")]
    Registry(String),
    /// Code compiled ahead of time could not be made or taken.
    #[error("{0}")]
    Compile(String),
}

impl BundleError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |source| BundleError::Io { what, path, source }
    }
}

/// A bundle read from its archive: every file whose digest checked out,
/// and what the signature said.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// The manifest's bytes, as signed.
    pub manifest_bytes: Vec<u8>,
    /// Every file but the manifest and the signature, by path, in the
    /// manifest's order.
    pub files: Vec<(String, Vec<u8>)>,
    /// Who signed it, if it is signed with a valid signature.
    pub signer: Option<keys::Signer>,
    /// The `bundle.sig` file, as it was.
    pub signature: Option<Vec<u8>>,
}

impl Bundle {
    /// The bytes of file `path`.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, bytes)| bytes.as_slice())
    }
}

/// How much [`open`] trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Publisher keys accepted (the trust store).
    pub keys: Vec<keys::TrustedKey>,
    /// Take a bundle without a signature.
    pub allow_unsigned: bool,
    /// Take a bundle signed by a key not in the trust store.
    pub allow_untrusted: bool,
}

/// Reads the bundle in `bytes`: a safe archive ([`archive::read`], within
/// `max_size`), a valid manifest, every file present with the digest and
/// size the manifest pins and no file it does not name, the versions this
/// host runs, and a signature `trust` accepts.
pub fn open(bytes: &[u8], max_size: u64, trust: &Trust) -> Result<Bundle, BundleError> {
    let mut entries = archive::read(bytes, max_size)?;
    let position = entries
        .iter()
        .position(|(path, _)| path == MANIFEST_FILE)
        .ok_or_else(|| {
            BundleError::Manifest(format!(
                "the archive holds no `{MANIFEST_FILE}`: it is not a Plait bundle"
            ))
        })?;
    let (_, manifest_bytes) = entries.remove(position);
    let signature = entries
        .iter()
        .position(|(path, _)| path == SIGNATURE_FILE)
        .map(|position| entries.remove(position).1);
    // The signature first: a manifest altered after signing is named as
    // such, before its altered contents can blame another file.
    let signer = match &signature {
        Some(text) => Some(keys::verify(&manifest_bytes, text)?),
        None => None,
    };
    let manifest = Manifest::parse(&manifest_bytes)?;
    let mut files = Vec::with_capacity(manifest.files().count());
    for pinned in manifest.files() {
        let position = entries
            .iter()
            .position(|(path, _)| *path == pinned.path)
            .ok_or_else(|| {
                BundleError::Manifest(format!(
                    "`{}` is pinned by the manifest but missing from the archive",
                    pinned.path
                ))
            })?;
        let (path, data) = entries.remove(position);
        let digest = crate::digest::digest(&data);
        if digest != pinned.digest || data.len() as u64 != pinned.size {
            return Err(BundleError::Tampered {
                path,
                expected: format!("{} ({} bytes)", pinned.digest, pinned.size),
                found: format!("{digest} ({} bytes)", data.len()),
            });
        }
        files.push((path, data));
    }
    if let Some((extra, _)) = entries.first() {
        return Err(BundleError::Manifest(format!(
            "the archive holds `{extra}`, which the manifest does not pin: a file was added after packing"
        )));
    }
    manifest.check_versions()?;
    match &signer {
        None if !trust.allow_unsigned => {
            return Err(BundleError::Signature(format!(
                "bundle `{}` {} is not signed, so nothing says who made it; ask its publisher for a signed one, or pass `--allow-unsigned` to take it anyway",
                manifest.name, manifest.version
            )));
        }
        Some(signer)
            if !trust.allow_untrusted
                && !trust
                    .keys
                    .iter()
                    .any(|key| key.public_key == signer.public_key) =>
        {
            return Err(BundleError::Signature(format!(
                "bundle `{}` {} is signed by key {} ({}), which is not in the trust store; if you trust its publisher, `plait trust add {} --name PUBLISHER`, or pass `--allow-untrusted`",
                manifest.name,
                manifest.version,
                signer.key_id,
                signer.public_key,
                signer.public_key
            )));
        }
        _ => {}
    }
    Ok(Bundle {
        manifest,
        manifest_bytes,
        files,
        signer,
        signature,
    })
}
