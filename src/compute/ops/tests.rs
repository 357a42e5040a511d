use std::time::{Duration, Instant};

use image::{DynamicImage, ImageBuffer, Rgb, Rgba, RgbaImage};

use super::testutil::*;
use super::*;

fn fit(width: u32, height: u32) -> ResizeSpec {
    ResizeSpec {
        width,
        height,
        keep_aspect: true,
    }
}

fn exact(width: u32, height: u32) -> ResizeSpec {
    ResizeSpec {
        width,
        height,
        keep_aspect: false,
    }
}

/// A result for a failure message, without the encoded bytes.
fn brief(r: &Result<Encoded, OpError>) -> String {
    match r {
        Ok(e) => format!(
            "Ok({} {}x{}, {} bytes)",
            e.format.name(),
            e.width,
            e.height,
            e.data.len()
        ),
        Err(e) => format!("{e:?}"),
    }
}

fn dims(r: &Encoded) -> (u32, u32) {
    (r.width, r.height)
}

fn text_mark(text: &str, position: Position) -> WatermarkSpec<'_> {
    WatermarkSpec {
        mark: Mark::Text {
            text,
            font_size: None,
        },
        position,
        opacity: 0.8,
    }
}

#[test]
fn resize_dimensions_fit_exact_upscale_and_zero_side() {
    let src = jpeg_of(photo_like(400, 300, 1), 85);
    let l = limits();
    let cases = [
        (fit(200, 200), (200, 150)),
        (fit(200, 100), (133, 100)),
        (fit(100, 0), (100, 75)),
        (fit(0, 60), (80, 60)),
        (fit(800, 800), (800, 600)), // fit scales up too
        (fit(1, 1), (1, 1)),         // never below 1 pixel
        (exact(123, 45), (123, 45)),
        (exact(1000, 10), (1000, 10)),
    ];
    for (spec, want) in cases {
        let out = resize(&src, spec, OutputFormat::Keep, 80, &l).unwrap();
        assert_eq!(dims(&out), want, "{spec:?}");
        assert_eq!(out.format, Format::Jpeg);
        let decoded = load(&out.data);
        assert_eq!((decoded.width(), decoded.height()), want, "{spec:?}");
    }
    // A very thin image: the derived side rounds to at least 1.
    let strip = png_of(DynamicImage::ImageRgb8(photo_like(1000, 2, 2)));
    let out = resize(&strip, fit(100, 0), OutputFormat::Png, 80, &l).unwrap();
    assert_eq!(dims(&out), (100, 1));
}

#[test]
fn output_format_by_magic_bytes() {
    let l = limits();
    let jpeg = jpeg_of(photo_like(64, 48, 3), 90);
    let png = png_of(DynamicImage::ImageRgb8(photo_like(64, 48, 4)));
    let cases = [
        (OutputFormat::Jpeg, Format::Jpeg, &b"\xFF\xD8\xFF"[..]),
        (OutputFormat::Png, Format::Png, &b"\x89PNG\r\n\x1a\n"[..]),
        (OutputFormat::WebP, Format::WebP, &b"RIFF"[..]),
    ];
    for src in [&jpeg, &png] {
        for (out, want, magic) in cases {
            let r = compress(src, 75, out, &l).unwrap();
            assert_eq!(r.format, want);
            assert!(r.data.starts_with(magic), "{out:?}");
            assert_eq!(sniff(&r.data), Some(want));
            assert_eq!(dims(&r), (64, 48));
        }
    }
    assert_eq!(
        compress(&jpeg, 75, OutputFormat::Keep, &l).unwrap().format,
        Format::Jpeg
    );
    assert_eq!(
        compress(&png, 75, OutputFormat::Keep, &l).unwrap().format,
        Format::Png
    );
    let webp = compress(&png, 75, OutputFormat::WebP, &l).unwrap().data;
    let kept = compress(&webp, 75, OutputFormat::Keep, &l).unwrap();
    assert_eq!(kept.format, Format::WebP);
    assert!(&kept.data[8..12] == b"WEBP");
}

