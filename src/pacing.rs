//! Yielding a shared path to interactive traffic: a side that sends bulk data (the BFF's heavy
//! lane with uploads, compute with their answers) caps its sockets' sending rate so that the
//! queue at the path's bottleneck stays short, and small calls on other connections cross it
//! at once (LEDBAT, RFC 6817, does this for background transfers).
//!
//! - Every [`TICK`] a driver (`dispatch::yielding` for a lane, `compute::yielding` for compute)
//!   calls [`PacedPaths::tick`], which reads `TCP_INFO` of the side's connections, grouped by
//!   path. The path's queueing delay is the median, over the connections that delivered bytes
//!   in the tick (their estimate is fresh), of the smoothed round trip minus the least round
//!   trip any of them has seen (the path with empty queues).
//! - An unpaced side starts pacing when the delay has stayed above the target for
//!   [`STANDING_QUEUE`] (a busy host's scheduling delays ACKs now and then; that is no queue).
//! - Above the delay target, when the queue can be the side's own (it is not paced, or it
//!   delivers less than it is let send), the [`Pacer`] cuts the path's rate to [`BETA`] × what
//!   was delivered (deeper for a long queue), then holds it until the queue that cut was for
//!   could have drained; at or below the target the rate rises additively, by a tenth per
//!   second of the most the side delivered lately, and faster once it is past where the last
//!   cut came from (the path may have grown). It is never below the floor.
//! - The rate is shared out evenly over the path's connections that have bytes to send, as
//!   `SO_MAX_PACING_RATE`; TCP then paces each one itself. When the path shows no queue the
//!   sockets are not capped at all, and a cap that no longer binds is lifted: on an
//!   uncongested path (loopback, a data-centre network) nothing changes.
//! - Compute's answers are bursts (a 2 MB answer crosses a 100 Mbit/s link in ~150 ms), and
//!   each one that started unpaced after a pause put ~140 KB in the link's queue at once (the
//!   congestion window's worth): ~11 ms that a health check's answer waited behind
//!   (bench-hol, 2026-12-07). So compute remembers the rate a burst that filled the path was
//!   first cut to, for [`RESUME_MEMORY`]: through pauses the sockets keep that cap and the
//!   next bursts start paced at it. When the memory ends, a burst measures anew, paced a tenth
//!   above what the path carried ([`PROBE_GAIN`]): a path that grew is found step by step,
//!   and no burst puts a window in the queue again. The lanes' uploads flow without pauses
//!   and do not use it.
//!
//! A round trip includes the way back, where the other side's bulk data may queue. A side
//! cannot shorten that queue, so the pacer does not cut a paced side that delivers what it is
//! let send (the queue it sees is not its own), and a lane makes no decision in a tick in which
//! its answers were streaming in. In a lane's other ticks the way back is quiet, so a queue
//! that stands there is the lane's own, however close to its rate it delivers. Both sides
//! yield for the whole path to stay short.
//!
//! Paths to a loopback address are never paced: they cross no link to share (a sidecar compute,
//! `imagegate dev`), and a busy host's scheduling delays would read as a queue on them.
//!
//! Linux only (`TCP_INFO`, `SO_MAX_PACING_RATE`): elsewhere the driver warns once and nothing
//! is paced.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::sockopt::{set_max_pacing_rate, tcp_path, TcpPath};

/// How often the driver measures and decides.
pub const TICK: Duration = Duration::from_millis(20);
/// The multiplicative cut: the rate falls to this share of what was delivered.
pub const BETA: f64 = 0.9;
/// The additive rise per second, as a share of the most the lane delivered lately.
const RISE_PER_SECOND: f64 = 0.1;
/// How much of that peak is kept per second (it halves in about 10 s).
const PEAK_DECAY: f64 = 0.933;
/// How long the delay must stay above the target before an unpaced side starts pacing.
pub const STANDING_QUEUE: Duration = Duration::from_millis(40);
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
/// Answer bytes per tick from which a lane's answers count as streaming in (~3 MB/s).
pub const ANSWER_BYTES_PER_TICK: u64 = 64 * 1024;
/// A cap this many times above what is delivered does not bind: it is lifted.
const UNBOUND: f64 = 4.0;
/// How long the rate a burst measured (the cut from an unpaced burst that filled the path) is
/// kept for the bursts after it: they start paced at it instead of putting a congestion
/// window's worth in the queue at once. For as long again after that, a burst measures anew,
/// paced at [`PROBE_GAIN`] × what the path carried, so a path that grew is found; a path
/// that is idle longer than both starts over with an unpaced burst.
pub const RESUME_MEMORY: Duration = Duration::from_secs(10);
/// A burst that measures the path again is paced this much above what the path carried when
/// the rate was last measured. An unpaced one put a congestion window in the queue at once
/// (15–17 ms on bench-hol's link, every 10 s, 2026-12-08); at 1.1× the queue grows by a
/// tenth of the link's rate until the pacer sees it.
const PROBE_GAIN: f64 = 1.1;
/// A measuring burst that crossed without a queue for this many ticks found room for its
/// rate (a shorter one tested nothing: the next burst measures instead).
const PROBE_TICKS: u32 = 5;
/// A connection with less than this to deliver has no bulk data waiting (a health check's
/// answer, the last bytes of a burst): it neither shares the rate nor is cut for a queue.
const BACKLOG_BYTES: u64 = 16 * 1024;

