//! Configuration: one TOML file plus environment overrides, validated at start.
//!
//! Sources, later wins: built-in defaults (they run the whole system on loopback), the TOML
//! file (`--config` or `IMAGEGATE_CONFIG`), `IMAGEGATE_*` variables (`__` between levels, e.g.
//! `IMAGEGATE_LANES__HEAVY__MAX_IN_FLIGHT=64`), and the seed's `GRPC_COMPUTE_URL`. Unknown keys
//! and bad values are refused with a message that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default AVIF encoder speed (`compute.avif_speed`): a 24 MP photo in a few seconds on one
/// core (see docs/benchmarks-ops.md), at a size still well under WebP's.
pub const DEFAULT_AVIF_SPEED: u8 = 8;

/// The largest `tcp_rto_min` Linux takes (TCP_RTO_MIN is 200 ms; larger values are refused by
/// the kernel, so they are refused here, at start, naming the key).
pub const TCP_RTO_MIN_MAX: Duration = Duration::from_millis(200);

/// A byte size written as `"64MiB"`, `"512KiB"` or a plain integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const fn mib(n: u64) -> Self {
        Size(n * 1024 * 1024)
    }
    pub const fn kib(n: u64) -> Self {
        Size(n * 1024)
    }
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Str(s) => s
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| Size(b.as_u64()))
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid size {s:?} ({e}); write e.g. \"64MiB\" or \"512KiB\""
                    ))
                }),
        }
    }
}

/// How the BFF reaches compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Two lanes, each with its own connections and limits (default).
    Bulkhead,
    /// The seed's design: one TCP connection for every call (kept for comparison).
    Shared,
}

/// The whole configuration of both processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `bulkhead` or `shared`.
    pub mode: Mode,
    /// Where the BFF finds compute: `host:port`, `http://host:port`, `https://host:port`, a
    /// comma-separated list of those (replicas), or `dns://name:port` (every address the
    /// name resolves to, re-resolved every `resolve_interval`).
    pub compute_url: String,
    /// TLS from the BFF to compute (`[compute_tls]`).
    pub compute_tls: ComputeTlsConfig,
    pub bff: BffConfig,
    pub compute: ComputeConfig,
    pub lanes: Lanes,
    /// RPC → lane: keys `"compute.ImageService"` or `"compute.ImageService/Compress"` (wins).
    pub routes: BTreeMap<String, String>,
    /// Where uploads and batch results are stored (`[store]`).
    pub store: StoreConfig,
    /// Log output (`[log]`).
    pub log: LogConfig,
}

/// The top-level keys: an `IMAGEGATE_<KEY>` variable without `__` is a config path only when
/// it names one of these (anything else is a Kubernetes service link or a script's own).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "mode",
    "compute_url",
    "compute_tls",
    "bff",
    "compute",
    "lanes",
    "routes",
    "store",
    "log",
];

