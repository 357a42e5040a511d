//! Streaming multipart intake with limits (src/edge/intake.rs): arbitrary bodies, in chunks of
//! fuzzed sizes, under small fuzzed limits, with a fixed or fuzzed boundary / Content-Type /
//! Content-Length. Never a panic; a form that is accepted respects every limit; an error is a
//! 400, 413 or 415; no more of the body is read than the limits allow.
//!
//! Input layout (fixed, so seeds are easy to write; see make_seeds.py):
//! ```text
//! [0] route (compress, resize, watermark, batch, upload)   [1] Content-Type mode
//! [2] Content-Length mode    [3] chunk-size mode    [4] chunk-size seed
//! [5..7] max_file (u16 LE)   [7..9] max_request (u16 LE)
//! [9] max_files   [10] max_field   [11] max_fields   [12..] body
//! ```
//! Content-Type modes 1 and 3 take the boundary / whole Content-Type from the body's first
//! line (up to `\n`); the rest is the body.
#![no_main]

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;

use actix_web::dev::Payload as DevPayload;
use actix_web::error::PayloadError;
use actix_web::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::test::TestRequest;
use actix_web::{web, FromRequest};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use imagegate::config::{BffConfig, Config, Size};
use imagegate::edge::intake::{read_form, BodyBudget, FormSpec, Limits};
use imagegate::edge::params;
use libfuzzer_sys::fuzz_target;

const BOUNDARY: &str = "XyZzY";

fn spec(route: u8) -> FormSpec {
    match route % 5 {
        0 => FormSpec {
            file_fields: &["file"],
            text_fields: params::COMPRESS_FIELDS,
            many_files: false,
        },
        1 => FormSpec {
            file_fields: &["file"],
            text_fields: params::RESIZE_FIELDS,
            many_files: false,
        },
        2 => FormSpec {
            file_fields: &["file", "overlay"],
            text_fields: params::WATERMARK_FIELDS,
            many_files: false,
        },
        3 => FormSpec {
            file_fields: &["file"],
            text_fields: params::BATCH_FIELDS,
            many_files: true,
        },
        // uploads.rs: one file, no text fields.
        _ => FormSpec {
            file_fields: &["file"],
            text_fields: &[],
            many_files: false,
        },
    }
}

fn default_bff() -> &'static BffConfig {
    static BFF: OnceLock<BffConfig> = OnceLock::new();
    BFF.get_or_init(|| Config::default().bff)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Splits `body` into chunks whose sizes come from `mode` (largest size) and `seed`.
fn chunks(body: &[u8], mode: u8, seed: u8) -> Vec<Bytes> {
    let max = match mode % 6 {
        0 => body.len().max(1),
        1 => 1,
        2 => 7,
        3 => 64,
        4 => 512,
        _ => 4096,
    };
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % max).min(rest.len());
        out.push(Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
    }
    out
}