#[test]
fn exif_orientation_6_swaps_width_and_height() {
    // Left half red, right half blue; orientation 6 = rotate 90° clockwise to display,
    // so the left edge ends up at the top.
    let img = ImageBuffer::from_fn(80, 40, |x, _| {
        if x < 40 {
            Rgb([230u8, 20, 20])
        } else {
            Rgb([20u8, 20, 230])
        }
    });
    let jpeg = with_exif_orientation(&jpeg_of(img, 95), 6);
    let l = limits();
    let out = compress(&jpeg, 90, OutputFormat::Png, &l).unwrap();
    assert_eq!(dims(&out), (40, 80));
    let px = load(&out.data).to_rgb8();
    assert!(px.get_pixel(20, 5).0[0] > 150, "top should be red");
    assert!(px.get_pixel(20, 75).0[2] > 150, "bottom should be blue");

    // The same with shrink-on-load: a box computed on the upright image.
    let big = ImageBuffer::from_fn(1600, 800, |x, _| {
        if x < 800 {
            Rgb([230u8, 20, 20])
        } else {
            Rgb([20u8, 20, 230])
        }
    });
    let jpeg = with_exif_orientation(&jpeg_of(big, 90), 6);
    let out = resize(&jpeg, fit(50, 50), OutputFormat::Png, 80, &l).unwrap();
    assert_eq!(dims(&out), (25, 50));
    let px = load(&out.data).to_rgb8();
    assert!(px.get_pixel(12, 3).0[0] > 150, "top should be red");
}

