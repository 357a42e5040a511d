//! Form fields → gRPC requests. The edge parses types and names (numbers, formats,
//! positions); compute enforces the value ranges, so the rules live in one place and its
//! INVALID_ARGUMENT messages reach the client as 400s.

use bytes::Bytes;

use super::intake::Form;
use super::problem::Problem;
use crate::proto::{
    operation, CompressOptions, CompressRequest, ImageFormat, Operation, Position, ResizeOptions,
    ResizeRequest, WatermarkOptions, WatermarkRequest,
};

fn int(form: &Form, name: &str) -> Result<Option<i32>, Problem> {
    form.field(name)
        .map(|v| {
            v.parse::<i32>().map_err(|_| {
                Problem::bad_request(format!(
                    "field `{name}` must be an integer, got {:?}",
                    truncate(v)
                ))
            })
        })
        .transpose()
}

fn float(form: &Form, name: &str) -> Result<Option<f32>, Problem> {
    form.field(name)
        .map(|v| match v.parse::<f32>() {
            Ok(f) if f.is_finite() => Ok(f),
            _ => Err(Problem::bad_request(format!(
                "field `{name}` must be a number, got {:?}",
                truncate(v)
            ))),
        })
        .transpose()
}

fn truncate(v: &str) -> String {
    v.chars().take(40).collect()
}

/// `quality`: 1–100 on the HTTP API (absent = the default).
fn quality(form: &Form) -> Result<i32, Problem> {
    match int(form, "quality")? {
        None => Ok(0),
        Some(q) if (1..=100).contains(&q) => Ok(q),
        Some(q) => Err(Problem::bad_request(format!(
            "quality {q} is out of range 1-100"
        ))),
    }
}

/// `format`: jpeg/png/webp/avif, or `auto` (the best the `Accept` header takes: AVIF, then
/// WebP, else the input's own format); absent = `default`.
fn format(form: &Form, default: ImageFormat) -> Result<ImageFormat, Problem> {
    match form.field("format").map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("jpeg" | "jpg") => Ok(ImageFormat::Jpeg),
        Some("png") => Ok(ImageFormat::Png),
        Some("webp") => Ok(ImageFormat::Webp),
        Some("avif") => Ok(ImageFormat::Avif),
        Some("auto") if form.accept.avif => Ok(ImageFormat::Avif),
        Some("auto") if form.accept.webp => Ok(ImageFormat::Webp),
        Some("auto") => Ok(ImageFormat::Unspecified),
        Some(other) => Err(Problem::bad_request(format!(
            "format {:?} is not one of jpeg, png, webp, avif, auto",
            truncate(other)
        ))),
    }
}

/// Whether the answer depends on the request's `Accept` header (`format=auto`): then it is
/// sent with `Vary: Accept`.
pub fn varies_with_accept(form: &Form) -> bool {
    form.field("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("auto"))
}

fn boolean(form: &Form, name: &str, default: bool) -> Result<bool, Problem> {
    match form.field(name).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(Problem::bad_request(format!(
            "field `{name}` must be true or false, got {:?}",
            truncate(other)
        ))),
    }
}

fn position(form: &Form) -> Result<Position, Problem> {
    let Some(value) = form.field("position") else {
        return Ok(Position::BottomRight);
    };
    match value.to_ascii_lowercase().replace('_', "-").as_str() {
        "bottom-right" => Ok(Position::BottomRight),
        "bottom-left" => Ok(Position::BottomLeft),
        "top-right" => Ok(Position::TopRight),
        "top-left" => Ok(Position::TopLeft),
        "center" | "centre" => Ok(Position::Center),
        _ => Err(Problem::bad_request(format!(
            "position {:?} is not one of bottom-right, bottom-left, top-right, top-left, center",
            truncate(value)
        ))),
    }
}

fn non_negative(form: &Form, name: &str) -> Result<i32, Problem> {
    match int(form, name)? {
        None => Ok(0),
        Some(v) if v >= 0 => Ok(v),
        Some(v) => Err(Problem::bad_request(format!(
            "field `{name}` must not be negative, got {v}"
        ))),
    }
}

