//! `read-text`: a Plait step that reads a UTF-8 text blob into the JSON
//! document, so that later steps can work on the text as JSON.
//!
//! Input: a blob (by default `document`); the input document is ignored.
//! Output: `{"text": string, "bytes": integer, "media_type": string}`.
//! A blob that is not valid UTF-8 is a fatal error naming the byte offset of
//! the first invalid sequence.

use plait_sdk::{Context, Input, Level, Output, Step, StepError, StepInfo};
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::json;

/// The blob read when config `blob` is not set.
pub const DEFAULT_BLOB: &str = "document";

/// The `read-text` step.
pub struct ReadText;

/// The output document.
#[derive(Debug, Serialize)]
pub struct TextDocument {
    /// The blob's contents.
    pub text: String,
    /// The blob's size in bytes.
    pub bytes: usize,
    /// The blob's media type, as the input declared it.
    pub media_type: String,
}

impl Step for ReadText {
    type Input = IgnoredAny;
    type Output = TextDocument;

    fn info() -> StepInfo {
        StepInfo::new("read-text", env!("CARGO_PKG_VERSION"))
            .description(
                "Reads a UTF-8 text blob into the JSON document as `text`, \
                 with its size in bytes and its media type.",
            )
            .output_schema(json!({
                "type": "object",
                "required": ["text", "bytes", "media_type"],
                "properties": {
                    "text": {"type": "string"},
                    "bytes": {"type": "integer", "minimum": 0},
                    "media_type": {"type": "string"},
                },
            }))
            .config(
                "blob",
                "Name of the input blob to read; `document` when unset.",
                false,
            )
    }

    fn run(ctx: &Context, input: Input<IgnoredAny>) -> Result<Output<TextDocument>, StepError> {
        let name = ctx
            .config("blob")
            .unwrap_or_else(|| DEFAULT_BLOB.to_owned());
        let blob = input.blobs.require(&name)?;
        let text = blob.text()?.to_owned();
        let bytes = blob.data.len();
        ctx.log(
            Level::Debug,
            "read text blob",
            &[("blob", &name), ("bytes", &bytes.to_string())],
        );
        Ok(TextDocument {
            text,
            bytes,
            media_type: blob.media_type.clone(),
        }
        .into())
    }
}

plait_sdk::export_step!(ReadText);

#[cfg(test)]
mod tests {
    use super::*;
    use plait_sdk::Blob;
    use plait_sdk::testing::{TestContext, run};

    #[test]
    fn reads_the_document_blob() {
        let blob = Blob::new("document", "text/markdown", "# Title\nbody");
        let (json, blobs) = run::<ReadText>(&TestContext::new().build(), json!({}), vec![blob])
            .expect("step succeeds");
        assert_eq!(
            json,
            json!({"text": "# Title\nbody", "bytes": 12, "media_type": "text/markdown"})
        );
        assert!(blobs.is_empty());
    }

    #[test]
    fn counts_bytes_not_characters() {
        let blob = Blob::new("document", "text/plain", "héllo");
        let (json, _) = run::<ReadText>(&TestContext::new().build(), json!(null), vec![blob])
            .expect("step succeeds");
        assert_eq!(json["bytes"], 6);
    }

    #[test]
    fn config_selects_another_blob() {
        let blobs = vec![
            Blob::new("document", "text/plain", "wrong"),
            Blob::new("notes", "text/plain", "right"),
        ];
        let ctx = TestContext::new().config("blob", "notes").build();
        let (json, _) = run::<ReadText>(&ctx, json!({}), blobs).expect("step succeeds");
        assert_eq!(json["text"], "right");
    }

    #[test]
    fn missing_blob_is_fatal_and_lists_present_blobs() {
        let blob = Blob::new("image", "image/png", vec![0x89]);
        let error = run::<ReadText>(&TestContext::new().build(), json!({}), vec![blob])
            .expect_err("no document blob");
        assert!(!error.is_retryable());
        assert!(error.message().contains("`document`"), "{error}");
        assert!(error.message().contains("`image`"), "{error}");
    }

    #[test]
    fn invalid_utf8_is_fatal_and_names_the_offset() {
        let blob = Blob::new("document", "text/plain", b"abc\xc3\x28".to_vec());
        let error = run::<ReadText>(&TestContext::new().build(), json!({}), vec![blob])
            .expect_err("not UTF-8");
        assert!(!error.is_retryable());
        assert!(error.message().contains("byte offset 3"), "{error}");
        assert_eq!(error.details().expect("details")["offset"], 3);
    }
}
