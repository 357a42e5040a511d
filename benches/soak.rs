//! Soak test: mixed load against the real compute + BFF for a long time (30 minutes by
//! default), sampling both processes' RSS and open file descriptors.
//!
//! Run by `make soak` (scripts/soak.sh; `SOAK_SECS=1800`), which builds `imagegate` and this
//! binary in release mode and calls it with the server binary; this binary starts
//! `imagegate compute` and `imagegate bff` itself (separate processes, loopback, real TCP):
//!
//! ```text
//! soak --bin target/release/imagegate --work DIR [--out FILE] [--secs 1800] [--warmup 120]
//!      [--rate 20] [--sample-secs 2] [--clk-tck 100]
//! ```
//!
//! Load: an open loop at `--rate` requests/s; each slot picks one request type at random
//! (weights in [`MIX`]): compress, resize, watermark, batch (SSE, 3 images, one of them
//! truncated: a failed `progress` event inside a 200 stream), upload + fetch back, `/health`,
//! bad inputs (not an image → 415, a truncated JPEG → 422, `quality=150` → 400), and clients
//! that go away (a ~1 MB compress dropped 5–60 ms in, or a batch dropped after its first
//! event). Every `--sample-secs`: VmRSS, open fds and threads of both processes.
//!
//! Pass: RSS drift between the first window after the warm-up and the last window (each
//! `min(5 min, a third of the measured time)`) below 5 % for both processes; fds stable (the
//! last window's maximum at most the first window's maximum + 8, an allowance for the
//! connections the client happens to have open); every non-2xx is the one its request type
//! must give, and the in-flight gauges are 0 at the end.
//!
//! Every loop is bounded by a count and a time limit; every request by a timeout.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use support::*;

const USAGE: &str = "usage: soak --bin PATH --work DIR [--out FILE] [--secs S] [--warmup S] \
[--rate R] [--sample-secs S]\nNormally run by `make soak` (scripts/soak.sh).";

const MAX_OUTSTANDING: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Compress,
    Resize,
    Watermark,
    Batch,
    Upload,
    FetchUpload,
    Health,
    BadNotImage,
    BadTruncated,
    BadParameter,
    Disconnect,
}

/// Request types and their weights (out of 100).
const MIX: &[(Kind, u32)] = &[
    (Kind::Compress, 25),
    (Kind::Resize, 12),
    (Kind::Watermark, 8),
    (Kind::Batch, 5),
    (Kind::Upload, 10),
    (Kind::FetchUpload, 5),
    (Kind::Health, 20),
    (Kind::BadNotImage, 4),
    (Kind::BadTruncated, 3),
    (Kind::BadParameter, 3),
    (Kind::Disconnect, 5),
];

impl Kind {
    /// The status this request type must get (disconnects: none, the client left).
    fn expected(self) -> u16 {
        match self {
            Kind::Upload => 201,
            Kind::BadNotImage => 415,
            Kind::BadTruncated => 422,
            Kind::BadParameter => 400,
            _ => 200,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Compress => "compress (JPEG Q80)",
            Kind::Resize => "resize (PNG → 240 px, fit)",
            Kind::Watermark => "watermark (text)",
            Kind::Batch => "batch (SSE, 3 images, 1 truncated)",
            Kind::Upload => "upload (POST /v1/uploads)",
            Kind::FetchUpload => "fetch upload (GET /v1/uploads/{id})",
            Kind::Health => "GET /health",
            Kind::BadNotImage => "bad: not an image",
            Kind::BadTruncated => "bad: truncated JPEG",
            Kind::BadParameter => "bad: quality=150",
            Kind::Disconnect => "client goes away mid-request",
        }
    }
}

struct Payloads {
    small: Bytes,
    png: Bytes,
    medium: Bytes,
    truncated: Bytes,
    text: Bytes,
}

#[derive(Clone)]
struct Ctx {
    http: reqwest::Client,
    url: String,
    p: Arc<Payloads>,
    /// Recently stored upload URLs (for fetch-back).
    stored: Arc<Mutex<VecDeque<String>>>,
}

/// What happened to one request: its status (0 = no answer), or `None` for a client that
/// left on purpose; plus a note (a batch's event tally, the problem type).
struct Outcome {
    kind: Kind,
    status: Option<u16>,
    note: String,
    latency: Duration,
}

