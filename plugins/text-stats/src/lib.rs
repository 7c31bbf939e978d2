//! `text-stats`: a Plait step that counts characters, words and lines in a
//! text and lists its most frequent words.
//!
//! Input: the blob `text` when present (as written by `normalize-text`),
//! otherwise the document's `{"text": string}`. Output:
//! `{"characters", "words", "lines", "top_words": [{"word", "count"}]}`.
//! See [`stats`] for how words are counted.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Name of the input blob read in preference to the document's `text`.
pub const TEXT_BLOB: &str = "text";

/// How many words `top_words` lists when config `top` is not set.
pub const DEFAULT_TOP: usize = 5;

/// The `text-stats` step.
pub struct TextStats;

/// The input document. `text` may be absent when the blob `text` is present.
#[derive(Debug, Default, Deserialize)]
pub struct StatsInput {
    /// The text to measure, read only when there is no blob `text`.
    #[serde(default)]
    pub text: Option<String>,
}

/// The output document.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Number of Unicode scalar values.
    pub characters: usize,
    /// Number of words.
    pub words: usize,
    /// Number of lines; a final line ending does not start another line.
    pub lines: usize,
    /// The most frequent lowercased words, most frequent first, ties in
    /// alphabetical order.
    pub top_words: Vec<WordCount>,
}

/// How often one word occurs.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct WordCount {
    /// The lowercased word.
    pub word: String,
    /// How many times it occurs.
    pub count: usize,
}

/// Measures `text` and lists its `top` most frequent words.
///
/// A word is a run of alphanumeric characters, possibly joined by
/// apostrophes (`don't`, `rock'n'roll`); everything else separates words.
/// Words are lowercased before counting, and ties are broken alphabetically,
/// so the result does not depend on anything but the text.
pub fn stats(text: &str, top: usize) -> Stats {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut words = 0;
    for word in words_of(text) {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut ranked: Vec<WordCount> = counts
        .into_iter()
        .map(|(word, count)| WordCount { word, count })
        .collect();
    // The map iterates alphabetically and the sort is stable, so equal
    // counts keep alphabetical order.
    ranked.sort_by_key(|entry| Reverse(entry.count));
    ranked.truncate(top);
    Stats {
        characters: text.chars().count(),
        words,
        lines: text.lines().count(),
        top_words: ranked,
    }
}

/// The words of `text`, as described on [`stats`].
fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || is_apostrophe(c)))
        .map(|token| token.trim_matches(is_apostrophe))
        .filter(|word| !word.is_empty())
}

/// ASCII and typographic apostrophes.
fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

impl Step for TextStats {
    type Input = StatsInput;
    type Output = Stats;

    fn info() -> StepInfo {
        StepInfo::new("text-stats", env!("CARGO_PKG_VERSION"))
            .description(
                "Counts characters, words and lines of a text (the blob `text`, or the \
                 document's `text`) and lists its most frequent words.",
            )
            .input_schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
            }))
            .output_schema(json!({
                "type": "object",
                "required": ["characters", "words", "lines", "top_words"],
                "properties": {
                    "characters": {"type": "integer", "minimum": 0},
                    "words": {"type": "integer", "minimum": 0},
                    "lines": {"type": "integer", "minimum": 0},
                    "top_words": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["word", "count"],
                            "properties": {
                                "word": {"type": "string"},
                                "count": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                },
            }))
            .config(
                "top",
                "How many of the most frequent words to list; 5 when unset.",
                false,
            )
    }

    fn run(ctx: &Context, input: Input<StatsInput>) -> Result<Output<Stats>, StepError> {
        let top = ctx.config_parsed::<usize>("top")?.unwrap_or(DEFAULT_TOP);
        let stats = match input.blobs.get(TEXT_BLOB) {
            Some(blob) => stats(blob.text()?, top),
            None => match &input.data.text {
                Some(text) => stats(text, top),
                None => {
                    return Err(StepError::fatal(
                        "no text to measure: the input has neither a blob `text` nor a \
                         string field `text`",
                    ));
                }
            },
        };
        Ok(stats.into())
    }
}

plait_sdk::export_step!(TextStats);

#[cfg(test)]
mod tests {
    use super::*;
    use plait_sdk::Blob;
    use plait_sdk::testing::{TestContext, run};

    #[test]
    fn counts_characters_words_and_lines() {
        let result = stats("Héllo, world!\nSecond line\n", 5);
        assert_eq!(result.characters, 26);
        assert_eq!(result.words, 4);
        assert_eq!(result.lines, 2);
    }

    #[test]
    fn ranks_lowercased_words_with_alphabetical_ties() {
        let result = stats("b a B c A d c' 'b don't", 3);
        let top: Vec<(&str, usize)> = result
            .top_words
            .iter()
            .map(|w| (w.word.as_str(), w.count))
            .collect();
        assert_eq!(top, [("b", 3), ("a", 2), ("c", 2)]);
        assert_eq!(result.words, 9);
        assert!(stats("don't", 1).top_words[0].word == "don't");
    }

    #[test]
    fn empty_text_has_no_words() {
        assert_eq!(
            stats("", 5),
            Stats {
                characters: 0,
                words: 0,
                lines: 0,
                top_words: vec![]
            }
        );
    }

    #[test]
    fn prefers_the_text_blob_over_the_document() {
        let blob = Blob::new("text", "text/plain; charset=utf-8", "one two two");
        let (json, _) = run::<TextStats>(
            &TestContext::new().build(),
            json!({"text": "ignored", "changed": true}),
            vec![blob],
        )
        .expect("step succeeds");
        assert_eq!(
            json,
            json!({
                "characters": 11,
                "words": 3,
                "lines": 1,
                "top_words": [{"word": "two", "count": 2}, {"word": "one", "count": 1}],
            })
        );
    }

    #[test]
    fn reads_the_document_text_and_honours_top() {
        let ctx = TestContext::new().config("top", "1").build();
        let (json, _) =
            run::<TextStats>(&ctx, json!({"text": "x y y"}), vec![]).expect("step succeeds");
        assert_eq!(json["top_words"], json!([{"word": "y", "count": 2}]));
    }

    #[test]
    fn no_text_is_fatal() {
        let error =
            run::<TextStats>(&TestContext::new().build(), json!({}), vec![]).expect_err("no text");
        assert!(!error.is_retryable());
        assert!(error.message().starts_with("no text to measure"), "{error}");
    }

    #[test]
    fn invalid_top_is_fatal() {
        let ctx = TestContext::new().config("top", "-1").build();
        let error = run::<TextStats>(&ctx, json!({"text": "a"}), vec![]).expect_err("bad top");
        assert!(error.message().contains("`top`"), "{error}");
    }
}
