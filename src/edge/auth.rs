//! Optional API-key authentication of the edge (`[bff] api_keys`; empty = off).
//!
//! A client presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The
//! check is an Actix middleware, so it runs on the request head before any handler touches
//! the body: an unauthenticated upload is refused without reading (or buffering) a byte of it.
//! Actix answers such an early response with `Connection: close` and keeps reading and dropping
//! input for `client_disconnect_timeout` before closing, so the client reads the 401 instead of
//! a reset.
//!
//! Keys are compared as SHA-256 digests with [`subtle`]'s constant-time equality, against every
//! configured key without stopping at the first match: neither the time taken nor an early exit
//! says how much of a guess was right, or how long a real key is.
//!
//! Not protected: the probes and the scrape (`/health`, `/health/live`, `/health/ready`,
//! `/metrics`), `GET`/`HEAD /v1/uploads/{id}` (browsers load those in `<img>` without headers;
//! ids are content hashes, so the URL itself is the capability — see docs/operations.md), and
//! paths no route matches (they answer 404 either way). The keys in force are read from the
//! reloader on every request, so a reload swaps them without a restart.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use super::problem::Problem;
use super::AppState;
pub use crate::config::ApiKeys;

/// Header of the second way to send a key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Routes anyone may call. Exact patterns, so a new route is protected unless listed here.
const PUBLIC_PATTERNS: &[&str] = &[
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    // The page must load before its user can type a key into it; the description is public.
    "/",
    "/assets/app.js",
    "/assets/app.css",
    "/openapi.json",
];

/// Whether a request to the route `pattern` (`None`: no route) needs a key.
pub fn is_protected(method: &Method, pattern: Option<&str>) -> bool {
    match pattern {
        // No route: the 404 says nothing a key would protect.
        None => false,
        Some(p) if PUBLIC_PATTERNS.contains(&p) => false,
        // Stored images are fetched by <img> tags, which cannot send headers.
        Some("/v1/uploads/{id}") => !(method == Method::GET || method == Method::HEAD),
        Some(_) => true,
    }
}

/// The keys a request presents: a Bearer token and/or an `X-API-Key` value.
fn presented(headers: &header::HeaderMap) -> impl Iterator<Item = &[u8]> {
    let bearer = headers.get_all(header::AUTHORIZATION).filter_map(|v| {
        let v = v.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1); one or more spaces follow it.
        let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| rest.trim_ascii())
    });
    let api_key = headers
        .get_all(API_KEY_HEADER)
        .map(|v| v.as_bytes().trim_ascii());
    bearer.chain(api_key)
}

/// Checks a request head against `keys`: `Ok` if auth is off or a presented key matches.
pub fn check(keys: &ApiKeys, headers: &header::HeaderMap) -> Result<(), Problem> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut any_presented = false;
    let mut ok = false;
    for key in presented(headers) {
        any_presented = true;
        // No early exit: each presented key costs the same whether or not an earlier one matched.
        ok |= keys.accepts(key);
    }
    if ok {
        Ok(())
    } else if any_presented {
        Err(Problem::unauthorized("the API key is not valid"))
    } else {
        Err(Problem::unauthorized(
            "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        ))
    }
}

/// The middleware (`actix_web::middleware::from_fn`): refuses a protected request without a
/// valid key before the handler, and so before the body, is touched.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => {
            let config = state.reloader.current();
            let keys = &config.bff.api_keys;
            if !keys.is_empty() && is_protected(req.method(), req.match_pattern().as_deref()) {
                check(keys, req.headers())
            } else {
                Ok(())
            }
        }
        // The app always registers its state; should that ever break, fail closed rather
        // than let requests through unchecked.
        None => Err(Problem::unavailable(
            "auth-unavailable",
            "the API-key check is not configured on this listener",
            std::time::Duration::from_secs(1),
        )),
    };
    if let Err(problem) = verdict {
        return Ok(req
            .into_response(problem.error_response())
            .map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use serde::Deserialize;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn both_header_styles_are_accepted_and_wrong_keys_refused() {
        let keys = ApiKeys::new(["alpha-key", "beta-key"]);
        assert!(check(&keys, &headers(&[("authorization", "Bearer alpha-key")])).is_ok());
        assert!(check(&keys, &headers(&[("authorization", "bearer   beta-key")])).is_ok());
        assert!(check(&keys, &headers(&[("x-api-key", "beta-key")])).is_ok());
        assert!(check(
            &keys,
            &headers(&[("x-api-key", "wrong"), ("x-api-key", "alpha-key")])
        )
        .is_ok());
        for bad in [
            headers(&[]),
            headers(&[("authorization", "Basic alpha-key")]),
            headers(&[("authorization", "Bearer alpha-ke")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("x-api-key", "alpha-key-and-more")]),
        ] {
            let p = check(&keys, &bad).unwrap_err();
            assert_eq!(p.status.as_u16(), 401);
            assert!(!p.detail.contains("alpha"), "{}", p.detail);
        }
        assert!(
            check(&ApiKeys::default(), &headers(&[])).is_ok(),
            "no keys: auth off"
        );
    }

    #[test]
    fn keys_parse_from_a_list_or_a_comma_separated_string() {
        #[derive(Deserialize)]
        struct T {
            k: ApiKeys,
        }
        let t: T = serde_json::from_str(r#"{"k": "k1, k2,,"}"#).unwrap();
        assert_eq!(t.k, ApiKeys::new(["k1", "k2"]));
        let t: T = serde_json::from_str(r#"{"k": ["k1", "k2"]}"#).unwrap();
        assert_eq!(t.k, ApiKeys::new(["k1", "k2"]));
        let t: T = serde_json::from_str(r#"{"k": ""}"#).unwrap();
        assert!(t.k.is_empty());
        let e = serde_json::from_str::<T>(r#"{"k": 424242}"#).err().unwrap();
        assert!(!e.to_string().contains("424242"), "{e}");
        let e = serde_json::from_str::<T>(r#"{"k": ["a", 424242]}"#)
            .err()
            .unwrap();
        assert!(!e.to_string().contains("424242"), "{e}");
    }

    #[test]
    fn debug_never_shows_a_key() {
        let keys = ApiKeys::new(["s3cr3t-value"]);
        assert_eq!(format!("{keys:?}"), "ApiKeys(<1 redacted>)");
    }

    #[test]
    fn probes_scrapes_and_image_fetches_are_public() {
        for p in ["/health", "/health/live", "/health/ready", "/metrics"] {
            assert!(!is_protected(&Method::GET, Some(p)), "{p}");
        }
        assert!(!is_protected(&Method::GET, Some("/v1/uploads/{id}")));
        assert!(!is_protected(&Method::HEAD, Some("/v1/uploads/{id}")));
        assert!(!is_protected(&Method::GET, None));
        assert!(is_protected(&Method::POST, Some("/v1/uploads")));
        assert!(is_protected(&Method::POST, Some("/v1/images/compress")));
        assert!(is_protected(&Method::POST, Some("/admin/reload")));
        assert!(is_protected(&Method::DELETE, Some("/v1/uploads/{id}")));
    }
}
