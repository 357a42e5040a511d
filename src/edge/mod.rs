//! The HTTP edge: an Actix-web server with the routes of CONTRACT §2.
//!
//! - [`routes`]: handlers, from multipart in to image or SSE out;
//! - [`resource`]: how routes are declared (405s, HEAD), the 404, what every handler shares;
//! - [`request_context`]: the outermost layer: request id, trace context, access log;
//! - [`cors`]: browsers on other origins (`[bff.cors]`), answered before authentication;
//! - [`auth`]: optional API keys, checked on the request head before any body is read;
//! - [`intake`]: streaming multipart with limits and magic-byte sniffing;
//! - [`params`]: form fields → gRPC requests;
//! - [`archives`]: ZIP/tar parts of a batch, opened by compute's FileService, one item per image;
//! - [`problem`]: errors → RFC 9457 problem+json, in one place;
//! - [`uploads`]: upload-and-store and serving stored images back;
//! - [`page`]: the upload page at `/` and `/openapi.json`, embedded in the binary.
//!
//! `/metrics` and `/admin/reload` are served on the main listener, or on `bff.admin_listen`
//! when that is set (and then answer 404 on the main one).
//!
//! The [`Dispatcher`] is built once, outside the per-worker app factory, and shared: state
//! built inside the factory would be multiplied by the worker count, and so would its limits.

pub mod archives;
pub mod auth;
pub mod cors;
pub mod intake;
pub mod page;
pub mod params;
pub mod problem;
pub mod request_context;
pub mod resource;
pub mod routes;
pub mod uploads;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::metrics::{register, LATENCY_BUCKETS};
use crate::store::Store;

