//! A lane's pool of channels to one compute endpoint (one replica): `connections` tonic channels, each
//! separately connected (its own TCP connection), managed by deadpool.
//!
//! A tonic `Channel` multiplexes many calls over one HTTP/2 connection, so a call does not
//! hold a pooled object: [`ChannelPool::pick`] takes the next channel in turn, clones its handle
//! and returns it to the pool at once. The lane's concurrency is governed by its permit counter
//! alone, never by the pool. Channels connect lazily and reconnect by themselves, so the BFF
//! starts while compute is down.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use deadpool::managed::{self, Metrics, Pool, QueueMode, RecycleResult};
use tonic::transport::{Channel, Endpoint};

use super::connector::MeteredConnector;

/// Spawns a lane's connection tasks on the lane's own runtime, whatever runtime the first
/// call came from (actix workers are single-threaded; the lanes' I/O must not share them).
#[derive(Clone)]
pub struct LaneExecutor(pub tokio::runtime::Handle);

impl hyper::rt::Executor<Pin<Box<dyn Future<Output = ()> + Send>>> for LaneExecutor {
    fn execute(&self, fut: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.spawn(fut);
    }
}

/// Creates lazily-connected channels, each through its own metered connector.
pub struct ChannelManager {
    endpoint: Endpoint,
    connector: MeteredConnector,
}

impl managed::Manager for ChannelManager {
    type Type = Channel;
    type Error = Infallible;

    async fn create(&self) -> Result<Channel, Infallible> {
        Ok(self
            .endpoint
            .connect_with_connector_lazy(self.connector.clone()))
    }

    async fn recycle(&self, _: &mut Channel, _: &Metrics) -> RecycleResult<Infallible> {
        // A channel re-establishes its connection by itself; nothing to check here.
        Ok(())
    }
}

/// `connections` channels to one endpoint, handed out in turn.
pub struct ChannelPool {
    pool: Pool<ChannelManager>,
}

impl ChannelPool {
    /// A pool of `connections` lazily-connected channels to `endpoint`, each through its own
    /// clone of `connector`.
    pub async fn new(
        endpoint: Endpoint,
        connector: MeteredConnector,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let manager = ChannelManager {
            endpoint,
            connector,
        };
        let pool = Pool::builder(manager)
            .max_size(connections)
            .queue_mode(QueueMode::Fifo)
            .build()?;
        let this = ChannelPool { pool };
        this.fill(connections).await?;
        Ok(this)
    }

    /// Creates channels up to `n` (deadpool creates on demand: take `n` at once).
    async fn fill(&self, n: usize) -> anyhow::Result<()> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(
                self.pool
                    .get()
                    .await
                    .map_err(|e| anyhow::anyhow!("channel pool: {e}"))?,
            );
        }
        Ok(())
    }

    /// The next channel in turn (round robin over the pool's connections).
    pub async fn pick(&self) -> Channel {
        // Objects are only ever held for this instant, so `get` never waits long.
        let object = self
            .pool
            .get()
            .await
            .expect("channel manager is infallible and the pool is never closed");
        Channel::clone(&object)
    }
}
