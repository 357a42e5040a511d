//! What a browser on another origin and a web developer's tools see (CONTRACT §2): CORS
//! preflights answered before authentication, CORS headers on every answer to an allowed
//! origin (errors included) and none for other origins, live on reload; `X-Request-Id` on
//! every answer and in problem+json; `format=auto` by `Accept`; the page and OpenAPI routes.
//! Real compute and BFF on `127.0.0.1:0`.

use reqwest::multipart::Form;
use reqwest::{Method, StatusCode};

use crate::support::*;

const APP: &str = "https://app.example";

fn cors_config(compute: &Compute, origins: &[&str]) -> imagegate::config::Config {
    let mut config = bff_config(&compute.url());
    config.bff.cors.allowed_origins =
        imagegate::config::StringList(origins.iter().map(|s| s.to_string()).collect());
    config.bff.cors.max_age = std::time::Duration::from_secs(120);
    config
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn vary_has(r: &reqwest::Response, value: &str) -> bool {
    r.headers()
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(value))
}

async fn preflight(bff: &Bff, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, bff.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key, x-request-id")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_needs_no_key_and_names_what_is_allowed() {
    let compute = start_compute(compute_config(), None);
    let mut config = cors_config(&compute, &[APP]);
    config.bff.api_keys = imagegate::edge::auth::ApiKeys::new(["secret-key"]);
    let bff = start_bff(config);

    for path in ["/v1/images/compress", "/v1/images/batch", "/v1/uploads"] {
        let r = preflight(&bff, path, APP).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
        assert!(header(&r, "access-control-allow-methods")
            .unwrap()
            .contains("POST"));
        let allowed = header(&r, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        for h in ["authorization", "x-api-key", "content-type", "x-request-id"] {
            assert!(allowed.contains(h), "{allowed} lacks {h}");
        }
        assert_eq!(header(&r, "access-control-max-age"), Some("120"));
        assert!(vary_has(&r, "Origin"));
        assert!(header(&r, "x-request-id").is_some());
    }

    // The real call with the key: readable by the page, exposed headers named.
    let r = reqwest::Client::new()
        .post(bff.url("/v1/images/compress"))
        .header("origin", APP)
        .header("x-api-key", "secret-key")
        .multipart(Form::new().part("file", file(jpeg(64, 48))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert!(vary_has(&r, "Origin"));
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-request-id",
        "x-original-size",
        "x-output-size",
        "x-compression-ratio",
        "x-elapsed-ms",
        "x-image-width",
        "x-image-height",
        "retry-after",
        "etag",
        "location",
    ] {
        assert!(exposed.contains(h), "{exposed} lacks {h}");
    }

    // Errors too: a 401 without the key is readable, so the page can show its detail.
    let r = reqwest::Client::new()
        .post(bff.url("/v1/images/compress"))
        .header("origin", APP)
        .multipart(Form::new().part("file", file(jpeg(8, 8))))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r = reqwest::Client::new()
        .get(bff.url("/no/such/route"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn other_origins_get_no_cors_headers_and_cors_is_off_by_default() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(cors_config(&compute, &[APP]));
    let evil = "https://evil.example";
    let r = preflight(&bff, "/v1/images/compress", evil).await;
    assert_ne!(r.status(), StatusCode::NO_CONTENT);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert!(header(&r, "access-control-allow-methods").is_none());
    let r = reqwest::Client::new()
        .post(bff.url("/v1/images/compress"))
        .header("origin", evil)
        .multipart(Form::new().part("file", file(jpeg(16, 16))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "served, but not readable by the page"
    );
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert!(header(&r, "access-control-expose-headers").is_none());

    let off = start_bff(bff_config(&compute.url()));
    let r = preflight(&off, "/v1/images/compress", APP).await;
    assert_ne!(r.status(), StatusCode::NO_CONTENT);
    assert!(header(&r, "access-control-allow-origin").is_none());

    // `*` allows any origin (answered with that origin).
    let any = start_bff(cors_config(&compute, &["*"]));
    let r = preflight(&any, "/v1/images/compress", evil).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(evil));
}

#[tokio::test]
async fn allowed_origins_are_live_on_reload() {
    let compute = start_compute(compute_config(), None);
    let dir = TempDir::new("cors-reload");
    let file_path = dir.path().join("imagegate.toml");
    std::fs::write(&file_path, "[bff.cors]\nallowed_origins = []\n").unwrap();
    let mut config = bff_config(&compute.url());
    config.bff.cors = imagegate::config::Config::load(Some(&file_path))
        .unwrap()
        .bff
        .cors;
    let bff = start_bff_with_file(config, Some(file_path.clone()));
    let r = preflight(&bff, "/v1/images/compress", APP).await;
    assert!(header(&r, "access-control-allow-origin").is_none());

    std::fs::write(
        &file_path,
        format!("[bff.cors]\nallowed_origins = [\"{APP}\"]\nmax_age = \"5m\"\n"),
    )
    .unwrap();
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let outcome: serde_json::Value = r.json().await.unwrap();
    assert!(
        outcome["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_str().is_some_and(|k| k.starts_with("bff.cors."))),
        "{outcome}"
    );
    let r = preflight(&bff, "/v1/images/compress", APP).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "access-control-max-age"), Some("300"));
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_problems_name_it() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let client = reqwest::Client::new();

    // The client's own id is kept, on success and on error.
    let r = client
        .post(bff.url("/v1/images/compress"))
        .header("x-request-id", "client-id-42")
        .multipart(Form::new().part("file", file(jpeg(16, 16))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-request-id"), Some("client-id-42"));
    let r = client
        .post(bff.url("/v1/images/compress"))
        .header("x-request-id", "client-id-43")
        .multipart(Form::new().part("file", file(b"not an image at all".to_vec())))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), Some("client-id-43"));
    let body = problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(body["instance"], "urn:imagegate:request:client-id-43");

    // A bad one (too long, or with a space) is replaced; so is none at all.
    let long = "x".repeat(129);
    for sent in [Some(long.as_str()), Some("has space"), None] {
        let mut req = client.get(bff.url("/health/live"));
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let r = req.send().await.unwrap();
        let id = header(&r, "x-request-id").unwrap().to_string();
        assert!(!id.is_empty() && id.len() <= 128 && Some(id.as_str()) != sent);
        assert!(id.bytes().all(|b| b.is_ascii_graphic()));
    }
    let max = "y".repeat(128);
    let r = client
        .get(bff.url("/nowhere"))
        .header("x-request-id", &max)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), Some(max.as_str()));
    let body = problem(r, StatusCode::NOT_FOUND).await;
    assert_eq!(body["instance"], format!("urn:imagegate:request:{max}"));

    // Two requests without ids get different ones; the batch stream has one too.
    let a = client.get(bff.url("/health")).send().await.unwrap();
    let b = client.get(bff.url("/health")).send().await.unwrap();
    assert_ne!(header(&a, "x-request-id"), header(&b, "x-request-id"));
    let r = client
        .post(bff.url("/v1/images/batch"))
        .header("x-request-id", "batch-7")
        .multipart(
            Form::new()
                .text("operation", "compress")
                .part("file", file(jpeg(16, 16))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-request-id"), Some("batch-7"));
    assert_eq!(header(&r, "x-accel-buffering"), Some("no"));
    let text = r.text().await.unwrap();
    assert!(text.contains("event: done"), "{text}");
}

async fn compress_with_accept(bff: &Bff, format: &str, accept: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(bff.url("/v1/images/compress"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.multipart(
        Form::new()
            .part("file", file(jpeg(96, 64)))
            .text("format", format.to_string()),
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn format_auto_follows_accept_and_says_so_in_vary() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
    for (accept, want) in [
        (Some(chrome), "image/avif"),
        (Some("image/webp,*/*"), "image/webp"),
        (Some("image/avif;q=0, image/webp"), "image/webp"),
        (Some("*/*"), "image/jpeg"),
        (None, "image/jpeg"),
    ] {
        let r = compress_with_accept(&bff, "auto", accept).await;
        assert_eq!(r.status(), StatusCode::OK, "{accept:?}");
        assert_eq!(header(&r, "content-type"), Some(want), "{accept:?}");
        assert!(vary_has(&r, "Accept"), "{accept:?}");
        let body = r.bytes().await.unwrap();
        match want {
            "image/avif" => assert_eq!(&body[4..12], b"ftypavif"),
            "image/webp" => assert_eq!(&body[8..12], b"WEBP"),
            _ => assert_eq!(&body[..3], b"\xFF\xD8\xFF"),
        }
    }
    // An explicit format does not vary with Accept.
    let r = compress_with_accept(&bff, "avif", None).await;
    assert_eq!(header(&r, "content-type"), Some("image/avif"));
    assert!(!vary_has(&r, "Accept"));
    let bad = compress_with_accept(&bff, "heic", None).await;
    let body = problem(bad, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("avif"), "{body}");

    // Uploads store the AVIF and serve it back as such.
    let r = reqwest::Client::new()
        .post(bff.url("/v1/uploads"))
        .header("accept", chrome)
        .multipart(
            Form::new()
                .part("file", file(jpeg(64, 64)))
                .text("format", "auto"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(vary_has(&r, "Accept"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["format"], "avif");
    let stored = reqwest::get(bff.url(body["url"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(header(&stored, "content-type"), Some("image/avif"));
}

#[tokio::test]
async fn the_page_and_the_api_description_are_served_with_a_strict_policy() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    // Public even with keys on: the page is where the key is typed in.
    config.bff.api_keys = imagegate::edge::auth::ApiKeys::new(["k"]);
    let bff = start_bff(config);
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let r = reqwest::get(bff.url(path)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(header(&r, "content-type").unwrap().starts_with(kind));
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        let csp = header(&r, "content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
    }
    let r = reqwest::get(bff.url("/openapi.json")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}
