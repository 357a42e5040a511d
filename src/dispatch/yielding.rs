//! Heavy traffic yields (`yield_to`): a lane whose uploads would fill the path to compute is
//! paced, so that another lane's small calls cross an almost empty queue.
//!
//! The bulkhead's separate connections keep a health check out of an upload's TCP stream, but
//! not out of the network's queue: every packet of every connection waits behind the bytes
//! queued at the path's bottleneck (a 100 Mbit/s link with 50 ms of buffer that the uploads
//! keep full). A yielding lane keeps that queue short, as LEDBAT (RFC 6817) does for
//! background transfers:
//!
//! - Every [`TICK`], per compute endpoint, the driver reads `TCP_INFO` of the lane's
//!   connections and of the protected lane's. The path's queueing delay is the median, over
//!   the connections that delivered bytes in the tick (their estimate is fresh), of the
//!   smoothed round trip minus the least round trip any of them has seen (the path with
//!   empty queues).
//! - Above `yield_delay_target`, when the queue can be the lane's own (it is not paced, or it
//!   delivers less than it is let send), the [`Pacer`] cuts the endpoint's rate to [`BETA`] × what the
//!   lane delivered, then holds it until the queue that cut was for could have drained; at or
//!   below the target the rate rises additively, by a tenth per second of the most the lane
//!   delivered lately, and faster once it is past where the last cut came from (the path may have
//!   grown). It is never below `yield_min_rate`.
//! - The rate is shared out evenly over the endpoint's connections that have bytes to send,
//!   as `SO_MAX_PACING_RATE`; TCP then paces each one itself. When the path shows no queue
//!   the sockets are not capped at all, and a cap that no longer binds is lifted: on an
//!   uncongested path (loopback, a data-centre network) nothing changes.
//!
//! Why the heavy connections' own round trips, and not only the protected lane's: a health
//! check crosses the path every few seconds, so its connection's estimate is mostly stale,
//! while the heavy connections are measured by every ACK while they send, and what they
//! measure is the same queue. The protected lane's connection counts too whenever it is
//! fresh. A round trip includes the way back, where compute's answers queue in bursts; the
//! pacer cannot shorten that queue (compute sends the answers), so it makes no decision in a
//! tick in which answers were streaming in, and does not cut a paced lane that delivers what
//! it is let send (the queue it sees is not its own).
//!
//! Linux only (`TCP_INFO`, `SO_MAX_PACING_RATE`): elsewhere the lane warns once and is never
//! paced.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::connector::SocketRegistry;
use super::lane::Lane;
use crate::sockopt::{set_max_pacing_rate, tcp_path, TcpPath};

/// How often the driver measures and decides.
pub const TICK: Duration = Duration::from_millis(20);
/// The multiplicative cut: the rate falls to this share of what was delivered.
pub const BETA: f64 = 0.9;
/// The additive rise per second, as a share of the most the lane delivered lately.
const RISE_PER_SECOND: f64 = 0.1;
/// How much of that peak is kept per second (it halves in about 10 s).
const PEAK_DECAY: f64 = 0.933;
/// A queue above the target is cut deeper, so that it drains within about this long…
const DRAIN_HORIZON: Duration = Duration::from_millis(250);
/// …but a cut never takes more than half the rate at once.
const MIN_FACTOR: f64 = 0.5;
/// The shortest and longest hold after a cut.
const MIN_HOLD: Duration = Duration::from_millis(40);
const MAX_HOLD: Duration = Duration::from_secs(1);
/// How long the delivered rate is averaged over.
const DELIVERY_SMOOTHING: Duration = Duration::from_millis(100);
/// A paced lane that delivers less than this share of its rate is sending faster than the
/// path carries: the queue is (also) its own.
const OWN_QUEUE_SHARE: f64 = 0.97;
/// Answer bytes per tick from which compute's answers count as streaming in (~3 MB/s).
const ANSWER_BYTES_PER_TICK: u64 = 64 * 1024;
/// A cap this many times above what is delivered does not bind: it is lifted.
const UNBOUND: f64 = 4.0;

