//! The `imagegate_store_*` metric families, in the BFF's registry.
//!
//! Objects and bytes are gauges that every sweep resets from a full listing, and that puts
//! and deletes move in between, so they stay right even when several BFFs share a bucket
//! (to within one sweep interval).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::{register, LATENCY_BUCKETS};

/// The store's metric handles (label `backend` applied).
#[derive(Clone)]
pub struct StoreMetrics {
    /// Objects in the store.
    pub objects: IntGauge,
    /// Bytes in the store.
    pub bytes: IntGauge,
    /// Failed operations, by operation.
    pub errors: IntCounterVec,
    /// Operation latency, by operation.
    pub duration: HistogramVec,
    /// Puts by result: `created` (a new object) or `existing` (same content already stored).
    pub puts: IntCounterVec,
    /// Objects removed by retention, by reason (`max_age`, `max_total_bytes`, `staging`).
    pub evicted: IntCounterVec,
    /// Seconds since the epoch of the last sweep that completed.
    pub last_sweep: IntGauge,
}

impl StoreMetrics {
    /// Registers the families in `registry` with the constant label `backend`.
    pub fn new(registry: &Registry, backend: &str) -> Self {
        let labels = std::collections::HashMap::from([("backend".to_string(), backend.into())]);
        let opts = |name: &str, help: &str| Opts::new(name, help).const_labels(labels.clone());
        StoreMetrics {
            objects: register(
                registry,
                IntGauge::with_opts(opts(
                    "imagegate_store_objects",
                    "Objects in the upload store.",
                ))
                .expect("valid metric"),
            ),
            bytes: register(
                registry,
                IntGauge::with_opts(opts("imagegate_store_bytes", "Bytes in the upload store."))
                    .expect("valid metric"),
            ),
            errors: register(
                registry,
                IntCounterVec::new(
                    opts(
                        "imagegate_store_errors_total",
                        "Failed upload-store operations.",
                    ),
                    &["op"],
                )
                .expect("valid metric"),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "imagegate_store_operation_duration_seconds",
                        "Latency of upload-store operations.",
                    )
                    .const_labels(labels.clone())
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["op"],
                )
                .expect("valid metric"),
            ),
            puts: register(
                registry,
                IntCounterVec::new(
                    opts(
                        "imagegate_store_puts_total",
                        "Images stored: `created` or `existing` (same content already there).",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            evicted: register(
                registry,
                IntCounterVec::new(
                    opts(
                        "imagegate_store_evicted_total",
                        "Objects removed by the retention sweep, by reason.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            last_sweep: register(
                registry,
                IntGauge::with_opts(opts(
                    "imagegate_store_last_sweep_timestamp_seconds",
                    "When the last retention sweep completed (Unix time).",
                ))
                .expect("valid metric"),
            ),
        }
    }
}