async fn problem_kind(r: reqwest::Response) -> String {
    let b = r.bytes().await.unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&b)
        .ok()
        .and_then(|v| {
            v["type"]
                .as_str()
                .map(|t| t.rsplit(':').next().unwrap_or(t).to_string())
        })
        .unwrap_or_default()
}

impl Ctx {
    async fn post(
        &self,
        path: &str,
        f: reqwest::multipart::Form,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}{path}", self.url))
            .multipart(f)
            .timeout(Duration::from_secs(30))
            .send()
            .await
    }

    /// Reads a plain answer to its end: (status, note).
    async fn plain(&self, r: reqwest::Result<reqwest::Response>) -> (u16, String) {
        match r {
            Err(e) => (0, format!("{e}")),
            Ok(r) => {
                let status = r.status().as_u16();
                if status >= 400 {
                    (status, problem_kind(r).await)
                } else {
                    match r.bytes().await {
                        Ok(_) => (status, String::new()),
                        Err(e) => (0, format!("body: {e}")),
                    }
                }
            }
        }
    }

    async fn run(&self, kind: Kind) -> Outcome {
        let t = Instant::now();
        let p = &self.p;
        let (status, note) = match kind {
            Kind::Compress => {
                let f = form(&p.small, "a.jpg", &[("quality", "80"), ("format", "jpeg")]);
                self.plain(self.post("/v1/images/compress", f).await).await
            }
            Kind::Resize => {
                let f = form(&p.png, "a.png", &[("width", "240"), ("height", "240")]);
                self.plain(self.post("/v1/images/resize", f).await).await
            }
            Kind::Watermark => {
                let f = form(
                    &p.small,
                    "a.jpg",
                    &[("text", "imagegate soak"), ("position", "center")],
                );
                self.plain(self.post("/v1/images/watermark", f).await).await
            }
            Kind::Batch => self.batch(false).await,
            Kind::Upload => {
                let f = form(&p.small, "a.jpg", &[("quality", "70")]);
                match self.post("/v1/uploads", f).await {
                    Ok(r) if r.status() == 201 => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        match v["url"].as_str() {
                            Some(u) => {
                                let mut s = self.stored.lock().unwrap();
                                s.push_back(u.to_string());
                                if s.len() > 64 {
                                    s.pop_front();
                                }
                                (201, String::new())
                            }
                            None => (0, "201 without a url".into()),
                        }
                    }
                    other => self.plain(other).await,
                }
            }
            Kind::FetchUpload => {
                let url = {
                    let s = self.stored.lock().unwrap();
                    s.get(fastrand::usize(..s.len().max(1))).cloned()
                };
                match url {
                    Some(u) => {
                        let r = self
                            .http
                            .get(format!("{}{u}", self.url))
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await;
                        self.plain(r).await
                    }
                    None => (200, "nothing stored yet: skipped".into()),
                }
            }
            Kind::Health => {
                let r = self
                    .http
                    .get(format!("{}/health", self.url))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                self.plain(r).await
            }
            Kind::BadNotImage => {
                let f = form(&p.text, "a.jpg", &[]);
                self.plain(self.post("/v1/images/compress", f).await).await
            }
            Kind::BadTruncated => {
                let f = form(&p.truncated, "a.jpg", &[]);
                self.plain(self.post("/v1/images/compress", f).await).await
            }
            Kind::BadParameter => {
                let f = form(&p.small, "a.jpg", &[("quality", "150")]);
                self.plain(self.post("/v1/images/compress", f).await).await
            }
            Kind::Disconnect => {
                let after = Duration::from_millis(5 + fastrand::u64(..55));
                if fastrand::bool() {
                    let f = form(&p.medium, "m.jpg", &[("quality", "80")]);
                    let fut = async { self.plain(self.post("/v1/images/compress", f).await).await };
                    match tokio::time::timeout(after, fut).await {
                        Ok((s, n)) => (s, format!("finished before leaving: {n}")),
                        Err(_) => {
                            return Outcome {
                                kind,
                                status: None,
                                note: "left during a ~1 MB compress".into(),
                                latency: t.elapsed(),
                            }
                        }
                    }
                } else {
                    match self.batch(true).await {
                        (200, n) if n == "left" => {
                            return Outcome {
                                kind,
                                status: None,
                                note: "left a batch after its first event".into(),
                                latency: t.elapsed(),
                            }
                        }
                        other => other,
                    }
                }
            }
        };
        Outcome {
            kind,
            status: Some(status),
            note,
            latency: t.elapsed(),
        }
    }

    /// A batch of 3 (the second truncated); reads the SSE stream to its end (or, with `leave`,
    /// drops it after the first event). Note: the event tally, or "left".
    async fn batch(&self, leave: bool) -> (u16, String) {
        let part = |d: &Bytes, name: &str| {
            reqwest::multipart::Part::stream_with_length(d.clone(), d.len() as u64)
                .file_name(name.to_string())
                .mime_str("image/jpeg")
                .expect("mime")
        };
        let p = &self.p;
        let f = reqwest::multipart::Form::new()
            .text("operation", "compress")
            .text("quality", "75")
            .part("file", part(&p.small, "1.jpg"))
            .part("file", part(&p.truncated, "2.jpg"))
            .part(
                "file",
                part(if leave { &p.medium } else { &p.small }, "3.jpg"),
            );
        let r = match self.post("/v1/images/batch", f).await {
            Ok(r) if r.status() == 200 => r,
            other => return self.plain(other).await,
        };
        let mut body = r.bytes_stream();
        let mut text = String::new();
        // At most 1000 chunks (a 3-image stream has a handful).
        for _ in 0..1000 {
            match body.next().await {
                Some(Ok(chunk)) => {
                    text.push_str(&String::from_utf8_lossy(&chunk));
                    if leave && text.contains("\n\n") {
                        return (200, "left".into());
                    }
                }
                Some(Err(e)) => return (0, format!("stream: {e}")),
                None => break,
            }
        }
        let ok = text.matches("\"success\":true").count();
        let failed = text.matches("\"success\":false").count();
        let done = text.contains("event: done");
        if done && ok == 2 && failed == 1 {
            (200, String::new())
        } else {
            (
                200,
                format!("unexpected stream: {ok} ok, {failed} failed, done = {done}"),
            )
        }
    }
}