/// What one tick measured on the path to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathSample {
    /// The queueing delay, when a connection's estimate was fresh.
    pub delay: Option<Duration>,
    /// Bytes the yielding lane's connections to the endpoint delivered since the last tick.
    pub delivered: u64,
    /// The yielding lane has bytes in flight or waiting to be sent.
    pub backlogged: bool,
    /// Compute's answers were streaming in on the lane's connections during the tick: they
    /// queue on the way back and delay the ACKs, so the round trips say little about the
    /// queue the lane's own bytes wait in.
    pub answers_arriving: bool,
}

/// The rate controller of one endpoint of a yielding lane: plain and synchronous, driven by
/// the caller's clock, so it is tested with a simulated bottleneck under tokio's paused clock.
#[derive(Debug)]
pub struct Pacer {
    /// The endpoint's rate in bytes per second; `None`: not paced.
    rate: Option<f64>,
    /// What the lane delivered, bytes per second, smoothed over [`DELIVERY_SMOOTHING`].
    delivered: f64,
    /// The most the lane delivered lately (decaying by [`PEAK_DECAY`] per second): the scale
    /// of the additive rise.
    peak: f64,
    /// The rate the last cut was made from.
    cut_from: f64,
    /// The delay the last cut was for.
    cut_delay: Duration,
    /// No decision before this (the queue a cut was for is draining).
    hold_until: Instant,
    last: Instant,
}

impl Pacer {
    /// A pacer that does not pace yet.
    pub fn new(now: Instant) -> Self {
        Pacer {
            rate: None,
            delivered: 0.0,
            peak: 0.0,
            cut_from: 0.0,
            cut_delay: Duration::ZERO,
            hold_until: now,
            last: now,
        }
    }

    /// The rate in force, bytes per second (`None`: not paced).
    pub fn rate(&self) -> Option<u64> {
        self.rate.map(|r| r as u64)
    }

    /// Whether a queue on the path can be the lane's own doing: unpaced, its flows fill any
    /// bottleneck; paced, it delivers less than it is let send only when the path cannot carry
    /// it. A paced lane that delivers what it sends did not build the queue it sees (compute's
    /// answers on the way back, other traffic): a cut would cost throughput and drain
    /// nothing.
    fn queue_is_ours(&self) -> bool {
        self.rate
            .is_none_or(|rate| self.delivered < rate * OWN_QUEUE_SHARE)
    }

