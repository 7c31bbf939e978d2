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

/// A text region, in the page image's pixels: an oriented box (a text
/// line on a slightly rotated scan runs at a slant) and the axis-aligned
/// box around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left edge of the axis-aligned box.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge (exclusive).
    pub x1: f32,
    /// Bottom edge (exclusive).
    pub y1: f32,
    /// The oriented box's corners: top-left, top-right, bottom-right,
    /// bottom-left, as the text reads.
    pub corners: [(f32, f32); 4],
}

impl Region {
    /// A region with these corners and the axis-aligned box around them.
    fn from_corners(corners: [(f32, f32); 4]) -> Region {
        let (x0, y0, x1, y1) = corners.iter().fold(
            (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
            |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        );
        Region {
            x0,
            y0,
            x1,
            y1,
            corners,
        }
    }
}

/// The steepest slant a text line is read at, in radians (about 17°);
/// anything steeper is read axis-aligned.
const MAX_SLANT: f32 = 0.3;

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
        .map(|r| Region::from_corners(r.corners.map(|(x, y)| (x * sx, y * sy))))
        .filter(|r| {
            r.x1.min(width as f32) - r.x0.max(0.0) >= 2.0
                && r.y1.min(height as f32) - r.y0.max(0.0) >= 2.0
        })
        .collect())
}

/// The regions of a probability map: connected components of the pixels
/// over `thresh`, scored by the mean probability of their box, grown by
/// `unclip_ratio` as DB prescribes (distance = area × ratio / perimeter).
pub fn regions(map: &[f32], width: usize, height: usize, config: &DetConfig) -> Vec<Region> {
    let mut seen = vec![false; map.len()];
    let mut stack = Vec::new();
    let mut pixels: Vec<(f32, f32)> = Vec::new();
    let mut found = Vec::new();
    for start in 0..map.len() {
        if seen[start] || map[start] <= config.thresh {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        pixels.clear();
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(at) = stack.pop() {
            let (x, y) = (at % width, at / width);
            pixels.push((x as f32 + 0.5, y as f32 + 0.5));
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
        let (region, inside) = oriented(&pixels, w > 2.0 * h, config.unclip_ratio);
        // The score: the mean probability inside the (not yet grown) box,
        // as DB's `box_score_fast` takes it.
        let (mut sum, mut count) = (0.0f32, 0usize);
        for y in y0..=y1 {
            for x in x0..=x1 {
                if inside(x as f32 + 0.5, y as f32 + 0.5) {
                    sum += map[y * width + x];
                    count += 1;
                }
            }
        }
        if count == 0 || sum / (count as f32) < config.box_thresh {
            continue;
        }
        found.push(region);
    }
    found
}

/// The oriented box of a component's pixels (their centres), grown by
/// DB's unclip distance (area × ratio / perimeter). Its slant is the
/// least-squares line through the pixels, for a component long enough to
/// have one.
/// Also returns whether a point lies in the box before it is grown.
fn oriented(
    pixels: &[(f32, f32)],
    long: bool,
    unclip_ratio: f32,
) -> (Region, impl Fn(f32, f32) -> bool) {
    let n = pixels.len() as f32;
    let (mx, my) = pixels
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
    let (mx, my) = (mx / n, my / n);
    let (sxx, sxy) = pixels.iter().fold((0.0, 0.0), |(sxx, sxy), &(x, y)| {
        (sxx + (x - mx) * (x - mx), sxy + (x - mx) * (y - my))
    });
    let slant = if long && sxx > 0.0 {
        (sxy / sxx).atan()
    } else {
        0.0
    };
    let angle = if slant.abs() <= MAX_SLANT { slant } else { 0.0 };
    let (cos, sin) = (angle.cos(), angle.sin());
    let (mut a0, mut a1, mut b0, mut b1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &(x, y) in pixels {
        let (dx, dy) = (x - mx, y - my);
        let along = dx * cos + dy * sin;
        let across = -dx * sin + dy * cos;
        a0 = a0.min(along);
        a1 = a1.max(along);
        b0 = b0.min(across);
        b1 = b1.max(across);
    }
    // The centres of the outermost pixels lie half a pixel inside.
    let (w, h) = (a1 - a0 + 1.0, b1 - b0 + 1.0);
    let distance = w * h * unclip_ratio / (2.0 * (w + h));
    let (ca, cb) = ((a0 + a1) / 2.0, (b0 + b1) / 2.0);
    let centre = (mx + ca * cos - cb * sin, my + ca * sin + cb * cos);
    let (hw, hh) = (w / 2.0 + distance, h / 2.0 + distance);
    let corner = |along: f32, across: f32| {
        (
            centre.0 + along * hw * cos - across * hh * sin,
            centre.1 + along * hw * sin + across * hh * cos,
        )
    };
    let region = Region::from_corners([
        corner(-1.0, -1.0),
        corner(1.0, -1.0),
        corner(1.0, 1.0),
        corner(-1.0, 1.0),
    ]);
    let inside = move |x: f32, y: f32| {
        let (dx, dy) = (x - mx, y - my);
        let along = dx * cos + dy * sin;
        let across = -dx * sin + dy * cos;
        along >= a0 - 0.5 && along <= a1 + 0.5 && across >= b0 - 0.5 && across <= b1 + 0.5
    };
    (region, inside)
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
        let r = found[0];
        for (got, want) in [(r.x0, -0.5), (r.y0, 1.5), (r.x1, 24.5), (r.y1, 10.5)] {
            assert!((got - want).abs() < 1e-3, "{r:?}");
        }
        assert!(
            (r.corners[0].1 - r.corners[1].1).abs() < 1e-3,
            "level: {r:?}"
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
    fn a_slanted_line_gets_a_slanted_box() {
        // A 60x4 line rising 1 pixel every 10 (slope -0.1).
        let (w, h) = (80, 30);
        let mut map = vec![0.0f32; w * h];
        for x in 10..70 {
            let top = 20 - (x - 10) / 10;
            for y in top..top + 4 {
                map[y * w + x] = 0.9;
            }
        }
        let config = DetConfig {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.5,
        };
        let found = regions(&map, w, h, &config);
        assert_eq!(found.len(), 1);
        let [top_left, top_right, _, bottom_left] = found[0].corners;
        let slope = (top_right.1 - top_left.1) / (top_right.0 - top_left.0);
        assert!((slope + 0.1).abs() < 0.02, "slope {slope}");
        // Narrow across the line: 4 pixels plus twice the unclip distance.
        let across =
            ((bottom_left.0 - top_left.0).powi(2) + (bottom_left.1 - top_left.1).powi(2)).sqrt();
        assert!(across < 12.0, "{across}");
    }

    #[test]
    fn regions_on_one_line_form_a_row_left_to_right() {
        let r = |x0: f32, y0: f32| Region {
            x0,
            y0,
            x1: x0 + 50.0,
            y1: y0 + 20.0,
            corners: [
                (x0, y0),
                (x0 + 50.0, y0),
                (x0 + 50.0, y0 + 20.0),
                (x0, y0 + 20.0),
            ],
        };
        let rows = rows(vec![r(300.0, 102.0), r(10.0, 100.0), r(10.0, 140.0)]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0].x0, 10.0);
        assert_eq!(rows[0][1].x0, 300.0);
        assert_eq!(union(&rows[0]), [10, 100, 340, 22]);
    }
}