/// How log lines are written (`[log] format`); `RUST_LOG` is the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colour codes only when stderr is a terminal.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// A list of strings written as a TOML list or as one comma-separated string (the natural
/// form of an environment variable: `IMAGEGATE_BFF__CORS__ALLOWED_ORIGINS="https://a,https://b"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            One(String),
        }
        let items = match Raw::deserialize(d)? {
            Raw::List(v) => v,
            Raw::One(s) => s.split(',').map(str::to_string).collect(),
        };
        Ok(StringList(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

/// `[bff.cors]`: which web origins may call the API from a browser (CONTRACT §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins such as `"https://app.example.com"`, or `["*"]` for any; empty = CORS off.
    pub allowed_origins: StringList,
    /// How long a browser may cache a preflight's answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: StringList::default(),
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    fn validate(&self, errors: &mut Vec<String>) {
        for origin in &self.allowed_origins.0 {
            if origin == "*" {
                continue;
            }
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.bytes().all(|b| b.is_ascii_graphic())
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !ok {
                errors.push(format!(
                    "bff.cors.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path, no trailing slash) or \"*\""
                ));
            }
        }
        if self.max_age > Duration::from_secs(86_400) {
            errors.push("bff.cors.max_age: must be at most 24h".into());
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BffConfig {
    pub listen: SocketAddr,
    /// Actix worker threads (0 = one per core).
    pub workers: usize,
    /// Largest single uploaded file.
    pub max_file_size: Size,
    /// Largest whole request body.
    pub max_request_size: Size,
    /// Most `file` parts in one batch.
    pub max_files: usize,
    /// Largest text form field (quality, text, …).
    pub max_field_size: Size,
    /// Most text fields in one request (stops "thousands of parts").
    pub max_fields: usize,
    /// Request bodies the BFF holds in memory at once, across all requests: past it, a
    /// request that needs more is answered 503 + `Retry-After` (its body is read and dropped,
    /// not kept), so many concurrent uploads cannot exhaust memory.
    pub max_buffered_bytes: Size,
    /// Deadline of the `/health` check over the realtime lane.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// How long a client may take to send its request headers.
    #[serde(with = "humantime_serde")]
    pub client_request_timeout: Duration,
    /// How long a request body may go without a new byte arriving before it is answered 408
    /// (a stalled or abandoned upload): idle time between chunks, not the whole upload's.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// API keys (`Authorization: Bearer <key>` or `X-API-Key: <key>`); empty = auth off.
    /// A TOML list or one comma-separated string; `Debug` redacts them.
    pub api_keys: crate::edge::auth::ApiKeys,
    /// Where `/metrics` and `/admin/reload` are served instead of `listen` (unset: on `listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Graceful shutdown: how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Cross-origin access from browsers (`[bff.cors]`; off by default).
    #[serde(default)]
    pub cors: CorsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// Largest gRPC message received or sent.
    pub max_message_size: Size,
    /// Largest decoded or produced image, in pixels.
    pub max_pixels: u64,
    /// CPU pool threads for image work (0 = one per core).
    pub workers: usize,
    /// Jobs that may wait for a CPU thread; beyond that, RESOURCE_EXHAUSTED / QUEUE_FULL.
    pub queue_capacity: usize,
    /// AVIF encoder speed, 1 (slowest, smallest files) to 10 (fastest): bounds the time of an
    /// AVIF encode, which runs on one CPU worker like any job.
    pub avif_speed: u8,
    /// FileService.Extract: most entries (of any kind) an archive may have.
    pub archive_max_entries: usize,
    /// FileService.Extract: how many times its compressed size an entry may expand (archive
    /// bombs). The total is bounded by `max_message_size`, what one answer may carry.
    pub archive_max_expansion: u64,
    /// Graceful shutdown: how long in-flight work may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Nice value of the CPU pool's threads (0–19): image work yields the core to the gRPC
    /// I/O threads, so a busy compute still answers health checks at once.
    pub cpu_nice: i32,
    /// Floor of the retransmission timeout on accepted connections (Linux ≥ 6.15;
    /// `"0s"` = the kernel's 200 ms). See `docs/benchmarks-hol.md`.
    #[serde(with = "humantime_serde")]
    pub tcp_rto_min: Duration,
    /// TLS: PEM certificate chain and private key. Both set = the server speaks TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// Mutual TLS: PEM CA bundle; when set, clients must present a certificate it signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<String>,
}

/// How the BFF's lanes speak TLS to compute (`[compute_tls]`). TLS is on for `https://`
/// addresses, or for every address (`dns://` included) when `enabled = true`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeTlsConfig {
    pub enabled: bool,
    /// PEM CA bundle that signs compute's certificate (default: the system's web PKI roots
    /// are not loaded, so set this for a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Mutual TLS: the BFF's own PEM certificate chain and private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The name compute's certificate must carry (default: the address's host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ComputeTlsConfig {
    // Paths only, never key material; still, say which parts are set rather than print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeTlsConfig")
            .field("enabled", &self.enabled)
            .field("ca_cert", &self.ca_cert)
            .field("cert", &self.cert)
            .field("key", &self.key.as_ref().map(|_| "<path set>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ComputeTlsConfig {
    fn validate(&self, errors: &mut Vec<String>) {
        if self.cert.is_some() != self.key.is_some() {
            errors.push("compute_tls.cert, compute_tls.key: set both or neither".into());
        }
        for (key, path) in [
            ("ca_cert", &self.ca_cert),
            ("cert", &self.cert),
            ("key", &self.key),
        ] {
            if let Some(path) = path {
                if !Path::new(path).is_file() {
                    errors.push(format!("compute_tls.{key}: no such file {path:?}"));
                }
            }
        }
    }
}

/// The lanes: `heavy` and `realtime` always exist; any other table under `[lanes]` is a lane
/// of your own (e.g. `[lanes.files]` with its own `url`), used through `[routes]`. Keys a
/// custom lane leaves out take the heavy lane's defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lanes {
    pub heavy: LaneConfig,
    pub realtime: LaneConfig,
    #[serde(flatten)]
    pub custom: BTreeMap<String, LaneConfig>,
}

impl Lanes {
    /// Every lane with its name, `heavy` and `realtime` first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LaneConfig)> {
        [("heavy", &self.heavy), ("realtime", &self.realtime)]
            .into_iter()
            .chain(self.custom.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// A lane's config by name.
    pub fn get(&self, name: &str) -> Option<&LaneConfig> {
        self.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
    }
}

/// One bulkhead lane's limits (CONTRACT §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default = "LaneConfig::heavy_defaults")]
pub struct LaneConfig {
    /// The lane's own compute address (a service on another host); default: `compute_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP/2 connections (each its own TCP connection) to each compute endpoint.
    pub connections: usize,
    /// Requests the lane lets run at once: the limit when `concurrency = "fixed"`, the
    /// ceiling of the limit when it is `"adaptive"`.
    pub max_in_flight: usize,
    /// `adaptive`: the lane finds its own limit from how compute answers; `fixed`:
    /// `max_in_flight` is the limit.
    pub concurrency: Concurrency,
    /// The floor of an adaptive limit.
    pub min_in_flight: usize,
    /// How long a request may wait for a permit before it is shed with 503.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
    /// How many requests may wait for a permit at once; beyond that a request is shed at
    /// once (503) instead of waiting out `queue_wait` behind a queue that never drains.
    pub max_queued: usize,
    /// Per-call deadline, sent as grpc-timeout.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Safe retries: only UNAVAILABLE before the request reached the server.
    pub retries: u32,
    /// Base of the exponential, jittered retry backoff.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Retries allowed as a share of recent requests (plus a small floor), so retries
    /// cannot multiply load during an outage.
    pub retry_budget_ratio: f32,
    /// HTTP/2 PING keepalive.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// TCP connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest gRPC message sent or received.
    pub max_message_size: Size,
    /// HTTP/2 receive windows (what compute may send back before we read it).
    pub stream_window: Size,
    pub connection_window: Size,
    /// Threads of the lane's own Tokio runtime, which drives its HTTP/2 connections.
    pub io_threads: usize,
    /// Circuit breaker: consecutive compute failures that open it (0 = off).
    pub circuit_failures: u32,
    /// …or this share of failures over the last `circuit_window` calls (0 = off).
    pub circuit_failure_rate: f32,
    pub circuit_window: usize,
    /// How long an open circuit fails fast before a probe call is let through.
    #[serde(with = "humantime_serde")]
    pub circuit_open_for: Duration,
    /// Replicas: consecutive failed calls (or connects) that eject one compute endpoint from
    /// the lane's rotation (0 = never eject).
    pub eject_after: u32,
    /// How long a first ejection lasts; each further one doubles it up to `eject_max`. After
    /// it, one probe call is let through: success readmits the endpoint.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
    #[serde(with = "humantime_serde")]
    pub eject_max: Duration,
    /// How often a `dns://` address is resolved again (endpoints that appear are added, those
    /// that vanish are drained).
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// Floor of TCP's retransmission timeout on the lane's connections (Linux ≥ 6.15;
    /// `"0s"` = the kernel's 200 ms): a small call that loses its last packet waits this
    /// long, not 200 ms, before it is resent. See `docs/benchmarks-hol.md`.
    #[serde(with = "humantime_serde")]
    pub tcp_rto_min: Duration,
}

impl LaneConfig {
    /// The breaker thresholds of this lane.
    pub fn circuit(&self) -> crate::dispatch::circuit::CircuitSettings {
        crate::dispatch::circuit::CircuitSettings {
            failures: self.circuit_failures,
            failure_rate: self.circuit_failure_rate,
            window: self.circuit_window,
            open_for: self.circuit_open_for,
        }
    }

    pub fn heavy_defaults() -> Self {
        LaneConfig {
            url: None,
            connections: 4,
            max_in_flight: 32,
            concurrency: Concurrency::Adaptive,
            min_in_flight: 1,
            queue_wait: Duration::from_millis(250),
            max_queued: 16,
            deadline: Duration::from_secs(30),
            retries: 2,
            retry_backoff: Duration::from_millis(50),
            retry_budget_ratio: 0.2,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_message_size: Size::mib(64),
            stream_window: Size::mib(2),
            connection_window: Size::mib(8),
            io_threads: 2,
            circuit_failures: 5,
            circuit_failure_rate: 0.5,
            circuit_window: 20,
            circuit_open_for: Duration::from_secs(5),
            eject_after: 3,
            eject_for: Duration::from_secs(1),
            eject_max: Duration::from_secs(30),
            resolve_interval: Duration::from_secs(5),
            tcp_rto_min: Duration::from_millis(20),
        }
    }

    pub fn realtime_defaults() -> Self {
        LaneConfig {
            url: None,
            connections: 1,
            max_in_flight: 256,
            concurrency: Concurrency::Fixed,
            min_in_flight: 1,
            queue_wait: Duration::from_millis(50),
            max_queued: 128,
            deadline: Duration::from_secs(2),
            retries: 1,
            retry_backoff: Duration::from_millis(20),
            retry_budget_ratio: 0.2,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_message_size: Size::mib(4),
            stream_window: Size::kib(256),
            connection_window: Size::mib(1),
            io_threads: 1,
            circuit_failures: 3,
            circuit_failure_rate: 0.5,
            circuit_window: 20,
            circuit_open_for: Duration::from_secs(1),
            eject_after: 3,
            eject_for: Duration::from_secs(1),
            eject_max: Duration::from_secs(30),
            resolve_interval: Duration::from_secs(5),
            tcp_rto_min: Duration::from_millis(20),
        }
    }

    fn validate(&self, key: &str, errors: &mut Vec<String>) {
        let mut check = |ok: bool, field: &str, why: &str| {
            if !ok {
                errors.push(format!("lanes.{key}.{field}: {why}"));
            }
        };
        check(
            (1..=64).contains(&self.connections),
            "connections",
            "must be 1..=64",
        );
        check(
            (1..=100_000).contains(&self.max_in_flight),
            "max_in_flight",
            "must be 1..=100000",
        );
        check(
            self.min_in_flight >= 1 && self.min_in_flight <= self.max_in_flight,
            "min_in_flight",
            "must be 1..=max_in_flight",
        );
        check(
            self.max_queued <= 100_000,
            "max_queued",
            "must be 0..=100000",
        );
        check(
            self.queue_wait <= Duration::from_secs(60),
            "queue_wait",
            "must be at most 60s",
        );
        check(
            self.deadline >= Duration::from_millis(1),
            "deadline",
            "must be at least 1ms",
        );
        check(self.retries <= 10, "retries", "must be 0..=10");
        check(
            (0.0..=10.0).contains(&self.retry_budget_ratio),
            "retry_budget_ratio",
            "must be 0..=10",
        );
        check(
            self.keepalive_interval >= Duration::from_millis(100),
            "keepalive_interval",
            "must be at least 100ms",
        );
        check(
            self.keepalive_timeout >= Duration::from_millis(100),
            "keepalive_timeout",
            "must be at least 100ms",
        );
        check(
            self.connect_timeout >= Duration::from_millis(1),
            "connect_timeout",
            "must be at least 1ms",
        );
        check(
            (Size::kib(1)..=Size::mib(1024)).contains(&self.max_message_size),
            "max_message_size",
            "must be 1KiB..=1GiB",
        );
        check(
            (Size::kib(64)..=Size(i32::MAX as u64)).contains(&self.stream_window),
            "stream_window",
            "must be 64KiB..=2GiB",
        );
        check(
            (Size::kib(64)..=Size(i32::MAX as u64)).contains(&self.connection_window),
            "connection_window",
            "must be 64KiB..=2GiB",
        );
        check(
            (1..=64).contains(&self.io_threads),
            "io_threads",
            "must be 1..=64",
        );
        check(
            (0.0..=1.0).contains(&self.circuit_failure_rate),
            "circuit_failure_rate",
            "must be 0..=1",
        );
        check(
            (1..=10_000).contains(&self.circuit_window),
            "circuit_window",
            "must be 1..=10000",
        );
        check(
            self.circuit_open_for >= Duration::from_millis(10)
                && self.circuit_open_for <= Duration::from_secs(600),
            "circuit_open_for",
            "must be 10ms..=10m",
        );
        check(
            self.eject_for >= Duration::from_millis(10) && self.eject_for <= self.eject_max,
            "eject_for",
            "must be at least 10ms and at most eject_max",
        );
        check(
            self.eject_max <= Duration::from_secs(3600),
            "eject_max",
            "must be at most 1h",
        );
        check(
            self.resolve_interval >= Duration::from_millis(100),
            "resolve_interval",
            "must be at least 100ms",
        );
        check(
            self.tcp_rto_min <= TCP_RTO_MIN_MAX,
            "tcp_rto_min",
            "must be at most 200ms, the kernel's own floor (0s = the kernel's default)",
        );
    }
}

/// How a lane's concurrency limit is set (`concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Between `min_in_flight` and `max_in_flight`, moved by the measured wait in front of
    /// compute, QUEUE_FULL answers and deadlines (see `dispatch::adaptive`).
    Adaptive,
    /// `max_in_flight`, as configured.
    Fixed,
}

/// Which object store keeps uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A local directory (`store.dir`), created at start.
    Fs,
    /// Any S3-compatible object store (`store.bucket`, `store.endpoint`, …).
    S3,
}

/// `[store]`: where uploads and batch results live, and how long they are kept.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `fs` (default) or `s3`.
    pub backend: StoreBackend,
    /// `fs`: the data directory (created at start).
    pub dir: String,
    /// Key prefix inside the directory or bucket (`""` = its root); lets a bucket be shared.
    pub prefix: String,
    /// `s3`: the bucket (must exist).
    pub bucket: String,
    /// `s3`: endpoint URL of an S3-compatible service; empty = AWS itself.
    pub endpoint: String,
    /// `s3`: the region; empty = `AWS_REGION` or else `us-east-1` (S3-compatible services
    /// usually accept any).
    pub region: String,
    /// `s3`: credentials; empty = the standard `AWS_*` environment variables.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `s3`: allow a plain `http://` endpoint (a local or in-cluster service).
    pub allow_http: bool,
    /// Deadline of one store operation (a put, get or delete).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retention: objects older than this are removed (`"0s"` = no age limit).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Retention: above this total, the oldest objects are removed (`0` = no size limit).
    pub max_total_bytes: Size,
    /// How often the retention sweep runs (it also runs once at start).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Fs,
            dir: "./data/uploads".into(),
            prefix: String::new(),
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_total_bytes: Size::mib(1024),
            sweep_interval: Duration::from_secs(300),
        }
    }
}

