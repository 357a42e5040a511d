//! A small W3C WebDriver client over reqwest, driving Debian's headless Chromium through
//! `chromedriver` (installed by `make browser-deps`): enough to open pages, pick files, click,
//! run scripts in the page and take screenshots. No browser is downloaded from anywhere.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::{unused_addr, TempDir};

/// The key under which WebDriver answers an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(name: &str, env: &str) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{name} not found (set {env}, or run `make browser-deps`: apt-get install chromium chromium-driver)");
}

/// One browser at a time: two Chromiums beside the servers on a 2-core machine only make
/// each other time out.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One headless Chromium session; the driver (and the browser) are stopped on drop.
pub struct Browser {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    driver: Child,
    base: String,
    client: reqwest::Client,
    _profile: TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let driver_path = which("chromedriver", "CHROMEDRIVER");
        let chromium = which("chromium", "CHROMIUM");
        let port = unused_addr().addr.port(); // released at once: chromedriver binds it
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = TempDir::new("chromium-profile");
        let mut browser = Browser {
            _turn: turn,
            driver,
            base,
            client,
            _profile: profile,
        };
        // The flags this machine needs: no sandbox as root, and nothing that phones home
        // (the network is closed: those connections only fail, many at a time).
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let session = browser
            .raw(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                    "timeouts": {"script": 60_000, "pageLoad": 30_000},
                }}}),
            )
            .await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.expect("chromedriver answers");
        let v: Value = r.json().await.expect("WebDriver JSON");
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.raw(reqwest::Method::POST, path, body).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The element matching a CSS selector (panics if there is none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// Types into an element; for `<input type=file multiple>`, paths separated by `\n`.
    pub async fn send_keys(&self, element: &str, text: &str) {
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Runs `script`, whose last argument is the callback that ends it with a value.
    pub async fn exec_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({"script": script, "args": args}))
            .await
    }

    /// Waits until the JavaScript expression `condition` is true (false after `limit`).
    pub async fn wait_for(&self, condition: &str, limit: Duration) -> bool {
        let started = Instant::now();
        let script = format!("return !!({condition});");
        while started.elapsed() < limit {
            if self.exec(&script, json!([])).await == Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let v = self
            .raw(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(path, png).unwrap();
    }
}

impl Browser {
    /// Ends the session (the browser exits), then the driver.
    pub async fn quit(self) {
        let _ = self.raw(reqwest::Method::DELETE, "", Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes the browser; killing the driver makes sure of it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
