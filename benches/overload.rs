//! Overload and failover benchmark of the heavy lane, against the real processes.
//!
//! Run by `make bench-overload` (scripts/bench-overload.sh), which builds `imagegate` and this
//! binary in release mode and calls it with the server binary. This binary starts
//! `imagegate compute` and `imagegate bff` itself (separate processes, loopback, real TCP), so
//! that the failover phase can SIGKILL compute and start it again on the same port:
//!
//! ```text
//! overload --phase overload --bin target/release/imagegate --work DIR [--out FILE]
//!          [--cap 8] [--queue-waits 250ms,0ms] [--factor 4] [--secs 20] [--width 1024] [--grain 4]
//! overload --phase failover --bin target/release/imagegate --work DIR [--out FILE]
//!          [--rate 15] [--down-secs 4]
//! overload --phase frozen --bin target/release/imagegate --work DIR [--out FILE]
//!          [--rate 15] [--down-secs 20]
//! ```
//!
//! - `overload`: for each queue wait in `--queue-waits`, a fresh BFF whose heavy lane has
//!   `max_in_flight = --cap`. (1) Unloaded: a small compress request at concurrency 1, p50/p99.
//!   (2) Capacity: a closed loop at concurrency `cap` for 5 s gives the lane's throughput X and
//!   its latency at capacity. (3) Overload: an **open loop** at `factor × X` requests/s for
//!   `--secs`, each request on its own task, timed from its scheduled start. Open loop because
//!   independent users do not slow down when the server sheds them: a closed loop with
//!   `factor × cap` clients would re-send every shed request at once and measure the
//!   client's retry speed (and, on 2 shared cores, steal CPU from the server), not the
//!   gateway. It also gives `factor ×` the concurrency by Little's law. Reported: share shed
//!   with 503, time to a 503 (p50/p99/max), accepted p99 against the unloaded p99, Retry-After
//!   on every 503, the status histogram (no 5xx but 503), the BFF's RSS (idle, VmHWM, samples)
//!   against the bytes in flight, and `imagegate_lane_in_flight{lane="heavy"}` after the run.
//!   Two diagnostic probes run during the overload, one request at a time every 20 ms, neither
//!   reaching the lane: the same upload with `quality=0` (read in full, then 400) and
//!   `GET /health/live`; they show the BFF's own HTTP floor under that load. An intake probe
//!   that arrives while the lane is saturated is shed before its form is read (503), so only
//!   the 400s count, and `n` is the number of probes that found room.
//! - `failover`: default config; an open loop of small compress requests at `--rate`/s and a
//!   `/health` poller (one request every 10 ms); compute is SIGKILLed 4 s in and started again
//!   on the same port `--down-secs` later. Reported: kill → first `/health` 503, restart →
//!   first `/health` 200 (and → compute's port accepting, → first heavy 200), latency of heavy
//!   calls refused by the open circuit, every failed request attributed to "in flight at the
//!   kill", "sent while compute was down" or "sent after the restart", the BFF still alive,
//!   and the in-flight gauge back at 0.
//! - `frozen`: two compute replicas behind one BFF (default config), the same load and poller;
//!   one replica is SIGSTOPped 4 s in (its kernel still accepts connections, nothing answers)
//!   and SIGCONTed `--down-secs` later. Reported: the share of `/health` 200s in windows after
//!   the freeze, image calls' answers and latency, the realtime lane's deadlines and rejections
//!   and the ejected endpoints at the thaw, and thaw → the replica completes work again.
//!
//! Every loop is bounded by a count and a time limit; every request by a timeout.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;

const USAGE: &str = "usage: overload --phase overload|capacity|failover|frozen --bin PATH --work DIR [--out FILE] \
[--cap N] [--max-queued N] [--queue-waits 250ms,0ms] [--lanes adaptive,fixed,tuned] [--compute-workers N] [--factor F] [--secs S] [--width PX] [--grain G] [--rate R] [--down-secs S]\n\
Normally run by `make bench-overload` (scripts/bench-overload.sh).";

/// Most requests outstanding at the client at once (open loop): beyond it a send is skipped
/// and counted, so a stalled server cannot make the bench grow without bound.
const MAX_OUTSTANDING: usize = 2048;

struct Args {
    phase: String,
    bin: PathBuf,
    work: PathBuf,
    out: Option<PathBuf>,
    cap: usize,
    /// `lanes.heavy.max_queued` (default: half of `cap`, at least 1: the documented sizing).
    max_queued: usize,
    queue_waits: Vec<String>,
    /// Heavy-lane modes to compare (`adaptive,fixed,tuned`); empty: the queue-wait columns.
    lanes: Vec<String>,
    factor: f64,
    secs: f64,
    width: u32,
    grain: u64,
    rate: f64,
    down_secs: f64,
    /// Compute's CPU workers (0 = its default, one per core).
    compute_workers: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut f = Flags::parse()?;
    let Some(phase) = f.take("phase") else {
        return Ok(None);
    };
    if !["overload", "failover", "capacity", "frozen"].contains(&phase.as_str()) {
        return Err(format!(
            "--phase must be overload, failover, capacity or frozen, got {phase:?}"
        ));
    }
    let bin = f.take("bin").ok_or("--bin is needed")?.into();
    let work: PathBuf = f.take("work").ok_or("--work is needed")?.into();
    let out = f.take("out").map(Into::into);
    let cap = f.num("cap", 8.0)?.max(1.0) as usize;
    let max_queued = f.num("max-queued", (cap / 2).max(1) as f64)? as usize;
    let queue_waits = f
        .take("queue-waits")
        .unwrap_or_else(|| "250ms,0ms".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let lanes: Vec<String> = f
        .take("lanes")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = lanes
        .iter()
        .find(|m| !["adaptive", "fixed", "tuned"].contains(&m.as_str()))
    {
        return Err(format!("--lanes takes adaptive,fixed,tuned; got {bad:?}"));
    }
    let factor = f.num("factor", 4.0)?;
    let secs = f.num("secs", 20.0)?;
    let width = f.num("width", 1024.0)? as u32;
    let grain = f.num("grain", 4.0)? as u64;
    let rate = f.num("rate", 15.0)?;
    let down_secs = f.num("down-secs", 4.0)?;
    let compute_workers = f.num("compute-workers", 0.0)? as usize;
    f.finish()?;
    Ok(Some(Args {
        phase,
        bin,
        work,
        out,
        cap,
        max_queued,
        queue_waits,
        lanes,
        factor,
        secs,
        width,
        grain,
        rate,
        down_secs,
        compute_workers,
    }))
}

// ---------------------------------------------------------------------------------------------
// One request and its outcome

#[derive(Clone, Debug)]
struct Outcome {
    /// Seconds since the phase's origin when the request was (scheduled to be) sent.
    sent: f64,
    /// Seconds since the origin when its answer was complete.
    done: f64,
    /// 0: no HTTP answer (transport error or timeout).
    status: u16,
    retry_after: bool,
    /// The end of the problem's `type` URI (`lane-saturated`), or the transport error.
    kind: String,
}

impl Outcome {
    fn latency(&self) -> Duration {
        Duration::from_secs_f64((self.done - self.sent).max(0.0))
    }
}

#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    url: String,
    data: Bytes,
    origin: Instant,
}

impl Target {
    /// One `POST /v1/images/compress` (JPEG Q80); `sent` is its scheduled start.
    async fn compress(&self, sent: f64) -> Outcome {
        self.post_compress(sent, "80").await
    }

    /// Diagnostic: the same upload with `quality=0`, which the BFF reads completely and then
    /// refuses (400) without asking the lane: the intake alone, the floor of a time to 503.
    async fn intake_only(&self, sent: f64) -> Outcome {
        self.post_compress(sent, "0").await
    }

