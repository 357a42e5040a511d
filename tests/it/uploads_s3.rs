//! Upload-and-store on the S3 backend, against a real S3-protocol server on loopback: moto's
//! `moto_server` (from PyPI, installed by `make test-deps`), started by the test on a free
//! port and killed at the end. Without it these tests fail and say how to install it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::*;
use futures_util::TryStreamExt;
use imagegate::config::{Config, Size, StoreBackend, StoreConfig};
use imagegate::store::Store;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use reqwest::multipart::Form;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BUCKET: &str = "imagegate-test";
const HINT: &str =
    "the S3 tests need moto's `moto_server` (PyPI `moto[server]`): run `make test-deps`";

/// A running `moto_server`; killed on drop.
struct S3Server {
    child: Child,
    endpoint: String,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl S3Server {
    fn start() -> S3Server {
        let dir = TempDir::new("moto");
        let log = dir.path().join("moto.log");
        // moto cannot report an ephemeral port, so take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server ({e}); {HINT}"));
        let mut server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log: dir.path().join("moto.err"),
            _dir: dir,
        };
        server.wait_until_up();
        server
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("moto_server exited at once ({status}): {err}\n{HINT}");
            }
            if answers_http(&self.endpoint) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within 60 s; {HINT}",
                self.endpoint
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something answers HTTP on `endpoint` (a blocking probe, before any runtime).
fn answers_http(endpoint: &str) -> bool {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn store_config(server: &S3Server) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::S3,
        bucket: BUCKET.into(),
        endpoint: server.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        allow_http: true,
        prefix: "uploads".into(),
        timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    }
}

/// A plain client on the same bucket, to see and plant what the store does not own.
fn raw_client(server: &S3Server) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(&server.endpoint)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

