//! imagegate: an image-upload gateway.
//!
//! Web clients upload images (multipart) to an Actix-web BFF; the BFF sends each job over gRPC
//! to the compute service, which decodes, transforms and encodes real images on a bounded CPU
//! pool. Between them sits the dispatcher with two bulkhead lanes, `heavy` for image payloads
//! and `realtime` for health checks, each with its own TCP connections and limits, so that
//! megabytes of image in flight never make a health check wait.
//!
//! # Layout
//! The request's path, in order:
//! - [`edge`]: the Actix-web app — routes, streaming multipart intake with limits, and the one
//!   place where errors become RFC 9457 problem+json responses.
//! - [`dispatch`]: the [`dispatch::Dispatcher`]; its routing table picks a lane per RPC; each
//!   [`dispatch::lane::Lane`] admits calls through a resizable permit counter, then sends them on
//!   its own pool of tonic channels (real, separately connected TCP connections) to each
//!   compute replica ([`dispatch::balancer`]), with deadline, safe retries and metrics.
//! - [`compute`]: the tonic server (ImageService, HealthService, `grpc.health.v1`, reflection),
//!   the bounded CPU pool, and [`compute::ops`], the image operations as plain sync functions.
//!
//! - [`store`]: where uploads and batch results are kept (`object_store`: a local directory or
//!   S3), content-addressed, with atomic writes and a retention sweep; served back by
//!   [`edge::uploads`].
//!
//! Around them: [`vocab`] (the words both sides use: image and archive types, error reasons,
//! limits, what counts as a compute failure), [`config`] (one TOML file + env overrides,
//! validated with key names),
//! [`metrics`] (one Prometheus registry per server), [`proto`] (generated code),
//! [`shutdown`] (signals), [`trace_context`] (request ids across the system), [`logging`], [`reload`] (live config reload), [`sockopt`] (the TCP
//! retransmission floor, round-trip estimates, pacing cap and thread priority, which have no
//! safe wrapper), [`pacing`] (yielding a slow path to small calls: the pacer both sides use),
//! and [`dev`] (both servers in one process for `make run`).

// Every `pub` item is reachable from the crate root (a `pub` deep in a private module is a lie
// about the API); `make lint` denies warnings, so this is enforced.
#![warn(unreachable_pub)]
#![warn(missing_docs)]

pub mod compute;
pub mod config;
pub mod dev;
pub mod dispatch;
pub mod edge;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap_trim;
pub mod logging;
pub mod metrics;
pub mod pacing;
pub mod proto;
pub mod reload;
pub mod shutdown;
pub mod sockopt;
pub mod store;
#[doc(hidden)]
pub mod testkit;
pub mod trace_context;
pub mod vocab;
