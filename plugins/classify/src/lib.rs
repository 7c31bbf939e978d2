//! `classify`: a Plait step that puts a text into one of the labels its
//! workflow gives, with a confidence and a score per label.
//!
//! Mode `llm` asks an OpenAI-compatible chat-completions endpoint (OpenAI,
//! a local llama.cpp or vLLM server, …) through `wasi:http`: only a host the
//! workflow grants and the operator's policy allows can be reached, and the
//! API key comes from the granted secret `api_key`. Mode `local` runs
//! offline: the all-MiniLM-L6-v2 sentence-embedding model (run by the host,
//! granted as `models: [all-minilm-l6-v2-int8]`) embeds the text and every
//! label's description, and the cosine similarities, softened by a
//! temperature, become the scores (zero-shot classification).
//!
//! Input: `{"text": string}`, or the blob `text`. Output:
//! `{"label", "confidence", "scores": {label: score}, "mode", "model"}`.
//!
//! Failure rule (see [`reply_to_classification`] and
//! [`http_client::classify`]): an HTTP 5xx, 408 or 429 answer or a transport
//! failure is retryable; another 4xx, a host the workflow did not grant, or
//! a reply that is not a chat completion at all (a wrong `endpoint`) is
//! fatal; a completion whose answer is not the JSON asked for, or names a
//! label that was not offered, is retryable, since a model's next answer
//! may comply.

use std::collections::BTreeMap;
use std::time::Duration;

use http_client::{Request, classify as check_status, send};
use plait_ai::embed;
use plait_sdk::{Context, Input, Output, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The secret holding the endpoint's API key.
pub const API_KEY_SECRET: &str = "api_key";

/// The input blob read in preference to the document's `text`.
pub const TEXT_BLOB: &str = "text";

/// Characters of text sent when `max_chars` is not set.
pub const DEFAULT_MAX_CHARS: usize = 8_000;

/// The user message when `prompt` is not set; `{labels}` and `{text}` are
/// replaced.
pub const DEFAULT_PROMPT: &str = "Classify the document below into exactly one of these labels:\n\
{labels}\n\nDocument:\n\"\"\"\n{text}\n\"\"\"";

/// The system message: the answer's format.
pub const SYSTEM_PROMPT: &str = "You classify documents. Answer with one JSON object and nothing else, \
in this form: {\"label\": \"<one of the labels>\", \"confidence\": <a number from 0 to 1>, \
\"scores\": {\"<label>\": <a number from 0 to 1>, ...}}";

/// The `classify` step.
pub struct Classify;

/// The input document.
#[derive(Debug, Default, Deserialize)]
pub struct ClassifyInput {
    /// The text to classify, read when there is no blob `text`.
    #[serde(default)]
    pub text: Option<String>,
}

/// The output document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The chosen label.
    pub label: String,
    /// How sure the classifier is, 0 to 1.
    pub confidence: f64,
    /// A score per offered label, 0 to 1, summing to 1.
    pub scores: BTreeMap<String, f64>,
    /// `llm` or `local`.
    pub mode: String,
    /// The model that answered.
    pub model: String,
    /// Whether the confidence is below config `review_below`, so that a
    /// person should check the label (always false without that config).
    #[serde(default)]
    pub needs_review: bool,
}

impl Step for Classify {
    type Input = ClassifyInput;
    type Output = Classification;

    fn info() -> StepInfo {
        StepInfo::new("classify", env!("CARGO_PKG_VERSION"))
            .description(
                "Puts a text into one of the labels the workflow gives, with a confidence: \
                 offline with sentence embeddings (mode `local`), or through an \
                 OpenAI-compatible chat-completions endpoint (mode `llm`).",
            )
            .config("mode", "`local` or `llm`.", true)
            .config(
                "labels",
                "The labels, as a JSON object of label to description, e.g. {\"invoice\": \"a bill asking for payment\"}.",
                true,
            )
            .config("endpoint", "The API base URL, e.g. `https://api.openai.com/v1`.", false)
            .config("model", "The model name the endpoint expects.", false)
            .config("prompt", "The user message; `{labels}` and `{text}` are replaced.", false)
            .config("max_chars", "Characters of text sent at most (default 8000).", false)
            .config("timeout_ms", "Connect and first-byte timeout in ms (default 30000).", false)
            .config(
                "temperature",
                "Mode `local`: the softmax temperature turning similarities into scores (default 0.05).",
                false,
            )
            .config(
                "max_tokens",
                "Mode `local`: tokens of the text embedded, at most 256 (default 128).",
                false,
            )
            .config(
                "review_below",
                "A confidence (0 to 1) below which the output sets `needs_review`.",
                false,
            )
            .model(embed::MODEL)
            .secret(API_KEY_SECRET)
            .outbound_http("https://*:*")
            .outbound_http("http://*:*")
    }