fn pick() -> Kind {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut r = fastrand::u32(..total);
    for (k, w) in MIX {
        if r < *w {
            return *k;
        }
        r -= w;
    }
    Kind::Health
}

#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    bff_rss: u64,
    bff_fds: usize,
    bff_threads: u64,
    compute_rss: u64,
    compute_fds: usize,
    compute_threads: u64,
    done: usize,
}

fn window(samples: &[Sample], from: f64, to: f64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .copied()
        .collect()
}

fn mean(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    v.iter().map(&f).sum::<f64>() / v.len().max(1) as f64
}

fn max_of(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    v.iter().map(&f).fold(f64::NAN, f64::max)
}

fn min_of(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    v.iter().map(&f).fold(f64::NAN, f64::min)
}

fn main() -> anyhow::Result<()> {
    let mut f = match Flags::parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let parsed = (|| -> Result<_, String> {
        let bin: Option<PathBuf> = f.take("bin").map(Into::into);
        let work: Option<PathBuf> = f.take("work").map(Into::into);
        let out: Option<PathBuf> = f.take("out").map(Into::into);
        let secs = f.num("secs", 1800.0)?;
        let warmup = f.num("warmup", 120.0)?;
        let rate = f.num("rate", 20.0)?.max(0.1);
        let sample = f.num("sample-secs", 2.0)?.max(0.5);
        let clk_tck = f.num("clk-tck", 100.0)?.max(1.0);
        Ok((bin, work, out, secs, warmup, rate, sample, clk_tck))
    })();
    let (bin, work, out, secs, warmup, rate, sample_secs, clk_tck) = match parsed.and_then(|p| {
        f.finish()?;
        Ok(p)
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let (Some(bin), Some(work)) = (bin, work) else {
        println!("{USAGE}");
        return Ok(());
    };
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = Report::new(out);
    let r = rt.block_on(soak(
        bin,
        work,
        Timing {
            secs,
            warmup,
            rate,
            sample_secs,
            clk_tck,
        },
        &mut report,
    ));
    report.flush();
    r
}

struct Timing {
    secs: f64,
    warmup: f64,
    rate: f64,
    sample_secs: f64,
    clk_tck: f64,
}

async fn soak(
    bin: PathBuf,
    work: PathBuf,
    timing: Timing,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Timing {
        secs,
        warmup,
        rate,
        sample_secs,
        clk_tck,
    } = timing;
    let ports = Ports::new();
    let env = base_env(&ports, &work);
    let http = http_client(64);
    let mut compute = spawn_compute(&bin, &ports, &env, work.join("soak-compute.log"))?;
    wait_up(
        &http,
        &mut compute,
        &ports.compute_metrics_url(),
        Duration::from_secs(30),
    )
    .await?;
    let mut bff = spawn_bff(&bin, &ports, &env, work.join("soak-bff.log"))?;
    wait_up(
        &http,
        &mut bff,
        &format!("{}/health", ports.bff_url()),
        Duration::from_secs(30),
    )
    .await?;
    let (bff_pid, compute_pid) = (bff.pid(), compute.pid());

    let small = jpeg(480, 320);
    let medium = jpeg(1400, 933);
    let truncated = small.slice(..small.len() / 2);
    let payloads = Arc::new(Payloads {
        png: png(400, 300),
        text: Bytes::from_static(b"this is a plain text file, not an image at all\n"),
        small,
        medium,
        truncated,
    });
    let ctx = Ctx {
        http: http_client(64),
        url: ports.bff_url(),
        p: payloads.clone(),
        stored: Arc::default(),
    };
    eprintln!(
        "soak: {secs} s at {rate} req/s (warm-up {warmup} s), sampling every {sample_secs} s; \
         BFF pid {bff_pid}, compute pid {compute_pid}"
    );

    let origin = Instant::now();
    let cpu_before = (cpu_ticks(bff_pid), cpu_ticks(compute_pid));
    let done = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let csv_path = work.join("soak-samples.csv");
    let sampler = {
        let samples = samples.clone();
        let done = done.clone();
        let csv_path = csv_path.clone();
        tokio::spawn(async move {
            let mut csv = std::fs::File::create(&csv_path).ok();
            if let Some(c) = csv.as_mut() {
                let _ = writeln!(c, "t_s,bff_rss_kib,bff_fds,bff_threads,compute_rss_kib,compute_fds,compute_threads,requests_done");
            }
            let n = (secs / sample_secs).ceil() as usize + 2;
            for i in 0..n {
                let at = origin + Duration::from_secs_f64(i as f64 * sample_secs);
                tokio::time::sleep_until(at.into()).await;
                let s = Sample {
                    t: origin.elapsed().as_secs_f64(),
                    bff_rss: status_kib(bff_pid, "VmRSS").unwrap_or(0),
                    bff_fds: fd_count(bff_pid).unwrap_or(0),
                    bff_threads: threads(bff_pid).unwrap_or(0),
                    compute_rss: status_kib(compute_pid, "VmRSS").unwrap_or(0),
                    compute_fds: fd_count(compute_pid).unwrap_or(0),
                    compute_threads: threads(compute_pid).unwrap_or(0),
                    done: done.load(Ordering::Relaxed),
                };
                if let Some(c) = csv.as_mut() {
                    let _ = writeln!(
                        c,
                        "{:.1},{},{},{},{},{},{},{}",
                        s.t,
                        s.bff_rss,
                        s.bff_fds,
                        s.bff_threads,
                        s.compute_rss,
                        s.compute_fds,
                        s.compute_threads,
                        s.done
                    );
                }
                samples.lock().unwrap().push(s);
                if s.t > secs {
                    break;
                }
            }
        })
    };

    // The open loop.
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut skipped = 0usize;
    let mut peak_outstanding = 0usize;
    let interval = 1.0 / rate;
    let max_count = (secs * rate).ceil() as usize;
    let mut last_progress = 0u64;
    for i in 0..max_count {
        let at = i as f64 * interval;
        if at >= secs {
            break;
        }
        let wait = at - origin.elapsed().as_secs_f64();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let minute = (at / 60.0) as u64;
        if minute > last_progress {
            last_progress = minute;
            let s = samples.lock().unwrap().last().copied().unwrap_or_default();
            eprintln!(
                "soak: {minute} min, {} answered, BFF {} / {} fds, compute {} / {} fds, outstanding {}",
                done.load(Ordering::Relaxed),
                mib(s.bff_rss),
                s.bff_fds,
                mib(s.compute_rss),
                s.compute_fds,
                outstanding.load(Ordering::Relaxed)
            );
        }
        if outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
            skipped += 1;
            continue;
        }
        peak_outstanding = peak_outstanding.max(outstanding.fetch_add(1, Ordering::Relaxed) + 1);
        let ctx = ctx.clone();
        let (o, d, outs) = (outstanding.clone(), done.clone(), outcomes.clone());
        tokio::spawn(async move {
            let r = ctx.run(pick()).await;
            outs.lock().unwrap().push(r);
            d.fetch_add(1, Ordering::Relaxed);
            o.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Drain: at most 60 s.
    let t = Instant::now();
    while outstanding.load(Ordering::Relaxed) > 0 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = origin.elapsed().as_secs_f64();
    let cpu_after = (cpu_ticks(bff_pid), cpu_ticks(compute_pid));
    let _ = sampler.await;
    let (heavy, heavy_t) =
        in_flight_settles(&http, &ports.bff_url(), "heavy", Duration::from_secs(10)).await;
    let (realtime, _) =
        in_flight_settles(&http, &ports.bff_url(), "realtime", Duration::from_secs(5)).await;
    let after = Sample {
        t: origin.elapsed().as_secs_f64(),
        bff_rss: status_kib(bff_pid, "VmRSS").unwrap_or(0),
        bff_fds: fd_count(bff_pid).unwrap_or(0),
        bff_threads: threads(bff_pid).unwrap_or(0),
        compute_rss: status_kib(compute_pid, "VmRSS").unwrap_or(0),
        compute_fds: fd_count(compute_pid).unwrap_or(0),
        compute_threads: threads(compute_pid).unwrap_or(0),
        done: done.load(Ordering::Relaxed),
    };
    let bff_hwm = status_kib(bff_pid, "VmHWM").unwrap_or(0);
    let compute_hwm = status_kib(compute_pid, "VmHWM").unwrap_or(0);
    let bff_alive = bff.alive();
    let compute_alive = compute.alive();
    bff.stop();
    compute.stop();

    // --- summary ---------------------------------------------------------------------------
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let samples = samples.lock().unwrap().clone();
    let measured = secs - warmup;
    let len = (measured / 3.0).min(300.0);
    let first = window(&samples, warmup, warmup + len);
    let last = window(&samples, secs - len, secs);

    report.line(format!(
        "### Soak: {:.0} min of mixed load at {rate} req/s",
        secs / 60.0
    ));
    report.line("");
    report.line(format!(
        "Default config; compute and BFF as separate release processes on loopback; {} CPUs \
         shared with other work. Open loop: {} requests scheduled, {} answered or left, {} \
         skipped at the client cap of {MAX_OUTSTANDING} outstanding (peak outstanding \
         {peak_outstanding}); wall time {:.0} s. Samples every {sample_secs} s in \
         `{}`. Windows: warm-up {warmup:.0} s, first window {:.0}–{:.0} s, last window \
         {:.0}–{:.0} s.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        outcomes.len() + skipped,
        outcomes.len(),
        skipped,
        elapsed,
        csv_path.display(),
        warmup,
        warmup + len,
        secs - len,
        secs
    ));
    report.line("");
    let core_share = |b: Option<u64>, a: Option<u64>| match (b, a) {
        (Some(b), Some(a)) => format!(
            "{:.0} % of one core",
            a.saturating_sub(b) as f64 / clk_tck / elapsed.max(1e-9) * 100.0
        ),
        _ => "?".into(),
    };
    report.line(format!(
        "CPU used over the run (user + system): BFF {}, compute {} (the machine has {} cores; \
         load average printed above and below).",
        core_share(cpu_before.0, cpu_after.0),
        core_share(cpu_before.1, cpu_after.1),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    report.line("");

    let mut pass = true;
    report.line("| process | measure | first window | last window | change | target | |");
    report.line("|---|---|---|---|---|---|---|");
    for (name, rss, fds, thr, hwm) in [
        (
            "BFF",
            (|s: &Sample| s.bff_rss as f64) as fn(&Sample) -> f64,
            (|s: &Sample| s.bff_fds as f64) as fn(&Sample) -> f64,
            (|s: &Sample| s.bff_threads as f64) as fn(&Sample) -> f64,
            bff_hwm,
        ),
        (
            "compute",
            |s: &Sample| s.compute_rss as f64,
            |s: &Sample| s.compute_fds as f64,
            |s: &Sample| s.compute_threads as f64,
            compute_hwm,
        ),
    ] {
        let (a, b) = (mean(&first, rss), mean(&last, rss));
        let drift = (b - a) / a.max(1.0);
        let ok = drift.abs() < 0.05 && !first.is_empty() && !last.is_empty();
        pass &= ok;
        report.line(format!(
            "| {name} | RSS mean (min–max) | {} ({}–{}) | {} ({}–{}) | {:+.2} % | < 5 % | {} |",
            mib(a as u64),
            mib(min_of(&first, rss) as u64),
            mib(max_of(&first, rss) as u64),
            mib(b as u64),
            mib(min_of(&last, rss) as u64),
            mib(max_of(&last, rss) as u64),
            drift * 100.0,
            verdict(ok)
        ));
        let (fa, fb) = (max_of(&first, fds), max_of(&last, fds));
        let fok = fb <= fa + 8.0;
        pass &= fok;
        report.line(format!(
            "| {name} | open fds min–max | {:.0}–{fa:.0} | {:.0}–{fb:.0} | {:+.0} (max) | last max ≤ first max + 8 | {} |",
            min_of(&first, fds),
            min_of(&last, fds),
            fb - fa,
            verdict(fok)
        ));
        report.line(format!(
            "| {name} | threads min–max | {:.0}–{:.0} | {:.0}–{:.0} | | | |",
            min_of(&first, thr),
            max_of(&first, thr),
            min_of(&last, thr),
            max_of(&last, thr),
        ));
        report.line(format!(
            "| {name} | peak RSS (VmHWM) over the whole run | {} | | | | |",
            mib(hwm)
        ));
    }
    report.line(format!(
        "| both | after the load (idle): RSS BFF / compute; fds BFF / compute | {} / {}; {} / {} | | | | |",
        mib(after.bff_rss),
        mib(after.compute_rss),
        after.bff_fds,
        after.compute_fds
    ));
    let gauges_ok = heavy == Some(0.0) && realtime == Some(0.0);
    pass &= gauges_ok && bff_alive && compute_alive;
    report.line(format!(
        "| BFF | `imagegate_lane_in_flight` heavy / realtime at the end | {} / {} (after {:.1} s) | | | 0 | {} |",
        heavy.map_or("?".into(), |v| format!("{v:.0}")),
        realtime.map_or("?".into(), |v| format!("{v:.0}")),
        heavy_t.as_secs_f64(),
        verdict(gauges_ok)
    ));
    report.line(format!(
        "| both | alive at the end | BFF {}, compute {} | | | yes | {} |",
        if bff_alive { "yes" } else { "**no**" },
        if compute_alive { "yes" } else { "**no**" },
        verdict(bff_alive && compute_alive)
    ));
    report.line("");

    // Per request type: count, statuses, latency.
    report.line("| request type | share | n | statuses | p50 | p99 | max |");
    report.line("|---|---|---|---|---|---|---|");
    let mut unexpected: BTreeMap<String, usize> = BTreeMap::new();
    let mut non2xx: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, weight) in MIX {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == *kind).collect();
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for o in &of {
            let key = match o.status {
                None => "client left".to_string(),
                Some(s) if o.note.is_empty() => s.to_string(),
                Some(s) => format!("{s} ({})", o.note),
            };
            *statuses.entry(key).or_default() += 1;
            if let Some(s) = o.status {
                let expected = kind.expected();
                let fine = s == expected
                    && (o.note.is_empty()
                        || o.note.starts_with("nothing stored")
                        || o.note.starts_with("finished before leaving")
                        || s >= 400);
                if !(200..300).contains(&s) {
                    *non2xx
                        .entry(format!(
                            "{s} {} from \"{}\"{}",
                            if o.note.is_empty() { "" } else { &o.note },
                            kind.label(),
                            if fine { " (expected)" } else { "" }
                        ))
                        .or_default() += 1;
                }
                if !fine {
                    *unexpected
                        .entry(format!("{}: {s} {}", kind.label(), o.note))
                        .or_default() += 1;
                }
            }
        }
        let mut lat: Vec<Duration> = of
            .iter()
            .filter(|o| o.status.is_some())
            .map(|o| o.latency)
            .collect();
        lat.sort();
        report.line(format!(
            "| {} | {weight} % | {} | {} | {} | {} | {} |",
            kind.label(),
            of.len(),
            histogram(&statuses),
            ms(pct(&lat, 50.0)),
            ms(pct(&lat, 99.0)),
            ms(pct(&lat, 100.0)),
        ));
    }
    report.line("");
    report.line(format!(
        "Every non-2xx, by status and cause: {}.",
        histogram(&non2xx)
    ));
    report.line("");
    pass &= unexpected.is_empty();
    report.line(format!(
        "Answers other than the one their request type must give: {}.",
        if unexpected.is_empty() {
            "none".to_string()
        } else {
            histogram(&unexpected)
        }
    ));
    report.line("");
    report.line(format!(
        "**Verdict: {}**",
        if pass {
            "pass"
        } else {
            "FAIL (see the rows marked missed)"
        }
    ));
    report.line("");
    Ok(())
}