// By hand, so that the secret never reaches a log line.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret_access_key.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .field("max_total_bytes", &self.max_total_bytes)
            .field("sweep_interval", &self.sweep_interval)
            .finish()
    }
}

impl StoreConfig {
    fn validate(&self, errors: &mut Vec<String>) {
        let mut check = |ok: bool, field: &str, why: &str| {
            if !ok {
                errors.push(format!("store.{field}: {why}"));
            }
        };
        match self.backend {
            StoreBackend::Fs => check(
                !self.dir.trim().is_empty(),
                "dir",
                "must name a directory when store.backend = \"fs\"",
            ),
            StoreBackend::S3 => {
                check(
                    !self.bucket.trim().is_empty(),
                    "bucket",
                    "is required when store.backend = \"s3\"",
                );
                let endpoint = self.endpoint.trim();
                check(
                    endpoint.is_empty()
                        || endpoint.starts_with("https://")
                        || endpoint.starts_with("http://"),
                    "endpoint",
                    "must be an http:// or https:// URL (or empty for AWS)",
                );
                check(
                    !endpoint.starts_with("http://") || self.allow_http,
                    "endpoint",
                    "is plain http://; set store.allow_http = true to allow it",
                );
                check(
                    self.access_key_id.is_empty() == self.secret_access_key.is_empty(),
                    "secret_access_key",
                    "give both store.access_key_id and store.secret_access_key, or neither",
                );
            }
        }
        check(
            self.prefix.is_empty()
                || self.prefix.split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                }),
            "prefix",
            "must be empty or segments of [A-Za-z0-9._-] separated by single `/` (no `..`)",
        );
        check(
            self.timeout >= Duration::from_millis(1),
            "timeout",
            "must be at least 1ms",
        );
        check(
            self.sweep_interval >= Duration::from_secs(1),
            "sweep_interval",
            "must be at least 1s",
        );
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Bulkhead,
            compute_url: "http://127.0.0.1:50051".into(),
            compute_tls: ComputeTlsConfig::default(),
            bff: BffConfig {
                listen: "127.0.0.1:8080".parse().expect("valid"),
                workers: 0,
                max_file_size: Size::mib(20),
                max_request_size: Size::mib(100),
                max_files: 32,
                max_field_size: Size::kib(64),
                max_fields: 64,
                max_buffered_bytes: Size::mib(1024),
                health_timeout: Duration::from_secs(1),
                client_request_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                api_keys: Default::default(),
                admin_listen: None,
                shutdown_timeout: Duration::from_secs(30),
                cors: CorsConfig::default(),
            },
            compute: ComputeConfig {
                listen: "127.0.0.1:50051".parse().expect("valid"),
                metrics_listen: "127.0.0.1:9464".parse().expect("valid"),
                max_message_size: Size::mib(64),
                max_pixels: 50_000_000,
                workers: 0,
                queue_capacity: 64,
                avif_speed: DEFAULT_AVIF_SPEED,
                archive_max_entries: 1000,
                archive_max_expansion: 1000,
                drain_timeout: Duration::from_secs(30),
                cpu_nice: 5,
                tcp_rto_min: Duration::from_millis(20),
                tls_cert: None,
                tls_key: None,
                tls_client_ca: None,
            },
            lanes: Lanes {
                heavy: LaneConfig::heavy_defaults(),
                realtime: LaneConfig::realtime_defaults(),
                custom: BTreeMap::new(),
            },
            routes: default_routes(),
            store: StoreConfig::default(),
            log: LogConfig {
                format: LogFormat::Text,
            },
        }
    }
}

