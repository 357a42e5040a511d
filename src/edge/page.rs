//! The upload page (`GET /`, its script and stylesheet) and the API's OpenAPI 3.1 description
//! (`GET /openapi.json`), embedded in the binary: no build step, nothing fetched from
//! elsewhere, so the page works offline and behind any firewall.
//!
//! The page is served with a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline code), so a stored image or a hostile file name shown on it cannot
//! run script. `openapi.json` is hand-written and kept true by `tests/it/openapi.rs`, which
//! checks it against the router and against real answers.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::resource::get;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// The OpenAPI 3.1 description of every route.
pub const OPENAPI_JSON: &str = include_str!("assets/openapi.json");

/// What the page may load and talk to: only its own origin (`blob:`/`data:` images for the
/// previews of results fetched with an API key).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// Mounts the web page, its assets and `/openapi.json`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/", index))
        .service(get("/assets/app.js", app_js))
        .service(get("/assets/app.css", app_css))
        .service(get("/openapi.json", openapi));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        // The assets change with the binary: let a browser revalidate rather than keep stale ones.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_description_is_json_of_version_3_1() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/images/compress"]["post"].is_object());
    }

    #[test]
    fn the_page_has_no_inline_script_or_external_asset() {
        assert!(INDEX_HTML.contains("/assets/app.js"));
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline script breaks the CSP"
        );
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://"), "external asset");
            assert!(!text.contains("https://"), "external asset");
        }
    }
}
