//! `hol`: the driver of the head-of-line blocking benchmark (issue 5), run by
//! `scripts/bench-hol.sh` (`make bench-hol`) inside the two network namespaces that script
//! creates: compute (and the echo server) in one, the BFF and this load generator in the other,
//! joined by a shaped, lossy veth pair.
//!
//! Subcommands (each bounded by counts and time limits):
//! - `image`: writes the photo-like JPEG the uploaders send (generated here, cached on disk);
//! - `echo-server`: a tiny TCP echo server, the "physical limit" probe's other end;
//! - `run`: one BFF mode, already started by the script: an idle baseline (probes only), then
//!   the loaded window (uploaders + probes); raw samples, scraped `/metrics` histograms, link
//!   counters and CPU use go to `DIR/LABEL.json`;
//! - `report`: reads those files and prints the markdown tables (also `DIR/summary.md`).
//!
//! Probes are open-loop (one is sent every `1/probe_hz` whatever the previous ones are doing,
//! so a stalled probe does not hide the ones behind it) and run on their own thread and
//! runtime, apart from the uploaders. The `/health` probe has a deadline (1 s by default): a
//! probe that gets no 200 within it is a miss. The echo probe opens a fresh TCP connection to
//! the echo server each time, then times one 32-byte round trip on it; its connect time is
//! recorded apart, and the round trip is the limit any separate connection pays for the link's
//! shared queue.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    name = "hol",
    about = "Head-of-line blocking benchmark driver (see scripts/bench-hol.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate (or reuse) the photo-like JPEG the uploaders send.
    Image {
        #[arg(long)]
        out: PathBuf,
        /// Target size in MB (10^6 bytes).
        #[arg(long, default_value_t = 8.0)]
        mb: f64,
    },
    /// Echo whatever arrives on each connection, for at most `max_secs`.
    EchoServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 900)]
        max_secs: u64,
    },
    /// Measure one BFF mode: idle baseline, then loaded.
    Run(RunArgs),
    /// Print the tables for the modes measured in `dir`.
    Report {
        #[arg(long)]
        dir: PathBuf,
        /// Labels of the runs, in order (files DIR/LABEL.json).
        #[arg(long, num_args = 1.., default_values_t = ["shared".to_string(), "bulkhead".to_string()])]
        labels: Vec<String>,
    },
}

#[derive(Args, Clone, Serialize, Deserialize)]
struct RunArgs {
    /// Name of this run (the BFF's mode): the output is DIR/LABEL.json.
    #[arg(long)]
    label: String,
    /// The BFF's base URL (same namespace, loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    bff: String,
    /// The echo server across the shaped link.
    #[arg(long)]
    echo: std::net::SocketAddr,
    /// The uploaded image.
    #[arg(long)]
    image: PathBuf,
    /// Concurrent uploaders.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// JPEG quality the uploads ask compute for.
    #[arg(long, default_value_t = 75)]
    quality: u32,
    /// Idle baseline length (probes only).
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Uploads run this long before the loaded window starts.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Loaded window length.
    #[arg(long, default_value_t = 25.0)]
    load_secs: f64,
    /// Probes per second (each of `/health` and echo).
    #[arg(long, default_value_t = 20.0)]
    probe_hz: f64,
    /// The `/health` probe's deadline.
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
    /// Time limit of one upload.
    #[arg(long, default_value_t = 60)]
    upload_timeout_secs: u64,
    /// How long to wait for the BFF to answer `/health` with 200 before giving up.
    #[arg(long, default_value_t = 30)]
    ready_secs: u64,
    /// The BFF side of the veth pair (its counters are the link's bytes).
    #[arg(long)]
    iface: Option<String>,
    #[arg(long)]
    bff_pid: Option<u32>,
    #[arg(long)]
    compute_pid: Option<u32>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Image { out, mb } => {
            let data = load_or_make_image(&out, (mb * 1e6) as usize)?;
            println!("{} bytes in {}", data.len(), out.display());
            Ok(())
        }
        Command::EchoServer { listen, max_secs } => echo_server(listen, max_secs),
        Command::Run(args) => run(args),
        Command::Report { dir, labels } => report(&dir, &labels),
    }
}

// ---------------------------------------------------------------------------------------------
// The uploaded image: photo-like, so that its JPEG has realistic size and decode cost.

/// Reuses `path` if it holds a JPEG within 5 % of `target` bytes; otherwise makes one.
fn load_or_make_image(path: &Path, target: usize) -> anyhow::Result<Vec<u8>> {
    if let Ok(data) = std::fs::read(path) {
        let near = (data.len() as f64 - target as f64).abs() <= target as f64 * 0.05;
        if near && data.starts_with(&[0xFF, 0xD8]) {
            return Ok(data);
        }
    }
    let data = make_photo_jpeg(target)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok(data)
}

/// A smooth random field: bilinear interpolation of a `gx`×`gy` grid of values in 0..1.
struct Field {
    gx: usize,
    gy: usize,
    grid: Vec<f32>,
}