/// Shared by every worker.
pub struct AppState {
    /// The configuration the server started with. Settings that a reload may change (API
    /// keys, intake limits, timeouts) are read from [`crate::reload::Reloader::current`].
    pub config: Arc<Config>,
    /// The lanes to compute.
    pub dispatcher: Arc<Dispatcher>,
    /// The BFF's Prometheus registry, served on `/metrics`.
    pub registry: Registry,
    /// Where uploads and batch results are stored.
    pub store: Arc<Store>,
    /// Applies new lane limits at run time (SIGHUP, `POST /admin/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    /// Request body bytes held in memory by all requests (`bff.max_buffered_bytes`).
    pub body_budget: Arc<intake::BodyBudget>,
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
    /// What every worker shares.
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
        let body_budget = Arc::new(intake::BodyBudget::new(&registry));
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
                body_budget,
            }),
        })
    }

    /// Binds `bff.admin_listen`, if set. A bind failure is an error naming the key: the
    /// process must not run with its metrics and admin endpoints silently missing.
    pub fn bind_admin(&self) -> anyhow::Result<Option<std::net::TcpListener>> {
        self.state
            .config
            .bff
            .admin_listen
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (bff.admin_listen): {e}"))
            })
            .transpose()
    }

    /// Serves HTTP on `listener` (and, if `bff.admin_listen` is set, the admin endpoints on
    /// that address) until `shutdown` resolves, then drains in-flight requests for up to
    /// `bff.shutdown_timeout`. Must run inside an actix (or Tokio) runtime.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()> + 'static,
    ) -> anyhow::Result<()> {
        let admin = self.bind_admin()?;
        self.serve_with_admin(listener, admin, shutdown).await
    }

    /// Like [`Bff::serve`], with the admin listener already bound ([`Bff::bind_admin`]), so
    /// that a caller can learn its address first. `admin = None`: `/metrics` and
    /// `/admin/reload` are served on `listener`, as by default.
    pub async fn serve_with_admin(
        self,
        listener: std::net::TcpListener,
        admin: Option<std::net::TcpListener>,
        shutdown: impl Future<Output = ()> + 'static,
    ) -> anyhow::Result<()> {
        let state = web::Data::from(self.state.clone());
        // One set of collectors shared by both listeners (a second registration would panic).
        let http_metrics = web::Data::new(HttpMetrics::new(&self.state.registry));
        let bff = &self.state.config.bff;
        let workers = if bff.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            bff.workers
        };
        let addr = listener.local_addr()?;
        let admin_on_main = admin.is_none();
        let (main_state, main_metrics) = (state.clone(), http_metrics.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(main_state.clone())
                .app_data(main_metrics.clone())
                // Innermost: runs on the request head, before any handler reads the body.
                .wrap(from_fn(auth::require_api_key))
                // Preflights are answered before authentication; 401s get CORS headers.
                .wrap(from_fn(cors::cors))
                // Counts every answer, preflights and 401s included.
                .wrap(from_fn(record_http_metrics))
                // Outermost: every answer carries the request id; one access-log line each.
                .wrap(from_fn(request_context::request_context))
                .configure(routes::configure)
                .configure(page::configure)
                .configure(|cfg| {
                    if admin_on_main {
                        routes::configure_admin(cfg);
                    }
                })
                .default_service(web::to(resource::not_found))
        })
        .workers(workers)
        .disable_signals()
        .client_request_timeout(bff.client_request_timeout)
        .shutdown_timeout(bff.shutdown_timeout.as_secs())
        .listen(listener)?
        .run();
        let admin_server = match admin {
            Some(admin) => {
                let admin_addr = admin.local_addr()?;
                let server = HttpServer::new(move || {
                    // No API keys here: this listener is its own boundary (bind it where only
                    // operators and Prometheus reach), and reload keeps its loopback check.
                    App::new()
                        .app_data(state.clone())
                        .app_data(http_metrics.clone())
                        .wrap(from_fn(record_http_metrics))
                        .wrap(from_fn(request_context::request_context))
                        .configure(routes::configure_admin)
                        .default_service(web::to(resource::not_found))
                })
                .workers(1)
                .disable_signals()
                .client_request_timeout(bff.client_request_timeout)
                .shutdown_timeout(bff.shutdown_timeout.as_secs())
                .listen(admin)?
                .run();
                tracing::info!(addr = %admin_addr, "BFF admin listener (/metrics, /admin/reload)");
                Some(server)
            }
            None => None,
        };
        tracing::info!(
            %addr,
            mode = ?self.state.config.mode,
            compute = %self.state.config.compute_url,
            api_keys = bff.api_keys.len(),
            "BFF listening{}",
            if bff.api_keys.is_empty() { " (API-key auth off)" } else { " (API-key auth on)" },
        );
        // The retention sweep lives as long as the server (it also sets the store gauges).
        let sweeper = self.state.store.spawn_sweeper();
        let handle = server.handle();
        let admin_handle = admin_server.as_ref().map(|s| s.handle());
        actix_web::rt::spawn(async move {
            shutdown.await;
            tracing::info!("BFF draining in-flight requests");
            let admin_stop = async {
                if let Some(h) = admin_handle {
                    h.stop(true).await;
                }
            };
            futures_util::future::join(handle.stop(true), admin_stop).await;
        });
        let admin_served = async {
            match admin_server {
                Some(s) => s.await,
                None => Ok(()),
            }
        };
        let (served, admin_served) = futures_util::future::join(server, admin_served).await;
        sweeper.abort();
        served?;
        admin_served?;
        tracing::info!("BFF stopped");
        Ok(())
    }
}

/// Middleware: `imagegate_http_requests_total` and `imagegate_http_request_duration_seconds`.
async fn record_http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let m = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let res = next.call(req).await?;
    if let Some(m) = m {
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
    }
    Ok(res)
}

/// Binds the configured addresses and serves until a signal (the `imagegate bff` command).
/// Reloads on SIGHUP while serving.
pub async fn run(config: Config, config_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(config.bff.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (bff.listen): {e}", config.bff.listen))?;
    let bff = Bff::with_config_file(config, config_file).await?;
    let admin = bff.bind_admin()?;
    #[cfg(unix)]
    actix_web::rt::spawn(crate::reload::reload_on_sighup(bff.state.reloader.clone()));
    bff.serve_with_admin(listener, admin, crate::shutdown::signal())
        .await
}
