//! A lane's pool of channels to one compute endpoint (one replica): `connections`
//! [`LaneChannel`]s, each its own TCP connection.
//!
//! A channel multiplexes many calls over one HTTP/2 connection, so a call does not hold a
//! pooled object: [`ChannelPool::pick`] hands out the next channel in turn. The lane's
//! concurrency is governed by its permit counter alone, never by the pool. Channels connect
//! lazily and reconnect by themselves, so the BFF starts while compute is down.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::channel::{ChannelSettings, LaneChannel};

/// Spawns a lane's connection tasks on the lane's own runtime, whatever runtime the first
/// call came from (actix workers are single-threaded; the lanes' I/O must not share them).
#[derive(Clone)]
pub struct LaneExecutor(pub tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for LaneExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// `connections` channels to one endpoint, handed out in turn.
pub struct ChannelPool {
    channels: Vec<LaneChannel>,
    next: AtomicUsize,
}

impl ChannelPool {
    /// `connections` lazily-connected channels (at least one), made as `settings` say.
    pub fn new(settings: ChannelSettings, connections: usize) -> Self {
        let settings = Arc::new(settings);
        ChannelPool {
            channels: (0..connections.max(1))
                .map(|_| LaneChannel::lazy(Arc::clone(&settings)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next channel in turn (round robin over the pool's connections).
    pub fn pick(&self) -> LaneChannel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}