    fn run(
        ctx: &Context,
        input: Input<ClassifyInput>,
    ) -> Result<Output<Classification>, StepError> {
        let text = match input.blobs.get(TEXT_BLOB) {
            Some(blob) => blob.text()?.to_owned(),
            None => input.data.text.ok_or_else(|| {
                StepError::fatal("no text to classify: give `{\"text\": ...}` or a blob `text`")
            })?,
        };
        let labels = labels(&ctx.require_config("labels")?)?;
        match ctx.require_config("mode")?.as_str() {
            "llm" => {}
            "local" => return review(ctx, local(ctx, &text, &labels)?).map(Output::from),
            other => {
                return Err(StepError::fatal(format!(
                    "config `mode`: `{other}` is neither `local` nor `llm`"
                )));
            }
        }
        let endpoint = ctx.require_config("endpoint")?;
        let model = ctx.require_config("model")?;
        let max_chars = ctx
            .config_parsed::<usize>("max_chars")?
            .unwrap_or(DEFAULT_MAX_CHARS);
        let prompt = ctx
            .config("prompt")
            .unwrap_or_else(|| DEFAULT_PROMPT.to_owned());
        let timeout =
            Duration::from_millis(ctx.config_parsed::<u64>("timeout_ms")?.unwrap_or(30_000));
        let request = chat_request(
            &endpoint,
            &model,
            &prompt,
            &labels,
            &text,
            max_chars,
            ctx.config(API_KEY_SECRET).as_deref(),
            timeout,
        )?;
        let response = send(&request)?;
        check_status(&request, &response)?;
        let reply: Value = serde_json::from_slice(&response.body)
            .map_err(|_| not_a_completion(&endpoint, &String::from_utf8_lossy(&response.body)))?;
        let classification = review(
            ctx,
            reply_to_classification(&reply, &labels, &model, &endpoint)?,
        )?;
        ctx.info(&format!(
            "classified as {} ({:.2})",
            classification.label, classification.confidence
        ));
        Ok(classification.into())
    }
}

/// Sets `needs_review` by config `review_below`.
fn review(ctx: &Context, mut classification: Classification) -> Result<Classification, StepError> {
    if let Some(threshold) = ctx.config_parsed::<f64>("review_below")? {
        classification.needs_review = classification.confidence < threshold;
        if classification.needs_review {
            ctx.warn(&format!(
                "confidence {:.2} is below review_below {threshold}: a person should check the label",
                classification.confidence
            ));
        }
    }
    Ok(classification)
}

/// Mode `local`: zero-shot classification by sentence embeddings.
fn local(
    ctx: &Context,
    text: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Classification, StepError> {
    let temperature = ctx
        .config_parsed::<f32>("temperature")?
        .unwrap_or(DEFAULT_TEMPERATURE);
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(StepError::fatal(
            "config `temperature` must be a number above 0",
        ));
    }
    let max_tokens = ctx
        .config_parsed::<usize>("max_tokens")?
        .unwrap_or(embed::DEFAULT_MAX_TOKENS);
    let embedder = embed::Embedder::new(ctx.load_model(embed::MODEL)?, max_tokens)?;
    let classification = zero_shot(&embedder, text, labels, temperature)?;
    ctx.info(&format!(
        "classified as {} ({:.2})",
        classification.label, classification.confidence
    ));
    Ok(classification)
}

/// The softmax temperature of mode `local` when config sets none: cosine
/// similarities of MiniLM embeddings differ by a few hundredths between a
/// right and a wrong label, which this spreads into usable confidences.
pub const DEFAULT_TEMPERATURE: f32 = 0.05;