/// What one tick measured on one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathSample {
    /// The queueing delay, when a connection's estimate was fresh.
    pub delay: Option<Duration>,
    /// Bytes the yielding side's connections on the path delivered since the last tick.
    pub delivered: u64,
    /// The yielding side has bulk data in flight or waiting to be sent (at least
    /// [`BACKLOG_BYTES`] on a connection).
    pub backlogged: bool,
    /// Compute's answers were streaming in on the lane's connections during the tick: they
    /// queue on the way back and delay the ACKs, so the round trips say little about the
    /// queue the lane's own bytes wait in.
    pub answers_arriving: bool,
}

/// A rate a burst measured, kept for the bursts after it.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    rate: f64,
    until: Instant,
    delay: Duration,
    /// What the path carried when the rate was measured (the cut's starting point).
    carried: f64,
}

/// The rate controller of one path of a yielding side (a lane's compute endpoint, compute's
/// peer): plain and synchronous, driven by the caller's clock, so it is tested with a simulated bottleneck under tokio's paused clock.
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
    /// Since when the delay has been above the target without a break.
    over_since: Option<Instant>,
    /// How long that must last before an unpaced side starts pacing.
    standing: Duration,
    /// How long a measured rate is kept for later bursts ([`RESUME_MEMORY`]; zero: never).
    memory: Duration,
    /// No decision before this (the queue a cut was for is draining).
    hold_until: Instant,
    /// The rate the next bursts are paced at, until when ([`RESUME_MEMORY`]), and the delay
    /// the burst that measured it saw.
    resume: Option<Remembered>,
    /// The burst in progress is paced at the remembered rate.
    resumed: bool,
    /// The burst in progress measures the path again, paced ([`PROBE_GAIN`]); the ticks it
    /// has had bytes to send so far.
    probing: Option<u32>,
    /// The side knows when its way back is busy and decides nothing then
    /// ([`PathSample::answers_arriving`]: a lane), so a queue that stands in the other ticks is
    /// its own, even while it delivers nearly what it is let send.
    watches_way_back: bool,
    last: Instant,
}

impl Pacer {
    /// A pacer that does not pace yet and remembers no rate between bursts.
    pub fn new(now: Instant) -> Self {
        Pacer {
            rate: None,
            delivered: 0.0,
            peak: 0.0,
            cut_from: 0.0,
            cut_delay: Duration::ZERO,
            over_since: None,
            standing: STANDING_QUEUE,
            memory: Duration::ZERO,
            hold_until: now,
            resume: None,
            resumed: false,
            probing: None,
            watches_way_back: false,
            last: now,
        }
    }

    /// A pacer that starts pacing for a queue standing `standing` (instead of
    /// [`STANDING_QUEUE`]) and keeps a measured rate for the bursts after it for `memory`
    /// (compute: [`RESUME_MEMORY`]; [`Pacer::new`]: not at all).
    pub fn with_timing(now: Instant, standing: Duration, memory: Duration) -> Self {
        Pacer {
            standing,
            memory,
            ..Pacer::new(now)
        }
    }

    /// A pacer for a side that sees when its way back is busy (a lane: its answers stream in)
    /// and decides nothing in those ticks: a queue standing for [`STANDING_QUEUE`] in the
    /// others is its own to cut, however close to its rate it delivers.
    pub fn watching_way_back(self, watches: bool) -> Self {
        Pacer {
            watches_way_back: watches,
            ..self
        }
    }

