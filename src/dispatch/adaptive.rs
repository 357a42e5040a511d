//! The adaptive concurrency limit of a lane (`concurrency = "adaptive"`): a plain, synchronous
//! controller fed one sample per finished call, which moves the lane's limit between
//! `min_in_flight` and `max_in_flight`.
//!
//! Envoy's gradient filter and Netflix's Gradient2/Vegas judge overload from the round trip
//! alone, which only works when calls cost about the same; an image call costs 1000× more or
//! less with the image. Compute tells us what the work itself took (`elapsed_ms` in every
//! answer) and how long the call waited for a CPU worker (`imagegate-queued-us` metadata),
//! so the controller sees compute's own queue, whatever the image. (From a compute that does
//! not report its queue, `round trip − work` stands in: the time *in front of* compute, its
//! queue, the wire and the BFF's own encode. On a slow link that grows with every upload
//! sharing the link, and held the limit near compute's busy share while the link idled:
//! bench-hol, stop 22.) The controller keeps that wait small and compute busy:
//!
//! - Every window (≥ 250 ms and ≥ 3 answers) it estimates how many calls compute actually
//!   works on in parallel (Little's law: the work time answered in the window ÷ the window's
//!   length; "busy"), how many the endpoints serve in parallel ("served": the same over the
//!   calls' time outside compute's queue, which on a slow link includes crossing it), and
//!   the 90th percentile of the wait.
//! - The wait is *too long* when it exceeds the path's own floor (the smallest wait of the
//!   last ~10 s) by more than a quarter of a typical call's own time (its work and its
//!   crossing of the network, when compute reports its queue; else its work), at least 1 ms. Then the limit falls at once to what the endpoints demonstrably serve;
//!   if compute already serves every call sent, the wait is not its queue and the limit holds.
//!   Calls too cheap to tell a queue from the wire's jitter (typical work < 2 ms) are not
//!   judged by their wait.
//! - QUEUE_FULL answers (compute refused: its queue is full) and deadlines are overload as
//!   well: the limit falls by a quarter, again never below what is served.
//! - Otherwise, if the limit was reached in the window (calls were held back by it), it rises
//!   by 10 % (at least half a call); if it was not reached it stays (no signal to climb on).
//!
//! The limit is kept as a fraction and the lane uses its integer part, so small limits move by
//! one permit only every other window. With several replicas the limit is the lane's total:
//! the balancer's least-in-flight choice already sends fewer calls to a slower replica (its
//! calls last longer, so its in-flight count stays higher), and "busy" adds up what all of
//! them serve.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long a window lasts at least before the controller decides.
pub const WINDOW: Duration = Duration::from_millis(250);
/// Answers a window needs before the controller decides (fewer: it waits longer).
const MIN_SAMPLES: usize = 3;
/// A window with fewer samples still ends after this long, if it has at least one.
const LONG_WINDOW: Duration = Duration::from_secs(2);
/// How many windows the floor of the wait is remembered for (~10 s at 250 ms).
const BASELINE_WINDOWS: usize = 40;
/// The share of a typical call's work that the wait in front of compute may add.
const WAIT_TOLERANCE: f64 = 0.25;
/// The least wait ever counted as too long.
const MIN_TOLERANCE: Duration = Duration::from_millis(1);
/// Calls whose typical work is below this are too cheap to judge by their wait: the wire and
/// the BFF's own scheduling jitter (a millisecond or two on a busy host) would read as a
/// queue, and the work-based "busy" floor (≈ 0 for such calls) would let the limit collapse.
/// Compute's queue drains within a few milliseconds for them anyway; their overload still
/// shows as QUEUE_FULL answers and deadlines.
const MIN_JUDGED_WORK: Duration = Duration::from_millis(2);
/// Where a new adaptive lane starts (clamped into its bounds).
pub const INITIAL_LIMIT: usize = 8;

/// What one finished call tells the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Compute answered: the attempt's round trip and the work compute reported.
    Answered {
        /// From sending the attempt to its answer, as the lane measured it.
        round_trip: Duration,
        /// The work time compute reported (its `elapsed_ms`).
        work: Duration,
        /// How long the call waited for one of compute's CPU workers, as compute reported it
        /// (`vocab::metadata::QUEUED_MICROS`; `None` from a compute that does not).
        queued: Option<Duration>,
    },
    /// Compute refused the call because its queue was full (QUEUE_FULL).
    QueueFull,
    /// The lane's deadline passed.
    Deadline,
}

/// What the controller saw in its last window, for the metrics and the logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The limit in force now (the integer the lane uses).
    pub limit: usize,
    /// Calls compute served in parallel over the window.
    pub busy: f64,
    /// The 90th percentile of the wait in front of compute.
    pub wait_p90: Duration,
    /// What the wait was allowed to be.
    pub tolerance: Duration,
}

/// The controller. Synchronous and clock-driven by the caller (`now`), so it is tested with
/// a scripted sequence of samples under tokio's paused clock.
#[derive(Debug)]
pub struct AdaptiveLimit {
    limit: f64,
    min: usize,
    max: usize,
    window: Window,
    /// The smallest wait of each recent window: the path's own floor.
    baseline: VecDeque<Duration>,
    /// No rise in the window right after a fall: calls admitted under the old limit are
    /// still queued in compute and the next window still shows their wait.
    cooling: bool,
    last: Option<Verdict>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    waits: Vec<Duration>,
    works: Vec<Duration>,
    work_total: Duration,
    /// Each answer's time in flight outside compute's queue (round trip − the reported queue
    /// wait): crossing the network and being worked on.
    outside_queue: Vec<Duration>,
    queue_full: u32,
    deadlines: u32,
    /// The most calls in flight (including the finishing one) seen at a sample.
    peak_in_flight: usize,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            waits: Vec::new(),
            works: Vec::new(),
            work_total: Duration::ZERO,
            outside_queue: Vec::new(),
            queue_full: 0,
            deadlines: 0,
            peak_in_flight: 0,
        }
    }

    fn samples(&self) -> usize {
        self.waits.len() + self.queue_full as usize + self.deadlines as usize
    }
}

