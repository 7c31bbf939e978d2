//! Content digests, as the journal and bundles write them:
//! `sha256:<64 hex digits>`.
//!
//! [`Digest`] is its own type, so that a digest is never confused with a
//! name or a path, and one read from outside (a bundle manifest, an OCI
//! reference, a journal record) is checked for its form once, when it is
//! parsed. On the wire it is the same string as always.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A `sha256:<64 lowercase hex digits>` content digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// Text that is not a `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a content digest: Plait writes `sha256:` followed by 64 lowercase hex digits"
)]
pub struct DigestError(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let hash = Sha256::digest(bytes);
        let mut text = String::with_capacity(7 + 64);
        text.push_str("sha256:");
        for byte in hash {
            text.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            text.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        Digest(text)
    }

    /// Checks `text` is `sha256:` and 64 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let valid = text.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        });
        if valid {
            Ok(Digest(text.to_owned()))
        } else {
            // A hostile manifest's "digest" could be megabytes: name a
            // prefix of it.
            let shown: String = text.chars().take(80).collect();
            Err(DigestError(shown))
        }
    }

    /// The digest as text, `sha256:...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, without `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(text: String) -> Result<Digest, DigestError> {
        Digest::parse(&text)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(text: &str) -> Result<Digest, DigestError> {
        Digest::parse(text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl Deref for Digest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Digest {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::{Digest, digest};

    #[test]
    fn a_digest_is_sha256_in_lowercase_hex() {
        let empty = digest(b"");
        assert_eq!(
            empty,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(empty.hex().len(), 64);
        assert_eq!(Digest::parse(empty.as_str()), Ok(empty.clone()));
    }

    #[test]
    fn malformed_digests_are_refused_when_parsed() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../etc/passwd000000000000000000000000000000000000000000000000",
        ] {
            let error = Digest::parse(bad).unwrap_err();
            assert!(
                error.to_string().contains("is not a content digest"),
                "{error}"
            );
        }
        let json = serde_json::from_str::<Digest>("\"sha256:abc\"").unwrap_err();
        assert!(
            json.to_string().contains("is not a content digest"),
            "{json}"
        );
    }

    #[test]
    fn the_wire_form_is_the_bare_string() {
        let digest = digest(b"bytes");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{digest}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
    }
}
