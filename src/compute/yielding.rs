//! Compute yields too (`compute.yield_answers`): the answers to each peer are paced (see
//! [`crate::pacing`]) so that the queue they build on the way back to a BFF stays short.
//!
//! The BFF's heavy lane paces the uploads (`lanes.heavy.yield_to`), but a 2 MB answer sent at
//! once fills the queue of the other direction just as well, and a health check's answer waits
//! behind it. Compute cannot tell a lane's connections apart, and need not: it paces all its
//! connections to one peer IP as one path, sharing the rate out over those with bytes to send;
//! a health check's connection has none for more than an instant.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::metrics::ComputeMetrics;
use crate::config::ComputeConfig;
use crate::pacing::{PacedPaths, Registration, SocketRegistry, Yielding, TICK};

/// An accepted connection, listed in compute's [`SocketRegistry`] under its peer's IP while
/// it is open.
pub struct RegisteredStream {
    /// Declared before `inner`: fields drop in order, so the entry is gone before the fd
    /// closes.
    _registration: Registration,
    inner: TcpStream,
}

impl RegisteredStream {
    /// Lists `stream` in `registry`.
    pub fn new(stream: TcpStream, registry: &Arc<SocketRegistry>) -> Self {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_string(), |a| a.ip().to_string());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        RegisteredStream {
            _registration: registry.register(peer, fd),
            inner: stream,
        }
    }
}

impl Connected for RegisteredStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for RegisteredStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RegisteredStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Paces the connections in `registry` every [`TICK`] while `config.yield_answers` is on, until
/// the returned task is aborted (the server stops).
pub fn spawn(
    registry: Arc<SocketRegistry>,
    config: &ComputeConfig,
    metrics: ComputeMetrics,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.yield_answers {
        return None;
    }
    let settings = Yielding {
        target: config.yield_delay_target,
        floor: config.yield_min_rate.0,
        // Uploads stream in all the time: their ACKs' delay is what the answers are judged by.
        quiet_below: None,
        key: "compute.yield_answers",
        // Starting at once for the answers' ~100 ms bursts was tried: one bench-hol run gave
        // a shorter queue on the way back but 0.75× the throughput (docs/benchmarks-hol.md).
        standing: crate::pacing::STANDING_QUEUE,
        memory: crate::pacing::RESUME_MEMORY,
        skip_loopback: true,
    };
    Some(tokio::spawn(async move {
        let mut paths = PacedPaths::default();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (paced, delay) = paths.tick(&registry, None, Instant::now(), settings);
            metrics.pacing_rate.set(paced.min(i64::MAX as u64) as i64);
            if let Some(delay) = delay {
                metrics.path_delay.set(delay.as_secs_f64());
            }
        }
    }))
}