fn default_routes() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("compute.ImageService".to_string(), "heavy".to_string()),
        ("compute.HealthService".to_string(), "realtime".to_string()),
        ("compute.FileService".to_string(), "heavy".to_string()),
    ])
}

impl Config {
    /// Defaults, then the file (if any), then `IMAGEGATE_*` and `GRPC_COMPUTE_URL`; validated.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("IMAGEGATE_CONFIG").map(Into::into));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(env_provider()))
    }

    /// Defaults merged with a TOML string (tests and examples), no environment.
    pub fn from_toml(toml: &str) -> anyhow::Result<Config> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Config> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.compute_url = normalize_compute_url(&config.compute_url)
            .map_err(|why| anyhow::anyhow!("invalid configuration: compute_url: {why}"))?;
        let lanes = &mut config.lanes;
        for (name, lane) in [
            ("heavy", &mut lanes.heavy),
            ("realtime", &mut lanes.realtime),
        ]
        .into_iter()
        .chain(lanes.custom.iter_mut().map(|(k, v)| (k.as_str(), v)))
        {
            if let Some(url) = &lane.url {
                lane.url = Some(normalize_compute_url(url).map_err(|why| {
                    anyhow::anyhow!("invalid configuration: lanes.{name}.url: {why}")
                })?);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and reports all bad keys at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for (name, lane) in self.lanes.iter() {
            lane.validate(name, &mut errors);
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid_name {
                errors.push(format!(
                    "lanes.{name}: a lane name is lowercase letters, digits, '_' or '-'"
                ));
            }
            if !matches!(name, "heavy" | "realtime") && !self.routes.values().any(|l| l == name) {
                errors.push(format!(
                    "lanes.{name}: no route in [routes] uses this lane (a typo of a lane name?)"
                ));
            }
        }
        let b = &self.bff;
        if b.max_file_size.0 == 0 {
            errors.push("bff.max_file_size: must be above 0".into());
        }
        if b.max_request_size < b.max_file_size {
            errors.push("bff.max_request_size: must be at least bff.max_file_size".into());
        }
        if !(1..=10_000).contains(&b.max_files) {
            errors.push("bff.max_files: must be 1..=10000".into());
        }
        if !(1..=10_000).contains(&b.max_fields) {
            errors.push("bff.max_fields: must be 1..=10000".into());
        }
        if b.max_buffered_bytes < b.max_request_size {
            errors.push(
                "bff.max_buffered_bytes: must be at least bff.max_request_size (or no request of the largest size could ever be read)".into(),
            );
        }
        if b.max_field_size < Size(16) {
            errors.push("bff.max_field_size: must be at least 16 bytes".into());
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&b.body_read_timeout) {
            errors.push("bff.body_read_timeout: must be 10ms..=1h".into());
        }
        b.api_keys.validate(&mut errors);
        b.cors.validate(&mut errors);
        if b.admin_listen
            .is_some_and(|a| a == b.listen && a.port() != 0)
        {
            errors.push("bff.admin_listen: must differ from bff.listen".into());
        }
        let c = &self.compute;
        if c.max_pixels == 0 {
            errors.push("compute.max_pixels: must be above 0".into());
        }
        if c.max_message_size < Size::kib(1) {
            errors.push("compute.max_message_size: must be at least 1KiB".into());
        }
        if c.queue_capacity == 0 {
            errors.push("compute.queue_capacity: must be above 0".into());
        }
        if c.archive_max_entries == 0 {
            errors.push("compute.archive_max_entries: must be above 0".into());
        }
        if c.archive_max_expansion == 0 {
            errors.push("compute.archive_max_expansion: must be above 0".into());
        }
        if !(1..=10).contains(&c.avif_speed) {
            errors.push("compute.avif_speed: must be 1..=10".into());
        }
        if !(0..=19).contains(&c.cpu_nice) {
            errors.push("compute.cpu_nice: must be 0..=19".into());
        }
        if c.tcp_rto_min > TCP_RTO_MIN_MAX {
            errors.push(
                "compute.tcp_rto_min: must be at most 200ms, the kernel's own floor (0s = the kernel's default)"
                    .into(),
            );
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            errors.push("compute.tls_cert, compute.tls_key: set both or neither".into());
        }
        if c.tls_client_ca.is_some() && c.tls_cert.is_none() {
            errors.push("compute.tls_client_ca: needs compute.tls_cert and compute.tls_key".into());
        }
        self.compute_tls.validate(&mut errors);
        self.store.validate(&mut errors);
        for (key, lane) in &self.routes {
            if !is_route_key(key) {
                errors.push(format!(
                    "routes.\"{key}\": a key is a service (\"compute.ImageService\") or a method (\"compute.ImageService/Compress\")"
                ));
            }
            if self.lanes.get(lane).is_none() {
                let names: Vec<&str> = self.lanes.iter().map(|(n, _)| n).collect();
                errors.push(format!(
                    "routes.\"{key}\": unknown lane {lane:?}, expected one of {names:?}"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  {}", errors.join("\n  "))
        }
    }

    /// The lane an RPC path (`/compute.ImageService/Compress`) is routed to: the method's own
    /// entry wins over its service's; unrouted RPCs go to `heavy`.
    pub fn lane_for(&self, path: &str) -> &str {
        route(&self.routes, path)
    }
}

/// The routing rule: a method's own entry wins over its service's; unrouted RPCs take the
/// heavy lane. `method` may start with `/`.
pub fn route<'a>(routes: &'a BTreeMap<String, String>, method: &str) -> &'a str {
    let method = method.trim_start_matches('/');
    let service = method.split('/').next().unwrap_or(method);
    routes
        .get(method)
        .or_else(|| routes.get(service))
        .map(String::as_str)
        .unwrap_or("heavy")
}

fn is_route_key(key: &str) -> bool {
    let mut parts = key.split('/');
    let service = parts.next().unwrap_or("");
    let method = parts.next();
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    parts.next().is_none()
        && service.split('.').all(ident)
        && service.contains('.')
        && method.is_none_or(ident)
}

/// `IMAGEGATE_A__B=…` → `a.b`, and `GRPC_COMPUTE_URL` → `compute_url`.
///
/// Only variables that are config paths are read: a name with `__`, or one naming a top-level
/// key (`IMAGEGATE_MODE`, `IMAGEGATE_COMPUTE_URL`). Those stay strict: an unknown path or a bad
/// value refuses to start, naming the key. Every other `IMAGEGATE_*` is left alone (see
/// [`ignored_env_vars`]): the kubelet injects `IMAGEGATE_BFF_SERVICE_HOST`,
/// `IMAGEGATE_COMPUTE_PORT_50051_TCP`, … for the project's own Services, and a pod must not
/// crash-loop on them.
fn env_provider() -> Figment {
    Figment::new()
        .merge(
            Env::prefixed("IMAGEGATE_")
                .filter(|k| is_config_env_key(k.as_str()))
                .split("__"),
        )
        .merge(
            Env::raw()
                .only(&["GRPC_COMPUTE_URL"])
                .map(|_| "compute_url".into()),
        )
}

/// Whether `IMAGEGATE_<key>` (key lower-cased, prefix stripped) is a config path.
fn is_config_env_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key != "config" && (key.contains("__") || TOP_LEVEL_KEYS.contains(&key.as_str()))
}

