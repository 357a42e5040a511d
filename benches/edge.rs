//! Edge benchmark: what the BFF adds on top of calling compute directly.
//!
//! Run by `make bench-edge` (scripts/bench-edge.sh), which builds this binary and the server in
//! release mode, starts `imagegate compute` and `imagegate bff` as separate processes on free
//! loopback ports, and calls this binary with their addresses and the BFF's PID:
//!
//! ```text
//! edge --phase speed  --bff http://127.0.0.1:P --compute http://127.0.0.1:Q [--out FILE]
//! edge --phase memory --bff http://127.0.0.1:P --bff-pid PID             [--out FILE]
//! ```
//!
//! - `speed`: for a ~1 KB and a ~2 MB photo-like JPEG, compressed to JPEG Q80 both ways —
//!   via the BFF (`POST /v1/images/compress`, multipart over HTTP/1.1) and via a tonic client
//!   straight to compute (`compute.ImageService/Compress`). Latency at concurrency 1 with the
//!   two sides alternating request by request (p50, p99, and BFF − direct), then throughput at
//!   concurrency 8 in alternating time slices (requests/s each, and BFF / direct). A third,
//!   diagnostic request type ("intake only": the same upload with `quality=0`, which the BFF
//!   reads completely and then answers 400 without calling compute) shows how much of the
//!   added time is HTTP + multipart intake.
//! - `memory`: 64 concurrent ~8 MiB uploads through the BFF; the BFF's peak RSS (VmHWM from
//!   `/proc/PID/status`, before and after) against 40 MiB + 1.1 × bytes in flight, with the
//!   status codes of the 64 answers. With `--budget-mib M` the BFF runs with
//!   `bff.max_buffered_bytes` = M MiB, below the load: some uploads are shed with 503, and the
//!   peak RSS is judged against the baseline + M (the budget must bound what is resident).
//!
//! Every loop is bounded by a count and a time limit; every request by a timeout. Without
//! arguments (e.g. a plain `cargo bench`) it only says how to run it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use imagegate::proto::image_service_client::ImageServiceClient;
use imagegate::proto::{CompressRequest, ImageFormat};
use tonic::transport::{Channel, Endpoint};

mod support;
use support::{histogram, human_bytes, ms, pct, photo, verdict};

const MAX_MESSAGE: usize = 64 << 20;
const QUALITY: i32 = 80;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Speed,
    Memory,
}

struct Args {
    phase: Phase,
    bff: String,
    compute: Option<String>,
    bff_pid: Option<u32>,
    compute_pid: Option<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    clk_tck: f64,
    out: Option<std::path::PathBuf>,
    /// Throughput: seconds per side per payload.
    secs: f64,
    /// Latency: requests per side for the small and the large payload.
    n_small: usize,
    n_large: usize,
    /// Memory: concurrent uploads and their size.
    uploads: usize,
    upload_mib: f64,
    /// Memory: the BFF's `bff.max_buffered_bytes` in MiB when it is set below the load (the
    /// phase then proves the budget bounds the RSS; 503 `bff-busy` answers are expected).
    budget_mib: Option<f64>,
    /// Speed: which payloads to run (`small`, `large` or both), e.g. to profile one alone.
    payloads: Vec<String>,
}

const USAGE: &str = "usage: edge --phase speed|memory --bff URL [--compute URL] [--bff-pid PID] \
[--compute-pid PID] [--clk-tck N] [--out FILE] [--secs S] [--n-small N] [--n-large N] [--uploads N] [--upload-mib M] \
[--budget-mib M] [--payloads small,large]\n\
Normally run by `make bench-edge` (scripts/bench-edge.sh), which starts the servers.";

