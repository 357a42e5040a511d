//! `[lanes.*]`: each bulkhead lane's connections and limits, and `[routes]`: which RPC takes
//! which lane.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// The lanes: `heavy` and `realtime` always exist; any other table under `[lanes]` is a lane
/// of your own (e.g. `[lanes.files]` with its own `url`), used through `[routes]`. Keys a
/// custom lane leaves out take the heavy lane's defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lanes {
    /// `[lanes.heavy]`: image payloads (the default lane of unrouted RPCs).
    pub heavy: LaneConfig,
    /// `[lanes.realtime]`: health checks, kept apart from image traffic.
    pub realtime: LaneConfig,
    /// Your own lanes, by name.
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
    /// How long a keepalive PING may go unanswered before the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// TCP connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest gRPC message sent or received.
    pub max_message_size: Size,
    /// HTTP/2 receive windows (what compute may send back before we read it).
    pub stream_window: Size,
    /// ...and for the whole connection, all its streams together.
    pub connection_window: Size,
    /// Threads of the lane's own Tokio runtime, which drives its HTTP/2 connections; 0: the
    /// threads that make the calls (the HTTP workers) drive them, each the connections it made.
    pub io_threads: usize,
    /// Circuit breaker: consecutive compute failures that open it (0 = off).
    pub circuit_failures: u32,
    /// …or this share of failures over the last `circuit_window` calls (0 = off).
    pub circuit_failure_rate: f32,
    /// How many recent calls `circuit_failure_rate` is measured over.
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
    /// Longest an ejection lasts, however often it repeats.
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
    /// Yield to this lane (e.g. `"realtime"`): pace this lane's connections so that the
    /// queue on the path to compute stays under `yield_delay_target`, and the named lane's
    /// calls do not wait in it (`dispatch::yielding`; Linux). Empty: never paced.
    pub yield_to: String,
    /// The queueing delay a yielding lane lets its own traffic add to the path.
    #[serde(with = "humantime_serde")]
    pub yield_delay_target: Duration,
    /// The slowest a yielding lane is ever paced, per compute endpoint, in bytes per second.
    pub yield_min_rate: Size,
}

impl LaneConfig {
    /// The heavy lane's defaults (4 connections, adaptive up to 32 in flight, 30 s
    /// deadline); also what a custom lane's missing keys take.
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
            yield_to: String::new(),
            yield_delay_target: DEFAULT_YIELD_DELAY_TARGET,
            yield_min_rate: Size::mib(1),
        }
    }

    /// The realtime lane's defaults: one connection, 256 small calls in flight at a fixed
    /// limit, a 2 s deadline.
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
            yield_to: String::new(),
            yield_delay_target: DEFAULT_YIELD_DELAY_TARGET,
            yield_min_rate: Size::mib(1),
        }
    }

    pub(super) fn validate(&self, key: &str, errors: &mut Vec<String>) {
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
            self.io_threads <= 64,
            "io_threads",
            "must be 0..=64 (0: the HTTP workers drive the connections)",
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
        check(
            self.yield_to != key,
            "yield_to",
            "a lane cannot yield to itself",
        );
        check(
            (Duration::from_micros(100)..=Duration::from_secs(1))
                .contains(&self.yield_delay_target),
            "yield_delay_target",
            "must be 100us..=1s",
        );
        check(
            (Size::kib(16)..=Size(u32::MAX as u64)).contains(&self.yield_min_rate),
            "yield_min_rate",
            "must be 16KiB..=4GiB (bytes per second)",
        );
    }
}

/// The default `yield_delay_target`: a few milliseconds of queue, which a health check can
/// afford and which still keeps the link busy between the pacer's decisions.
const DEFAULT_YIELD_DELAY_TARGET: Duration = Duration::from_millis(3);

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

pub(super) fn default_routes() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("compute.ImageService".to_string(), "heavy".to_string()),
        ("compute.HealthService".to_string(), "realtime".to_string()),
        ("compute.FileService".to_string(), "heavy".to_string()),
    ])
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

pub(super) fn is_route_key(key: &str) -> bool {
    let mut parts = key.split('/');
    let service = parts.next().unwrap_or("");
    let method = parts.next();
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    parts.next().is_none()
        && service.split('.').all(ident)
        && service.contains('.')
        && method.is_none_or(ident)
}
