//! Publisher keys, bundle signatures and the trust store.
//!
//! A publisher signs a bundle's manifest with an ed25519 key; since the
//! manifest pins every file by digest, the signature covers every byte.
//! The signed message is `plait-bundle-signature-v1\n` followed by the
//! manifest's exact bytes (the prefix keeps a bundle signature from ever
//! being valid as anything else). Keys are written `ed25519:<base64>`:
//! the 32-byte public key, or for a secret key file the 32-byte seed.
//! A key's id is the first 16 hex digits of the SHA-256 of its public key.
//!
//! The trust store (`trust.toml` in the Plait home) lists the publisher
//! keys an operator accepts; `plait trust add` adds one.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{BundleError, MANIFEST_FILE};

/// The context prefix of every signed manifest.
pub const SIGNING_CONTEXT: &[u8] = b"plait-bundle-signature-v1\n";

/// The prefix of encoded keys.
const PREFIX: &str = "ed25519:";

/// A secret signing key, as its file holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// Its name, for people.
    pub name: String,
    /// `ed25519:<base64 of the 32-byte seed>`.
    pub secret_key: String,
    /// `ed25519:<base64 of the public key>`.
    pub public_key: String,
}

/// `bundle.sig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// `ed25519`.
    pub algorithm: String,
    /// The signer's public key, `ed25519:<base64>`.
    pub public_key: String,
    /// The signature, base64 of 64 bytes.
    pub signature: String,
}

/// Who signed a bundle (its signature checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// `ed25519:<base64>`.
    pub public_key: String,
    /// The key's id.
    pub key_id: String,
}

/// A publisher key the operator trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// The operator's name for the publisher.
    pub name: String,
    /// `ed25519:<base64>`.
    pub public_key: String,
}

/// The id of an encoded public key.
pub fn key_id(public_key: &str) -> String {
    let bytes = decode(public_key).unwrap_or_default();
    let hash = sha2::Sha256::digest(bytes);
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(bytes: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim().strip_prefix(PREFIX)?)
        .ok()?;
    (bytes.len() == 32).then_some(bytes)
}

/// Checks a public key's text: `ed25519:` and the base64 of 32 bytes.
pub fn parse_public_key(text: &str) -> Result<String, BundleError> {
    match decode(text) {
        Some(bytes) => Ok(encode(&bytes)),
        None => Err(BundleError::Signature(format!(
            "`{}` is not a public key: it must be `ed25519:` followed by the base64 of 32 bytes, as `plait key generate` prints it",
            text.trim()
        ))),
    }
}

/// Makes a new key named `name`.
pub fn generate(name: &str) -> Result<SecretKey, BundleError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|error| BundleError::Signature(format!("no randomness for a key: {error}")))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|_| BundleError::Signature("the key could not be made".to_owned()))?;
    Ok(SecretKey {
        name: name.to_owned(),
        secret_key: encode(&seed),
        public_key: encode(pair.public_key().as_ref()),
    })
}

/// Writes a secret key file, readable by its owner only.
pub fn write_secret(path: &Path, key: &SecretKey) -> Result<(), BundleError> {
    if path.exists() {
        return Err(BundleError::Signature(format!(
            "`{}` exists; a key is never overwritten (remove it first if you mean to)",
            path.display()
        )));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(BundleError::io("creating", parent))?;
    }
    let text = format!(
        "# A Plait bundle signing key. Keep this file secret: whoever has it signs as you.\n{}",
        toml::to_string(key).expect("a key is plain TOML")
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(BundleError::io("creating", path))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(BundleError::io("writing", path))
}

/// Reads a secret key file.
pub fn read_secret(path: &Path) -> Result<SecretKey, BundleError> {
    let text = crate::files::read_to_string(path, crate::files::Kind::Config)
        .map_err(BundleError::io("reading the key", path))?;
    let key: SecretKey = toml::from_str(&text).map_err(|error| {
        BundleError::Signature(format!(
            "`{}` is not a Plait signing key: {}",
            path.display(),
            error.to_string().trim_end()
        ))
    })?;
    let seed = decode(&key.secret_key).ok_or_else(|| {
        BundleError::Signature(format!("`{}` holds no valid secret key", path.display()))
    })?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| {
        BundleError::Signature(format!("`{}` holds no valid secret key", path.display()))
    })?;
    if encode(pair.public_key().as_ref()) != key.public_key {
        return Err(BundleError::Signature(format!(
            "`{}`: its public key is not the secret key's; the file was edited",
            path.display()
        )));
    }
    Ok(key)
}

/// Signs manifest bytes: the `bundle.sig` file's bytes.
pub fn sign(manifest: &[u8], key: &SecretKey) -> Result<Vec<u8>, BundleError> {
    let seed = decode(&key.secret_key)
        .ok_or_else(|| BundleError::Signature("the secret key is not valid".to_owned()))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|_| BundleError::Signature("the secret key is not valid".to_owned()))?;
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(manifest);
    let signature = pair.sign(&message);
    let file = SignatureFile {
        algorithm: "ed25519".to_owned(),
        public_key: key.public_key.clone(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
    };
    Ok(toml::to_string(&file)
        .expect("a signature is plain TOML")
        .into_bytes())
}