/// Classifies `text` by the similarity of its embedding to each label's
/// (`label: description`, or the label alone).
///
/// # Errors
///
/// A fatal error when the model fails.
pub fn zero_shot(
    embedder: &embed::Embedder,
    text: &str,
    labels: &BTreeMap<String, String>,
    temperature: f32,
) -> Result<Classification, StepError> {
    let labelled: Vec<(&str, &str)> = labels
        .iter()
        .map(|(label, description)| (label.as_str(), description.as_str()))
        .collect();
    let probabilities = embed::zero_shot(embedder, text, &labelled, temperature)?;
    let (best, confidence) =
        probabilities
            .iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |(bi, bp), (i, &p)| if p > bp { (i, p) } else { (bi, bp) },
            );
    let round = |p: f32| (f64::from(p) * 10_000.0).round() / 10_000.0;
    Ok(Classification {
        label: labels.keys().nth(best).cloned().unwrap_or_default(),
        confidence: round(confidence),
        scores: labels
            .keys()
            .cloned()
            .zip(probabilities.iter().map(|&p| round(p)))
            .collect(),
        mode: "local".to_owned(),
        model: embed::MODEL.to_owned(),
        needs_review: false,
    })
}

/// Parses config `labels`: a JSON object of label to description (or a
/// list of labels).
///
/// # Errors
///
/// A fatal error when it is neither, or has fewer than two labels.
pub fn labels(text: &str) -> Result<BTreeMap<String, String>, StepError> {
    let parsed: Result<BTreeMap<String, String>, _> = serde_json::from_str(text);
    let labels = match parsed {
        Ok(labels) => labels,
        Err(_) => serde_json::from_str::<Vec<String>>(text)
            .map(|list| list.into_iter().map(|l| (l, String::new())).collect())
            .map_err(|error| {
                StepError::fatal(format!(
                    "config `labels` must be a JSON object of label to description, like \
                     {{\"invoice\": \"a bill asking for payment\", \"letter\": \"correspondence\"}}: {error}"
                ))
            })?,
    };
    if labels.len() < 2 {
        return Err(StepError::fatal(
            "config `labels` needs at least two labels to choose between",
        ));
    }
    Ok(labels)
}

/// The chat-completions request for `text`.
///
/// # Errors
///
/// A fatal error for an invalid `endpoint`.
#[allow(clippy::too_many_arguments)]
pub fn chat_request(
    endpoint: &str,
    model: &str,
    prompt: &str,
    labels: &BTreeMap<String, String>,
    text: &str,
    max_chars: usize,
    api_key: Option<&str>,
    timeout: Duration,
) -> Result<Request, StepError> {
    let url = format!("{}/chat/completions", endpoint.trim_end_matches('/'));
    http_client::parse_url(&url)?;
    let listed: Vec<String> = labels
        .iter()
        .map(|(label, description)| {
            if description.is_empty() {
                format!("- {label}")
            } else {
                format!("- {label}: {description}")
            }
        })
        .collect();
    let text: String = text.chars().take(max_chars).collect();
    let user = prompt
        .replace("{labels}", &listed.join("\n"))
        .replace("{text}", &text);
    let body = json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
    });
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(key) = api_key {
        headers.push(("authorization".to_owned(), format!("Bearer {key}")));
    }
    Ok(Request {
        method: "POST".to_owned(),
        url,
        headers,
        body: Some(serde_json::to_vec(&body).expect("JSON serializes")),
        timeout,
    })
}

fn not_a_completion(endpoint: &str, body: &str) -> StepError {
    let start: String = body.chars().take(300).collect();
    StepError::fatal(format!(
        "`{endpoint}/chat/completions` did not answer with a chat completion; is `endpoint` an \
         OpenAI-compatible API base URL (ending in `/v1`)?"
    ))
    .with_details(json!({"reply": start}))
}