    /// Feeds one tick's measurement; returns the rate in force after it.
    pub fn observe(
        &mut self,
        now: Instant,
        target: Duration,
        floor: u64,
        sample: PathSample,
    ) -> Option<u64> {
        let dt = now.saturating_duration_since(self.last);
        self.last = now;
        let secs = dt.as_secs_f64().max(1e-4);
        let floor = floor as f64;
        let delivered_now = sample.delivered as f64 / secs;
        let weight = if self.delivered == 0.0 {
            1.0
        } else {
            (secs / DELIVERY_SMOOTHING.as_secs_f64()).min(1.0)
        };
        self.delivered += (delivered_now - self.delivered) * weight;
        self.peak = (self.peak * PEAK_DECAY.powf(secs)).max(self.delivered);

        if !sample.backlogged && sample.delivered == 0 {
            // Nothing to send: nothing to pace. The next burst starts unpaced and is cut
            // within a tick if it builds a queue.
            self.rate = None;
            return None;
        }
        let held = now < self.hold_until;
        match sample.delay {
            // A cut is held until the queue it was for could have drained, unless the queue
            // keeps growing (the cut was not deep enough: the path lost capacity).
            _ if sample.answers_arriving => {}
            Some(delay)
                if delay > target
                    && self.queue_is_ours()
                    && (!held || delay > self.cut_delay + target) =>
            {
                let from = match self.rate {
                    // Unpaced, the lane's flows were filling the path: what it delivered is
                    // what the path carries.
                    None => delivered_now.max(self.delivered),
                    // Paced well below what it delivers: the cap does not bind (few uploads).
                    Some(rate) if self.delivered < rate * 0.5 => self.delivered,
                    // From the cap itself, not from this tick's deliveries: a queue on the
                    // way back (compute's answers) delays the ACKs too, and those ticks
                    // would read as a collapsed path.
                    Some(rate) => rate,
                };
                // A cut deep enough to drain the queue within about DRAIN_HORIZON.
                let excess = (delay - target).as_secs_f64() / DRAIN_HORIZON.as_secs_f64();
                let factor = (BETA - excess).max(MIN_FACTOR);
                let to = (from * factor).max(floor);
                self.cut_from = from;
                self.cut_delay = delay;
                self.rate = Some(to);
                // The spare (1 - factor) of the rate drains a queue of `delay` in
                // delay / (1 - factor); until then the measurements still show it.
                let hold = delay.div_f64(1.0 - factor).clamp(MIN_HOLD, MAX_HOLD);
                self.hold_until = now + hold;
            }
            _ if held => {}
            Some(delay) => {
                if let Some(rate) = self.rate {
                    let mut rise = self.peak * RISE_PER_SECOND * secs;
                    if rate > self.cut_from {
                        // Past where the last cut came from without a queue: the path has
                        // room it did not have, so probe for it faster.
                        rise = rise.max((rate - self.cut_from) * secs * 2.0);
                    }
                    let next = (rate + rise).max(floor);
                    let binds = next < self.delivered.max(1.0) * UNBOUND;
                    self.rate = (binds || delay > target / 2).then_some(next);
                }
            }
            None => {}
        }
        self.rate()
    }
}

/// The queueing delay of one endpoint's path from its connections' `TCP_INFO`: the median,
/// over the `fresh` ones, of smoothed round trip − the least round trip of `all`.
pub fn queueing_delay(all: &[TcpPath], fresh: &[TcpPath]) -> Option<Duration> {
    let base = all
        .iter()
        .map(|p| p.min_rtt)
        .filter(|r| !r.is_zero())
        .min()?;
    let mut delays: Vec<Duration> = fresh.iter().map(|p| p.srtt.saturating_sub(base)).collect();
    if delays.is_empty() {
        return None;
    }
    delays.sort_unstable();
    let mid = delays.len() / 2;
    Some(if delays.len() % 2 == 1 {
        delays[mid]
    } else {
        (delays[mid - 1] + delays[mid]) / 2
    })
}

static UNSUPPORTED: std::sync::Once = std::sync::Once::new();

/// One endpoint's state in the driver.
struct Endpoint {
    pacer: Pacer,
    /// `bytes_acked` and `bytes_received` per connection id at the last tick (the yielding
    /// and the protected lane's).
    acked: HashMap<(bool, u64), (u64, u64)>,
    /// The cap last applied per connection id of the yielding lane.
    applied: HashMap<u64, Option<u64>>,
}

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
    let mut endpoints: HashMap<String, Endpoint> = HashMap::new();
    loop {
        ticks.tick().await;
        let Some(lane) = lane.upgrade() else { return };
        let config = lane.config();
        let own = lane.upstream().sockets();
        let protected = registries.get(&config.yield_to);
        if config.yield_to.is_empty() || protected.is_none() {
            if !endpoints.is_empty() {
                endpoints.clear();
                own.with_open(|open| {
                    for s in open {
                        let _ = set_max_pacing_rate(s.fd(), None);
                    }
                });
                lane.metrics().pacing_rate.set(0);
                lane.metrics().path_delay.set(0.0);
            }
            drop(lane);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let protected = protected.expect("checked above");
        let now = Instant::now();
        let (paced, delay) = tick(
            &mut endpoints,
            own,
            protected,
            now,
            config.yield_delay_target,
            config.yield_min_rate.0,
        );
        let metrics = lane.metrics();
        metrics.pacing_rate.set(paced.min(i64::MAX as u64) as i64);
        if let Some(delay) = delay {
            metrics.path_delay.set(delay.as_secs_f64());
        }
    }
}

