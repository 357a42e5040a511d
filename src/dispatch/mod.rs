//! The dispatcher: the routing table sends each RPC to a lane; each lane admits, sends and
//! measures its calls on its own connections.
//!
//! - [`clients`]: one module per compute service (image, health, file) on one generic call;
//! - [`lane`]: one bulkhead lane (admission, deadline, retries, metrics);
//! - [`limiter`]: the lane's resizable permit counter;
//! - [`adaptive`]: the controller that moves an adaptive lane's limit;
//! - [`circuit`]: the lane's circuit breaker;
//! - [`balancer`]: the lane's compute replicas — least-in-flight choice, ejection of failing
//!   endpoints, `dns://` re-resolution;
//! - [`pool`]: the lane's channels to one compute endpoint, handed out in turn;
//! - [`channel`]: one of them: an HTTP/2 connection driven by hyper, made lazily and again
//!   after it closes;
//! - [`connector`]: the metered TCP connector every connection goes through;
//! - [`metrics`]: the `imagegate_lane_*` families.
//!
//! In `bulkhead` mode each lane has its own connections and its own Tokio runtime driving
//! them. In `shared` mode (the seed's design, kept for comparison) both lanes send on one
//! connection; they keep their own admission limits, so a comparison measures the connection,
//! not a semaphore. Metrics then say `lane="shared"`.

pub mod adaptive;
pub mod balancer;
pub mod channel;
pub mod circuit;
pub mod clients;
pub mod connector;
pub mod lane;
pub mod limiter;
pub mod metrics;
pub mod pool;
pub mod yielding;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tonic::Status;

use crate::config::target::Target;
use crate::config::{Config, LaneConfig, Mode};
use balancer::{LaneIo, Resolver, Upstream};
use lane::Lane;
use metrics::{LaneMetricFamilies, LaneMetrics};

/// Why a call through the dispatcher failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No permit within the lane's `queue_wait`, or too many already waiting: shed (503).
    #[error("the {lane} lane is saturated: no permit within its queue wait")]
    Saturated {
        /// The lane's name.
        lane: String,
        /// When to try again (`Retry-After`).
        retry_after: Duration,
    },
    /// The lane's circuit is open: failed fast without a call (503).
    #[error("the {lane} lane's circuit is open after repeated compute failures")]
    CircuitOpen {
        /// The lane's name.
        lane: String,
        /// Until a probe may be tried, at least 1 s (`Retry-After`).
        retry_after: Duration,
    },
    /// The lane's deadline passed before the call ended (504).
    #[error("the {lane} lane's deadline of {deadline:?} passed")]
    Deadline {
        /// The lane's name.
        lane: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// Compute answered with an error status (or the call failed in transport).
    #[error("compute answered {}: {}", .0.code(), .0.message())]
    Status(Status),
}

/// A dedicated Tokio runtime that drives one lane's HTTP/2 connections.
struct LaneRuntime(Option<tokio::runtime::Runtime>);

