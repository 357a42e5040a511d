//! Shared by the `edge`, `overload` and `soak` benches: starting and stopping the real processes,
//! payloads, /proc sampling, /metrics scraping, statistics and the markdown report.
//!
//! Not a bench of its own (cargo only discovers `benches/*.rs` and `benches/*/main.rs`).

#![allow(dead_code)] // each bench uses its own subset

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

// ---------------------------------------------------------------------------------------------
// Command line: `--name value` pairs

pub struct Flags(pub BTreeMap<String, String>);

impl Flags {
    pub fn parse() -> Result<Self, String> {
        let mut raw = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            // `cargo bench` passes `--bench` to harness = false targets: ignore it.
            if flag == "--bench" {
                continue;
            }
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}"));
            };
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            raw.insert(name.to_string(), value);
        }
        Ok(Flags(raw))
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    pub fn num(&mut self, name: &str, default: f64) -> Result<f64, String> {
        self.0.remove(name).map_or(Ok(default), |v| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| format!("--{name} must be a number ≥ 0, got {v:?}"))
        })
    }

    pub fn finish(self) -> Result<(), String> {
        match self.0.keys().next() {
            Some(unknown) => Err(format!("unknown flag --{unknown}")),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A free loopback port chosen by the OS.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A server process of ours: stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(bin);
        // Nothing from the caller's environment may change the config under test.
        for (k, _) in std::env::vars() {
            if (k.starts_with("IMAGEGATE_") || k == "GRPC_COMPUTE_URL")
                && !env.iter().any(|(e, _)| *e == k)
            {
                cmd.env_remove(&k);
            }
        }
        let child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within 10 s; killing it", self.name);
        self.kill9();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Addresses of one compute + BFF pair.
#[derive(Clone)]
pub struct Ports {
    pub grpc: u16,
    pub compute_metrics: u16,
    pub bff: u16,
}

impl Ports {
    pub fn new() -> Ports {
        // Held together so that they are distinct.
        let ls: Vec<_> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let p: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        Ports {
            grpc: p[0],
            compute_metrics: p[1],
            bff: p[2],
        }
    }

    pub fn bff_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.bff)
    }

    pub fn compute_metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.compute_metrics)
    }
}

/// The environment both processes get: quiet logs, short drains, the compute address.
pub fn base_env(ports: &Ports, work: &Path) -> Vec<(String, String)> {
    let env: Vec<(String, String)> = vec![
        (
            "RUST_LOG".into(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
        ("IMAGEGATE_BFF__SHUTDOWN_TIMEOUT".into(), "5s".into()),
        ("IMAGEGATE_COMPUTE__DRAIN_TIMEOUT".into(), "5s".into()),
        (
            "GRPC_COMPUTE_URL".into(),
            format!("http://127.0.0.1:{}", ports.grpc),
        ),
        (
            "IMAGEGATE_STORE__DIR".into(),
            work.join("uploads").display().to_string(),
        ),
    ];
    // (Proc::spawn removes every other IMAGEGATE_* variable of the caller's environment.)
    env
}

pub fn spawn_compute(
    bin: &Path,
    ports: &Ports,
    env: &[(String, String)],
    log: PathBuf,
) -> anyhow::Result<Proc> {
    Proc::spawn(
        "compute",
        bin,
        &[
            "compute".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports.grpc),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", ports.compute_metrics),
        ],
        env,
        log,
    )
}

pub fn spawn_bff(
    bin: &Path,
    ports: &Ports,
    env: &[(String, String)],
    log: PathBuf,
) -> anyhow::Result<Proc> {
    Proc::spawn(
        "bff",
        bin,
        &[
            "bff".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports.bff),
        ],
        env,
        log,
    )
}

/// Waits until `url` answers 200 (at most `limit`), or fails if the process exited.
pub async fn wait_up(
    http: &reqwest::Client,
    proc_: &mut Proc,
    url: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(status) = proc_.exited() {
            anyhow::bail!(
                "{} exited while starting ({status}); its log:\n{}",
                proc_.name,
                proc_.log_tail(30)
            );
        }
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(1)).send().await {
            if r.status() == 200 {
                return Ok(t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!(
        "{} did not answer 200 on {url} within {limit:?}; its log:\n{}",
        proc_.name,
        proc_.log_tail(30)
    )
}

pub fn http_client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

// ---------------------------------------------------------------------------------------------
// /proc and /metrics

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("Threads:")
            .and_then(|r| r.trim().parse().ok())
    })
}

/// CPU time (user + system) of a process so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The value of one sample in a Prometheus text exposition: `name{labels}` must match
/// exactly the series written as `series` (e.g. `imagegate_lane_in_flight{lane="heavy"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Sum of every sample of `name` whose labels contain all of `labels` (`k="v"` strings).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|lab| rest.contains(lab)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    let r = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}

/// Polls the BFF's heavy-lane in-flight gauge until it is 0 (at most `limit`).
pub async fn in_flight_settles(
    http: &reqwest::Client,
    bff: &str,
    lane: &str,
    limit: Duration,
) -> (Option<f64>, Duration) {
    let t = Instant::now();
    let series = format!("imagegate_lane_in_flight{{lane=\"{lane}\"}}");
    let mut last = None;
    while t.elapsed() < limit {
        if let Some(text) = scrape(http, &format!("{bff}/metrics")).await {
            last = metric(&text, &series);
            if last == Some(0.0) {
                return (last, t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (last, t.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Payloads (like tests/it/support's: a bench must not import tests)

/// A photo-like RGB image: gradients, edges and noise.
pub fn photo(width: u32, height: u32, grain: u64) -> image::RgbImage {
    imagegate::testkit::photo(width, height, grain)
}

pub fn jpeg(width: u32, height: u32) -> Bytes {
    jpeg_grain(width, height, 24)
}

/// A photo-like JPEG (Q90) with noise of range `grain` (less grain: fewer bytes per pixel).
pub fn jpeg_grain(width: u32, height: u32, grain: u64) -> Bytes {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&photo(width, height, grain.max(1)))
        .expect("encode JPEG");
    out.into()
}

pub fn png(width: u32, height: u32) -> Bytes {
    let mut out = std::io::Cursor::new(Vec::new());
    photo(width, height, 24)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode PNG");
    out.into_inner().into()
}

/// A multipart form with one `file` part and the given text fields.
pub fn form(data: &Bytes, name: &str, fields: &[(&str, &str)]) -> reqwest::multipart::Form {
    let mime = if name.ends_with(".png") {
        "image/png"
    } else {
        "image/jpeg"
    };
    let part = reqwest::multipart::Part::stream_with_length(data.clone(), data.len() as u64)
        .file_name(name.to_string())
        .mime_str(mime)
        .expect("valid mime");
    let mut f = reqwest::multipart::Form::new();
    for (k, v) in fields {
        f = f.text(k.to_string(), v.to_string());
    }
    f.part("file", part)
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

/// Nearest-rank percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub fn histogram<K: std::fmt::Display>(codes: &BTreeMap<K, usize>) -> String {
    if codes.is_empty() {
        return "none".into();
    }
    codes
        .iter()
        .map(|(k, v)| format!("{k} × {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Collects the markdown the run prints, and appends it to `--out` at the end.
pub struct Report {
    pub text: String,
    pub out: Option<PathBuf>,
}

impl Report {
    pub fn new(out: Option<PathBuf>) -> Report {
        Report {
            text: String::new(),
            out,
        }
    }

    pub fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    pub fn flush(&mut self) {
        if let Some(path) = &self.out {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(self.text.as_bytes());
            }
        }
        self.text.clear();
    }
}
