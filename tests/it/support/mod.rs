//! Test support: start the real compute server and the real BFF on `127.0.0.1:0`, each on its
//! own runtime thread (as in production), plus test images and small helpers.

#![allow(dead_code)]

pub mod webdriver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use imagegate::compute::service::CallHook;
use imagegate::compute::ComputeServer;
use imagegate::config::{ComputeConfig, Config};
use tokio::sync::{oneshot, Semaphore};

/// A running compute server; stopped on drop.
pub struct Compute {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Compute {
    /// Stops the server abruptly, as SIGKILL would: no drain, its connections just close.
    pub fn kill(mut self) {
        // Keep the graceful-stop sender alive: dropping it would start a drain.
        let _stop = self.stop.take();
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Test defaults: small pools so many servers fit in one test process.
pub fn compute_config() -> ComputeConfig {
    let mut c = Config::default().compute;
    c.workers = 2;
    c.drain_timeout = Duration::from_secs(5);
    c
}

pub fn start_compute(config: ComputeConfig, hook: Option<CallHook>) -> Compute {
    start_compute_at("127.0.0.1:0".parse().unwrap(), config, hook)
}

/// Starts compute on `addr` (port 0 for an ephemeral one).
pub fn start_compute_at(
    addr: SocketAddr,
    config: ComputeConfig,
    hook: Option<CallHook>,
) -> Compute {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready_tx
                .send((
                    listener.local_addr().unwrap(),
                    metrics.local_addr().unwrap(),
                ))
                .unwrap();
            let mut server = ComputeServer::new(config);
            if let Some(hook) = hook {
                server = server.with_call_hook(hook);
            }
            let serve = server.serve(listener, Some(metrics), async {
                let _ = stop_rx.await;
            });
            tokio::select! {
                result = serve => result.unwrap(),
                Ok(()) = kill_rx => {}
            }
        });
        // Killed: every connection task dies with the runtime, mid-call or not.
        rt.shutdown_background();
    });
    let (addr, metrics_addr) = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Compute {
        addr,
        metrics_addr,
        stop: Some(stop_tx),
        kill: Some(kill_tx),
        thread: Some(thread),
    }
}

/// A running BFF; stopped on drop.
pub struct Bff {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Bff {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Bff {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Test defaults for the BFF, pointed at `compute_url`.
/// A loopback address nothing listens on (a port the kernel just handed out and took back):
/// where compute will be started later, or never.
/// A loopback address where nothing listens yet, for a compute a test starts later: held by a
/// socket bound with `SO_REUSEADDR` that never listens. Connects to it are refused, as to a
/// free port; no other socket of the test process can take the port meanwhile (a parallel
/// test's listener, or the source port of its connections: once, a compute started later
/// found its port taken); and `start_compute_at` still binds it (tokio's listeners set
/// `SO_REUSEADDR` too, and Linux lets such sockets share a port while only one listens).
pub struct ReservedAddr {
    pub addr: SocketAddr,
    _held: tokio::net::TcpSocket,
}

pub fn unused_addr() -> ReservedAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ReservedAddr {
        addr: socket.local_addr().unwrap(),
        _held: socket,
    }
}

pub fn bff_config(compute_url: &str) -> Config {
    let mut c = Config {
        compute_url: compute_url.to_string(),
        ..Config::default()
    };
    c.bff.workers = 2;
    c.bff.shutdown_timeout = Duration::from_secs(2);
    // Each BFF stores into its own temporary directory, never into the repository.
    c.store.dir = scratch_dir("store").to_string_lossy().into_owned();
    c
}

/// A fresh directory under this test run's scratch root (`$TMPDIR/imagegate-test-<pid>`).
/// BFFs started from [`bff_config`] outlive nothing that could remove it, so a run's root is
/// left for looking into a failure and removed by the next run, once its process is gone.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    static ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = ROOT.get_or_init(|| {
        remove_scratch_of_finished_runs();
        std::env::temp_dir().join(format!("imagegate-test-{}", std::process::id()))
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("{what}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `imagegate-test-<pid>…` entries of the temp dir whose process no longer runs.
fn remove_scratch_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("imagegate-test-"))
        else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub fn start_bff(config: Config) -> Bff {
    start_bff_with_file(config, None)
}

/// Starts a BFF whose reloads re-read `config_file`.
pub fn start_bff_with_file(config: Config, config_file: Option<std::path::PathBuf>) -> Bff {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            ready_tx.send(listener.local_addr().unwrap()).unwrap();
            let bff = imagegate::edge::Bff::with_config_file(config, config_file)
                .await
                .unwrap();
            bff.serve(listener, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Bff {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// Records which connection (peer address) each call came on, and can hold calls of one
/// method until released — a deterministic "slow job".
#[derive(Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<(&'static str, SocketAddr)>>>,
    holds: Arc<Mutex<HashMap<&'static str, Arc<Semaphore>>>>,
}

impl CallLog {
    pub fn hook(&self) -> CallHook {
        let log = self.clone();
        Arc::new(move |method, peer| {
            let log = log.clone();
            Box::pin(async move {
                if let Some(peer) = peer {
                    log.calls.lock().unwrap().push((method, peer));
                }
                let gate = log.holds.lock().unwrap().get(method).cloned();
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
            })
        })
    }

    /// From now on, calls of `method` wait until [`CallLog::release`].
    pub fn hold(&self, method: &'static str) {
        self.holds
            .lock()
            .unwrap()
            .insert(method, Arc::new(Semaphore::new(0)));
    }

    /// Lets held calls of `method` (and all later ones) through.
    pub fn release(&self, method: &'static str) {
        if let Some(gate) = self.holds.lock().unwrap().remove(method) {
            gate.add_permits(1 << 20);
        }
    }

    /// Distinct peer addresses that called `method`.
    pub fn peers(&self, method: &str) -> std::collections::BTreeSet<SocketAddr> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| *m == method)
            .map(|(_, p)| *p)
            .collect()
    }

    pub fn count(&self, method: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| *m == method)
            .count()
    }
}

/// A photo-like RGB image: gradients, edges and noise (so codecs work as on a photo).
pub fn photo(width: u32, height: u32) -> image::RgbImage {
    imagegate::testkit::photo(width, height, 24)
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&photo(width, height))
        .unwrap();
    out
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(photo(width, height))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A PNG whose header claims 100000×100000 pixels (a decompression bomb), with valid CRCs.
pub fn png_bomb() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&imagegate::testkit::crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    out.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(idat);
    out.extend_from_slice(&imagegate::testkit::crc32(idat).to_be_bytes());
    out
}

