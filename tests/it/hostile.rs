//! A corpus of hostile and odd inputs against the real BFF and compute: each case with its
//! expected status, problem+json for every error, never a 5xx, never a leaked permit, and the
//! servers still healthy at the end.

use std::io::Cursor;

use crate::support::*;
use image::{DynamicImage, ImageFormat};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

fn part(data: Vec<u8>) -> Part {
    Part::bytes(data)
        .file_name("f")
        .mime_str("image/jpeg")
        .unwrap()
}

fn with_file(data: Vec<u8>) -> Form {
    Form::new().part("file", part(data))
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png16() -> Vec<u8> {
    let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(40, 30, |x, y| {
        image::Rgb([x as u16 * 1500, y as u16 * 2000, 30000])
    });
    encode(DynamicImage::ImageRgb16(img), ImageFormat::Png)
}

fn gray_png() -> Vec<u8> {
    encode(
        DynamicImage::ImageLuma8(image::GrayImage::from_fn(33, 17, |x, _| {
            image::Luma([x as u8 * 7])
        })),
        ImageFormat::Png,
    )
}

fn rgba_png() -> Vec<u8> {
    encode(
        DynamicImage::ImageRgba8(image::RgbaImage::from_fn(20, 20, |x, y| {
            image::Rgba([x as u8 * 12, y as u8 * 12, 90, (x * 12) as u8])
        })),
        ImageFormat::Png,
    )
}

fn lossless_webp() -> Vec<u8> {
    encode(
        DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            24,
            16,
            image::Rgba([10, 200, 30, 255]),
        )),
        ImageFormat::WebP,
    )
}

fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for i in 0..3u8 {
            let frame = image::RgbaImage::from_pixel(16, 12, image::Rgba([i * 80, 10, 10, 255]));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    out
}

/// A JPEG whose SOF0 claims 65500×65500 (a bomb), with nothing behind it.
fn jpeg_bomb() -> Vec<u8> {
    let mut j = jpeg(8, 8);
    let sof = j
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG");
    j[sof + 5..sof + 7].copy_from_slice(&65500u16.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&65500u16.to_be_bytes());
    j
}

/// A GIF whose logical screen and frame claim 65535×65535.
fn gif_bomb() -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&65535u16.to_le_bytes());
    g.extend_from_slice(&65535u16.to_le_bytes());
    g.extend_from_slice(&[0, 0, 0]);
    g.extend_from_slice(&[0x2C, 0, 0, 0, 0]);
    g.extend_from_slice(&65535u16.to_le_bytes());
    g.extend_from_slice(&65535u16.to_le_bytes());
    g.extend_from_slice(&[0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
    g
}

/// A WebP (VP8X) whose canvas claims 16384×16384 = 268 MP.
fn webp_bomb() -> Vec<u8> {
    let mut chunk = b"VP8X".to_vec();
    chunk.extend_from_slice(&10u32.to_le_bytes());
    chunk.extend_from_slice(&[0, 0, 0, 0]);
    let m = 16383u32.to_le_bytes();
    chunk.extend_from_slice(&m[..3]);
    chunk.extend_from_slice(&m[..3]);
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&((4 + chunk.len()) as u32).to_le_bytes());
    w.extend_from_slice(b"WEBP");
    w.extend_from_slice(&chunk);
    w
}

