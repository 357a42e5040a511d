//! Decoding: magic-byte sniffing, the pixel limit read from the header before any pixel is
//! decoded, EXIF orientation, JPEG through mozjpeg (libjpeg-turbo SIMD) with shrink-on-load,
//! still WebP through libwebp, and PNG / GIF (first frame) / animated WebP (first frame)
//! through the `image` crate.
//!
//! Every decoded image comes out as 8-bit RGB, or 8-bit RGBA when the source has alpha, in
//! sRGB (an embedded ICC profile is applied, see [`super::colour`]), and upright: the rest of
//! the pipeline only ever sees those two layouts.

use std::cell::Cell;
use std::io::{self, BufRead, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use mozjpeg::{ColorSpace, Decompress, Marker};

use super::{
    colour, panic_message, resize, sniff, to_rgb8_or_rgba8, Format, Limits, OpError, ResizeSpec,
};

/// A decoded, upright image.
pub(crate) struct Decoded {
    /// `ImageRgb8` or `ImageRgba8`.
    pub image: DynamicImage,
    pub format: Format,
    /// Upright size of the whole image. Differs from `image`'s size when a JPEG was shrunk on
    /// load; the resize target is computed from this one so that shrinking never changes it.
    pub full_width: u32,
    pub full_height: u32,
}

/// Decode `data`. With `resize_to`, the produced size is checked against the limits before
/// decoding, and a JPEG is decoded at the smallest libjpeg scale (1/2, 1/4, 1/8) that still
/// leaves at least a factor of 2 for the final high-quality resize (the rule libvips uses:
/// the DCT-domain shrink is a box filter and would alias if it did all the work).
pub(crate) fn decode(
    data: &[u8],
    limits: &Limits,
    resize_to: Option<&ResizeSpec>,
) -> Result<Decoded, OpError> {
    let format =
        sniff(data).ok_or_else(|| OpError::UnsupportedFormat(unsupported_message(data)))?;
    match format {
        Format::Jpeg => decode_jpeg(data, limits, resize_to),
        Format::Png | Format::WebP | Format::Gif => {
            decode_with_image(data, format, limits, resize_to)
        }
        // Never sniffed (AVIF is written, not read); kept exhaustive for the type's sake.
        Format::Avif => Err(OpError::UnsupportedFormat(unsupported_message(data))),
    }
}

fn unsupported_message(data: &[u8]) -> String {
    if data.is_empty() {
        return "the image is empty (0 bytes)".to_string();
    }
    let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "not a JPEG, PNG, WebP or GIF image (it starts with bytes {})",
        head.join(" ")
    )
}

/// Refuse an image whose header announces more pixels than allowed (a decompression bomb),
/// before a single pixel buffer is allocated.
pub(crate) fn check_decoded_size(
    format: Format,
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<(), OpError> {
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(OpError::Undecodable(format!(
            "the {} header declares an empty image ({width}x{height})",
            format.name()
        )));
    }
    if pixels > limits.max_pixels {
        return Err(OpError::PixelLimit(format!(
            "image is {width}x{height} = {pixels} pixels, above the limit of {}",
            limits.max_pixels
        )));
    }
    Ok(())
}

/// Orientations that swap width and height.
fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn upright_size(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
    if swaps_axes(orientation) {
        (height, width)
    } else {
        (width, height)
    }
}

/// libjpeg scale numerator (in eighths) for shrinking `full` to `target` on load.
pub(crate) fn jpeg_scale_numerator(full: (u32, u32), target: (u32, u32)) -> u8 {
    let shrink_x = f64::from(full.0) / f64::from(target.0.max(1));
    let shrink_y = f64::from(full.1) / f64::from(target.1.max(1));
    let shrink = shrink_x.min(shrink_y);
    if shrink >= 16.0 {
        1
    } else if shrink >= 8.0 {
        2
    } else if shrink >= 4.0 {
        4
    } else {
        8
    }
}

