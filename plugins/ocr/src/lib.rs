//! `ocr`: a Plait step that extracts the text of a document.
//!
//! - An image (PNG, JPEG, TIFF) is read with PaddleOCR's PP-OCRv6 tiny
//!   models: detection finds the lines, recognition reads them.
//! - A PDF with a text layer gives that text directly, no OCR.
//! - A scanned PDF (pages that are only images) has each page's image OCR'd.
//!
//! The models run in the host through `plait:step/inference`, granted as
//! `models: [ppocrv6-tiny-det, ppocrv6-tiny-rec]`; the step decodes the
//! file, prepares the tensors and reads the results.
//!
//! Input: the blob `document` (config `blob` names another). Output:
//! `{"text", "confidence", "source", "pages": [{"page", "source", "width",
//! "height", "lines": [{"text", "confidence", "bbox"}]}]}` and the text as
//! the blob `text` (`text/plain`).

use plait_ai::ocr::{self, Kind, Ocr, Page, pdf};
use plait_sdk::{Blob, Context, Input, Output, Step, StepError, StepInfo};
use serde::Serialize;
use serde_json::{Value, json};

/// The input blob read when config `blob` is not set.
pub const DEFAULT_BLOB: &str = "document";

/// The `ocr` step.
pub struct OcrStep;

/// Where a page's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Read from the image by the models.
    Ocr,
    /// The PDF's own text layer.
    TextLayer,
    /// Both kinds of page in one PDF.
    Mixed,
}

/// One page of the result.
#[derive(Debug, Clone, Serialize)]
pub struct PageText {
    /// 1-based page number.
    pub page: usize,
    /// Where its text came from.
    pub source: Source,
    /// The page (or its image) as read.
    #[serde(flatten)]
    pub content: Page,
}

/// The output document.
#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    /// Every page's text, pages separated by a blank line.
    pub text: String,
    /// The mean confidence of the OCR'd lines (1 for a text layer).
    pub confidence: f32,
    /// Where the text came from.
    pub source: Source,
    /// Page by page.
    pub pages: Vec<PageText>,
}

impl Step for OcrStep {
    type Input = Value;
    type Output = Extracted;

    fn info() -> StepInfo {
        StepInfo::new("ocr", env!("CARGO_PKG_VERSION"))
            .description(
                "Extracts the text of an image (PNG, JPEG, TIFF) or PDF, with lines, boxes and \
                 confidences: PP-OCRv6 models run by the host, a PDF's text layer read directly.",
            )
            .config(
                "blob",
                "The input blob holding the document (default `document`).",
                false,
            )
            .output_schema(output_schema())
            .model(ocr::DET_MODEL)
            .model(ocr::REC_MODEL)
    }

    fn run(ctx: &Context, input: Input<Value>) -> Result<Output<Extracted>, StepError> {
        let name = ctx
            .config("blob")
            .unwrap_or_else(|| DEFAULT_BLOB.to_owned());
        let blob = input.blobs.get(&name).ok_or_else(|| {
            StepError::fatal(format!(
                "no blob `{name}` in the input: pass the document as blob `{name}` \
                 (for example `--file {name}=scan.png`)"
            ))
        })?;
        let extracted = extract(ctx, &blob.media_type, &blob.data)?;
        ctx.info(&format!(
            "{} page(s), {} line(s), source {:?}, confidence {:.2}",
            extracted.pages.len(),
            extracted
                .pages
                .iter()
                .map(|p| p.content.lines.len())
                .sum::<usize>(),
            extracted.source,
            extracted.confidence
        ));
        let text = Blob::new(
            "text",
            "text/plain; charset=utf-8",
            extracted.text.clone().into_bytes(),
        );
        Ok(Output::new(extracted).with_blob(text))
    }
}

fn models(ctx: &Context) -> Result<Ocr, StepError> {
    Ocr::new(
        ctx.load_model(ocr::DET_MODEL)?,
        ctx.load_model(ocr::REC_MODEL)?,
    )
}

/// Extracts the text of a document of `media_type`.
///
/// # Errors
///
/// A fatal error for an unsupported or corrupt file, or when a model fails.
pub fn extract(ctx: &Context, media_type: &str, bytes: &[u8]) -> Result<Extracted, StepError> {
    let pages = match ocr::kind(media_type, bytes)? {
        Kind::Image(format) => {
            let image = ocr::decode_image(format, bytes)?;
            vec![PageText {
                page: 1,
                source: Source::Ocr,
                content: models(ctx)?.page(&image)?,
            }]
        }
        Kind::Pdf => {
            let mut models_loaded: Option<Ocr> = None;
            let mut pages = Vec::new();
            for (index, page) in pdf::read(bytes)?.into_iter().enumerate() {
                let number = index + 1;
                if page.has_text() {
                    pages.push(PageText {
                        page: number,
                        source: Source::TextLayer,
                        content: Page {
                            width: 0,
                            height: 0,
                            lines: page
                                .lines
                                .into_iter()
                                .map(|text| ocr::Line {
                                    text,
                                    confidence: 1.0,
                                    bbox: [0; 4],
                                })
                                .collect(),
                        },
                    });
                } else if let Some(image) = page.images.first() {
                    if models_loaded.is_none() {
                        models_loaded = Some(models(ctx)?);
                    }
                    let models = models_loaded.as_ref().expect("loaded above");
                    pages.push(PageText {
                        page: number,
                        source: Source::Ocr,
                        content: models.page(image)?,
                    });
                } else {
                    ctx.warn(&format!(
                        "PDF page {number} has neither a text layer nor an image this step can decode"
                    ));
                }
            }
            pages
        }
    };
    Ok(summarize(pages))
}

fn summarize(pages: Vec<PageText>) -> Extracted {
    let text = pages
        .iter()
        .map(|page| page.content.text())
        .collect::<Vec<_>>()
        .join("\n\n");
    let lines: Vec<f32> = pages
        .iter()
        .flat_map(|page| page.content.lines.iter().map(|line| line.confidence))
        .collect();
    let confidence = if lines.is_empty() {
        0.0
    } else {
        lines.iter().sum::<f32>() / lines.len() as f32
    };
    let source = match (
        pages.iter().any(|p| p.source == Source::Ocr),
        pages.iter().any(|p| p.source == Source::TextLayer),
    ) {
        (true, true) => Source::Mixed,
        (false, true) => Source::TextLayer,
        _ => Source::Ocr,
    };
    Extracted {
        text,
        confidence,
        source,
        pages,
    }
}

/// The JSON Schema of the output, as `describe()` declares it.
pub fn output_schema() -> Value {
    json!({"type": "object", "required": ["text", "confidence", "source", "pages"]})
}

plait_sdk::export_step!(OcrStep);
