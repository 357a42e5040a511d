//! A lane's circuit breaker: after `failures` consecutive failures of compute (unreachable,
//! deadline, internal errors — not bad requests), or a failure rate of `failure_rate` over
//! the last `window` calls, the circuit opens and calls fail fast (503, `circuit_open`) for
//! `open_for`; then one probe call at a time is let through (half-open): a success closes the
//! circuit, a failure opens it again.
//!
//! Only calls admitted under the circuit's current state steer it: a call admitted before an
//! opening (or before the probe that closed it) that finishes afterwards is not counted, so a
//! burst of old timeouts cannot decide a probe's verdict or reopen a circuit just closed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Breaker thresholds (from the lane's config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit (0 disables the breaker).
    pub failures: u32,
    /// Failure share over the window that opens the circuit (0 disables this rule).
    pub failure_rate: f32,
    /// Calls the failure rate is computed over (it applies once the window is full).
    pub window: usize,
    /// How long the circuit stays open before a probe is let through.
    pub open_for: Duration,
}

impl CircuitSettings {
    /// The breaker thresholds of a lane, from its `circuit_*` keys.
    pub fn of(lane: &crate::config::LaneConfig) -> Self {
        CircuitSettings {
            failures: lane.circuit_failures,
            failure_rate: lane.circuit_failure_rate,
            window: lane.circuit_window,
            open_for: lane.circuit_open_for,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Why a call may not go through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    /// How long until a probe may be tried.
    pub retry_after: Duration,
}

#[derive(Debug)]
struct Inner {
    settings: CircuitSettings,
    state: State,
    consecutive: u32,
    recent: VecDeque<bool>,
    /// Bumped at every opening and closing: a ticket from another generation is not counted.
    generation: u64,
    /// This opening was caused by compute being unreachable (UNAVAILABLE), which a SERVING
    /// health check disproves; other causes (deadlines, internal errors) it does not.
    opened_on_unavailable: bool,
    /// The SERVING hint was used in this opening already (one early probe per opening).
    hinted: bool,
}

/// One lane's breaker.
#[derive(Debug)]
pub struct Circuit(Mutex<Inner>);

/// Admission ticket: report the call's outcome with [`Ticket::record`]. A probe dropped
/// without an outcome (its client went away) lets the next call probe instead.
#[derive(Debug)]
pub struct Ticket {
    circuit: Arc<Circuit>,
    probe: bool,
    recorded: bool,
    generation: u64,
}

impl Ticket {
    /// Records the call's outcome: `failed` means compute failed (not a client error).
    pub fn record(self, failed: bool) {
        self.record_outcome(failed, false);
    }

    /// As [`Ticket::record`], saying whether the failure was compute being unreachable.
    pub fn record_outcome(mut self, failed: bool, unavailable: bool) {
        self.recorded = true;
        self.circuit
            .record(self.probe, self.generation, failed, unavailable && failed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.recorded && self.probe {
            let mut inner = self.circuit.0.lock().expect("circuit lock");
            if inner.state == (State::HalfOpen { probing: true }) {
                inner.state = State::HalfOpen { probing: false };
            }
        }
    }
}

impl Circuit {
    /// A closed breaker with these thresholds.
    pub fn new(settings: CircuitSettings) -> Self {
        Circuit(Mutex::new(Inner {
            settings,
            state: State::Closed,
            consecutive: 0,
            recent: VecDeque::new(),
            generation: 0,
            opened_on_unavailable: false,
            hinted: false,
        }))
    }

    /// Swaps the thresholds (a config reload); the current state is kept.
    pub fn set_settings(&self, settings: CircuitSettings) {
        self.0.lock().expect("circuit lock").settings = settings;
    }

    /// True while calls are being refused.
    pub fn is_open(&self) -> bool {
        matches!(
            self.0.lock().expect("circuit lock").state,
            State::Open { .. }
        )
    }

    /// Compute was seen answering by another way (a health check on the realtime lane): an
    /// open circuit lets its next call through as the probe now rather than at the end of
    /// `open_for` — only when it opened because compute was unreachable (which the answer
    /// disproves; a SERVING compute may still time out or fail), and once per opening, so
    /// public `/health` calls cannot pump calls through a circuit opened on slow work. The
    /// probe decides as usual.
    pub fn probe_now(&self) {
        let mut inner = self.0.lock().expect("circuit lock");
        if matches!(inner.state, State::Open { .. }) && inner.opened_on_unavailable && !inner.hinted
        {
            inner.hinted = true;
            inner.state = State::HalfOpen { probing: false };
        }
    }

    /// Compute failed a health check on another lane (its only endpoint, or every one, is out):
    /// a closed circuit opens now, so calls fail fast (503 + Retry-After) instead of each
    /// waiting out its own deadline against a hung compute. Such an opening is disproved by
    /// the next SERVING answer ([`Circuit::probe_now`]); an open circuit stays as it is.
    pub fn open_on_failed_health_check(&self) {
        let mut inner = self.0.lock().expect("circuit lock");
        if inner.state == State::Closed {
            let open_for = inner.settings.open_for;
            if inner.settings.failures == 0 && inner.settings.failure_rate == 0.0 {
                return; // the breaker is off for this lane
            }
            tracing::warn!("circuit opened: a health check found compute failing");
            inner.open(open_for, true);
            inner.consecutive = 0;
            inner.recent.clear();
        }
    }

    /// May a call go through now?
    pub fn allow(self: &Arc<Self>) -> Result<Ticket, Open> {
        let mut inner = self.0.lock().expect("circuit lock");
        let now = Instant::now();
        let generation = inner.generation;
        let ticket = |probe| Ticket {
            circuit: self.clone(),
            probe,
            recorded: false,
            generation,
        };
        match inner.state {
            State::Closed => Ok(ticket(false)),
            State::Open { until } if now < until => Err(Open {
                retry_after: until - now,
            }),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                inner.state = State::HalfOpen { probing: true };
                Ok(ticket(true))
            }
            State::HalfOpen { probing: true } => Err(Open {
                retry_after: Duration::from_millis(100),
            }),
        }
    }

    fn record(&self, probe: bool, generation: u64, failed: bool, unavailable: bool) {
        let mut inner = self.0.lock().expect("circuit lock");
        let s = inner.settings;
        if generation != inner.generation {
            return; // admitted under an earlier state: says nothing about this one
        }
        if probe {
            if failed {
                inner.open(s.open_for, unavailable);
            } else {
                inner.state = State::Closed;
                inner.generation += 1;
                inner.consecutive = 0;
                inner.recent.clear();
            }
            return;
        }
        if !matches!(inner.state, State::Closed) {
            return; // only the probe decides while not closed
        }
        inner.consecutive = if failed { inner.consecutive + 1 } else { 0 };
        inner.recent.push_back(failed);
        while inner.recent.len() > s.window.max(1) {
            inner.recent.pop_front();
        }
        let failures_in_window = inner.recent.iter().filter(|f| **f).count();
        let by_count = s.failures > 0 && inner.consecutive >= s.failures;
        let by_rate = s.failure_rate > 0.0
            && s.window > 0
            && inner.recent.len() >= s.window
            && failures_in_window as f32 / inner.recent.len() as f32 >= s.failure_rate;
        if by_count || by_rate {
            tracing::warn!(
                consecutive = inner.consecutive,
                failures_in_window,
                "circuit opened"
            );
            inner.open(s.open_for, unavailable);
            inner.consecutive = 0;
            inner.recent.clear();
        }
    }
}

impl Inner {
    fn open(&mut self, open_for: Duration, unavailable: bool) {
        self.state = State::Open {
            until: Instant::now() + open_for,
        };
        self.generation += 1;
        self.opened_on_unavailable = unavailable;
        self.hinted = false;
    }
}

#[cfg(test)]
mod tests;
