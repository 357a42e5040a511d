//! Edge security and slow clients, against the real compute server and the real BFF on
//! ephemeral ports: optional API keys (`[bff] api_keys`), the separate admin listener
//! (`[bff] admin_listen`), and the body read timeout (`[bff] body_read_timeout`) with stalled
//! and vanishing uploads sent by a raw TCP client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use imagegate::config::Config;
use imagegate::edge::auth::ApiKeys;
use reqwest::multipart::Form;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "test-key-9f2c41d7e0b6";
const OTHER_KEY: &str = "second-key-51aa07c3";

async fn metrics_at(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn keyed(config: &mut Config) {
    config.bff.api_keys = ApiKeys::new([KEY, OTHER_KEY]);
}

async fn compress_with(bff: &impl Url, header: Option<(&str, &str)>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(bff.url("/v1/images/compress"))
        .multipart(Form::new().part("file", file(jpeg(64, 48))));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

/// Anything that serves the BFF's main listener.
trait Url {
    fn url(&self, path: &str) -> String;
}

impl Url for Bff {
    fn url(&self, path: &str) -> String {
        Bff::url(self, path)
    }
}

async fn assert_401(r: reqwest::Response) -> Value {
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    problem(r, StatusCode::UNAUTHORIZED).await
}

// ---------------------------------------------------------------------------------------------
// API keys

#[tokio::test]
async fn with_api_keys_set_image_routes_need_a_key_in_either_header_style() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    keyed(&mut config);
    let bff = start_bff(config);

    // Missing and wrong keys: 401 problem+json with a Bearer challenge, the key never echoed.
    let body = assert_401(compress_with(&bff, None).await).await;
    assert!(
        body["detail"].as_str().unwrap().contains("X-API-Key"),
        "{body}"
    );
    let wrong = "wrong-key-0000000000";
    let body =
        assert_401(compress_with(&bff, Some(("authorization", &format!("Bearer {wrong}")))).await)
            .await;
    assert!(!body.to_string().contains(wrong), "{body}");
    assert_401(compress_with(&bff, Some(("x-api-key", wrong))).await).await;
    assert_401(compress_with(&bff, Some(("authorization", &format!("Basic {KEY}")))).await).await;
    // A prefix of a real key is not a key.
    assert_401(compress_with(&bff, Some(("x-api-key", &KEY[..KEY.len() - 1]))).await).await;

    // Both header styles, both keys, and a case-insensitive scheme.
    let bearer = format!("Bearer {KEY}");
    let r = compress_with(&bff, Some(("authorization", &bearer))).await;
    assert_eq!(r.status(), 200);
    let r = compress_with(&bff, Some(("x-api-key", OTHER_KEY))).await;
    assert_eq!(r.status(), 200);
    let r = compress_with(
        &bff,
        Some(("authorization", &format!("bearer {OTHER_KEY}"))),
    )
    .await;
    assert_eq!(r.status(), 200);

    // Uploads: storing needs a key; fetching a stored image does not (an <img> sends none).
    let r = reqwest::Client::new()
        .post(bff.url("/v1/uploads"))
        .multipart(Form::new().part("file", file(jpeg(64, 48))))
        .send()
        .await
        .unwrap();
    assert_401(r).await;
    let r = reqwest::Client::new()
        .post(bff.url("/v1/uploads"))
        .header("x-api-key", KEY)
        .multipart(Form::new().part("file", file(jpeg(64, 48))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let stored: Value = r.json().await.unwrap();
    let url = bff.url(stored["url"].as_str().unwrap());
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Probes and the scrape are exempt; unknown paths are 404 with or without a key.
    for path in ["/health", "/health/live", "/health/ready", "/metrics"] {
        let r = reqwest::get(bff.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = reqwest::get(bff.url("/v1/nothing-here")).await.unwrap();
    problem(r, StatusCode::NOT_FOUND).await;

    // The admin endpoint on the main listener is protected too (it is not a probe).
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_401(r).await;

    // 401s are counted like any other answer.
    let text = metrics_at(bff.url("/metrics")).await;
    assert!(
        metric(
            &text,
            "imagegate_http_requests_total{method=\"POST\",route=\"/v1/images/compress\",status=\"401\"}"
        )
        .is_some_and(|n| n >= 5.0),
        "{text}"
    );
}

#[tokio::test]
async fn without_api_keys_everything_is_open_as_before() {
    let compute = start_compute(compute_config(), None);
    let bff = start_bff(bff_config(&compute.url()));
    let r = compress_with(&bff, None).await;
    assert_eq!(r.status(), 200);
    // A stray header is harmless when auth is off.
    let r = compress_with(&bff, Some(("x-api-key", "anything"))).await;
    assert_eq!(r.status(), 200);
}

/// Sends a request head announcing a large body, and no body at all: only a check that
/// runs before the body is read can answer it.
#[tokio::test]
async fn an_unauthenticated_upload_is_refused_before_its_body_is_read() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    keyed(&mut config);
    let bff = start_bff(config);

    let mut stream = TcpStream::connect(bff.addr).await.unwrap();
    let head = format!(
        "POST /v1/images/compress HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 10000000\r\n\r\n",
        bff.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_response(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer without sending the body");
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    // The unread body makes the connection unusable: actix says so.
    assert_eq!(response.header("connection"), Some("close"));

    // A client library sending a real multi-megabyte body sees the 401, not a reset.
    let r = reqwest::Client::new()
        .post(bff.url("/v1/images/compress"))
        .multipart(Form::new().part("file", file(vec![0xFFu8; 6 * 1024 * 1024])))
        .send()
        .await
        .unwrap();
    assert_401(r).await;
}

#[tokio::test]
async fn api_keys_are_swapped_by_a_live_reload() {
    let compute = start_compute(compute_config(), None);
    let dir = TempDir::new("auth-reload");
    let path = dir.path().join("imagegate.toml");
    let store = scratch_dir("store").to_string_lossy().into_owned();
    let write = |keys: &str| {
        std::fs::write(
            &path,
            format!(
                "compute_url = \"{}\"\n[bff]\nworkers = 2\napi_keys = {keys}\n[store]\ndir = {store:?}\n",
                compute.url()
            ),
        )
        .unwrap();
    };
    write(&format!("[\"{KEY}\"]"));
    let config = Config::load(Some(&path)).unwrap();
    let bff = start_bff_with_file(config, Some(path.clone()));

    let r = compress_with(&bff, Some(("x-api-key", KEY))).await;
    assert_eq!(r.status(), 200);
    assert_401(compress_with(&bff, Some(("x-api-key", OTHER_KEY))).await).await;

    // Rotate: the comma-separated form works in the file too.
    write(&format!("\"{OTHER_KEY}\""));
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let outcome = r.text().await.unwrap();
    assert!(outcome.contains("bff.api_keys"), "{outcome}");
    assert!(
        !outcome.contains(KEY) && !outcome.contains(OTHER_KEY),
        "{outcome}"
    );

    assert_401(compress_with(&bff, Some(("x-api-key", KEY))).await).await;
    let r = compress_with(&bff, Some(("x-api-key", OTHER_KEY))).await;
    assert_eq!(r.status(), 200);

    // Emptying the list turns auth off, live.
    write("[]");
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .header("x-api-key", OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = compress_with(&bff, None).await;
    assert_eq!(r.status(), 200);
}

#[test]
fn api_keys_never_appear_in_the_configs_debug_output() {
    let config =
        Config::from_toml(&format!("[bff]\napi_keys = [\"{KEY}\", \"{OTHER_KEY}\"]\n")).unwrap();
    assert_eq!(config.bff.api_keys.len(), 2);
    for text in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.bff),
    ] {
        assert!(!text.contains(KEY) && !text.contains(OTHER_KEY), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}

#[test]
fn api_keys_parse_as_a_list_or_one_comma_separated_string_and_are_validated() {
    let list = Config::from_toml("[bff]\napi_keys = [\"k1\", \"k2\"]").unwrap();
    let string = Config::from_toml("[bff]\napi_keys = \" k1 , k2 \"").unwrap();
    assert_eq!(list.bff.api_keys, ApiKeys::new(["k1", "k2"]));
    assert_eq!(string.bff.api_keys, ApiKeys::new(["k1", "k2"]));
    assert!(Config::from_toml("").unwrap().bff.api_keys.is_empty());

    // Errors name the key's place, never its value.
    let e = Config::from_toml("[bff]\napi_keys = [\"good-key\", \"has space\"]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bff.api_keys") && e.contains("#2"), "{e}");
    assert!(!e.contains("has space"), "{e}");
    let e = Config::from_toml("[bff]\napi_keys = [123456789]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("api_keys") && !e.contains("123456789"), "{e}");
}

#[test]
fn the_new_bff_keys_have_defaults_and_the_example_config_agrees() {
    let defaults = Config::default();
    assert!(defaults.bff.api_keys.is_empty(), "auth is off by default");
    assert_eq!(defaults.bff.admin_listen, None);
    assert_eq!(defaults.bff.body_read_timeout, Duration::from_secs(30));
    let example = Config::from_toml(include_str!("../../deploy/imagegate.example.toml")).unwrap();
    assert_eq!(example.bff.api_keys, defaults.bff.api_keys);
    assert_eq!(example.bff.admin_listen, defaults.bff.admin_listen);
    assert_eq!(
        example.bff.body_read_timeout,
        defaults.bff.body_read_timeout
    );

    let e = Config::from_toml("[bff]\nbody_read_timeout = \"1ms\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bff.body_read_timeout"), "{e}");
    let e =
        Config::from_toml("[bff]\nlisten = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"")
            .unwrap_err()
            .to_string();
    assert!(e.contains("bff.admin_listen"), "{e}");
    let c = Config::from_toml("[bff]\nadmin_listen = \"127.0.0.1:9465\"").unwrap();
    assert_eq!(c.bff.admin_listen, Some("127.0.0.1:9465".parse().unwrap()));
}

// ---------------------------------------------------------------------------------------------
// The admin listener

/// A BFF whose admin listener is bound (on `127.0.0.1:0`) before serving, so its address is
/// known; stopped on drop like `support::Bff`.
struct AdminBff {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Url for AdminBff {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for AdminBff {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_bff_with_admin(mut config: Config) -> AdminBff {
    config.bff.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let bff = imagegate::edge::Bff::new(config).await.unwrap();
            let admin = bff.bind_admin().unwrap().expect("admin_listen is set");
            ready_tx.send((addr, admin.local_addr().unwrap())).unwrap();
            bff.serve_with_admin(listener, Some(admin), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let (addr, admin) = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    AdminBff {
        addr,
        admin,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

#[tokio::test]
async fn an_admin_listener_takes_metrics_and_reload_off_the_main_one() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    keyed(&mut config);
    let bff = start_bff_with_admin(config);
    let admin = bff.admin;

    // Main listener: no /metrics, no /admin/reload (404 even without a key), health stays.
    let r = reqwest::get(bff.url("/metrics")).await.unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let r = reqwest::Client::new()
        .post(bff.url("/admin/reload"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(reqwest::get(bff.url(path)).await.unwrap().status(), 200);
    }
    let r = compress_with(&bff, Some(("x-api-key", KEY))).await;
    assert_eq!(r.status(), 200);

    // Admin listener: the scrape and the reload (no API key asked there), nothing else.
    let r = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    // The same registry: the compress just made on the main listener is counted.
    assert!(
        metric(
            &text,
            "imagegate_http_requests_total{method=\"POST\",route=\"/v1/images/compress\",status=\"200\"}"
        ) == Some(1.0),
        "{text}"
    );
    assert!(text.contains("imagegate_lane_in_flight"));
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for path in ["/health", "/v1/images/compress"] {
        let r = reqwest::get(format!("http://{admin}{path}")).await.unwrap();
        problem(r, StatusCode::NOT_FOUND).await;
    }
}

#[test]
fn an_admin_listener_that_cannot_bind_fails_the_server() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = bff_config("http://127.0.0.1:1");
    config.bff.admin_listen = Some(addr);
    let served = actix_web::rt::System::new().block_on(async move {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bff = imagegate::edge::Bff::new(config).await.unwrap();
        bff.serve(listener, std::future::pending()).await
    });
    let e = served.expect_err("serving must fail when admin_listen is taken");
    assert!(e.to_string().contains("bff.admin_listen"), "{e}");
    drop(taken);
}

// ---------------------------------------------------------------------------------------------
// The real binary: keys from the environment, the admin listener, and the logs

/// Collects a child's stderr in the background.
fn collect(stderr: tokio::process::ChildStderr) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    log
}

/// `addr=…` from the first log line containing `marker` (ANSI colours stripped).
fn logged_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
}

fn bff_command(compute: &Compute, store: &TempDir) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_imagegate"));
    cmd.args(["bff", "--listen", "127.0.0.1:0"])
        .env("GRPC_COMPUTE_URL", compute.addr.to_string())
        .env("IMAGEGATE_STORE__DIR", store.path())
        .env("IMAGEGATE_BFF__WORKERS", "1")
        .env("NO_COLOR", "1")
        .env_remove("IMAGEGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn the_binary_takes_comma_separated_keys_from_the_environment_and_never_logs_them() {
    let compute = start_compute(compute_config(), None);
    let store = TempDir::new("edge-bin-store");
    let mut child = bff_command(&compute, &store)
        .env("IMAGEGATE_BFF__API_KEYS", format!("{KEY},{OTHER_KEY}"))
        .env("IMAGEGATE_BFF__ADMIN_LISTEN", "127.0.0.1:0")
        // Verbose on purpose: no level may print a key.
        .env("RUST_LOG", "debug")
        .spawn()
        .unwrap();
    let log = collect(child.stderr.take().unwrap());
    let mut addrs = None;
    assert!(
        eventually(Duration::from_secs(30), async || {
            let text = log.lock().unwrap().clone();
            addrs = logged_addr(&text, "BFF listening").zip(logged_addr(&text, "admin listener"));
            addrs.is_some()
        })
        .await,
        "the BFF did not start: {}",
        log.lock().unwrap()
    );
    let (main, admin) = addrs.unwrap();
    let url = |path: &str| format!("http://{main}{path}");
    let client = reqwest::Client::new();
    let send = |header: Option<(&'static str, String)>| {
        let mut r = client
            .post(url("/v1/images/compress"))
            .multipart(Form::new().part("file", file(jpeg(64, 48))));
        if let Some((k, v)) = header {
            r = r.header(k, v);
        }
        r.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 401);
    assert_eq!(
        send(Some(("x-api-key", format!("{KEY}x"))))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        send(Some(("authorization", format!("Bearer {KEY}"))))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some(("x-api-key", OTHER_KEY.to_string())))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(reqwest::get(url("/metrics")).await.unwrap().status(), 404);
    let r = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("http://{admin}/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    child.kill().await.unwrap();
    let _ = child.wait().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = log.lock().unwrap().clone();
    assert!(text.contains("API-key auth on"), "{text}");
    assert!(!text.contains(KEY) && !text.contains(OTHER_KEY), "{text}");
}

#[tokio::test]
async fn the_binary_exits_with_an_error_when_the_admin_address_is_taken() {
    let compute = start_compute(compute_config(), None);
    let store = TempDir::new("edge-bin-store");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = bff_command(&compute, &store)
        .env(
            "IMAGEGATE_BFF__ADMIN_LISTEN",
            taken.local_addr().unwrap().to_string(),
        )
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the BFF must not keep running")
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("bff.admin_listen"), "{stderr}");
    drop(taken);
}

// ---------------------------------------------------------------------------------------------
// Slow and abandoned uploads

/// A parsed HTTP/1.1 response read off a raw socket.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head, then `Content-Length` bytes of body). `None`: the server closed
/// the connection without answering.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..split]).to_string();
                let mut lines = head.lines();
                let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= split + 4 + length {
                    let body = buf[split + 4..split + 4 + length].to_vec();
                    return Some(RawResponse {
                        status,
                        headers,
                        body,
                    });
                }
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the server neither answered nor closed the connection")
}

/// A multipart body with one `file` part, and its boundary.
fn multipart_body(data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "edgesecurityboundary7c1f".to_string();
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// Connects, sends the head of a multipart POST to `path` and the first half of its body.
async fn send_half(addr: SocketAddr, path: &str) -> TcpStream {
    let (boundary, body) = multipart_body(&jpeg(320, 240));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

fn in_flight(text: &str) -> Option<f64> {
    metric(text, "imagegate_lane_in_flight{lane=\"heavy\"}")
}

fn answered(text: &str, route: &str, status: u16) -> f64 {
    metric(
        text,
        &format!(
            "imagegate_http_requests_total{{method=\"POST\",route=\"{route}\",status=\"{status}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stalled_upload_is_answered_408_and_frees_everything() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.bff.body_read_timeout = Duration::from_millis(300);
    let bff = start_bff(config);

    let mut stream = send_half(bff.addr, "/v1/images/compress").await;
    // ...and stall. The answer is a 408 problem (or, at worst, a closed connection).
    // A closed connection without an answer is allowed too: for all the server knew, the
    // client was gone.
    if let Some(r) = read_response(&mut stream, Duration::from_secs(15)).await {
        assert_eq!(r.status, 408);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("connection"), Some("close"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["status"], 408);
        assert_eq!(body["type"], "urn:imagegate:problem:body-timeout");
    }
    // The handler is gone (its answer was counted), and with it the buffered half upload;
    // no permit was ever taken for a body still arriving.
    assert!(
        eventually(Duration::from_secs(10), async || {
            let text = metrics_at(bff.url("/metrics")).await;
            answered(&text, "/v1/images/compress", 408) == 1.0 && in_flight(&text) == Some(0.0)
        })
        .await
    );
    // The server is fine afterwards.
    let r = compress_with(&bff, None).await;
    assert_eq!(r.status(), 200);
}

/// An upload refused unread (the heavy lane is full) whose client then stalls is answered
/// once `body_read_timeout` has passed, not held: the drain stops at the stall.
#[tokio::test]
async fn a_stalled_upload_refused_by_a_full_lane_is_answered_after_the_body_timeout() {
    let log = CallLog::default();
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    config.lanes.heavy.max_in_flight = 1;
    config.lanes.heavy.queue_wait = Duration::ZERO;
    config.bff.body_read_timeout = Duration::from_millis(300);
    let bff = start_bff(config);
    let slow = fill_the_heavy_lane(&bff, &log).await;

    let mut stream = send_half(bff.addr, "/v1/images/compress").await;
    let r = read_response(&mut stream, Duration::from_secs(15))
        .await
        .expect("the refused upload got no answer");
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(body["detail"].as_str().unwrap().contains("heavy"), "{body}");

    log.release("Compress");
    assert_eq!(slow.await.unwrap(), 200);
}

/// With one heavy permit, a stalled upload must not block the next one: permits are taken
/// only after the whole form is in.
#[tokio::test]
async fn a_stalled_upload_holds_no_lane_permit() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    config.bff.body_read_timeout = Duration::from_secs(5);
    config.lanes.heavy.max_in_flight = 1;
    config.lanes.heavy.queue_wait = Duration::from_millis(10);
    let bff = start_bff(config);

    let mut stalled = send_half(bff.addr, "/v1/images/compress").await;
    let r = compress_with(&bff, None).await;
    assert_eq!(r.status(), 200, "the stalled upload took the only permit");
    let text = metrics_at(bff.url("/metrics")).await;
    assert_eq!(in_flight(&text), Some(0.0));
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_rejected_total{lane=\"heavy\",reason=\"saturated\"}"
        ),
        Some(0.0)
    );
    if let Some(r) = read_response(&mut stalled, Duration::from_secs(20)).await {
        assert_eq!(r.status, 408);
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_frees_everything() {
    let compute = start_compute(compute_config(), None);
    let mut config = bff_config(&compute.url());
    // Long, so that only the disconnect can end these requests.
    config.bff.body_read_timeout = Duration::from_secs(60);
    let store_dir = std::path::PathBuf::from(&config.store.dir);
    let bff = start_bff(config);

    for path in ["/v1/uploads", "/v1/images/compress", "/v1/images/batch"] {
        let stream = send_half(bff.addr, path).await;
        drop(stream);
    }
    assert!(
        eventually(Duration::from_secs(10), async || {
            let text = metrics_at(bff.url("/metrics")).await;
            let ended = ["/v1/uploads", "/v1/images/compress", "/v1/images/batch"]
                .iter()
                .all(|route| {
                    text.lines().any(|l| {
                        l.starts_with("imagegate_http_requests_total{")
                            && l.contains(&format!("route=\"{route}\""))
                            && l.contains("method=\"POST\"")
                    })
                });
            ended && in_flight(&text) == Some(0.0)
        })
        .await,
        "{}",
        metrics_at(bff.url("/metrics")).await
    );
    // Nothing half-written was left in the store.
    let mut leftovers = Vec::new();
    let mut dirs = vec![store_dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                leftovers.push(entry.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let r = compress_with(&bff, None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_memory_budget_are_503_and_the_budget_comes_back() {
    let log = CallLog::default();
    log.hold("Compress");
    let compute = start_compute(compute_config(), Some(log.hook()));
    let mut config = bff_config(&compute.url());
    // Room for one ~100 KiB upload at a time, not two: with a body, the intake also holds an
    // allowance for its parsers' and connection's buffers (as much again, for so small a body).
    config.bff.max_request_size = imagegate::config::Size::kib(200);
    config.bff.max_file_size = imagegate::config::Size::kib(200);
    config.bff.max_buffered_bytes = imagegate::config::Size::kib(256);
    let bff = start_bff(config);
    let image = noisy_png(100 * 1024);
    let upload = |image: Vec<u8>| {
        post(
            bff.url("/v1/images/compress"),
            Form::new().part("file", file(image)),
        )
    };
    let buffered = async || {
        metric(
            &metrics_text(&bff).await,
            "imagegate_http_buffered_body_bytes",
        )
        .unwrap()
    };

    // The first upload is read and held inside compute: its body stays in the budget.
    let first = tokio::spawn(upload(image.clone()));
    assert!(
        eventually(Duration::from_secs(30), async || log.count("Compress") == 1).await,
        "the first upload never reached compute"
    );
    let held = buffered().await;
    assert!(held >= image.len() as f64, "{held}");

    // A second one does not fit: 503 + Retry-After, at once, and nothing more is held.
    let r = upload(image.clone()).await;
    assert!(r.headers().contains_key("retry-after"));
    // Its body was drained (the answer arrived) and its connection is closed, so that the
    // buffers it grew do not idle in a keep-alive connection outside the budget.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{:?}",
        r.headers()
    );
    let b = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(b["type"], "urn:imagegate:problem:bff-busy", "{b}");
    assert_eq!(
        buffered().await,
        held,
        "the refused upload kept part of the budget"
    );

    // The first finishes; everything is given back, and the next upload fits again.
    log.release("Compress");
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers().get("connection"),
        None,
        "an accepted upload closed"
    );
    assert!(
        eventually(Duration::from_secs(10), async || buffered().await == 0.0).await,
        "the budget was not given back"
    );
    assert_eq!(upload(image).await.status(), 200);
    assert!(eventually(Duration::from_secs(10), async || buffered().await == 0.0).await);
}

/// A PNG of about `bytes` bytes (noise does not compress).
fn noisy_png(bytes: usize) -> Vec<u8> {
    let side = ((bytes / 3) as f64).sqrt() as u32;
    let mut seed = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
