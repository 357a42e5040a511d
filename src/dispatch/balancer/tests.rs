use super::*;
use crate::config::LaneConfig;
use prometheus::{IntCounter, IntGauge};

fn metrics() -> (ConnectionMetrics, EndpointMetrics) {
    let g = || IntGauge::new("g", "g").unwrap();
    let c = || IntCounter::new("c", "c").unwrap();
    (
        ConnectionMetrics {
            open: g(),
            bytes_sent: c(),
            bytes_received: c(),
        },
        EndpointMetrics {
            healthy: g(),
            ejected: g(),
            ejections: c(),
        },
    )
}

async fn upstream(target: &str, config: &LaneConfig, resolver: Resolver) -> Arc<Upstream> {
    let (conn, ep) = metrics();
    Upstream::new(
        "test",
        Target::parse(target).unwrap(),
        config,
        None,
        conn,
        ep,
        LaneIo {
            runtime: tokio::runtime::Handle::current(),
            http_workers: 2,
        },
        resolver,
    )
    .await
    .unwrap()
}

fn addresses(u: &Upstream) -> Vec<String> {
    u.endpoints().iter().map(|e| e.address.clone()).collect()
}

#[tokio::test]
async fn an_even_load_goes_round_robin_and_a_busy_endpoint_is_skipped() {
    let config = LaneConfig::heavy_defaults();
    let u = upstream("a:1,b:2,c:3", &config, system_resolver()).await;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..30 {
        let p = u.pick(&[]).unwrap();
        *counts.entry(p.endpoint.address.clone()).or_insert(0) += 1;
        p.record(Outcome::Answered);
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    // Two calls held on each; then b's and c's finish: the next calls skip busy `a:1`.
    let mut held_on_a = Vec::new();
    for _ in 0..6 {
        let p = u.pick(&[]).unwrap();
        if p.endpoint.address == "a:1" {
            held_on_a.push(p);
        } else {
            p.record(Outcome::Answered);
        }
    }
    assert_eq!(held_on_a.len(), 2, "six calls went round robin");
    for _ in 0..4 {
        let p = u.pick(&[]).unwrap();
        assert_ne!(p.endpoint.address, "a:1");
        p.record(Outcome::Answered);
    }
    drop(held_on_a);
    assert!(u.endpoints().iter().all(|e| e.in_flight() == 0));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_a_probe_readmits_with_backoff() {
    let mut config = LaneConfig::heavy_defaults();
    config.eject_after = 2;
    config.eject_for = Duration::from_secs(1);
    config.eject_max = Duration::from_secs(3);
    let u = upstream("a:1,b:2", &config, system_resolver()).await;
    let a = u.endpoints()[0].clone();
    let fail_a = |u: Arc<Upstream>| async move {
        loop {
            let p = u.pick(&[]).unwrap();
            if p.endpoint.address == "a:1" {
                p.record(Outcome::Failed);
                return;
            }
            p.record(Outcome::Answered);
        }
    };
    fail_a(u.clone()).await;
    assert!(!a.is_ejected(), "one failure is not enough");
    fail_a(u.clone()).await;
    assert!(a.is_ejected());
    // While ejected, every call goes to b.
    for _ in 0..10 {
        let p = u.pick(&[]).unwrap();
        assert_eq!(p.endpoint.address, "b:2");
    }
    // After eject_for, exactly one probe goes to a; its failure doubles the ejection.
    tokio::time::advance(Duration::from_millis(1001)).await;
    let probe = loop {
        let p = u.pick(&[]).unwrap();
        if p.endpoint.address == "a:1" {
            break p;
        }
    };
    let meanwhile = u.pick(&[]).unwrap();
    assert_eq!(meanwhile.endpoint.address, "b:2", "one probe at a time");
    probe.record(Outcome::Failed);
    tokio::time::advance(Duration::from_millis(1500)).await;
    for _ in 0..4 {
        assert_eq!(u.pick(&[]).unwrap().endpoint.address, "b:2");
    }
    tokio::time::advance(Duration::from_millis(600)).await;
    let probe = loop {
        let p = u.pick(&[]).unwrap();
        if p.endpoint.address == "a:1" {
            break p;
        }
    };
    probe.record(Outcome::Answered);
    assert!(!a.is_ejected(), "a successful probe readmits");
}

#[tokio::test(start_paused = true)]
async fn at_most_half_the_endpoints_are_ejected_and_calls_still_go_somewhere() {
    let mut config = LaneConfig::heavy_defaults();
    config.eject_after = 1;
    // One endpoint: never ejected (it would leave nothing), calls keep going there.
    let u = upstream("a:1", &config, system_resolver()).await;
    u.pick(&[]).unwrap().record(Outcome::Failed);
    assert!(!u.endpoints()[0].is_ejected());
    assert_eq!(u.pick(&[]).unwrap().endpoint.address, "a:1");
    // Two failing everywhere (a deadline shorter than the work): only one goes.
    let u = upstream("a:1,b:2", &config, system_resolver()).await;
    for _ in 0..6 {
        u.pick(&[]).unwrap().record(Outcome::Failed);
    }
    let ejected = u.endpoints().iter().filter(|e| e.is_ejected()).count();
    assert_eq!(ejected, 1, "at most half of two");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_follows_the_health_lanes_verdict_and_comes_back_with_it() {
    let config = LaneConfig::heavy_defaults();
    let u = upstream("a:1,b:2", &config, system_resolver()).await;
    u.follow_peer("a:1", true);
    assert!(u.endpoints()[0].is_ejected());
    for _ in 0..10 {
        assert_eq!(u.pick(&[]).unwrap().endpoint.address, "b:2");
    }
    // Still failing its health checks: it stays out (no probe of its own meanwhile).
    tokio::time::advance(Duration::from_secs(5)).await;
    u.follow_peer("a:1", true);
    for _ in 0..10 {
        assert_eq!(u.pick(&[]).unwrap().endpoint.address, "b:2");
    }
    // The health lane sees it answer: back at once.
    u.follow_peer("a:1", false);
    assert!(!u.endpoints()[0].is_ejected());
    let seen: std::collections::HashSet<_> = (0..4)
        .map(|_| u.pick(&[]).unwrap())
        .map(|p| {
            let a = p.endpoint.address.clone();
            p.record(Outcome::Answered);
            a
        })
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The cap holds for followed verdicts too: b is not taken out while a is.
    u.follow_peer("a:1", true);
    u.follow_peer("b:2", true);
    assert_eq!(u.endpoints().iter().filter(|e| e.is_ejected()).count(), 1);
}

#[tokio::test]
async fn a_retry_avoids_the_endpoint_that_just_failed() {
    let config = LaneConfig::heavy_defaults();
    let u = upstream("a:1,b:2", &config, system_resolver()).await;
    for _ in 0..6 {
        let first = u.pick(&[]).unwrap();
        let tried = vec![first.endpoint.clone()];
        let retry = u.pick(&tried).unwrap();
        assert_ne!(first.endpoint.address, retry.endpoint.address);
    }
}

#[tokio::test(start_paused = true)]
async fn dns_targets_follow_the_name_and_drain_what_vanishes() {
    let answer: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(vec!["10.0.0.1:7".parse().unwrap()]));
    let seen = answer.clone();
    let resolver: Resolver = Arc::new(move |host, port| {
        assert_eq!((host.as_str(), port), ("compute.test", 7));
        let addrs = seen.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    });
    let mut config = LaneConfig::heavy_defaults();
    config.resolve_interval = Duration::from_secs(5);
    let u = upstream("dns://compute.test:7", &config, resolver).await;
    assert_eq!(addresses(&u), ["10.0.0.1:7"]);
    let on_first = u.pick(&[]).unwrap();

    *answer.lock().unwrap() = vec!["10.0.0.1:7".parse().unwrap(), "10.0.0.2:7".parse().unwrap()];
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(addresses(&u), ["10.0.0.1:7", "10.0.0.2:7"]);

    *answer.lock().unwrap() = vec!["10.0.0.2:7".parse().unwrap()];
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(addresses(&u), ["10.0.0.2:7"]);
    // The call on the vanished endpoint still holds it and can finish.
    assert_eq!(on_first.endpoint.in_flight(), 1);
    on_first.record(Outcome::Answered);

    // An empty answer keeps what we have.
    answer.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(addresses(&u), ["10.0.0.2:7"]);
}
