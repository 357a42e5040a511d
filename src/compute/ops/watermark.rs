//! Watermarks: white text in the embedded DejaVu Sans with a thin dark outline and drop
//! shadow (legible on light and dark photos alike), or a PNG/WebP logo composited with its
//! alpha; either placed at a corner or the centre with a margin and blended with `opacity`.
//!
//! Text is rasterised with ab_glyph into a coverage mask that covers only the part of the text
//! that lands on the image, so text far longer than the image costs little and is clipped.

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::DynamicImage;

use super::{decode, resize, sniff, Format, Limits, Mark, OpError, Position, WatermarkSpec};

/// Largest `font_size` accepted: one glyph is rasterised into a size² buffer.
pub(super) const MAX_FONT_SIZE: u32 = crate::vocab::limits::MAX_FONT_SIZE as u32;
/// Longest text accepted, in characters (a watermark, not a document).
pub(super) const MAX_TEXT_CHARS: usize = crate::vocab::limits::MAX_WATERMARK_TEXT_CHARS;
/// Darkness of the outline/shadow relative to the text's opacity.
const SHADOW_STRENGTH: f32 = 0.6;

/// Checks that need no image: opacity range, text rules, overlay container.
pub(crate) fn validate(spec: &WatermarkSpec<'_>) -> Result<(), OpError> {
    if !(spec.opacity > 0.0 && spec.opacity <= 1.0) {
        return Err(OpError::BadParameter(format!(
            "opacity {} is outside (0, 1]",
            spec.opacity
        )));
    }
    match spec.mark {
        Mark::Text { text, font_size } => {
            if text.trim().is_empty() {
                return Err(OpError::BadParameter("watermark text is empty".to_string()));
            }
            let chars = text.chars().count();
            if chars > MAX_TEXT_CHARS {
                return Err(OpError::BadParameter(format!(
                    "watermark text is {chars} characters long, above the limit of \
                     {MAX_TEXT_CHARS}"
                )));
            }
            if let Some(size) = font_size {
                if size > MAX_FONT_SIZE {
                    return Err(OpError::BadParameter(format!(
                        "font_size {size} is above the limit of {MAX_FONT_SIZE} pixels"
                    )));
                }
            }
        }
        Mark::Overlay(bytes) => match sniff(bytes) {
            Some(Format::Png | Format::WebP) => {}
            Some(other) => {
                return Err(OpError::BadParameter(format!(
                    "overlay_image must be a PNG or WebP (for its alpha channel), got a {}",
                    other.name().to_uppercase()
                )))
            }
            None if bytes.is_empty() => {
                return Err(OpError::BadParameter("overlay_image is empty".to_string()))
            }
            None => {
                return Err(OpError::UnsupportedFormat(
                    "overlay_image is not an image of a supported type (PNG or WebP)".to_string(),
                ))
            }
        },
    }
    Ok(())
}

/// Draw the watermark on an `ImageRgb8`/`ImageRgba8`.
pub(crate) fn apply(
    mut image: DynamicImage,
    spec: &WatermarkSpec<'_>,
    limits: &Limits,
) -> Result<DynamicImage, OpError> {
    validate(spec)?;
    let opacity = spec.opacity.clamp(0.0, 1.0);
    let mut canvas = Canvas::new(&mut image)?;
    match spec.mark {
        Mark::Text { text, font_size } => {
            draw_text(&mut canvas, text, font_size, spec.position, opacity)?
        }
        Mark::Overlay(bytes) => draw_overlay(&mut canvas, bytes, spec.position, opacity, limits)?,
    }
    Ok(image)
}

/// Mutable view of an RGB or RGBA 8-bit buffer.
struct Canvas<'a> {
    width: u32,
    height: u32,
    channels: usize,
    pixels: &'a mut [u8],
}

impl<'a> Canvas<'a> {
    fn new(image: &'a mut DynamicImage) -> Result<Self, OpError> {
        let (width, height) = (image.width(), image.height());
        let (channels, pixels): (usize, &mut [u8]) = match image {
            DynamicImage::ImageRgb8(i) => (3, &mut **i),
            DynamicImage::ImageRgba8(i) => (4, &mut **i),
            _ => {
                return Err(OpError::Undecodable(
                    "internal error: watermark got an unexpected pixel layout".to_string(),
                ))
            }
        };
        Ok(Self {
            width,
            height,
            channels,
            pixels,
        })
    }

    /// Blend `color` over pixel (x, y) with coverage `alpha` in [0, 1] ("over" operator: on an
    /// RGBA image the mark also makes transparent pixels opaque where it is drawn).
    fn blend(&mut self, x: u32, y: u32, color: [u8; 3], alpha: f32) {
        if alpha <= 0.0 {
            return;
        }
        let alpha = alpha.min(1.0);
        let i = (y as usize * self.width as usize + x as usize) * self.channels;
        let px = &mut self.pixels[i..i + self.channels];
        if self.channels == 3 {
            for (c, &s) in px.iter_mut().zip(&color) {
                let d = f32::from(*c);
                *c = (d + (f32::from(s) - d) * alpha).round() as u8;
            }
        } else {
            let da = f32::from(px[3]) / 255.0;
            let out_a = alpha + da * (1.0 - alpha);
            if out_a <= 0.0 {
                return;
            }
            for (c, &s) in px[..3].iter_mut().zip(&color) {
                let v = (f32::from(s) * alpha + f32::from(*c) * da * (1.0 - alpha)) / out_a;
                *c = v.round().clamp(0.0, 255.0) as u8;
            }
            px[3] = (out_a * 255.0).round() as u8;
        }
    }
}

