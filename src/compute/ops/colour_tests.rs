//! Colour through the whole pipeline (CONTRACT §1 "Colour and metadata"): Display-P3 images
//! tagged as such in each container come out as the same colours in sRGB, not desaturated.
//! The expected values come from the published P3 → sRGB matrix, not from moxcms.

use std::io::Write;

use image::{DynamicImage, Rgb, RgbImage};

use super::testutil::*;
use super::*;

/// Uniform colours, as P3 code values.
const P3_COLOURS: [[u8; 3]; 3] = [[60, 180, 90], [200, 60, 50], [40, 90, 200]];

fn srgb_decode(v: u8) -> f64 {
    let c = f64::from(v) / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn srgb_encode(l: f64) -> u8 {
    let l = l.clamp(0.0, 1.0);
    let c = if l <= 0.003_130_8 {
        l * 12.92
    } else {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    };
    (c * 255.0).round() as u8
}

/// Display P3 → sRGB: both use the sRGB transfer curve and D65; linear light goes through the
/// matrix between their primaries.
fn p3_to_srgb(p3: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = p3.map(srgb_decode);
    [
        srgb_encode(1.224_940 * r - 0.224_940 * g),
        srgb_encode(-0.042_057 * r + 1.042_057 * g),
        srgb_encode(-0.019_638 * r - 0.078_636 * g + 1.098_274 * b),
    ]
}

fn p3_profile() -> Vec<u8> {
    moxcms::ColorProfile::new_display_p3().encode().unwrap()
}

fn uniform(colour: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(64, 48, Rgb(colour))
}

fn png_p3(colour: [u8; 3]) -> Vec<u8> {
    let plain = png_of(DynamicImage::ImageRgb8(uniform(colour)));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&p3_profile()).unwrap();
    let mut body = b"Display P3\0\0".to_vec();
    body.extend(z.finish().unwrap());
    let after_ihdr = 8 + 8 + 13 + 4;
    let mut out = plain[..after_ihdr].to_vec();
    out.extend(png_chunk(b"iCCP", &body));
    out.extend_from_slice(&plain[after_ihdr..]);
    out
}

fn jpeg_p3(colour: [u8; 3]) -> Vec<u8> {
    let plain = jpeg_of(uniform(colour), 100);
    let mut body = b"ICC_PROFILE\0\x01\x01".to_vec();
    body.extend(p3_profile());
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE2]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend(body);
    out.extend_from_slice(&plain[2..]);
    out
}

/// A lossless WebP (exact pixels) extended with VP8X and an ICCP chunk.
fn webp_p3(colour: [u8; 3]) -> Vec<u8> {
    let image = uniform(colour);
    let mut plain = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut plain)
        .encode(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    let mut vp8x = vec![0x20, 0, 0, 0]; // the ICC flag
    vp8x.extend_from_slice(&(image.width() - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(image.height() - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    body.extend(riff_chunk(b"ICCP", &p3_profile()));
    body.extend_from_slice(&plain[12..]);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn centre(data: &[u8]) -> [u8; 3] {
    let image = load(data).to_rgb8();
    image.get_pixel(image.width() / 2, image.height() / 2).0
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tolerance)
}

#[test]
fn display_p3_comes_out_as_the_same_colour_in_srgb() {
    let limits = limits();
    let mut wrong = Vec::new();
    for colour in P3_COLOURS {
        let want = p3_to_srgb(colour);
        assert!(
            !close(want, colour, 4),
            "{colour:?}: P3 and sRGB differ enough to tell"
        );
        for (container, input, tolerance) in [
            ("png", png_p3(colour), 2),
            ("webp", webp_p3(colour), 2),
            ("jpeg", jpeg_p3(colour), 4),
        ] {
            let out = compress(&input, 100, OutputFormat::Png, &limits).unwrap();
            let got = centre(&out.data);
            if !close(got, want, tolerance) {
                wrong.push(format!(
                    "{container} {colour:?}: got {got:?}, want {want:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "colours changed:\n{}", wrong.join("\n"));
}

#[test]
fn an_srgb_profile_keeps_the_colours() {
    let srgb = moxcms::ColorProfile::new_srgb().encode().unwrap();
    let image = DynamicImage::ImageRgb8(uniform([60, 180, 90]));
    let converted = colour::to_srgb(image.clone(), Some(&srgb));
    assert!(close(centre(&png_of(converted)), [60, 180, 90], 1));
}
