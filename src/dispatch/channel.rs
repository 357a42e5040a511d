//! One of a lane's HTTP/2 connections to one compute endpoint, driven by hyper directly.
//!
//! Why not tonic's `Channel`: it puts a `tower::buffer` in front of its connection, so every
//! call was handed from its caller (an actix worker) to the buffer's task on the lane runtime,
//! from there to the h2 connection task, and its answer back: three thread wake-ups per call,
//! the largest share of the BFF's CPU per small request (docs/benchmarks-edge.md). Here the
//! caller hands its request straight to the connection task (hyper's `SendRequest`): two.
//!
//! What the buffer also did is done here: the connection is made lazily, on the lane's runtime
//! (so its socket is registered with that runtime's reactor, not with the actix worker that
//! called first), made again after it closes, and one connect is shared by every call that
//! waits for it. Errors look as they did: a failed connect is a `tonic::ConnectError`
//! (UNAVAILABLE, and known to the lane as "never reached compute"), a broken connection a
//! `hyper::Error`, both mapped by `Status::from_error` as tonic's own client maps them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{FutureExt, Shared};
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::body::Body;
use tower::Service;

use super::connector::MeteredConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Spawns a lane's connection tasks: on the lane's own runtime, whatever runtime the call came
/// from, or (`None`, a lane with `io_threads = 0`) on the runtime of the thread that made the
/// connection, which then drives it.
#[derive(Clone)]
pub struct LaneExecutor(pub Option<tokio::runtime::Handle>);

impl<F> hyper::rt::Executor<F> for LaneExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match &self.0 {
            Some(runtime) => drop(runtime.spawn(fut)),
            None => drop(tokio::spawn(fut)),
        }
    }
}

/// TLS towards compute: the client config (roots, identity, ALPN h2) and the name its
/// certificate must carry.
#[derive(Clone)]
pub struct ChannelTls {
    /// rustls' client settings, ALPN `h2` included.
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The name verified against compute's certificate.
    pub server_name: ServerName<'static>,
}

/// How a lane's connections to one endpoint are made (shared by that endpoint's channels).
pub struct ChannelSettings {
    /// `http` or `https`, put into every request's URI (HTTP/2's `:scheme`).
    pub scheme: Scheme,
    /// `host:port` of the endpoint (`:authority`, and where the connector connects).
    pub authority: Authority,
    /// `Some` when the lane speaks TLS to compute.
    pub tls: Option<ChannelTls>,
    /// Bounds the whole connect: TCP, TLS and the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// HTTP/2 windows, frame size and keep-alive, with the lane's executor.
    pub http2: Builder<LaneExecutor>,
    /// The lane's runtime: connects and connection tasks run there. `None` (`io_threads = 0`):
    /// the thread whose call finds no connection makes it, and its runtime drives it.
    pub runtime: Option<tokio::runtime::Handle>,
    /// Opens the metered TCP connections.
    pub connector: MeteredConnector,
}

impl ChannelSettings {
    /// hyper's HTTP/2 client settings for a lane (the same ones tonic's `Endpoint` set).
    pub fn http2(
        runtime: Option<&tokio::runtime::Handle>,
        stream_window: u32,
        connection_window: u32,
        keepalive_interval: Duration,
        keepalive_timeout: Duration,
    ) -> Builder<LaneExecutor> {
        let mut builder = Builder::new(LaneExecutor(runtime.cloned()));
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(connection_window)
            .max_frame_size(crate::vocab::limits::H2_MAX_FRAME_SIZE)
            .keep_alive_interval(keepalive_interval)
            .keep_alive_timeout(keepalive_timeout)
            .keep_alive_while_idle(true);
        builder
    }

    /// The callers' threads drive the connections (no runtime of the lane's own).
    pub fn caller_driven(&self) -> bool {
        self.runtime.is_none()
    }

    fn uri(&self) -> http::Uri {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .expect("scheme and authority were parsed already")
    }
}

/// The outcome of one connect, shared by every call that waited for it.
type Connect = Shared<BoxFuture<Result<SendRequest<Body>, Arc<str>>>>;

enum State {
    /// No connection: the next call connects.
    Idle,
    /// A connect is under way, driven by `Driver`.
    Connecting(Connect, Driver),
    /// Connected (until `SendRequest::is_closed`).
    Ready(SendRequest<Body>, Driver),
}

/// What drives a channel's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// No connection (none yet, or it closed): the next call makes one.
    Nobody,
    /// The lane's own runtime.
    LaneRuntime,
    /// The runtime of this thread (a lane with `io_threads = 0`).
    Thread(std::thread::ThreadId),
}

/// One lazily made, self-renewing HTTP/2 connection; clones share it. A `tower::Service`
/// for tonic's generated clients and for `dispatch::clients::zero_copy`.
#[derive(Clone)]
pub struct LaneChannel {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<ChannelSettings>,
    state: Mutex<State>,
}

