//! PDFs: the text layer read directly (pure Rust, with `lopdf`), and the
//! page images of a scanned PDF for OCR.

use std::collections::BTreeMap;

use image::RgbImage;
use lopdf::content::Content;
use lopdf::{Document, Encoding, Object};
use plait_sdk::StepError;

/// Decompressed page content accepted per page: a bound on what a small,
/// hostile PDF can inflate into.
pub const MAX_PAGE_CONTENT: usize = 32 * 1024 * 1024;
/// Pages read at most.
pub const MAX_PAGES: usize = 500;

/// One page of a PDF.
#[derive(Debug, Default)]
pub struct PdfPage {
    /// The text layer's lines, in content order.
    pub lines: Vec<String>,
    /// The images drawn on the page that could be decoded, largest first.
    pub images: Vec<RgbImage>,
}

impl PdfPage {
    /// Whether the page has a text layer worth reading.
    pub fn has_text(&self) -> bool {
        self.lines.iter().any(|line| !line.trim().is_empty())
    }
}

/// Reads every page of the PDF in `bytes`. Images are decoded only on
/// pages without text (`decode_images_of(page)` decides).
///
/// # Errors
///
/// A fatal error when the file is not a readable PDF or is encrypted.
pub fn read(bytes: &[u8]) -> Result<Vec<PdfPage>, StepError> {
    let document = Document::load_mem(bytes).map_err(|error| {
        StepError::fatal(format!("the document is not a readable PDF: {error}"))
    })?;
    if document.is_encrypted() {
        return Err(StepError::fatal(
            "the PDF is encrypted; decrypt it before sending it to the ocr step",
        ));
    }
    let pages = document.get_pages();
    if pages.len() > MAX_PAGES {
        return Err(StepError::fatal(format!(
            "the PDF has {} pages; the ocr step reads at most {MAX_PAGES}",
            pages.len()
        )));
    }
    let mut read = Vec::new();
    for (number, page_id) in pages {
        let lines = text_lines(&document, page_id).map_err(|error| {
            StepError::fatal(format!(
                "could not read the text of PDF page {number}: {error}"
            ))
        })?;
        let mut page = PdfPage {
            lines,
            images: Vec::new(),
        };
        if !page.has_text() {
            page.images = images(&document, page_id)?;
        }
        read.push(page);
    }
    Ok(read)
}

fn text_lines(document: &Document, page_id: lopdf::ObjectId) -> lopdf::Result<Vec<String>> {
    let encodings: BTreeMap<Vec<u8>, Encoding> = document
        .get_page_fonts(page_id)?
        .into_iter()
        .filter_map(|(name, font)| {
            font.get_font_encoding_with_limit(document, MAX_PAGE_CONTENT)
                .ok()
                .map(|encoding| (name, encoding))
        })
        .collect();
    let content = document.get_page_content_with_limit(page_id, MAX_PAGE_CONTENT)?;
    let content = Content::decode(&content)?;
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut encoding = None;
    let mut y: Option<f32> = None;
    let number = |object: &Object| {
        object
            .as_float()
            .ok()
            .or_else(|| object.as_i64().ok().map(|n| n as f32))
    };
    let new_line = |current: &mut String, lines: &mut Vec<String>| {
        if !current.trim().is_empty() {
            lines.push(current.trim().to_owned());
        }
        current.clear();
    };
    for operation in &content.operations {
        let operands = &operation.operands;
        match operation.operator.as_str() {
            "Tf" => {
                encoding = operands
                    .first()
                    .and_then(|name| name.as_name().ok())
                    .and_then(|name| encodings.get(name));
            }
            "Tm" => {
                let next = operands.get(5).and_then(number);
                if next.is_some() && y.zip(next).is_none_or(|(a, b)| (a - b).abs() > 1.0) {
                    new_line(&mut current, &mut lines);
                }
                y = next.or(y);
            }
            "Td" | "TD" => {
                let dy = operands.get(1).and_then(number).unwrap_or(0.0);
                if dy.abs() > 1.0 {
                    new_line(&mut current, &mut lines);
                }
                y = y.map(|y| y + dy);
            }
            "T*" | "ET" => new_line(&mut current, &mut lines),
            "'" | "\"" => {
                new_line(&mut current, &mut lines);
                if let (Some(encoding), Some(Object::String(bytes, _))) =
                    (encoding, operands.last())
                {
                    current.push_str(&Document::decode_text(encoding, bytes).unwrap_or_default());
                }
            }
            "Tj" | "TJ" => {
                let Some(encoding) = encoding else { continue };
                for operand in operands {
                    match operand {
                        Object::String(bytes, _) => {
                            current.push_str(
                                &Document::decode_text(encoding, bytes).unwrap_or_default(),
                            );
                        }
                        Object::Array(items) => {
                            for item in items {
                                match item {
                                    Object::String(bytes, _) => current.push_str(
                                        &Document::decode_text(encoding, bytes).unwrap_or_default(),
                                    ),
                                    // A large negative kern is a word gap.
                                    other => {
                                        if number(other).is_some_and(|n| n < -200.0)
                                            && !current.ends_with(' ')
                                        {
                                            current.push(' ');
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    new_line(&mut current, &mut lines);
    Ok(lines)
}

/// The page's images that decode: JPEG (`DCTDecode`) and 8-bit grey or RGB
/// (raw or `FlateDecode`), largest first.
fn images(document: &Document, page_id: lopdf::ObjectId) -> Result<Vec<RgbImage>, StepError> {
    let Ok(found) = document.get_page_images(page_id) else {
        return Ok(Vec::new());
    };
    let mut images = Vec::new();
    for image in found {
        let filters = image.filters.clone().unwrap_or_default();
        let (Ok(width), Ok(height)) = (u32::try_from(image.width), u32::try_from(image.height))
        else {
            continue;
        };
        if width > super::MAX_SIDE || height > super::MAX_SIDE {
            return Err(StepError::fatal(format!(
                "a PDF page image is {width}x{height}; the ocr step reads images up to {} pixels a side",
                super::MAX_SIDE
            )));
        }
        let decoded = match filters.as_slice() {
            [filter] if filter == "DCTDecode" => {
                super::decode_image(image::ImageFormat::Jpeg, image.content).ok()
            }
            [] | [_] if image.bits_per_component == Some(8) => {
                let raw = if filters.is_empty() {
                    Some(image.content.to_vec())
                } else if filters[0] == "FlateDecode" {
                    lopdf::Stream::new(image.origin_dict.clone(), image.content.to_vec())
                        .decompressed_content_with_limit(MAX_PAGE_CONTENT)
                        .ok()
                } else {
                    None
                };
                raw.and_then(|raw| match image.color_space.as_deref() {
                    Some("DeviceGray") => image::GrayImage::from_raw(width, height, raw)
                        .map(|grey| image::DynamicImage::ImageLuma8(grey).to_rgb8()),
                    Some("DeviceRGB") => RgbImage::from_raw(width, height, raw),
                    _ => None,
                })
            }
            _ => None,
        };
        images.extend(decoded);
    }
    images.sort_by_key(|image| std::cmp::Reverse(image.width() * image.height()));
    Ok(images)
}