#[test]
fn jpeg_shrink_on_load_decodes_small_but_output_is_exact() {
    let jpeg = jpeg_of(photo_like(2400, 1600, 5), 85);
    let l = limits();
    // Shrink 24× → libjpeg 1/8 (300×200) leaves ≥2× for Lanczos.
    let decoded = decode::decode(&jpeg, &l, Some(&fit(100, 100))).unwrap();
    assert_eq!((decoded.image.width(), decoded.image.height()), (300, 200));
    assert_eq!((decoded.full_width, decoded.full_height), (2400, 1600));
    let decoded = decode::decode(&jpeg, &l, Some(&fit(500, 0))).unwrap();
    assert_eq!(decoded.image.width(), 1200, "shrink 4.8 → 1/2");
    let out = resize(&jpeg, fit(100, 100), OutputFormat::Jpeg, 75, &l).unwrap();
    assert_eq!(dims(&out), (100, 67));
    // And the result still looks like the source (no block-shrink garbage).
    let reference = DynamicImage::ImageRgb8(photo_like(2400, 1600, 5))
        .resize_exact(100, 67, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let got = load(&out.data).to_rgb8();
    let diff = region_diff(&got, &reference, 0, 0, 100, 67);
    assert!(diff < 12.0, "mean abs diff {diff}");
}

#[test]
fn webp_quality_is_monotonic_in_size() {
    let png = png_of(DynamicImage::ImageRgb8(photo_like(512, 384, 6)));
    let l = limits();
    let sizes: Vec<usize> = [30, 60, 90]
        .iter()
        .map(|&q| {
            compress(&png, q, OutputFormat::WebP, &l)
                .unwrap()
                .data
                .len()
        })
        .collect();
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    let jpeg_sizes: Vec<usize> = [30, 60, 90]
        .iter()
        .map(|&q| {
            compress(&png, q, OutputFormat::Jpeg, &l)
                .unwrap()
                .data
                .len()
        })
        .collect();
    assert!(
        jpeg_sizes[0] < jpeg_sizes[1] && jpeg_sizes[1] < jpeg_sizes[2],
        "{jpeg_sizes:?}"
    );
}

/// Watermark one corner of a flat mid-gray PNG; returns (input, output) pixels.
fn watermarked(spec: &WatermarkSpec<'_>) -> (image::RgbImage, image::RgbImage) {
    let src = RgbaImage::from_pixel(400, 300, Rgba([128, 128, 128, 255]));
    let src = DynamicImage::ImageRgba8(src);
    let png = png_of(src.clone());
    let out = watermark(&png, spec, OutputFormat::Png, 80, &limits()).unwrap();
    assert_eq!(dims(&out), (400, 300));
    (src.to_rgb8(), load(&out.data).to_rgb8())
}

#[test]
fn text_watermark_changes_its_corner_only() {
    let quadrants = [
        (Position::TopLeft, (0, 0), (200, 150)),
        (Position::TopRight, (200, 0), (0, 150)),
        (Position::BottomLeft, (0, 150), (200, 0)),
        (Position::BottomRight, (200, 150), (0, 0)),
    ];
    for (position, (qx, qy), (ox, oy)) in quadrants {
        let (before, after) = watermarked(&text_mark("imagegate", position));
        let changed = region_diff(&before, &after, qx, qy, qx + 200, qy + 150);
        let opposite = region_diff(&before, &after, ox, oy, ox + 200, oy + 150);
        assert!(changed > 1.0, "{position:?}: corner diff {changed}");
        assert_eq!(opposite, 0.0, "{position:?}: opposite corner changed");
    }
    let (before, after) = watermarked(&text_mark("imagegate", Position::Center));
    assert!(region_diff(&before, &after, 150, 120, 250, 180) > 1.0);
    assert_eq!(region_diff(&before, &after, 0, 0, 400, 60), 0.0);
}

#[test]
fn text_watermark_unicode_long_multiline_and_sizes() {
    let l = limits();
    let jpeg = jpeg_of(photo_like(300, 200, 7), 85);
    let long = "very long watermark text ".repeat(40);
    let texts = [
        "水印 ✓ Привет 🙂 \u{200D}\u{FFFF}",
        long.as_str(),
        "two\nlines\r\n",
        "\u{0}\u{7}tab\there",
    ];
    for text in texts {
        for position in [Position::BottomRight, Position::TopLeft, Position::Center] {
            let out = watermark(
                &jpeg,
                &text_mark(text, position),
                OutputFormat::Keep,
                80,
                &l,
            )
            .unwrap();
            assert_eq!(dims(&out), (300, 200));
        }
    }
    for font_size in [Some(1), Some(300), Some(MAX_FONT_SIZE_FOR_TESTS), Some(0)] {
        let spec = WatermarkSpec {
            mark: Mark::Text {
                text: "Big",
                font_size,
            },
            position: Position::Center,
            opacity: 1.0,
        };
        watermark(&jpeg, &spec, OutputFormat::Jpeg, 80, &l).unwrap();
    }
}

const MAX_FONT_SIZE_FOR_TESTS: u32 = watermark::MAX_FONT_SIZE;

#[test]
fn watermark_parameter_errors() {
    let l = limits();
    let jpeg = jpeg_of(photo_like(100, 80, 8), 85);
    let bad = |spec: WatermarkSpec<'_>| watermark(&jpeg, &spec, OutputFormat::Keep, 80, &l);
    assert!(matches!(
        bad(text_mark("", Position::TopLeft)),
        Err(OpError::BadParameter(_))
    ));
    assert!(matches!(
        bad(text_mark("  \n ", Position::TopLeft)),
        Err(OpError::BadParameter(_))
    ));
    let huge_font = WatermarkSpec {
        mark: Mark::Text {
            text: "x",
            font_size: Some(100_000),
        },
        position: Position::TopLeft,
        opacity: 0.5,
    };
    assert!(matches!(bad(huge_font), Err(OpError::BadParameter(_))));
    let overlay = |bytes: &'static [u8]| WatermarkSpec {
        mark: Mark::Overlay(bytes),
        position: Position::TopLeft,
        opacity: 0.5,
    };
    let jpeg_logo: &'static [u8] = Box::leak(jpeg.clone().into_boxed_slice());
    match bad(overlay(jpeg_logo)) {
        Err(OpError::BadParameter(m)) => assert!(m.contains("PNG or WebP"), "{m}"),
        other => panic!("{}", brief(&other)),
    }
    assert!(matches!(
        bad(overlay(b"definitely not an image")),
        Err(OpError::UnsupportedFormat(_))
    ));
    assert!(matches!(bad(overlay(b"")), Err(OpError::BadParameter(_))));
    let truncated_png: &'static [u8] = Box::leak(
        png_of(DynamicImage::ImageRgb8(photo_like(50, 50, 9)))[..100]
            .to_vec()
            .into_boxed_slice(),
    );
    match bad(overlay(truncated_png)) {
        Err(OpError::Undecodable(m)) => assert!(m.starts_with("overlay_image"), "{m}"),
        other => panic!("{}", brief(&other)),
    }
    for opacity in [0.0, -1.0, 1.5, f32::NAN] {
        let spec = WatermarkSpec {
            opacity,
            ..text_mark("x", Position::TopLeft)
        };
        assert!(matches!(bad(spec), Err(OpError::BadParameter(_))));
    }
}

