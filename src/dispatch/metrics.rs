//! The lanes' Prometheus families (`imagegate_lane_*`), registered once per dispatcher, and
//! the per-lane handles each lane records into.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use super::connector::ConnectionMetrics;
use crate::metrics::{register, LATENCY_BUCKETS};

/// Reasons a lane sheds a call without sending it.
pub mod rejected {
    /// No permit within `queue_wait`, or the queue already full (503).
    pub const SATURATED: &str = "saturated";
    /// The lane's circuit is open: failed fast (503).
    pub const CIRCUIT_OPEN: &str = "circuit_open";
    /// The lane's deadline passed before the call ended (504).
    pub const DEADLINE: &str = "deadline";
}

/// The families; each lane takes its labelled children with [`LaneMetricFamilies::for_lane`].
#[derive(Clone)]
pub struct LaneMetricFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    queue_wait: HistogramVec,
    rejected: IntCounterVec,
    limit: IntGaugeVec,
    limit_bounds: IntGaugeVec,
    compute_wait: HistogramVec,
    compute_busy: GaugeVec,
    pacing_rate: IntGaugeVec,
    path_delay: GaugeVec,
    connections: IntGaugeVec,
    bytes_sent: IntCounterVec,
    bytes_received: IntCounterVec,
    endpoints: IntGaugeVec,
    ejections: IntCounterVec,
}

/// A lane's replica set, as the balancer sees it.
#[derive(Clone)]
pub struct EndpointMetrics {
    /// Endpoints in rotation.
    pub healthy: IntGauge,
    /// Endpoints ejected after consecutive failures (re-probed with backoff).
    pub ejected: IntGauge,
    /// Times an endpoint was ejected.
    pub ejections: IntCounter,
}

/// One lane's metric handles (label `lane` already applied).
#[derive(Clone)]
pub struct LaneMetrics {
    /// The lane's name, its `lane` label.
    pub label: String,
    families: LaneMetricFamilies,
    /// Calls holding a permit now.
    pub in_flight: IntGauge,
    /// Seconds each call waited for a permit (admitted or shed).
    pub queue_wait: Histogram,
    /// The concurrency limit in force.
    pub limit: IntGauge,
    /// The bounds the limit moves between (`min_in_flight`, `max_in_flight`; both the limit
    /// for a fixed lane), so an alert can tell a limit pinned at its floor or ceiling.
    pub limit_min: IntGauge,
    /// The ceiling (`max_in_flight`).
    pub limit_max: IntGauge,
    /// What an adaptive lane's controller sees: the wait in compute's queue per answer (as
    /// compute reports it, else round trip − the work compute reports).
    pub compute_wait: Histogram,
    /// Calls compute served in parallel over the controller's last window.
    pub compute_busy: Gauge,
    /// A yielding lane (`yield_to`): the rate its connections are paced at in all, bytes per
    /// second (0: not paced).
    pub pacing_rate: IntGauge,
    /// A yielding lane: the queueing delay it last measured on the path to compute (the
    /// largest over its endpoints).
    pub path_delay: Gauge,
    /// The lane's TCP connections and bytes.
    pub connections: ConnectionMetrics,
    /// The lane's replicas, healthy and ejected.
    pub endpoints: EndpointMetrics,
}

impl LaneMetrics {
    /// Records one finished call: counted by method and gRPC code, timed by method.
    pub fn request(&self, method: &str, code: &str, seconds: f64) {
        self.families
            .requests
            .with_label_values(&[&self.label, method, code])
            .inc();
        self.families
            .duration
            .with_label_values(&[&self.label, method])
            .observe(seconds);
    }

    /// The counter of calls shed for `reason` (one of [`rejected`]).
    pub fn rejected(&self, reason: &str) -> IntCounter {
        self.families
            .rejected
            .with_label_values(&[&self.label, reason])
    }
}