impl AdaptiveLimit {
    /// A controller between `min` and `max` (`min ≥ 1`), starting at [`INITIAL_LIMIT`].
    pub fn new(min: usize, max: usize, now: Instant) -> Self {
        let (min, max) = (min.max(1), max.max(min.max(1)));
        AdaptiveLimit {
            limit: INITIAL_LIMIT.clamp(min, max) as f64,
            min,
            max,
            window: Window::new(now),
            baseline: VecDeque::with_capacity(BASELINE_WINDOWS),
            cooling: false,
            last: None,
        }
    }

    /// Starts from `limit` (clamped) instead of [`INITIAL_LIMIT`]: a lane switched from
    /// fixed to adaptive by a reload keeps the limit it had.
    pub fn start_at(&mut self, limit: usize) {
        self.limit = limit.clamp(self.min, self.max) as f64;
    }

    /// The limit in force (what the lane's permit counter holds).
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.min, self.max)
    }

    /// The last window's estimates, once one has ended.
    pub fn last_verdict(&self) -> Option<Verdict> {
        self.last
    }

    /// New bounds from a reload: the limit is clamped into them, not reset.
    pub fn set_bounds(&mut self, min: usize, max: usize) {
        self.min = min.max(1);
        self.max = max.max(self.min);
        self.limit = self.limit.clamp(self.min as f64, self.max as f64);
    }

    /// Feeds one finished call; `in_flight` is the lane's calls in flight when it finished
    /// (itself included). Returns the new limit when it changed.
    pub fn observe(&mut self, now: Instant, in_flight: usize, signal: Signal) -> Option<usize> {
        let w = &mut self.window;
        w.peak_in_flight = w.peak_in_flight.max(in_flight);
        match signal {
            Signal::Answered {
                round_trip,
                work,
                queued,
            } => {
                let wait = signal_wait(round_trip, work, queued);
                w.waits.push(wait);
                w.outside_queue
                    .push(round_trip.saturating_sub(wait).max(work));
                w.works.push(work);
                w.work_total += work;
            }
            Signal::QueueFull => w.queue_full += 1,
            Signal::Deadline => w.deadlines += 1,
        }
        let age = now.saturating_duration_since(w.started);
        let ready = (age >= WINDOW && w.samples() >= MIN_SAMPLES) || age >= LONG_WINDOW;
        if !ready {
            return None;
        }
        let before = self.limit();
        self.decide(now, age);
        let after = self.limit();
        (after != before).then_some(after)
    }

    fn decide(&mut self, now: Instant, age: Duration) {
        let window = std::mem::replace(&mut self.window, Window::new(now));
        let busy = window.work_total.as_secs_f64() / age.as_secs_f64().max(1e-9);
        // What the endpoints demonstrably served in parallel, by Little's law over the time
        // calls spent outside compute's queue: being worked on and, on a slow link, crossing
        // it (uploads that cross while others are worked on keep compute and the link busy
        // together). The limit never falls below it. Without compute's queue report this is
        // `busy`.
        let served_total: Duration = window.outside_queue.iter().sum();
        let served = (served_total.as_secs_f64() / age.as_secs_f64().max(1e-9))
            .round()
            .max(self.min as f64);
        let mut waits = window.waits;
        waits.sort_unstable();
        let mut works = window.works;
        works.sort_unstable();
        let wait_p90 = quantile(&waits, 0.9);
        if let Some(&least) = waits.first() {
            if self.baseline.len() == BASELINE_WINDOWS {
                self.baseline.pop_front();
            }
            self.baseline.push_back(least);
        }
        let floor = self.baseline.iter().min().copied().unwrap_or_default();
        // The queue may add a quarter of a typical call's own time: its work and, on a slow
        // link, its crossing (the latency promise is about the whole call). Without compute's
        // queue report that is its work.
        let mut outside = window.outside_queue;
        outside.sort_unstable();
        let tolerance = floor + MIN_TOLERANCE.max(quantile(&outside, 0.5).mul_f64(WAIT_TOLERANCE));

        let limit = self.limit;
        let next = if window.queue_full > 0 || window.deadlines > 0 {
            served.max(limit * 0.75).min(limit)
        } else if !waits.is_empty()
            && quantile(&works, 0.5) >= MIN_JUDGED_WORK
            && wait_p90 > tolerance
        {
            // Calls queue in front of compute: send what it serves in parallel, no more. If it
            // serves all we send and the wait is still long, the wait is not compute's queue
            // (a slow wire, a busy BFF): fewer calls would not shorten it, so hold.
            served.min(limit)
        } else if !self.cooling && window.peak_in_flight >= self.limit() && !waits.is_empty() {
            limit + (limit * 0.1).max(0.5)
        } else {
            limit
        };
        let next = next.clamp(self.min as f64, self.max as f64);
        self.cooling = next < limit;
        self.limit = next;
        self.last = Some(Verdict {
            limit: self.limit(),
            busy,
            wait_p90,
            tolerance,
        });
    }
}

/// The wait in front of compute that an answer shows: what compute reports its queue was, or
/// (from a compute that does not say) the round trip minus the work.
pub fn signal_wait(round_trip: Duration, work: Duration, queued: Option<Duration>) -> Duration {
    queued.unwrap_or_else(|| round_trip.saturating_sub(work))
}

/// The `q` quantile of sorted values (zero when empty).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests;