    async fn post_compress(&self, sent: f64, quality: &str) -> Outcome {
        let resp = self
            .http
            .post(format!("{}/v1/images/compress", self.url))
            .multipart(form(
                &self.data,
                "photo.jpg",
                &[("quality", quality), ("format", "jpeg")],
            ))
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        self.finish(sent, resp).await
    }

    /// Diagnostic: `GET /health/live` (no body, no compute): the BFF's own HTTP floor.
    async fn live(&self, sent: f64) -> Outcome {
        let resp = self
            .http
            .get(format!("{}/health/live", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        self.finish(sent, resp).await
    }

    async fn health(&self, sent: f64) -> Outcome {
        let resp = self
            .http
            .get(format!("{}/health", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        self.finish(sent, resp).await
    }

    async fn finish(&self, sent: f64, resp: reqwest::Result<reqwest::Response>) -> Outcome {
        let now = |o: &Instant| o.elapsed().as_secs_f64();
        match resp {
            Err(e) => Outcome {
                sent,
                done: now(&self.origin),
                status: 0,
                retry_after: false,
                kind: transport_error(&e),
            },
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key(reqwest::header::RETRY_AFTER);
                let body = r.bytes().await;
                let done = now(&self.origin);
                let kind = match &body {
                    Err(e) => transport_error(e),
                    Ok(b) if status >= 400 => problem_kind(b),
                    Ok(_) => String::new(),
                };
                Outcome {
                    sent,
                    done,
                    status: if body.is_err() { 0 } else { status },
                    retry_after,
                    kind,
                }
            }
        }
    }
}

/// `GET /health` one request at a time, 10 ms apart, until finished (at most 100 000 polls).
struct HealthPoller {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthPoller {
    fn start(target: &Target) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let task = {
            let (t, stop, log) = (target.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let o = t.health(t.origin.elapsed().as_secs_f64()).await;
                    log.lock().unwrap().push(o);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        HealthPoller { stop, log, task }
    }

    /// Stops polling and returns every outcome, in order.
    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.log.lock().unwrap().clone()
    }
}

/// The end of a problem's `type` URI; for a 502 also its detail; for a `/health` 503 the
/// message it gives for compute.
fn problem_kind(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return "(not JSON)".into();
    };
    let short = |s: &str| s.chars().take(90).collect::<String>();
    if let Some(t) = v["type"].as_str() {
        let kind = t.rsplit(':').next().unwrap_or(t).to_string();
        return match v["status"].as_u64() {
            Some(s) if s >= 500 && s != 503 => {
                format!("{kind}: {}", short(v["detail"].as_str().unwrap_or("")))
            }
            _ => kind,
        };
    }
    match v["error"]["grpc-compute"]["message"].as_str() {
        Some(m) => format!("health: {}", short(m)),
        None => "(no problem type)".into(),
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "client timeout".into()
    } else if e.is_connect() {
        "connect error".into()
    } else {
        "transport error".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Load generators

/// Open loop: one request every `1/rate` s from `start` (seconds since the origin) for `secs`,
/// at most `max_count`; each is timed from its scheduled start (no coordinated omission).
/// Returns the outcomes, the sends skipped at `MAX_OUTSTANDING`, and the peak outstanding.
async fn open_loop(
    target: &Target,
    rate: f64,
    secs: f64,
    max_count: usize,
) -> (Vec<Outcome>, usize, usize) {
    let outstanding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut skipped = 0;
    let mut tasks = Vec::new();
    let start = target.origin.elapsed().as_secs_f64();
    let interval = 1.0 / rate.max(0.001);
    for i in 0..max_count {
        let at = start + i as f64 * interval;
        if at - start >= secs {
            break;
        }
        let wait = at - target.origin.elapsed().as_secs_f64();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        if outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
            skipped += 1;
            continue;
        }
        let n = outstanding.fetch_add(1, Ordering::Relaxed) + 1;
        peak.fetch_max(n, Ordering::Relaxed);
        let t = target.clone();
        let o = outstanding.clone();
        tasks.push(tokio::spawn(async move {
            let out = t.compress(at).await;
            o.fetch_sub(1, Ordering::Relaxed);
            out
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    (out, skipped, peak.load(Ordering::Relaxed))
}

/// Closed loop: `concurrency` clients back to back for `secs` (each at most `max_each`).
async fn closed_loop(
    target: &Target,
    concurrency: usize,
    secs: f64,
    max_each: usize,
) -> (Vec<Outcome>, f64) {
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let t = target.clone();
            tokio::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..max_each {
                    if started.elapsed().as_secs_f64() >= secs {
                        break;
                    }
                    let sent = t.origin.elapsed().as_secs_f64();
                    v.push(t.compress(sent).await);
                }
                v
            })
        })
        .collect();
    let mut out = Vec::new();
    for w in workers {
        out.extend(w.await.expect("worker"));
    }
    (out, started.elapsed().as_secs_f64())
}

fn sorted_latencies<'a>(it: impl Iterator<Item = &'a Outcome>) -> Vec<Duration> {
    let mut v: Vec<Duration> = it.map(Outcome::latency).collect();
    v.sort();
    v
}

fn status_histogram<'a>(it: impl Iterator<Item = &'a Outcome>) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for o in it {
        let key = match o.status {
            0 => format!("no answer ({})", o.kind),
            200 => "200".into(),
            s => format!("{s} {}", o.kind),
        };
        *h.entry(key).or_default() += 1;
    }
    h
}

/// Samples a process's VmRSS every 100 ms and a lane's in-flight gauge every 250 ms until
/// `stop`; returns (max VmRSS KiB, max in flight).
fn spawn_sampler(
    http: reqwest::Client,
    bff: String,
    pid: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, f64)> {
    tokio::spawn(async move {
        let mut max_rss = 0u64;
        let mut max_in_flight = 0f64;
        let started = Instant::now();
        let mut tick = 0u64;
        // Bounded: 10 minutes at most.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
            if let Some(k) = status_kib(pid, "VmRSS") {
                max_rss = max_rss.max(k);
            }
            if tick.is_multiple_of(3) {
                if let Some(text) = scrape(&http, &format!("{bff}/metrics")).await {
                    if let Some(v) = metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}") {
                        max_in_flight = max_in_flight.max(v);
                    }
                }
            }
            tick += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (max_rss, max_in_flight)
    })
}

// ---------------------------------------------------------------------------------------------
// Phase: overload

struct OverloadRow {
    label: String,
    values: Vec<String>,
}