fn parse_args() -> Result<Option<Args>, String> {
    let mut raw: BTreeMap<String, String> = BTreeMap::new();
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
    let Some(bff) = raw.remove("bff") else {
        return Ok(None);
    };
    let budget_given = raw.contains_key("budget-mib");
    let mut num = |name: &str, default: f64| -> Result<f64, String> {
        raw.remove(name).map_or(Ok(default), |v| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| format!("--{name} must be a positive number, got {v:?}"))
        })
    };
    let secs = num("secs", 10.0)?;
    let n_small = num("n-small", 200.0)? as usize;
    let n_large = num("n-large", 50.0)? as usize;
    let uploads = num("uploads", 64.0)? as usize;
    let upload_mib = num("upload-mib", 8.0)?;
    let budget_mib = if budget_given {
        Some(num("budget-mib", 1.0)?)
    } else {
        None
    };
    let phase = match raw.remove("phase").as_deref() {
        Some("speed") => Phase::Speed,
        Some("memory") => Phase::Memory,
        other => return Err(format!("--phase must be speed or memory, got {other:?}")),
    };
    let compute = raw.remove("compute");
    let payloads: Vec<String> = raw
        .remove("payloads")
        .unwrap_or_else(|| "small,large".into())
        .split(',')
        .map(str::to_string)
        .collect();
    if let Some(bad) = payloads
        .iter()
        .find(|p| !["small", "large"].contains(&p.as_str()))
    {
        return Err(format!("--payloads takes small and/or large, got {bad:?}"));
    }
    let bff_pid = raw
        .remove("bff-pid")
        .map(|v| v.parse::<u32>().map_err(|_| format!("bad --bff-pid {v:?}")))
        .transpose()?;
    let compute_pid = raw
        .remove("compute-pid")
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| format!("bad --compute-pid {v:?}"))
        })
        .transpose()?;
    let clk_tck = raw.remove("clk-tck").map_or(Ok(100.0), |v| {
        v.parse::<f64>().map_err(|_| format!("bad --clk-tck {v:?}"))
    })?;
    let out = raw.remove("out").map(Into::into);
    if let Some(unknown) = raw.keys().next() {
        return Err(format!("unknown flag --{unknown}"));
    }
    if phase == Phase::Speed && compute.is_none() {
        return Err("--phase speed needs --compute".into());
    }
    if phase == Phase::Memory && bff_pid.is_none() {
        return Err("--phase memory needs --bff-pid".into());
    }
    Ok(Some(Args {
        phase,
        bff: bff.trim_end_matches('/').to_string(),
        compute,
        bff_pid,
        compute_pid,
        clk_tck,
        out,
        secs,
        n_small,
        n_large,
        uploads,
        upload_mib,
        budget_mib,
        payloads,
    }))
}

// ---------------------------------------------------------------------------------------------
// Payloads (the photo generator is benches/support's; a bench must not import tests)

fn jpeg(width: u32, height: u32, grain: u64, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&photo(width, height, grain))
        .expect("encode JPEG");
    out
}

/// A JPEG (3:2) whose size is near `target` bytes.
#[derive(Clone)]
struct Payload {
    label: String,
    data: Bytes,
    width: u32,
    height: u32,
}

fn payload(label: &str, target: usize, grain: u64, quality: u8) -> Payload {
    // Bytes per pixel from a sample, then at most three corrections.
    let (mut w, mut h) = (48u32, 32u32);
    let mut best: Option<(usize, Vec<u8>, u32, u32)> = None;
    for _ in 0..4 {
        let data = jpeg(w, h, grain, quality);
        let miss = data.len().abs_diff(target);
        let ratio = target as f64 / data.len() as f64;
        if best.as_ref().is_none_or(|b| miss < b.0) {
            best = Some((miss, data, w, h));
        }
        if (0.97..=1.03).contains(&ratio) {
            break;
        }
        // Headers are a fixed cost: damp the correction for tiny images.
        let scale = ratio.sqrt();
        w = ((w as f64 * scale).round() as u32).max(8);
        h = ((w as f64 * 2.0 / 3.0).round() as u32).max(8);
    }
    let (_, data, width, height) = best.expect("at least one attempt");
    Payload {
        label: format!(
            "{label} JPEG ({width}×{height}, {})",
            human_bytes(data.len())
        ),
        data: data.into(),
        width,
        height,
    }
}

// ---------------------------------------------------------------------------------------------
// The two sides

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    bff: String,
    grpc: Option<ImageServiceClient<Channel>>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Bff,
    Direct,
    /// Diagnostic: the BFF reads the whole form, then refuses `quality=0` (400) before any
    /// gRPC call: HTTP + multipart intake alone.
    Intake,
}

fn form(data: &Bytes, quality: &str) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::stream_with_length(data.clone(), data.len() as u64)
        .file_name("photo.jpg")
        .mime_str("image/jpeg")
        .expect("valid mime");
    reqwest::multipart::Form::new()
        .text("quality", quality.to_string())
        .text("format", "jpeg")
        .part("file", part)
}

