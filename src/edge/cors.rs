//! CORS (CONTRACT §2, `[bff.cors]`): preflights from an allowed origin are answered here,
//! before authentication (a preflight carries no credentials); every other answer to an
//! allowed origin, errors included, gets `Access-Control-Allow-Origin`, `Vary: Origin` and the
//! exposed headers. Other origins get no CORS headers at all, and the request itself goes on
//! as it would without CORS (a browser then refuses to show the answer to the page).
//!
//! Hand-written rather than actix-cors: the origins and max age are live on reload (read from
//! [`crate::reload::Reloader::current`] per request), while actix-cors fixes its settings when
//! each worker's App is built; and actix-cors answers a disallowed origin with a 400 of its own,
//! where the contract wants the request served without CORS headers.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::AppState;
use crate::config::CorsConfig;

/// Methods the API answers.
const ALLOW_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers a page may send.
/// `X-Requested-With` and `Cache-Control` are what Dropzone sends by default.
const ALLOW_HEADERS: &str = "Authorization, X-API-Key, Content-Type, X-Request-Id, traceparent, \
     X-Requested-With, Cache-Control";
/// Response headers a page may read (besides the CORS-safelisted ones).
pub const EXPOSE_HEADERS: &str = "X-Request-Id, X-Original-Size, X-Output-Size, \
     X-Compression-Ratio, X-Elapsed-Ms, X-Image-Width, X-Image-Height, Retry-After, ETag, Location";

/// Whether `origin` may read answers under `cors`.
pub fn allows(cors: &CorsConfig, origin: &[u8]) -> bool {
    cors.allowed_origins
        .0
        .iter()
        .any(|o| o == "*" || o.as_bytes() == origin)
}

fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn add_vary(headers: &mut HeaderMap, value: &'static str) {
    headers.append(header::VARY, HeaderValue::from_static(value));
}

/// Middleware: see the module docs.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let config = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.reloader.current());
    let Some(config) = config.filter(|c| !c.bff.cors.allowed_origins.0.is_empty()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let cors = &config.bff.cors;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| allows(cors, o.as_bytes()))
        .cloned();
    if let Some(origin) = origin.clone().filter(|_| is_preflight(&req)) {
        let mut res = HttpResponse::NoContent();
        res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((
                header::ACCESS_CONTROL_MAX_AGE,
                cors.max_age.as_secs().to_string(),
            ));
        let mut res = res.finish();
        for v in [
            "Origin",
            "Access-Control-Request-Method",
            "Access-Control-Request-Headers",
        ] {
            add_vary(res.headers_mut(), v);
        }
        return Ok(req.into_response(res).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    // The answer depends on Origin whenever CORS is on: caches must keep them apart.
    add_vary(headers, "Origin");
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StringList;

    #[test]
    fn only_listed_origins_are_allowed_and_star_allows_all() {
        let cors = CorsConfig {
            allowed_origins: StringList(vec!["https://app.example".into()]),
            ..CorsConfig::default()
        };
        assert!(allows(&cors, b"https://app.example"));
        assert!(!allows(&cors, b"https://app.example.evil"));
        assert!(!allows(&cors, b"http://app.example"));
        assert!(!allows(&CorsConfig::default(), b"https://app.example"));
        let any = CorsConfig {
            allowed_origins: StringList(vec!["*".into()]),
            ..CorsConfig::default()
        };
        assert!(allows(&any, b"https://anything"));
    }
}
