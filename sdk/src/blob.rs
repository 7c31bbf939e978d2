//! Named binary attachments that travel beside the JSON document.

use serde_json::json;

use crate::StepError;

/// A named binary attachment: a document, an image, an archive.
///
/// Blobs carry binary data so that it never has to be base64-encoded inside
/// the JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The name the workflow refers to this blob by, for example `document`.
    /// Unique within one payload.
    pub name: String,
    /// The IANA media type, for example `application/pdf`;
    /// `application/octet-stream` when unknown.
    pub media_type: String,
    /// The raw bytes.
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob with the given name, media type and bytes.
    pub fn new(
        name: impl Into<String>,
        media_type: impl Into<String>,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            name: name.into(),
            media_type: media_type.into(),
            data: data.into(),
        }
    }

    /// The bytes as UTF-8 text.
    ///
    /// # Errors
    ///
    /// A fatal [`StepError`] naming the blob and the byte offset of the first
    /// invalid sequence, since a retry would read the same bytes.
    pub fn text(&self) -> Result<&str, StepError> {
        std::str::from_utf8(&self.data).map_err(|error| {
            let offset = error.valid_up_to();
            StepError::fatal(format!(
                "blob `{}` is not valid UTF-8: invalid byte sequence at byte offset {offset}",
                self.name
            ))
            .with_details(json!({"blob": self.name, "offset": offset}))
        })
    }
}

/// The blobs of an input payload, looked up by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blobs(Vec<Blob>);

impl Blobs {
    /// No blobs.
    pub fn new() -> Self {
        Self::default()
    }

    /// The blob called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Blob> {
        self.0.iter().find(|blob| blob.name == name)
    }

    /// The blob called `name`.
    ///
    /// # Errors
    ///
    /// A fatal [`StepError`] naming the missing blob and the blobs that are
    /// present: the workflow wired the wrong blob into this step, and a
    /// retry would see the same input.
    pub fn require(&self, name: &str) -> Result<&Blob, StepError> {
        self.get(name).ok_or_else(|| {
            let present: Vec<&str> = self.names().collect();
            let listed = if present.is_empty() {
                "the input has no blobs".to_owned()
            } else {
                let quoted: Vec<String> = present.iter().map(|name| format!("`{name}`")).collect();
                format!("the input has {}", quoted.join(", "))
            };
            StepError::fatal(format!("missing input blob `{name}`: {listed}"))
                .with_details(json!({"missing": name, "present": present}))
        })
    }

    /// Removes the blob called `name` and returns it, to move its bytes into
    /// the output without copying them.
    pub fn take(&mut self, name: &str) -> Option<Blob> {
        let index = self.0.iter().position(|blob| blob.name == name)?;
        Some(self.0.remove(index))
    }

    /// The names of the blobs, in payload order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|blob| blob.name.as_str())
    }

    /// The blobs, in payload order.
    pub fn iter(&self) -> std::slice::Iter<'_, Blob> {
        self.0.iter()
    }

    /// How many blobs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no blobs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The blobs as a vector, for example to pass them all to the output.
    pub fn into_vec(self) -> Vec<Blob> {
        self.0
    }
}

impl From<Vec<Blob>> for Blobs {
    fn from(blobs: Vec<Blob>) -> Self {
        Self(blobs)
    }
}

impl FromIterator<Blob> for Blobs {
    fn from_iter<I: IntoIterator<Item = Blob>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl IntoIterator for Blobs {
    type Item = Blob;
    type IntoIter = std::vec::IntoIter<Blob>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Blobs {
    type Item = &'a Blob;
    type IntoIter = std::slice::Iter<'a, Blob>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Blobs {
        Blobs::from(vec![
            Blob::new("document", "text/plain", "hello"),
            Blob::new("image", "image/png", vec![0x89, b'P']),
        ])
    }

    #[test]
    fn get_and_require_find_blobs_by_name() {
        let blobs = sample();
        assert_eq!(blobs.get("image").map(|b| b.data.len()), Some(2));
        assert!(blobs.get("nope").is_none());
        assert_eq!(blobs.require("document").unwrap().text().unwrap(), "hello");
    }

    #[test]
    fn require_names_the_missing_blob_and_those_present() {
        let error = sample().require("archive").unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(
            error.message(),
            "missing input blob `archive`: the input has `document`, `image`"
        );
        assert_eq!(
            error.details(),
            Some(&json!({"missing": "archive", "present": ["document", "image"]}))
        );

        let error = Blobs::new().require("document").unwrap_err();
        assert_eq!(
            error.message(),
            "missing input blob `document`: the input has no blobs"
        );
    }

    #[test]
    fn text_reports_the_offset_of_invalid_utf8() {
        let blob = Blob::new("document", "text/plain", b"ab\xffcd".to_vec());
        let error = blob.text().unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.message().contains("`document`"), "{error}");
        assert!(error.message().contains("byte offset 2"), "{error}");
    }

    #[test]
    fn take_and_iteration() {
        let mut blobs = sample();
        let names: Vec<&str> = blobs.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["document", "image"]);
        assert_eq!(blobs.take("document").unwrap().data, b"hello");
        assert_eq!(blobs.len(), 1);
        assert_eq!((&blobs).into_iter().count(), 1);
        assert_eq!(blobs.into_vec()[0].name, "image");
    }
}