impl LaneMetricFamilies {
    /// Registers every `imagegate_lane_*` family in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let lane = &["lane"];
        LaneMetricFamilies {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new("imagegate_lane_requests_total", "Calls sent on a lane, by method and gRPC status."),
                    &["lane", "method", "code"],
                )
                .expect("valid metric"),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "imagegate_lane_request_duration_seconds",
                        "Time from admission to the call's end (for a stream, its last message), retries included.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["lane", "method"],
                )
                .expect("valid metric"),
            ),
            in_flight: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("imagegate_lane_in_flight", "Calls holding a lane permit now."),
                    lane,
                )
                .expect("valid metric"),
            ),
            queue_wait: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "imagegate_lane_queue_wait_seconds",
                        "Time a call waited for a lane permit (admitted or shed).",
                    )
                    .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                    lane,
                )
                .expect("valid metric"),
            ),
            rejected: register(
                registry,
                IntCounterVec::new(
                    Opts::new("imagegate_lane_rejected_total", "Calls a lane refused or cut short, by reason."),
                    &["lane", "reason"],
                )
                .expect("valid metric"),
            ),
            limit: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("imagegate_lane_limit", "The lane's concurrency limit in force."),
                    lane,
                )
                .expect("valid metric"),
            ),
            limit_bounds: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "imagegate_lane_limit_bounds",
                        "The bounds of the lane's limit (bound=min: min_in_flight, bound=max: max_in_flight); both equal the limit of a fixed lane.",
                    ),
                    &["lane", "bound"],
                )
                .expect("valid metric"),
            ),
            compute_wait: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "imagegate_lane_compute_wait_seconds",
                        "Adaptive lanes: per answered call, the wait for a CPU worker compute reported (imagegate-queued-us); from a compute that does not report it, the round trip minus the work (elapsed_ms).",
                    )
                    .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                    lane,
                )
                .expect("valid metric"),
            ),
            compute_busy: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "imagegate_lane_compute_busy",
                        "Adaptive lanes: calls compute served in parallel over the controller's last window (work time answered / window); the limit never falls below it.",
                    ),
                    lane,
                )
                .expect("valid metric"),
            ),
            pacing_rate: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "imagegate_lane_pacing_rate_bytes",
                        "Lanes with yield_to: bytes per second the lane's connections are paced at, all endpoints together (0: not paced, the path shows no queue).",
                    ),
                    lane,
                )
                .expect("valid metric"),
            ),
            path_delay: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "imagegate_lane_path_delay_seconds",
                        "Lanes with yield_to: the queueing delay last measured on the path to compute (smoothed TCP round trip minus the least one seen; the largest over the endpoints).",
                    ),
                    lane,
                )
                .expect("valid metric"),
            ),
            connections: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("imagegate_lane_connections", "Open HTTP/2 (TCP) connections of the lane."),
                    lane,
                )
                .expect("valid metric"),
            ),
            bytes_sent: register(
                registry,
                IntCounterVec::new(
                    Opts::new("imagegate_lane_bytes_sent_total", "Bytes written to the lane's TCP connections."),
                    lane,
                )
                .expect("valid metric"),
            ),
            bytes_received: register(
                registry,
                IntCounterVec::new(
                    Opts::new("imagegate_lane_bytes_received_total", "Bytes read from the lane's TCP connections."),
                    lane,
                )
                .expect("valid metric"),
            ),
            endpoints: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("imagegate_lane_endpoints", "Compute endpoints (replicas) of the lane, by state (healthy, ejected)."),
                    &["lane", "state"],
                )
                .expect("valid metric"),
            ),
            ejections: register(
                registry,
                IntCounterVec::new(
                    Opts::new("imagegate_lane_endpoint_ejections_total", "Times an endpoint was taken out of the lane's rotation after consecutive failures."),
                    lane,
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Handles for `label`; the rejection reasons are pre-created so they show as 0.
    pub fn for_lane(&self, label: &str) -> LaneMetrics {
        for reason in [
            rejected::SATURATED,
            rejected::CIRCUIT_OPEN,
            rejected::DEADLINE,
        ] {
            self.rejected.with_label_values(&[label, reason]);
        }
        LaneMetrics {
            label: label.to_string(),
            families: self.clone(),
            in_flight: self.in_flight.with_label_values(&[label]),
            queue_wait: self.queue_wait.with_label_values(&[label]),
            limit: self.limit.with_label_values(&[label]),
            limit_min: self.limit_bounds.with_label_values(&[label, "min"]),
            limit_max: self.limit_bounds.with_label_values(&[label, "max"]),
            compute_wait: self.compute_wait.with_label_values(&[label]),
            compute_busy: self.compute_busy.with_label_values(&[label]),
            pacing_rate: self.pacing_rate.with_label_values(&[label]),
            path_delay: self.path_delay.with_label_values(&[label]),
            connections: ConnectionMetrics {
                open: self.connections.with_label_values(&[label]),
                bytes_sent: self.bytes_sent.with_label_values(&[label]),
                bytes_received: self.bytes_received.with_label_values(&[label]),
            },
            endpoints: EndpointMetrics {
                healthy: self.endpoints.with_label_values(&[label, "healthy"]),
                ejected: self.endpoints.with_label_values(&[label, "ejected"]),
                ejections: self.ejections.with_label_values(&[label]),
            },
        }
    }
}

/// gRPC status code names as the `code` label (`OK`, `UNAVAILABLE`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
