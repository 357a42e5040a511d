//! The compute server's own metrics (`imagegate_compute_*`).

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::{register, LATENCY_BUCKETS};

/// Registered once per compute server.
#[derive(Clone)]
pub struct ComputeMetrics {
    /// Operations by name and result (`ok` or the error reason).
    pub operations: IntCounterVec,
    /// Seconds per operation, queueing included.
    pub duration: HistogramVec,
    /// Jobs submitted to the CPU pool that have not started yet.
    pub queue_depth: IntGauge,
    /// `yield_answers`: bytes per second the answers are paced at, all peers together (0: not
    /// paced).
    pub pacing_rate: IntGauge,
    /// `yield_answers`: the queueing delay last measured on the paths back to the peers (the
    /// largest).
    pub path_delay: Gauge,
}

impl ComputeMetrics {
    /// Registers the metrics in `registry`, every operation's duration series at zero.
    pub fn new(registry: &Registry) -> Self {
        let metrics = ComputeMetrics {
            operations: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "imagegate_compute_operations_total",
                        "Image operations by operation and result (ok or the error reason).",
                    ),
                    &["operation", "result"],
                )
                .expect("valid metric"),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "imagegate_compute_operation_duration_seconds",
                        "Time to run one image operation, queueing included.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["operation"],
                )
                .expect("valid metric"),
            ),
            queue_depth: register(
                registry,
                IntGauge::new(
                    "imagegate_compute_queue_depth",
                    "Jobs waiting for a CPU thread.",
                )
                .expect("valid metric"),
            ),
            pacing_rate: register(
                registry,
                IntGauge::new(
                    "imagegate_compute_pacing_rate_bytes",
                    "compute.yield_answers: bytes per second the answers are paced at, all peers together (0: not paced).",
                )
                .expect("valid metric"),
            ),
            path_delay: register(
                registry,
                Gauge::new(
                    "imagegate_compute_path_delay_seconds",
                    "compute.yield_answers: the queueing delay last measured on the paths back to the peers (smoothed TCP round trip minus the least one seen; the largest).",
                )
                .expect("valid metric"),
            ),
        };
        // Every operation's duration series exists from the start (at zero), so dashboards
        // and rules see it before the first job, and health checks, which are not timed,
        // do not leave the family empty.
        for operation in [
            "compress",
            "resize",
            "watermark",
            "batch",
            "file_compress",
            "extract",
        ] {
            metrics.duration.with_label_values(&[operation]);
        }
        metrics
    }

    /// A call answered without running (refused, bad input, a health check): counted, but
    /// not timed, so zero-second samples do not pull the duration quantiles down exactly
    /// when compute is overloaded.
    pub fn record_untimed(&self, operation: &str, result: &str) {
        self.operations
            .with_label_values(&[operation, result])
            .inc();
    }

    /// A call that ran: counted by result and timed (`seconds`).
    pub fn record(&self, operation: &str, result: &str, seconds: f64) {
        self.operations
            .with_label_values(&[operation, result])
            .inc();
        self.duration
            .with_label_values(&[operation])
            .observe(seconds);
    }
}