// ---------------------------------------------------------------------------------------------
// JPEG

/// A byte slice as a `BufRead` that remembers whether the reader ever asked for more bytes
/// than there are. libjpeg does not fail on a truncated file: it warns, pretends an
/// end-of-image marker was there and fills the rest with gray. A complete file is consumed up to
/// its EOI marker and never read past, so hitting the end of the data means it was truncated.
struct WatchedSlice<'a> {
    rest: &'a [u8],
    hit_end: &'a Cell<bool>,
}

impl Read for WatchedSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.rest.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_end.set(true);
        }
        Ok(n)
    }
}

impl BufRead for WatchedSlice<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.rest.is_empty() {
            self.hit_end.set(true);
        }
        Ok(self.rest)
    }

    fn consume(&mut self, amt: usize) {
        self.rest = &self.rest[amt.min(self.rest.len())..];
    }
}

fn decode_jpeg(
    data: &[u8],
    limits: &Limits,
    resize_to: Option<&ResizeSpec>,
) -> Result<Decoded, OpError> {
    let hit_end = Cell::new(false);
    // mozjpeg reports libjpeg's fatal errors by unwinding out of the C code.
    let result = catch_unwind(AssertUnwindSafe(|| {
        decode_jpeg_inner(data, limits, resize_to, &hit_end)
    }));
    match result {
        Ok(Ok(decoded)) if hit_end.get() => {
            drop(decoded);
            Err(OpError::Undecodable(
                "the JPEG is truncated: its data ends before the end-of-image marker".to_string(),
            ))
        }
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            let message = message.trim_start_matches("libjpeg fatal error: ");
            if hit_end.get() {
                Err(OpError::Undecodable(format!(
                    "the JPEG is truncated ({message})"
                )))
            } else {
                Err(OpError::Undecodable(format!(
                    "the JPEG does not decode: {message}"
                )))
            }
        }
    }
}

fn decode_jpeg_inner(
    data: &[u8],
    limits: &Limits,
    resize_to: Option<&ResizeSpec>,
    hit_end: &Cell<bool>,
) -> Result<Decoded, OpError> {
    let reader = WatchedSlice {
        rest: data,
        hit_end,
    };
    // APP1 carries EXIF (orientation); APP2 the ICC profile; APP14 is Adobe's, whose presence
    // means CMYK is stored inverted.
    let mut dec = Decompress::with_markers(&[Marker::APP(1), Marker::APP(2), Marker::APP(14)])
        .from_reader(reader)
        .map_err(|e| OpError::Undecodable(format!("the JPEG header does not decode: {e}")))?;
    let width = u32::try_from(dec.width()).unwrap_or(u32::MAX);
    let height = u32::try_from(dec.height()).unwrap_or(u32::MAX);
    check_decoded_size(Format::Jpeg, width, height, limits)?;

    let mut orientation = Orientation::NoTransforms;
    let mut adobe = false;
    for marker in dec.markers() {
        match marker.marker {
            Marker::APP(1) if marker.data.starts_with(b"Exif\0\0") => {
                if let Some(o) = Orientation::from_exif_chunk(&marker.data[6..]) {
                    orientation = o;
                }
            }
            Marker::APP(14) if marker.data.starts_with(b"Adobe") => adobe = true,
            _ => {}
        }
    }
    let icc = colour::jpeg_icc(
        dec.markers()
            .filter(|m| m.marker == Marker::APP(2))
            .map(|m| m.data),
    );
    let (full_width, full_height) = upright_size(width, height, orientation);

    if let Some(spec) = resize_to {
        let target = resize::target_size(spec, full_width, full_height, limits)?;
        dec.scale(jpeg_scale_numerator((full_width, full_height), target));
    }

    let cmyk = matches!(
        dec.color_space(),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
    );
    let io_err = |e: io::Error| OpError::Undecodable(format!("the JPEG does not decode: {e}"));
    let (w, h, rgb) = if cmyk {
        // libjpeg converts YCCK to CMYK but not CMYK to RGB: that step is ours.
        let mut started = dec.to_colorspace(ColorSpace::JCS_CMYK).map_err(io_err)?;
        let (w, h) = (started.width(), started.height());
        let cmyk: Vec<u8> = started.read_scanlines().map_err(io_err)?;
        started.finish().map_err(io_err)?;
        (w, h, cmyk_to_rgb(&cmyk, adobe))
    } else {
        // Gray and YCbCr both convert to RGB inside libjpeg-turbo (SIMD).
        let mut started = dec.rgb().map_err(io_err)?;
        let (w, h) = (started.width(), started.height());
        let rgb: Vec<u8> = started.read_scanlines().map_err(io_err)?;
        started.finish().map_err(io_err)?;
        (w, h, rgb)
    };
    let (w, h) = (
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    );
    let rgb = RgbImage::from_raw(w, h, rgb).ok_or_else(|| {
        OpError::Undecodable("the JPEG decoded to fewer pixels than it declares".to_string())
    })?;
    // A CMYK profile is not applied: CMYK keeps the naive conversion above.
    let icc = if cmyk { None } else { icc };
    let mut image = colour::to_srgb(DynamicImage::ImageRgb8(rgb), icc.as_deref());
    image.apply_orientation(orientation);
    Ok(Decoded {
        image,
        format: Format::Jpeg,
        full_width,
        full_height,
    })
}