impl LaneChannel {
    /// A channel that connects on its first call.
    pub fn lazy(settings: Arc<ChannelSettings>) -> Self {
        LaneChannel {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(State::Idle),
            }),
        }
    }

    /// What drives this channel's connection now.
    pub fn driver(&self) -> Driver {
        match &*self.inner.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Idle => Driver::Nobody,
            State::Ready(sender, _) if sender.is_closed() => Driver::Nobody,
            State::Connecting(_, driver) | State::Ready(_, driver) => *driver,
        }
    }

    /// The connection's sender, connecting first if there is none (or it closed).
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        let (connect, driver) = {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            match &*state {
                State::Ready(sender, _) if !sender.is_closed() => return Ok(sender.clone()),
                State::Connecting(connect, driver) => (connect.clone(), *driver),
                State::Idle | State::Ready(..) => {
                    let settings = Arc::clone(&self.inner.settings);
                    // The connect runs where the connection will be driven: its socket is
                    // registered with that runtime's reactor.
                    let (task, driver) = match &settings.runtime {
                        Some(runtime) => (
                            runtime.spawn(connect(Arc::clone(&settings))),
                            Driver::LaneRuntime,
                        ),
                        None => (
                            tokio::spawn(connect(Arc::clone(&settings))),
                            Driver::Thread(std::thread::current().id()),
                        ),
                    };
                    let connect: Connect = async move {
                        task.await
                            .unwrap_or_else(|e| Err(format!("the connect task failed: {e}").into()))
                    }
                    .boxed()
                    .shared();
                    *state = State::Connecting(connect.clone(), driver);
                    (connect, driver)
                }
            }
        };
        let result = connect.clone().await;
        {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            // Only the attempt awaited here may be settled (a newer one may have started).
            if matches!(&*state, State::Connecting(current, _) if current.ptr_eq(&connect)) {
                *state = match &result {
                    Ok(sender) => State::Ready(sender.clone(), driver),
                    Err(_) => State::Idle,
                };
            }
        }
        result.map_err(|message| Box::new(tonic::ConnectError(message.to_string().into())) as _)
    }
}

/// TCP (metered), then TLS if configured, then the HTTP/2 handshake; the connection task is
/// spawned on the current runtime (this runs in a task spawned where the connection is to be
/// driven).
async fn connect(settings: Arc<ChannelSettings>) -> Result<SendRequest<Body>, Arc<str>> {
    let attempt = async {
        let tcp = settings
            .connector
            .clone()
            .call(settings.uri())
            .await
            .map_err(|e| format!("tcp connect error: {e}"))?;
        match &settings.tls {
            None => handshake(&settings.http2, tcp).await,
            Some(tls) => {
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
                    .connect(tls.server_name.clone(), tcp.into_inner())
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err("compute did not negotiate HTTP/2 over TLS (ALPN h2)".to_string());
                }
                handshake(&settings.http2, TokioIo::new(stream)).await
            }
        }
    };
    let authority = &settings.authority;
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Ok(Ok(sender)) => Ok(sender),
        Ok(Err(e)) => Err(format!("connecting to {authority}: {e}").into()),
        Err(_) => Err(format!(
            "connecting to {authority} took longer than {:?}",
            settings.connect_timeout
        )
        .into()),
    }
}

async fn handshake<T>(builder: &Builder<LaneExecutor>, io: T) -> Result<SendRequest<Body>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = builder
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a lane connection ended with an error");
        }
    });
    Ok(sender)
}

/// The `user-agent` of the BFF's calls (tonic's `Channel` sent its own, `tonic/<version>`).
const USER_AGENT: &str = concat!("imagegate-bff/", env!("CARGO_PKG_VERSION"));