/// Checks a `bundle.sig` against manifest bytes; returns the signer.
pub fn verify(manifest: &[u8], signature_file: &[u8]) -> Result<Signer, BundleError> {
    let text = std::str::from_utf8(signature_file)
        .map_err(|_| BundleError::Signature("`bundle.sig` is not UTF-8 text".to_owned()))?;
    let file: SignatureFile = toml::from_str(text).map_err(|error| {
        BundleError::Signature(format!(
            "`bundle.sig` does not parse: {}",
            error.to_string().trim_end()
        ))
    })?;
    if file.algorithm != "ed25519" {
        return Err(BundleError::Signature(format!(
            "`bundle.sig` uses algorithm `{}`; this host checks `ed25519` signatures",
            file.algorithm
        )));
    }
    let public = decode(&file.public_key).ok_or_else(|| {
        BundleError::Signature("`bundle.sig` names no valid ed25519 public key".to_owned())
    })?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(file.signature.trim())
        .map_err(|_| BundleError::Signature("`bundle.sig`'s signature is not base64".to_owned()))?;
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(manifest);
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(&message, &signature)
        .map_err(|_| {
            BundleError::Signature(format!(
                "the signature does not match `{MANIFEST_FILE}`: the manifest was altered after it was signed (or the signature belongs to another bundle)"
            ))
        })?;
    let public_key = encode(&public);
    Ok(Signer {
        key_id: key_id(&public_key),
        public_key,
    })
}

/// The trust store's name in the Plait home.
pub const TRUST_FILE: &str = "trust.toml";

/// The operator's trusted publisher keys (`trust.toml`).
#[derive(Debug, Clone)]
pub struct TrustStore {
    path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    keys: Vec<TrustedKey>,
}

impl TrustStore {
    /// The trust store at `path` (which need not exist yet).
    pub fn at(path: &Path) -> TrustStore {
        TrustStore {
            path: path.to_owned(),
        }
    }

    /// Every trusted key.
    pub fn list(&self) -> Result<Vec<TrustedKey>, BundleError> {
        match crate::files::read_to_string(&self.path, crate::files::Kind::Config) {
            Ok(text) => toml::from_str::<TrustFile>(&text)
                .map(|file| file.keys)
                .map_err(|error| {
                    BundleError::Signature(format!(
                        "the trust store `{}` does not parse: {}",
                        self.path.display(),
                        error.to_string().trim_end()
                    ))
                }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(BundleError::io("reading the trust store", &self.path)(
                error,
            )),
        }
    }

    /// Trusts `public_key` under `name`; a key already there is renamed.
    pub fn add(&self, name: &str, public_key: &str) -> Result<TrustedKey, BundleError> {
        let public_key = parse_public_key(public_key)?;
        let mut keys = self.list()?;
        keys.retain(|key| key.public_key != public_key);
        let key = TrustedKey {
            name: name.to_owned(),
            public_key,
        };
        keys.push(key.clone());
        self.write(keys)?;
        Ok(key)
    }

    /// Stops trusting the key named `name` (or with that public key or id).
    pub fn remove(&self, which: &str) -> Result<TrustedKey, BundleError> {
        let mut keys = self.list()?;
        let Some(position) = keys.iter().position(|key| {
            key.name == which || key.public_key == which || key_id(&key.public_key) == which
        }) else {
            return Err(BundleError::Signature(format!(
                "no trusted key is named `{which}`; `plait trust list` shows them"
            )));
        };
        let removed = keys.remove(position);
        self.write(keys)?;
        Ok(removed)
    }

    fn write(&self, keys: Vec<TrustedKey>) -> Result<(), BundleError> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(BundleError::io("creating", parent))?;
        }
        let text = toml::to_string(&TrustFile { keys }).expect("keys are plain TOML");
        let temporary = self.path.with_extension("toml.tmp");
        std::fs::write(&temporary, text).map_err(BundleError::io("writing", &temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(BundleError::io("replacing", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_out_and_any_change_breaks_it() {
        let key = generate("acme").unwrap();
        let manifest = b"format = 1\nname = \"demo\"\n";
        let signature = sign(manifest, &key).unwrap();
        let signer = verify(manifest, &signature).unwrap();
        assert_eq!(signer.public_key, key.public_key);
        assert_eq!(signer.key_id.len(), 16);
        let mut altered = manifest.to_vec();
        altered[3] ^= 1;
        let error = verify(&altered, &signature).unwrap_err().to_string();
        assert!(error.contains("altered after it was signed"), "{error}");
        let other = generate("mallory").unwrap();
        let mut forged: SignatureFile =
            toml::from_str(std::str::from_utf8(&signature).unwrap()).unwrap();
        forged.public_key = other.public_key;
        let forged = toml::to_string(&forged).unwrap();
        assert!(verify(manifest, forged.as_bytes()).is_err());
        // Deterministic: ed25519 signs the same message the same way.
        assert_eq!(signature, sign(manifest, &key).unwrap());
    }

    #[test]
    fn keys_are_kept_secret_and_trusted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate("acme").unwrap();
        let path = dir.path().join("keys/acme.key");
        write_secret(&path, &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(write_secret(&path, &key).is_err(), "never overwritten");
        assert_eq!(read_secret(&path).unwrap().public_key, key.public_key);
        let store = TrustStore::at(&dir.path().join("trust.toml"));
        assert!(store.list().unwrap().is_empty());
        store.add("acme", &key.public_key).unwrap();
        assert_eq!(store.list().unwrap()[0].name, "acme");
        assert!(store.add("x", "ed25519:short").is_err());
        store.remove(&key_id(&key.public_key)).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
