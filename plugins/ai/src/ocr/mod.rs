//! OCR with PaddleOCR's PP-OCR models: text detection (DB) finds the text
//! regions of a page, text recognition (CTC) reads each one.
//!
//! [`Ocr::page`] runs both on one image; [`document`] picks the path for a
//! file: an image is OCR'd, a PDF with a text layer gives its text directly
//! and a scanned PDF has its page images OCR'd.

mod det;
pub mod pdf;
mod rec;

use image::RgbImage;
use plait_sdk::StepError;
use plait_sdk::inference::Model;
use serde::Serialize;

pub use det::DetConfig;
pub use rec::Charset;

/// The detection model's name in the model store.
pub const DET_MODEL: &str = "ppocrv6-tiny-det";
/// The recognition model's name in the model store.
pub const REC_MODEL: &str = "ppocrv6-tiny-rec";
/// The file beside both models holding their settings (and the
/// recognizer's character list).
pub const SETTINGS_FILE: &str = "inference.yml";

/// One line of text on a page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// The text read.
    pub text: String,
    /// The recognizer's mean character probability, 0 to 1.
    pub confidence: f32,
    /// `[x, y, width, height]` in the page image's pixels.
    pub bbox: [u32; 4],
}

/// The text of one page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The page image's width in pixels (0 for a text layer).
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// The lines, top to bottom.
    pub lines: Vec<Line>,
}

impl Page {
    /// The page's text: its lines joined by newlines.
    pub fn text(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(|line| line.text.as_str()).collect();
        lines.join("\n")
    }
}

/// The two models and their settings.
pub struct Ocr {
    det: Model,
    rec: Model,
    det_config: DetConfig,
    charset: Charset,
}

impl Ocr {
    /// Wraps loaded models, reading their settings files.
    ///
    /// # Errors
    ///
    /// A fatal error when a settings file is missing or unreadable.
    pub fn new(det: Model, rec: Model) -> Result<Ocr, StepError> {
        let det_settings = settings(&det, DET_MODEL)?;
        let rec_settings = settings(&rec, REC_MODEL)?;
        Ok(Ocr {
            det_config: DetConfig::parse(&det_settings),
            charset: Charset::parse(&rec_settings)?,
            det,
            rec,
        })
    }

    /// Reads the text on `image`.
    ///
    /// # Errors
    ///
    /// A fatal error when a model fails.
    pub fn page(&self, image: &RgbImage) -> Result<Page, StepError> {
        let regions = det::detect(&self.det, &self.det_config, image)?;
        let mut lines = Vec::new();
        for row in det::rows(regions) {
            let mut parts: Vec<(String, f32)> = Vec::new();
            for region in &row {
                let (text, confidence) = rec::recognize(&self.rec, &self.charset, image, region)?;
                if !text.is_empty() {
                    parts.push((text, confidence));
                }
            }
            if parts.is_empty() {
                continue;
            }
            let confidence = parts.iter().map(|(_, c)| c).sum::<f32>() / parts.len() as f32;
            let text = parts
                .into_iter()
                .map(|(text, _)| text)
                .collect::<Vec<_>>()
                .join(" ");
            lines.push(Line {
                text,
                confidence,
                bbox: det::union(&row),
            });
        }
        Ok(Page {
            width: image.width(),
            height: image.height(),
            lines,
        })
    }
}

fn settings(model: &Model, name: &str) -> Result<String, StepError> {
    let bytes = model.read_file(SETTINGS_FILE)?;
    String::from_utf8(bytes).map_err(|_| {
        StepError::fatal(format!(
            "`{SETTINGS_FILE}` of model `{name}` is not UTF-8; run `scripts/models --check`"
        ))
    })
}

/// What a file is, by its media type or, failing that, its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A PDF.
    Pdf,
    /// A PNG, JPEG or TIFF image.
    Image(image::ImageFormat),
}

/// Recognizes the document's kind.
///
/// # Errors
///
/// A fatal error naming the supported kinds.
pub fn kind(media_type: &str, bytes: &[u8]) -> Result<Kind, StepError> {
    if bytes.starts_with(b"%PDF-") || media_type == "application/pdf" {
        return Ok(Kind::Pdf);
    }
    match image::guess_format(bytes) {
        Ok(
            format
            @ (image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::Tiff),
        ) => Ok(Kind::Image(format)),
        _ => Err(StepError::fatal(format!(
            "the document (media type `{media_type}`) is not a PNG, JPEG, TIFF or PDF file"
        ))),
    }
}

/// Decodes an image file to RGB.
///
/// # Errors
///
/// A fatal error when the bytes do not decode.
pub fn decode_image(format: image::ImageFormat, bytes: &[u8]) -> Result<RgbImage, StepError> {
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // Bound what a hostile file can make the decoder allocate (the
    // step's memory limit would stop it anyway, as a trap).
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let image = reader.decode().map_err(|error| {
        StepError::fatal(format!("could not decode the {format:?} image: {error}"))
    })?;
    Ok(image.to_rgb8())
}

/// The longest side of an image the step accepts, in pixels.
pub const MAX_SIDE: u32 = 12_000;
