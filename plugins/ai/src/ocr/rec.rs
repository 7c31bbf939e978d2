//! Text recognition: one region cropped, resized to the model's height,
//! read by greedy CTC decoding against the model's character list.

use image::{Rgb, RgbImage};
use plait_sdk::StepError;
use plait_sdk::inference::{Model, Tensor};

use super::det::Region;

/// The recognizer's input height.
pub const REC_HEIGHT: u32 = 48;
/// Input widths: a line is padded to the next one, so that the host
/// optimizes one plan per bucket instead of one per line width.
pub const WIDTH_BUCKETS: [u32; 10] = [160, 320, 480, 640, 960, 1280, 1600, 1920, 2560, 3200];

/// The recognizer's classes: index 0 is the CTC blank, then the
/// characters of `character_dict`, then a space.
#[derive(Debug, Clone, PartialEq)]
pub struct Charset {
    chars: Vec<String>,
}

impl Charset {
    /// Reads the `character_dict` list of the recognizer's `inference.yml`
    /// (plain and single-quoted YAML scalars, one per line).
    ///
    /// # Errors
    ///
    /// A fatal error when the file has no character list.
    pub fn parse(settings: &str) -> Result<Charset, StepError> {
        let mut lines = settings
            .lines()
            .skip_while(|line| line.trim() != "character_dict:");
        if lines.next().is_none() {
            return Err(StepError::fatal(
                "the recognition model's `inference.yml` has no `character_dict`; \
                 run `scripts/models --check`",
            ));
        }
        let mut chars = vec![String::new()];
        for line in lines {
            let Some(item) = line.trim_start().strip_prefix("- ") else {
                break;
            };
            let value = match item.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                Some(quoted) => quoted.replace("''", "'"),
                None => item.to_owned(),
            };
            chars.push(value);
        }
        chars.push(" ".to_owned());
        Ok(Charset { chars })
    }

    /// The number of classes, blank and space included.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the list is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Greedy CTC decoding of `probs` (`steps` rows of `len()` class
    /// probabilities): the best class per step, repeats merged, blanks
    /// dropped. Returns the text and the mean probability of its characters.
    pub fn decode(&self, probs: &[f32], steps: usize) -> (String, f32) {
        let classes = self.chars.len();
        let mut text = String::new();
        let (mut sum, mut count) = (0.0f32, 0usize);
        let mut previous = 0usize;
        for step in probs.chunks_exact(classes).take(steps) {
            let (best, p) =
                step.iter().enumerate().fold(
                    (0, f32::MIN),
                    |(bi, bp), (i, &p)| if p > bp { (i, p) } else { (bi, bp) },
                );
            if best != 0 && best != previous {
                text.push_str(&self.chars[best]);
                sum += p;
                count += 1;
            }
            previous = best;
        }
        let confidence = if count == 0 { 0.0 } else { sum / count as f32 };
        (text.trim().to_owned(), confidence)
    }
}

/// Reads the text in `region` of `image`.
pub fn recognize(
    model: &Model,
    charset: &Charset,
    image: &RgbImage,
    region: &Region,
) -> Result<(String, f32), StepError> {
    let [top_left, top_right, _, bottom_left] = region.corners;
    let length = |a: (f32, f32), b: (f32, f32)| ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
    let (w, h) = (
        length(top_left, top_right),
        length(top_left, bottom_left).max(1.0),
    );
    let max_width = WIDTH_BUCKETS[WIDTH_BUCKETS.len() - 1];
    let width = ((REC_HEIGHT as f32 * w / h).ceil() as u32).clamp(1, max_width);
    let bucket = WIDTH_BUCKETS
        .into_iter()
        .find(|&bucket| bucket >= width)
        .unwrap_or(max_width);
    let resized = straighten(image, region, width, REC_HEIGHT);
    let plane = (REC_HEIGHT * bucket) as usize;
    // Normalized to [-1, 1]; the padding on the right stays 0 (mid grey),
    // as PaddleOCR pads.
    let mut values = vec![0f32; 3 * plane];
    for (px, py, pixel) in resized.enumerate_pixels() {
        let index = (py * bucket + px) as usize;
        for channel in 0..3 {
            values[channel * plane + index] = f32::from(pixel[2 - channel]) / 127.5 - 1.0;
        }
    }
    let outputs = model.run(vec![Tensor::f32("x", &[1, 3, REC_HEIGHT, bucket], values)])?;
    let probs = outputs
        .first()
        .ok_or_else(|| StepError::fatal("the recognition model returned no output"))?;
    let classes = *probs.shape.last().unwrap_or(&0) as usize;
    if classes != charset.len() {
        return Err(StepError::fatal(format!(
            "the recognition model has {classes} classes but its character list {}; \
             are the model and its inference.yml from the same package?",
            charset.len()
        )));
    }
    let steps = probs.as_f32()?.len() / classes;
    // Only the steps over the line itself, not its padding.
    let used = (steps as u64 * u64::from(width)).div_ceil(u64::from(bucket)) as usize;
    Ok(charset.decode(probs.as_f32()?, used.min(steps)))
}

