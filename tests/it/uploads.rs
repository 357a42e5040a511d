//! Upload-and-store end to end, on the filesystem backend: the real compute server and the
//! real BFF on ephemeral ports, a real data directory; plus the retention sweep, run
//! directly on a store with a short max age and a tiny byte budget.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::support::*;
use imagegate::config::{Config, Size, StoreConfig};
use imagegate::store::{ObjectId, Store};
use reqwest::multipart::Form;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn config_with_store(compute_url: &str, dir: &Path) -> Config {
    let mut c = bff_config(compute_url);
    c.store.dir = dir.to_str().unwrap().to_string();
    c
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What compute itself produces for these parameters (the plain compress endpoint).
async fn compressed(bff: &Bff, image: Vec<u8>, quality: &str, format: &str) -> Vec<u8> {
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new()
            .part("file", file(image))
            .text("quality", quality.to_string())
            .text("format", format.to_string()),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn an_upload_is_stored_and_served_back_byte_for_byte() {
    let dir = TempDir::new("uploads");
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(config_with_store(&compute.url(), dir.path()));
    let image = jpeg(640, 480);
    let expected = compressed(&bff, image.clone(), "70", "webp").await;

    let r = post(
        bff.url("/v1/uploads"),
        Form::new()
            .part("file", file(image.clone()))
            .text("quality", "70"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(id, format!("{}.webp", sha256_hex(&expected)));
    assert_eq!(body["url"], format!("/v1/uploads/{id}"));
    assert_eq!(location, format!("/v1/uploads/{id}"));
    assert_eq!(body["format"], "webp");
    assert_eq!(body["original_size"], image.len() as u64);
    assert_eq!(body["compressed_size"], expected.len() as u64);
    let ratio = body["compression_ratio"].as_f64().unwrap();
    assert!(
        (ratio - image.len() as f64 / expected.len() as f64).abs() < 0.01,
        "{ratio}"
    );

    // GET: exactly compute's bytes, with the caching headers.
    let r = reqwest::get(bff.url(&location)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        expected.len().to_string()
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&expected)));
    let served = r.bytes().await.unwrap();
    assert_eq!(&served[..4], b"RIFF");
    assert_eq!(&served[8..12], b"WEBP");
    assert!(
        served[..] == expected[..],
        "served bytes differ from compute's"
    );

    // If-None-Match: matching (strong, weak form, in a list, `*`) → 304 without a body.
    let client = reqwest::Client::new();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_string(),
    ] {
        let r = client
            .get(bff.url(&location))
            .header("if-none-match", inm.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        assert!(r.headers().contains_key("cache-control"));
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = client
        .get(bff.url(&location))
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), expected.len());

    // HEAD: the GET's headers, no body.
    let r = client.head(bff.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        expected.len().to_string()
    );
    assert!(r.bytes().await.unwrap().is_empty());

    // Another format, chosen by the form.
    let jpeg_expected = compressed(&bff, png(120, 90), "60", "jpeg").await;
    let r = post(
        bff.url("/v1/uploads"),
        Form::new()
            .part("file", file(png(120, 90)))
            .text("quality", "60")
            .text("format", "jpeg"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["format"], "jpeg");
    let jpeg_id = body["id"].as_str().unwrap().to_string();
    assert_eq!(jpeg_id, format!("{}.jpg", sha256_hex(&jpeg_expected)));
    let r = reqwest::get(bff.url(body["url"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(r.bytes().await.unwrap()[..] == jpeg_expected[..]);

    // On disk: the two objects and nothing else (no staging leftovers).
    let mut want = vec![id.clone(), jpeg_id.clone()];
    want.sort();
    assert_eq!(names(dir.path()), want);

    // Bad requests are the usual problems.
    problem(
        post(bff.url("/v1/uploads"), Form::new().text("quality", "70")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        post(
            bff.url("/v1/uploads"),
            Form::new()
                .part("file", file(jpeg(16, 16)))
                .text("quality", "101"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        post(
            bff.url("/v1/uploads"),
            Form::new().part("file", file(b"definitely not an image".to_vec())),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(names(dir.path()), want);

    let m = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &m,
            "imagegate_store_puts_total{backend=\"fs\",result=\"created\"}"
        ),
        Some(2.0),
        "{m}"
    );
    let bytes = (expected.len() + jpeg_expected.len()) as f64;
    assert!(
        eventually(Duration::from_secs(5), async || {
            let m = metrics_text(&bff).await;
            metric(&m, "imagegate_store_objects{backend=\"fs\"}") == Some(2.0)
                && metric(&m, "imagegate_store_bytes{backend=\"fs\"}") == Some(bytes)
        })
        .await,
        "{}",
        metrics_text(&bff).await
    );
    assert!(
        m.contains("imagegate_store_operation_duration_seconds_bucket{backend=\"fs\",op=\"put\"")
    );
    assert!(metric(
        &m,
        "imagegate_http_requests_total{method=\"GET\",route=\"/v1/uploads/{id}\",status=\"200\"}"
    )
    .is_some());
}

#[tokio::test]
async fn unknown_and_hostile_ids_are_404_and_never_reach_the_store() {
    let root = TempDir::new("hostile");
    let dir = root.path().join("uploads");
    std::fs::create_dir_all(&dir).unwrap();
    // Things a traversal would like to read: beside the store and inside it.
    std::fs::write(root.path().join("passwd"), b"root:x:0:0").unwrap();
    std::fs::write(dir.join("secret.webp"), b"RIFF....WEBPsecret").unwrap();
    let hash = "ab".repeat(32);
    std::fs::write(dir.join(format!("{hash}.gif")), b"GIF89a").unwrap();
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(config_with_store(&compute.url(), &dir));

    let store_calls = async || {
        let m = metrics_text(&bff).await;
        ["get", "head"]
            .iter()
            .map(|op| {
                metric(
                    &m,
                    &format!(
                        "imagegate_store_operation_duration_seconds_count{{backend=\"fs\",op=\"{op}\"}}"
                    ),
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };

    let hostile = [
        "/v1/uploads/../etc/passwd".to_string(),
        "/v1/uploads/..%2fpasswd".to_string(),
        "/v1/uploads/%2e%2e%2fetc%2fpasswd".to_string(),
        "/v1/uploads/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".to_string(),
        "/v1/uploads/..%5cpasswd".to_string(),
        format!("/v1/uploads/{hash}.webp%2f..%2f..%2fpasswd"),
        format!("/v1/uploads/..%2f{hash}.webp"),
        "/v1/uploads/secret.webp".to_string(),
        format!("/v1/uploads/{hash}.gif"),
        format!("/v1/uploads/{hash}.exe"),
        format!("/v1/uploads/{hash}"),
        format!("/v1/uploads/{}.webp", hash.to_uppercase()),
        format!("/v1/uploads/{hash}.WEBP"),
        format!("/v1/uploads/{hash}0.webp"),
        format!("/v1/uploads/{}.webp", &hash[2..]),
        format!("/v1/uploads/{hash}.webp%00"),
        format!("/v1/uploads/{hash}.webp%23"),
        format!("/v1/uploads/{hash}.webp.png"),
        format!("/v1/uploads/{}", "a".repeat(4000)),
        format!("/v1/uploads/{}.webp", "f".repeat(640)),
        "/v1/uploads/".to_string(),
        "/v1/uploads/%20".to_string(),
    ];
    for path in &hostile {
        let (status, headers, body) = raw_get(bff.addr, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/problem+json"),
            "{path}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], 404, "{path}");
        let text = body.to_string();
        assert!(!text.contains("root:x"), "{path}: {text}");
    }
    // None of them was looked up: only well-formed ids reach the store.
    assert_eq!(store_calls().await, 0.0);

    // A well-formed id that is not stored: 404 too, after a real look.
    let unknown = format!("/v1/uploads/{hash}.webp");
    let (status, headers, _) = raw_get(bff.addr, &unknown).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    let r = reqwest::Client::new()
        .head(bff.url(&unknown))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(store_calls().await, 2.0);
    // And the planted files are untouched.
    assert_eq!(
        std::fs::read(root.path().join("passwd")).unwrap(),
        b"root:x:0:0"
    );
    assert_eq!(
        names(&dir),
        vec![format!("{hash}.gif"), "secret.webp".to_string()]
    );
}

#[tokio::test]
async fn concurrent_uploads_of_one_image_store_one_object() {
    let dir = TempDir::new("dedup");
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(config_with_store(&compute.url(), dir.path()));
    let image = jpeg(800, 600);
    let uploads = (0..8).map(|_| {
        let url = bff.url("/v1/uploads");
        let image = image.clone();
        tokio::spawn(async move {
            let r = post(url, Form::new().part("file", file(image))).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
    });
    let ids: Vec<String> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(names(dir.path()), vec![ids[0].clone()]);
    let m = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &m,
            "imagegate_store_puts_total{backend=\"fs\",result=\"created\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "imagegate_store_puts_total{backend=\"fs\",result=\"existing\"}"
        ),
        Some(7.0),
        "{m}"
    );
    let r = reqwest::get(bff.url(&format!("/v1/uploads/{}", ids[0])))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_failing_store_answers_503_problem_and_leaves_nothing_behind() {
    let root = TempDir::new("failing");
    let dir = root.path().join("uploads");
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(config_with_store(&compute.url(), &dir));
    let image = jpeg(320, 240);

    // 1. The write starts but cannot complete: the object's name is taken by a directory,
    //    so neither the link nor the rename of the fully written staging file can succeed.
    let expected = compressed(&bff, image.clone(), "80", "webp").await;
    let id = format!("{}.webp", sha256_hex(&expected));
    std::fs::create_dir_all(dir.join(&id).join("occupied")).unwrap();
    let b = problem(
        post(
            bff.url("/v1/uploads"),
            Form::new().part("file", file(image.clone())),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        b["detail"].as_str().unwrap().contains("nothing was stored"),
        "{b}"
    );
    assert!(!b["detail"]
        .as_str()
        .unwrap()
        .contains(root.path().to_str().unwrap()));
    assert_eq!(names(&dir), vec![id.clone()], "a staging file was left");
    assert_eq!(names(&dir.join(&id)), vec!["occupied".to_string()]);

    // 2. The data directory is gone and its path is a regular file: every write fails, even
    //    for root (unlike a chmod).
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let r = post(
        bff.url("/v1/uploads"),
        Form::new().part("file", file(image.clone())),
    )
    .await;
    assert!(r.headers().contains_key("retry-after"));
    problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(std::fs::read(&dir).unwrap(), b"not a directory");
    assert_eq!(names(root.path()), vec!["uploads".to_string()]);

    // The errors are counted, the server is fine.
    let m = metrics_text(&bff).await;
    assert!(
        metric(
            &m,
            "imagegate_store_errors_total{backend=\"fs\",op=\"put\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{m}"
    );
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(image)),
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// Writes a small image object directly and sets its age.
async fn put_aged(store: &Store, dir: &Path, seed: u32, age: Duration) -> (ObjectId, u64) {
    let stored = store.put(png(8 + seed, 8).into()).await.unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(dir.join(stored.id.as_str()))
        .unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    (stored.id, stored.size)
}

fn store_config(dir: &Path, max_age: Duration, max_total_bytes: u64) -> StoreConfig {
    StoreConfig {
        dir: dir.to_str().unwrap().to_string(),
        max_age,
        max_total_bytes: Size(max_total_bytes),
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn retention_removes_old_objects_and_nothing_else() {
    let dir = TempDir::new("retention");
    let d = dir.path();
    let hour = Duration::from_secs(3600);
    let store = Store::open(&store_config(d, hour, 0), &prometheus::Registry::new()).unwrap();
    let (old, _) = put_aged(&store, d, 1, 3 * hour).await;
    let (older, _) = put_aged(&store, d, 2, 5 * hour).await;
    let (mid, mid_size) = put_aged(&store, d, 3, Duration::from_secs(1800)).await;
    let (new, new_size) = put_aged(&store, d, 4, Duration::ZERO).await;

    // Things that are not ours, however old or id-like, stay.
    let hash = "cd".repeat(32);
    let foreign = [
        ("notes.txt".to_string(), b"keep me".to_vec()),
        (format!("{hash}.gif"), b"GIF89a".to_vec()),
        (format!("{}.png", hash.to_uppercase()), b"upper".to_vec()),
        (format!("{hash}.png.bak"), b"backup".to_vec()),
        (format!("{hash}.png#tmp"), b"not a staging name".to_vec()),
    ];
    for (name, data) in &foreign {
        std::fs::write(d.join(name), data).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.join(name))
            .unwrap();
        f.set_modified(SystemTime::now() - 100 * hour).unwrap();
    }
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub").join(new.as_str()), b"nested").unwrap();
    // Staging files: one a crash left long ago (ours, removed), one of a write in progress.
    let stale = format!("{hash}.png#1");
    let live = format!("{hash}.png#2");
    std::fs::write(d.join(&stale), b"half").unwrap();
    std::fs::File::options()
        .write(true)
        .open(d.join(&stale))
        .unwrap()
        .set_modified(SystemTime::now() - 2 * hour)
        .unwrap();
    std::fs::write(d.join(&live), b"half").unwrap();

    let report = store.sweep().await.unwrap();
    assert_eq!(report.scanned, 4);
    let mut removed: Vec<&str> = report.removed.iter().map(|(id, _)| id.as_str()).collect();
    removed.sort();
    let mut want = vec![old.as_str(), older.as_str()];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(report.kept, 2);
    assert_eq!(report.kept_bytes, mid_size + new_size);
    assert_eq!(report.staging_removed, 1);
    assert!(!d.join(old.as_str()).exists() && !d.join(older.as_str()).exists());
    assert!(d.join(mid.as_str()).exists() && d.join(new.as_str()).exists());
    for (name, data) in &foreign {
        assert_eq!(&std::fs::read(d.join(name)).unwrap(), data, "{name}");
    }
    assert_eq!(
        std::fs::read(d.join("sub").join(new.as_str())).unwrap(),
        b"nested"
    );
    assert!(!d.join(&stale).exists());
    assert!(d.join(&live).exists());

    // A byte budget that fits only the newest: the oldest goes first.
    let tight = Store::open(
        &store_config(d, Duration::ZERO, new_size + 1),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let report = tight.sweep().await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].0, mid);
    assert!(d.join(new.as_str()).exists() && !d.join(mid.as_str()).exists());
    // Both limits off: nothing more goes, and the foreign files are still all there.
    let off = Store::open(
        &store_config(d, Duration::ZERO, 0),
        &prometheus::Registry::new(),
    )
    .unwrap();
    assert!(off.sweep().await.unwrap().removed.is_empty());
    assert!(off.get_bytes(&new).await.unwrap().is_some());
    for (name, _) in &foreign {
        assert!(d.join(name).exists(), "{name}");
    }
}

#[tokio::test]
async fn the_background_sweep_runs_in_the_bff() {
    let dir = TempDir::new("sweeper");
    let compute = start_compute(compute_config(), None);
    let mut config = config_with_store(&compute.url(), dir.path());
    config.store.max_age = Duration::from_secs(1);
    config.store.sweep_interval = Duration::from_secs(1);
    let bff = start_bff(config);
    let r = post(
        bff.url("/v1/uploads"),
        Form::new().part("file", file(jpeg(64, 64))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.path().join("README"), b"not ours").unwrap();
    assert!(
        eventually(Duration::from_secs(15), async || !dir
            .path()
            .join(&id)
            .exists())
        .await,
        "the sweep did not remove an expired object"
    );
    assert!(dir.path().join("README").exists());
    let r = reqwest::get(bff.url(&format!("/v1/uploads/{id}")))
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let m = metrics_text(&bff).await;
    assert!(
        metric(
            &m,
            "imagegate_store_evicted_total{backend=\"fs\",reason=\"max_age\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
}

#[tokio::test]
async fn storing_the_same_image_again_restarts_its_clock_only_when_half_expired() {
    let dir = TempDir::new("refresh");
    let d = dir.path();
    let hour = Duration::from_secs(3600);
    let store = Store::open(&store_config(d, hour, 0), &prometheus::Registry::new()).unwrap();
    let age = |id: &ObjectId| {
        SystemTime::now()
            .duration_since(
                std::fs::metadata(d.join(id.as_str()))
                    .unwrap()
                    .modified()
                    .unwrap(),
            )
            .unwrap_or_default()
    };
    let (young, _) = put_aged(&store, d, 1, Duration::from_secs(600)).await;
    let (old, _) = put_aged(&store, d, 2, Duration::from_secs(2700)).await;
    let again = store.put(png(9, 8).into()).await.unwrap();
    assert_eq!(again.id, young);
    assert_eq!(again.outcome, imagegate::store::PutOutcome::Existing);
    assert!(
        age(&young) >= Duration::from_secs(590),
        "rewritten needlessly"
    );
    let again = store.put(png(10, 8).into()).await.unwrap();
    assert_eq!(again.id, old);
    assert_eq!(again.outcome, imagegate::store::PutOutcome::Existing);
    assert!(age(&old) < Duration::from_secs(60), "not refreshed");
    assert_eq!(names(d).len(), 2);
}

#[test]
fn a_data_directory_that_cannot_be_created_is_a_start_error_naming_the_key() {
    let dir = TempDir::new("badstore");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = Store::open(
        &store_config(&file.join("uploads"), Duration::ZERO, 0),
        &prometheus::Registry::new(),
    )
    .err()
    .expect("opening a store under a regular file must fail");
    assert!(e.to_string().contains("store.dir"), "{e}");
}

#[tokio::test]
async fn batch_progress_events_carry_a_url_that_serves_the_image() {
    let dir = TempDir::new("batch");
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(config_with_store(&compute.url(), dir.path()));
    let form = Form::new()
        .text("operation", "resize")
        .text("width", "64")
        .text("format", "png")
        .part("file", file(jpeg(320, 240)))
        .part("file", file(b"not an image".to_vec()))
        .part("file", file(png(200, 100)));
    let r = post(bff.url("/v1/images/batch"), form).await;
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.text().await.unwrap());
    assert_eq!(
        events.last().unwrap().1,
        serde_json::json!({"total": 3, "succeeded": 2, "failed": 1})
    );
    let mut urls = Vec::new();
    for (name, data) in &events[..3] {
        assert_eq!(name, "progress");
        if data["success"] == true {
            let url = data["url"].as_str().unwrap().to_string();
            assert!(
                url.starts_with("/v1/uploads/") && url.ends_with(".png"),
                "{url}"
            );
            let r = reqwest::get(bff.url(&url)).await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "image/png");
            let bytes = r.bytes().await.unwrap();
            assert_eq!(bytes.len() as u64, data["output_size"].as_u64().unwrap());
            assert_eq!(url, format!("/v1/uploads/{}.png", sha256_hex(&bytes)));
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!(img.width(), 64);
            urls.push(url);
        } else {
            assert!(data.get("url").is_none(), "{data}");
        }
    }
    assert_eq!(urls.len(), 2);
    assert_eq!(names(dir.path()).len(), 2);
}
