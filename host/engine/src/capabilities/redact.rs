//! Keeps secret values out of everything a step produces.
//!
//! A step granted a secret can read it, and a buggy or hostile one may
//! echo it: in a log record, on stdout, in its output document, a blob or
//! an error message. Before any of that is stored or shown, every
//! occurrence of a granted secret's value is replaced by [`REDACTED`].
//! Secrets shorter than [`MIN_SECRET_LEN`] bytes are refused when the
//! workflow is planned: replacing every `a` in a step's output would
//! destroy it and still not hide much.

use serde_json::Value;

use super::{CapturedText, StepLogs};
use crate::step::{Blob, Payload, StepFailure};

/// What a secret's value is replaced with.
pub const REDACTED: &str = "[REDACTED]";
/// The shortest secret value accepted.
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces secret values.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for `secrets` (values shorter than [`MIN_SECRET_LEN`]
    /// are ignored; planning refuses them).
    pub fn new(secrets: &[String]) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .cloned()
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }

    fn text_in_place(&self, text: &mut String) {
        if self.secrets.iter().any(|s| text.contains(s.as_str())) {
            *text = self.text(text);
        }
    }

    /// Redacts every string (and object key) in `value`.
    pub fn json(&self, value: &mut Value) {
        match value {
            Value::String(text) => self.text_in_place(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (mut key, mut item) in entries {
                    self.text_in_place(&mut key);
                    self.json(&mut item);
                    map.insert(key, item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Redacts a blob's bytes (and its name and media type).
    pub fn blob(&self, blob: &mut Blob) {
        self.text_in_place(&mut blob.name);
        self.text_in_place(&mut blob.media_type);
        for secret in &self.secrets {
            blob.data = replace_bytes(&blob.data, secret.as_bytes(), REDACTED.as_bytes());
        }
    }

    /// Redacts a whole output payload.
    pub fn payload(&self, payload: &mut Payload) {
        self.json(&mut payload.json);
        payload.blobs.iter_mut().for_each(|blob| self.blob(blob));
    }

    /// Redacts a failure's message and details.
    pub fn failure(&self, failure: &mut StepFailure) {
        self.text_in_place(&mut failure.message);
        if let Some(details) = &mut failure.details {
            self.json(details);
        }
    }

    /// Redacts log records, stdout and stderr.
    pub fn logs(&self, logs: &mut StepLogs) {
        for record in &mut logs.records {
            self.text_in_place(&mut record.message);
            for (key, value) in &mut record.fields {
                self.text_in_place(key);
                self.text_in_place(value);
            }
        }
        let captured = |c: &mut CapturedText| self.text_in_place(&mut c.text);
        captured(&mut logs.stdout);
        captured(&mut logs.stderr);
    }
}

/// `data` with every occurrence of `needle` replaced by `with`.
fn replace_bytes(data: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_replaced_everywhere() {
        let redactor = Redactor::new(&["hunter22".into(), "abc".into()]);
        let mut value = json!({"t": "x hunter22 y", "hunter22": ["hunter22"], "abc": "abc"});
        redactor.json(&mut value);
        assert_eq!(
            value,
            json!({"t": "x [REDACTED] y", "[REDACTED]": ["[REDACTED]"], "abc": "abc"})
        );
        let mut blob = Blob {
            name: "b".into(),
            media_type: "text/plain".into(),
            data: b"ahunter22hunter22b".to_vec(),
        };
        redactor.blob(&mut blob);
        assert_eq!(blob.data, b"a[REDACTED][REDACTED]b");
    }

    #[test]
    fn a_sandbox_never_prints_its_secrets() {
        let sandbox = super::super::Sandbox {
            config: [("api_token".to_owned(), "hunter22".to_owned())].into(),
            secrets: vec!["hunter22".into()],
            ..Default::default()
        };
        let printed = format!("{sandbox:?}");
        assert!(
            !printed.contains("hunter22") && printed.contains("[REDACTED]"),
            "{printed}"
        );
    }

    #[test]
    fn a_longer_secret_containing_a_shorter_one_is_replaced_whole() {
        let redactor = Redactor::new(&["token".into(), "token-extended".into()]);
        assert_eq!(
            redactor.text("token-extended token"),
            "[REDACTED] [REDACTED]"
        );
    }
}