/// Samples the oriented box of `region` into a `width` × `height` image,
/// straightening a slanted line: each output pixel averages a few bilinear
/// samples of the page (more when the box is shrunk a lot, against
/// aliasing).
fn straighten(image: &RgbImage, region: &Region, width: u32, height: u32) -> RgbImage {
    let [origin, right, _, down] = region.corners;
    let along = (
        (right.0 - origin.0) / width as f32,
        (right.1 - origin.1) / width as f32,
    );
    let across = (
        (down.0 - origin.0) / height as f32,
        (down.1 - origin.1) / height as f32,
    );
    let shrink = (across.0.hypot(across.1)).max(along.0.hypot(along.1));
    let samples = (shrink.ceil() as u32).clamp(1, 4);
    let step = 1.0 / samples as f32;
    let mut out = RgbImage::new(width, height);
    for (tx, ty, pixel) in out.enumerate_pixels_mut() {
        let mut sum = [0f32; 3];
        for sy in 0..samples {
            for sx in 0..samples {
                let u = tx as f32 + (sx as f32 + 0.5) * step;
                let v = ty as f32 + (sy as f32 + 0.5) * step;
                let x = origin.0 + u * along.0 + v * across.0;
                let y = origin.1 + u * along.1 + v * across.1;
                let value = bilinear(image, x - 0.5, y - 0.5);
                for (total, channel) in sum.iter_mut().zip(value) {
                    *total += channel;
                }
            }
        }
        let count = (samples * samples) as f32;
        *pixel = Rgb(sum.map(|total| (total / count).round().clamp(0.0, 255.0) as u8));
    }
    out
}

/// The page's colour at `(x, y)`, interpolated, edges repeated outward.
fn bilinear(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (fx, fy) = (x.floor(), y.floor());
    let (dx, dy) = (x - fx, y - fy);
    let at = |px: i64, py: i64| {
        image
            .get_pixel(px.clamp(0, w - 1) as u32, py.clamp(0, h - 1) as u32)
            .0
    };
    let (x0, y0) = (fx as i64, fy as i64);
    let (a, b, c, d) = (
        at(x0, y0),
        at(x0 + 1, y0),
        at(x0, y0 + 1),
        at(x0 + 1, y0 + 1),
    );
    let mut value = [0f32; 3];
    for channel in 0..3 {
        let top = f32::from(a[channel]) * (1.0 - dx) + f32::from(b[channel]) * dx;
        let bottom = f32::from(c[channel]) * (1.0 - dx) + f32::from(d[channel]) * dx;
        value[channel] = top * (1.0 - dy) + bottom * dy;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: &str = "PostProcess:\n  name: CTCLabelDecode\n  character_dict:\n  - '!'\n  - ''''\n  - a\n  - b\n";

    #[test]
    fn the_character_list_has_blank_first_and_space_last() {
        let charset = Charset::parse(SETTINGS).unwrap();
        assert_eq!(charset.chars, ["", "!", "'", "a", "b", " "]);
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let charset = Charset::parse(SETTINGS).unwrap();
        let one_hot = |class: usize| {
            let mut row = vec![0.0f32; 6];
            row[class] = 0.9;
            row
        };
        // a a _ a b ' ' ! -> "aab !"
        let steps = [3, 3, 0, 3, 4, 5, 1];
        let probs: Vec<f32> = steps.iter().flat_map(|&c| one_hot(c)).collect();
        let (text, confidence) = charset.decode(&probs, steps.len());
        assert_eq!(text, "aab !");
        assert!((confidence - 0.9).abs() < 1e-6);
    }

    #[test]
    fn straightening_an_axis_aligned_box_is_a_crop() {
        let image = RgbImage::from_fn(40, 20, |x, y| Rgb([(x * 5) as u8, (y * 10) as u8, 7]));
        let region = Region {
            x0: 10.0,
            y0: 5.0,
            x1: 30.0,
            y1: 15.0,
            corners: [(10.0, 5.0), (30.0, 5.0), (30.0, 15.0), (10.0, 15.0)],
        };
        let out = straighten(&image, &region, 20, 10);
        for (x, y, pixel) in out.enumerate_pixels() {
            assert_eq!(pixel, image.get_pixel(x + 10, y + 5), "at {x},{y}");
        }
    }

    #[test]
    fn a_settings_file_without_characters_is_an_error() {
        assert!(Charset::parse("Global:\n  model_name: x\n").is_err());
    }
}
