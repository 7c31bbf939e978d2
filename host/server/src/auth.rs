//! API tokens: bearer tokens with scopes, kept only as hashes.
//!
//! `plait token create` makes a token (`plait_` and 43 random characters),
//! prints it once and writes only its SHA-256 to `tokens.json` in the Plait
//! home (mode 0600). The server reads that file again whenever it changes,
//! so tokens can be created and revoked while it runs. A presented token is
//! hashed and compared with every stored hash in constant time. Tokens are
//! random 256-bit values, so a plain hash is as strong as a slow one here.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The file of token hashes in the Plait home.
pub const TOKENS_FILE: &str = "tokens.json";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Start runs (and trigger workflows).
    #[serde(rename = "runs:write")]
    RunsWrite,
    /// Read runs, their steps, events, blobs and the metrics.
    #[serde(rename = "runs:read")]
    RunsRead,
    /// Deliver signals to `wait` steps.
    #[serde(rename = "signals:write")]
    SignalsWrite,
    /// Everything, cancel and retry included.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::RunsWrite,
        Scope::RunsRead,
        Scope::SignalsWrite,
        Scope::Admin,
    ];

    /// Its name: `runs:write`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RunsWrite => "runs:write",
            Scope::RunsRead => "runs:read",
            Scope::SignalsWrite => "signals:write",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a scope; the scopes are {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }
}

/// A stored token: its name, scopes and hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A name for people and the audit log (`token:NAME`); unique.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// `sha256:<hex>` of the token.
    pub hash: String,
    /// When it was created, ms since the epoch.
    pub created_at_ms: u64,
}

impl TokenRecord {
    /// Its scopes, comma-separated.
    pub fn scope_list(&self) -> String {
        self.scopes
            .iter()
            .map(|scope| scope.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the token may act within `scope` (`admin` may do anything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<TokenRecord>,
}

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("could not {action} `{}`", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a token file.
    #[error("`{}` is not a valid token file: {message}; fix or remove it (`plait token create` writes a new one)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A token of that name exists.
    #[error(
        "a token named `{0}` exists; revoke it first (`plait token revoke {0}`) or pick another name"
    )]
    Exists(String),
    /// No token of that name.
    #[error("no token is named `{0}`; `plait token list` shows them")]
    Unknown(String),
    /// A name that cannot be used.
    #[error("token name `{0}` must be 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadName(String),
    /// No scope was given.
    #[error("a token needs at least one scope (`--scope runs:read`, ...)")]
    NoScope,
}

/// The token file of a Plait home.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    /// The file's bytes as last parsed, and what they hold.
    cached: Mutex<(Vec<u8>, Vec<TokenRecord>)>,
}

impl Tokens {
    /// The token file at `path` (which need not exist yet).
    pub fn at(path: &Path) -> Tokens {
        Tokens {
            path: path.to_owned(),
            cached: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token, as the file says now. The file is read on every call
    /// (a few hundred bytes per token), so a revoke takes effect at once;
    /// it is parsed again only when its bytes changed.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        let bytes = match plait::files::read(&self.path, plait::files::Kind::Config) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(TokenError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != bytes {
            let records = if bytes.is_empty() {
                Vec::new()
            } else {
                self.parse(&bytes)?.tokens
            };
            *cached = (bytes, records);
        }
        Ok(cached.1.clone())
    }

