//! A real headless Chromium (Debian's, through chromedriver) against the real BFF and compute:
//! the upload page uploads a batch and shows its results, progress and errors; a page on an
//! allowed origin calls compress, batch (reading the POST event stream) and uploads with an API
//! key and reads the exposed headers; a page on another origin is refused by the browser.
//!
//! Screenshots go to a scratch directory, or to `$IMAGEGATE_SCREENSHOTS` (docs/img is made
//! that way: `IMAGEGATE_SCREENSHOTS=docs/img cargo test --test it browser::`).

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::webdriver::Browser;
use crate::support::*;

fn screenshot_dir() -> std::path::PathBuf {
    match std::env::var_os("IMAGEGATE_SCREENSHOTS") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            dir.into()
        }
        None => scratch_dir("screenshots"),
    }
}

/// Serves one empty page on any path: the "web app" on an origin of its own.
fn start_app_origin() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // One thread a connection: Chromium opens speculative connections that send
            // nothing, and must not hold up the real request.
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                let body =
                    "<!doctype html><html><head><title>app</title></head><body>app</body></html>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

const DONE: &str = "document.body.dataset.state === 'done'";

#[tokio::test]
async fn the_upload_page_processes_a_batch_and_shows_progress_results_and_errors() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.bff.api_keys = imagegate::edge::auth::ApiKeys::new(["page-key"]);
    let bff = start_bff(config);
    let shots = screenshot_dir();
    let files = TempDir::new("browser-files");
    let mut paths = Vec::new();
    for (i, (w, h)) in [(640, 480), (320, 240), (800, 600)].into_iter().enumerate() {
        let p = files.path().join(format!("photo-{i}.jpg"));
        std::fs::write(&p, jpeg(w, h)).unwrap();
        paths.push(p.display().to_string());
    }
    let not_image = files.path().join("notes.jpg");
    std::fs::write(&not_image, b"this is text, whatever its name says").unwrap();
    paths.push(not_image.display().to_string());

    let browser = Browser::start().await;
    browser.goto(&bff.url("/")).await;
    assert_eq!(
        browser
            .exec("return document.body.dataset.state", json!([]))
            .await,
        "idle"
    );
    // Every control has a label a screen reader reads out.
    let unlabelled = browser
        .exec(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(e => e.type !== 'file' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.id)",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "controls without a label");
    browser.screenshot(&shots.join("page-idle.png")).await;

    let input = browser.find("#files").await;
    browser.send_keys(&input, &paths.join("\n")).await;
    let key = browser.find("#api-key").await;
    browser.send_keys(&key, "page-key").await;
    browser
        .exec(
            "const f = document.getElementById('format'); f.value = 'webp';
             f.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([]),
        )
        .await;
    // Compute holds the batch: the page must show the upload done and processing pending.
    log.hold("BatchProcess");
    let start = browser.find("#start").await;
    browser.click(&start).await;
    assert!(
        browser
            .wait_for(
                "document.body.dataset.state === 'processing' || document.body.dataset.state === 'uploading'",
                Duration::from_secs(20)
            )
            .await,
        "the page never showed the upload in progress"
    );
    let uploaded = browser
        .wait_for(
            "[...document.querySelectorAll('#results progress')].length >= 4 && [...document.querySelectorAll('#results progress')].every(p => p.value >= p.max)",
            Duration::from_secs(20),
        )
        .await;
    assert!(uploaded, "per-file upload progress did not reach 100%");
    browser
        .screenshot(&shots.join("page-in-progress.png"))
        .await;
    log.release("BatchProcess");

    assert!(
        browser.wait_for(DONE, Duration::from_secs(60)).await,
        "the batch never finished on the page: {}",
        browser
            .exec("return document.body.innerText", json!([]))
            .await
    );
    let summary = browser
        .exec(
            "const s = document.getElementById('summary');
             return {text: s.textContent, state: s.dataset.state,
                     done: document.querySelectorAll('li.result.done').length,
                     failed: document.querySelectorAll('li.result.failed').length,
                     failedText: [...document.querySelectorAll('li.result.failed')].map(li => li.innerText).join(' | '),
                     previews: [...document.querySelectorAll('li.result.done img')].map(i => [i.complete, i.naturalWidth]),
                     downloads: [...document.querySelectorAll('li.result.done a[download]')].map(a => a.href),
                     urls: [...document.querySelectorAll('li.result.done[data-url]')].map(li => li.dataset.url)}",
            json!([]),
        )
        .await;
    assert_eq!(summary["state"], "done", "{summary}");
    assert_eq!(summary["done"], 3, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert!(
        summary["failedText"]
            .as_str()
            .unwrap()
            .contains("notes.jpg"),
        "{summary}"
    );
    assert!(summary["text"].as_str().unwrap().contains('3'), "{summary}");
    // With a key the previews and downloads are blob: copies of the stored results.
    assert_eq!(summary["downloads"].as_array().unwrap().len(), 3);
    assert_eq!(summary["urls"].as_array().unwrap().len(), 3, "{summary}");
    for u in summary["urls"].as_array().unwrap() {
        assert!(u.as_str().unwrap().starts_with("/v1/uploads/"), "{u}");
    }
    // Previews are the real results, decoded by the browser.
    assert!(
        browser
            .wait_for(
                "[...document.querySelectorAll('li.result.done img')].every(i => i.complete && i.naturalWidth > 0)",
                Duration::from_secs(10)
            )
            .await,
        "{summary}"
    );
    browser.screenshot(&shots.join("page-done.png")).await;

    // A request the server refuses (a wrong API key): its problem+json detail is shown.
    browser
        .exec(
            "document.getElementById('api-key').value = 'wrong-key';",
            json!([]),
        )
        .await;
    let start = browser.find("#start").await;
    browser.click(&start).await;
    assert!(
        browser
            .wait_for(
                "document.getElementById('error').dataset.state === 'error'",
                Duration::from_secs(20)
            )
            .await,
        "no error shown: {}",
        browser
            .exec("return document.body.innerText", json!([]))
            .await
    );
    let error = browser
        .exec(
            "return document.getElementById('error').innerText",
            json!([]),
        )
        .await;
    let shown = error.as_str().unwrap().to_ascii_lowercase();
    assert!(
        shown.contains("401") && shown.contains("key"),
        "the problem's detail is not shown: {error}"
    );
    browser.screenshot(&shots.join("page-error.png")).await;
    browser.quit().await;
}

/// Runs in the page: makes a PNG on a canvas, then calls compress, batch (reading the stream
/// with fetch + a reader) and uploads with the key, and a compress without it.
const CROSS_ORIGIN_CALLS: &str = r#"
const [bff, key, done] = arguments;
(async () => {
  const c = document.createElement('canvas'); c.width = 64; c.height = 48;
  const g = c.getContext('2d');
  g.fillStyle = '#c33'; g.fillRect(0, 0, 64, 48); g.fillStyle = '#3c3'; g.fillRect(10, 10, 30, 20);
  const blob = await new Promise(r => c.toBlob(r, 'image/png'));
  const form = (extra) => { const f = new FormData(); for (const [k, v] of extra) f.append(k, v); return f; };
  var out = {};
  let r = await fetch(bff + '/v1/images/compress', {method: 'POST',
    headers: {'X-API-Key': key, 'X-Request-Id': 'page-req-1'},
    body: form([['file', blob], ['format', 'webp'], ['name', 'red.png'], ['type', 'image/png']])});
  out.compress = {status: r.status, type: r.headers.get('content-type'), id: r.headers.get('x-request-id'),
    output: r.headers.get('x-output-size'), original: r.headers.get('x-original-size'),
    bytes: (await r.arrayBuffer()).byteLength};
  r = await fetch(bff + '/v1/images/batch', {method: 'POST', headers: {'Authorization': 'Bearer ' + key},
    body: form([['operation', 'compress'], ['file', blob], ['file', blob]])});
  const reader = r.body.getReader(); const dec = new TextDecoder(); let text = '';
  for (;;) { const {value, done: end} = await reader.read(); if (end) break; text += dec.decode(value, {stream: true}); }
  out.batch = {status: r.status, id: r.headers.get('x-request-id'), text};
  r = await fetch(bff + '/v1/uploads', {method: 'POST', headers: {'X-API-Key': key}, body: form([['file', blob]])});
  out.upload = {status: r.status, location: r.headers.get('location'), json: await r.json()};
  r = await fetch(bff + '/health');
  out.health = {status: r.status, id: r.headers.get('x-request-id')};
  done(out);
})().catch(e => done({failure: String(e), step: Object.keys(out).join(',')}));
"#;

#[tokio::test]
async fn a_page_on_an_allowed_origin_calls_the_api_and_another_origin_is_refused() {
    let compute = start_compute(compute_config(), None);
    let app_port = start_app_origin();
    let allowed = format!("http://127.0.0.1:{app_port}");
    let mut config = bff_config(&compute.url());
    config.bff.api_keys = imagegate::edge::auth::ApiKeys::new(["browser-key"]);
    config.bff.cors.allowed_origins = imagegate::config::StringList(vec![allowed.clone()]);
    let bff = start_bff(config);
    let api = format!("http://{}", bff.addr);

    let browser = Browser::start().await;
    browser.goto(&format!("{allowed}/")).await;
    let out = browser
        .exec_async(CROSS_ORIGIN_CALLS, json!([api, "browser-key"]))
        .await;
    if !out["failure"].is_null() {
        let m = metrics_text(&bff).await;
        let seen: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("imagegate_http_requests_total"))
            .collect();
        panic!("{out}\nthe BFF saw: {seen:#?}");
    }
    let c = &out["compress"];
    assert_eq!(c["status"], 200, "{out}");
    assert_eq!(c["type"], "image/webp");
    assert_eq!(
        c["id"], "page-req-1",
        "X-Request-Id is exposed and the client's own"
    );
    let output: usize = c["output"].as_str().unwrap().parse().unwrap();
    assert_eq!(output, c["bytes"].as_u64().unwrap() as usize);
    assert!(c["original"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    let b = &out["batch"];
    assert_eq!(b["status"], 200);
    assert!(b["id"].as_str().is_some_and(|id| !id.is_empty()));
    let text = b["text"].as_str().unwrap();
    assert_eq!(text.matches("event: progress").count(), 2, "{text}");
    assert!(
        text.contains(r#""total":2"#) && text.contains(r#""succeeded":2"#),
        "{text}"
    );
    let u = &out["upload"];
    assert_eq!(u["status"], 201);
    assert_eq!(u["location"], u["json"]["url"], "Location is exposed");
    assert_eq!(out["health"]["status"], 200);

    // Another origin: the browser refuses to hand the answer to the page.
    let other = format!("http://localhost:{app_port}");
    browser.goto(&format!("{other}/")).await;
    let refused = browser
        .exec_async(
            "const [bff, done] = arguments;
             fetch(bff + '/health').then(r => done({status: r.status}), e => done({failure: String(e)}));",
            json!([api]),
        )
        .await;
    assert!(
        refused["failure"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "a page on {other} read an answer: {refused}"
    );
    let _: Value = refused;
    browser.quit().await;
}