/// The `IMAGEGATE_*` variables of this process that are not config paths and were ignored
/// (Kubernetes service links and the like): logged once at start, so that a typo such as
/// `IMAGEGATE_LANES_HEAVY__…` does not go unseen.
pub fn ignored_env_vars() -> Vec<String> {
    ignored_among(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
}

fn ignored_among(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut ignored: Vec<String> = names
        .filter(|name| {
            name.len() > "IMAGEGATE_".len()
                && name[.."IMAGEGATE_".len()].eq_ignore_ascii_case("IMAGEGATE_")
                && !is_config_env_key(&name["IMAGEGATE_".len()..])
                // The config file's path: read by `Config::load` itself.
                && !name["IMAGEGATE_".len()..].eq_ignore_ascii_case("config")
        })
        .collect();
    ignored.sort();
    ignored
}

/// Accepts the seed's `host:port` as well as `http://host:port`, lists and `dns://` names
/// (see [`crate::dispatch::target`]), and writes it in one canonical form.
fn normalize_compute_url(url: &str) -> Result<String, String> {
    crate::dispatch::target::Target::parse(url).map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.mode, Mode::Bulkhead);
        assert_eq!(c.lanes.heavy.connections, 4);
        assert_eq!(c.lanes.heavy.max_in_flight, 32);
        assert_eq!(c.lanes.heavy.queue_wait, Duration::from_millis(250));
        assert_eq!(c.lanes.heavy.deadline, Duration::from_secs(30));
        assert_eq!(c.lanes.realtime.connections, 1);
        assert_eq!(c.lanes.realtime.max_in_flight, 256);
        assert_eq!(c.lanes.realtime.max_message_size, Size::mib(4));
        assert_eq!(c.lane_for("/compute.ImageService/Compress"), "heavy");
        assert_eq!(c.lane_for("/compute.HealthService/Check"), "realtime");
    }

    #[test]
    fn a_partial_lane_table_keeps_that_lanes_defaults() {
        let c =
            Config::from_toml("[lanes.realtime]\nmax_in_flight = 7\nqueue_wait = \"5ms\"").unwrap();
        assert_eq!(c.lanes.realtime.max_in_flight, 7);
        assert_eq!(c.lanes.realtime.queue_wait, Duration::from_millis(5));
        assert_eq!(c.lanes.realtime.deadline, Duration::from_secs(2));
        assert_eq!(c.lanes.heavy.max_in_flight, 32);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::from_toml("[lanes.heavy]\nmax_inflight = 3").unwrap_err();
        assert!(e.to_string().contains("max_inflight"), "{e}");
        let e = Config::from_toml("[lanes.heavy]\nmax_in_flight = 0").unwrap_err();
        assert!(e.to_string().contains("lanes.heavy.max_in_flight"), "{e}");
        let e = Config::from_toml("[lanes.heavy]\nqueue_wait = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("queue_wait"), "{e}");
        let e = Config::from_toml("[lanes.heavy]\nmax_message_size = \"lots\"").unwrap_err();
        assert!(e.to_string().contains("max_message_size"), "{e}");
        let e = Config::from_toml("[routes]\n\"compute.ImageService\" = \"fast\"").unwrap_err();
        assert!(e.to_string().contains("compute.ImageService"), "{e}");
    }

    #[test]
    fn method_routes_win_over_service_routes() {
        let c =
            Config::from_toml("[routes]\n\"compute.ImageService/Resize\" = \"realtime\"").unwrap();
        assert_eq!(c.lane_for("/compute.ImageService/Resize"), "realtime");
        assert_eq!(c.lane_for("/compute.ImageService/Compress"), "heavy");
    }

    #[test]
    fn a_lane_of_its_own_is_made_by_config_alone() {
        let c = Config::from_toml(
            "[lanes.files]\nurl = \"files-host:50052\"\nmax_in_flight = 8\n\
             [routes]\n\"compute.FileService\" = \"files\"",
        )
        .unwrap();
        let files = c.lanes.get("files").unwrap();
        assert_eq!(files.url.as_deref(), Some("http://files-host:50052"));
        assert_eq!(files.max_in_flight, 8);
        assert_eq!(
            files.deadline,
            Duration::from_secs(30),
            "unset keys: heavy defaults"
        );
        assert_eq!(c.lane_for("/compute.FileService/Upload"), "files");
        // A lane no route uses is most likely a typo.
        let e = Config::from_toml("[lanes.heavvy]\nmax_in_flight = 8").unwrap_err();
        assert!(e.to_string().contains("lanes.heavvy"), "{e}");
        let e = Config::from_toml("[lanes.files]\nmax_inflight = 8\n[routes]\n\"a.B\" = \"files\"")
            .unwrap_err();
        assert!(e.to_string().contains("max_inflight"), "{e}");
    }

    #[test]
    fn compute_url_accepts_the_seeds_forms() {
        assert_eq!(
            normalize_compute_url("localhost:50051").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(
            normalize_compute_url("http://10.0.0.1:9000").unwrap(),
            "http://10.0.0.1:9000"
        );
        assert!(normalize_compute_url("localhost").is_err());
        assert!(normalize_compute_url("ftp://x:1").is_err());
    }

    #[test]
    fn the_store_section_has_defaults_and_names_bad_keys() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Fs);
        assert_eq!(c.store.dir, "./data/uploads");
        let c = Config::from_toml(
            "[store]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nmax_age = \"1h\"\nmax_total_bytes = \"5MiB\"",
        )
        .unwrap();
        assert_eq!(c.store.backend, StoreBackend::S3);
        assert_eq!(c.store.max_age, Duration::from_secs(3600));
        assert_eq!(c.store.max_total_bytes, Size::mib(5));
        let e = Config::from_toml("[store]\nbackend = \"s3\"").unwrap_err();
        assert!(e.to_string().contains("store.bucket"), "{e}");
        let e = Config::from_toml(
            "[store]\nbackend = \"s3\"\nbucket = \"b\"\nendpoint = \"http://x:1\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("store.allow_http"), "{e}");
        let e = Config::from_toml("[store]\nprefix = \"../up\"").unwrap_err();
        assert!(e.to_string().contains("store.prefix"), "{e}");
        let e = Config::from_toml("[store]\nbucket_name = \"b\"").unwrap_err();
        assert!(e.to_string().contains("bucket_name"), "{e}");
        let e = Config::from_toml("[store]\nbackend = \"ftp\"").unwrap_err();
        assert!(e.to_string().contains("backend"), "{e}");
        let c =
            Config::from_toml("[store]\nsecret_access_key = \"hunter2\"\naccess_key_id = \"a\"")
                .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn service_link_variables_are_not_config_paths() {
        for k in [
            "bff_service_host",
            "compute_port_50051_tcp",
            "compute_service_port_grpc",
            "foo",
            "config",
        ] {
            assert!(!is_config_env_key(k), "{k}");
        }
        for k in [
            "lanes__heavy__max_in_flight",
            "mode",
            "compute_url",
            "bff__listen",
            "lanes__heavy__max_inflight",
        ] {
            assert!(is_config_env_key(k), "{k}");
        }
        let ignored = ignored_among(
            [
                "IMAGEGATE_BFF_SERVICE_HOST",
                "IMAGEGATE_MODE",
                "IMAGEGATE_LANES__HEAVY__RETRIES",
                "IMAGEGATE_CONFIG",
                "PATH",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(ignored, ["IMAGEGATE_BFF_SERVICE_HOST"]);
    }

    #[test]
    fn cors_origins_take_a_list_or_a_comma_string() {
        let c = Config::from_toml(
            "[bff.cors]\nallowed_origins = \"https://a.example, http://localhost:3000\"\nmax_age = \"1m\"",
        )
        .unwrap();
        assert_eq!(
            c.bff.cors.allowed_origins.0,
            ["https://a.example", "http://localhost:3000"]
        );
        assert_eq!(c.bff.cors.max_age, Duration::from_secs(60));
        let c = Config::from_toml("[bff.cors]\nallowed_origins = [\"*\"]").unwrap();
        assert_eq!(c.bff.cors.allowed_origins.0, ["*"]);
        assert_eq!(c.bff.cors.max_age, Duration::from_secs(600));
        let e = Config::from_toml("[bff.cors]\nallowed_origins = [\"https://a.example/\"]")
            .unwrap_err();
        assert!(e.to_string().contains("bff.cors.allowed_origins"), "{e}");
        assert!(Config::from_toml("")
            .unwrap()
            .bff
            .cors
            .allowed_origins
            .0
            .is_empty());
    }

    #[test]
    fn lanes_have_a_concurrency_mode_and_a_floor() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.lanes.heavy.concurrency, Concurrency::Adaptive);
        assert_eq!(c.lanes.realtime.concurrency, Concurrency::Fixed);
        assert_eq!(c.lanes.heavy.min_in_flight, 1);
        let c =
            Config::from_toml("[lanes.heavy]\nconcurrency = \"fixed\"\nmin_in_flight = 4").unwrap();
        assert_eq!(c.lanes.heavy.concurrency, Concurrency::Fixed);
        let e = Config::from_toml("[lanes.heavy]\nmin_in_flight = 40").unwrap_err();
        assert!(e.to_string().contains("lanes.heavy.min_in_flight"), "{e}");
        let e = Config::from_toml("[lanes.heavy]\nconcurrency = \"auto\"").unwrap_err();
        assert!(e.to_string().contains("concurrency"), "{e}");
        let e = Config::from_toml("[log]\nformat = \"xml\"").unwrap_err();
        assert!(e.to_string().contains("format"), "{e}");
    }

    #[test]
    fn tcp_rto_min_above_the_kernels_floor_is_refused_naming_the_key() {
        assert!(Config::from_toml("[lanes.heavy]\ntcp_rto_min = \"200ms\"").is_ok());
        let e = Config::from_toml("[lanes.heavy]\ntcp_rto_min = \"500ms\"").unwrap_err();
        assert!(e.to_string().contains("lanes.heavy.tcp_rto_min"), "{e}");
        let e = Config::from_toml("[compute]\ntcp_rto_min = \"1s\"").unwrap_err();
        assert!(e.to_string().contains("compute.tcp_rto_min"), "{e}");
    }

    #[test]
    fn sizes_parse_from_strings_and_integers() {
        let c = Config::from_toml("[bff]\nmax_file_size = \"1MiB\"\nmax_request_size = 2097152")
            .unwrap();
        assert_eq!(c.bff.max_file_size, Size::mib(1));
        assert_eq!(c.bff.max_request_size, Size::mib(2));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_equals_the_defaults() {
        let text = include_str!("../deploy/imagegate.example.toml");
        let example = Config::from_toml(text).unwrap();
        let defaults = Config::default();
        assert_eq!(example.lanes.heavy, defaults.lanes.heavy);
        assert_eq!(example.lanes.realtime, defaults.lanes.realtime);
        assert_eq!(example.routes, defaults.routes);
        assert_eq!(example.bff.max_file_size, defaults.bff.max_file_size);
        assert_eq!(example.compute.max_pixels, defaults.compute.max_pixels);
    }
}