/// Splits off the first line (up to 80 bytes) of `body`.
fn first_line(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().take(80).position(|&b| b == b'\n') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (&[], body),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let (head, body) = data.split_at(12);
    let spec = spec(head[0]);
    // Through the config, as the server builds them, so that new limits get their defaults.
    let mut bff = default_bff().clone();
    bff.max_file_size = Size(u64::from(u16::from_le_bytes([head[5], head[6]])));
    bff.max_request_size = Size(u64::from(u16::from_le_bytes([head[7], head[8]])));
    bff.max_files = usize::from(head[9] % 5);
    bff.max_field_size = Size(u64::from(head[10]));
    bff.max_fields = usize::from(head[11] % 13);
    let limits = Limits::from_config(&bff);
    let (content_type, body): (Vec<u8>, &[u8]) = match head[1] % 4 {
        0 => (
            format!("multipart/form-data; boundary={BOUNDARY}").into_bytes(),
            body,
        ),
        1 => {
            let (line, rest) = first_line(body);
            let mut ct = b"multipart/form-data; boundary=".to_vec();
            ct.extend_from_slice(line);
            (ct, rest)
        }
        2 => (
            format!("multipart/form-data; charset=utf-8; boundary=\"{BOUNDARY}\"").into_bytes(),
            body,
        ),
        _ => {
            let (line, rest) = first_line(body);
            (line.to_vec(), rest)
        }
    };
    // A header value no HTTP parser would let through cannot reach the intake.
    let Ok(content_type) = HeaderValue::from_bytes(&content_type) else {
        return;
    };
    let mut req = TestRequest::default().insert_header((CONTENT_TYPE, content_type));
    let declared = match head[2] % 4 {
        0 => None,
        1 => Some(body.len().to_string()),
        2 => Some((body.len() + limits.max_request).to_string()),
        _ => Some("not a number".to_string()),
    };
    if let Some(v) = &declared {
        req = req.insert_header((CONTENT_LENGTH, v.as_str()));
    }
    let (req, _) = req.to_http_parts();

    let chunks = chunks(body, head[3], head[4]);
    let largest_chunk = chunks.iter().map(Bytes::len).max().unwrap_or(0);
    // Counts what the intake pulls from the body.
    let pulled = Rc::new(Cell::new(0usize));
    let counter = pulled.clone();
    let stream = stream::iter(chunks).map(move |c| {
        counter.set(counter.get() + c.len());
        Ok(c)
    });
    let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    let mut dev_payload = DevPayload::from(boxed);

    let budget = std::sync::Arc::new(BodyBudget::default());
    let result = runtime().block_on(async {
        let payload = web::Payload::from_request(&req, &mut dev_payload)
            .await
            .expect("web::Payload is infallible");
        read_form(&req, payload, limits, &budget, &spec).await
    });

    // Never more than the limit plus one chunk while parsing, and as much again while
    // draining after a refusal.
    assert!(
        pulled.get() <= 2 * (limits.max_request + largest_chunk),
        "read {} bytes with max_request {} and chunks up to {largest_chunk}",
        pulled.get(),
        limits.max_request
    );

    match result {
        Ok(form) => {
            assert!(
                !(head[2] % 4 == 2 && !body.is_empty()),
                "a declared length above max_request was accepted"
            );
            assert!(
                form.files.len() <= limits.max_files,
                "{} files",
                form.files.len()
            );
            assert!(
                form.fields.len() <= limits.max_fields,
                "{} fields",
                form.fields.len()
            );
            let mut total = 0;
            for f in &form.files {
                assert!(spec.file_fields.contains(&f.field.as_str()), "{}", f.field);
                assert!(!f.data.is_empty());
                assert!(f.data.len() <= limits.max_file, "file of {}", f.data.len());
                if spec.many_files {
                    if let Some(format) = f.format {
                        assert_eq!(imagegate::compute::ops::sniff(&f.data), Some(format));
                    }
                } else {
                    let format = f.format.expect("a sniffed format");
                    assert_eq!(imagegate::compute::ops::sniff(&f.data), Some(format));
                    let same = form.files.iter().filter(|g| g.field == f.field).count();
                    assert_eq!(same, 1, "field {} repeated", f.field);
                }
                total += f.data.len();
            }
            for (name, value) in &form.fields {
                assert!(spec.text_fields.contains(&name.as_str()), "{name}");
                assert!(value.len() <= limits.max_field, "field of {}", value.len());
                total += value.len();
            }
            assert!(total <= limits.max_request, "kept {total} bytes");
            assert!(budget.in_use() >= total, "the budget holds less than the form");
            drop(form);
        }
        Err(p) => {
            assert!(
                matches!(p.status.as_u16(), 400 | 413 | 415),
                "status {}: {}",
                p.status,
                p.detail
            );
            assert!(!p.detail.is_empty());
        }
    }
    // Whatever happened, nothing of the request is held any more.
    assert_eq!(budget.in_use(), 0, "the body budget leaked");
});