    /// The rate in force, bytes per second (`None`: not paced): the controller's, or through
    /// a pause the one kept for the next burst.
    pub fn rate(&self) -> Option<u64> {
        self.rate
            .or_else(|| self.next_burst(self.last).map(|(rate, _)| rate))
            .map(|r| r as u64)
    }

    /// The rate a burst that starts at `now` is paced at, and whether it measures the path
    /// again: the remembered rate for [`RESUME_MEMORY`], then [`PROBE_GAIN`] × what the path
    /// carried for as long again; `None`: unpaced.
    fn next_burst(&self, now: Instant) -> Option<(f64, bool)> {
        let r = self.resume?;
        if now < r.until {
            Some((r.rate, false))
        } else if now < r.until + self.memory {
            Some((r.carried * PROBE_GAIN, true))
        } else {
            None
        }
    }

    /// Whether a queue on the path can be the lane's own doing: unpaced, its flows fill any
    /// bottleneck; paced, it delivers less than it is let send only when the path cannot carry
    /// it. A paced lane that delivers what it sends did not build the queue it sees (compute's
    /// answers on the way back, other traffic): a cut would cost throughput and drain
    /// nothing. A side that watches its way back knows better: with the way back quiet, a queue
    /// that stands is on the way there, where only its own bytes can have built it (a lane
    /// paced 1–2 % above the link delivers more than [`OWN_QUEUE_SHARE`] of its rate, and its
    /// queue grew to 9 ms before that share fell: bench-hol, 2026-12-08).
    fn queue_is_ours(&self, now: Instant) -> bool {
        self.rate
            .is_none_or(|rate| self.delivered < rate * OWN_QUEUE_SHARE)
            || (self.watches_way_back && self.queue_stands(now))
    }

    /// Whether the delay has been above the target for at least `standing` without a break.
    fn queue_stands(&self, now: Instant) -> bool {
        self.over_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.standing)
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

