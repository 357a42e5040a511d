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
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failures: 3,
            failure_rate: 0.5,
            window: 10,
            open_for: Duration::from_secs(1),
        }
    }

    fn call(c: &Arc<Circuit>, failed: bool) -> bool {
        match c.allow() {
            Ok(t) => {
                t.record(failed);
                true
            }
            Err(_) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures_then_a_probe_closes_it() {
        let c = Arc::new(Circuit::new(settings()));
        assert!(call(&c, true) && call(&c, true));
        assert!(!c.is_open());
        assert!(call(&c, true));
        assert!(c.is_open());
        let open = c.allow().unwrap_err();
        assert_eq!(open.retry_after, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(c.allow().is_err(), "still open");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = c.allow().unwrap();
        assert!(c.allow().is_err(), "one probe at a time");
        probe.record(false);
        assert!(c.allow().is_ok(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_serving_hint_lets_the_next_call_probe_before_open_for_ends() {
        let c = Arc::new(Circuit::new(settings()));
        let unreachable = |c: &Arc<Circuit>| {
            if let Ok(t) = c.allow() {
                t.record_outcome(true, true);
            }
        };
        for _ in 0..3 {
            unreachable(&c);
        }
        assert!(c.allow().is_err());
        c.probe_now();
        let probe = c.allow().expect("the hint makes the next call a probe");
        assert!(c.allow().is_err(), "still one probe at a time");
        probe.record_outcome(true, true);
        assert!(
            c.is_open(),
            "a failed probe opens it again, for the full open_for"
        );
        assert_eq!(c.allow().unwrap_err().retry_after, Duration::from_secs(1));
        // A new opening on unavailability: one hint again.
        c.probe_now();
        call(&c, false);
        assert!(
            !c.is_open() && call(&c, false),
            "a successful probe closes it"
        );
        c.probe_now();
        assert!(!c.is_open(), "a hint never opens a closed circuit");
    }

    #[tokio::test(start_paused = true)]
    async fn the_hint_counts_once_per_opening_and_never_for_slow_or_broken_compute() {
        let c = Arc::new(Circuit::new(settings()));
        for _ in 0..3 {
            c.allow().unwrap().record_outcome(true, true);
        }
        c.probe_now();
        c.allow().unwrap().record_outcome(true, true);
        // Opened again by the failed probe: a hint works once in this opening…
        c.probe_now();
        let probe = c.allow().expect("one hint per opening");
        drop(probe); // its client went away: no verdict
        c.probe_now();
        // …the probe slot is free again (the drop), but the hint does not make more.
        assert!(c.allow().is_ok(), "the freed probe slot");
        // Opened by deadlines (compute answers, slowly): a SERVING hint says nothing.
        let c = Arc::new(Circuit::new(settings()));
        for _ in 0..3 {
            call(&c, true);
        }
        c.probe_now();
        assert!(c.allow().is_err(), "no early probe for a slow compute");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_admitted_before_a_change_do_not_steer_the_circuit_after_it() {
        let c = Arc::new(Circuit::new(settings()));
        // Five calls admitted while closed, then the circuit opens on three others.
        let old: Vec<Ticket> = (0..5).map(|_| c.allow().unwrap()).collect();
        for _ in 0..3 {
            call(&c, true);
        }
        assert!(c.is_open());
        tokio::time::advance(Duration::from_millis(1001)).await;
        let probe = c.allow().expect("half-open: the probe");
        // The old calls fail now (timeouts): they neither decide nor reopen.
        for t in old {
            t.record(true);
        }
        probe.record(false);
        assert!(!c.is_open(), "the probe closed it");
        let stale: Vec<Ticket> = (0..3).map(|_| c.allow().unwrap()).collect();
        // Closed and reopened… (new calls fail)
        for _ in 0..3 {
            call(&c, true);
        }
        assert!(c.is_open());
        tokio::time::advance(Duration::from_millis(1001)).await;
        c.allow().unwrap().record(false);
        assert!(!c.is_open());
        // …and the calls admitted in the earlier closed period are not counted in this one.
        for t in stale {
            t.record(true);
        }
        assert!(
            !c.is_open(),
            "three stale failures reopened a circuit just closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let c = Arc::new(Circuit::new(settings()));
        for _ in 0..3 {
            call(&c, true);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = c.allow().unwrap();
        probe.record(true);
        assert!(c.is_open());
        assert!(c.allow().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_another_call_probe() {
        let c = Arc::new(Circuit::new(settings()));
        for _ in 0..3 {
            call(&c, true);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(c.allow().unwrap());
        assert!(c.allow().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_a_failure_rate_over_the_window() {
        let c = Arc::new(Circuit::new(settings()));
        // Alternating failures never make 3 in a row, but are 50 % of the window.
        for i in 0..9 {
            call(&c, i % 2 == 0);
            assert!(!c.is_open(), "window not full yet at {i}");
        }
        call(&c, true);
        assert!(c.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_keep_it_closed_and_zero_disables_it() {
        let c = Arc::new(Circuit::new(settings()));
        for _ in 0..100 {
            assert!(call(&c, false));
        }
        let off = Arc::new(Circuit::new(CircuitSettings {
            failures: 0,
            failure_rate: 0.0,
            ..settings()
        }));
        for _ in 0..100 {
            assert!(call(&off, true));
        }
    }
}