/// Naive CMYK → RGB (no ICC profile). Adobe (Photoshop) JPEGs store CMYK inverted, i.e. as
/// 255 − ink; others store ink directly.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let (c, m, y, k) = if inverted {
            (px[0], px[1], px[2], px[3])
        } else {
            (255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3])
        };
        // Here each value is the fraction of light that gets through (255 = no ink).
        let k = u32::from(k);
        for v in [c, m, y] {
            rgb.push(((u32::from(v) * k + 127) / 255) as u8);
        }
    }
    rgb
}

// ---------------------------------------------------------------------------------------------
// PNG, WebP, GIF

/// Width and height from a PNG's IHDR, which the PNG spec requires to come first.
fn png_header_size(data: &[u8]) -> Result<(u32, u32), OpError> {
    if data.len() < 24 || &data[12..16] != b"IHDR" {
        return Err(OpError::Undecodable(
            "the PNG is truncated or does not start with an IHDR chunk".to_string(),
        ));
    }
    let be = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    Ok((be(16), be(20)))
}

/// The GIF logical screen size, which the first frame is composed on.
fn gif_header_size(data: &[u8]) -> Result<(u32, u32), OpError> {
    if data.len() < 10 {
        return Err(OpError::Undecodable(
            "the GIF header is truncated".to_string(),
        ));
    }
    let le = |i: usize| u32::from(u16::from_le_bytes([data[i], data[i + 1]]));
    Ok((le(6), le(8)))
}

fn image_error(format: Format, e: ImageError) -> OpError {
    match e {
        ImageError::Limits(l) => OpError::PixelLimit(format!(
            "the {} needs more memory to decode than the pixel limit allows: {l}",
            format.name()
        )),
        other => OpError::Undecodable(format!("the {} does not decode: {other}", format.name())),
    }
}

