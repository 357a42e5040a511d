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

#[tokio::test(start_paused = true)]
async fn a_failed_health_check_opens_a_closed_circuit_until_compute_serves() {
    let c = Arc::new(Circuit::new(settings()));
    // A call admitted before the opening says nothing about it afterwards.
    let before = c.allow().unwrap();
    c.open_on_failed_health_check();
    assert!(c.is_open());
    before.record(false);
    assert!(c.is_open(), "an earlier call's success does not close it");
    assert!(c.allow().is_err(), "calls fail fast");
    // Compute answers SERVING: the next call probes at once, and closes it.
    c.probe_now();
    assert!(call(&c, false));
    assert!(!c.is_open());
    // Without a SERVING answer it waits out open_for as any opening does.
    c.open_on_failed_health_check();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(call(&c, false) && !c.is_open());
    // A lane whose breaker is off never opens.
    let off = Arc::new(Circuit::new(CircuitSettings {
        failures: 0,
        failure_rate: 0.0,
        ..settings()
    }));
    off.open_on_failed_health_check();
    assert!(!off.is_open());
}