        self.resume = self.resume.filter(|r| now < r.until + self.memory);
        if !sample.backlogged && sample.delivered < BACKLOG_BYTES {
            // No bulk data to send (a health check's answer may cross): nothing to decide.
            // The remembered rate stays on the sockets, so the next burst starts paced; without
            // one it starts unpaced and is cut once its queue stands.
            if let (Some(ticks), Some(rate)) = (self.probing, self.rate) {
                if ticks >= PROBE_TICKS {
                    // The measuring burst crossed at its rate without a queue: the path
                    // carries at least that.
                    self.resume = Some(Remembered {
                        rate: rate * BETA,
                        until: now + self.memory,
                        delay: target,
                        carried: rate,
                    });
                }
            }
            self.rate = None;
            self.resumed = false;
            self.probing = None;
            self.over_since = None;
            return self.rate();
        }
        if self.rate.is_none() {
            // A burst after a pause while a rate is remembered: the sockets are capped at it.
            if let Some((rate, probe)) = self.next_burst(now) {
                self.rate = Some(rate);
                self.resumed = !probe;
                self.probing = probe.then_some(0);
            }
        }
        self.resumed &= self.resume.is_some_and(|r| now < r.until);
        if let Some(ticks) = self.probing.as_mut() {
            *ticks += 1;
        }
        if self.resumed {
            // Held at the measured rate, neither cut nor raised: compute's round trips hold
            // the uploads' queue on the way in (its ACKs cross it), and cutting for that from
            // burst to burst slowed the answers to a fifth of the link (bench-hol). Only a
            // queue longer than the measuring burst's says the path now carries less: then
            // the memory is dropped and the burst is paced as a new one.
            let measured = self.resume.map_or(Duration::ZERO, |r| r.delay);
            if sample
                .delay
                .is_none_or(|d| d <= measured.max(target * 2) + target)
            {
                return self.rate();
            }
            self.resume = None;
            self.resumed = false;
        }
        // An unpaced side starts pacing only for a queue that stands: a host whose CPUs are
        // busy delays ACKs by a few milliseconds now and then (scheduling, not a queue on the
        // path), and loopback or a data-centre network must stay untouched by that.
        let over = sample.delay.is_some_and(|d| d > target);
        self.over_since = match (over, self.over_since) {
            (true, None) => Some(now),
            (true, since) => since,
            (false, _) => None,
        };
        if self.rate.is_none() && !self.queue_stands(now) {
            return None;
        }
        let held = now < self.hold_until;
        match sample.delay {
            // A cut is held until the queue it was for could have drained, unless the queue
            // keeps growing (the cut was not deep enough: the path lost capacity).
            _ if sample.answers_arriving => {}
            // A side with no bulk data in flight or waiting (under BACKLOG_BYTES: the tail of
            // a burst, a health check's answer) did not build the queue: a cut would only
            // slow its next burst.
            Some(delay)
                if delay > target
                    && sample.backlogged
                    && self.queue_is_ours(now)
                    && (!held || delay > self.cut_delay + target) =>
            {
                let (from, measured) = match self.rate {
                    // Unpaced, the lane's flows were filling the path: what it delivered is
                    // what the path carries; so it is when a measuring burst built the queue.
                    None => (delivered_now.max(self.delivered), true),
                    Some(_) if self.probing.is_some() => (delivered_now.max(self.delivered), true),
                    // Paced well below what it delivers: the cap does not bind (few uploads).
                    Some(rate) if self.delivered < rate * 0.5 => (self.delivered, false),
                    // From the cap itself, not from this tick's deliveries: a queue on the
                    // way back (compute's answers) delays the ACKs too, and those ticks
                    // would read as a collapsed path.
                    Some(rate) => (rate, false),
                };
                // A cut deep enough to drain the queue within about DRAIN_HORIZON.
                let excess = (delay - target).as_secs_f64() / DRAIN_HORIZON.as_secs_f64();
                let factor = (BETA - excess).max(MIN_FACTOR);
                let to = (from * factor).max(floor);
                self.cut_from = from;
                self.cut_delay = delay;
                self.rate = Some(to);
                if measured {
                    // What the next bursts start at, for a while: a burst that filled the
                    // path unpaced measured what it carries. Later cuts in a burst are kept
                    // to it (a queue on the way back delays the ACKs too, and carrying
                    // those cuts from burst to burst would ratchet the rate down).
                    self.resume = Some(Remembered {
                        rate: to,
                        until: now + self.memory,
                        delay,
                        carried: from,
                    });
                    self.probing = None;
                }
                // The spare (1 - factor) of the rate drains a queue of `delay` in
                // delay / (1 - factor); until then the measurements still show it.
                let hold = delay.div_f64(1.0 - factor).clamp(MIN_HOLD, MAX_HOLD);
                self.hold_until = now + hold;
            }
            _ if held => {}
            // A measuring burst keeps its rate: it is the question it asks of the path.
            _ if self.probing.is_some() => {}
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

/// One side's open TCP connections, by the address of their path (a lane's by compute
/// endpoint, compute's by peer): the pacer reads their round trips and caps their sending
/// rate through the listed fds.
///
/// An entry lives exactly as long as its socket: a stream takes itself off the list before
/// its fd is closed, under the same lock the pacer holds while it uses the fds, so an fd read
/// from the list is never a closed or reused one.
#[derive(Default)]
pub struct SocketRegistry {
    next_id: AtomicU64,
    open: Mutex<Vec<OpenSocket>>,
}

/// One open connection.
pub struct OpenSocket {
    /// Unique for the registry's lifetime (a reconnect gets a new one).
    pub id: u64,
    /// The path it takes: a lane's compute address (`host:port`, as the endpoint names it),
    /// compute's peer IP.
    pub address: String,
    fd: RawFd,
}

impl OpenSocket {
    /// The socket, borrowed for as long as the registry's lock is held.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the entry is only reachable under the registry's lock, and the stream that
        // owns the fd removes the entry under that lock before it closes the fd.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl SocketRegistry {
    /// Lists the socket `fd` under `address` until the returned [`Registration`] is dropped,
    /// which must happen before `fd` is closed (keep it in a field declared before the
    /// socket's).
    pub fn register(self: &Arc<Self>, address: String, fd: RawFd) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().push(OpenSocket { id, address, fd });
        Registration {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Runs `f` over the open sockets, holding the lock (keep `f` to a few syscalls: a
    /// closing connection waits for it).
    pub fn with_open<R>(&self, f: impl FnOnce(&[OpenSocket]) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OpenSocket>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stream's entry in a [`SocketRegistry`], removed when dropped: keep it in a field declared
/// before the socket's, so it goes first.
pub struct Registration {
    registry: Arc<SocketRegistry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().retain(|s| s.id != self.id);
    }
}

static UNSUPPORTED: std::sync::Once = std::sync::Once::new();

/// One path's state.
struct PathState {
    pacer: Pacer,
    /// `bytes_acked` and `bytes_received` per connection id at the last tick (own and
    /// protected).
    acked: HashMap<(bool, u64), (u64, u64)>,
    /// The cap last applied per own connection id.
    applied: HashMap<u64, Option<u64>>,
}

/// How one side's driver paces its connections.
#[derive(Debug, Clone, Copy)]
pub struct Yielding {
    /// The queueing delay the side's own traffic may add.
    pub target: Duration,
    /// The slowest a path is paced, bytes per second.
    pub floor: u64,
    /// Make no decision in a tick in which this many bytes came back on the path's own
    /// connections (their ACKs queue behind them): the BFF's lanes, whose answers come back
    /// in bursts. `None` for compute, which receives uploads all the time.
    pub quiet_below: Option<u64>,
    /// The config key that turned it on (named in the one warning where it cannot work).
    pub key: &'static str,
    /// How long a queue must stand before an unpaced path is paced (both sides use
    /// [`STANDING_QUEUE`]).
    pub standing: Duration,
    /// How long a measured rate is kept for later bursts ([`RESUME_MEMORY`] for compute's
    /// answers, which come in bursts; zero for the lanes' uploads).
    pub memory: Duration,
    /// Leave paths to a loopback address alone: they cross no link (a sidecar compute, `imagegate
    /// dev`), and a busy host's scheduling would read as a queue on them.
    pub skip_loopback: bool,
}

/// The pacers of one side's paths, by address.
#[derive(Default)]
pub struct PacedPaths {
    paths: HashMap<String, PathState>,
}

impl PacedPaths {
    /// Lifts every cap on `own`'s connections and forgets the paths (yielding turned off).
    pub fn lift(&mut self, own: &SocketRegistry) {
        if self.paths.is_empty() {
            return;
        }
        self.paths.clear();
        own.with_open(|open| {
            for s in open {
                let _ = set_max_pacing_rate(s.fd(), None);
            }
        });
    }

    /// One measurement and decision for every path of `own` (with `protected`'s connections
    /// on the same path counted in the delay); returns the total rate in force (0: none
    /// paced) and the largest delay measured.
    pub fn tick(
        &mut self,
        own: &SocketRegistry,
        protected: Option<&SocketRegistry>,
        now: Instant,
        settings: Yielding,
    ) -> (u64, Option<Duration>) {
        let endpoints = &mut self.paths;
        let Yielding { target, floor, .. } = settings;
        // Paths that are never paced are not measured either.
        let measured = |s: &OpenSocket| !(settings.skip_loopback && is_loopback(&s.address));
        // The protected lane's connections, read first and apart: their lock is not held while the
        // yielding lane's is.
        let theirs: Vec<(String, u64, TcpPath)> = protected.map_or_else(Vec::new, |protected| {
            protected.with_open(|open| {
                open.iter()
                    .filter(|s| measured(s))
                    .filter_map(|s| Some((s.address.clone(), s.id, tcp_path(s.fd()).ok()?)))
                    .collect()
            })
        });
        let mut total = 0u64;
        let mut largest: Option<Duration> = None;
        own.with_open(|open| {
            let mut by_address: BTreeMap<&str, Vec<(u64, TcpPath, BorrowedFd<'_>)>> =
                BTreeMap::new();
            for s in open.iter().filter(|s| measured(s)) {
                match tcp_path(s.fd()) {
                    Ok(path) => {
                        by_address
                            .entry(s.address.as_str())
                            .or_default()
                            .push((s.id, path, s.fd()))
                    }
                    Err(e) => {
                        crate::sockopt::warn_once(&UNSUPPORTED, settings.key, &e);
                        return;
                    }
                }
            }
            endpoints.retain(|address, _| by_address.contains_key(address.as_str()));
            for (address, conns) in by_address {
                let state = endpoints
                    .entry(address.to_string())
                    .or_insert_with(|| PathState {
                        pacer: Pacer::with_timing(now, settings.standing, settings.memory)
                            .watching_way_back(settings.quiet_below.is_some()),
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
                        received +=
                            before.map_or(0, |(_, r)| path.bytes_received.saturating_sub(r));
                        delivered += progress;
                        backlogged += usize::from(path.backlog >= BACKLOG_BYTES);
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
                    answers_arriving: settings.quiet_below.is_some_and(|q| received >= q),
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
                            crate::sockopt::warn_once(&UNSUPPORTED, settings.key, &e);
                        }
                    }
                    applied.insert(*id, cap);
                }
                state.applied = applied;
            }
        });
        (total, largest)
    }
}

/// Whether a path's address (`host:port`, `[v6]:port` or a bare IP) is this host's own.
pub fn is_loopback(address: &str) -> bool {
    if let Ok(a) = address.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests;