/// Distance from the image's edges.
fn margin(width: u32, height: u32) -> i64 {
    i64::from((width.min(height) / 40).max(2))
}

/// Top-left corner of a `w`×`h` box placed at `position`.
fn place(position: Position, iw: u32, ih: u32, w: i64, h: i64, m: i64) -> (i64, i64) {
    let (iw, ih) = (i64::from(iw), i64::from(ih));
    match position {
        Position::TopLeft => (m, m),
        Position::TopRight => (iw - m - w, m),
        Position::BottomLeft => (m, ih - m - h),
        Position::BottomRight => (iw - m - w, ih - m - h),
        Position::Center => ((iw - w) / 2, (ih - h) / 2),
    }
}

/// Width of one line of text at this scale (advances plus kerning).
fn line_width<F: Font, SF: ScaleFont<F>>(font: &SF, line: &str) -> f32 {
    let mut width = 0.0;
    let mut prev: Option<GlyphId> = None;
    for ch in line.chars().filter(|c| !c.is_control()) {
        let id = font.glyph_id(ch);
        if let Some(p) = prev {
            width += font.kern(p, id);
        }
        width += font.h_advance(id);
        prev = Some(id);
    }
    width
}

fn draw_text(
    canvas: &mut Canvas<'_>,
    text: &str,
    font_size: Option<u32>,
    position: Position,
    opacity: f32,
) -> Result<(), OpError> {
    let (iw, ih) = (canvas.width, canvas.height);
    let size = font_size
        .filter(|&s| s > 0)
        .unwrap_or_else(|| ((iw.min(ih) as f32 * 0.05).round() as u32).max(12));
    let font = FontRef::try_from_slice(dejavu::sans::regular())
        .map_err(|e| OpError::Undecodable(format!("internal error: embedded font: {e}")))?;
    let scale = PxScale::from(size as f32);
    let scaled = font.as_scaled(scale);
    let line_height = scaled.height() + scaled.line_gap();

    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let widths: Vec<f32> = lines.iter().map(|l| line_width(&scaled, l)).collect();
    let block_w = widths.iter().cloned().fold(0.0f32, f32::max).ceil() as i64;
    let block_h = (line_height * lines.len() as f32).ceil() as i64;
    let (bx, by) = place(position, iw, ih, block_w, block_h, margin(iw, ih));

    // Outline radius and shadow offset grow with the text but stay thin.
    let outline = ((size as f32 / 24.0).round() as i64).clamp(1, 4);
    let shadow = outline;

    // The part of the text box (with its outline and shadow) that lies on the image.
    let rx0 = (bx - outline).max(0);
    let ry0 = (by - outline).max(0);
    let rx1 = (bx + block_w + outline + shadow).min(i64::from(iw));
    let ry1 = (by + block_h + outline + shadow).min(i64::from(ih));
    if rx0 >= rx1 || ry0 >= ry1 {
        return Ok(());
    }
    let (rw, rh) = ((rx1 - rx0) as usize, (ry1 - ry0) as usize);
    let mut mask = vec![0f32; rw * rh];

    // Glyphs may overhang their advance box a little (italics, accents): a generous slack
    // keeps the cheap "outside the region" test from dropping visible pixels.
    let slack = size as f32;
    for (i, (line, &width)) in lines.iter().zip(&widths).enumerate() {
        let x_start = bx as f32
            + match position {
                Position::TopLeft | Position::BottomLeft => 0.0,
                Position::TopRight | Position::BottomRight => block_w as f32 - width,
                Position::Center => (block_w as f32 - width) / 2.0,
            };
        let baseline = by as f32 + i as f32 * line_height + scaled.ascent();
        if baseline + slack < ry0 as f32 || baseline - 2.0 * slack > ry1 as f32 {
            continue;
        }
        let mut caret = x_start;
        let mut prev: Option<GlyphId> = None;
        for ch in line.chars().filter(|c| !c.is_control()) {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            let x = caret;
            caret += scaled.h_advance(id);
            prev = Some(id);
            if x > rx1 as f32 + slack {
                // Everything further along this line is right of the region.
                break;
            }
            if caret + slack < rx0 as f32 {
                continue;
            }
            let glyph = id.with_scale_and_position(scale, point(x, baseline));
            let Some(outlined) = font.outline_glyph(glyph) else {
                continue; // blank glyphs such as spaces
            };
            let b = outlined.px_bounds();
            let (gx, gy) = (b.min.x as i64, b.min.y as i64);
            outlined.draw(|px, py, coverage| {
                let x = gx + i64::from(px) - rx0;
                let y = gy + i64::from(py) - ry0;
                if x >= 0 && y >= 0 && (x as usize) < rw && (y as usize) < rh {
                    let m = &mut mask[y as usize * rw + x as usize];
                    *m = (*m + coverage).min(1.0);
                }
            });
        }
    }

    let halo = dilate(&mask, rw, rh, outline as usize);
    let shadow = shadow as usize;
    for y in 0..rh {
        for x in 0..rw {
            let (cx, cy) = ((rx0 as usize + x) as u32, (ry0 as usize + y) as u32);
            if x >= shadow && y >= shadow {
                let s = halo[(y - shadow) * rw + (x - shadow)];
                canvas.blend(cx, cy, [0, 0, 0], s * opacity * SHADOW_STRENGTH);
            }
            let t = mask[y * rw + x];
            canvas.blend(cx, cy, [255, 255, 255], t * opacity);
        }
    }
    Ok(())
}

