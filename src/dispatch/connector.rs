//! The lanes' TCP connector: every real connection a lane makes goes through here, so this is
//! where open connections and bytes are counted (measured, not echoed from config), socket
//! options are set (TCP_NODELAY, the retransmission-timeout floor), and where each open socket
//! is listed for the pacer (a [`SocketRegistry`]). TLS, when configured, is layered on top of
//! these streams by tonic, so the bytes counted are the wire's.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::pacing::{Registration, SocketRegistry};

/// Counters one lane's connections report into.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Bytes written to the connections.
    pub bytes_sent: IntCounter,
    /// Bytes read from the connections.
    pub bytes_received: IntCounter,
}

/// A `tower::Service<Uri>` that opens metered TCP connections.
#[derive(Clone)]
pub struct MeteredConnector {
    /// Where the connections are counted.
    pub metrics: ConnectionMetrics,
    /// How long a TCP connect may take before it fails.
    pub connect_timeout: Duration,
    /// Floor of the retransmission timeout (`Duration::ZERO` = the kernel's).
    pub tcp_rto_min: Duration,
    /// Where the lane's open sockets are listed (for the pacer, `dispatch::yielding`).
    pub sockets: Arc<SocketRegistry>,
}

static RTO_MIN_UNSUPPORTED: std::sync::Once = std::sync::Once::new();

impl tower::Service<http::Uri> for MeteredConnector {
    type Response = TokioIo<MeteredStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let metrics = self.metrics.clone();
        let timeout = self.connect_timeout;
        let rto_min = self.tcp_rto_min;
        let sockets = Arc::clone(&self.sockets);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {host}:{port} took longer than {timeout:?}"),
                    )
                })??;
            // gRPC frames are small writes that must not wait for Nagle.
            stream.set_nodelay(true)?;
            if let Err(e) = crate::sockopt::set_tcp_rto_min(&stream, rto_min) {
                crate::sockopt::warn_once(&RTO_MIN_UNSUPPORTED, "lanes.*.tcp_rto_min", &e);
            }
            metrics.open.inc();
            let address = uri
                .authority()
                .map_or_else(|| format!("{host}:{port}"), |a| a.as_str().to_string());
            Ok(TokioIo::new(MeteredStream {
                _registration: sockets.register(address, stream.as_raw_fd()),
                inner: stream,
                metrics,
                unpushed: false,
            }))
        })
    }
}

/// A TCP stream that counts its bytes and its own lifetime in the lane's metrics, and pushes
/// what HTTP/2 flushes onto the wire at once.
///
/// Why the push: h2 writes a call's HEADERS and its DATA in two writes. Linux "autocorks" a
/// small write while an earlier segment of the same socket still sits in a qdisc or device
/// queue (`net.ipv4.tcp_autocorking`, on by default, and TCP_NODELAY does not turn it off), so
/// on a link with a standing queue the DATA half of a small call waited for the HEADERS half
/// to drain the whole queue and then queued again: every realtime call paid the link's queue
/// twice (measured in `docs/benchmarks-hol.md`). Setting TCP_NODELAY again after the writes of
/// a flush makes the kernel push the corked bytes now; it costs one `setsockopt` per flush
/// that followed a write.
pub struct MeteredStream {
    /// Declared before `inner`: fields drop in order, so the entry is gone before the fd
    /// closes.
    _registration: Registration,
    inner: TcpStream,
    metrics: ConnectionMetrics,
    /// Bytes were written since the last flush.
    unpushed: bool,
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl AsyncRead for MeteredStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.metrics.bytes_received.inc_by(read as u64);
        }
        result
    }
}

impl AsyncWrite for MeteredStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.metrics.bytes_sent.inc_by(n as u64);
            this.unpushed |= n > 0;
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            this.metrics.bytes_sent.inc_by(n as u64);
            this.unpushed |= n > 0;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unpushed {
            this.unpushed = false;
            // Setting TCP_NODELAY (already on) sends whatever autocorking held back.
            this.inner.set_nodelay(true)?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