    /// The token `presented` is, if any: compared by hash, in constant time
    /// against every stored token.
    pub fn verify(&self, presented: &str) -> Result<Option<TokenRecord>, TokenError> {
        let hash = hash(presented);
        let mut found = None;
        for record in self.list()? {
            if bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(record);
            }
        }
        Ok(found)
    }

    /// Makes a token named `name` with `scopes`: returns the token (shown
    /// once, never stored) and its record.
    pub fn create(
        &self,
        name: &str,
        scopes: &[Scope],
    ) -> Result<(String, TokenRecord), TokenError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(TokenError::BadName(name.to_owned()));
        }
        if scopes.is_empty() {
            return Err(TokenError::NoScope);
        }
        let mut file = self.read()?;
        if file.tokens.iter().any(|token| token.name == name) {
            return Err(TokenError::Exists(name.to_owned()));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|error| TokenError::Io {
            action: "write",
            path: self.path.clone(),
            source: std::io::Error::other(format!("no random numbers from the OS: {error}")),
        })?;
        let token = format!(
            "plait_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let mut scopes = scopes.to_vec();
        scopes.sort_by_key(|scope| scope.as_str());
        scopes.dedup();
        let record = TokenRecord {
            name: name.to_owned(),
            scopes,
            hash: hash(&token),
            created_at_ms: plait::clock::now_ms(),
        };
        file.tokens.push(record.clone());
        self.write(&file)?;
        Ok((token, record))
    }

    /// Removes the token named `name`.
    pub fn revoke(&self, name: &str) -> Result<TokenRecord, TokenError> {
        let mut file = self.read()?;
        let index = file
            .tokens
            .iter()
            .position(|token| token.name == name)
            .ok_or_else(|| TokenError::Unknown(name.to_owned()))?;
        let record = file.tokens.remove(index);
        self.write(&file)?;
        Ok(record)
    }

    fn read(&self) -> Result<TokensFile, TokenError> {
        match plait::files::read(&self.path, plait::files::Kind::Config) {
            Ok(bytes) => self.parse(&bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
            Err(source) => Err(TokenError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<TokensFile, TokenError> {
        serde_json::from_slice(bytes).map_err(|error| TokenError::Corrupt {
            path: self.path.clone(),
            message: error.to_string(),
        })
    }

    /// Writes the file whole: to a temporary name (readable by its owner
    /// only), then renamed over the old one, so a reader never sees half.
    fn write(&self, file: &TokensFile) -> Result<(), TokenError> {
        let io = |source| TokenError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        };
        let partial = self.path.with_extension("json.partial");
        let bytes = serde_json::to_vec_pretty(file).expect("token records serialize");
        {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options.open(&partial).map_err(io)?;
            out.write_all(&bytes).map_err(io)?;
            out.sync_all().map_err(io)?;
        }
        std::fs::rename(&partial, &self.path).map_err(io)?;
        Ok(())
    }
}

/// `sha256:<hex>` of a token.
fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_verifies_and_a_revoked_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::at(&dir.path().join(TOKENS_FILE));
        let (token, record) = tokens
            .create("ci", &[Scope::RunsRead, Scope::RunsWrite])
            .unwrap();
        assert!(token.starts_with("plait_") && token.len() == 6 + 43);
        let text = std::fs::read_to_string(tokens.path()).unwrap();
        assert!(!text.contains(&token), "the token itself is never stored");
        assert!(text.contains(&record.hash));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(tokens.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let found = tokens.verify(&token).unwrap().unwrap();
        assert_eq!(found.name, "ci");
        assert!(found.allows(Scope::RunsRead) && !found.allows(Scope::SignalsWrite));
        assert!(tokens.verify("plait_wrong").unwrap().is_none());
        assert!(matches!(
            tokens.create("ci", &[Scope::Admin]),
            Err(TokenError::Exists(_))
        ));
        tokens.revoke("ci").unwrap();
        assert!(tokens.verify(&token).unwrap().is_none());
        assert!(matches!(tokens.revoke("ci"), Err(TokenError::Unknown(_))));
    }

    #[test]
    fn admin_allows_every_scope_and_names_are_checked() {
        let record = TokenRecord {
            name: "root".into(),
            scopes: vec![Scope::Admin],
            hash: String::new(),
            created_at_ms: 0,
        };
        assert!(Scope::ALL.iter().all(|scope| record.allows(*scope)));
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::at(&dir.path().join(TOKENS_FILE));
        assert!(matches!(
            tokens.create("has space", &[Scope::Admin]),
            Err(TokenError::BadName(_))
        ));
        assert!(matches!(tokens.create("x", &[]), Err(TokenError::NoScope)));
        assert_eq!("runs:read".parse::<Scope>(), Ok(Scope::RunsRead));
        assert!("runs:delete".parse::<Scope>().is_err());
    }
}
