//! Encoding: JPEG with mozjpeg in its libjpeg-turbo-speed profile (plus optimized Huffman
//! tables, a cheap extra pass that saves a few percent), PNG with the `image` crate at its fast
//! compression level, and lossy WebP with libwebp through the `webp` crate.
//!
//! JPEG has no alpha, so RGBA is flattened onto white; PNG and WebP keep alpha.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, RgbImage, RgbaImage};

use super::{panic_message, Encoded, Format, OpError};

/// Largest side a baseline JPEG can store.
const JPEG_MAX_SIDE: u32 = 65_500;
/// Largest side a WebP can store.
const WEBP_MAX_SIDE: u32 = 16_383;

/// Encode an `ImageRgb8`/`ImageRgba8` as `format` (`Gif` is written as PNG).
pub(crate) fn encode(
    image: DynamicImage,
    format: Format,
    quality: u8,
    limits: &super::Limits,
) -> Result<Encoded, OpError> {
    let quality = quality.clamp(1, 100);
    let image = super::to_rgb8_or_rgba8(image);
    let (width, height) = (image.width(), image.height());
    let (data, format) = match format {
        Format::Jpeg => (encode_jpeg(image, quality)?, Format::Jpeg),
        Format::Png | Format::Gif => (encode_png(&image)?, Format::Png),
        Format::WebP => (encode_webp(&image, quality)?, Format::WebP),
        Format::Avif => (
            encode_avif(&image, quality, limits.avif_speed)?,
            Format::Avif,
        ),
    };
    Ok(Encoded {
        data,
        format,
        width,
        height,
    })
}

fn too_large(format: &str, max: u32, width: u32, height: u32) -> OpError {
    OpError::BadParameter(format!(
        "{format} cannot store an image of {width}x{height}: each side must be at most {max} \
         pixels; choose another output format"
    ))
}

/// Composite RGBA onto an opaque white background.
fn flatten_on_white(rgba: &RgbaImage) -> RgbImage {
    let mut rgb = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        for &c in &px[..3] {
            rgb.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(rgba.width(), rgba.height(), rgb).expect("buffer has width*height*3 bytes")
}

fn encode_jpeg(image: DynamicImage, quality: u8) -> Result<Vec<u8>, OpError> {
    let (width, height) = (image.width(), image.height());
    if width > JPEG_MAX_SIDE || height > JPEG_MAX_SIDE {
        return Err(too_large("JPEG", JPEG_MAX_SIDE, width, height));
    }
    let rgb = match image {
        DynamicImage::ImageRgba8(rgba) => flatten_on_white(&rgba),
        other => other.into_rgb8(),
    };
    // libjpeg reports errors by unwinding through mozjpeg.
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        // The JCP_FASTEST profile is plain libjpeg-turbo (no trellis, no progressive scans):
        // mozjpeg's default profile is several times slower.
        comp.set_fastest_defaults();
        comp.set_size(width as usize, height as usize);
        comp.set_quality(f32::from(quality));
        comp.set_optimize_coding(true);
        if quality >= 90 {
            // Like libvips: no chroma subsampling at high quality, where its blur is visible.
            comp.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
        }
        // Compressed size is usually well under 1/4 of the RGB size.
        let capacity = (rgb.as_raw().len() / 8).max(4096);
        let mut started = comp.start_compress(Vec::with_capacity(capacity))?;
        started.write_scanlines(rgb.as_raw())?;
        started.finish()
    }));
    match result {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(e)) => Err(OpError::Undecodable(format!("JPEG encoding failed: {e}"))),
        Err(panic) => Err(OpError::Undecodable(format!(
            "JPEG encoding failed: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, OpError> {
    let color = match image {
        DynamicImage::ImageRgba8(_) => ExtendedColorType::Rgba8,
        _ => ExtendedColorType::Rgb8,
    };
    let mut out = Vec::new();
    // Fast deflate + adaptive filtering: most of the size win at a fraction of the time.
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(image.as_bytes(), image.width(), image.height(), color)
        .map_err(|e| OpError::Undecodable(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

fn encode_webp(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, OpError> {
    let (width, height) = (image.width(), image.height());
    if width > WEBP_MAX_SIDE || height > WEBP_MAX_SIDE {
        return Err(too_large("WebP", WEBP_MAX_SIDE, width, height));
    }
    let encoder = match image {
        DynamicImage::ImageRgba8(rgba) => webp::Encoder::from_rgba(rgba.as_raw(), width, height),
        DynamicImage::ImageRgb8(rgb) => webp::Encoder::from_rgb(rgb.as_raw(), width, height),
        _ => {
            return Err(OpError::Undecodable(
                "internal error: WebP encoder got an unexpected pixel layout".to_string(),
            ))
        }
    };
    let mut config = webp::WebPConfig::new()
        .map_err(|()| OpError::Undecodable("libwebp config init failed".to_string()))?;
    // libwebp's defaults otherwise (method 4, the same as libvips' default effort).
    config.quality = f32::from(quality);
    config.method = WEBP_METHOD;
    let memory = encoder
        .encode_advanced(&config)
        .map_err(|e| OpError::Undecodable(format!("WebP encoding failed: {e:?}")))?;
    Ok(memory.to_vec())
}

/// AVIF with rav1e (through `image`'s ravif encoder) on one thread: the job already holds
/// one of compute's CPU workers, and rav1e's own threads would take cores the pool does not
/// count. 8-bit 4:4:4, sRGB (the decoder has already converted any embedded profile).
fn encode_avif(image: &DynamicImage, quality: u8, speed: u8) -> Result<Vec<u8>, OpError> {
    let (width, height) = (image.width(), image.height());
    let color = match image {
        DynamicImage::ImageRgba8(_) => ExtendedColorType::Rgba8,
        _ => ExtendedColorType::Rgb8,
    };
    let mut out = Vec::new();
    image::codecs::avif::AvifEncoder::new_with_speed_quality(&mut out, speed.clamp(1, 10), quality)
        .with_num_threads(Some(1))
        .write_image(image.as_bytes(), width, height, color)
        .map_err(|e| OpError::Undecodable(format!("AVIF encoding failed: {e}")))?;
    Ok(out)
}

/// libwebp effort, 0 (fastest) to 6 (smallest).
const WEBP_METHOD: i32 = 4;
