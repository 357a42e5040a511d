//! Heavy traffic yields (`yield_to`): a lane whose uploads would fill the path to compute is
//! paced (see [`crate::pacing`]), so that the named lane's small calls cross an almost empty
//! queue.
//!
//! The bulkhead's separate connections keep a health check out of an upload's TCP stream, but
//! not out of the network's queue: every packet of every connection waits behind the bytes
//! queued at the path's bottleneck (a 100 Mbit/s link with 50 ms of buffer that the uploads
//! keep full). The driver here paces the lane's connections to each compute endpoint as one
//! path, and counts the protected lane's connection to the same endpoint in the delay.
//!
//! Why the heavy connections' own round trips, and not only the protected lane's: a health
//! check crosses the path every few seconds, so its connection's estimate is mostly stale,
//! while the heavy connections are measured by every ACK while they send, and what they
//! measure is the same queue. Compute's answers queue on the way back; `compute.yield_answers`
//! paces those (`compute::yielding`).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::lane::Lane;
use crate::pacing::{PacedPaths, SocketRegistry, Yielding, ANSWER_BYTES_PER_TICK, TICK};

/// Starts the driver of `lane` on `runtime` (the lane's own): every [`TICK`] it measures and
/// paces the lane's connections while the lane's `yield_to` names a lane in `registries` (read
/// each tick, so a reload turns yielding on and off). It ends with the lane.
pub fn spawn(
    lane: &Arc<Lane>,
    registries: BTreeMap<String, Arc<SocketRegistry>>,
    runtime: &tokio::runtime::Handle,
) {
    runtime.spawn(drive(Arc::downgrade(lane), registries));
}

async fn drive(lane: Weak<Lane>, registries: BTreeMap<String, Arc<SocketRegistry>>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut paths = PacedPaths::default();
    loop {
        ticks.tick().await;
        let Some(lane) = lane.upgrade() else { return };
        let config = lane.config();
        let own = lane.upstream().sockets();
        // `yield_to = ""` (off) names no lane, so it finds no registry.
        let Some(protected) = registries.get(&config.yield_to) else {
            paths.lift(own);
            lane.metrics().pacing_rate.set(0);
            lane.metrics().path_delay.set(0.0);
            drop(lane);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let now = Instant::now();
        let settings = Yielding {
            target: config.yield_delay_target,
            floor: config.yield_min_rate.0,
            quiet_below: Some(ANSWER_BYTES_PER_TICK),
            key: "lanes.*.yield_to",
            standing: crate::pacing::STANDING_QUEUE,
            memory: Duration::ZERO,
            skip_loopback: true,
        };
        let (paced, delay) = paths.tick(own, Some(protected), now, settings);
        let metrics = lane.metrics();
        metrics.pacing_rate.set(paced.min(i64::MAX as u64) as i64);
        if let Some(delay) = delay {
            metrics.path_delay.set(delay.as_secs_f64());
        }
    }
}
