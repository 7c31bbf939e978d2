//! Where granted secrets come from: environment variables under a prefix,
//! and a secrets file.

use super::*;

/// Where secret values are read from: a file first, then the environment.
#[derive(Debug, Clone)]
pub struct SecretSource {
    /// A TOML file of `name = "value"`.
    pub file: Option<PathBuf>,
    /// `PREFIX` + the upper-cased name, for example `PLAIT_SECRET_API_TOKEN`.
    pub env_prefix: String,
}

impl Default for SecretSource {
    fn default() -> Self {
        SecretSource {
            file: None,
            env_prefix: DEFAULT_SECRET_ENV_PREFIX.to_owned(),
        }
    }
}

impl SecretSource {
    /// The environment variable that holds secret `name`.
    pub fn env_var(&self, name: &str) -> String {
        format!(
            "{}{}",
            self.env_prefix,
            name.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Reads the values of `names`. A name found nowhere is an error that
    /// says where it was looked for.
    pub fn resolve(&self, names: &[&str]) -> Result<BTreeMap<String, String>, PolicyError> {
        let file = match &self.file {
            Some(path) => read_secrets_file(path)?,
            None => BTreeMap::new(),
        };
        let mut values = BTreeMap::new();
        for name in names {
            let value = file
                .get(*name)
                .cloned()
                .or_else(|| std::env::var(self.env_var(name)).ok());
            match value {
                Some(value) => {
                    values.insert((*name).to_owned(), value);
                }
                None => {
                    let mut places = format!("environment variable `{}`", self.env_var(name));
                    if let Some(path) = &self.file {
                        places = format!("`{}` or {places}", path.display());
                    }
                    return Err(PolicyError::MissingSecret {
                        name: (*name).to_owned(),
                        places,
                    });
                }
            }
        }
        Ok(values)
    }
}

pub(crate) fn read_secrets_file(path: &Path) -> Result<BTreeMap<String, String>, PolicyError> {
    let text =
        files::read_to_string(path, files::Kind::Config).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(&text).map_err(|error| PolicyError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    table
        .into_iter()
        .map(|(name, value)| match value {
            toml::Value::String(text) => Ok((name, text)),
            other => Err(PolicyError::Invalid {
                path: path.to_owned(),
                key: name,
                message: format!("a secret must be a string, found a {}", other.type_str()),
            }),
        })
        .collect()
}