impl Client {
    async fn new(bff: &str, compute: Option<&str>, pool: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let grpc = match compute {
            // The direct side gets what a sensible client would use: one channel with the
            // heavy lane's windows and message limits.
            Some(url) => Some(
                ImageServiceClient::new(
                    Endpoint::from_shared(url.to_string())?
                        .tcp_nodelay(true)
                        .initial_stream_window_size(2 << 20)
                        .initial_connection_window_size(8 << 20)
                        .timeout(REQUEST_TIMEOUT)
                        .connect()
                        .await?,
                )
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            ),
            None => None,
        };
        Ok(Client {
            http,
            bff: bff.to_string(),
            grpc,
        })
    }

    /// One request; `Ok` only for the answer that side should give (200 with a JPEG, an OK
    /// gRPC response with image data, or 400 for the intake probe), with the time compute
    /// reports for the operation itself (`elapsed_ms`, `X-Elapsed-Ms`; 0 for the probe).
    /// `Err` carries the status.
    async fn call(&self, side: Side, data: &Bytes) -> Result<Duration, String> {
        match side {
            Side::Bff | Side::Intake => {
                let quality = if side == Side::Bff { "80" } else { "0" };
                let resp = self
                    .http
                    .post(format!("{}/v1/images/compress", self.bff))
                    .multipart(form(data, quality))
                    .send()
                    .await
                    .map_err(|e| format!("http error: {e}"))?;
                let status = resp.status();
                let jpeg = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes() == b"image/jpeg");
                let op_ms = resp
                    .headers()
                    .get("x-elapsed-ms")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body = resp.bytes().await.map_err(|e| format!("http body: {e}"))?;
                match (side, op_ms) {
                    (Side::Bff, Some(op)) if status == 200 && jpeg && !body.is_empty() => {
                        Ok(Duration::from_millis(op))
                    }
                    (Side::Intake, _) if status == 400 => Ok(Duration::ZERO),
                    _ => Err(format!("HTTP {}", status.as_u16())),
                }
            }
            Side::Direct => {
                let mut grpc = self.grpc.clone().expect("direct side needs --compute");
                let resp = grpc
                    .compress(CompressRequest {
                        image_data: data.clone(),
                        quality: QUALITY,
                        output_format: ImageFormat::Jpeg as i32,
                    })
                    .await
                    .map_err(|s| format!("gRPC {:?}", s.code()))?
                    .into_inner();
                if resp.image_data.is_empty() || resp.output_format != ImageFormat::Jpeg as i32 {
                    return Err("gRPC OK without a JPEG".into());
                }
                Ok(Duration::from_millis(resp.elapsed_ms.max(0) as u64))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

fn delta_ms(a: Duration, b: Duration) -> String {
    format!("{:+.2} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Collects the markdown the run prints, and appends it to `--out` at the end.
struct Report(String);

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }
}

// ---------------------------------------------------------------------------------------------
// Speed: latency at concurrency 1, throughput at concurrency 8

struct Latency {
    samples: BTreeMap<Side, Vec<Duration>>,
    /// Each request's time minus compute's own time for the operation: what transport,
    /// queues and the edge cost, without the operation's run-to-run variance.
    outside: BTreeMap<Side, Vec<Duration>>,
    /// BFF − direct within each round (seconds), sorted: less exposed to drift than a
    /// difference of percentiles.
    paired: Vec<f64>,
    errors: BTreeMap<String, usize>,
    rounds: usize,
}

/// `n` rounds (bounded by `limit`), each one request per side in a rotating order, so that
/// drift and noise on the machine reach every side alike.
async fn latency(
    client: &Client,
    p: &Payload,
    n: usize,
    warmup: usize,
    limit: Duration,
) -> Latency {
    let sides = [Side::Bff, Side::Direct, Side::Intake];
    for _ in 0..warmup {
        for side in sides {
            let _ = client.call(side, &p.data).await;
        }
    }
    let mut out = Latency {
        samples: BTreeMap::new(),
        outside: BTreeMap::new(),
        paired: Vec::new(),
        errors: BTreeMap::new(),
        rounds: 0,
    };
    let started = Instant::now();
    for round in 0..n {
        if started.elapsed() > limit {
            break;
        }
        let mut this_round: BTreeMap<Side, Duration> = BTreeMap::new();
        for k in 0..sides.len() {
            let side = sides[(round + k) % sides.len()];
            let t = Instant::now();
            match client.call(side, &p.data).await {
                Ok(op) => {
                    let took = t.elapsed();
                    out.samples.entry(side).or_default().push(took);
                    out.outside
                        .entry(side)
                        .or_default()
                        .push(took.saturating_sub(op));
                    this_round.insert(side, took);
                }
                Err(e) => *out.errors.entry(format!("{side:?}: {e}")).or_default() += 1,
            }
        }
        if let (Some(b), Some(d)) = (this_round.get(&Side::Bff), this_round.get(&Side::Direct)) {
            out.paired.push(b.as_secs_f64() - d.as_secs_f64());
        }
        out.rounds += 1;
    }
    for v in out.samples.values_mut().chain(out.outside.values_mut()) {
        v.sort();
    }
    out.paired.sort_by(f64::total_cmp);
    out
}

/// CPU time (user + system) of a process so far, in clock ticks; `None` if unreadable.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The processes whose CPU time is measured: the bench client itself, the BFF, compute.
#[derive(Clone, Copy)]
struct Procs {
    bff: Option<u32>,
    compute: Option<u32>,
}

impl Procs {
    fn ticks(&self) -> [Option<u64>; 3] {
        [
            cpu_ticks(None),
            self.bff.and_then(|p| cpu_ticks(Some(p))),
            self.compute.and_then(|p| cpu_ticks(Some(p))),
        ]
    }
}

struct Slice {
    ok: usize,
    errors: BTreeMap<String, usize>,
    elapsed: Duration,
}

/// `concurrency` workers send back to back for `dur`; no request starts after `dur`, and the
/// slice lasts until the last one is answered (so the tail counts against its side).
async fn slice(
    client: &Client,
    side: Side,
    p: &Payload,
    concurrency: usize,
    dur: Duration,
) -> Slice {
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let data = p.data.clone();
            tokio::spawn(async move {
                let mut ok = 0usize;
                let mut errors: BTreeMap<String, usize> = BTreeMap::new();
                // Count cap: far above what 2 cores can do in a slice.
                for _ in 0..1_000_000 {
                    if started.elapsed() >= dur {
                        break;
                    }
                    match client.call(side, &data).await {
                        Ok(_) => ok += 1,
                        Err(e) => *errors.entry(e).or_default() += 1,
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut out = Slice {
        ok: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    for w in workers {
        let (ok, errors) = w.await.expect("worker task");
        out.ok += ok;
        for (k, v) in errors {
            *out.errors.entry(k).or_default() += v;
        }
    }
    out.elapsed = started.elapsed();
    out
}

struct Throughput {
    ok: BTreeMap<Side, usize>,
    elapsed: BTreeMap<Side, Duration>,
    /// CPU ticks spent during each side's slices by [client, BFF, compute].
    cpu: BTreeMap<Side, [Option<u64>; 3]>,
    errors: BTreeMap<String, usize>,
}

impl Throughput {
    fn rate(&self, side: Side) -> f64 {
        let secs = self.elapsed.get(&side).map_or(0.0, Duration::as_secs_f64);
        if secs == 0.0 {
            0.0
        } else {
            self.ok.get(&side).copied().unwrap_or(0) as f64 / secs
        }
    }

    /// The BFF's CPU milliseconds per answer it gave (200 with a JPEG) in its slices.
    fn bff_cpu_ms(&self, clk_tck: f64) -> Option<f64> {
        let n = self.ok.get(&Side::Bff).copied().filter(|n| *n > 0)? as f64;
        let ticks = self.cpu.get(&Side::Bff)?[1]?;
        Some(ticks as f64 / clk_tck * 1e3 / n)
    }

    /// "client / BFF / compute" CPU milliseconds per successful request on `side`.
    fn cpu_per_request(&self, side: Side, clk_tck: f64) -> String {
        let n = self.ok.get(&side).copied().unwrap_or(0).max(1) as f64;
        let cpu = self.cpu.get(&side).copied().unwrap_or([None; 3]);
        cpu.iter()
            .map(|t| {
                t.map_or("?".into(), |t| {
                    format!("{:.2}", t as f64 / clk_tck * 1e3 / n)
                })
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// `total` per side, cut into `slices` slices that alternate BFF, direct, direct, BFF, ...
async fn throughput(
    client: &Client,
    procs: Procs,
    p: &Payload,
    concurrency: usize,
    total: Duration,
) -> Throughput {
    let slices = 4u32;
    let dur = total / slices;
    // Warm both sides at this concurrency (connections, pools, caches).
    for side in [Side::Bff, Side::Direct] {
        slice(client, side, p, concurrency, Duration::from_millis(300)).await;
    }
    let mut out = Throughput {
        ok: BTreeMap::new(),
        elapsed: BTreeMap::new(),
        cpu: BTreeMap::new(),
        errors: BTreeMap::new(),
    };
    for i in 0..slices {
        let order = if i % 2 == 0 {
            [Side::Bff, Side::Direct]
        } else {
            [Side::Direct, Side::Bff]
        };
        for side in order {
            let before = procs.ticks();
            let s = slice(client, side, p, concurrency, dur).await;
            let after = procs.ticks();
            let cpu = out.cpu.entry(side).or_insert([Some(0); 3]);
            for k in 0..3 {
                cpu[k] = match (cpu[k], before[k], after[k]) {
                    (Some(sum), Some(b), Some(a)) => Some(sum + a.saturating_sub(b)),
                    _ => None,
                };
            }
            *out.ok.entry(side).or_default() += s.ok;
            *out.elapsed.entry(side).or_default() += s.elapsed;
            for (k, v) in s.errors {
                *out.errors.entry(format!("{side:?}: {k}")).or_default() += v;
            }
        }
    }
    out
}

async fn speed(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let client = Client::new(&args.bff, args.compute.as_deref(), 16).await?;
    let procs = Procs {
        bff: args.bff_pid,
        compute: args.compute_pid,
    };
    let started = Instant::now();
    eprintln!("generating payloads ...");
    let wanted = |name: &str| args.payloads.iter().any(|p| p == name);
    let payloads: Vec<_> = ["small", "large"]
        .into_iter()
        .filter(|name| wanted(name))
        .map(|name| {
            if name == "small" {
                // Targets (issue 15): added p50, BFF CPU per answer (both in ms).
                let p = payload("~1 KB", 1000, 24, 90);
                (p, args.n_small, 20, Duration::from_secs(20), (0.3, 0.05))
            } else {
                let p = payload("~2 MB", 2_000_000, 24, 90);
                (p, args.n_large, 5, Duration::from_secs(40), (3.0, 1.2))
            }
        })
        .collect();
    // Fail early and loudly if either side does not work at all.
    for (p, ..) in &payloads {
        for side in [Side::Bff, Side::Direct, Side::Intake] {
            client
                .call(side, &p.data)
                .await
                .map_err(|e| anyhow::anyhow!("{side:?} with {}: {e}", p.label))?;
        }
    }
    let total = Duration::from_secs_f64(args.secs);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (p, n, warmup, limit, (added_target, cpu_target)) in &payloads {
        eprintln!("{}: latency, {n} rounds at concurrency 1 ...", p.label);
        let lat = latency(&client, p, *n, *warmup, *limit).await;
        eprintln!(
            "{}: throughput, {:?} per side at concurrency 8 ...",
            p.label, total
        );
        let tp = throughput(&client, procs, p, 8, total).await;
        let s = |side| lat.samples.get(&side).map(Vec::as_slice).unwrap_or(&[]);
        let (b, d, i) = (s(Side::Bff), s(Side::Direct), s(Side::Intake));
        let o = |side| lat.outside.get(&side).map(Vec::as_slice).unwrap_or(&[]);
        let (ob, od) = (o(Side::Bff), o(Side::Direct));
        let added50 = pct(ob, 50.0).as_secs_f64() - pct(od, 50.0).as_secs_f64();
        // A direct side far slower than the BFF is a broken baseline, not a fast BFF: judge
        // nothing against it.
        let stalled = pct(d, 50.0) > pct(b, 50.0) + Duration::from_millis(30);
        let judge = |ok: bool| {
            if stalled {
                "not judged: direct baseline stalled"
            } else {
                verdict(ok)
            }
        };
        let ratio = tp.rate(Side::Bff) / tp.rate(Side::Direct).max(f64::MIN_POSITIVE);
        rows.push(format!(
            "| {} | latency p50, c=1 ({} rounds) | {} | {} | {} | | |",
            p.label,
            lat.rounds,
            ms(pct(b, 50.0)),
            ms(pct(d, 50.0)),
            delta_ms(pct(b, 50.0), pct(d, 50.0)),
        ));
        rows.push(format!(
            "| | latency p99, c=1 | {} | {} | {} | | |",
            ms(pct(b, 99.0)),
            ms(pct(d, 99.0)),
            delta_ms(pct(b, 99.0), pct(d, 99.0)),
        ));
        rows.push(format!(
            "| | **added latency** p50: time outside compute's operation (total − elapsed_ms) | {} | {} | {} | ≤ +{added_target} ms | {} |",
            ms(pct(ob, 50.0)),
            ms(pct(od, 50.0)),
            delta_ms(pct(ob, 50.0), pct(od, 50.0)),
            judge(added50 <= added_target * 1e-3 && !ob.is_empty() && !od.is_empty())
        ));
        rows.push(format!(
            "| | added latency p99: time outside compute's operation | {} | {} | {} | | |",
            ms(pct(ob, 99.0)),
            ms(pct(od, 99.0)),
            delta_ms(pct(ob, 99.0), pct(od, 99.0)),
        ));
        let paired = if lat.paired.is_empty() {
            "—".to_string()
        } else {
            let mid = lat.paired[(lat.paired.len() - 1) / 2];
            format!("{:+.2} ms", mid * 1e3)
        };
        rows.push(format!(
            "| | latency: median of per-round differences (BFF − direct) | | | {paired} | | |"
        ));
        rows.push(format!(
            "| | throughput, c=8 ({:.0} s per side) | {:.1} req/s | {:.1} req/s | {:.1} % | ≥ 95 % | {} |",
            args.secs,
            tp.rate(Side::Bff),
            tp.rate(Side::Direct),
            ratio * 100.0,
            judge(ratio >= 0.95)
        ));
        rows.push(format!(
            "| | CPU ms per request at c=8, client / BFF / compute | {} | {} | | | |",
            tp.cpu_per_request(Side::Bff, args.clk_tck),
            tp.cpu_per_request(Side::Direct, args.clk_tck),
        ));
        let bff_cpu = tp.bff_cpu_ms(args.clk_tck);
        rows.push(format!(
            "| | **BFF CPU per answer**, c=8 | {} | | | ≤ {cpu_target} ms | {} |",
            bff_cpu.map_or("?".into(), |c| format!("{c:.3} ms")),
            verdict(bff_cpu.is_some_and(|c| c <= *cpu_target))
        ));
        rows.push(format!(
            "| | diagnostic: BFF intake only (reads the upload, answers 400), p50 / p99, c=1 | {} / {} | | | | |",
            ms(pct(i, 50.0)),
            ms(pct(i, 99.0)),
        ));
        if stalled {
            notes.push(format!(
                "- {}: the direct side is slower than the BFF by {} at p50. A stall of ~40 ms \
                 is the signature of Nagle's algorithm meeting a delayed ACK (a socket without \
                 TCP_NODELAY); see docs/benchmarks-edge.md.",
                p.label,
                delta_ms(pct(d, 50.0), pct(b, 50.0))
            ));
        }
        let errors: BTreeMap<_, _> = lat.errors.iter().chain(tp.errors.iter()).collect();
        if !errors.is_empty() {
            notes.push(format!(
                "- errors with {} (not counted as samples or requests): {}",
                p.label,
                errors
                    .iter()
                    .map(|(k, v)| format!("{k} × {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    report.line("### Added latency and throughput (BFF vs direct gRPC, compress → JPEG Q80)");
    report.line("");
    report
        .line("| payload | measure | via BFF | direct | BFF − direct or BFF / direct | target | |");
    report.line("|---|---|---|---|---|---|---|");
    for r in rows {
        report.line(r);
    }
    report.line("");
    let had_notes = !notes.is_empty();
    for n in notes {
        report.line(n);
    }
    if had_notes {
        report.line("");
    }
    report.line(format!(
        "speed phase took {:.0} s; payload sizes: {}",
        started.elapsed().as_secs_f64(),
        payloads
            .iter()
            .map(|(p, ..)| format!("{}×{} = {} B", p.width, p.height, p.data.len()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.line("");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Memory: peak RSS of the BFF under 64 concurrent 8 MiB uploads

/// What the memory sampler saw at the highest RSS.
#[derive(Default)]
struct PeakSample {
    /// VmRSS in KiB.
    rss: u64,
    at: Duration,
    lane_at: f64,
    answered_at: usize,
    max_lane: f64,
}

/// `(VmHWM, VmRSS)` of `pid`, in KiB.
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// `imagegate_lane_in_flight{lane="heavy"}` from the BFF's /metrics.
async fn heavy_in_flight(http: &reqwest::Client, bff: &str) -> Option<f64> {
    let text = http
        .get(format!("{bff}/metrics"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let key = "imagegate_lane_in_flight{lane=\"heavy\"}";
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn memory(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let pid = args.bff_pid.expect("checked in parse_args");
    let n = args.uploads;
    let client = Client::new(&args.bff, None, n).await?;
    eprintln!("generating a ~{} MiB payload ...", args.upload_mib);
    // A little under the size, so that the file is "an 8 MiB upload" with its form around it.
    // Full-range grain at Q97 (the speed payloads: grain 24, Q90): many more bytes per pixel,
    // so the same upload size costs compute far fewer pixels. This phase measures what the
    // BFF holds, which depends on bytes, not pixels; fewer pixels keep the phase short.
    let p = payload(
        &format!("~{} MiB", args.upload_mib),
        (args.upload_mib * 0.97 * (1 << 20) as f64) as usize,
        256,
        97,
    );
    // One small request first, so connections and lazy state exist before the baseline.
    let small = payload("small", 1000, 24, 90);
    client
        .call(Side::Bff, &small.data)
        .await
        .map_err(|e| anyhow::anyhow!("BFF warm-up request failed: {e}"))?;
    let (hwm_before, rss_before) = rss(pid)?;
    let body_len = client
        .http
        .post(format!("{}/v1/images/compress", args.bff))
        .multipart(form(&p.data, "80"))
        .build()?
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("the multipart body has no Content-Length"))?;
    let in_flight_bytes = body_len * n as u64;

    // Samplers: the BFF's RSS every 20 ms, its heavy-lane in-flight gauge every 100 ms, and
    // the state at the highest RSS seen (when, lane in flight, answers already received).
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let stop = stop.clone();
        let answered = answered.clone();
        let http = client.http.clone();
        let bff = args.bff.clone();
        tokio::spawn(async move {
            let mut peak = PeakSample::default();
            let started = Instant::now();
            let mut tick = 0u64;
            let mut lane = 0f64;
            // Bounded: stops when told, or after 10 minutes.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                if tick.is_multiple_of(5) {
                    if let Some(v) = heavy_in_flight(&http, &bff).await {
                        lane = v;
                        peak.max_lane = peak.max_lane.max(v);
                    }
                }
                if let Ok((_, r)) = rss(pid) {
                    if r > peak.rss {
                        peak.rss = r;
                        peak.at = started.elapsed();
                        peak.lane_at = lane;
                        peak.answered_at = answered.load(Ordering::Relaxed);
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };

    eprintln!("{n} concurrent uploads of {} B each ...", body_len);
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let http = client.http.clone();
            let url = format!("{}/v1/images/compress", args.bff);
            let data = p.data.clone();
            let barrier = barrier.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                let result = async {
                    let resp = http
                        .post(url)
                        .multipart(form(&data, "80"))
                        .timeout(Duration::from_secs(150))
                        .send()
                        .await?;
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, body.len()))
                }
                .await;
                answered.fetch_add(1, Ordering::Relaxed);
                (result, t.elapsed())
            })
        })
        .collect();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut times = Vec::new();
    let mut output_len = 0usize;
    let all = futures_util::future::join_all(tasks);
    match tokio::time::timeout(Duration::from_secs(180), all).await {
        Ok(results) => {
            for r in results {
                let (result, took) = r.expect("upload task");
                let key = match result {
                    Ok((status, len)) => {
                        if status == 200 {
                            output_len = output_len.max(len);
                        }
                        status.to_string()
                    }
                    Err(e) if e.is_timeout() => "client timeout".into(),
                    Err(_) => "transport error".into(),
                };
                *codes.entry(key).or_default() += 1;
                times.push(took);
            }
        }
        Err(_) => {
            codes.insert("not finished in 180 s".into(), n);
        }
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler task");
    let (hwm_after, rss_after) = rss(pid)?;
    times.sort();

    let ok = codes.get("200").copied().unwrap_or(0);
    let shed = codes.get("503").copied().unwrap_or(0);
    let in_flight_mib = in_flight_bytes as f64 / (1 << 20) as f64;
    let peak_mib = mib(hwm_after);
    let growth = mib(hwm_after.saturating_sub(hwm_before));
    match args.budget_mib {
        None => report.line(format!(
            "### BFF peak RSS with {n} concurrent uploads of {}",
            p.label
        )),
        Some(budget) => report.line(format!(
            "### BFF peak RSS with {n} concurrent uploads of {}, `bff.max_buffered_bytes` = {budget} MiB",
            p.label
        )),
    }
    report.line("");
    report.line("| measure | value |");
    report.line("|---|---|");
    match args.budget_mib {
        None => report.line(format!(
            "| uploads answered 200 (a 503 shed is not a success) | **{ok} of {n}** |"
        )),
        Some(_) => report.line(format!(
            "| uploads answered 200 / shed with 503 (expected: the budget is below the load) | \
             **{ok}** / {shed} of {n} |"
        )),
    }
    report.line(format!("| status codes | {} |", histogram(&codes)));
    report.line(format!(
        "| request body per upload (file + multipart framing) | {body_len} B ({}) |",
        human_bytes(body_len as usize)
    ));
    report.line(format!(
        "| response per upload (JPEG Q80) | {} |",
        human_bytes(output_len)
    ));
    report.line(format!(
        "| bytes offered at once ({n} × request body) | {in_flight_mib:.1} MiB |"
    ));
    report.line(format!(
        "| peak heavy-lane in flight (sampled /metrics every 100 ms) | {:.0} |",
        peak.max_lane
    ));
    report.line(format!(
        "| BFF VmHWM before → after (peak RSS) | {:.1} MiB → **{peak_mib:.1} MiB** |",
        mib(hwm_before)
    ));
    report.line(format!(
        "| BFF VmRSS before / max sampled / after | {:.1} / {:.1} / {:.1} MiB |",
        mib(rss_before),
        mib(peak.rss),
        mib(rss_after)
    ));
    report.line(format!(
        "| at the highest sampled RSS: time since start, lane in flight, answers received | \
         {:.1} s, {:.0}, {} |",
        peak.at.as_secs_f64(),
        peak.lane_at,
        peak.answered_at
    ));
    match args.budget_mib {
        None => {
            let target = 40.0 + 1.1 * in_flight_mib;
            report.line(format!(
                "| peak growth over baseline ÷ bytes in flight | {:.2} |",
                growth / in_flight_mib
            ));
            report.line(format!(
                "| target: 40 MiB + 1.1 × bytes in flight | {target:.1} MiB |"
            ));
            report.line(format!(
                "| peak RSS vs target | {:.0} % of target: {} |",
                peak_mib / target * 100.0,
                verdict(peak_mib <= target && ok == n)
            ));
        }
        Some(budget) => {
            // What the budget promises: request bodies resident at once stay under it, the
            // copies on their way to compute included. The baseline is what the BFF held
            // before the phase (code, runtimes, connections).
            let target = mib(hwm_before) + budget;
            report.line(format!(
                "| peak growth over baseline ÷ budget | {:.2} |",
                growth / budget
            ));
            report.line(format!(
                "| target: baseline + `bff.max_buffered_bytes` | {target:.1} MiB |"
            ));
            report.line(format!(
                "| peak RSS vs target | {:.0} % of target: {} |",
                peak_mib / target * 100.0,
                verdict(peak_mib <= target && ok > 0 && ok + shed == n)
            ));
        }
    }
    report.line(format!(
        "| upload latency p50 / max; wall time | {} / {}; {:.1} s |",
        ms(pct(&times, 50.0)),
        ms(pct(&times, 100.0)),
        wall.as_secs_f64()
    ));
    report.line("");
    Ok(())
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("{USAGE}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut report = Report(String::new());
    match args.phase {
        Phase::Speed => speed(&args, &mut report).await?,
        Phase::Memory => memory(&args, &mut report).await?,
    }
    if let Some(path) = &args.out {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(report.0.as_bytes())?;
    }
    Ok(())
}