/// A JPEG with an EXIF orientation of 6 (rotate 90°): width and height swap when upright.
fn exif_rotated_jpeg() -> Vec<u8> {
    let j = jpeg(60, 20);
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&[0, 6, 0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = j[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&j[2..]);
    out
}

enum Body {
    Form(&'static str, Form),
    Raw(&'static str, Option<&'static str>, Vec<u8>),
}

struct Case {
    name: &'static str,
    body: Body,
    want: u16,
}

fn case(name: &'static str, path: &'static str, form: Form, want: u16) -> Case {
    Case {
        name,
        body: Body::Form(path, form),
        want,
    }
}

fn raw(name: &'static str, content_type: Option<&'static str>, body: &[u8], want: u16) -> Case {
    Case {
        name,
        body: Body::Raw("/v1/images/compress", content_type, body.to_vec()),
        want,
    }
}

const C: &str = "/v1/images/compress";
const R: &str = "/v1/images/resize";
const W: &str = "/v1/images/watermark";
const B: &str = "/v1/images/batch";

fn corpus() -> Vec<Case> {
    let small = || jpeg(40, 30);
    let mut truncated_jpeg = jpeg(64, 64);
    truncated_jpeg.truncate(truncated_jpeg.len() / 2);
    let mut truncated_png = png(64, 64);
    truncated_png.truncate(truncated_png.len() / 2);
    let mut many_files = Form::new().text("operation", "compress");
    for _ in 0..40 {
        many_files = many_files.part("file", part(jpeg(8, 8)));
    }
    let mut thousands = String::from("--XX\r\n");
    for i in 0..3000 {
        thousands.push_str(&format!(
            "Content-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n--XX\r\n"
        ));
    }
    let huge_header = format!(
        "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\r\nabc\r\n--XX--\r\n",
        "a".repeat(100_000)
    );
    vec![
        // malformed multipart
        raw("no content type", None, b"hello", 400),
        raw(
            "json instead of multipart",
            Some("application/json"),
            b"{\"file\":1}",
            400,
        ),
        raw(
            "multipart without boundary",
            Some("multipart/form-data"),
            b"--x\r\n",
            400,
        ),
        raw(
            "empty boundary",
            Some("multipart/form-data; boundary="),
            b"--\r\n",
            400,
        ),
        raw(
            "truncated body",
            Some("multipart/form-data; boundary=XX"),
            b"--XX\r\nContent-Disposition: form-data; name=\"quality\"\r\n\r\n80",
            400,
        ),
        raw(
            "huge part headers",
            Some("multipart/form-data; boundary=XX"),
            huge_header.as_bytes(),
            400,
        ),
        // Unknown fields are ignored, but they count against the field limit: 413, and
        // the reading stops there.
        raw(
            "thousands of parts",
            Some("multipart/form-data; boundary=XX"),
            thousands.as_bytes(),
            413,
        ),
        raw(
            "part without a name",
            Some("multipart/form-data; boundary=XX"),
            b"--XX\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--XX--\r\n",
            400,
        ),
        raw(
            "garbage body",
            Some("multipart/form-data; boundary=XX"),
            &[0u8; 2048],
            400,
        ),
        case(
            "wrong field name",
            C,
            Form::new().part("image", part(small())),
            400,
        ),
        case("no file at all", C, Form::new().text("quality", "80"), 400),
        case(
            "two files where one is expected",
            C,
            with_file(small()).part("file", part(small())),
            400,
        ),
        case(
            "duplicate text field",
            C,
            with_file(small())
                .text("quality", "50")
                .text("quality", "60"),
            400,
        ),
        case(
            "invalid UTF-8 in a field",
            C,
            with_file(small()).part("quality", Part::bytes(vec![0xFF, 0xFE])),
            400,
        ),
        case(
            "oversized text field",
            C,
            with_file(small()).text("format", "w".repeat(100 * 1024)),
            413,
        ),
        // images
        case("empty file", C, with_file(Vec::new()), 400),
        case("three bytes", C, with_file(b"abc".to_vec()), 415),
        case("garbage", C, with_file(vec![0x42; 1024]), 415),
        case(
            "a PDF",
            C,
            with_file(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj".to_vec()),
            415,
        ),
        case(
            "a BMP",
            C,
            with_file([&b"BM"[..], &[0u8; 60]].concat()),
            415,
        ),
        case(
            "an HTML page",
            C,
            with_file(b"<!doctype html><html><body>hi</body></html>".to_vec()),
            415,
        ),
        case("truncated JPEG", C, with_file(truncated_jpeg), 422),
        case("truncated PNG", C, with_file(truncated_png), 422),
        case(
            "JPEG magic then garbage",
            C,
            with_file([&[0xFF, 0xD8, 0xFF, 0xE0][..], &[0x13; 500]].concat()),
            422,
        ),
        case("PNG bomb header", C, with_file(png_bomb()), 422),
        case("JPEG bomb header", C, with_file(jpeg_bomb()), 422),
        case("GIF bomb header", C, with_file(gif_bomb()), 422),
        case("WebP bomb header", C, with_file(webp_bomb()), 422),
        case("16-bit PNG", C, with_file(png16()), 200),
        case("grayscale PNG", C, with_file(gray_png()), 200),
        case("RGBA PNG to WebP", C, with_file(rgba_png()), 200),
        case(
            "RGBA PNG to JPEG",
            C,
            with_file(rgba_png()).text("format", "jpeg"),
            200,
        ),
        case("lossless WebP", C, with_file(lossless_webp()), 200),
        case(
            "animated GIF (first frame)",
            C,
            with_file(animated_gif()),
            200,
        ),
        case("1x1 image", C, with_file(png(1, 1)), 200),
        // parameters
        case(
            "quality not a number",
            C,
            with_file(small()).text("quality", "abc"),
            400,
        ),
        case(
            "quality negative",
            C,
            with_file(small()).text("quality", "-5"),
            400,
        ),
        case(
            "quality 101",
            C,
            with_file(small()).text("quality", "101"),
            400,
        ),
        case(
            "quality huge",
            C,
            with_file(small()).text("quality", "99999999999999"),
            400,
        ),
        case(
            "quality float",
            C,
            with_file(small()).text("quality", "50.5"),
            400,
        ),
        case(
            "quality empty (default)",
            C,
            with_file(small()).text("quality", ""),
            200,
        ),
        case(
            "quality padded",
            C,
            with_file(small()).text("quality", " 50 "),
            200,
        ),
        case(
            "format gif",
            C,
            with_file(small()).text("format", "gif"),
            400,
        ),
        case(
            "format upper case",
            C,
            with_file(small()).text("format", "PNG"),
            200,
        ),
        case(
            "width negative",
            R,
            with_file(small()).text("width", "-1"),
            400,
        ),
        case(
            "width not a number",
            R,
            with_file(small()).text("width", "wide"),
            400,
        ),
        case(
            "width above the box limit",
            R,
            with_file(small()).text("width", "99999"),
            400,
        ),
        case(
            "box 0x0",
            R,
            with_file(small()).text("width", "0").text("height", "0"),
            400,
        ),
        case("no box at all", R, with_file(small()), 400),
        case(
            "exact resize to 16000x16000 (pixel limit)",
            R,
            with_file(small())
                .text("width", "16000")
                .text("height", "16000")
                .text("keep_aspect_ratio", "false"),
            422,
        ),
        case(
            "keep_aspect_ratio maybe",
            R,
            with_file(small())
                .text("width", "10")
                .text("keep_aspect_ratio", "maybe"),
            400,
        ),
        case(
            "opacity above 1",
            W,
            with_file(small()).text("text", "x").text("opacity", "1.5"),
            400,
        ),
        case(
            "opacity NaN",
            W,
            with_file(small()).text("text", "x").text("opacity", "NaN"),
            400,
        ),
        case(
            "opacity negative",
            W,
            with_file(small()).text("text", "x").text("opacity", "-0.1"),
            400,
        ),
        case(
            "font_size negative",
            W,
            with_file(small()).text("text", "x").text("font_size", "-3"),
            400,
        ),
        case(
            "font_size huge",
            W,
            with_file(small())
                .text("text", "x")
                .text("font_size", "100000"),
            400,
        ),
        case(
            "position unknown",
            W,
            with_file(small())
                .text("text", "x")
                .text("position", "middle"),
            400,
        ),
        case(
            "watermark with neither text nor overlay",
            W,
            with_file(small()),
            400,
        ),
        case(
            "watermark with empty text",
            W,
            with_file(small()).text("text", ""),
            400,
        ),
        case(
            "watermark with blank text",
            W,
            with_file(small()).text("text", "   "),
            400,
        ),
        case(
            "watermark with both text and overlay",
            W,
            with_file(small())
                .text("text", "x")
                .part("overlay", part(png(8, 8))),
            400,
        ),
        case(
            "watermark unicode text",
            W,
            with_file(small()).text("text", "日本語 ✓ 🎉 Ωmega"),
            200,
        ),
        case(
            "watermark text of 5000 characters",
            W,
            with_file(small()).text("text", "é".repeat(5000)),
            400,
        ),
        case(
            "overlay not an image",
            W,
            with_file(small()).part("overlay", part(b"not a logo at all".to_vec())),
            415,
        ),
        case("batch without operation", B, with_file(small()), 400),
        case(
            "batch with unknown operation",
            B,
            with_file(small()).text("operation", "blur"),
            400,
        ),
        case(
            "batch without files",
            B,
            Form::new().text("operation", "compress"),
            400,
        ),
        case("batch with 40 files", B, many_files, 413),
        case(
            "batch watermark without text",
            B,
            with_file(small()).text("operation", "watermark"),
            400,
        ),
        case(
            "EXIF-rotated JPEG",
            R,
            with_file(exif_rotated_jpeg())
                .text("width", "600")
                .text("height", "600"),
            200,
        ),
    ]
}

#[tokio::test]
async fn a_hostile_corpus_gets_clear_answers_and_no_5xx() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let client = reqwest::Client::new();
    let cases = corpus();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let request = match c.body {
            Body::Form(path, form) => client.post(bff.url(path)).multipart(form),
            Body::Raw(path, content_type, bytes) => {
                let r = client.post(bff.url(path)).body(bytes);
                match content_type {
                    Some(ct) => r.header("content-type", ct),
                    None => r,
                }
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        if status != c.want {
            failures.push(format!(
                "{}: want {}, got {status}: {}",
                c.name,
                c.want,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
            continue;
        }
        // Every check names its case and the run goes on: one bad case reads as that case.
        let wrong = if status >= 400 {
            let problem: Option<Value> = serde_json::from_slice(&body).ok();
            if content_type != "application/problem+json" {
                Some(format!("content type {content_type:?}, not problem+json"))
            } else if problem.as_ref().map(|p| p["status"].clone()) != Some(status.into()) {
                Some(format!("problem status is not {status}: {problem:?}"))
            } else if problem
                .as_ref()
                .and_then(|p| p["detail"].as_str())
                .is_none_or(str::is_empty)
            {
                Some(format!("problem without a detail: {problem:?}"))
            } else {
                None
            }
        } else if c.name == "EXIF-rotated JPEG" {
            // 60×20 stored sideways with orientation 6: upright it is 20×60, fit in 600×600.
            let size = (headers.get("x-image-width"), headers.get("x-image-height"));
            (size.0.is_none_or(|w| w != "200") || size.1.is_none_or(|h| h != "600"))
                .then(|| format!("not upright: {size:?}"))
        } else {
            image::load_from_memory(&body)
                .err()
                .map(|e| format!("the answer is not an image: {e}"))
        };
        if let Some(why) = wrong {
            failures.push(format!("{}: {why}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );

    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
    // Every refused or answered body was let go: nothing of any request is still held.
    assert_eq!(
        metric(&text, "imagegate_http_buffered_body_bytes"),
        Some(0.0)
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("imagegate_http_requests_total") && l.contains("status=\"5")),
        "a 5xx was answered"
    );
    assert_eq!(
        reqwest::get(bff.url("/health")).await.unwrap().status(),
        200
    );
}
