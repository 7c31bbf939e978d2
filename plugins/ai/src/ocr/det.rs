//! Text detection: the DB model's probability map, and the regions read
//! out of it (PaddleOCR's `DBPostProcess`, with axis-aligned boxes).

use image::RgbImage;
use image::imageops::{self, FilterType};
use plait_sdk::StepError;
use plait_sdk::inference::{Model, Tensor};

/// The detector's input is at most this many pixels on its longer side.
/// Each distinct input shape costs the host one plan optimization, so
/// sides are also rounded to multiples of 32 (which the model needs).
pub const MAX_DET_SIDE: u32 = 960;

/// ImageNet mean and standard deviation, in the model's BGR channel order.
const MEAN: [f32; 3] = [0.406, 0.456, 0.485];
const STD: [f32; 3] = [0.225, 0.224, 0.229];

/// `DBPostProcess` settings, from the model's `inference.yml`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetConfig {
    /// Probability above which a pixel is text.
    pub thresh: f32,
    /// Mean probability below which a region is dropped.
    pub box_thresh: f32,
    /// How far a region is grown back out (DB shrinks text when training).
    pub unclip_ratio: f32,
}

impl Default for DetConfig {
    fn default() -> Self {
        DetConfig {
            thresh: 0.3,
            box_thresh: 0.6,
            unclip_ratio: 1.5,
        }
    }
}

impl DetConfig {
    /// Reads `thresh`, `box_thresh` and `unclip_ratio` from the settings
    /// file, keeping PaddleOCR's defaults for any it lacks.
    pub fn parse(settings: &str) -> DetConfig {
        let mut config = DetConfig::default();
        for line in settings.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f32>() else {
                continue;
            };
            match key {
                "thresh" => config.thresh = value,
                "box_thresh" => config.box_thresh = value,
                "unclip_ratio" => config.unclip_ratio = value,
                _ => {}
            }
        }
        config
    }
}

/// A text region, in the page image's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge (exclusive).
    pub x1: f32,
    /// Bottom edge (exclusive).
    pub y1: f32,
}

/// Finds the text regions of `image`.
pub fn detect(
    model: &Model,
    config: &DetConfig,
    image: &RgbImage,
) -> Result<Vec<Region>, StepError> {
    let (width, height) = image.dimensions();
    let scale = (MAX_DET_SIDE as f32 / width.max(height) as f32).min(1.0);
    let round32 = |side: u32| (((side as f32 * scale) / 32.0).round() as u32).max(1) * 32;
    let (w, h) = (round32(width), round32(height));
    let resized = imageops::resize(image, w, h, FilterType::Triangle);
    let plane = (w * h) as usize;
    let mut values = vec![0f32; 3 * plane];
    for (index, pixel) in resized.pixels().enumerate() {
        // RGB pixel into BGR planes.
        for channel in 0..3 {
            let value = f32::from(pixel[2 - channel]) / 255.0;
            values[channel * plane + index] = (value - MEAN[channel]) / STD[channel];
        }
    }
    let outputs = model.run(vec![Tensor::f32("x", &[1, 3, h, w], values)])?;
    let map = outputs
        .first()
        .ok_or_else(|| StepError::fatal("the detection model returned no output"))?;
    if map.shape.iter().product::<u32>() != w * h {
        return Err(StepError::fatal(format!(
            "the detection model returned a map of shape {:?} for a {w}x{h} input",
            map.shape
        )));
    }
    let regions = regions(map.as_f32()?, w as usize, h as usize, config);
    let (sx, sy) = (width as f32 / w as f32, height as f32 / h as f32);
    Ok(regions
        .into_iter()
        .map(|r| Region {
            x0: (r.x0 * sx).clamp(0.0, width as f32),
            y0: (r.y0 * sy).clamp(0.0, height as f32),
            x1: (r.x1 * sx).clamp(0.0, width as f32),
            y1: (r.y1 * sy).clamp(0.0, height as f32),
        })
        .filter(|r| r.x1 - r.x0 >= 2.0 && r.y1 - r.y0 >= 2.0)
        .collect())
}