impl LaneRuntime {
    fn new(name: &str, threads: usize) -> anyhow::Result<Self> {
        // `io_threads = 0` leaves the connections to the callers' threads; the lane's own
        // tasks (re-resolving names, the pacer) still run here, on one thread.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(format!("imagegate-lane-{name}"))
            .enable_all()
            .build()?;
        Ok(LaneRuntime(Some(rt)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
            .clone()
    }
}

impl Drop for LaneRuntime {
    fn drop(&mut self) {
        // May be dropped from async context, where a blocking shutdown would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Routes calls to lanes. Build once per BFF and share it (never per actix worker: that would
/// multiply every limit by the worker count).
pub struct Dispatcher {
    mode: Mode,
    lanes: HashMap<String, Arc<Lane>>,
    /// Each lane's compute address (its own `url`, or `compute_url`): a health check that
    /// finds compute serving speaks for every lane sending to the same address.
    addresses: HashMap<String, String>,
    routes: std::collections::BTreeMap<String, String>,
    // Declared last: runtimes stop after the lanes' channels are dropped.
    _runtimes: Vec<LaneRuntime>,
}

pub use clients::file::{EXTRACT, FILE_COMPRESS};
pub use clients::health::HEALTH_CHECK;
pub use clients::image::{BATCH_PROCESS, COMPRESS, RESIZE, WATERMARK};

/// A lane's settings on its pool. Lanes that share the one connection of `shared` mode (the
/// seed's design, kept for comparison) report as one `shared` label whose limit is their sum,
/// so they keep fixed limits: an adaptive limit per lane could not be shown there.
fn on_pool(config: &LaneConfig, metrics: &LaneMetrics) -> LaneConfig {
    let mut config = config.clone();
    if metrics.label == "shared" {
        config.concurrency = crate::config::Concurrency::Fixed;
    }
    config
}

impl Dispatcher {
    /// Builds the lanes from config. Connections are made lazily, on first use.
    pub async fn new(config: &Config, registry: &Registry) -> anyhow::Result<Self> {
        Self::with_resolver(config, registry, balancer::system_resolver()).await
    }

    /// As [`Dispatcher::new`], resolving `dns://` addresses with `resolver`.
    pub async fn with_resolver(
        config: &Config,
        registry: &Registry,
        resolver: Resolver,
    ) -> anyhow::Result<Self> {
        // The HTTP workers that will call the lanes (actix's default: one per core).
        let http_workers = match config.bff.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let upstream = |name: &str,
                        url: &str,
                        lane: &crate::config::LaneConfig,
                        metrics: &metrics::LaneMetrics,
                        rt: tokio::runtime::Handle| {
            let target = Target::parse(url).map_err(|why| anyhow::anyhow!("lane {name}: {why}"));
            let resolver = resolver.clone();
            let (name, lane, metrics) = (name.to_string(), lane.clone(), metrics.clone());
            let tls = config.compute_tls.clone();
            async move {
                Upstream::new(
                    &name,
                    target?,
                    &lane,
                    Some(&tls),
                    metrics.connections.clone(),
                    metrics.endpoints.clone(),
                    LaneIo {
                        runtime: rt,
                        http_workers,
                    },
                    resolver,
                )
                .await
            }
        };
        let families = LaneMetricFamilies::new(registry);
        let mut lanes = HashMap::new();
        let mut addresses = HashMap::new();
        let mut runtimes = Vec::new();
        // The runtime of each lane with connections of its own (not the shared pool's).
        let mut own_runtimes = HashMap::new();
        // In shared mode every lane without an address of its own sends on one connection,
        // driven by one runtime, with the heavy lane's settings (and room for the larger of
        // the lanes' message limits). Lanes keep their own admission limits either way.
        let shared_pool = match config.mode {
            Mode::Bulkhead => None,
            Mode::Shared => {
                let mut shared = config.lanes.heavy.clone();
                shared.connections = 1;
                shared.max_message_size = config
                    .lanes
                    .iter()
                    .map(|(_, l)| l.max_message_size)
                    .max()
                    .unwrap_or(shared.max_message_size);
                let rt = LaneRuntime::new("shared", shared.io_threads)?;
                let metrics = families.for_lane("shared");
                let pool = upstream(
                    "shared",
                    &config.compute_url,
                    &shared,
                    &metrics,
                    rt.handle(),
                )
                .await?;
                runtimes.push(rt);
                Some((pool, metrics))
            }
        };
        for (name, lane_config) in config.lanes.iter() {
            let (pool, metrics) = match (&shared_pool, &lane_config.url) {
                (Some((pool, metrics)), None) => (pool.clone(), metrics.clone()),
                _ => {
                    let rt = LaneRuntime::new(name, lane_config.io_threads)?;
                    let metrics = families.for_lane(name);
                    let url = lane_config.url.as_deref().unwrap_or(&config.compute_url);
                    let pool = upstream(name, url, lane_config, &metrics, rt.handle()).await?;
                    own_runtimes.insert(name.to_string(), rt.handle());
                    runtimes.push(rt);
                    (pool, metrics)
                }
            };
            let pool_config = on_pool(lane_config, &metrics);
            lanes.insert(
                name.to_string(),
                Arc::new(Lane::new(name, pool_config, pool, metrics)),
            );
            let address = lane_config.url.as_deref().unwrap_or(&config.compute_url);
            addresses.insert(name.to_string(), address.to_string());
        }
        // Every lane with connections of its own gets a pacer, idle until its `yield_to` names
        // another lane (a reload may set it later).
        let registries: std::collections::BTreeMap<_, _> = lanes
            .iter()
            .map(|(name, lane)| (name.clone(), Arc::clone(lane.upstream().sockets())))
            .collect();
        for (name, runtime) in &own_runtimes {
            yielding::spawn(&lanes[name], registries.clone(), runtime);
        }
        let dispatcher = Dispatcher {
            mode: config.mode,
            lanes,
            addresses,
            routes: config.routes.clone(),
            _runtimes: runtimes,
        };
        dispatcher.publish_limits();
        Ok(dispatcher)
    }

    /// The lane an RPC (`compute.ImageService/Compress`) is routed to: a method's own route
    /// wins over its service's; unrouted RPCs take the heavy lane.
    pub fn lane_for(&self, method: &str) -> &Arc<Lane> {
        let name = crate::config::route(&self.routes, method);
        self.lanes.get(name).unwrap_or(&self.lanes["heavy"])
    }

    /// Sheds a call to `method` now if its lane would (see [`Lane::shed_early`]).
    pub fn shed_early(&self, method: &str) -> Result<(), DispatchError> {
        self.lane_for(method).shed_early()
    }

    /// Applies new lane limits at run time (see [`Lane::set_limits`]).
    pub fn set_limits(&self, config: &Config) {
        for (name, lane_config) in config.lanes.iter() {
            if let Some(lane) = self.lanes.get(name) {
                lane.set_limits(on_pool(lane_config, lane.metrics()));
            }
        }
        self.publish_limits();
    }

    fn publish_limits(&self) {
        if self.mode == Mode::Shared {
            // Lanes on the shared connection report as `shared`: show their combined limit.
            let total: usize = self
                .lanes
                .values()
                .filter(|l| l.metrics().label == "shared")
                .map(|l| l.limit())
                .sum();
            let metrics = self.lanes["heavy"].metrics();
            metrics.limit.set(total as i64);
            metrics.limit_min.set(total as i64);
            metrics.limit_max.set(total as i64);
        }
    }
}
