//! `normalize-text`: a Plait step that tidies text so that later steps see
//! consistent whitespace.
//!
//! Input: `{"text": string}`. Output: `{"text": string, "changed": bool}`
//! plus a blob `text` (`text/plain; charset=utf-8`) holding the normalized
//! text. See [`normalize`] for the exact rules.

use plait_sdk::{Blob, Context, Input, Output, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Name of the output blob holding the normalized text.
pub const TEXT_BLOB: &str = "text";

/// Media type of the output blob.
pub const TEXT_MEDIA_TYPE: &str = "text/plain; charset=utf-8";

/// The `normalize-text` step.
pub struct NormalizeText;

/// The input document.
#[derive(Debug, Deserialize)]
pub struct TextInput {
    /// The text to normalize.
    pub text: String,
}

/// The output document.
#[derive(Debug, Serialize)]
pub struct Normalized {
    /// The normalized text.
    pub text: String,
    /// Whether normalization changed anything.
    pub changed: bool,
}

/// Normalizes `text`:
///
/// 1. line endings `\r\n` and `\r` become `\n`;
/// 2. control characters other than `\n` and `\t`, and the byte-order mark
///    U+FEFF, are removed;
/// 3. within each line, every run of whitespace becomes one space, and
///    leading and trailing whitespace is removed;
/// 4. three or more consecutive newlines become two, so paragraphs stay
///    separated by at most one blank line;
/// 5. the whole text is trimmed;
/// 6. with `lowercase`, the text is lowercased.
pub fn normalize(text: &str, lowercase: bool) -> String {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(unified.len());
    let mut pending_newlines = 0usize;
    for line in unified.split('\n') {
        let words: Vec<String> = line
            .split(char::is_whitespace)
            .map(strip_invisible)
            .filter(|word| !word.is_empty())
            .collect();
        if words.is_empty() {
            // A blank (or whitespace-only) line only widens the gap before
            // the next line with content.
            pending_newlines += 1;
            continue;
        }
        if !out.is_empty() {
            out.extend(std::iter::repeat_n('\n', pending_newlines.min(2)));
        }
        pending_newlines = 1;
        out.push_str(&words.join(" "));
    }
    if lowercase { out.to_lowercase() } else { out }
}

/// Removes control characters (except the `\n` and `\t` handled as
/// whitespace) and byte-order marks from one whitespace-free word.
fn strip_invisible(word: &str) -> String {
    word.chars()
        .filter(|&c| !c.is_control() && c != '\u{feff}')
        .collect()
}

impl Step for NormalizeText {
    type Input = TextInput;
    type Output = Normalized;

    fn info() -> StepInfo {
        StepInfo::new("normalize-text", env!("CARGO_PKG_VERSION"))
            .description(
                "Trims text, collapses runs of whitespace within lines and runs of blank \
                 lines, and strips control characters; optionally lowercases it.",
            )
            .input_schema(json!({
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}},
            }))
            .output_schema(json!({
                "type": "object",
                "required": ["text", "changed"],
                "properties": {
                    "text": {"type": "string"},
                    "changed": {"type": "boolean"},
                },
            }))
            .config(
                "lowercase",
                "`true` to also lowercase the text; `false` when unset.",
                false,
            )
    }

    fn run(ctx: &Context, input: Input<TextInput>) -> Result<Output<Normalized>, StepError> {
        let lowercase = ctx.config_parsed::<bool>("lowercase")?.unwrap_or(false);
        let text = normalize(&input.data.text, lowercase);
        let changed = text != input.data.text;
        let blob = Blob::new(TEXT_BLOB, TEXT_MEDIA_TYPE, text.clone());
        Ok(Output::new(Normalized { text, changed }).with_blob(blob))
    }
}

plait_sdk::export_step!(NormalizeText);

#[cfg(test)]
mod tests {
    use super::*;
    use plait_sdk::testing::{TestContext, run};

    #[test]
    fn collapses_whitespace_within_lines_and_trims() {
        assert_eq!(normalize("  a \t b   c  \n  d  ", false), "a b c\nd");
    }

    #[test]
    fn collapses_three_or_more_newlines_to_two() {
        assert_eq!(normalize("a\n\n\n\nb\n\nc\nd", false), "a\n\nb\n\nc\nd");
        // Lines holding only whitespace count as blank.
        assert_eq!(normalize("a\n  \n\t\n \nb", false), "a\n\nb");
    }

    #[test]
    fn unifies_line_endings_and_strips_control_characters() {
        assert_eq!(normalize("a\r\nb\rc", false), "a\nb\nc");
        assert_eq!(
            normalize("\u{feff}he\u{0}llo\u{7}  w\u{1b}orld", false),
            "hello world"
        );
        assert_eq!(normalize("a \u{0} b", false), "a b");
    }

    #[test]
    fn handles_unicode_whitespace_and_empty_text() {
        assert_eq!(normalize("a\u{a0}\u{2003}b", false), "a b");
        assert_eq!(normalize("", false), "");
        assert_eq!(normalize(" \n\n\t ", false), "");
    }

    #[test]
    fn run_outputs_json_and_text_blob() {
        let (json, blobs) = run::<NormalizeText>(
            &TestContext::new().build(),
            json!({"text": "  Hello   World \n\n\n\nBye"}),
            vec![],
        )
        .expect("step succeeds");
        assert_eq!(json, json!({"text": "Hello World\n\nBye", "changed": true}));
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].name, "text");
        assert_eq!(blobs[0].media_type, "text/plain; charset=utf-8");
        assert_eq!(blobs[0].data, b"Hello World\n\nBye");
    }

    #[test]
    fn unchanged_text_reports_not_changed() {
        let (json, _) = run::<NormalizeText>(
            &TestContext::new().build(),
            json!({"text": "already tidy"}),
            vec![],
        )
        .expect("step succeeds");
        assert_eq!(json["changed"], false);
    }

    #[test]
    fn lowercase_config() {
        let ctx = TestContext::new().config("lowercase", "true").build();
        let (json, _) =
            run::<NormalizeText>(&ctx, json!({"text": "ÀB c"}), vec![]).expect("step succeeds");
        assert_eq!(json["text"], "àb c");

        let ctx = TestContext::new().config("lowercase", "yes").build();
        let error =
            run::<NormalizeText>(&ctx, json!({"text": "A"}), vec![]).expect_err("invalid boolean");
        assert!(!error.is_retryable());
        assert!(error.message().contains("`lowercase`"), "{error}");
    }

    #[test]
    fn missing_text_is_fatal() {
        let error = run::<NormalizeText>(&TestContext::new().build(), json!({}), vec![])
            .expect_err("no text");
        assert!(!error.is_retryable());
        assert!(error.message().contains("missing field `text`"), "{error}");
    }
}