async fn create_bucket(server: &S3Server) {
    let r = reqwest::Client::new()
        .put(format!("{}/{BUCKET}", server.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
}

async fn all_keys(client: &Arc<dyn ObjectStore>) -> Vec<String> {
    let mut keys: Vec<String> = client
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

fn config(compute_url: &str, server: &S3Server) -> Config {
    let mut c = bff_config(compute_url);
    c.store = store_config(server);
    c
}

#[tokio::test]
async fn s3_store_round_trip_dedup_batch_and_retention() {
    let server = S3Server::start();
    create_bucket(&server).await;
    let raw = raw_client(&server);
    // Objects that are not the store's: at the root, beside ours, and nested.
    let hash = "ef".repeat(32);
    let foreign = [
        "notes.txt".to_string(),
        format!("{hash}.png"),
        "uploads/notes.txt".to_string(),
        format!("uploads/{hash}.gif"),
        format!("uploads/sub/{hash}.png"),
    ];
    for key in &foreign {
        raw.put(&Key::from(key.as_str()), b"foreign".to_vec().into())
            .await
            .unwrap();
    }

    let compute = start_compute(compute_config(), None);
    let bff = start_bff(config(&compute.url(), &server));
    let image = jpeg(480, 360);
    let r = post(
        bff.url("/v1/images/compress"),
        Form::new().part("file", file(image.clone())),
    )
    .await;
    let expected = r.bytes().await.unwrap();

    // Upload → 201 → GET gives compute's bytes.
    let r = post(
        bff.url("/v1/uploads"),
        Form::new().part("file", file(image.clone())),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(
        id,
        format!("{}.webp", hex::encode(Sha256::digest(&expected)))
    );
    let url = bff.url(body["url"].as_str().unwrap());
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(r.bytes().await.unwrap() == expected);
    let r = reqwest::Client::new()
        .get(&url)
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        expected.len().to_string()
    );
    let (status, _, _) = raw_get(bff.addr, &format!("/v1/uploads/{hash}.webp")).await;
    assert_eq!(status, 404);
    let (status, _, _) = raw_get(bff.addr, "/v1/uploads/..%2fnotes.txt").await;
    assert_eq!(status, 404);

    // Concurrent uploads of one image: one object, all 201.
    let other = png(300, 200);
    let uploads = (0..6).map(|_| {
        let url = bff.url("/v1/uploads");
        let other = other.clone();
        tokio::spawn(async move {
            let r = post(url, Form::new().part("file", file(other))).await;
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
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    // Create-if-absent on S3 (If-None-Match: *): one write; the others found it there.
    let m = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &m,
            "imagegate_store_puts_total{backend=\"s3\",result=\"created\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "imagegate_store_puts_total{backend=\"s3\",result=\"existing\"}"
        ),
        Some(5.0),
        "{m}"
    );

    // Batch results are stored in the bucket too.
    let r = post(
        bff.url("/v1/images/batch"),
        Form::new()
            .text("operation", "compress")
            .text("format", "jpeg")
            .part("file", file(jpeg(100, 100))),
    )
    .await;
    let text = r.text().await.unwrap();
    let progress: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .unwrap();
    assert_eq!(progress["success"], true, "{text}");
    let batch_url = progress["url"].as_str().unwrap();
    let r = reqwest::get(bff.url(batch_url)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let batch_id = batch_url.trim_start_matches("/v1/uploads/").to_string();

    let mut ours = vec![
        format!("uploads/{id}"),
        format!("uploads/{}", ids[0]),
        format!("uploads/{batch_id}"),
    ];
    let mut want: Vec<String> = foreign.iter().cloned().chain(ours.clone()).collect();
    want.sort();
    assert_eq!(all_keys(&raw).await, want);

    // Retention, run directly: a byte budget one short of the total removes exactly one
    // object; an age limit then removes the rest; nothing foreign is touched.
    let store = Store::open(&store_config(&server), &prometheus::Registry::new()).unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 3);
    let total: u64 = listed.iter().map(|o| o.size).sum();
    let tight = Store::open(
        &StoreConfig {
            max_age: Duration::ZERO,
            max_total_bytes: Size(total - 1),
            ..store_config(&server)
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    let report = tight.sweep().await.unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    let removed = format!("uploads/{}", report.removed[0].0);
    ours.retain(|k| k != &removed);
    let mut want: Vec<String> = foreign.iter().cloned().chain(ours).collect();
    want.sort();
    assert_eq!(all_keys(&raw).await, want);

    let aged = Store::open(
        &StoreConfig {
            max_age: Duration::from_secs(3600),
            max_total_bytes: Size(0),
            ..store_config(&server)
        },
        &prometheus::Registry::new(),
    )
    .unwrap();
    let report = aged
        .sweep_at(SystemTime::now() + Duration::from_secs(2 * 3600))
        .await
        .unwrap();
    assert_eq!(report.removed.len(), 2, "{report:?}");
    let mut want = foreign.to_vec();
    want.sort();
    assert_eq!(all_keys(&raw).await, want);
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_s3_store_that_goes_away_answers_503_problem() {
    let mut server = S3Server::start();
    create_bucket(&server).await;
    let compute = start_compute(compute_config(), None);
    let mut c = config(&compute.url(), &server);
    c.store.timeout = Duration::from_secs(2);
    let bff = start_bff(c);
    let r = post(
        bff.url("/v1/uploads"),
        Form::new().part("file", file(jpeg(64, 64))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let url = bff.url(r.json::<Value>().await.unwrap()["url"].as_str().unwrap());

    server.stop();
    let started = Instant::now();
    let r = post(
        bff.url("/v1/uploads"),
        Form::new().part("file", file(jpeg(80, 64))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let b: Value = r.json().await.unwrap();
    assert!(b["detail"].as_str().unwrap().contains("store"), "{b}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a dead store must fail within its timeout, took {:?}",
        started.elapsed()
    );
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let m = metrics_text(&bff).await;
    assert!(
        metric(
            &m,
            "imagegate_store_errors_total{backend=\"s3\",op=\"put\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}