/// Max filter with a square window of radius `r` (separable: rows, then columns).
fn dilate(mask: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut rows = vec![0f32; mask.len()];
    for y in 0..h {
        let row = &mask[y * w..(y + 1) * w];
        for x in 0..w {
            let (a, b) = (x.saturating_sub(r), (x + r).min(w - 1));
            rows[y * w + x] = row[a..=b].iter().cloned().fold(0.0, f32::max);
        }
    }
    let mut out = vec![0f32; mask.len()];
    for y in 0..h {
        let (a, b) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            out[y * w + x] = (a..=b).map(|yy| rows[yy * w + x]).fold(0.0, f32::max);
        }
    }
    out
}

fn draw_overlay(
    canvas: &mut Canvas<'_>,
    bytes: &[u8],
    position: Position,
    opacity: f32,
    limits: &Limits,
) -> Result<(), OpError> {
    let prefix = |e: OpError| match e {
        OpError::BadParameter(m) => OpError::BadParameter(format!("overlay_image: {m}")),
        OpError::UnsupportedFormat(m) => OpError::UnsupportedFormat(format!("overlay_image: {m}")),
        OpError::Undecodable(m) => OpError::Undecodable(format!("overlay_image: {m}")),
        OpError::PixelLimit(m) => OpError::PixelLimit(format!("overlay_image: {m}")),
    };
    let logo = decode::decode(bytes, limits, None).map_err(prefix)?.image;
    let logo = DynamicImage::ImageRgba8(logo.into_rgba8());
    let (iw, ih) = (canvas.width, canvas.height);
    let (lw, lh) = (logo.width(), logo.height());
    // A logo should mark the image, not cover it: at most a quarter of each side.
    let (max_w, max_h) = ((iw / 4).max(1), (ih / 4).max(1));
    let logo = if lw > max_w || lh > max_h {
        let s = (f64::from(max_w) / f64::from(lw)).min(f64::from(max_h) / f64::from(lh));
        let nw = ((f64::from(lw) * s).round() as u32).clamp(1, max_w);
        let nh = ((f64::from(lh) * s).round() as u32).clamp(1, max_h);
        resize::resize_to(logo, nw, nh)?
    } else {
        logo
    };
    let logo = logo.into_rgba8();
    let (lw, lh) = (logo.width(), logo.height());
    let (x0, y0) = place(
        position,
        iw,
        ih,
        i64::from(lw),
        i64::from(lh),
        margin(iw, ih),
    );
    for (lx, ly, px) in logo.enumerate_pixels() {
        let (x, y) = (x0 + i64::from(lx), y0 + i64::from(ly));
        if x < 0 || y < 0 || x >= i64::from(iw) || y >= i64::from(ih) {
            continue;
        }
        let a = f32::from(px.0[3]) / 255.0 * opacity;
        canvas.blend(x as u32, y as u32, [px.0[0], px.0[1], px.0[2]], a);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dilate_grows_by_radius() {
        let mut mask = vec![0f32; 7 * 7];
        mask[3 * 7 + 3] = 1.0;
        let out = dilate(&mask, 7, 7, 2);
        let on: usize = out.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(on, 25);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[7 + 1], 1.0);
    }

    #[test]
    fn rgba_blend_is_over() {
        let mut img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            1,
            1,
            image::Rgba([0, 0, 0, 0]),
        ));
        let mut canvas = Canvas::new(&mut img).unwrap();
        canvas.blend(0, 0, [255, 255, 255], 0.5);
        // White at half opacity over nothing stays white, half transparent.
        assert_eq!(img.into_rgba8().get_pixel(0, 0).0, [255, 255, 255, 128]);
    }

    #[test]
    fn placement_with_margin() {
        assert_eq!(place(Position::TopLeft, 400, 300, 50, 20, 7), (7, 7));
        assert_eq!(
            place(Position::BottomRight, 400, 300, 50, 20, 7),
            (343, 273)
        );
        assert_eq!(place(Position::Center, 400, 300, 50, 20, 7), (175, 140));
        // Larger than the image: starts off-image, gets clipped.
        assert_eq!(place(Position::TopRight, 100, 100, 500, 20, 2), (-402, 2));
    }
}
