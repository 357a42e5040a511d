//! Image operations as plain synchronous functions: sniff → decode (with limits, EXIF
//! orientation, JPEG shrink-on-load) → transform → encode. No async, no gRPC: the service layer
//! validates parameters and runs these on the CPU pool.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::DynamicImage;
use thiserror::Error;

pub mod cli;
mod colour;
pub(crate) mod decode;
mod encode;
mod resize;
mod watermark;

#[cfg(test)]
mod colour_tests;
#[cfg(test)]
mod privacy_tests;
#[cfg(test)]
mod testutil;

pub use crate::vocab::media::Format;

/// What to write: a concrete format, or the input's own (GIF input is written as PNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The input's format (GIF becomes PNG).
    Keep,
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    WebP,
    /// AVIF (at `Limits::avif_speed`).
    Avif,
}

/// Limits checked before work is wasted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decoded or produced image, in pixels (width × height).
    pub max_pixels: u64,
    /// AVIF encoder speed, 1 (slowest, smallest) to 10 (fastest): bounds an AVIF encode's
    /// time (`compute.avif_speed`).
    pub avif_speed: u8,
}

pub use crate::config::DEFAULT_AVIF_SPEED;

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The encoded bytes.
    pub data: Vec<u8>,
    /// Format actually written: never `Gif`.
    pub format: Format,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
}

/// Why an operation failed; the service maps each to a gRPC status and ErrorInfo reason.
#[derive(Debug, Error)]
pub enum OpError {
    /// A parameter out of range (BAD_PARAMETER).
    #[error("{0}")]
    BadParameter(String),
    /// Bytes that are not an image type compute reads (UNSUPPORTED_FORMAT).
    #[error("{0}")]
    UnsupportedFormat(String),
    /// An image that does not decode, or a codec that failed on it (UNDECODABLE_IMAGE).
    #[error("{0}")]
    Undecodable(String),
    /// An input or output above `Limits::max_pixels` (PIXEL_LIMIT).
    #[error("{0}")]
    PixelLimit(String),
}

/// Resize box. `keep_aspect = true`: fit inside width × height, a 0 side is derived from the
/// other; `false`: exactly width × height.
#[derive(Debug, Clone, Copy)]
pub struct ResizeSpec {
    /// Box width in pixels (0 with `keep_aspect`: derived from the height).
    pub width: u32,
    /// Box height in pixels (0 with `keep_aspect`: derived from the width).
    pub height: u32,
    /// Fit inside the box keeping the aspect ratio, rather than stretch to it.
    pub keep_aspect: bool,
}

/// Where a watermark is placed: a corner (inset by a small margin) or the centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Bottom-right corner.
    BottomRight,
    /// Bottom-left corner.
    BottomLeft,
    /// Top-right corner.
    TopRight,
    /// Top-left corner.
    TopLeft,
    /// Centred.
    Center,
}

/// What a watermark draws: text, or a logo image.
#[derive(Debug, Clone)]
pub enum Mark<'a> {
    /// Text; `font_size: None` scales it to the image.
    Text {
        /// The text (non-blank); `\n` starts a new line.
        text: &'a str,
        /// Font size in pixels (None or 0: about 5% of the shorter side).
        font_size: Option<u32>,
    },
    /// A PNG/WebP logo composited with its alpha.
    Overlay(&'a [u8]),
}

/// A watermark: what to draw, where, and how opaque.
#[derive(Debug, Clone)]
pub struct WatermarkSpec<'a> {
    /// Text or logo.
    pub mark: Mark<'a>,
    /// Where it goes.
    pub position: Position,
    /// In (0, 1].
    pub opacity: f32,
}

/// Identify a container compute reads from magic bytes (never from a client's Content-Type):
/// AVIF is not one.
pub fn sniff(data: &[u8]) -> Option<Format> {
    crate::vocab::media::sniff_readable(data)
}

/// Re-encode at `quality` (1–100) in `out`.
pub fn compress(
    data: &[u8],
    quality: u8,
    out: OutputFormat,
    limits: &Limits,
) -> Result<Encoded, OpError> {
    guard(|| {
        let decoded = decode::decode(data, limits, None)?;
        let format = output_format(out, decoded.format);
        encode::encode(decoded.image, format, quality, limits)
    })
}

/// Resize to `spec`, then encode.
pub fn resize(
    data: &[u8],
    spec: ResizeSpec,
    out: OutputFormat,
    quality: u8,
    limits: &Limits,
) -> Result<Encoded, OpError> {
    guard(|| {
        // Parameter errors first: a bad box is the caller's mistake whatever the bytes are.
        resize::validate(&spec)?;
        let decoded = decode::decode(data, limits, Some(&spec))?;
        // The target comes from the full (oriented) size, not from the shrunk-on-load one, so
        // that shrink-on-load never changes the output dimensions by a rounding pixel.
        let (w, h) = resize::target_size(&spec, decoded.full_width, decoded.full_height, limits)?;
        let image = resize::resize_to(decoded.image, w, h)?;
        let format = output_format(out, decoded.format);
        encode::encode(image, format, quality, limits)
    })
}

/// Draw a text or logo watermark, then encode.
pub fn watermark(
    data: &[u8],
    spec: &WatermarkSpec<'_>,
    out: OutputFormat,
    quality: u8,
    limits: &Limits,
) -> Result<Encoded, OpError> {
    guard(|| {
        watermark::validate(spec)?;
        let decoded = decode::decode(data, limits, None)?;
        let image = watermark::apply(decoded.image, spec, limits)?;
        let format = output_format(out, decoded.format);
        encode::encode(image, format, quality, limits)
    })
}

/// The concrete format to write: `Keep` keeps JPEG/PNG/WebP and turns GIF into PNG.
fn output_format(out: OutputFormat, input: Format) -> Format {
    match out {
        OutputFormat::Jpeg => Format::Jpeg,
        OutputFormat::Png => Format::Png,
        OutputFormat::WebP => Format::WebP,
        OutputFormat::Avif => Format::Avif,
        OutputFormat::Keep => match input {
            Format::Gif => Format::Png,
            other => other,
        },
    }
}

/// Normalise to the two layouts the pipeline handles (16-bit and gray sources included).
pub(crate) fn to_rgb8_or_rgba8(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => image,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Last line of defence: these functions run on a server's worker threads, and a panic in a
/// codec (mozjpeg reports libjpeg errors by unwinding) must become an error for this one image,
/// not a dead worker.
fn guard<T>(f: impl FnOnce() -> Result<T, OpError>) -> Result<T, OpError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(OpError::Undecodable(format!(
            "the image could not be processed: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The text of a panic payload (`&str` or `String`, which is what libjpeg's unwinding and
/// `panic!` produce).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "internal error".to_string()
    }
}

#[cfg(test)]
mod tests;