/// The regions of a probability map: connected components of the pixels
/// over `thresh`, scored by the mean probability of their box, grown by
/// `unclip_ratio` as DB prescribes (distance = area × ratio / perimeter).
pub fn regions(map: &[f32], width: usize, height: usize, config: &DetConfig) -> Vec<Region> {
    let mut seen = vec![false; map.len()];
    let mut stack = Vec::new();
    let mut found = Vec::new();
    for start in 0..map.len() {
        if seen[start] || map[start] <= config.thresh {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(at) = stack.pop() {
            let (x, y) = (at % width, at / width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            let neighbours = [
                (x > 0).then(|| at - 1),
                (x + 1 < width).then(|| at + 1),
                (y > 0).then(|| at - width),
                (y + 1 < height).then(|| at + width),
            ];
            for next in neighbours.into_iter().flatten() {
                if !seen[next] && map[next] > config.thresh {
                    seen[next] = true;
                    stack.push(next);
                }
            }
        }
        let (w, h) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
        if w.min(h) < 3.0 {
            continue;
        }
        let mut sum = 0.0;
        for y in y0..=y1 {
            sum += map[y * width + x0..=y * width + x1].iter().sum::<f32>();
        }
        if sum / (w * h) < config.box_thresh {
            continue;
        }
        let distance = w * h * config.unclip_ratio / (2.0 * (w + h));
        found.push(Region {
            x0: x0 as f32 - distance,
            y0: y0 as f32 - distance,
            x1: (x1 + 1) as f32 + distance,
            y1: (y1 + 1) as f32 + distance,
        });
    }
    found
}

/// Groups regions into rows of text, top to bottom, each row left to
/// right: a region joins a row when their vertical spans overlap by at
/// least half the smaller one.
pub fn rows(mut regions: Vec<Region>) -> Vec<Vec<Region>> {
    regions.sort_by(|a, b| (a.y0 + a.y1).total_cmp(&(b.y0 + b.y1)));
    let mut rows: Vec<Vec<Region>> = Vec::new();
    for region in regions {
        let joins = rows.iter_mut().rev().take(3).find(|row| {
            let (top, bottom) = row
                .iter()
                .fold((f32::MAX, f32::MIN), |(t, b), r| (t.min(r.y0), b.max(r.y1)));
            let overlap = bottom.min(region.y1) - top.max(region.y0);
            overlap >= 0.5 * (bottom - top).min(region.y1 - region.y0)
        });
        match joins {
            Some(row) => row.push(region),
            None => rows.push(vec![region]),
        }
    }
    for row in &mut rows {
        row.sort_by(|a, b| a.x0.total_cmp(&b.x0));
    }
    rows
}

/// `[x, y, width, height]` of the box around `regions`.
pub fn union(regions: &[Region]) -> [u32; 4] {
    let (x0, y0, x1, y1) = regions.iter().fold(
        (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
        |(x0, y0, x1, y1), r| (x0.min(r.x0), y0.min(r.y0), x1.max(r.x1), y1.max(r.y1)),
    );
    [
        x0 as u32,
        y0 as u32,
        (x1 - x0).max(0.0) as u32,
        (y1 - y0).max(0.0) as u32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_model_file() {
        let config = DetConfig::parse(
            "PostProcess:\n  box_thresh: 0.4\n  thresh: 0.2\n  unclip_ratio: 1.4\n",
        );
        assert_eq!(
            config,
            DetConfig {
                thresh: 0.2,
                box_thresh: 0.4,
                unclip_ratio: 1.4
            }
        );
    }

    #[test]
    fn two_blobs_are_two_regions_grown_by_the_unclip_distance() {
        let (w, h) = (40, 20);
        let mut map = vec![0.0f32; w * h];
        for y in 4..8 {
            for x in 2..22 {
                map[y * w + x] = 0.9;
            }
        }
        for y in 12..16 {
            for x in 5..35 {
                map[y * w + x] = 0.9;
            }
        }
        let config = DetConfig {
            thresh: 0.3,
            box_thresh: 0.6,
            unclip_ratio: 1.5,
        };
        let found = regions(&map, w, h, &config);
        assert_eq!(found.len(), 2);
        // 20x4 box: distance = 80 * 1.5 / 48 = 2.5.
        assert_eq!(
            found[0],
            Region {
                x0: -0.5,
                y0: 1.5,
                x1: 24.5,
                y1: 10.5
            }
        );
    }

    #[test]
    fn a_faint_region_is_dropped() {
        let (w, h) = (10, 10);
        let mut map = vec![0.0f32; w * h];
        for y in 2..6 {
            for x in 2..8 {
                map[y * w + x] = 0.4;
            }
        }
        assert!(regions(&map, w, h, &DetConfig::default()).is_empty());
    }

    #[test]
    fn regions_on_one_line_form_a_row_left_to_right() {
        let r = |x0: f32, y0: f32| Region {
            x0,
            y0,
            x1: x0 + 50.0,
            y1: y0 + 20.0,
        };
        let rows = rows(vec![r(300.0, 102.0), r(10.0, 100.0), r(10.0, 140.0)]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0].x0, 10.0);
        assert_eq!(rows[0][1].x0, 300.0);
        assert_eq!(union(&rows[0]), [10, 100, 340, 22]);
    }
}