#[test]
fn overlay_watermark_changes_its_corner_only_and_is_scaled_down() {
    // A 300×300 logo (larger than a quarter of the image): opaque red square on transparent.
    let logo = RgbaImage::from_fn(300, 300, |x, y| {
        if (50..250).contains(&x) && (50..250).contains(&y) {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let logo_png = png_of(DynamicImage::ImageRgba8(logo.clone()));
    let logo_webp = encode_as(DynamicImage::ImageRgba8(logo), Format::WebP, 90);
    for bytes in [&logo_png, &logo_webp] {
        let spec = WatermarkSpec {
            mark: Mark::Overlay(bytes),
            position: Position::TopLeft,
            opacity: 1.0,
        };
        let (before, after) = watermarked(&spec);
        assert!(region_diff(&before, &after, 0, 0, 200, 150) > 1.0);
        assert_eq!(region_diff(&before, &after, 200, 150, 400, 300), 0.0);
        // Scaled to at most 100×75, so nothing changes beyond x = 110.
        assert_eq!(region_diff(&before, &after, 110, 0, 400, 300), 0.0);
        // The logo's centre is red.
        let p = after.get_pixel(10 + 37, 10 + 37).0;
        assert!(p[0] > 200 && p[1] < 60, "{p:?}");
    }
}

#[test]
fn png_header_bomb_is_refused_fast() {
    let bomb = png_header_only(100_000, 100_000);
    let l = limits();
    let started = Instant::now();
    for _ in 0..10 {
        match compress(&bomb, 80, OutputFormat::Keep, &l) {
            Err(OpError::PixelLimit(m)) => assert_eq!(
                m,
                "image is 100000x100000 = 10000000000 pixels, above the limit of 50000000"
            ),
            other => panic!("{}", brief(&other)),
        }
        assert!(matches!(
            resize(&bomb, fit(10, 10), OutputFormat::Keep, 80, &l),
            Err(OpError::PixelLimit(_))
        ));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    // The same for a JPEG and a GIF header (JPEG: a SOF claiming 60000×60000).
    let mut jpeg = jpeg_of(photo_like(16, 16, 10), 80);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
    assert!(matches!(
        compress(&jpeg, 80, OutputFormat::Keep, &l),
        Err(OpError::PixelLimit(_))
    ));
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0]);
    assert!(matches!(
        compress(&gif, 80, OutputFormat::Keep, &l),
        Err(OpError::PixelLimit(_))
    ));
}

#[test]
fn produced_pixel_bomb_is_refused() {
    let tiny = png_of(DynamicImage::ImageRgb8(photo_like(10, 10, 11)));
    let l = limits();
    let started = Instant::now();
    match resize(&tiny, exact(16000, 16000), OutputFormat::Keep, 80, &l) {
        Err(OpError::PixelLimit(m)) => assert!(m.contains("256000000"), "{m}"),
        other => panic!("{}", brief(&other)),
    }
    // Fit with one side given derives the other: 10×10 → 16000×16000 as well.
    assert!(matches!(
        resize(&tiny, fit(16000, 0), OutputFormat::Keep, 80, &l),
        Err(OpError::PixelLimit(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(500));
    // Within the limit it works (and upscales).
    let out = resize(&tiny, exact(1000, 500), OutputFormat::Png, 80, &l).unwrap();
    assert_eq!(dims(&out), (1000, 500));
}

#[test]
fn bad_resize_boxes() {
    let src = jpeg_of(photo_like(40, 30, 12), 80);
    let l = limits();
    for spec in [
        fit(0, 0),
        exact(0, 0),
        fit(16385, 10),
        fit(10, 20000),
        exact(0, 10),
    ] {
        assert!(
            matches!(
                resize(&src, spec, OutputFormat::Keep, 80, &l),
                Err(OpError::BadParameter(_))
            ),
            "{spec:?}"
        );
    }
    // Parameter errors win over bad bytes.
    assert!(matches!(
        resize(b"garbage", fit(0, 0), OutputFormat::Keep, 80, &l),
        Err(OpError::BadParameter(_))
    ));
    // The side limit itself is allowed.
    let out = resize(&src, exact(16384, 1), OutputFormat::Jpeg, 80, &l).unwrap();
    assert_eq!(dims(&out), (16384, 1));
}

#[test]
fn garbage_is_unsupported() {
    let l = limits();
    for data in [
        &b""[..],
        b"hello world, not an image",
        b"<html><body></body></html>",
        b"RIFF\0\0\0\0WAVEfmt ",
        &[0xFF, 0xD8],
        b"BM\0\0\0\0",
    ] {
        match compress(data, 80, OutputFormat::Keep, &l) {
            Err(OpError::UnsupportedFormat(m)) => assert!(!m.is_empty()),
            other => panic!("{data:?}: {}", brief(&other)),
        }
    }
}

#[test]
fn truncated_files_are_undecodable() {
    let l = limits();
    let jpeg = jpeg_of(photo_like(256, 192, 13), 85);
    assert!(jpeg.ends_with(&[0xFF, 0xD9]));
    let progressive = {
        // image's own encoder writes baseline; build a progressive one with mozjpeg.
        let img = photo_like(128, 96, 14);
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(128, 96);
        c.set_quality(80.0);
        c.set_progressive_mode();
        let mut s = c.start_compress(Vec::new()).unwrap();
        s.write_scanlines(img.as_raw()).unwrap();
        s.finish().unwrap()
    };
    compress(&progressive, 80, OutputFormat::Keep, &l).unwrap();
    let png = png_of(DynamicImage::ImageRgb8(photo_like(256, 192, 15)));
    let webp = encode_as(
        DynamicImage::ImageRgb8(photo_like(256, 192, 16)),
        Format::WebP,
        80,
    );
    let cases = [
        ("jpeg", &jpeg, true),
        ("progressive", &progressive, true),
        ("png", &png, false),
        ("webp", &webp, false),
    ];
    for (name, data, is_jpeg) in cases {
        let mut cuts = vec![data.len() * 6 / 10, data.len() / 3, 30, 12];
        if is_jpeg {
            // Only the EOI marker missing: libjpeg alone would not even warn loudly.
            cuts.push(data.len() - 2);
        }
        for cut in cuts {
            match compress(&data[..cut], 80, OutputFormat::Keep, &l) {
                Err(OpError::Undecodable(m)) => assert!(!m.is_empty()),
                Err(other) => panic!("{name} cut at {cut}/{}: {other:?}", data.len()),
                Ok(_) => panic!("{name} cut at {cut}/{}: decoded", data.len()),
            }
        }
    }
    // Shrink-on-load must not hide truncation either.
    let big = jpeg_of(photo_like(1600, 1200, 17), 85);
    let cut = &big[..big.len() * 7 / 10];
    assert!(matches!(
        resize(cut, fit(100, 100), OutputFormat::Keep, 80, &l),
        Err(OpError::Undecodable(_))
    ));
    // Trailing bytes after EOI are fine.
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"trailing junk");
    compress(&trailing, 80, OutputFormat::Keep, &l).unwrap();
}

#[test]
fn sixteen_bit_png_decodes() {
    let l = limits();
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(64, 32, |x, y| {
        Rgb([x as u16 * 1000, y as u16 * 2000, 40000])
    });
    let mut png = Vec::new();
    DynamicImage::ImageRgb16(rgb16)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let out = compress(&png, 80, OutputFormat::Keep, &l).unwrap();
    assert_eq!((out.format, dims(&out)), (Format::Png, (64, 32)));
    let p = load(&out.data).to_rgb8().get_pixel(10, 10).0;
    let want = [10_000.0f32, 20_000.0, 40_000.0].map(|v| v * 255.0 / 65535.0);
    for (got, want) in p.iter().zip(want) {
        assert!((f32::from(*got) - want).abs() <= 1.0, "{p:?} vs {want}");
    }

    let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_fn(16, 16, |x, _| {
        Rgba([65535, 0, 0, if x < 8 { 0 } else { 65535 }])
    });
    let mut png = Vec::new();
    DynamicImage::ImageRgba16(rgba16)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let out = compress(&png, 80, OutputFormat::WebP, &l).unwrap();
    let back = load(&out.data).to_rgba8();
    assert_eq!(back.get_pixel(2, 2).0[3], 0, "alpha kept in WebP");
    // JPEG flattens the transparent half onto white.
    let out = compress(&png, 95, OutputFormat::Jpeg, &l).unwrap();
    let back = load(&out.data).to_rgb8();
    assert!(back.get_pixel(2, 8).0.iter().all(|&c| c > 240));
    assert!(back.get_pixel(13, 8).0[1] < 30);
}

#[test]
fn gif_first_frame_becomes_png() {
    use image::codecs::gif::GifEncoder;
    use image::Frame;
    let l = limits();
    let mut gif = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut gif);
        let red = RgbaImage::from_pixel(40, 30, Rgba([255, 0, 0, 255]));
        let blue = RgbaImage::from_pixel(40, 30, Rgba([0, 0, 255, 255]));
        enc.encode_frames([Frame::new(red), Frame::new(blue)])
            .unwrap();
    }
    assert_eq!(sniff(&gif), Some(Format::Gif));
    let out = compress(&gif, 80, OutputFormat::Keep, &l).unwrap();
    assert_eq!((out.format, dims(&out)), (Format::Png, (40, 30)));
    let p = load(&out.data).to_rgba8().get_pixel(5, 5).0;
    assert_eq!(p, [255, 0, 0, 255], "first frame");
    let out = resize(&gif, fit(20, 0), OutputFormat::Keep, 80, &l).unwrap();
    assert_eq!((out.format, dims(&out)), (Format::Png, (20, 15)));
}

#[test]
fn animated_webp_first_frame_decodes() {
    let l = limits();
    let red = RgbaImage::from_pixel(32, 24, Rgba([255, 0, 0, 255]));
    let blue = RgbaImage::from_pixel(32, 24, Rgba([0, 0, 255, 255]));
    let config = webp::WebPConfig::new().unwrap();
    let mut enc = webp::AnimEncoder::new(32, 24, &config);
    enc.add_frame(webp::AnimFrame::from_rgba(red.as_raw(), 32, 24, 0));
    enc.add_frame(webp::AnimFrame::from_rgba(blue.as_raw(), 32, 24, 100));
    let anim = enc.encode().to_vec();
    assert_eq!(sniff(&anim), Some(Format::WebP));
    let out = compress(&anim, 90, OutputFormat::Png, &l).unwrap();
    assert_eq!(dims(&out), (32, 24));
    let p = load(&out.data).to_rgba8().get_pixel(16, 12).0;
    assert!(p[0] > 200 && p[2] < 50, "first frame is red: {p:?}");
}

#[test]
fn png_exif_orientation_is_applied() {
    // An eXIf chunk (orientation 6) between IHDR and IDAT.
    let png = png_of(DynamicImage::ImageRgb8(photo_like(60, 20, 24)));
    let exif = &with_exif_orientation(&[0xFF, 0xD8], 6)[2 + 4 + 6..];
    let mut chunk = b"eXIf".to_vec();
    chunk.extend_from_slice(exif);
    let mut patched = png[..33].to_vec(); // signature + IHDR
    patched.extend_from_slice(&(exif.len() as u32).to_be_bytes());
    patched.extend_from_slice(&chunk);
    patched.extend_from_slice(&crc32(&chunk).to_be_bytes());
    patched.extend_from_slice(&png[33..]);
    let out = compress(&patched, 80, OutputFormat::Png, &limits()).unwrap();
    assert_eq!(dims(&out), (20, 60));
}

#[test]
fn a_cmyk_jpeg_is_converted_through_its_embedded_profile() {
    // A real press profile (FOGRA39) embedded in a CMYK JPEG made by libvips/lcms2 from a
    // known sRGB source (testdata/README.md). Through the profile the pixels come back close
    // to the source (1.9 levels on average); the naive formula is ~28 off.
    let jpeg = include_bytes!("testdata/cmyk-fogra39.jpg");
    let source = load(include_bytes!("testdata/cmyk-fogra39-source.png")).to_rgb8();
    let out = compress(jpeg, 100, OutputFormat::Png, &limits()).unwrap();
    let ours = load(&out.data).to_rgb8();
    assert_eq!(ours.dimensions(), source.dimensions());
    let total: u64 = ours
        .as_raw()
        .iter()
        .zip(source.as_raw())
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    let mean = total as f64 / ours.as_raw().len() as f64;
    assert!(
        mean < 6.0,
        "mean difference from the source: {mean:.1} levels"
    );
}

#[test]
fn cmyk_jpeg_decodes() {
    // libjpeg writes an Adobe marker for CMYK, so values are stored inverted (255 = no ink),
    // as Photoshop does. Left half: pure red (no cyan/black ink); right half: 50% black.
    let (w, h) = (64, 32);
    let mut cmyk = Vec::with_capacity(w * h * 4);
    for _y in 0..h {
        for x in 0..w {
            if x < w / 2 {
                cmyk.extend_from_slice(&[255, 0, 0, 255]);
            } else {
                cmyk.extend_from_slice(&[255, 255, 255, 128]);
            }
        }
    }
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    c.set_size(w, h);
    c.set_quality(95.0);
    let mut s = c.start_compress(Vec::new()).unwrap();
    s.write_scanlines(&cmyk).unwrap();
    let jpeg = s.finish().unwrap();
    let l = limits();
    let out = compress(&jpeg, 95, OutputFormat::Png, &l).unwrap();
    assert_eq!(dims(&out), (64, 32));
    let px = load(&out.data).to_rgb8();
    let red = px.get_pixel(8, 16).0;
    let gray = px.get_pixel(48, 16).0;
    assert!(red[0] > 230 && red[1] < 25 && red[2] < 25, "{red:?}");
    assert!(gray.iter().all(|&c| (115..=140).contains(&c)), "{gray:?}");
    // The `image` crate's decoder agrees on the convention.
    let theirs = load(&jpeg).to_rgb8();
    let t = theirs.get_pixel(8, 16).0;
    assert!(t[0] > 230 && t[1] < 25, "image crate: {t:?}");
    // Shrink-on-load works on CMYK too.
    let out = resize(&jpeg, fit(4, 0), OutputFormat::Png, 80, &l).unwrap();
    assert_eq!(dims(&out), (4, 2));
}

#[test]
fn grayscale_jpeg_and_alpha_png_round_trip() {
    let l = limits();
    let gray = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(photo_like(50, 40, 18)).to_luma8());
    let mut jpeg = Vec::new();
    gray.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let out = compress(&jpeg, 80, OutputFormat::Keep, &l).unwrap();
    assert_eq!(dims(&out), (50, 40));
    let rgba = RgbaImage::from_fn(30, 20, |x, _| Rgba([0, 200, 0, (x * 8) as u8]));
    let png = png_of(DynamicImage::ImageRgba8(rgba));
    let out = resize(&png, fit(15, 0), OutputFormat::Keep, 80, &l).unwrap();
    assert_eq!(dims(&out), (15, 10));
    assert!(load(&out.data).color().has_alpha());
}

#[test]
fn corrupted_inputs_never_panic() {
    let l = limits();
    let jpeg = jpeg_of(photo_like(96, 64, 19), 80);
    let png = png_of(DynamicImage::ImageRgb8(photo_like(96, 64, 20)));
    let webp = encode_as(
        DynamicImage::ImageRgb8(photo_like(96, 64, 21)),
        Format::WebP,
        80,
    );
    let gif = {
        let mut gif = Vec::new();
        DynamicImage::ImageRgb8(photo_like(32, 32, 22))
            .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
            .unwrap();
        gif
    };
    let mut rng = Rng::new(23);
    for data in [&jpeg, &png, &webp, &gif] {
        for _ in 0..40 {
            let mut broken = data.clone();
            for _ in 0..1 + rng.next_u32() % 8 {
                let i = 2 + (rng.next_u32() as usize % (broken.len() - 2));
                broken[i] = rng.next_u32() as u8;
            }
            for result in [
                compress(&broken, 80, OutputFormat::Keep, &l),
                resize(&broken, fit(20, 20), OutputFormat::Jpeg, 80, &l),
            ] {
                if let Err(OpError::Undecodable(m)) = &result {
                    assert!(
                        !m.contains("could not be processed"),
                        "a panic escaped a codec: {m}"
                    );
                }
            }
        }
    }
}
