//! `[compute]` (the compute server) and `[compute_tls]` (how the BFF's lanes speak TLS to it).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// Default AVIF encoder speed (`compute.avif_speed`), rav1e's fastest: a 24 MP photo in ~6-7 s
/// on one core of our bench machine. Speed 8 makes ~10 % smaller files at equal SSIMULACRA2 but
/// takes 14-24 s, too close to the heavy lane's 30 s deadline (docs/benchmarks-ops.md).
pub const DEFAULT_AVIF_SPEED: u8 = 10;

/// The largest `tcp_rto_min` Linux takes (TCP_RTO_MIN is 200 ms; larger values are refused by
/// the kernel, so they are refused here, at start, naming the key).
pub const TCP_RTO_MIN_MAX: Duration = Duration::from_millis(200);

/// `[compute]`: the compute server's listeners, limits, CPU pool and TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    /// Address the gRPC services listen on.
    pub listen: SocketAddr,
    /// Address `/metrics` is served on.
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
    /// Pace the answers to each peer (a BFF pod) so that the queue they build on the way back
    /// stays under `yield_delay_target` (`crate::pacing`; Linux): the BFF's health checks then
    /// cross an almost empty path. The BFF's half is `lanes.heavy.yield_to`.
    pub yield_answers: bool,
    /// The queueing delay compute's answers may add to the path back to a BFF.
    #[serde(with = "humantime_serde")]
    pub yield_delay_target: Duration,
    /// The slowest the answers to one peer are ever paced, in bytes per second.
    pub yield_min_rate: Size,
    /// TLS: PEM certificate chain and private key. Both set = the server speaks TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// Path of the PEM private key for `tls_cert`.
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
    /// TLS to every compute address, not only `https://` ones.
    pub enabled: bool,
    /// PEM CA bundle that signs compute's certificate (default: the system's web PKI roots
    /// are not loaded, so set this for a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Mutual TLS: the BFF's own PEM certificate chain and private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Path of the PEM private key for `cert`.
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
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
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

impl ComputeConfig {
    /// Adds a message naming the key for every bad value.
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let c = self;
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
        if !(Duration::from_micros(100)..=Duration::from_secs(1)).contains(&c.yield_delay_target) {
            errors.push("compute.yield_delay_target: must be 100us..=1s".into());
        }
        if !(Size::kib(16)..=Size(u32::MAX as u64)).contains(&c.yield_min_rate) {
            errors.push("compute.yield_min_rate: must be 16KiB..=4GiB (bytes per second)".into());
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            errors.push("compute.tls_cert, compute.tls_key: set both or neither".into());
        }
        if c.tls_client_ca.is_some() && c.tls_cert.is_none() {
            errors.push("compute.tls_client_ca: needs compute.tls_cert and compute.tls_key".into());
        }
    }
}
