//! `POST /v1/images/batch` with ZIP and tar parts (CONTRACT §2), through the real BFF and
//! compute: each image inside is one item, in order of appearance; entries that are not images
//! fail their own item; limits fail the request.

use reqwest::multipart::Form;
use serde_json::{json, Value};

use crate::support::*;
use imagegate::testkit::{gzip, tar_of, zip_of};

const PAYLOAD_TOO_LARGE: reqwest::StatusCode = reqwest::StatusCode::PAYLOAD_TOO_LARGE;

/// The `progress` events by index, and the `done` event.
fn by_index(body: &str) -> (Vec<Value>, Value) {
    let events = sse_events(body);
    let (last, done) = events.last().cloned().expect("events");
    assert_eq!(last, "done", "{events:?}");
    let mut progress: Vec<Value> = events
        .into_iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, data)| data)
        .collect();
    progress.sort_by_key(|p| p["index"].as_u64());
    (progress, done)
}

#[tokio::test]
async fn each_image_inside_an_archive_is_one_item() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let inner = zip_of(&[("deep.jpg", &jpeg(16, 16))]);
    let zip = zip_of(&[
        ("holiday/a.jpg", &jpeg(120, 80)),
        ("readme.txt", b"not an image"),
        ("nested.zip", &inner),
        ("holiday/b.png", &png(90, 60)),
    ]);
    let tgz = gzip(&tar_of(&[("c.png", &png(40, 40))]));
    let form = Form::new()
        .text("operation", "resize")
        .text("width", "32")
        .part("file", file(jpeg(64, 64)))
        .part("file", file(zip))
        .part("file", file(tgz))
        .part("file", file(b"PK\x03\x04 broken beyond repair".to_vec()));
    let r = post(bff.url("/v1/images/batch"), form).await;
    assert_eq!(r.status(), 200);
    let (progress, done) = by_index(&r.text().await.unwrap());
    assert_eq!(done, json!({"total": 7, "succeeded": 4, "failed": 3}));
    let summary: Vec<(u64, bool, Option<&str>)> = progress
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["success"].as_bool().unwrap(),
                p["name"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, true, None),
            (1, true, Some("holiday/a.jpg")),
            (2, false, Some("readme.txt")),
            (3, false, Some("nested.zip")),
            (4, true, Some("holiday/b.png")),
            (5, true, Some("c.png")),
            (6, false, None),
        ]
    );
    let error = |i: usize| progress[i]["error"].as_str().unwrap().to_string();
    assert!(
        error(2).contains("not a supported image type"),
        "{}",
        error(2)
    );
    assert!(
        error(3).contains("archive inside the archive"),
        "{}",
        error(3)
    );
    assert!(error(6).contains("does not open"), "{}", error(6));
    // The images inside really were resized and stored.
    let url = progress[1]["url"].as_str().unwrap();
    let stored = reqwest::get(bff.url(url)).await.unwrap();
    assert_eq!(stored.status(), 200);
    let image = image::load_from_memory(&stored.bytes().await.unwrap()).unwrap();
    assert_eq!(image.width(), 32);

    // The archives went through FileService.Extract on the heavy lane.
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_requests_total{code=\"OK\",lane=\"heavy\",method=\"compute.FileService/Extract\"}"
        ),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn archive_limits_fail_the_request() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.bff.max_files = 4;
    let bff = start_bff(config);
    let photo = jpeg(8, 8);
    let five: Vec<(String, &[u8])> = (0..5).map(|i| (format!("{i}.jpg"), &photo[..])).collect();
    let five: Vec<(&str, &[u8])> = five.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let form = Form::new()
        .text("operation", "compress")
        .part("file", file(zip_of(&five)));
    let body = problem(
        post(bff.url("/v1/images/batch"), form).await,
        PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("more than 4 items"),
        "{body}"
    );

    // An archive bomb: 16 MiB of zeros in one entry, far above 1000x.
    let bomb = zip_of(&[("zeros.bin", &vec![0u8; 16 << 20])]);
    let form = Form::new()
        .text("operation", "compress")
        .part("file", file(bomb));
    let body = problem(
        post(bff.url("/v1/images/batch"), form).await,
        PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("expands"),
        "{body}"
    );

    // Nothing was left behind: the BFF still answers, with nothing in flight.
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn unpacked_entries_count_against_the_body_budget() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    let mib = imagegate::config::Size::mib(1);
    (config.bff.max_file_size, config.bff.max_request_size) = (mib, mib);
    config.bff.max_buffered_bytes = mib;
    let bff = start_bff(config);
    // ~50 KB of ZIP that unpacks to 4 MiB (86x: no bomb, but four times the budget).
    let pattern: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let zip = zip_of(&[("big.bin", &pattern)]);
    assert!(zip.len() < 200 << 10, "{} bytes", zip.len());
    let form = Form::new()
        .text("operation", "compress")
        .part("file", file(zip));
    let body = problem(
        post(bff.url("/v1/images/batch"), form).await,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(body["type"], "urn:imagegate:problem:bff-busy", "{body}");
    // Nothing is still held once the request is answered.
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_http_buffered_body_bytes"),
        Some(0.0)
    );
}
