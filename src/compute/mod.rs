//! The compute service: a tonic server for ImageService, HealthService, FileService, the standard
//! `grpc.health.v1.Health` and server reflection on one port, with image work on a bounded CPU
//! pool and `imagegate_compute_*` metrics on a separate small HTTP listener.
//!
//! - [`service`]: the ImageService and HealthService handlers and parameter validation;
//! - [`file_service`]: the FileService handlers (compression, archive extraction);
//! - [`files`]: the file operations themselves (plain sync functions, archive-bomb limits);
//! - [`pool`]: the bounded CPU pool;
//! - [`ops`]: the image operations themselves (plain sync functions);
//! - [`status`]: errors → gRPC statuses with ErrorInfo;
//! - [`yielding`]: pacing the answers so that they leave the path back to a BFF short
//!   (`compute.yield_answers`).

pub mod file_service;
pub mod files;
pub mod metrics;
pub mod ops;
pub mod pool;
pub mod request_log;
pub mod service;
pub mod status;
pub mod yielding;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::ComputeConfig;
use crate::proto::file_service_server::FileServiceServer;
use crate::proto::health_service_server::HealthServiceServer;
use crate::proto::image_service_server::ImageServiceServer;
use file_service::FileServiceImpl;
use metrics::ComputeMetrics;
use ops::Limits;
use pool::CpuPool;
use service::{CallHook, Engine, HealthServiceImpl, ImageServiceImpl};

/// HTTP/2 receive windows of the server: they govern how fast uploads flow from the BFF.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Everything needed to run a compute server, built from config.
pub struct ComputeServer {
    config: ComputeConfig,
    registry: Registry,
    hook: Option<CallHook>,
}

impl ComputeServer {
    /// A server for `config`, with its own metrics registry and no call hook.
    pub fn new(config: ComputeConfig) -> Self {
        ComputeServer {
            config,
            registry: crate::metrics::new_registry(),
            hook: None,
        }
    }