impl Field {
    fn new(rng: &mut fastrand::Rng, gx: usize, gy: usize) -> Self {
        Field {
            gx,
            gy,
            grid: (0..gx * gy).map(|_| rng.f32()).collect(),
        }
    }

    /// Value at (u, v) in 0..1 × 0..1.
    fn at(&self, u: f32, v: f32) -> f32 {
        let x = u * (self.gx - 1) as f32;
        let y = v * (self.gy - 1) as f32;
        let (x0, y0) = (x as usize, y as usize);
        let (x1, y1) = ((x0 + 1).min(self.gx - 1), (y0 + 1).min(self.gy - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        // Smoothstep weights: no visible grid lines.
        let (fx, fy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
        let g = |x: usize, y: usize| self.grid[y * self.gx + x];
        let top = g(x0, y0) + (g(x1, y0) - g(x0, y0)) * fx;
        let bottom = g(x0, y1) + (g(x1, y1) - g(x0, y1)) * fx;
        top + (bottom - top) * fy
    }
}

/// 12-megapixel RGB: slowly varying colour, mid-scale luminance texture, shaded regions with
/// hard curved edges, and sensor-like grain; JPEG quality searched so the file is about
/// `target` bytes.
fn make_photo_jpeg(target: usize) -> anyhow::Result<Vec<u8>> {
    let (w, h) = (4000usize, 3000usize);
    let mut rng = fastrand::Rng::with_seed(0x1a9e);
    let light = Field::new(&mut rng, 10, 8);
    let colour = [
        Field::new(&mut rng, 12, 9),
        Field::new(&mut rng, 12, 9),
        Field::new(&mut rng, 12, 9),
    ];
    let texture = Field::new(&mut rng, 400, 300);
    let fine = Field::new(&mut rng, 1333, 1000);
    let mask = Field::new(&mut rng, 24, 18);
    let mut raw = vec![0u8; w * h * 3];
    for y in 0..h {
        let v = y as f32 / (h - 1) as f32;
        for x in 0..w {
            let u = x as f32 / (w - 1) as f32;
            let detail = (texture.at(u, v) - 0.5) * 60.0 + (fine.at(u, v) - 0.5) * 30.0;
            let shade = if mask.at(u, v) > 0.55 { 0.6 } else { 1.0 };
            let px = &mut raw[(y * w + x) * 3..][..3];
            for (c, out) in px.iter_mut().enumerate() {
                // Shared light plus a milder per-channel tint, as in photos.
                let base = 40.0 + light.at(u, v) * 140.0 + (colour[c].at(u, v) - 0.5) * 70.0;
                // Sum of three uniforms: roughly Gaussian grain, sigma ~ 7.
                let grain = (rng.f32() + rng.f32() + rng.f32() - 1.5) * 14.0;
                *out = ((base + detail) * shade + grain).clamp(0.0, 255.0) as u8;
            }
        }
    }
    let encode = |q: u8| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(target + target / 4);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q).encode(
            &raw,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(out)
    };
    // Binary search on quality (at most 6 encodes) for the size nearest the target.
    let (mut lo, mut hi) = (50u8, 100u8);
    let mut best = encode(90)?;
    for _ in 0..6 {
        if lo > hi {
            break;
        }
        let q = lo + (hi - lo) / 2;
        let data = encode(q)?;
        let closer =
            (data.len() as f64 - target as f64).abs() < (best.len() as f64 - target as f64).abs();
        let small = data.len() < target;
        if closer {
            best = data;
        }
        if small {
            lo = q + 1;
        } else if q == 0 {
            break;
        } else {
            hi = q - 1;
        }
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------
// Echo server.

fn echo_server(listen: std::net::SocketAddr, max_secs: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("echo server cannot listen on {listen}"))?;
        eprintln!("echo server on {listen} for at most {max_secs} s");
        let serve = accept_loop(listener);
        match tokio::time::timeout(Duration::from_secs(max_secs), serve).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    })
}

async fn accept_loop(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            // A probe sends 32 bytes once; bound each connection anyway.
            let mut buf = [0u8; 256];
            for _ in 0..1000 {
                let read = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf));
                match read.await {
                    Ok(Ok(n)) if n > 0 => {
                        if sock.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

/// One `/health` probe.
#[derive(Serialize, Deserialize, Clone)]
struct HealthSample {
    /// Send time, seconds from the start of the phase.
    t: f64,
    /// Milliseconds to the whole answer (to the deadline for a probe that got none).
    ms: f64,
    /// 200 within the deadline.
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One echo probe over a fresh TCP connection.
#[derive(Serialize, Deserialize, Clone)]
struct EchoSample {
    t: f64,
    /// TCP connect (SYN / SYN-ACK) in milliseconds.
    connect_ms: Option<f64>,
    /// One 32-byte round trip on the new connection, in milliseconds.
    rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A lane histogram's increase over a window.
#[derive(Serialize, Deserialize, Clone)]
struct LaneHistogram {
    lane: String,
    method: String,
    count: f64,
    sum_s: f64,
    /// (upper bound in seconds, cumulative count), finite bounds only (+Inf holds `count`).
    buckets: Vec<(f64, f64)>,
}

#[derive(Serialize, Deserialize, Clone, Default)]
struct Uploads {
    completed: usize,
    failed: usize,
    /// Uploads that completed within the window, per second.
    per_s: f64,
    /// Image bytes of those uploads, MB (10^6) per second.
    mb_per_s: f64,
    /// Upload durations (BFF request to whole answer) of those, milliseconds.
    p50_ms: Option<f64>,
    max_ms: Option<f64>,
    errors: BTreeMap<String, usize>,
}

#[derive(Serialize, Deserialize, Clone, Default)]
struct Phase {
    name: String,
    secs: f64,
    health: Vec<HealthSample>,
    echo: Vec<EchoSample>,
    uploads: Option<Uploads>,
    /// Per-lane bytes written to / read from the lane's sockets, MB/s over the window.
    lane_sent_mb_s: BTreeMap<String, f64>,
    lane_received_mb_s: BTreeMap<String, f64>,
    /// The BFF side of the veth pair: MB/s sent towards compute and received from it.
    link_tx_mb_s: Option<f64>,
    link_rx_mb_s: Option<f64>,
    /// CPU cores used on average: BFF process, compute process, the whole machine.
    cpu_bff: Option<f64>,
    cpu_compute: Option<f64>,
    cpu_machine: Option<f64>,
    lane_durations: Vec<LaneHistogram>,
    lane_rejected: BTreeMap<String, f64>,
    lane_connections: BTreeMap<String, f64>,
    /// The heavy lane every 100 ms of the window: what it sent, its pacing and the delay
    /// its pacer measured (yielding lanes only report the last two).
    #[serde(default)]
    heavy_timeline: Vec<LanePoint>,
}

/// The heavy lane at one instant of the loaded window.
#[derive(Serialize, Deserialize, Clone, Default)]
struct LanePoint {
    /// Seconds from the start of the window.
    t: f64,
    /// `imagegate_lane_bytes_sent_total{lane="heavy"}`.
    sent_bytes: f64,
    /// `imagegate_lane_pacing_rate_bytes{lane="heavy"}` (0: not paced).
    pacing_rate: f64,
    /// `imagegate_lane_path_delay_seconds{lane="heavy"}`.
    path_delay_s: f64,
}

/// Scrapes the heavy lane's counters every 100 ms until `stop`.
async fn heavy_timeline(
    http: reqwest::Client,
    args: RunArgs,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<LanePoint> {
    let mut points = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let Ok(snap) = Snapshot::take(&http, &args).await else {
            continue;
        };
        // Shared mode reports its one pool as the `shared` lane.
        let heavy = |name: &str| {
            let by_lane = snap.sum(name, &[]);
            by_lane
                .get("heavy")
                .or(by_lane.get("shared"))
                .copied()
                .unwrap_or(0.0)
        };
        points.push(LanePoint {
            t: snap.at.duration_since(start).as_secs_f64(),
            sent_bytes: heavy("imagegate_lane_bytes_sent_total"),
            pacing_rate: heavy("imagegate_lane_pacing_rate_bytes"),
            path_delay_s: heavy("imagegate_lane_path_delay_seconds"),
        });
    }
    points
}

#[derive(Serialize, Deserialize)]
struct RunResult {
    args: RunArgs,
    image_bytes: usize,
    phases: Vec<Phase>,
}

// ---------------------------------------------------------------------------------------------
// One mode.

fn run(args: RunArgs) -> anyhow::Result<()> {
    let image = Bytes::from(
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?,
    );
    std::fs::create_dir_all(&args.out)?;
    // Uploaders and scrapes here; probes on their own thread and runtime (see `Probes`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(run_phases(&args, image))?;
    let path = args.out.join(format!("{}.json", args.label));
    std::fs::write(&path, serde_json::to_vec(&result)?)?;
    eprintln!("[{}] wrote {}", args.label, path.display());
    Ok(())
}

async fn run_phases(args: &RunArgs, image: Bytes) -> anyhow::Result<RunResult> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    wait_ready(&http, args).await?;
    let mut phases = Vec::new();

    // Idle baseline: probes only.
    eprintln!("[{}] idle baseline, {} s", args.label, args.idle_secs);
    let before = Snapshot::take(&http, args).await?;
    let (health, echo) = Probes::new(args).run(args.idle_secs).await?;
    let after = Snapshot::take(&http, args).await?;
    phases.push(after.phase_since(&before, "idle", args.idle_secs, health, echo));

    // Loaded: uploaders start, warm up, then the window.
    eprintln!(
        "[{}] loaded: {} uploaders of {} bytes, {} s warm-up, {} s window",
        args.label,
        args.clients,
        image.len(),
        args.warmup_secs,
        args.load_secs
    );
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::<UploadRecord>::new()));
    let hard_limit = Instant::now()
        + Duration::from_secs_f64(args.warmup_secs + args.load_secs)
        + Duration::from_secs(args.upload_timeout_secs);
    let uploaders: Vec<_> = (0..args.clients)
        .map(|_| {
            tokio::spawn(uploader(
                http.clone(),
                args.clone(),
                image.clone(),
                stop.clone(),
                records.clone(),
                hard_limit,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    let before = Snapshot::take(&http, args).await?;
    let window_start = Instant::now();
    // Tells the script's queue sampler that the loaded window is open.
    let marker = args.out.join(format!("{}.window", args.label));
    std::fs::write(&marker, b"")?;
    let timeline_stop = Arc::new(AtomicBool::new(false));
    let timeline = tokio::spawn(heavy_timeline(
        http.clone(),
        args.clone(),
        window_start,
        timeline_stop.clone(),
    ));
    let probed = Probes::new(args).run(args.load_secs).await;
    timeline_stop.store(true, Ordering::SeqCst);
    let heavy_timeline = timeline.await.unwrap_or_default();
    let _ = std::fs::remove_file(&marker);
    let (health, echo) = probed?;
    let window_end = Instant::now();
    let after = Snapshot::take(&http, args).await?;
    stop.store(true, Ordering::SeqCst);
    for u in &uploaders {
        u.abort();
    }
    let mut phase = after.phase_since(&before, "loaded", args.load_secs, health, echo);
    phase.heavy_timeline = heavy_timeline;
    let records = records.lock().expect("records").clone();
    phase.uploads = Some(upload_stats(
        &records,
        window_start,
        window_end,
        image.len(),
    ));
    phases.push(phase);
    Ok(RunResult {
        args: args.clone(),
        image_bytes: image.len(),
        phases,
    })
}

async fn wait_ready(http: &reqwest::Client, args: &RunArgs) -> anyhow::Result<()> {
    let url = format!("{}/health", args.bff);
    let until = Instant::now() + Duration::from_secs(args.ready_secs);
    let mut last = String::new();
    while Instant::now() < until {
        match http.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the BFF at {} did not answer /health with 200 within {} s (last: {last})",
        args.bff,
        args.ready_secs
    )
}

#[derive(Clone)]
struct UploadRecord {
    end: Instant,
    ms: f64,
    ok: bool,
    error: Option<String>,
}

/// One client: uploads the image again and again until told to stop (or the hard limit, or
/// 10 000 uploads), each with its own time limit.
async fn uploader(
    http: reqwest::Client,
    args: RunArgs,
    image: Bytes,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<UploadRecord>>>,
    hard_limit: Instant,
) {
    let url = format!("{}/v1/images/compress", args.bff);
    for _ in 0..10_000 {
        if stop.load(Ordering::SeqCst) || Instant::now() >= hard_limit {
            return;
        }
        let len = image.len() as u64;
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::from(image.clone()), len)
                .file_name("photo.jpg")
                .mime_str("image/jpeg")
                .expect("valid mime");
        let form = reqwest::multipart::Form::new()
            .text("quality", args.quality.to_string())
            .text("format", "jpeg")
            .part("file", part);
        let start = Instant::now();
        let call = async {
            let r = http.post(&url).multipart(form).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, body.len()))
        };
        let outcome =
            tokio::time::timeout(Duration::from_secs(args.upload_timeout_secs), call).await;
        let (ok, error) = match outcome {
            Ok(Ok((status, _))) if status.is_success() => (true, None),
            Ok(Ok((status, _))) => (false, Some(format!("HTTP {}", status.as_u16()))),
            Ok(Err(e)) => (false, Some(error_kind(&e))),
            Err(_) => (false, Some("timeout".to_string())),
        };
        if !ok {
            // Do not spin on a failing BFF.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let end = Instant::now();
        records.lock().expect("records").push(UploadRecord {
            end,
            ms: (end - start).as_secs_f64() * 1e3,
            ok,
            error,
        });
    }
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "request".into()
    }
}

fn upload_stats(records: &[UploadRecord], start: Instant, end: Instant, size: usize) -> Uploads {
    let secs = (end - start).as_secs_f64();
    let in_window: Vec<&UploadRecord> = records
        .iter()
        .filter(|r| r.end >= start && r.end <= end)
        .collect();
    let mut ms: Vec<f64> = in_window.iter().filter(|r| r.ok).map(|r| r.ms).collect();
    ms.sort_by(f64::total_cmp);
    let completed = ms.len();
    let mut errors = BTreeMap::new();
    for r in in_window.iter().filter(|r| !r.ok) {
        *errors
            .entry(r.error.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    Uploads {
        completed,
        failed: in_window.len() - completed,
        per_s: completed as f64 / secs,
        mb_per_s: (completed * size) as f64 / 1e6 / secs,
        p50_ms: percentile(&ms, 0.5),
        max_ms: ms.last().copied(),
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// Probes: their own thread and single-threaded runtime, so the uploaders never delay them.

struct Probes {
    health_url: String,
    echo: std::net::SocketAddr,
    hz: f64,
    deadline: Duration,
}

impl Probes {
    fn new(args: &RunArgs) -> Self {
        Probes {
            health_url: format!("{}/health", args.bff),
            echo: args.echo,
            hz: args.probe_hz,
            deadline: Duration::from_millis(args.deadline_ms),
        }
    }

    async fn run(self, secs: f64) -> anyhow::Result<(Vec<HealthSample>, Vec<EchoSample>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("hol-probes".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| rt.block_on(self.probe(secs)));
                let _ = tx.send(result);
            })?;
        rx.await.context("probe thread died")?
    }

    async fn probe(self, secs: f64) -> anyhow::Result<(Vec<HealthSample>, Vec<EchoSample>)> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let count = (secs * self.hz).round() as usize;
        let period = Duration::from_secs_f64(1.0 / self.hz);
        let start = tokio::time::Instant::now();
        let mut health = Vec::with_capacity(count);
        let mut echo = Vec::with_capacity(count);
        for i in 0..count {
            let at = start + period * i as u32;
            tokio::time::sleep_until(at).await;
            let t = (at - start).as_secs_f64();
            let (http, url, deadline) = (http.clone(), self.health_url.clone(), self.deadline);
            health.push(tokio::spawn(async move {
                health_probe(&http, &url, deadline, t).await
            }));
            // Echo probes half a period later, so the two never go out together.
            let (addr, half) = (self.echo, period / 2);
            echo.push(tokio::spawn(async move {
                tokio::time::sleep(half).await;
                echo_probe(addr, t + half.as_secs_f64()).await
            }));
        }
        let mut h = Vec::with_capacity(count);
        for j in health {
            h.push(j.await?);
        }
        let mut e = Vec::with_capacity(count);
        for j in echo {
            e.push(j.await?);
        }
        Ok((h, e))
    }
}

async fn health_probe(
    http: &reqwest::Client,
    url: &str,
    deadline: Duration,
    t: f64,
) -> HealthSample {
    let start = Instant::now();
    let call = async {
        let r = http.get(url).send().await?;
        let status = r.status();
        r.bytes().await?;
        Ok::<_, reqwest::Error>(status)
    };
    let outcome = tokio::time::timeout(deadline, call).await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let (ok, error) = match outcome {
        Ok(Ok(s)) if s == 200 => (true, None),
        Ok(Ok(s)) => (false, Some(format!("HTTP {}", s.as_u16()))),
        Ok(Err(e)) => (false, Some(error_kind(&e))),
        Err(_) => (false, Some("deadline".into())),
    };
    HealthSample { t, ms, ok, error }
}

/// Fresh connection, then one 32-byte round trip; at most 5 s in all.
async fn echo_probe(addr: std::net::SocketAddr, t: f64) -> EchoSample {
    let mut sample = EchoSample {
        t,
        connect_ms: None,
        rtt_ms: None,
        error: None,
    };
    let limit = Duration::from_secs(5);
    let start = Instant::now();
    let mut sock = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            sample.error = Some(format!("connect: {e}"));
            return sample;
        }
        Err(_) => {
            sample.error = Some("connect: timeout".into());
            return sample;
        }
    };
    sample.connect_ms = Some(start.elapsed().as_secs_f64() * 1e3);
    let _ = sock.set_nodelay(true);
    let msg = [0x5au8; 32];
    let mut back = [0u8; 32];
    let rtt_start = Instant::now();
    let exchange = async {
        sock.write_all(&msg).await?;
        sock.read_exact(&mut back).await?;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(limit.saturating_sub(start.elapsed()), exchange).await {
        Ok(Ok(())) => sample.rtt_ms = Some(rtt_start.elapsed().as_secs_f64() * 1e3),
        Ok(Err(e)) => sample.error = Some(format!("echo: {e}")),
        Err(_) => sample.error = Some("echo: timeout".into()),
    }
    sample
}

// ---------------------------------------------------------------------------------------------
// Counters at the edges of a window: BFF metrics, link bytes, CPU ticks.

struct Snapshot {
    at: Instant,
    metrics: Vec<Sample>,
    link: Option<(u64, u64)>,
    bff_ticks: Option<u64>,
    compute_ticks: Option<u64>,
    machine: Option<(u64, u64)>,
}

/// One Prometheus sample: name, labels, value.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Linux reports process CPU time in ticks of 1/100 s (USER_HZ) on every mainstream build.
const USER_HZ: f64 = 100.0;

impl Snapshot {
    async fn take(http: &reqwest::Client, args: &RunArgs) -> anyhow::Result<Self> {
        let text = http
            .get(format!("{}/metrics", args.bff))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .context("scraping the BFF's /metrics")?
            .text()
            .await?;
        let link = args.iface.as_ref().and_then(|i| {
            let read = |f: &str| {
                std::fs::read_to_string(format!("/sys/class/net/{i}/statistics/{f}"))
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            };
            Some((read("tx_bytes")?, read("rx_bytes")?))
        });
        Ok(Snapshot {
            at: Instant::now(),
            metrics: parse_prometheus(&text),
            link,
            bff_ticks: args.bff_pid.and_then(process_ticks),
            compute_ticks: args.compute_pid.and_then(process_ticks),
            machine: machine_ticks(),
        })
    }

    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> BTreeMap<String, f64> {
        // Grouped by lane.
        let mut out = BTreeMap::new();
        for s in self.metrics.iter().filter(|s| s.name == name) {
            if filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            {
                let lane = s.labels.get("lane").cloned().unwrap_or_default();
                *out.entry(lane).or_insert(0.0) += s.value;
            }
        }
        out
    }

    fn phase_since(
        &self,
        before: &Snapshot,
        name: &str,
        secs: f64,
        health: Vec<HealthSample>,
        echo: Vec<EchoSample>,
    ) -> Phase {
        let elapsed = (self.at - before.at).as_secs_f64();
        let rate = |after: BTreeMap<String, f64>, before: BTreeMap<String, f64>| {
            after
                .into_iter()
                .map(|(k, v)| {
                    let d = v - before.get(&k).copied().unwrap_or(0.0);
                    (k, d / 1e6 / elapsed)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let delta = |after: BTreeMap<String, f64>, before: BTreeMap<String, f64>| {
            after
                .into_iter()
                .map(|(k, v)| {
                    let d = v - before.get(&k).copied().unwrap_or(0.0);
                    (k, d)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let cores =
            |a: Option<u64>, b: Option<u64>| Some((a? as f64 - b? as f64) / USER_HZ / elapsed);
        Phase {
            name: name.to_string(),
            secs,
            health,
            echo,
            uploads: None,
            lane_sent_mb_s: rate(
                self.sum("imagegate_lane_bytes_sent_total", &[]),
                before.sum("imagegate_lane_bytes_sent_total", &[]),
            ),
            lane_received_mb_s: rate(
                self.sum("imagegate_lane_bytes_received_total", &[]),
                before.sum("imagegate_lane_bytes_received_total", &[]),
            ),
            link_tx_mb_s: match (self.link, before.link) {
                (Some(a), Some(b)) => Some((a.0 - b.0) as f64 / 1e6 / elapsed),
                _ => None,
            },
            link_rx_mb_s: match (self.link, before.link) {
                (Some(a), Some(b)) => Some((a.1 - b.1) as f64 / 1e6 / elapsed),
                _ => None,
            },
            cpu_bff: cores(self.bff_ticks, before.bff_ticks),
            cpu_compute: cores(self.compute_ticks, before.compute_ticks),
            cpu_machine: match (self.machine, before.machine) {
                (Some((busy_a, all_a)), Some((busy_b, all_b))) if all_a > all_b => {
                    Some((busy_a - busy_b) as f64 / (all_a - all_b) as f64 * machine_cpus() as f64)
                }
                _ => None,
            },
            lane_durations: lane_histograms(&self.metrics, &before.metrics),
            lane_rejected: delta(
                self.sum_by("imagegate_lane_rejected_total", &["lane", "reason"]),
                before.sum_by("imagegate_lane_rejected_total", &["lane", "reason"]),
            ),
            lane_connections: self.sum("imagegate_lane_connections", &[]),
            heavy_timeline: Vec::new(),
        }
    }

    fn sum_by(&self, name: &str, keys: &[&str]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.metrics.iter().filter(|s| s.name == name) {
            let key = keys
                .iter()
                .map(|k| s.labels.get(*k).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("/");
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }
}

/// utime + stime of a process, in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPUs of the machine (not of this process's affinity mask, which the script may narrow).
fn machine_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Parses the Prometheus text format (only what the BFF writes: no timestamps, simple escapes).
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_string();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    labels
}

/// `imagegate_lane_request_duration_seconds` per (lane, method): the increase between two
/// scrapes.
fn lane_histograms(after: &[Sample], before: &[Sample]) -> Vec<LaneHistogram> {
    const NAME: &str = "imagegate_lane_request_duration_seconds";
    type Key = (String, String);
    let collect = |samples: &[Sample]| {
        let mut buckets: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
        let mut sums: BTreeMap<Key, (f64, f64)> = BTreeMap::new();
        for s in samples {
            let key = (
                s.labels.get("lane").cloned().unwrap_or_default(),
                s.labels.get("method").cloned().unwrap_or_default(),
            );
            if s.name == format!("{NAME}_bucket") {
                let le = match s.labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => x.parse().unwrap_or(f64::NAN),
                    None => continue,
                };
                buckets.entry(key).or_default().push((le, s.value));
            } else if s.name == format!("{NAME}_count") {
                sums.entry(key).or_default().0 = s.value;
            } else if s.name == format!("{NAME}_sum") {
                sums.entry(key).or_default().1 = s.value;
            }
        }
        (buckets, sums)
    };
    let (b_after, s_after) = collect(after);
    let (b_before, s_before) = collect(before);
    let mut out = Vec::new();
    for (key, mut buckets) in b_after {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let prev = b_before.get(&key);
        for (le, count) in buckets.iter_mut() {
            if let Some(p) = prev.and_then(|p| p.iter().find(|(l, _)| l == le)) {
                *count -= p.1;
            }
        }
        let (count_a, sum_a) = s_after.get(&key).copied().unwrap_or_default();
        let (count_b, sum_b) = s_before.get(&key).copied().unwrap_or_default();
        if count_a - count_b <= 0.0 {
            continue;
        }
        buckets.retain(|(le, _)| le.is_finite());
        out.push(LaneHistogram {
            lane: key.0,
            method: key.1,
            count: count_a - count_b,
            sum_s: sum_a - sum_b,
            buckets,
        });
    }
    out
}

/// `histogram_quantile`: linear interpolation inside the bucket holding the rank; a rank in
/// the +Inf bucket gives the largest finite bound.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, cum) in buckets {
        if cum >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let width = cum - prev.1;
            let frac = if width > 0.0 {
                (rank - prev.1) / width
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, cum);
    }
    Some(prev.0)
}

// ---------------------------------------------------------------------------------------------
// Report.

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

struct Dist {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn dist(mut v: Vec<f64>) -> Option<Dist> {
    v.sort_by(f64::total_cmp);
    Some(Dist {
        p50: percentile(&v, 0.5)?,
        p90: percentile(&v, 0.9)?,
        p99: percentile(&v, 0.99)?,
        max: *v.last()?,
        n: v.len(),
    })
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0} ms")
    } else {
        format!("{x:.1} ms")
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// Health latency per probe: a miss counts at its measured time (at least the deadline for a
/// timeout), so percentiles include misses.
fn health_ms(p: &Phase) -> Vec<f64> {
    p.health.iter().map(|s| s.ms).collect()
}

fn echo_rtt(p: &Phase) -> Vec<f64> {
    // An echo that never came back counts as its 5 s limit.
    p.echo.iter().map(|s| s.rtt_ms.unwrap_or(5000.0)).collect()
}

fn echo_connect(p: &Phase) -> Vec<f64> {
    p.echo
        .iter()
        .map(|s| s.connect_ms.unwrap_or(5000.0))
        .collect()
}

fn report(dir: &Path, labels: &[String]) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for label in labels {
        let path = dir.join(format!("{label}.json"));
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let run: RunResult = serde_json::from_slice(&data)?;
        runs.push((label.clone(), run));
    }
    let mut out = String::new();
    let w = &mut out;
    use std::fmt::Write as _;
    let first = &runs.first().context("no runs")?.1.args;
    writeln!(
        w,
        "Load: {} uploaders × {:.1} MB JPEG (compress → JPEG q{}), probes {}/s, /health deadline {} ms; \
         idle {} s, warm-up {} s, loaded window {} s.\n",
        first.clients,
        runs[0].1.image_bytes as f64 / 1e6,
        first.quality,
        first.probe_hz,
        first.deadline_ms,
        first.idle_secs,
        first.warmup_secs,
        first.load_secs
    )?;

    writeln!(
        w,
        "### Realtime probe (`GET /health` → realtime lane) and the echo limit\n"
    )?;
    writeln!(
        w,
        "| mode | phase | /health p50 | p90 | p99 | max | misses (> {} ms or not 200) | echo RTT p50 | echo p99 | echo max | echo connect p99 |",
        first.deadline_ms
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for (label, run) in &runs {
        for p in &run.phases {
            let h = dist(health_ms(p));
            let e = dist(echo_rtt(p));
            let c = dist(echo_connect(p));
            let misses = p.health.iter().filter(|s| !s.ok).count();
            let g = |d: &Option<Dist>, f: fn(&Dist) -> f64| {
                d.as_ref().map_or("–".into(), |d| ms(f(d)))
            };
            writeln!(
                w,
                "| {label} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                p.name,
                g(&h, |d| d.p50),
                g(&h, |d| d.p90),
                g(&h, |d| d.p99),
                g(&h, |d| d.max),
                misses,
                h.as_ref().map_or(0, |d| d.n),
                g(&e, |d| d.p50),
                g(&e, |d| d.p99),
                g(&e, |d| d.max),
                g(&c, |d| d.p99),
            )?;
        }
    }

    writeln!(w, "\n### Heavy lane under load (the loaded window)\n")?;
    writeln!(
        w,
        "| mode | uploads/s | upload MB/s (completed) | lane bytes sent MB/s | link BFF→compute MB/s | link compute→BFF MB/s | upload p50 | failed uploads | CPU cores: BFF / compute / machine |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|")?;
    for (label, run) in &runs {
        let Some(p) = run.phases.iter().find(|p| p.name == "loaded") else {
            continue;
        };
        let u = p.uploads.clone().unwrap_or_default();
        let lanes = p
            .lane_sent_mb_s
            .iter()
            .filter(|(_, v)| **v > 0.001)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            w,
            "| {label} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} / {} / {} |",
            u.per_s,
            u.mb_per_s,
            lanes,
            opt(p.link_tx_mb_s, 2),
            opt(p.link_rx_mb_s, 2),
            u.p50_ms.map_or("–".into(), ms),
            if u.failed == 0 {
                "0".to_string()
            } else {
                format!("{} {:?}", u.failed, u.errors)
            },
            opt(p.cpu_bff, 2),
            opt(p.cpu_compute, 2),
            opt(p.cpu_machine, 2),
        )?;
    }

    // Targets: shared vs bulkhead.
    let find = |label: &str| {
        runs.iter()
            .find(|(l, _)| l == label)
            .and_then(|(_, r)| r.phases.iter().find(|p| p.name == "loaded"))
    };
    if let (Some(s), Some(b)) = (find("shared"), find("bulkhead")) {
        let (hs, hb, eb) = (dist(health_ms(s)), dist(health_ms(b)), dist(echo_rtt(b)));
        if let (Some(hs), Some(hb), Some(eb)) = (hs, hb, eb) {
            let ratio = hs.p99 / hb.p99;
            let gap = hb.p99 - eb.p99;
            let misses = b.health.iter().filter(|s| !s.ok).count();
            let tput = |p: &Phase| p.link_tx_mb_s.unwrap_or(f64::NAN);
            let up = |p: &Phase| p.uploads.as_ref().map_or(f64::NAN, |u| u.per_s);
            let tr = tput(b) / tput(s);
            let ur = up(b) / up(s);
            let verdict = |ok: bool| if ok { "**met**" } else { "**missed**" };
            writeln!(w, "\n### Targets (loaded window)\n")?;
            writeln!(w, "| target | measured | |")?;
            writeln!(w, "|---|---|---|")?;
            writeln!(
                w,
                "| realtime p99 shared / bulkhead ≥ 10× | {} / {} = {ratio:.1}× | {} |",
                ms(hs.p99),
                ms(hb.p99),
                verdict(ratio >= 10.0)
            )?;
            writeln!(
                w,
                "| bulkhead p99 within 20 ms of the echo's loaded p99 | {} − {} = {gap:+.1} ms | {} |",
                ms(hb.p99),
                ms(eb.p99),
                verdict(gap <= 20.0)
            )?;
            writeln!(
                w,
                "| zero deadline misses in bulkhead | {misses} | {} |",
                verdict(misses == 0)
            )?;
            writeln!(
                w,
                "| heavy throughput within 10 % of shared | link {:.2} vs {:.2} MB/s = {tr:.3}; uploads/s {:.2} vs {:.2} = {ur:.3} | {} |",
                tput(b),
                tput(s),
                up(b),
                up(s),
                verdict(tr >= 0.9)
            )?;
        }
    }

    writeln!(
        w,
        "\n### Per-lane metrics: `imagegate_lane_request_duration_seconds` (BFF `/metrics`, increase over each window)\n"
    )?;
    writeln!(
        w,
        "p50/p99 are estimated from the buckets as Prometheus' `histogram_quantile` does (linear within a bucket); then the count of calls per bucket.\n"
    )?;
    writeln!(
        w,
        "| mode | phase | lane | method | calls | p50 (est.) | p99 (est.) | ≤10ms | ≤25ms | ≤50ms | ≤100ms | ≤250ms | ≤500ms | ≤1s | ≤2.5s | >2.5s |"
    )?;
    writeln!(
        w,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (label, run) in &runs {
        for p in &run.phases {
            for h in &p.lane_durations {
                let mut all = h.buckets.clone();
                all.push((f64::INFINITY, h.count));
                let q = |q| bucket_quantile(&all, q).map_or("–".into(), |s| ms(s * 1e3));
                let cum_at = |le: f64| {
                    h.buckets
                        .iter()
                        .filter(|(l, _)| *l <= le + 1e-12)
                        .map(|(_, c)| *c)
                        .fold(0.0, f64::max)
                };
                let edges = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
                let mut cells = Vec::new();
                let mut prev = 0.0;
                for e in edges {
                    let c = cum_at(e);
                    cells.push(format!("{:.0}", c - prev));
                    prev = c;
                }
                cells.push(format!("{:.0}", h.count - prev));
                let method = h.method.rsplit('/').next().unwrap_or(&h.method);
                writeln!(
                    w,
                    "| {label} | {} | {} | {method} | {:.0} | {} | {} | {} |",
                    p.name,
                    h.lane,
                    h.count,
                    q(0.5),
                    q(0.99),
                    cells.join(" | ")
                )?;
            }
        }
    }
    let conns: Vec<String> = runs
        .iter()
        .map(|(label, r)| {
            let c = r
                .phases
                .last()
                .map(|p| {
                    p.lane_connections
                        .iter()
                        .map(|(k, v)| format!("{k}={v:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!("{label}: {c}")
        })
        .collect();
    writeln!(
        w,
        "\nOpen lane connections at the end (`imagegate_lane_connections`): {}.",
        conns.join("; ")
    )?;
    let rejected: Vec<String> = runs
        .iter()
        .flat_map(|(label, r)| {
            r.phases.iter().flat_map(move |p| {
                p.lane_rejected
                    .iter()
                    .filter(|(_, v)| **v > 0.0)
                    .map(move |(k, v)| format!("{label} {} {k}: {v:.0}", p.name))
            })
        })
        .collect();
    writeln!(
        w,
        "Lane rejections (`imagegate_lane_rejected_total`): {}.",
        if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join("; ")
        }
    )?;

    print!("{out}");
    std::io::stdout().flush()?;
    std::fs::write(dir.join("summary.md"), &out)?;
    Ok(())
}
