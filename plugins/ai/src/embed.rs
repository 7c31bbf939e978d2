//! Sentence embeddings with all-MiniLM-L6-v2: tokenize, run the model in
//! the host, mean-pool the token vectors over the attention mask and
//! normalize, as sentence-transformers does. Zero-shot classification
//! compares a text's embedding with each label description's.

use plait_sdk::StepError;
use plait_sdk::inference::{Model, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

/// The model's name in the model store.
pub const MODEL: &str = "all-minilm-l6-v2-int8";
/// The tokenizer file beside it.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Sequence lengths a batch is padded to: one host plan each, instead of
/// one per text length (optimizing a plan costs about half a second).
pub const SEQ_BUCKETS: [usize; 5] = [16, 32, 64, 128, 256];
/// Tokens of a text embedded when the step does not say otherwise: the
/// model was trained on 128-token inputs, and a document's kind shows in
/// its beginning.
pub const DEFAULT_MAX_TOKENS: usize = 128;
/// Batch sizes a batch is padded to, for the same reason as [`SEQ_BUCKETS`].
pub const BATCH_BUCKETS: [usize; 4] = [1, 8, 16, 32];

/// A loaded embedding model with its tokenizer.
pub struct Embedder {
    model: Model,
    tokenizer: Tokenizer,
}

impl Embedder {
    /// Reads the tokenizer beside `model` and sets it to cut texts at
    /// `max_tokens` (at most the largest bucket) without fixed padding.
    ///
    /// # Errors
    ///
    /// A fatal error when the tokenizer is missing or invalid.
    pub fn new(model: Model, max_tokens: usize) -> Result<Embedder, StepError> {
        let bytes = model.read_file(TOKENIZER_FILE)?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|error| {
            StepError::fatal(format!(
                "`{TOKENIZER_FILE}` of model `{MODEL}` is not a valid tokenizer: {error}; \
                 run `scripts/models --check`"
            ))
        })?;
        let max_length = max_tokens.clamp(8, SEQ_BUCKETS[SEQ_BUCKETS.len() - 1]);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|error| StepError::fatal(format!("tokenizer truncation: {error}")))?;
        Ok(Embedder { model, tokenizer })
    }

    /// The unit-length embeddings of `texts`, in one model run.
    ///
    /// # Errors
    ///
    /// A fatal error when tokenizing or the model fails.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, StepError> {
        self.embed_at_most(texts, usize::MAX)
    }

    /// Like [`Embedder::embed`], each text cut to its first `max_tokens`
    /// tokens (the closing `[SEP]` kept): the start of a line is what says
    /// what kind of line it is, at a fraction of the cost.
    ///
    /// # Errors
    ///
    /// A fatal error when tokenizing or the model fails.
    pub fn embed_at_most(
        &self,
        texts: &[&str],
        max_tokens: usize,
    ) -> Result<Vec<Vec<f32>>, StepError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = texts
            .iter()
            .map(|text| self.tokenizer.encode(*text, true))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| StepError::fatal(format!("could not tokenize the text: {error}")))?;
        let max_tokens = max_tokens.max(2);
        let tokens: Vec<(Vec<u32>, Vec<u32>)> = encodings
            .iter()
            .map(|encoding| {
                let mut ids = encoding.get_ids().to_vec();
                let mut types = encoding.get_type_ids().to_vec();
                if ids.len() > max_tokens {
                    let (last_id, last_type) = (ids[ids.len() - 1], types[types.len() - 1]);
                    ids.truncate(max_tokens - 1);
                    types.truncate(max_tokens - 1);
                    ids.push(last_id);
                    types.push(last_type);
                }
                (ids, types)
            })
            .collect();
        let longest = tokens.iter().map(|(ids, _)| ids.len()).max().unwrap_or(1);
        let seq = SEQ_BUCKETS
            .into_iter()
            .find(|&bucket| bucket >= longest)
            .unwrap_or(SEQ_BUCKETS[SEQ_BUCKETS.len() - 1]);
        let rows = texts.len();
        let batch = BATCH_BUCKETS
            .into_iter()
            .find(|&bucket| bucket >= rows)
            .unwrap_or(rows);
        let mut ids = vec![0i64; batch * seq];
        let mut mask = vec![0i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        for (row, (row_ids, row_types)) in tokens.iter().enumerate() {
            for (column, (&id, &kind)) in row_ids.iter().zip(row_types).take(seq).enumerate() {
                ids[row * seq + column] = i64::from(id);
                mask[row * seq + column] = 1;
                types[row * seq + column] = i64::from(kind);
            }
        }
        let shape = [batch as u32, seq as u32];
        let inputs = self
            .model
            .inputs()
            .into_iter()
            .map(|name| {
                let values = match name.as_str() {
                    "input_ids" => ids.clone(),
                    "attention_mask" => mask.clone(),
                    "token_type_ids" => types.clone(),
                    other => {
                        return Err(StepError::fatal(format!(
                            "model `{MODEL}` has an unexpected input `{other}`"
                        )));
                    }
                };
                Ok(Tensor::i64(name, &shape, values))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self.model.run(inputs)?;
        let hidden = outputs
            .iter()
            .find(|output| output.shape.len() == 3)
            .ok_or_else(|| {
                StepError::fatal(format!("model `{MODEL}` returned no token vectors"))
            })?;
        let dim = hidden.shape[2] as usize;
        let values = hidden.as_f32()?;
        if values.len() != batch * seq * dim {
            return Err(StepError::fatal(format!(
                "model `{MODEL}` returned token vectors of shape {:?}",
                hidden.shape
            )));
        }
        Ok((0..rows)
            .map(|row| {
                let mut pooled = vec![0f32; dim];
                let mut count = 0f32;
                for column in 0..seq {
                    if mask[row * seq + column] == 1 {
                        let start = (row * seq + column) * dim;
                        for (sum, value) in pooled.iter_mut().zip(&values[start..start + dim]) {
                            *sum += value;
                        }
                        count += 1.0;
                    }
                }
                for value in &mut pooled {
                    *value /= count.max(1.0);
                }
                normalize(pooled)
            })
            .collect())
    }
}

fn normalize(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    for value in &mut vector {
        *value /= norm;
    }
    vector
}

/// Lines of a text compared with the labels one by one, at most.
pub const MAX_LINES: usize = 32;
/// Tokens of each line embedded: the start of a line (`Dear Ms`, `Total
/// due`, `Invoice number`) says what kind of line it is.
pub const LINE_TOKENS: usize = 16;

/// Zero-shot classification: the probability of each `(label,
/// description)` for `text`, in order.
///
/// Each label is embedded as `label: description` (or the label alone). A
/// label's similarity is the mean of its cosine similarity to the whole
/// text and its best one to a single line: the whole says what the text is
/// about, its most telling line (`Dear Ms Patel,`, `Total due: …`) what kind
/// of document it is. A [`softmax`] at `temperature` makes them
/// probabilities.
///
/// # Errors
///
/// A fatal error when the model fails.
pub fn zero_shot(
    embedder: &Embedder,
    text: &str,
    labels: &[(&str, &str)],
    temperature: f32,
) -> Result<Vec<f32>, StepError> {
    let prompts: Vec<String> = labels
        .iter()
        .map(|(label, description)| {
            if description.is_empty() {
                (*label).to_owned()
            } else {
                format!("{label}: {description}")
            }
        })
        .collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let label_vectors = embedder.embed(&prompts)?;
    let text_vector = embedder.embed(&[text])?.remove(0);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| line.chars().filter(|c| c.is_alphabetic()).count() >= 3)
        .take(MAX_LINES)
        .collect();
    let line_vectors = embedder.embed_at_most(&lines, LINE_TOKENS)?;
    let similarities: Vec<f32> = label_vectors
        .iter()
        .map(|label| {
            let whole = cosine(&text_vector, label);
            let best_line = line_vectors
                .iter()
                .map(|line| cosine(line, label))
                .fold(whole, f32::max);
            (whole + best_line) / 2.0
        })
        .collect();
    Ok(softmax(&similarities, temperature))
}

/// The cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Turns similarities into probabilities: a softmax at `temperature`
/// (smaller is sharper). Cosine similarities of sentence embeddings sit in
/// a narrow band, so a temperature well below 1 is what spreads them.
pub fn softmax(scores: &[f32], temperature: f32) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = scores
        .iter()
        .map(|s| ((s - max) / temperature.max(1e-6)).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_sharpens_with_lower_temperature() {
        let soft = softmax(&[0.5, 0.4], 1.0);
        let sharp = softmax(&[0.5, 0.4], 0.05);
        assert!((soft.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(sharp[0] > soft[0] && sharp[0] > 0.85, "{sharp:?}");
    }

    #[test]
    fn cosine_of_unit_vectors() {
        let a = normalize(vec![3.0, 4.0]);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert!(cosine(&a, &normalize(vec![-4.0, 3.0])).abs() < 1e-6);
    }
}
