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
        // Through the embedded press profile when there is one; the naive formula otherwise.
        let rgb = icc
            .as_deref()
            .and_then(|profile| colour::cmyk_to_srgb(&cmyk, adobe, profile))
            .unwrap_or_else(|| cmyk_to_rgb(&cmyk, adobe));
        (w, h, rgb)
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
    // CMYK is already sRGB here (its profile, if any, was applied above).
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

/// Naive CMYK → RGB (for CMYK without a usable ICC profile). Adobe (Photoshop) JPEGs store CMYK inverted, i.e. as
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

/// A GIF without a global colour table (legal: "a default table may be used") gets a grey ramp
/// as its global table, as Pillow and browsers do, so that frames without a local table decode
/// instead of failing with "no color table". Any other GIF is returned as it is.
fn gif_with_default_palette(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const SCREEN_DESCRIPTOR_END: usize = 13;
    const HAS_GLOBAL_TABLE: u8 = 0x80;
    if data.len() < SCREEN_DESCRIPTOR_END || data[10] & HAS_GLOBAL_TABLE != 0 {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + 768);
    out.extend_from_slice(&data[..SCREEN_DESCRIPTOR_END]);
    // A global table of 2^(7+1) = 256 entries; the colour resolution bits are kept.
    out[10] |= HAS_GLOBAL_TABLE | 0x07;
    out.extend((0..=255u8).flat_map(|v| [v, v, v]));
    out.extend_from_slice(&data[SCREEN_DESCRIPTOR_END..]);
    std::borrow::Cow::Owned(out)
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
    let with_palette;
    let data = if format == Format::Gif {
        with_palette = gif_with_default_palette(data);
        &with_palette[..]
    } else {
        data
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

    /// A baseline JPEG with arithmetic entropy coding instead of Huffman, written with
    /// libjpeg's own encoder (what `cjpeg -arithmetic` does).
    fn arithmetic_jpeg(image: &RgbImage) -> Vec<u8> {
        use mozjpeg_sys::*;
        unsafe extern "C-unwind" fn fail(cinfo: &mut jpeg_common_struct) {
            let _ = cinfo;
            panic!("libjpeg failed while writing the test JPEG");
        }
        // SAFETY: the libjpeg compress sequence on zeroed structs, as its manual describes;
        // every pointer lives until jpeg_destroy_compress, and errors unwind out of `fail`.
        unsafe {
            let mut err: jpeg_error_mgr = std::mem::zeroed();
            let mut cinfo: jpeg_compress_struct = std::mem::zeroed();
            let handler = jpeg_std_error(&mut err);
            handler.error_exit = Some(fail);
            cinfo.common.err = handler;
            jpeg_CreateCompress(
                &mut cinfo,
                JPEG_LIB_VERSION,
                std::mem::size_of::<jpeg_compress_struct>(),
            );
            let mut out: *mut u8 = std::ptr::null_mut();
            let mut size: std::ffi::c_ulong = 0;
            jpeg_mem_dest(&mut cinfo, &mut out, &mut size);
            cinfo.image_width = image.width();
            cinfo.image_height = image.height();
            cinfo.input_components = 3;
            cinfo.in_color_space = J_COLOR_SPACE::JCS_RGB;
            jpeg_c_set_int_param(
                &mut cinfo,
                J_INT_PARAM::JINT_COMPRESS_PROFILE,
                JCP_FASTEST as i32,
            );
            jpeg_set_defaults(&mut cinfo);
            jpeg_set_quality(&mut cinfo, 90, 1);
            cinfo.arith_code = 1;
            cinfo.optimize_coding = 0;
            jpeg_start_compress(&mut cinfo, 1);
            let stride = image.width() as usize * 3;
            for row in image.as_raw().chunks_exact(stride) {
                let rows = [row.as_ptr()];
                jpeg_write_scanlines(&mut cinfo, rows.as_ptr(), 1);
            }
            jpeg_finish_compress(&mut cinfo);
            let bytes = std::slice::from_raw_parts(out, size as usize).to_vec();
            jpeg_destroy_compress(&mut cinfo);
            libc::free(out.cast());
            bytes
        }
    }

    #[test]
    fn an_arithmetic_coded_jpeg_decodes() {
        let image = crate::compute::ops::testutil::photo_like(96, 64, 11);
        let jpeg = arithmetic_jpeg(&image);
        // SOF9: extended sequential DCT, arithmetic coding.
        assert!(
            jpeg.windows(2).any(|w| w == [0xFF, 0xC9]),
            "not arithmetic-coded"
        );
        let decoded = decode(&jpeg, &crate::compute::ops::testutil::limits(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((decoded.image.width(), decoded.image.height()), (96, 64));
        let diff = crate::compute::ops::testutil::region_diff(
            &decoded.image.to_rgb8(),
            &image,
            0,
            0,
            96,
            64,
        );
        assert!(diff < 10.0, "mean difference {diff}");
        // Shrink-on-load works on it too.
        let spec = ResizeSpec {
            width: 24,
            height: 16,
            keep_aspect: true,
        };
        assert!(decode(&jpeg, &crate::compute::ops::testutil::limits(), Some(&spec)).is_ok());
    }

    #[test]
    fn a_gif_without_any_colour_table_decodes_as_grey() {
        // Pillow's no_palette.gif kind: neither a global nor a local colour table. The gif
        // encoder will not write that, so a frame is written with a local table, which is then
        // cut out of the bytes (the LZW data of the indices stays valid).
        let (w, h) = (8u16, 4u16);
        let indices: Vec<u8> = (0..u32::from(w) * u32::from(h))
            .map(|i| (i * 8) as u8)
            .collect();
        let mut with_table = Vec::new();
        {
            let grey: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
            let mut encoder = gif::Encoder::new(&mut with_table, w, h, &[]).unwrap();
            let frame = gif::Frame::from_indexed_pixels(w, h, indices.clone(), None);
            let frame = gif::Frame {
                palette: Some(grey),
                ..frame
            };
            encoder.write_frame(&frame).unwrap();
        }
        // The encoder writes a (zeroed, 2-entry) global table even when given none: cut it.
        if with_table[10] & 0x80 != 0 {
            let global_len = 3 << ((with_table[10] & 0x07) + 1);
            with_table[10] &= !0x87;
            with_table.drain(13..13 + global_len);
        }
        // Skip extension blocks (0x21 label, sub-blocks, 0) to the image descriptor (0x2C).
        let mut at = 13;
        while with_table[at] == 0x21 {
            at += 2;
            while with_table[at] != 0 {
                at += 1 + with_table[at] as usize;
            }
            at += 1;
        }
        assert_eq!(with_table[at], 0x2C);
        let flags = with_table[at + 9];
        assert_ne!(flags & 0x80, 0, "the frame has a local table to cut");
        let table_len = 3 << ((flags & 0x07) + 1);
        let mut gif = with_table[..at + 9].to_vec();
        gif.push(flags & !0x87);
        gif.extend_from_slice(&with_table[at + 10 + table_len..]);
        assert_eq!(gif[10] & 0x80, 0, "no global table");
        let decoded = decode(&gif, &crate::compute::ops::testutil::limits(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let rgb = decoded.image.to_rgb8();
        for (pixel, index) in rgb.pixels().zip(&indices) {
            assert_eq!(pixel.0, [*index; 3]);
        }
        // A GIF with its own table is left as it is.
        let mut plain = Vec::new();
        {
            let mut encoder = gif::Encoder::new(&mut plain, 1, 1, &[255, 0, 0, 0, 0, 0]).unwrap();
            encoder
                .write_frame(&gif::Frame::from_indexed_pixels(1, 1, vec![0], None))
                .unwrap();
        }
        assert!(matches!(
            gif_with_default_palette(&plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }

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
