//! Upload-and-store (the seed's scenario A): `POST /v1/uploads` compresses the file over the
//! heavy lane and stores the result; `GET`/`HEAD /v1/uploads/{id}` serve it back.
//!
//! Stored objects never change (an id is the hash of the bytes), so responses carry the hash
//! as a strong ETag and may be cached for a year; a matching `If-None-Match` is answered 304
//! after a `HEAD` on the store, without reading the object. Every id is parsed strictly
//! ([`ObjectId::parse`]) before anything else: a name that is not an id is a 404 and never
//! reaches the store.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::json;

use super::intake::{read_form, FormSpec};
use super::params;
use super::problem::Problem;
use super::resource::{get, limits, post, required_file, vary_accept};
use super::AppState;
use crate::store::{ObjectId, ObjectInfo, Stored};

/// Stored objects are immutable: let every cache keep them.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

/// Mounts `POST /v1/uploads` and `GET /v1/uploads/{id}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/v1/uploads", upload))
        .service(get("/v1/uploads/{id}", download));
}

/// The address of a stored object, as answered in `url` and `Location`.
pub fn url_of(id: &ObjectId) -> String {
    format!("/v1/uploads/{id}")
}

async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let spec = FormSpec {
        file_fields: &["file"],
        text_fields: params::COMPRESS_FIELDS,
        many_files: false,
    };
    let form = read_form(&req, payload, limits(&state), &state.body_budget, &spec).await?;
    let file = required_file(&form)?;
    let request = params::compress_request(&form, file)?;
    let r = state.dispatcher.compress(request).await?;
    let Stored { id, size, .. } = state.store.put(r.image_data).await?;
    let url = url_of(&id);
    let ratio = r.original_size as f64 / size.max(1) as f64;
    let mut response = HttpResponse::Created();
    vary_accept(&mut response, &form);
    Ok(response
        .insert_header((header::LOCATION, url.clone()))
        .json(json!({
            "id": id.as_str(),
            "url": url,
            "original_size": r.original_size,
            "compressed_size": size,
            "compression_ratio": (ratio * 1000.0).round() / 1000.0,
            "format": id.kind().name(),
        })))
}

fn unknown(id: &str) -> Problem {
    // Echo only what is printable and short: the id may be hostile.
    let shown: String = id
        .chars()
        .take(80)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    Problem::not_found(format!("no upload with id {shown:?}"))
}

/// `If-None-Match` against our strong ETag (weak comparison, as RFC 9110 asks for this
/// header); `*` matches any stored object.
fn none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn headers(r: &mut actix_web::HttpResponseBuilder, id: &ObjectId) {
    r.insert_header((header::ETAG, id.etag()))
        .insert_header((header::CACHE_CONTROL, CACHE_FOREVER))
        .insert_header((header::CONTENT_TYPE, id.kind().content_type()))
        // User content: never let a browser guess another type.
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
}

async fn download(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let raw = path.into_inner();
    let Some(id) = ObjectId::parse(&raw) else {
        return Err(unknown(&raw));
    };
    let etag = id.etag();
    let not_modified = none_match(&req, &etag);
    if not_modified || req.method() == Method::HEAD {
        let Some(ObjectInfo { size, .. }) = state.store.head(&id).await? else {
            return Err(unknown(&raw));
        };
        let mut r = HttpResponse::build(if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        });
        headers(&mut r, &id);
        if not_modified {
            return Ok(r.finish());
        }
        // HEAD: the GET's Content-Length without reading the object.
        return Ok(r.no_chunking(size).streaming(futures_util::stream::empty::<
            Result<Bytes, std::convert::Infallible>,
        >()));
    }
    let Some(object) = state.store.get(&id).await? else {
        return Err(unknown(&raw));
    };
    let mut r = HttpResponse::Ok();
    headers(&mut r, &id);
    Ok(r.no_chunking(object.info.size).streaming(object.stream))
}
