//! Form fields → gRPC options (src/edge/params.rs): any set of field names and values gives
//! Ok with in-range values, or a 400 with a short, non-empty message; never a panic.
#![no_main]

use bytes::Bytes;
use imagegate::compute::ops::Format;
use imagegate::edge::intake::{FilePart, Form};
use imagegate::edge::params;
use imagegate::edge::problem::Problem;
use imagegate::proto::{operation, ImageFormat, Position};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "operation",
    "quality",
    "format",
    "width",
    "height",
    "keep_aspect_ratio",
    "text",
    "position",
    "opacity",
    "font_size",
];

/// Values near the edges of what each field accepts, for the fuzzer to start from.
const VALUES: &[&str] = &[
    "",
    " ",
    "0",
    "1",
    "-1",
    "100",
    "101",
    "2147483647",
    "-2147483648",
    "2147483648",
    "1e3",
    "0.5",
    "1.0",
    "1.0000001",
    "-0.0",
    "NaN",
    "inf",
    "-inf",
    "jpeg",
    "JPG",
    "png",
    "webp",
    "gif",
    "true",
    "False",
    "yes",
    "off",
    "2",
    "bottom_right",
    "TOP-left",
    "centre",
    "center",
    "compress",
    "Resize",
    "watermark",
    " 80 ",
    "\u{130}",
    "ß",
    "\u{0}",
];

fn field(u: &mut Unstructured<'_>) -> Result<(String, String)> {
    let name = if u.ratio(7, 8)? {
        (*u.choose(NAMES)?).to_string()
    } else {
        u.arbitrary::<String>()?
    };
    let value = if u.ratio(1, 2)? {
        (*u.choose(VALUES)?).to_string()
    } else {
        u.arbitrary::<String>()?
    };
    Ok((name, value))
}

fn form(u: &mut Unstructured<'_>) -> Result<Form> {
    let mut form = Form::default();
    let n = u.int_in_range(0..=12)?;
    for _ in 0..n {
        let (name, value) = field(u)?;
        form.fields.insert(name, value);
    }
    if u.ratio(1, 4)? {
        let data: Vec<u8> = u.arbitrary()?;
        form.files.push(FilePart {
            field: "overlay".to_string(),
            data: Bytes::from(data),
            format: Some(Format::Png),
        });
    }
    Ok(form)
}

/// An error is a 400 with a non-empty message of bounded length (values are quoted truncated).
fn check_err(p: &Problem) {
    assert_eq!(p.status.as_u16(), 400, "{p:?}");
    assert!(!p.detail.is_empty(), "{p:?}");
    assert!(
        p.detail.len() < 1024,
        "unbounded message: {} bytes",
        p.detail.len()
    );
}

fn check_format(f: i32) {
    let f = ImageFormat::try_from(f).expect("a known ImageFormat");
    assert!(matches!(
        f,
        ImageFormat::Unspecified | ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Webp
    ));
}

fn check_quality(q: i32) {
    assert!(q == 0 || (1..=100).contains(&q), "quality {q}");
}

fn check_resize(o: &imagegate::proto::ResizeOptions) {
    assert!(o.width >= 0 && o.height >= 0, "{o:?}");
    assert!(o.width > 0 || o.height > 0, "{o:?}");
    check_quality(o.quality);
    check_format(o.output_format);
}

fn check_watermark(o: &imagegate::proto::WatermarkOptions) {
    assert!(
        o.opacity.is_finite() && (0.0..=1.0).contains(&o.opacity),
        "{o:?}"
    );
    assert!(o.font_size >= 0, "{o:?}");
    Position::try_from(o.position).expect("a known Position");
    check_quality(o.quality);
    check_format(o.output_format);
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(form) = form(&mut u) else { return };
    let image = Bytes::from_static(b"\xFF\xD8\xFF not really a JPEG");

    match params::compress_request(&form, image.clone()) {
        Ok(r) => {
            check_quality(r.quality);
            check_format(r.output_format);
            assert_ne!(r.output_format, ImageFormat::Unspecified as i32);
        }
        Err(p) => check_err(&p),
    }
    match params::resize_request(&form, image.clone()) {
        Ok(r) => {
            let o = params::resize_options(&form).unwrap();
            assert_eq!((r.width, r.height), (o.width, o.height));
            check_resize(&o);
        }
        Err(p) => check_err(&p),
    }
    match params::watermark_request(&form, image.clone()) {
        Ok(r) => {
            // Exactly one of text and overlay.
            assert_ne!(r.text.is_empty(), r.overlay_image.is_empty(), "{r:?}");
            check_watermark(&params::watermark_options(&form).unwrap());
        }
        Err(p) => check_err(&p),
    }
    match params::batch_operation(&form) {
        Ok(op) => match op.op.expect("an operation") {
            operation::Op::Compress(o) => {
                check_quality(o.quality);
                check_format(o.output_format);
            }
            operation::Op::Resize(o) => check_resize(&o),
            operation::Op::Watermark(o) => {
                assert!(!o.text.is_empty());
                check_watermark(&o);
            }
        },
        Err(p) => check_err(&p),
    }
});