    /// Run `hook` at the start of every call (observability and tests).
    pub fn with_call_hook(mut self, hook: CallHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Serves gRPC on `listener` (and `/metrics` on `metrics_listener`) until `shutdown`
    /// resolves; then stops accepting, reports NOT_SERVING, and lets in-flight calls finish
    /// for up to `drain_timeout`.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let c = &self.config;
        let metrics = ComputeMetrics::new(&self.registry);
        let pool = CpuPool::new(
            c.workers,
            c.queue_capacity,
            c.cpu_nice,
            metrics.queue_depth.clone(),
        )?;
        let max_message = c.max_message_size.as_usize();
        let pacer_metrics = metrics.clone();
        let engine = Arc::new(Engine {
            pool,
            limits: Limits {
                max_pixels: c.max_pixels,
                avif_speed: c.avif_speed,
            },
            archive: files::ArchiveLimits {
                max_entries: c.archive_max_entries,
                // Names and framing count too: what fits in one answer.
                max_total_bytes: max_message.saturating_sub(64 * 1024) as u64,
                max_expansion: c.archive_max_expansion,
            },
            metrics,
            hook: self.hook.clone(),
        });
        let serving = Arc::new(AtomicBool::new(true));

        let (grpc_health, grpc_health_service) = tonic_health::server::health_reporter();
        let (routes, service_names) = contract_services(&engine, &serving, max_message);
        for name in &service_names {
            grpc_health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let addr = listener.local_addr()?;
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(ml) = metrics_listener {
            let registry = self.registry.clone();
            tracing::info!(addr = %ml.local_addr()?, "compute metrics listening");
            tokio::spawn(async move {
                let _ = crate::metrics::serve(ml, registry, async {
                    let _ = metrics_stopped.await;
                })
                .await;
            });
        }

        // `Server::tcp_nodelay` only applies to listeners tonic binds itself: set it on the
        // accepted sockets here, or small responses wait on the client's delayed ACK (~40 ms).
        // The retransmission-timeout floor is set here too (see `sockopt::set_tcp_rto_min`).
        // Every accepted connection is listed for the answers' pacer (idle unless
        // `yield_answers` is on).
        let rto_min = c.tcp_rto_min;
        let sockets = Arc::new(crate::pacing::SocketRegistry::default());
        let pacer = yielding::spawn(sockets.clone(), c, pacer_metrics);
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .map(move |accepted| {
                static RTO_MIN_UNSUPPORTED: std::sync::Once = std::sync::Once::new();
                let stream = accepted?;
                if let Err(e) = crate::sockopt::set_tcp_rto_min(&stream, rto_min) {
                    crate::sockopt::warn_once(&RTO_MIN_UNSUPPORTED, "compute.tcp_rto_min", &e);
                }
                Ok::<_, std::io::Error>(yielding::RegisteredStream::new(stream, &sockets))
            });
        let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut builder = Server::builder();
        if let Some(tls) = server_tls(c)? {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(crate::vocab::limits::H2_MAX_FRAME_SIZE)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .layer(request_log::RequestLogLayer)
            .layer(tower::util::MapResponseLayer::new(
                status::rewrite_message_too_large::<tonic::body::Body>,
            ))
            .add_routes(routes)
            .add_service(grpc_health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = grpc_stopped.await;
            });
        tracing::info!(%addr, workers = engine.pool.workers(), "compute listening");
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            _ = shutdown => {
                serving.store(false, Ordering::Relaxed);
                for name in &service_names {
                    grpc_health
                        .set_service_status(*name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                grpc_health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                let _ = stop_grpc.send(());
                match tokio::time::timeout(self.config.drain_timeout, &mut server).await {
                    Ok(result) => result?,
                    Err(_) => tracing::warn!("drain timeout passed with calls still in flight"),
                }
            }
        }
        let _ = stop_metrics.send(());
        if let Some(pacer) = pacer {
            pacer.abort();
        }
        tracing::info!("compute stopped");
        Ok(())
    }
}

/// Every contract service compute serves, in one place (adding a service is one entry here),
/// each with the message limit in both directions; and their names for `grpc.health.v1`.
fn contract_services(
    engine: &Arc<Engine>,
    serving: &Arc<AtomicBool>,
    max_message: usize,
) -> (tonic::service::Routes, Vec<&'static str>) {
    use tonic::server::NamedService;
    let image = ImageServiceServer::new(ImageServiceImpl(engine.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let health = HealthServiceServer::new(HealthServiceImpl {
        engine: engine.clone(),
        serving: serving.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    let file = FileServiceServer::new(FileServiceImpl(engine.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let names = vec![
        ImageServiceServer::<ImageServiceImpl>::NAME,
        HealthServiceServer::<HealthServiceImpl>::NAME,
        FileServiceServer::<FileServiceImpl>::NAME,
    ];
    let routes = tonic::service::Routes::new(image)
        .add_service(health)
        .add_service(file);
    (routes, names)
}

/// Reads `compute.tls_*` into tonic's server TLS settings (None: plain TCP).
fn server_tls(c: &ComputeConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        return Ok(None);
    };
    let read = |what: &str, path: &str| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("compute.{what}: cannot read {path:?}: {e}"))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read("tls_cert", cert)?,
        read("tls_key", key)?,
    ));
    if let Some(ca) = &c.tls_client_ca {
        // Mutual TLS: a client without a certificate this CA signed is refused in the handshake.
        tls = tls.client_ca_root(Certificate::from_pem(read("tls_client_ca", ca)?));
    }
    Ok(Some(tls))
}

/// Binds the configured addresses and serves until a signal (the `imagegate compute` command).
pub async fn run(config: ComputeConfig) -> anyhow::Result<()> {
    let listener = bind(config.listen, "compute.listen").await?;
    let metrics = bind(config.metrics_listen, "compute.metrics_listen").await?;
    ComputeServer::new(config)
        .serve(listener, Some(metrics), crate::shutdown::signal())
        .await
}

/// Binds or fails loudly, naming what it tried to bind.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
}
