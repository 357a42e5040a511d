//! The HTTP edge: an Actix-web server with the routes of CONTRACT §2.
//!
//! - [`routes`]: handlers, from multipart in to image or SSE out;
//! - [`intake`]: streaming multipart with limits and magic-byte sniffing;
//! - [`params`]: form fields → gRPC requests;
//! - [`problem`]: errors → RFC 9457 problem+json, in one place;
//! - [`uploads`]: upload-and-store and serving stored images back.
//!
//! The [`Dispatcher`] is built once, outside the per-worker app factory, and shared: state
//! built inside the factory would be multiplied by the worker count, and so would its limits.

pub mod intake;
pub mod params;
pub mod problem;
pub mod routes;
pub mod uploads;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{web, App, HttpServer};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::metrics::{register, LATENCY_BUCKETS};
use crate::store::Store;

/// Shared by every worker.
pub struct AppState {
    pub config: Arc<Config>,
    pub dispatcher: Arc<Dispatcher>,
    pub registry: Registry,
    /// Where uploads and batch results are stored.
    pub store: Arc<Store>,
    /// Applies new lane limits at run time (SIGHUP, `POST /admin/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
}

/// The edge's own HTTP metrics.
#[derive(Clone)]
struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    fn new(registry: &Registry) -> Self {
        HttpMetrics {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "imagegate_http_requests_total",
                        "HTTP requests by route, method and status.",
                    ),
                    &["route", "method", "status"],
                )
                .expect("valid metric"),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "imagegate_http_request_duration_seconds",
                        "Time to the response head (for SSE, to the start of the stream).",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// A built BFF, ready to serve: config, dispatcher and metrics registry.
pub struct Bff {
    pub state: Arc<AppState>,
}

impl Bff {
    /// Builds the dispatcher (connections are made lazily, so compute may be down).
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        Self::with_config_file(config, None).await
    }

    /// Like [`Bff::new`]; a reload re-reads `config_file` (and the environment).
    pub async fn with_config_file(
        config: Config,
        config_file: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        let registry = crate::metrics::new_registry();
        let dispatcher = Arc::new(Dispatcher::new(&config, &registry).await?);
        let store = Arc::new(Store::open(&config.store, &registry)?);
        let config = Arc::new(config);
        let reloader = Arc::new(crate::reload::Reloader::new(
            config_file,
            config.clone(),
            dispatcher.clone(),
            &registry,
        ));
        Ok(Bff {
            state: Arc::new(AppState {
                config,
                dispatcher,
                registry,
                store,
                reloader,
            }),
        })
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then drains in-flight requests
    /// for up to `bff.shutdown_timeout`. Must run inside an actix (or Tokio) runtime.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()> + 'static,
    ) -> anyhow::Result<()> {
        let state = web::Data::from(self.state.clone());
        let http_metrics = HttpMetrics::new(&self.state.registry);
        let bff = &self.state.config.bff;
        let workers = if bff.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            bff.workers
        };
        let addr = listener.local_addr()?;
        let server = HttpServer::new(move || {
            let m = http_metrics.clone();
            App::new()
                .app_data(state.clone())
                .wrap_fn(move |req, srv| {
                    let started = Instant::now();
                    let method = req.method().to_string();
                    let m = m.clone();
                    let call = srv.call(req);
                    async move {
                        let res = call.await?;
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        m.requests
                            .with_label_values(&[&route, &method, res.status().as_str()])
                            .inc();
                        m.duration
                            .with_label_values(&[&route])
                            .observe(started.elapsed().as_secs_f64());
                        Ok(res)
                    }
                })
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(workers)
        .disable_signals()
        .client_request_timeout(bff.client_request_timeout)
        .shutdown_timeout(bff.shutdown_timeout.as_secs())
        .listen(listener)?
        .run();
        tracing::info!(%addr, mode = ?self.state.config.mode, compute = %self.state.config.compute_url, "BFF listening");
        // The retention sweep lives as long as the server (it also sets the store gauges).
        let sweeper = self.state.store.spawn_sweeper();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            shutdown.await;
            tracing::info!("BFF draining in-flight requests");
            handle.stop(true).await;
        });
        let served = server.await;
        sweeper.abort();
        served?;
        tracing::info!("BFF stopped");
        Ok(())
    }
}

/// Binds the configured address and serves until a signal (the `imagegate bff` command).
/// Reloads on SIGHUP while serving.
pub async fn run(config: Config, config_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(config.bff.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (bff.listen): {e}", config.bff.listen))?;
    let bff = Bff::with_config_file(config, config_file).await?;
    #[cfg(unix)]
    actix_web::rt::spawn(crate::reload::reload_on_sighup(bff.state.reloader.clone()));
    bff.serve(listener, crate::shutdown::signal()).await
}