/// Text fields `POST /v1/images/compress` (and `/v1/uploads`) accepts.
pub const COMPRESS_FIELDS: &[&str] = &["quality", "format"];
/// Text fields `POST /v1/images/resize` accepts.
pub const RESIZE_FIELDS: &[&str] = &["width", "height", "keep_aspect_ratio", "format", "quality"];
/// Text fields `POST /v1/images/watermark` accepts (the logo is the `overlay` file part).
pub const WATERMARK_FIELDS: &[&str] = &[
    "text",
    "position",
    "opacity",
    "font_size",
    "format",
    "quality",
];
/// Text fields `POST /v1/images/batch` accepts: `operation` and every operation's own.
pub const BATCH_FIELDS: &[&str] = &[
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

/// `quality` and `format` (absent: WebP) as compute's compress options.
pub fn compress_options(form: &Form) -> Result<CompressOptions, Problem> {
    Ok(CompressOptions {
        quality: quality(form)?,
        output_format: format(form, ImageFormat::Webp)? as i32,
    })
}

/// `width`, `height` (at least one), `keep_aspect_ratio` (default true), `format` and
/// `quality` as compute's resize options.
pub fn resize_options(form: &Form) -> Result<ResizeOptions, Problem> {
    let width = non_negative(form, "width")?;
    let height = non_negative(form, "height")?;
    if width == 0 && height == 0 {
        return Err(Problem::bad_request("give `width`, `height`, or both"));
    }
    Ok(ResizeOptions {
        width,
        height,
        keep_aspect_ratio: boolean(form, "keep_aspect_ratio", true)?,
        output_format: format(form, ImageFormat::Unspecified)? as i32,
        quality: quality(form)?,
    })
}

/// `text`, `position` (default bottom-right), `opacity`, `font_size`, `format` and `quality`
/// as compute's watermark options.
pub fn watermark_options(form: &Form) -> Result<WatermarkOptions, Problem> {
    let opacity = float(form, "opacity")?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&opacity) {
        return Err(Problem::bad_request(format!(
            "opacity {opacity} is out of range 0-1"
        )));
    }
    Ok(WatermarkOptions {
        // Text is taken as given (not trimmed): compute refuses empty or blank text.
        text: form.fields.get("text").cloned().unwrap_or_default(),
        position: position(form)? as i32,
        opacity,
        font_size: non_negative(form, "font_size")?,
        output_format: format(form, ImageFormat::Unspecified)? as i32,
        quality: quality(form)?,
    })
}

/// The Compress request for `image` with the form's options.
pub fn compress_request(form: &Form, image: Bytes) -> Result<CompressRequest, Problem> {
    let o = compress_options(form)?;
    Ok(CompressRequest {
        image_data: image,
        quality: o.quality,
        output_format: o.output_format,
    })
}

/// The Resize request for `image` with the form's options.
pub fn resize_request(form: &Form, image: Bytes) -> Result<ResizeRequest, Problem> {
    let o = resize_options(form)?;
    Ok(ResizeRequest {
        image_data: image,
        width: o.width,
        height: o.height,
        keep_aspect_ratio: o.keep_aspect_ratio,
        output_format: o.output_format,
        quality: o.quality,
    })
}

/// The Watermark request for `image`: exactly one of `text` and an `overlay` part.
pub fn watermark_request(form: &Form, image: Bytes) -> Result<WatermarkRequest, Problem> {
    let o = watermark_options(form)?;
    let overlay = form
        .file("overlay")
        .map(|f| f.data.clone())
        .unwrap_or_default();
    if o.text.is_empty() == overlay.is_empty() {
        return Err(Problem::bad_request(
            "give exactly one of `text` and an `overlay` image part",
        ));
    }
    Ok(WatermarkRequest {
        image_data: image,
        text: o.text,
        position: o.position,
        opacity: o.opacity,
        font_size: o.font_size,
        output_format: o.output_format,
        quality: o.quality,
        overlay_image: overlay,
    })
}

/// The batch's `operation` and that operation's fields.
pub fn batch_operation(form: &Form) -> Result<Operation, Problem> {
    let op = match form
        .field("operation")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("compress") => operation::Op::Compress(compress_options(form)?),
        Some("resize") => operation::Op::Resize(resize_options(form)?),
        Some("watermark") => {
            let o = watermark_options(form)?;
            if o.text.is_empty() {
                return Err(Problem::bad_request("a batch watermark needs `text`"));
            }
            operation::Op::Watermark(o)
        }
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "operation {:?} is not one of compress, resize, watermark",
                truncate(other)
            )))
        }
        None => {
            return Err(Problem::bad_request(
                "field `operation` is required: compress, resize or watermark",
            ))
        }
    };
    Ok(Operation { op: Some(op) })
}
