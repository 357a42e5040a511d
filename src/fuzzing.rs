//! Entry points for the cargo-fuzz targets in `fuzz/` (see `docs/fuzzing.md`); not an API.
//!
//! This module exists only so that the fuzz targets can reach crate-internal functions. Each
//! wrapper calls the internal function unchanged and adds no behaviour of its own. Hidden from
//! the docs; it may change at any time.

use crate::compute::ops::{decode, Format, Limits, OpError, ResizeSpec};

/// What [`decode`] produced, for the fuzz target's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedInfo {
    pub format: Format,
    /// Size of the decoded pixel buffer (smaller than the full size after JPEG
    /// shrink-on-load).
    pub width: u32,
    pub height: u32,
    /// Upright size of the whole image.
    pub full_width: u32,
    pub full_height: u32,
    /// Channels of the decoded buffer: 3 (RGB8) or 4 (RGBA8); 0 for any other layout.
    pub channels: u8,
    /// Length in bytes of the decoded buffer.
    pub buffer_len: usize,
}

/// The compute engine's decode path: sniff, the header pixel limit, decode (with JPEG
/// shrink-on-load when `resize_to` is given), EXIF orientation, RGB8/RGBA8 normalisation.
/// Runs without the `catch_unwind` guard of the public operations, so that a panic reaches
/// the fuzzer.
pub fn decode(
    data: &[u8],
    limits: &Limits,
    resize_to: Option<&ResizeSpec>,
) -> Result<DecodedInfo, OpError> {
    let d = decode::decode(data, limits, resize_to)?;
    let channels = match &d.image {
        image::DynamicImage::ImageRgb8(_) => 3,
        image::DynamicImage::ImageRgba8(_) => 4,
        _ => 0,
    };
    Ok(DecodedInfo {
        format: d.format,
        width: d.image.width(),
        height: d.image.height(),
        full_width: d.full_width,
        full_height: d.full_height,
        channels,
        buffer_len: d.image.as_bytes().len(),
    })
}