/// Reads the model's answer out of a chat-completions reply.
///
/// # Errors
///
/// Fatal when `reply` has no `choices[0].message.content` (not a chat
/// completion); retryable when the content is not the JSON asked for or
/// names a label that was not offered.
pub fn reply_to_classification(
    reply: &Value,
    labels: &BTreeMap<String, String>,
    model: &str,
    endpoint: &str,
) -> Result<Classification, StepError> {
    let content = reply
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| not_a_completion(endpoint, &reply.to_string()))?;
    let retry = |why: &str| {
        StepError::retryable(format!(
            "the model's answer {why}; a retry may get a usable one"
        ))
        .with_details(json!({"answer": content.chars().take(500).collect::<String>()}))
    };
    let object = match (content.find('{'), content.rfind('}')) {
        (Some(start), Some(end)) if start < end => &content[start..=end],
        _ => return Err(retry("holds no JSON object")),
    };
    let answer: Value = serde_json::from_str(object).map_err(|_| retry("is not valid JSON"))?;
    let canonical = |name: &str| {
        labels
            .keys()
            .find(|label| label.eq_ignore_ascii_case(name.trim()))
            .cloned()
    };
    let label = answer
        .get("label")
        .and_then(Value::as_str)
        .ok_or_else(|| retry("has no `label`"))?;
    let label = canonical(label).ok_or_else(|| {
        retry(&format!(
            "names the label `{label}`, which is not one of {}",
            labels.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let confidence = answer
        .get("confidence")
        .and_then(Value::as_f64)
        .unwrap_or(1.0)
        .clamp(0.0, 1.0);
    // Scores: the model's when it gave them for the offered labels,
    // normalised to sum to 1; otherwise the confidence for the label and
    // the rest shared out.
    let mut scores: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(given) = answer.get("scores").and_then(Value::as_object) {
        for (name, score) in given {
            if let (Some(name), Some(score)) = (canonical(name), score.as_f64()) {
                scores.insert(name, score.max(0.0));
            }
        }
    }
    let total: f64 = scores.values().sum();
    if scores.len() == labels.len() && total > 0.0 {
        scores.values_mut().for_each(|score| *score /= total);
    } else {
        let rest = (1.0 - confidence) / (labels.len() - 1) as f64;
        scores = labels
            .keys()
            .map(|name| (name.clone(), if *name == label { confidence } else { rest }))
            .collect();
    }
    Ok(Classification {
        needs_review: false,
        label,
        confidence,
        scores,
        mode: "llm".to_owned(),
        model: reply
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_owned(),
    })
}

plait_sdk::export_step!(Classify);

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> BTreeMap<String, String> {
        labels(
            r#"{"invoice": "a bill", "letter": "correspondence", "receipt": "proof of payment"}"#,
        )
        .unwrap()
    }

    fn completion(content: &str) -> Value {
        json!({"model": "m-1", "choices": [{"message": {"role": "assistant", "content": content}}]})
    }

    #[test]
    fn an_answer_with_scores_is_read_and_normalised() {
        let reply = completion(
            "```json\n{\"label\": \"Invoice\", \"confidence\": 0.9, \"scores\": {\"invoice\": 0.9, \"letter\": 0.05, \"receipt\": 0.15}}\n```",
        );
        let c = reply_to_classification(&reply, &offered(), "m", "e").unwrap();
        assert_eq!(c.label, "invoice");
        assert!((c.confidence - 0.9).abs() < 1e-9);
        assert!((c.scores.values().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((c.scores["invoice"] - 0.9 / 1.1).abs() < 1e-9);
        assert_eq!(c.model, "m-1");
    }

    #[test]
    fn without_scores_the_rest_is_shared_out() {
        let c = reply_to_classification(
            &completion(r#"{"label": "letter", "confidence": 0.6}"#),
            &offered(),
            "m",
            "e",
        )
        .unwrap();
        assert!((c.scores["letter"] - 0.6).abs() < 1e-9);
        assert!((c.scores["invoice"] - 0.2).abs() < 1e-9);
    }

    #[test]
    fn unusable_answers_are_retryable_and_non_completions_fatal() {
        for content in [
            "I think it is an invoice.",
            "{not json}",
            r#"{"label": "memo"}"#,
            r#"{"confidence": 1}"#,
        ] {
            let error =
                reply_to_classification(&completion(content), &offered(), "m", "e").unwrap_err();
            assert!(error.is_retryable(), "{content}: {}", error.message());
        }
        let error =
            reply_to_classification(&json!({"error": "nope"}), &offered(), "m", "https://x/v1")
                .unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error.message().contains("OpenAI-compatible"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn the_request_carries_the_labels_the_text_and_the_key() {
        let request = chat_request(
            "https://llm.example.com/v1/",
            "small-model",
            DEFAULT_PROMPT,
            &offered(),
            "Invoice 42, total 1,250.00 EUR",
            10,
            Some("sk-1"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(request.url, "https://llm.example.com/v1/chat/completions");
        let body: Value = serde_json::from_slice(request.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["model"], "small-model");
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(
            user.contains("- invoice: a bill") && user.contains("Invoice 42"),
            "{user}"
        );
        assert!(!user.contains("1,250"), "max_chars cuts the text: {user}");
        assert!(
            request
                .headers
                .contains(&("authorization".into(), "Bearer sk-1".into()))
        );
    }

    #[test]
    fn labels_take_an_object_or_a_list_and_need_two() {
        assert_eq!(labels(r#"["a", "b"]"#).unwrap().len(), 2);
        assert!(labels(r#"["a"]"#).is_err());
        assert!(
            labels("invoice, letter")
                .unwrap_err()
                .message()
                .contains("JSON object")
        );
    }
}
