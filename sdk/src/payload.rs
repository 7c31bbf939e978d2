//! The typed input and output of one invocation.

use crate::{Blob, Blobs};

/// What a step receives: the deserialized JSON document and the input blobs.
#[derive(Debug, Clone)]
pub struct Input<T> {
    /// The input document, deserialized into [`crate::Step::Input`].
    pub data: T,
    /// The input blobs.
    pub blobs: Blobs,
}

/// What a step returns: a document serialized to JSON, and blobs.
///
/// Any value converts into an output without blobs, so a step can end with
/// `Ok(document.into())`.
#[derive(Debug, Clone)]
pub struct Output<T> {
    /// The output document, serialized as JSON.
    pub data: T,
    /// The output blobs; their names must be unique.
    pub blobs: Vec<Blob>,
}

impl<T> Output<T> {
    /// An output holding `data` and no blobs.
    pub fn new(data: T) -> Self {
        Self {
            data,
            blobs: Vec::new(),
        }
    }

    /// Adds a blob to the output.
    #[must_use]
    pub fn with_blob(mut self, blob: Blob) -> Self {
        self.blobs.push(blob);
        self
    }

    /// Adds several blobs to the output, for example all input blobs to pass
    /// them through: `.with_blobs(input.blobs)`.
    #[must_use]
    pub fn with_blobs(mut self, blobs: impl IntoIterator<Item = Blob>) -> Self {
        self.blobs.extend(blobs);
        self
    }
}

impl<T> From<T> for Output<T> {
    fn from(data: T) -> Self {
        Self::new(data)
    }
}