/// The value of a metric line (`name{labels} value`) in a text exposition, if present.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` until it is true or `limit` passes (loose bounds: never a timing assertion).
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "imagegate-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
    }
}

/// Sends `GET {path}` exactly as written (no client-side normalisation of `..` or escapes,
/// which an HTTP client library would do) and returns (status, lower-cased headers, body).
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, HashMap<String, String>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// A file part as a browser sends it; the Content-Type is deliberately generic, since the BFF
/// sniffs the bytes.
pub fn file(data: Vec<u8>) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(data)
        .file_name("upload.bin")
        .mime_str("application/octet-stream")
        .unwrap()
}

/// POSTs a multipart form.
/// The BFF's `/metrics` text (on its main listener).
/// Polls the BFF's `/metrics` until `name_and_labels` reads `value` or `limit` passes.
pub async fn eventually_metric(
    bff: &Bff,
    name_and_labels: &str,
    value: f64,
    limit: Duration,
) -> bool {
    eventually(limit, async || {
        metric(&metrics_text(bff).await, name_and_labels) == Some(value)
    })
    .await
}

pub async fn metrics_text(bff: &Bff) -> String {
    reqwest::get(bff.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn post(url: String, form: reqwest::multipart::Form) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Asserts an RFC 9457 problem with `status`, and returns its body.
pub async fn problem(
    response: reqwest::Response,
    status: reqwest::StatusCode,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    // Every problem names its request: the answer's X-Request-Id is in `instance`.
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("every answer carries X-Request-Id")
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["instance"],
        format!("urn:imagegate:request:{request_id}"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    body
}

/// Parses an SSE body into (event, data) pairs.
pub fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

/// Holds compute's next Compress and sends one upload that takes the heavy lane's only
/// permit; returns its status once `log.release("Compress")` lets it finish.
pub async fn fill_the_heavy_lane(
    bff: &Bff,
    log: &CallLog,
) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    log.hold("Compress");
    let slow_url = bff.url("/v1/images/compress");
    let slow = tokio::spawn(async move {
        post(
            slow_url,
            reqwest::multipart::Form::new().part("file", file(jpeg(64, 64))),
        )
        .await
        .status()
    });
    assert!(
        eventually_metric(
            bff,
            "imagegate_lane_in_flight{lane=\"heavy\"}",
            1.0,
            Duration::from_secs(20)
        )
        .await,
        "the slow job never got in flight"
    );
    slow
}
