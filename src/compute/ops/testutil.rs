//! Test fixtures made in code: photo-like images (so codecs behave as on photos), hand-built
//! container bytes (EXIF segments, PNG headers) and small helpers.

use image::{DynamicImage, Rgb, RgbImage};

use super::{encode, Format, Limits};

pub(crate) fn limits() -> Limits {
    Limits {
        max_pixels: 50_000_000,
        avif_speed: super::DEFAULT_AVIF_SPEED,
    }
}

/// A tiny deterministic PRNG (xorshift64*), enough for noise.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// Smooth gradients, a few hard edges and sensor-like noise: what a codec sees in a photo.
pub(crate) fn photo_like(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let (w, h) = (width as f32, height as f32);
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / w, y as f32 / h);
        let mut r = 120.0 + 90.0 * (fx * 3.1 + fy * 1.3).sin();
        let mut g = 110.0 + 80.0 * (fy * 4.7 - fx * 0.9).cos();
        let mut b = 100.0 + 70.0 * (fx * fy * 9.0).sin();
        // A disc and a bar: hard edges.
        let (dx, dy) = (fx - 0.35, fy - 0.45);
        if dx * dx + dy * dy < 0.04 {
            r = 230.0;
            g *= 0.5;
            b *= 0.4;
        }
        if (0.7..0.78).contains(&fx) {
            r *= 0.3;
            g *= 0.3;
            b *= 0.35;
        }
        let noise = |rng: &mut Rng| (rng.next_u32() % 25) as f32 - 12.0;
        Rgb([
            (r + noise(&mut rng)).clamp(0.0, 255.0) as u8,
            (g + noise(&mut rng)).clamp(0.0, 255.0) as u8,
            (b + noise(&mut rng)).clamp(0.0, 255.0) as u8,
        ])
    })
}

pub(crate) fn encode_as(image: DynamicImage, format: Format, quality: u8) -> Vec<u8> {
    encode::encode(image, format, quality, &limits())
        .unwrap()
        .data
}

pub(crate) fn jpeg_of(image: RgbImage, quality: u8) -> Vec<u8> {
    encode_as(DynamicImage::ImageRgb8(image), Format::Jpeg, quality)
}

pub(crate) fn png_of(image: DynamicImage) -> Vec<u8> {
    encode_as(image, Format::Png, 100)
}

pub(crate) use crate::testkit::crc32;

/// A PNG that is only a signature and a valid IHDR (correct CRC) claiming `width`×`height`
/// RGBA: no image data at all.
pub(crate) fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}

/// Insert an APP1 EXIF segment carrying only an orientation tag right after SOI.
pub(crate) fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a"); // big-endian TIFF header
    tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 at offset 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Decode any output for checking pixels (the `image` crate, independent of our decoder).
pub(crate) fn load(data: &[u8]) -> DynamicImage {
    image::load_from_memory(data).unwrap()
}

/// Mean absolute difference per channel between two same-sized regions.
pub(crate) fn region_diff(a: &RgbImage, b: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in y0..y1 {
        for x in x0..x1 {
            let (pa, pb) = (a.get_pixel(x, y), b.get_pixel(x, y));
            for c in 0..3 {
                sum += u64::from(pa.0[c].abs_diff(pb.0[c]));
                n += 1;
            }
        }
    }
    sum as f64 / n.max(1) as f64
}

/// A RIFF chunk (WebP), padded to an even length.
pub(crate) fn riff_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut c = kind.to_vec();
    c.extend_from_slice(&(body.len() as u32).to_le_bytes());
    c.extend_from_slice(body);
    if body.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// A PNG chunk: length, type, body, CRC.
pub(crate) fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut c = (body.len() as u32).to_be_bytes().to_vec();
    let mut typed = kind.to_vec();
    typed.extend_from_slice(body);
    c.extend_from_slice(&typed);
    c.extend_from_slice(&crc32(&typed).to_be_bytes());
    c
}