fn decode_with_image(
    data: &[u8],
    format: Format,
    limits: &Limits,
    resize_to: Option<&ResizeSpec>,
) -> Result<Decoded, OpError> {
    // Our own header read gives the exact message and needs no decoder state; the decoder's
    // own dimensions are checked again below (WebP is only read there).
    match format {
        Format::Png => {
            let (w, h) = png_header_size(data)?;
            check_decoded_size(format, w, h, limits)?;
        }
        Format::Gif => {
            let (w, h) = gif_header_size(data)?;
            check_decoded_size(format, w, h, limits)?;
        }
        Format::Jpeg | Format::WebP | Format::Avif => {}
    }
    let image_format = match format {
        Format::Png => ImageFormat::Png,
        Format::Gif => ImageFormat::Gif,
        Format::WebP => ImageFormat::WebP,
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Avif => return Err(OpError::UnsupportedFormat(unsupported_message(data))),
    };
    let mut reader = ImageReader::with_format(Cursor::new(data), image_format);
    // Second guard: the decoders' own allocation limit, sized for the largest allowed image at
    // 16 bits × 4 channels plus working memory.
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(image_limits);
    let mut decoder = reader.into_decoder().map_err(|e| image_error(format, e))?;
    let (width, height) = decoder.dimensions();
    check_decoded_size(format, width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();
    let (full_width, full_height) = upright_size(width, height, orientation);
    if let Some(spec) = resize_to {
        // Fail a resize bomb before spending time on decoding.
        resize::target_size(spec, full_width, full_height, limits)?;
    }
    // Still WebP through libwebp (SIMD): 3-4x faster than the `image` crate's pure-Rust decoder
    // on large photos. Animated files (libwebp's simple API refuses them) and anything libwebp
    // rejects go through `image`, which decodes the first frame or says what is wrong.
    let fast = match format {
        Format::WebP => webp::Decoder::new(data)
            .decode()
            .filter(|img| (img.width(), img.height()) == (width, height))
            .map(|img| img.to_image()),
        _ => None,
    };
    let image = match fast {
        Some(image) => image,
        None => DynamicImage::from_decoder(decoder).map_err(|e| image_error(format, e))?,
    };
    let mut image = colour::to_srgb(to_rgb8_or_rgba8(image), icc.as_deref());
    image.apply_orientation(orientation);
    Ok(Decoded {
        image,
        format,
        full_width,
        full_height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_on_load_leaves_a_factor_of_two() {
        assert_eq!(jpeg_scale_numerator((6000, 4000), (200, 133)), 1); // 30× → 1/8
        assert_eq!(jpeg_scale_numerator((6000, 4000), (600, 400)), 2); // 10× → 1/4
        assert_eq!(jpeg_scale_numerator((6000, 4000), (1200, 800)), 4); // 5× → 1/2
        assert_eq!(jpeg_scale_numerator((6000, 4000), (2000, 1333)), 8); // 3× → none
        assert_eq!(jpeg_scale_numerator((100, 100), (400, 400)), 8); // upscale → none
                                                                     // Exact resizes: the less-shrunk axis decides.
        assert_eq!(jpeg_scale_numerator((6000, 4000), (100, 2000)), 8);
    }

    #[test]
    fn cmyk_conversion_both_conventions() {
        // Adobe (inverted): 255 means no ink.
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 255], true), vec![255, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0], true), vec![0, 0, 0]);
        // Plain: 0 means no ink.
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 0], false), vec![255, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), vec![0, 0, 0]);
    }

    #[test]
    fn header_sizes_and_messages() {
        assert!(matches!(
            png_header_size(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHD"),
            Err(OpError::Undecodable(_))
        ));
        assert_eq!(
            gif_header_size(b"GIF89a\x10\x00\x20\x00").unwrap(),
            (16, 32)
        );
        let l = Limits {
            max_pixels: 100,
            avif_speed: super::super::DEFAULT_AVIF_SPEED,
        };
        assert!(matches!(
            check_decoded_size(Format::Png, 0, 5, &l),
            Err(OpError::Undecodable(_))
        ));
        match check_decoded_size(Format::Png, 11, 10, &l) {
            Err(OpError::PixelLimit(m)) => {
                assert_eq!(m, "image is 11x10 = 110 pixels, above the limit of 100")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            unsupported_message(b"\x00\x01hello"),
            "not a JPEG, PNG, WebP or GIF image (it starts with bytes 00 01 68 65 6c 6c 6f)"
        );
    }
}