/// One measurement and decision for every endpoint of a yielding lane; returns the total rate
/// in force (0: none paced) and the largest delay measured.
fn tick(
    endpoints: &mut HashMap<String, Endpoint>,
    own: &SocketRegistry,
    protected: &SocketRegistry,
    now: Instant,
    target: Duration,
    floor: u64,
) -> (u64, Option<Duration>) {
    // The protected lane's connections, read first and apart: their lock is not held while the
    // yielding lane's is.
    let theirs: Vec<(String, u64, TcpPath)> = protected.with_open(|open| {
        open.iter()
            .filter_map(|s| Some((s.address.clone(), s.id, tcp_path(s.fd()).ok()?)))
            .collect()
    });
    let mut total = 0u64;
    let mut largest: Option<Duration> = None;
    own.with_open(|open| {
        let mut by_address: BTreeMap<&str, Vec<(u64, TcpPath, std::os::fd::BorrowedFd<'_>)>> =
            BTreeMap::new();
        for s in open {
            match tcp_path(s.fd()) {
                Ok(path) => {
                    by_address
                        .entry(s.address.as_str())
                        .or_default()
                        .push((s.id, path, s.fd()))
                }
                Err(e) => {
                    crate::sockopt::warn_once(&UNSUPPORTED, "lanes.*.yield_to", &e);
                    return;
                }
            }
        }
        endpoints.retain(|address, _| by_address.contains_key(address.as_str()));
        for (address, conns) in by_address {
            let state = endpoints
                .entry(address.to_string())
                .or_insert_with(|| Endpoint {
                    pacer: Pacer::new(now),
                    acked: HashMap::new(),
                    applied: HashMap::new(),
                });
            let mut acked = HashMap::new();
            let mut all = Vec::new();
            let mut fresh = Vec::new();
            let mut delivered = 0u64;
            let mut received = 0u64;
            let mut backlogged = 0usize;
            let ours = conns.iter().map(|(id, path, _)| (false, *id, *path));
            let peers = theirs
                .iter()
                .filter(|(a, _, _)| a == address)
                .map(|(_, id, path)| (true, *id, *path));
            for (protected, id, path) in ours.chain(peers) {
                let before = state.acked.get(&(protected, id)).copied();
                let progress = before.map_or(0, |(b, _)| path.bytes_acked.saturating_sub(b));
                if progress > 0 {
                    fresh.push(path);
                }
                if !protected {
                    received += before.map_or(0, |(_, r)| path.bytes_received.saturating_sub(r));
                    delivered += progress;
                    backlogged += usize::from(path.backlog > 0);
                }
                acked.insert((protected, id), (path.bytes_acked, path.bytes_received));
                all.push(path);
            }
            state.acked = acked;
            let delay = queueing_delay(&all, &fresh);
            if let Some(d) = delay {
                largest = Some(largest.map_or(d, |l| l.max(d)));
            }
            let sample = PathSample {
                delay,
                delivered,
                backlogged: backlogged > 0,
                answers_arriving: received >= ANSWER_BYTES_PER_TICK,
            };
            let rate = state.pacer.observe(now, target, floor, sample);
            total += rate.unwrap_or(0);
            // Shared out over the connections with bytes to send (all of them when none has).
            let sharing = backlogged.max(1).min(conns.len()) as u64;
            let mut applied = HashMap::new();
            for (id, _, fd) in &conns {
                let cap = rate.map(|r| (r / sharing).max(1));
                if state.applied.get(id) != Some(&cap) {
                    if let Err(e) = set_max_pacing_rate(*fd, cap) {
                        crate::sockopt::warn_once(&UNSUPPORTED, "lanes.*.yield_to", &e);
                    }
                }
                applied.insert(*id, cap);
            }
            state.applied = applied;
        }
    });
    (total, largest)
}

#[cfg(test)]
mod tests;
