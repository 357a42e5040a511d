//! `GET /openapi.json` is hand-written (`src/edge/assets/openapi.json`); these tests keep it
//! true. Against the router: every route registered in `src/edge` is described, nothing else
//! is, and every method a path does not document answers 405 on a real BFF. Against real
//! answers: a run of real calls, each answer's status is one the description lists for that
//! operation, with a documented content type and the documented `X-Request-Id`.

use std::collections::BTreeSet;

use crate::support::*;
use reqwest::multipart::Form;
use reqwest::Method;
use serde_json::Value;

fn description() -> Value {
    serde_json::from_str(imagegate::edge::page::OPENAPI_JSON).expect("openapi.json is JSON")
}

/// (METHOD, path) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            if method != "parameters" {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// (METHOD, path) of every route the edge registers, read from its sources: `post(PATH, …)`
/// is POST, `get(PATH, …)` is GET and HEAD (see `edge::routes::{get, post}`).
fn routed() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/edge");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (helper, methods) in [("post(\"", &["POST"][..]), ("get(\"", &["GET", "HEAD"][..])] {
            for (i, _) in text.match_indices(helper) {
                // Only calls of the helpers themselves, not `web::post()` or `.get("…")`.
                let before = text[..i].chars().last();
                if matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '.' || c == ':')
                {
                    continue;
                }
                let rest = &text[i + helper.len()..];
                let route = &rest[..rest.find('"').unwrap()];
                for m in methods {
                    out.insert((m.to_string(), route.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn every_route_of_the_router_is_described_and_nothing_else() {
    let doc = description();
    let (documented, routed) = (documented(&doc), routed());
    assert!(routed.len() >= 20, "found only {routed:?} in src/edge");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "openapi.json describes routes the BFF does not have: {unrouted:?}"
    );
}

/// The response object for `status` of an operation, `$ref`s resolved.
fn response<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
    let r = &doc["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
    if r.is_null() {
        return None;
    }
    match r["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            Some(&doc["components"]["responses"][name])
        }
        None => Some(r),
    }
}

/// Checks one real answer against the description of its operation.
fn check(doc: &Value, method: &str, path: &str, r: &reqwest::Response) {
    let status = r.status().as_u16();
    let described = response(doc, method, path, status).unwrap_or_else(|| {
        panic!("{method} {path} answered {status}, which openapi.json does not list")
    });
    if let Some(content) = described["content"].as_object() {
        if method != "HEAD" {
            let got = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_string();
            assert!(
                content.contains_key(&got),
                "{method} {path} {status}: content type {got:?}, documented {:?}",
                content.keys().collect::<Vec<_>>()
            );
        }
    }
    if let Some(headers) = described["headers"].as_object() {
        for name in headers.keys() {
            let required = headers[name]["required"].as_bool().unwrap_or(false)
                || name.eq_ignore_ascii_case("x-request-id");
            if required {
                assert!(
                    r.headers().contains_key(name.as_str()),
                    "{method} {path} {status}: documented header {name} is missing"
                );
            }
        }
    }
}

#[tokio::test]
async fn real_answers_match_the_description_and_undocumented_methods_are_405() {
    let doc = description();
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let client = reqwest::Client::new();

    // An upload first, so /v1/uploads/{id} has a real id.
    let r = post(
        bff.url("/v1/uploads"),
        Form::new().part("file", file(jpeg(32, 24))),
    )
    .await;
    check(&doc, "POST", "/v1/uploads", &r);
    let stored: Value = r.json().await.unwrap();
    let id = stored["id"].as_str().expect("an upload id").to_string();
    let concrete = |path: &str| path.replace("{id}", &id);

    // Every documented (path, method) is answered by a route; every other method is 405.
    let mut seen = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] {
            let is_documented = ops.get(method.to_lowercase()).is_some();
            let r = client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    bff.url(&concrete(path)),
                )
                .send()
                .await
                .unwrap();
            if is_documented {
                seen += 1;
                check(&doc, method, path, &r);
                assert_ne!(r.status(), 404, "{method} {path}: no route");
            } else {
                assert_eq!(r.status(), 405, "{method} {path} is undocumented");
            }
        }
    }
    assert!(seen >= 20, "{seen}");

    // The image routes: success, and the documented errors a client causes.
    for route in [
        "/v1/images/compress",
        "/v1/images/resize",
        "/v1/images/watermark",
    ] {
        let mut form = Form::new().part("file", file(jpeg(64, 48)));
        form = match route {
            "/v1/images/resize" => form.text("width", "32").text("height", "32"),
            "/v1/images/watermark" => form.text("text", "hi"),
            _ => form,
        };
        let r = post(bff.url(route), form).await;
        assert_eq!(r.status(), 200, "{route}");
        check(&doc, "POST", route, &r);
        let r = post(bff.url(route), Form::new().text("quality", "70")).await;
        assert_eq!(r.status(), 400, "{route} without a file");
        check(&doc, "POST", route, &r);
        let r = post(
            bff.url(route),
            Form::new().part("file", file(b"plain text, not an image".to_vec())),
        )
        .await;
        check(&doc, "POST", route, &r);
    }
    let r = post(
        bff.url("/v1/images/batch"),
        Form::new()
            .part("file", file(jpeg(32, 24)))
            .text("operation", "compress"),
    )
    .await;
    assert_eq!(r.status(), 200);
    check(&doc, "POST", "/v1/images/batch", &r);
    let r = client
        .get(bff.url("/v1/uploads/0000000000000000000000000000000000000000"))
        .send()
        .await
        .unwrap();
    check(&doc, "GET", "/v1/uploads/{id}", &r);
    // Compute gone: /health and /health/ready answer their documented 503.
    compute.stop();
    for path in ["/health", "/health/ready"] {
        assert!(
            eventually(std::time::Duration::from_secs(20), async || {
                let r = client.get(bff.url(path)).send().await.unwrap();
                check(&doc, "GET", path, &r);
                r.status() == 503
            })
            .await,
            "{path} never answered 503 with compute stopped"
        );
    }
}