impl Service<http::Request<Body>> for LaneChannel {
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, checked per call: there is no queue to fill here
        // (the lane's permits bound the calls in flight).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            let settings = &channel.inner.settings;
            let mut uri = std::mem::take(request.uri_mut()).into_parts();
            uri.scheme = Some(settings.scheme.clone());
            uri.authority = Some(settings.authority.clone());
            *request.uri_mut() = http::Uri::from_parts(uri)?;
            request
                .headers_mut()
                .entry(http::header::USER_AGENT)
                .or_insert(http::HeaderValue::from_static(USER_AGENT));
            let mut sender = channel.sender().await?;
            sender.ready().await?;
            Ok(sender.send_request(request).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::connector::ConnectionMetrics;
    use crate::pacing::SocketRegistry;
    use prometheus::{IntCounter, IntGauge};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// A real gRPC server (tonic's health service) on `listener`, until `stop` fires.
    fn serve(listener: tokio::net::TcpListener, stop: tokio::sync::oneshot::Receiver<()>) {
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop.await;
                    },
                ),
        );
    }

    /// A lane's settings towards `address`; `lane_runtime` as with `io_threads` > 0, `None` as
    /// with 0. Returns the gauge of open connections too.
    fn settings(
        address: &str,
        lane_runtime: Option<tokio::runtime::Handle>,
    ) -> (ChannelSettings, IntGauge) {
        let open = IntGauge::new("open", "open").unwrap();
        let settings = ChannelSettings {
            scheme: Scheme::HTTP,
            authority: address.parse().unwrap(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            http2: ChannelSettings::http2(
                lane_runtime.as_ref(),
                1 << 20,
                1 << 20,
                Duration::from_secs(30),
                Duration::from_secs(10),
            ),
            runtime: lane_runtime,
            connector: MeteredConnector {
                metrics: ConnectionMetrics {
                    open: open.clone(),
                    bytes_sent: IntCounter::new("sent", "sent").unwrap(),
                    bytes_received: IntCounter::new("received", "received").unwrap(),
                },
                connect_timeout: Duration::from_secs(5),
                tcp_rto_min: Duration::ZERO,
                sockets: Arc::new(SocketRegistry::default()),
            },
        };
        (settings, open)
    }

    fn channel(address: &str) -> (LaneChannel, IntGauge) {
        let (settings, open) = settings(address, Some(tokio::runtime::Handle::current()));
        (LaneChannel::lazy(Arc::new(settings)), open)
    }

    async fn check(channel: &LaneChannel) -> Result<(), tonic::Status> {
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn connects_on_the_first_call_and_concurrent_first_calls_share_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (_stop, stop) = tokio::sync::oneshot::channel();
        serve(listener, stop);
        let (channel, open) = channel(&address);
        assert_eq!(open.get(), 0, "lazy: nothing is connected before a call");
        let calls: Vec<_> = (0..8).map(|_| check(&channel)).collect();
        for result in futures_util::future::join_all(calls).await {
            result.unwrap();
        }
        assert_eq!(open.get(), 1, "eight first calls, one connect");
        check(&channel).await.unwrap();
        assert_eq!(open.get(), 1, "later calls reuse the connection");
    }

    #[tokio::test]
    async fn a_closed_connection_is_made_again_by_the_next_call() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop_first, stop) = tokio::sync::oneshot::channel();
        serve(listener, stop);
        let (channel, open) = channel(&address.to_string());
        check(&channel).await.unwrap();
        // The server goes away: its connection closes (GOAWAY, then FIN).
        stop_first.send(()).unwrap();
        for _ in 0..200 {
            if open.get() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(open.get(), 0, "the connection closed with its server");
        // A new server on the same port: the channel connects again by itself.
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let (_stop, stop) = tokio::sync::oneshot::channel();
        serve(listener, stop);
        check(&channel).await.unwrap();
        assert_eq!(open.get(), 1);
    }

    #[tokio::test]
    async fn a_failed_connect_is_unavailable_and_known_never_to_have_reached_compute() {
        // A port nothing listens on (bound, then closed).
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let (channel, open) = channel(&address);
        let status = check(&channel).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            crate::dispatch::lane::never_reached_server(&status),
            "a refused connect is safe to retry elsewhere: {status:?}"
        );
        assert!(status.message().contains(&address), "{}", status.message());
        assert_eq!(open.get(), 0);
        // The failure is not remembered: the next call tries again (and fails again here).
        let again = check(&channel).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn with_io_threads_0_each_thread_drives_the_connections_it_made_and_keeps_to_them() {
        use crate::dispatch::pool::ChannelPool;
        // compute (a real gRPC server) on a runtime of its own.
        let server = tokio::runtime::Runtime::new().unwrap();
        let listener = server
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (_stop, stop) = tokio::sync::oneshot::channel();
        server.block_on(async { serve(listener, stop) });

        let (settings, open) = settings(&address, None);
        let pool = Arc::new(ChannelPool::new(settings, 4, 2));
        // Two "HTTP workers": threads with a single-threaded runtime each, as actix's.
        let worker = |pool: Arc<ChannelPool>| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let me = std::thread::current().id();
                rt.block_on(async {
                    let mut used = Vec::new();
                    for _ in 0..6 {
                        let channel = pool.pick();
                        check(&channel).await.unwrap();
                        assert_eq!(channel.driver(), Driver::Thread(me), "its own connection");
                        used.push(Arc::as_ptr(&channel.inner) as usize);
                    }
                    used.sort();
                    used.dedup();
                    used
                })
            })
        };
        // One after the other: the first keeps to its two channels (it does not take all four).
        let a = worker(Arc::clone(&pool)).join().unwrap();
        let b = worker(Arc::clone(&pool)).join().unwrap();
        assert_eq!(a.len(), 2, "the first thread spreads over its group: {a:?}");
        assert_eq!(
            b.len(),
            2,
            "the second thread spreads over its group: {b:?}"
        );
        assert!(
            a.iter().all(|c| !b.contains(c)),
            "no connection shared: {a:?} {b:?}"
        );
        assert!(
            open.get() <= 4,
            "never more than `connections`: {}",
            open.get()
        );
    }
}