async fn overload(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let data = jpeg_grain(args.width, args.width * 2 / 3, args.grain);
    let body_len = data.len() + 400; // file + multipart framing and the two fields (approx.)
    let ports = Ports::new();
    let base = base_env(&ports, &args.work);
    let http = http_client(64);
    let mut compute_env = base.clone();
    if args.compute_workers > 0 {
        compute_env.push((
            "IMAGEGATE_COMPUTE__WORKERS".into(),
            args.compute_workers.to_string(),
        ));
    }
    let mut compute = spawn_compute(
        &args.bin,
        &ports,
        &compute_env,
        args.work.join("overload-compute.log"),
    )?;
    wait_up(
        &http,
        &mut compute,
        &ports.compute_metrics_url(),
        Duration::from_secs(30),
    )
    .await?;

    report.line(if args.lanes.is_empty() {
        format!(
            "### Overload: heavy lane max_in_flight = {}, max_queued = {}, open loop at {}× its measured throughput",
            args.cap, args.max_queued, args.factor
        )
    } else {
        format!(
            "### Overload: the heavy lane's concurrency modes side by side, open loop at {}× the measured throughput",
            args.factor
        )
    });
    report.line("");
    report.line(format!(
        "Request: `POST /v1/images/compress`, a {}×{} photo-like JPEG ({}) to JPEG Q80. \
         Compute: workers = {} (the machine has {} CPUs), queue_capacity = 64. One fresh BFF \
         per column, all other settings default.",
        args.width,
        args.width * 2 / 3,
        human_bytes(data.len()),
        if args.compute_workers > 0 {
            args.compute_workers.to_string()
        } else {
            "CPUs (default)".to_string()
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    report.line("");

    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<OverloadRow> = Vec::new();
    let add = |rows: &mut Vec<OverloadRow>, label: &str, value: String| match rows
        .iter_mut()
        .find(|r| r.label == label)
    {
        Some(r) => r.values.push(value),
        None => rows.push(OverloadRow {
            label: label.to_string(),
            values: vec![value],
        }),
    };
    let mut notes: Vec<String> = Vec::new();

    // Comparing lane modes, every column gets the same offered load: compute's capacity,
    // measured once through a BFF that cannot be the bottleneck (fixed, `--cap` in flight),
    // after a warm-up that leaves compute as warm for the first column as for the last.
    let calibrated = if args.lanes.is_empty() {
        None
    } else {
        let mut env = base.clone();
        env.extend([
            ("IMAGEGATE_LANES__HEAVY__CONCURRENCY".into(), "fixed".into()),
            (
                "IMAGEGATE_LANES__HEAVY__MAX_IN_FLIGHT".into(),
                args.cap.to_string(),
            ),
        ]);
        let ports_c = Ports {
            bff: free_port(),
            ..ports.clone()
        };
        let mut bff = spawn_bff(
            &args.bin,
            &ports_c,
            &env,
            args.work.join("overload-bff-calibration.log"),
        )?;
        wait_up(
            &http,
            &mut bff,
            &format!("{}/health", ports_c.bff_url()),
            Duration::from_secs(30),
        )
        .await?;
        let target = Target {
            http: http.clone(),
            url: ports_c.bff_url(),
            data: data.clone(),
            origin: Instant::now(),
        };
        eprintln!(
            "[calibration] warm-up, then compute's capacity at concurrency {} ...",
            args.cap
        );
        let _ = closed_loop(&target, args.cap, 3.0, 100_000).await;
        let (out, secs) = closed_loop(&target, args.cap, 5.0, 100_000).await;
        bff.stop();
        let ok = sorted_latencies(out.iter().filter(|o| o.status == 200));
        let x = ok.len() as f64 / secs;
        report.line(format!(
            "Capacity X, measured once before the columns (fixed lane, {} in flight, closed loop              5 s after a 3 s warm-up): **{x:.1} req/s**, p50 {} / p99 {}. Every column is offered              {}× X.",
            args.cap,
            ms(pct(&ok, 50.0)),
            ms(pct(&ok, 99.0)),
            args.factor
        ));
        report.line("");
        Some(x)
    };

    for column in heavy_lane_columns(args) {
        let qw = &column.tag;
        let mut env = base.clone();
        env.extend(column.env.iter().cloned());
        let ports_b = Ports {
            bff: free_port(),
            ..ports.clone()
        };
        let mut bff = spawn_bff(
            &args.bin,
            &ports_b,
            &env,
            args.work.join(format!("overload-bff-{qw}.log")),
        )?;
        wait_up(
            &http,
            &mut bff,
            &format!("{}/health", ports_b.bff_url()),
            Duration::from_secs(30),
        )
        .await?;
        let pid = bff.pid();
        columns.push(column.title.clone());
        eprintln!("[queue_wait {qw}] unloaded latency ...");
        let target = Target {
            http: http.clone(),
            url: ports_b.bff_url(),
            data: data.clone(),
            origin: Instant::now(),
        };
        // Warm-up (connections on both hops), then the idle RSS.
        for _ in 0..20 {
            let _ = target.compress(target.origin.elapsed().as_secs_f64()).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_rss = status_kib(pid, "VmRSS").unwrap_or(0);

        // (1) unloaded: concurrency 1, at most 300 requests or 30 s.
        let mut unloaded = Vec::new();
        let t = Instant::now();
        while unloaded.len() < 300 && t.elapsed() < Duration::from_secs(30) {
            unloaded.push(target.compress(target.origin.elapsed().as_secs_f64()).await);
        }
        let un_ok = sorted_latencies(unloaded.iter().filter(|o| o.status == 200));
        let (u50, u99) = (pct(&un_ok, 50.0), pct(&un_ok, 99.0));

        // (2) capacity: closed loop at concurrency = cap.
        eprintln!(
            "[queue_wait {qw}] capacity: closed loop at concurrency {} ...",
            args.cap
        );
        let (cap_out, cap_secs) = closed_loop(&target, args.cap, 5.0, 100_000).await;
        let cap_ok = sorted_latencies(cap_out.iter().filter(|o| o.status == 200));
        let x_here = cap_ok.len() as f64 / cap_secs;
        let x = calibrated.unwrap_or(x_here);
        let cap_shed = cap_out.iter().filter(|o| o.status == 503).count();

        // (3) overload: open loop at factor × X.
        let rate = args.factor * x;
        eprintln!(
            "[queue_wait {qw}] overload: open loop at {rate:.0} req/s for {} s ...",
            args.secs
        );
        let hwm_before = status_kib(pid, "VmHWM").unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = spawn_sampler(http.clone(), ports_b.bff_url(), pid, stop.clone());
        // Diagnostic probes, one at a time every 20 ms: intake only, then /health/live.
        let probes = {
            let t = target.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut intake, mut live) = (Vec::new(), Vec::new());
                for i in 0..100_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = t.origin.elapsed().as_secs_f64();
                    if i % 2 == 0 {
                        intake.push(t.intake_only(sent).await);
                    } else {
                        live.push(t.live(sent).await);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (intake, live)
            })
        };
        let max_count = (rate * args.secs).ceil() as usize + 1;
        let (out, skipped, peak_outstanding) =
            open_loop(&target, rate, args.secs, max_count.min(1_000_000)).await;
        stop.store(true, Ordering::Relaxed);
        let (max_rss, max_lane) = sampler.await.unwrap_or((0, -1.0));
        let (intake_probe, live_probe) = probes.await.unwrap_or_default();
        let intake_lat = sorted_latencies(intake_probe.iter().filter(|o| o.status == 400));
        let live_lat = sorted_latencies(live_probe.iter().filter(|o| o.status == 200));
        let hwm_after = status_kib(pid, "VmHWM").unwrap_or(0);
        let (settled, settle_time) =
            in_flight_settles(&http, &ports_b.bff_url(), "heavy", Duration::from_secs(10)).await;
        let metrics_text = scrape(&http, &format!("{}/metrics", ports_b.bff_url()))
            .await
            .unwrap_or_default();
        let saturated = metric_sum(
            &metrics_text,
            "imagegate_lane_rejected_total",
            &["lane=\"heavy\"", "reason=\"saturated\""],
        );
        let limit_after = metric_sum(&metrics_text, "imagegate_lane_limit", &["lane=\"heavy\""]);
        let alive = bff.alive();
        bff.stop();

        // Judging.
        let n = out.len();
        let shed: Vec<&Outcome> = out.iter().filter(|o| o.status == 503).collect();
        let accepted = sorted_latencies(out.iter().filter(|o| o.status == 200));
        let accepted_n = accepted.len();
        let shed_lat = sorted_latencies(shed.iter().copied());
        let other_5xx: usize = out
            .iter()
            .filter(|o| o.status >= 500 && o.status != 503)
            .count();
        let no_answer = out.iter().filter(|o| o.status == 0).count();
        let with_ra = shed.iter().filter(|o| o.retry_after).count();
        let a99 = pct(&accepted, 99.0);
        let ratio = a99.as_secs_f64() / u99.as_secs_f64().max(1e-9);
        let in_flight_bytes = peak_outstanding * body_len;
        let growth = hwm_after.saturating_sub(idle_rss);

        add(
            &mut rows,
            "unloaded (c=1) p50 / p99",
            format!("{} / {}", ms(u50), ms(u99)),
        );
        add(
            &mut rows,
            &format!(
                "at capacity (closed loop, c={}): throughput X; p50 / p99",
                args.cap
            ),
            format!(
                "{x_here:.1} req/s; {} / {}{}",
                ms(pct(&cap_ok, 50.0)),
                ms(pct(&cap_ok, 99.0)),
                if cap_shed > 0 {
                    format!(" ({cap_shed} shed)")
                } else {
                    String::new()
                }
            ),
        );
        add(
            &mut rows,
            "overload: offered rate, duration; requests sent (skipped at the client cap)",
            format!("{rate:.1} req/s, {} s; {n} ({skipped})", args.secs),
        );
        add(
            &mut rows,
            "overload: accepted (200) throughput, and ÷ X (goodput; target ≥ 0.95)",
            format!(
                "{:.1} req/s, {:.2}",
                accepted_n as f64 / args.secs.max(1e-9),
                accepted_n as f64 / args.secs.max(1e-9) / x.max(1e-9)
            ),
        );
        add(
            &mut rows,
            "peak outstanding at the client / peak heavy in flight (sampled)",
            format!("{peak_outstanding} / {max_lane:.0}"),
        );
        add(
            &mut rows,
            "**share shed with 503**",
            format!(
                "{:.1} % ({} of {n}); lane `saturated` rejections: {saturated:.0}",
                100.0 * shed.len() as f64 / n.max(1) as f64,
                shed.len()
            ),
        );
        add(
            &mut rows,
            "**time to 503** p50 / p99 / max (target < 10 ms)",
            format!(
                "{} / {} / {}: {}",
                ms(pct(&shed_lat, 50.0)),
                ms(pct(&shed_lat, 99.0)),
                ms(pct(&shed_lat, 100.0)),
                if shed_lat.is_empty() {
                    "no 503"
                } else {
                    verdict(pct(&shed_lat, 99.0) < Duration::from_millis(10))
                }
            ),
        );
        add(
            &mut rows,
            "diagnostic, during the overload: intake only (same upload, `quality=0` → 400, no lane; probes shed early not counted) p50 / p99 / max; n",
            format!(
                "{} / {} / {}; {}",
                ms(pct(&intake_lat, 50.0)),
                ms(pct(&intake_lat, 99.0)),
                ms(pct(&intake_lat, 100.0)),
                intake_lat.len()
            ),
        );
        add(
            &mut rows,
            "diagnostic, during the overload: `GET /health/live` p50 / p99 / max; n",
            format!(
                "{} / {} / {}; {}",
                ms(pct(&live_lat, 50.0)),
                ms(pct(&live_lat, 99.0)),
                ms(pct(&live_lat, 100.0)),
                live_lat.len()
            ),
        );
        add(
            &mut rows,
            "**accepted p99 vs unloaded p99** (target ≤ 2×)",
            format!(
                "{} vs {} = {ratio:.2}×: {} (accepted p50 {}, n = {})",
                ms(a99),
                ms(u99),
                verdict(ratio <= 2.0),
                ms(pct(&accepted, 50.0)),
                accepted.len()
            ),
        );
        add(
            &mut rows,
            "accepted p99 vs p99 at capacity",
            format!(
                "{:.2}×",
                a99.as_secs_f64() / pct(&cap_ok, 99.0).as_secs_f64().max(1e-9)
            ),
        );
        add(
            &mut rows,
            "Retry-After on 503s",
            format!(
                "{with_ra} of {}: {}",
                shed.len(),
                verdict(with_ra == shed.len())
            ),
        );
        add(
            &mut rows,
            "status codes",
            histogram(&status_histogram(out.iter())),
        );
        add(
            &mut rows,
            "5xx other than 503 / no answer",
            format!(
                "{other_5xx} / {no_answer}: {}",
                verdict(other_5xx == 0 && no_answer == 0)
            ),
        );
        add(
            &mut rows,
            "BFF RSS: idle → max sampled; VmHWM before → after load",
            format!(
                "{} → {}; {} → {}",
                mib(idle_rss),
                mib(max_rss),
                mib(hwm_before),
                mib(hwm_after)
            ),
        );
        add(
            &mut rows,
            "bytes in flight at the peak (peak outstanding × request body)",
            format!(
                "{} ({peak_outstanding} × {})",
                human_bytes(in_flight_bytes),
                human_bytes(body_len)
            ),
        );
        add(
            &mut rows,
            "peak RSS growth over idle ÷ bytes in flight",
            format!(
                "{} ÷ {} = {:.2}: {}",
                mib(growth),
                human_bytes(in_flight_bytes),
                growth as f64 * 1024.0 / in_flight_bytes.max(1) as f64,
                // Bounded: growth within 40 MiB + 2 × in flight (edge bench measured 2.0×).
                verdict(
                    (growth as f64) * 1024.0 <= 40.0 * 1048576.0 + 2.0 * in_flight_bytes as f64
                )
            ),
        );
        add(
            &mut rows,
            "heavy `imagegate_lane_in_flight` after the run",
            format!(
                "{} (after {:.1} s): {}",
                settled.map_or("?".into(), |v| format!("{v:.0}")),
                settle_time.as_secs_f64(),
                verdict(settled == Some(0.0))
            ),
        );
        add(
            &mut rows,
            "heavy `imagegate_lane_limit` at the end (adaptive: what it found)",
            format!("{limit_after:.0}"),
        );
        add(
            &mut rows,
            "BFF alive after the run",
            if alive { "yes".into() } else { "**no**".into() },
        );
        if !alive {
            notes.push(format!(
                "BFF (queue_wait {qw}) died; log:\n{}",
                bff.log_tail(20)
            ));
        }
    }
    compute.stop();

    report.line(format!("| measure | {} |", columns.join(" | ")));
    report.line(format!("|---|{}", "---|".repeat(columns.len())));
    for r in &rows {
        report.line(format!("| {} | {} |", r.label, r.values.join(" | ")));
    }
    report.line("");
    report.line(
        "BFF bytes-in-flight bound used for \"bounded\": growth ≤ 40 MiB + 2 × bytes in flight \
         (the 2× each upload costs, measured by bench-edge).",
    );
    for n in notes {
        report.line("");
        report.line(n);
    }
    report.line("");
    Ok(())
}

/// One column of the overload table: a fresh BFF with these heavy-lane settings.
struct Column {
    title: String,
    /// Names the column in progress lines and log files.
    tag: String,
    env: Vec<(String, String)>,
}

/// The columns: with `--lanes`, the heavy lane's concurrency modes side by side (`adaptive`:
/// every default; `fixed`: the default limits, pinned; `tuned`: fixed and hand-sized to
/// compute, `max_in_flight` = its workers, `max_queued` 1); otherwise one fixed
/// `max_in_flight = --cap` column per `--queue-waits` value.
fn heavy_lane_columns(args: &Args) -> Vec<Column> {
    let var = |k: &str, v: &str| (format!("IMAGEGATE_LANES__HEAVY__{k}"), v.to_string());
    if !args.lanes.is_empty() {
        let workers = if args.compute_workers > 0 {
            args.compute_workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        return args
            .lanes
            .iter()
            .map(|mode| match mode.as_str() {
                "adaptive" => Column {
                    title: "adaptive (all defaults)".into(),
                    tag: "adaptive".into(),
                    env: vec![var("CONCURRENCY", "adaptive")],
                },
                "fixed" => Column {
                    title: "fixed defaults (32 in flight, 16 queued)".into(),
                    tag: "fixed".into(),
                    env: vec![var("CONCURRENCY", "fixed")],
                },
                _ => Column {
                    title: format!("fixed, hand-tuned ({workers} in flight, 1 queued)"),
                    tag: "tuned".into(),
                    env: vec![
                        var("CONCURRENCY", "fixed"),
                        var("MAX_IN_FLIGHT", &workers.to_string()),
                        var("MAX_QUEUED", "1"),
                    ],
                },
            })
            .collect();
    }
    args.queue_waits
        .iter()
        .map(|qw| Column {
            title: format!("queue_wait = {qw}"),
            tag: qw.clone(),
            env: vec![
                var("CONCURRENCY", "fixed"),
                var("MAX_IN_FLIGHT", &args.cap.to_string()),
                var("QUEUE_WAIT", qw),
                var("MAX_QUEUED", &args.max_queued.to_string()),
            ],
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Phase: capacity (issue 12): compute restarted with half its workers, then all of them again,
// under an adaptive BFF that is never touched.

/// Compute's throughput through a fixed heavy lane of `cap` in flight (a lane that cannot be
/// the bottleneck): a 3 s warm-up, then a 5 s closed loop.
async fn calibrate(
    args: &Args,
    ports: &Ports,
    base: &[(String, String)],
    data: &Bytes,
    http: &reqwest::Client,
    tag: &str,
) -> anyhow::Result<f64> {
    let mut env = base.to_vec();
    env.extend([
        ("IMAGEGATE_LANES__HEAVY__CONCURRENCY".into(), "fixed".into()),
        (
            "IMAGEGATE_LANES__HEAVY__MAX_IN_FLIGHT".into(),
            args.cap.to_string(),
        ),
    ]);
    let ports_c = Ports {
        bff: free_port(),
        ..ports.clone()
    };
    let mut bff = spawn_bff(
        &args.bin,
        &ports_c,
        &env,
        args.work
            .join(format!("capacity-bff-calibration-{tag}.log")),
    )?;
    wait_up(
        http,
        &mut bff,
        &format!("{}/health", ports_c.bff_url()),
        Duration::from_secs(30),
    )
    .await?;
    let target = Target {
        http: http.clone(),
        url: ports_c.bff_url(),
        data: data.clone(),
        origin: Instant::now(),
    };
    let _ = closed_loop(&target, args.cap, 3.0, 100_000).await;
    let (out, secs) = closed_loop(&target, args.cap, 5.0, 100_000).await;
    bff.stop();
    Ok(out.iter().filter(|o| o.status == 200).count() as f64 / secs)
}

fn compute_env(base: &[(String, String)], workers: usize) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    env.push(("IMAGEGATE_COMPUTE__WORKERS".into(), workers.to_string()));
    env
}

async fn capacity_change(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let full = if args.compute_workers > 0 {
        args.compute_workers
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    };
    let half = (full / 2).max(1);
    let phase_secs = args.secs.max(15.0);
    let settle = 10.0;
    let data = jpeg_grain(args.width, args.width * 2 / 3, args.grain);
    let ports = Ports::new();
    let base = base_env(&ports, &args.work);
    let http = http_client(64);
    let log = args.work.join("capacity-compute.log");
    let start_compute = |workers: usize| {
        spawn_compute(&args.bin, &ports, &compute_env(&base, workers), log.clone())
    };
    let metrics_url = ports.compute_metrics_url();

    // Capacity with half the workers, then with all of them (compute left running).
    let mut compute = start_compute(half)?;
    wait_up(&http, &mut compute, &metrics_url, Duration::from_secs(30)).await?;
    eprintln!("[capacity] calibrating with {half} worker(s) ...");
    let x_half = calibrate(args, &ports, &base, &data, &http, "half").await?;
    compute.kill9();
    let mut compute = start_compute(full)?;
    wait_up(&http, &mut compute, &metrics_url, Duration::from_secs(30)).await?;
    eprintln!("[capacity] calibrating with {full} workers ...");
    let x_full = calibrate(args, &ports, &base, &data, &http, "full").await?;

    // The BFF under test: every default (the heavy lane adaptive), never restarted.
    let ports_b = Ports {
        bff: free_port(),
        ..ports.clone()
    };
    let mut bff = spawn_bff(
        &args.bin,
        &ports_b,
        &base,
        args.work.join("capacity-bff.log"),
    )?;
    wait_up(
        &http,
        &mut bff,
        &format!("{}/health", ports_b.bff_url()),
        Duration::from_secs(30),
    )
    .await?;
    let target = Target {
        http: http.clone(),
        url: ports_b.bff_url(),
        data: data.clone(),
        origin: Instant::now(),
    };
    for _ in 0..20 {
        let _ = target.compress(target.origin.elapsed().as_secs_f64()).await;
    }
    let mut unloaded = Vec::new();
    for _ in 0..200 {
        unloaded.push(target.compress(target.origin.elapsed().as_secs_f64()).await);
    }
    let unloaded = sorted_latencies(unloaded.iter().filter(|o| o.status == 200));
    let u99 = pct(&unloaded, 99.0);
    let mut idle_health = Vec::new();
    for _ in 0..200 {
        idle_health.push(target.health(target.origin.elapsed().as_secs_f64()).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let idle_health = sorted_latencies(idle_health.iter().filter(|o| o.status == 200));
    let h99_idle = pct(&idle_health, 99.0);

    // The load: 4 × full capacity, open loop, for three phases; the limit sampled every 250 ms
    // and /health probed every 20 ms all along.
    let rate = args.factor * x_full;
    let total = 3.0 * phase_secs;
    eprintln!(
        "[capacity] {rate:.0} req/s for {total} s: {full} workers, then {half}, then {full} ..."
    );
    let load_start = target.origin.elapsed().as_secs_f64();
    let load = {
        let t = target.clone();
        tokio::spawn(async move { open_loop(&t, rate, total, (rate * total) as usize + 1).await })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let limits = {
        let (http, url, stop, origin) = (
            http.clone(),
            format!("{}/metrics", ports_b.bff_url()),
            stop.clone(),
            target.origin,
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) && seen.len() < 10_000 {
                if let Some(text) = scrape(&http, &url).await {
                    if let Some(v) = metric(&text, "imagegate_lane_limit{lane=\"heavy\"}") {
                        seen.push((origin.elapsed().as_secs_f64(), v));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };
    let probes = {
        let (t, stop) = (target.clone(), stop.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) && out.len() < 100_000 {
                out.push(t.health(t.origin.elapsed().as_secs_f64()).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        })
    };
    let at = |secs: f64| {
        tokio::time::sleep_until(
            (target.origin + Duration::from_secs_f64(load_start + secs)).into(),
        )
    };
    at(phase_secs).await;
    compute.kill9();
    let t_half = target.origin.elapsed().as_secs_f64() - load_start;
    let mut compute = start_compute(half)?;
    at(2.0 * phase_secs).await;
    compute.kill9();
    let t_full = target.origin.elapsed().as_secs_f64() - load_start;
    let mut compute = start_compute(full)?;
    let (out, skipped, _) = load.await?;
    stop.store(true, Ordering::Relaxed);
    let limits = limits.await?;
    let probes = probes.await?;
    let (settled, _) =
        in_flight_settles(&http, &ports_b.bff_url(), "heavy", Duration::from_secs(10)).await;
    bff.stop();
    compute.stop();

    report.line(format!(
        "### Capacity change: compute restarted with {half} of its {full} workers, then all again, under one untouched adaptive BFF"
    ));
    report.line("");
    report.line(format!(
        "Request: `POST /v1/images/compress`, a {}×{} photo-like JPEG ({}). Capacity measured \
         before the load through a fixed lane of {} in flight: **{x_full:.1} req/s** with {full} \
         workers, **{x_half:.1} req/s** with {half}. Load: open loop at {}× the full capacity \
         ({rate:.0} req/s) for {total} s; compute SIGKILLed and restarted at {t_half:.1} s \
         ({half} workers) and at {t_full:.1} s ({full}). The BFF has every default. Unloaded \
         (c=1): p99 {}; idle `/health` p99 {}. Judged per phase from {settle} s after its \
         change to its end (the first phase from {settle} s); sends skipped at the client's \
         cap: {skipped}.",
        args.width,
        args.width * 2 / 3,
        human_bytes(data.len()),
        args.cap,
        args.factor,
        ms(u99),
        ms(h99_idle),
    ));
    report.line("");
    report.line(format!(
        "| measure | {full} workers (0–{phase_secs} s) | {half} worker(s) ({phase_secs}–{} s) | {full} workers again ({}–{total} s) |",
        2.0 * phase_secs,
        2.0 * phase_secs
    ));
    report.line("|---|---|---|---|");
    let phases = [
        (0.0, phase_secs, x_full),
        (phase_secs, 2.0 * phase_secs, x_half),
        (2.0 * phase_secs, total, x_full),
    ];
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |label: &str, v: String| match rows.iter_mut().find(|(l, _)| l == label) {
        Some((_, vs)) => vs.push(v),
        None => rows.push((label.to_string(), vec![v])),
    };
    for (from, to, x) in phases {
        let (j0, j1) = (load_start + from + settle, load_start + to);
        let judged: Vec<&Outcome> = out.iter().filter(|o| o.sent >= j0 && o.sent < j1).collect();
        let accepted = sorted_latencies(judged.iter().copied().filter(|o| o.status == 200));
        let shed = sorted_latencies(judged.iter().copied().filter(|o| o.status == 503));
        let other = judged
            .iter()
            .filter(|o| o.status != 200 && o.status != 503)
            .count();
        let with_ra = judged
            .iter()
            .filter(|o| o.status == 503 && o.retry_after)
            .count();
        let goodput = accepted.len() as f64 / (j1 - j0).max(1e-9);
        let a99 = pct(&accepted, 99.0);
        let health: Vec<&Outcome> = probes
            .iter()
            .filter(|o| o.sent >= j0 && o.sent < j1)
            .collect();
        let health_ok = sorted_latencies(health.iter().copied().filter(|o| o.status == 200));
        let h99 = pct(&health_ok, 99.0);
        let in_phase: Vec<f64> = limits
            .iter()
            .filter(|(t, _)| *t >= j0 && *t < j1)
            .map(|(_, l)| *l)
            .collect();
        let (lo, hi) = in_phase
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
        // The limit the phase settled at (median of the judged window), and how long after
        // the change the limit first came within ±25 % of it.
        let mut sorted_limits = in_phase.clone();
        sorted_limits.sort_by(f64::total_cmp);
        let settled_at = sorted_limits
            .get(sorted_limits.len() / 2)
            .copied()
            .unwrap_or(0.0);
        let entered = limits
            .iter()
            .filter(|(t, _)| *t >= load_start + from && *t < j1)
            .find(|(_, l)| (*l - settled_at).abs() <= 0.25 * settled_at)
            .map(|(t, _)| t - load_start - from);
        let ratio = a99.as_secs_f64() / u99.as_secs_f64().max(1e-9);
        add(
            "goodput (200/s) ÷ this phase's capacity (target ≥ 0.95)",
            format!(
                "{goodput:.1} req/s ÷ {x:.1} = {:.2}: {}",
                goodput / x.max(1e-9),
                verdict(goodput >= 0.95 * x)
            ),
        );
        add(
            "accepted p99 ÷ unloaded p99 (target ≤ 1.5×)",
            format!(
                "{} ÷ {} = {ratio:.2}×: {}",
                ms(a99),
                ms(u99),
                verdict(ratio <= 1.5)
            ),
        );
        add(
            "time to 503 p99 (target ≤ 10 ms); with Retry-After",
            format!(
                "{}: {}; {with_ra} of {}",
                ms(pct(&shed, 99.0)),
                verdict(shed.is_empty() || pct(&shed, 99.0) <= Duration::from_millis(10)),
                shed.len()
            ),
        );
        add(
            "answers other than 200 / 503 (target 0)",
            format!("{other}: {}", verdict(other == 0)),
        );
        add(
            "heavy limit in the judged window: min–max, median; within ±25 % of the median after",
            format!(
                "{lo:.0}–{hi:.0}, {settled_at:.0}; {}",
                entered.map_or("?".into(), |t| format!("{t:.1} s"))
            ),
        );
        add(
            "`/health` p99 ÷ idle p99 (target ≤ 2×); failed probes",
            format!(
                "{} ÷ {} = {:.2}×: {}; {}",
                ms(h99),
                ms(h99_idle),
                h99.as_secs_f64() / h99_idle.as_secs_f64().max(1e-9),
                verdict(h99 <= h99_idle * 2),
                health.len() - health_ok.len()
            ),
        );
    }
    for (label, values) in &rows {
        report.line(format!("| {label} | {} |", values.join(" | ")));
    }
    report.line("");
    report.line(format!(
        "Heavy in flight after the run: {} ({}). The limit over the whole run (s, limit), every 2 s: {}",
        settled.map_or("?".into(), |v| format!("{v:.0}")),
        verdict(settled == Some(0.0)),
        limits
            .iter()
            .step_by(8)
            .map(|(t, l)| format!("{:.0}:{l:.0}", t - load_start))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    report.line("");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Phase: failover

async fn failover(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let data = jpeg_grain(args.width, args.width * 2 / 3, args.grain);
    let ports = Ports::new();
    let env = base_env(&ports, &args.work);
    let http = http_client(64);
    let compute_log = args.work.join("failover-compute.log");
    let mut compute = spawn_compute(&args.bin, &ports, &env, compute_log.clone())?;
    wait_up(
        &http,
        &mut compute,
        &ports.compute_metrics_url(),
        Duration::from_secs(30),
    )
    .await?;
    let mut bff = spawn_bff(&args.bin, &ports, &env, args.work.join("failover-bff.log"))?;
    wait_up(
        &http,
        &mut bff,
        &format!("{}/health", ports.bff_url()),
        Duration::from_secs(30),
    )
    .await?;
    let target = Target {
        http: http.clone(),
        url: ports.bff_url(),
        data: data.clone(),
        origin: Instant::now(),
    };
    for _ in 0..20 {
        let _ = target.compress(0.0).await;
    }
    let origin = Instant::now();
    let target = Target { origin, ..target };
    let kill_at = 4.0;
    let down = args.down_secs;
    // Heavy circuit: open_for 5 s by default; give it time to probe and close after the restart.
    let total = kill_at + down + 12.0;

    // /health poller: one request at a time, 10 ms apart.
    let poller = HealthPoller::start(&target);
    // Heavy load.
    let load = {
        let t = target.clone();
        let rate = args.rate;
        tokio::spawn(async move { open_loop(&t, rate, total, (rate * total) as usize + 1).await })
    };

    // Kill, then restart on the same port.
    tokio::time::sleep_until((origin + Duration::from_secs_f64(kill_at)).into()).await;
    let t_kill = origin.elapsed().as_secs_f64();
    compute.kill9();
    eprintln!("compute SIGKILLed at {t_kill:.3} s; down for {down} s");
    tokio::time::sleep(Duration::from_secs_f64(down)).await;
    let t_restart = origin.elapsed().as_secs_f64();
    let mut compute2 = spawn_compute(&args.bin, &ports, &env, compute_log)?;
    // When compute's gRPC port accepts connections again (5 ms polls, at most 10 s).
    let mut t_port = None;
    for _ in 0..2000 {
        if tokio::net::TcpStream::connect(("127.0.0.1", ports.grpc))
            .await
            .is_ok()
        {
            t_port = Some(origin.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (load_out, skipped, _) = load.await.expect("load task");
    let health = poller.finish().await;
    let (settled, settle_time) =
        in_flight_settles(&http, &ports.bff_url(), "heavy", Duration::from_secs(10)).await;
    let live = http
        .get(format!("{}/health/live", ports.bff_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let alive = bff.alive();
    let metrics_text = scrape(&http, &format!("{}/metrics", ports.bff_url()))
        .await
        .unwrap_or_default();
    bff.stop();
    compute2.stop();

    // Health timings.
    let first_503 = health
        .iter()
        .filter(|o| o.done > t_kill && o.status == 503)
        .map(|o| o.done)
        .fold(f64::INFINITY, f64::min);
    let first_200 = health
        .iter()
        .filter(|o| o.sent >= t_restart && o.status == 200)
        .map(|o| o.done)
        .fold(f64::INFINITY, f64::min);
    let health_503_kinds = status_histogram(
        health
            .iter()
            .filter(|o| o.done > t_kill && o.sent < first_200 && o.status != 200),
    );
    let first_heavy_200 = load_out
        .iter()
        .filter(|o| o.sent >= t_restart && o.status == 200)
        .map(|o| o.done)
        .fold(f64::INFINITY, f64::min);

    // Heavy calls refused by the open circuit.
    let circuit = sorted_latencies(
        load_out
            .iter()
            .filter(|o| o.status == 503 && o.kind == "circuit-open"),
    );
    // Attribution of failures.
    let mut attributed: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for o in load_out.iter().filter(|o| o.status != 200) {
        let when = if o.sent < t_kill {
            if o.done >= t_kill {
                "a. in flight at the kill"
            } else {
                "0. before the kill"
            }
        } else if o.sent < t_restart {
            "b. sent while compute was down"
        } else {
            "c. sent after the restart"
        };
        let key = match o.status {
            0 => format!("no answer ({})", o.kind),
            s => format!("{s} {}", o.kind),
        };
        *attributed
            .entry(when.to_string())
            .or_default()
            .entry(key)
            .or_default() += 1;
    }
    let total_failed: usize = load_out.iter().filter(|o| o.status != 200).count();
    let in_flight_at_kill = load_out
        .iter()
        .filter(|o| o.sent < t_kill && o.done >= t_kill)
        .count();
    let other_5xx = load_out
        .iter()
        .filter(|o| o.status >= 500 && o.status != 503)
        .count();
    let circuit_opened = metric_sum(
        &metrics_text,
        "imagegate_lane_rejected_total",
        &["lane=\"heavy\"", "reason=\"circuit_open\""],
    );

    let secs = |v: f64| {
        if v.is_finite() {
            format!("{:.0} ms", v * 1e3)
        } else {
            "never".into()
        }
    };
    report.line(format!(
        "### Failover: compute SIGKILLed under load, restarted on the same port {down} s later"
    ));
    report.line("");
    report.line(format!(
        "Default config (heavy: max_in_flight 32, circuit opens after 5 consecutive failures \
         for 5 s; realtime: after 3, for 1 s; `bff.health_timeout` 1 s). Load: an open loop of \
         `POST /v1/images/compress` ({}×{} JPEG, {}) at {} req/s for {total:.0} s, plus \
         `GET /health` one at a time every 10 ms. Kill at {t_kill:.3} s, restart at \
         {t_restart:.3} s (phase clock).",
        args.width,
        args.width * 2 / 3,
        human_bytes(data.len()),
        args.rate
    ));
    report.line("");
    report.line("| measure | value | target | |");
    report.line("|---|---|---|---|");
    report.line(format!(
        "| kill → first `/health` 503 | {} | ≤ 1 s | {} |",
        secs(first_503 - t_kill),
        verdict(first_503 - t_kill <= 1.0)
    ));
    report.line(format!(
        "| restart → compute's gRPC port accepts | {} | | |",
        t_port.map_or("never".into(), |t| secs(t - t_restart))
    ));
    report.line(format!(
        "| restart → first `/health` 200 | {} | ≤ 2 s | {} |",
        secs(first_200 - t_restart),
        verdict(first_200 - t_restart <= 2.0)
    ));
    report.line(format!(
        "| restart → first heavy (compress) 200 | {} | | |",
        secs(first_heavy_200 - t_restart)
    ));
    report.line(format!(
        "| `/health` answers between the kill and recovery | {} | | |",
        histogram(&health_503_kinds)
    ));
    report.line(format!(
        "| heavy calls refused by the open circuit: n; p50 / p99 / max | {}; {} / {} / {} | < 50 ms | {} |",
        circuit.len(),
        ms(pct(&circuit, 50.0)),
        ms(pct(&circuit, 99.0)),
        ms(pct(&circuit, 100.0)),
        if circuit.is_empty() {
            "no circuit-open answers"
        } else {
            verdict(pct(&circuit, 100.0) < Duration::from_millis(50))
        }
    ));
    report.line(format!(
        "| heavy `circuit_open` rejections (lane metric) | {circuit_opened:.0} | | |"
    ));
    report.line(format!(
        "| heavy requests: sent (skipped) / failed / in flight at the kill | {} ({skipped}) / {total_failed} / {in_flight_at_kill} | | |",
        load_out.len()
    ));
    for (when, h) in &attributed {
        report.line(format!("| failed, {when} | {} | | |", histogram(h)));
    }
    report.line(format!("| 5xx other than 503 | {other_5xx} | | |"));
    report.line(format!(
        "| BFF alive at the end; `/health/live` | {}; {live} | never crashes | {} |",
        if alive { "yes" } else { "**no**" },
        verdict(alive && live == 200)
    ));
    report.line(format!(
        "| heavy `imagegate_lane_in_flight` after the run | {} (after {:.1} s) | 0 | {} |",
        settled.map_or("?".into(), |v| format!("{v:.0}")),
        settle_time.as_secs_f64(),
        verdict(settled == Some(0.0))
    ));
    report.line("");
    // The /health timeline around the two events, for the doc.
    report.line(
        "`/health` timeline (phase clock, s: status, latency), around the kill and the restart:",
    );
    report.line("");
    report.line("```text");
    for o in health.iter().filter(|o| {
        (o.done > t_kill - 0.05 && o.sent < t_kill + 0.3)
            || (o.done > t_restart - 0.05 && o.sent < first_200 + 0.05)
    }) {
        report.line(format!(
            "sent {:7.3}  done {:7.3}  {:3} {:>7}  {}",
            o.sent,
            o.done,
            o.status,
            ms(o.latency()),
            o.kind
        ));
    }
    report.line("```");
    report.line("");
    Ok(())
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Two compute replicas, one SIGSTOPped under load (its kernel still accepts connections,
/// nothing answers), then SIGCONTed: how `/health` and image calls fare, what the lane metrics
/// show, and when the thawed replica gets work again.
async fn frozen_replica(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let data = jpeg_grain(args.width, args.width * 2 / 3, args.grain);
    let (ports_a, ports_b) = (Ports::new(), Ports::new());
    let mut env = base_env(&ports_a, &args.work);
    let list = format!(
        "http://127.0.0.1:{},http://127.0.0.1:{}",
        ports_a.grpc, ports_b.grpc
    );
    for (k, v) in env.iter_mut() {
        if k == "GRPC_COMPUTE_URL" {
            *v = list.clone();
        }
    }
    let http = http_client(64);
    let mut a = spawn_compute(
        &args.bin,
        &ports_a,
        &env,
        args.work.join("frozen-compute-a.log"),
    )?;
    let mut b = spawn_compute(
        &args.bin,
        &ports_b,
        &env,
        args.work.join("frozen-compute-b.log"),
    )?;
    wait_up(
        &http,
        &mut a,
        &ports_a.compute_metrics_url(),
        Duration::from_secs(30),
    )
    .await?;
    wait_up(
        &http,
        &mut b,
        &ports_b.compute_metrics_url(),
        Duration::from_secs(30),
    )
    .await?;
    let mut bff = spawn_bff(&args.bin, &ports_a, &env, args.work.join("frozen-bff.log"))?;
    wait_up(
        &http,
        &mut bff,
        &format!("{}/health", ports_a.bff_url()),
        Duration::from_secs(30),
    )
    .await?;
    let target = Target {
        http: http.clone(),
        url: ports_a.bff_url(),
        data: data.clone(),
        origin: Instant::now(),
    };
    for _ in 0..20 {
        let _ = target.compress(0.0).await;
    }
    let origin = Instant::now();
    let target = Target { origin, ..target };
    let freeze_at = 4.0;
    let frozen_for = args.down_secs;
    let thaw_watch = 30.0;
    let total = freeze_at + frozen_for + thaw_watch;

    // /health one at a time, 10 ms apart; heavy load as an open loop.
    let poller = HealthPoller::start(&target);
    let load = {
        let t = target.clone();
        let rate = args.rate;
        tokio::spawn(async move { open_loop(&t, rate, total, (rate * total) as usize + 1).await })
    };
    let operations = async |ports: &Ports| {
        scrape(&http, &ports.compute_metrics_url())
            .await
            .map(|t| metric_sum(&t, "imagegate_compute_operations_total", &["result=\"ok\""]))
    };

    tokio::time::sleep_until((origin + Duration::from_secs_f64(freeze_at)).into()).await;
    let t_freeze = origin.elapsed().as_secs_f64();
    signal(b.pid(), "STOP")?;
    eprintln!("replica B SIGSTOPped at {t_freeze:.3} s for {frozen_for} s");
    tokio::time::sleep(Duration::from_secs_f64(frozen_for)).await;
    // What the dashboard shows at the end of the hang.
    let during = scrape(&http, &format!("{}/metrics", ports_a.bff_url()))
        .await
        .unwrap_or_default();
    let t_thaw = origin.elapsed().as_secs_f64();
    signal(b.pid(), "CONT")?;
    let ops_at_thaw = operations(&ports_b).await;
    // When B completes image work again (its own counter; 250 ms polls).
    let mut back_at = None;
    while origin.elapsed().as_secs_f64() < t_thaw + thaw_watch {
        if let (Some(now), Some(then)) = (operations(&ports_b).await, ops_at_thaw) {
            if now > then {
                back_at = Some(origin.elapsed().as_secs_f64());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (load_out, skipped, _) = load.await.expect("load task");
    let health = poller.finish().await;
    let (settled, settle_time) =
        in_flight_settles(&http, &ports_a.bff_url(), "heavy", Duration::from_secs(10)).await;
    let alive = bff.alive();
    bff.stop();
    a.stop();
    b.stop();

    // /health in windows after the freeze.
    let windows = [(0.0, 1.0), (1.0, 5.0), (5.0, 15.0), (15.0, frozen_for)];
    let share_ok = |from: f64, to: f64| {
        let w: Vec<&Outcome> = health
            .iter()
            .filter(|o| o.sent >= t_freeze + from && o.sent < t_freeze + to)
            .collect();
        let ok = w.iter().filter(|o| o.status == 200).count();
        (ok, w.len())
    };
    // Image calls by when they were sent.
    let heavy = |from: f64, to: f64| -> Vec<&Outcome> {
        load_out
            .iter()
            .filter(|o| o.sent >= from && o.sent < to)
            .collect()
    };
    let describe = |calls: &[&Outcome]| {
        let ok: Vec<Duration> = {
            let mut v: Vec<Duration> = calls
                .iter()
                .filter(|o| o.status == 200)
                .map(|o| o.latency())
                .collect();
            v.sort();
            v
        };
        let codes = status_histogram(calls.iter().copied());
        (ok, codes)
    };
    let realtime_deadlines = metric_sum(
        &during,
        "imagegate_lane_requests_total",
        &["lane=\"realtime\"", "code=\"DEADLINE_EXCEEDED\""],
    );
    let realtime_rejected = metric_sum(
        &during,
        "imagegate_lane_rejected_total",
        &["lane=\"realtime\""],
    );
    let ejected = |lane: &str| {
        metric(
            &during,
            &format!("imagegate_lane_endpoints{{lane=\"{lane}\",state=\"ejected\"}}"),
        )
        .map_or("?".into(), |v| format!("{v:.0}"))
    };

    report.line(format!(
        "### A frozen replica: one of two computes SIGSTOPped for {frozen_for:.0} s under load, then SIGCONTed"
    ));
    report.line("");
    report.line(format!(
        "Default config, `compute_url` = both replicas. Load: an open loop of `POST /v1/images/compress` \
         ({}×{} JPEG, {}) at {} req/s, plus `GET /health` one at a time every 10 ms. Freeze at \
         {t_freeze:.3} s, thaw at {t_thaw:.3} s (phase clock).",
        args.width,
        args.width * 2 / 3,
        human_bytes(data.len()),
        args.rate
    ));
    report.line("");
    report.line("| measure | value | target | |");
    report.line("|---|---|---|---|");
    for (from, to) in windows {
        let (ok, n) = share_ok(from, to);
        let share = ok as f64 / n.max(1) as f64;
        let judged = from >= 15.0;
        report.line(format!(
            "| `/health` 200, sent {from:.0}–{to:.0} s after the freeze | {ok} of {n} ({:.1} %) | {} | {} |",
            share * 100.0,
            if judged { "≥ 95 % from 15 s on" } else { "" },
            if judged { verdict(n > 0 && share >= 0.95) } else { "" }
        ));
    }
    let (early_ok, early_codes) = describe(&heavy(t_freeze, t_freeze + 5.0));
    report.line(format!(
        "| image calls sent 0–5 s after the freeze: answers; 200 latency p50 / max | {}; {} / {} | | |",
        histogram(&early_codes),
        ms(pct(&early_ok, 50.0)),
        ms(pct(&early_ok, 100.0))
    ));
    let late = heavy(t_freeze + 5.0, t_thaw);
    let (late_ok, late_codes) = describe(&late);
    let late_max = pct(&late_ok, 100.0);
    report.line(format!(
        "| image calls sent 5 s after the freeze until the thaw: answers; 200 latency p50 / p99 / max | {}; {} / {} / {} | all 200, each < 5 s | {} |",
        histogram(&late_codes),
        ms(pct(&late_ok, 50.0)),
        ms(pct(&late_ok, 99.0)),
        ms(late_max),
        verdict(!late.is_empty() && late_ok.len() == late.len() && late_max < Duration::from_secs(5))
    ));
    report.line(format!(
        "| at the thaw: realtime `DEADLINE_EXCEEDED` calls / realtime rejections (lane metrics) | {realtime_deadlines:.0} / {realtime_rejected:.0} | the hang shows | {} |",
        verdict(realtime_deadlines + realtime_rejected > 0.0)
    ));
    report.line(format!(
        "| at the thaw: endpoints ejected, realtime / heavy | {} / {} | | |",
        ejected("realtime"),
        ejected("heavy")
    ));
    report.line(format!(
        "| thaw → the replica completes image work again | {} | ≤ 30 s | {} |",
        back_at.map_or("never (in 30 s)".into(), |t| format!("{:.1} s", t - t_thaw)),
        verdict(back_at.is_some_and(|t| t - t_thaw <= 30.0))
    ));
    report.line(format!(
        "| image calls: sent (skipped); 5xx other than 503 | {} ({skipped}); {} | | |",
        load_out.len(),
        load_out
            .iter()
            .filter(|o| o.status >= 500 && o.status != 503)
            .count()
    ));
    report.line(format!(
        "| BFF alive at the end; heavy in flight after the run | {}; {} (after {:.1} s) | alive; 0 | {} |",
        if alive { "yes" } else { "**no**" },
        settled.map_or("?".into(), |v| format!("{v:.0}")),
        settle_time.as_secs_f64(),
        verdict(alive && settled == Some(0.0))
    ));
    report.line("");
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&args.work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = Report::new(args.out.clone());
    let r = rt.block_on(async {
        match args.phase.as_str() {
            "overload" => overload(&args, &mut report).await,
            "capacity" => capacity_change(&args, &mut report).await,
            "frozen" => frozen_replica(&args, &mut report).await,
            _ => failover(&args, &mut report).await,
        }
    });
    report.flush();
    r
}
