//! Several compute replicas behind one BFF, over real TCP: the load spreads evenly, a killed
//! replica's share moves to the others and comes back after a restart, and a `dns://` name
//! that gains an address is followed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use reqwest::multipart::Form;

/// Statuses of compress calls sent by `workers` concurrent clients until `stop` is set.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, workers: usize, image: Vec<u8>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::new();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, statuses, client, url, image) = (
                    stop.clone(),
                    statuses.clone(),
                    client.clone(),
                    url.clone(),
                    image.clone(),
                );
                tokio::spawn(async move {
                    // Bounded: stops when told, and after 10 000 calls in any case.
                    for _ in 0..10_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let form = Form::new()
                            .part("file", file(image.clone()))
                            .text("format", "jpeg");
                        let status = match client.post(&url).multipart(form).send().await {
                            Ok(r) => {
                                let s = r.status().as_u16();
                                let _ = r.bytes().await;
                                s
                            }
                            Err(_) => 0,
                        };
                        statuses.lock().unwrap().push(status);
                    }
                })
            })
            .collect();
        Load {
            stop,
            statuses,
            tasks,
        }
    }

    fn failures(&self) -> Vec<u16> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|s| *s != 200)
            .collect()
    }

    fn total(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }

    async fn stop(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.statuses.lock().unwrap().clone()
    }
}

fn replicas(n: usize) -> (Vec<Compute>, Vec<CallLog>) {
    let logs: Vec<CallLog> = (0..n).map(|_| CallLog::default()).collect();
    let computes = logs
        .iter()
        .map(|log| start_compute(compute_config(), Some(log.hook())))
        .collect();
    (computes, logs)
}

fn list_url(computes: &[Compute]) -> String {
    computes
        .iter()
        .map(|c| c.url())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_an_even_load_within_ten_percent() {
    let (computes, logs) = replicas(3);
    let mut config = bff_config(&list_url(&computes));
    config.lanes.heavy.connections = 2;
    let bff = start_bff(config);
    let image = jpeg(48, 32);
    let client = reqwest::Client::new();
    let total = 300;
    // Two clients at a time, 150 calls each. (With more clients than replicas, a replica
    // that the busy test machine deschedules is rightly skipped while its calls pile up, and
    // the counts then follow each replica's speed rather than staying equal.)
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, image) = (
                client.clone(),
                bff.url("/v1/images/compress"),
                image.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..total / 2 {
                    let r = client
                        .post(&url)
                        .multipart(Form::new().part("file", file(image.clone())))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let counts: Vec<usize> = logs.iter().map(|l| l.count("Compress")).collect();
    assert_eq!(counts.iter().sum::<usize>(), total, "{counts:?}");
    let mean = total as f64 / 3.0;
    for c in &counts {
        assert!(
            (*c as f64 - mean).abs() <= mean * 0.10,
            "spread {counts:?} is not within ±10 % of {mean}"
        );
    }
    // Each replica saw the lane's own connections: `connections` per replica.
    for log in &logs {
        assert_eq!(
            log.peers("Compress").len(),
            2,
            "{:?}",
            log.peers("Compress")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_its_share_and_wins_it_back_after_restart() {
    let (mut computes, logs) = replicas(3);
    let victim_addr = computes[1].addr;
    let mut config = bff_config(&list_url(&computes));
    config.lanes.heavy.connections = 1;
    config.lanes.heavy.retry_backoff = Duration::from_millis(5);
    config.lanes.heavy.eject_for = Duration::from_millis(200);
    config.lanes.heavy.eject_max = Duration::from_millis(800);
    let bff = start_bff(config);
    let workers = 4;
    let load = Load::start(bff.url("/v1/images/compress"), workers, jpeg(64, 48));

    assert!(
        eventually(Duration::from_secs(30), async || logs
            .iter()
            .all(|l| l.count("Compress") >= 10))
        .await,
        "every replica should get traffic: {:?}",
        logs.iter().map(|l| l.count("Compress")).collect::<Vec<_>>()
    );
    assert!(load.failures().is_empty(), "{:?}", load.failures());

    // Kill one replica abruptly, mid-load.
    computes.remove(1).kill();
    let at_kill = load.total();
    let survivors = [logs[0].count("Compress"), logs[2].count("Compress")];
    // The others carry on: plenty of calls succeed after the kill.
    assert!(
        eventually(Duration::from_secs(30), async || logs[0].count("Compress")
            + logs[2].count("Compress")
            >= survivors[0] + survivors[1] + 100)
        .await,
        "the surviving replicas did not take over"
    );
    // Only calls that were on the killed replica may fail: at most one per client.
    let failed = load.failures();
    assert!(
        failed.len() <= workers,
        "{} failures after the kill (at most the {workers} in flight may fail): {failed:?}",
        failed.len()
    );
    // A call cut off by the kill is answered 503 + Retry-After (worth retrying), not 502.
    assert!(failed.iter().all(|s| *s == 503), "{failed:?}");
    let text = metrics_text(&bff).await;
    assert!(
        metric(
            &text,
            "imagegate_lane_endpoint_ejections_total{lane=\"heavy\"}"
        )
        .unwrap()
            >= 1.0,
        "the dead replica was never ejected"
    );
    assert!(load.total() > at_kill);
    // The lane metrics agree with the HTTP answer: a connection cut mid-call is UNAVAILABLE.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("imagegate_lane_requests_total")
                && l.contains("code=\"UNKNOWN\"")),
        "a broken connection was counted as UNKNOWN:\n{text}"
    );

    // Restarted on the same address: it gets traffic again.
    let back = CallLog::default();
    let _restarted = start_compute_at(victim_addr, compute_config(), Some(back.hook()));
    assert!(
        eventually(Duration::from_secs(30), async || back.count("Compress")
            >= 10)
        .await,
        "the restarted replica never got traffic back"
    );
    let statuses = load.stop().await;
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.len() <= workers, "{failed:?}");

    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(&text, "imagegate_lane_in_flight{lane=\"heavy\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_endpoints{lane=\"heavy\",state=\"healthy\"}"
        ),
        Some(3.0)
    );
}

/// An `/etc/hosts` entry this test owns, appended at the end and removed on drop by cutting
/// the file back to its old length. Both are single system calls on the file in place (it may
/// be a bind mount), so other tests resolving `localhost` at the same moment never see the
/// file empty or half rewritten.
struct HostsEntry {
    old_len: u64,
}

impl HostsEntry {
    fn add(name: &str, ip: &str) -> std::io::Result<HostsEntry> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open("/etc/hosts")?;
        let old_len = f.metadata()?.len();
        f.write_all(format!("{ip} {name}\n").as_bytes())?;
        Ok(HostsEntry { old_len })
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/etc/hosts") {
            let _ = f.set_len(self.old_len);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_that_gains_an_address_is_picked_up() {
    // The system resolver reads /etc/hosts; this test needs to write it (CI runs as root).
    let name = format!("imagegate-replicas-{}.test", std::process::id());
    let _entry = HostsEntry::add(&name, "127.0.0.1").unwrap_or_else(|e| {
        panic!("this test adds a name to /etc/hosts and needs to write it: {e}")
    });

    // Two replicas on the same port, on two loopback addresses.
    let first_log = CallLog::default();
    let first = start_compute(compute_config(), Some(first_log.hook()));
    let port = first.addr.port();
    let second_log = CallLog::default();
    let _second = start_compute_at(
        format!("127.0.0.2:{port}").parse().unwrap(),
        compute_config(),
        Some(second_log.hook()),
    );

    let mut config = bff_config(&format!("dns://{name}:{port}"));
    config.lanes.heavy.resolve_interval = Duration::from_millis(200);
    config.lanes.realtime.resolve_interval = Duration::from_millis(200);
    let bff = start_bff(config);
    let image = jpeg(32, 32);
    for _ in 0..6 {
        let r = post(
            bff.url("/v1/images/compress"),
            Form::new().part("file", file(image.clone())),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(first_log.count("Compress"), 6);
    assert_eq!(second_log.count("Compress"), 0);

    let _second_entry = HostsEntry::add(&name, "127.0.0.2").unwrap();
    assert!(
        eventually(Duration::from_secs(20), async || {
            let r = post(
                bff.url("/v1/images/compress"),
                Form::new().part("file", file(image.clone())),
            )
            .await;
            assert_eq!(r.status(), 200);
            second_log.count("Compress") > 0
        })
        .await,
        "the new address was never used"
    );
    let text = metrics_text(&bff).await;
    assert_eq!(
        metric(
            &text,
            "imagegate_lane_endpoints{lane=\"heavy\",state=\"healthy\"}"
        ),
        Some(2.0)
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_left_by_health_checks_and_image_calls_and_taken_back_when_it_thaws() {
    // Two replicas; one hangs: it accepts connections and calls and never answers (what a
    // SIGSTOPped process looks like from outside). Defaults: health_timeout 1 s, realtime
    // eject_after 3, eject_for 1 s doubling.
    let (computes, logs) = replicas(2);
    let bff = start_bff(bff_config(&list_url(&computes)));
    let client = reqwest::Client::new();
    let health = async || {
        client
            .get(bff.url("/health"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    };
    assert_eq!(health().await, 200);
    logs[1].hold("Check");
    logs[1].hold("Compress");

    // /health polled every 50 ms for 15 s: after the first seconds it is 200 ≥ 95 % of the time.
    let started = std::time::Instant::now();
    let mut polls = Vec::new();
    while started.elapsed() < Duration::from_secs(15) {
        let status = health().await;
        polls.push((started.elapsed(), status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late: Vec<u16> = polls
        .iter()
        .filter(|(t, _)| *t >= Duration::from_secs(5))
        .map(|(_, s)| *s)
        .collect();
    let ok = late.iter().filter(|s| **s == 200).count();
    assert!(
        ok as f64 >= 0.95 * late.len() as f64,
        "/health 200 in only {ok} of {} polls after 5 s: {polls:?}",
        late.len()
    );

    // Image calls: the heavy lane left the hung replica too, so each succeeds in < 5 s.
    for _ in 0..10 {
        let r = client
            .post(bff.url("/v1/images/compress"))
            .multipart(Form::new().part("file", file(jpeg(32, 24))))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("an image call answered within 5 s");
        assert_eq!(r.status(), 200);
    }

    // The hang is on the dashboard: realtime deadlines, the replica out of both rotations.
    let text = metrics_text(&bff).await;
    assert!(
        metric(
            &text,
            "imagegate_lane_requests_total{code=\"DEADLINE_EXCEEDED\",lane=\"realtime\",method=\"compute.HealthService/Check\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
    for lane in ["realtime", "heavy"] {
        assert_eq!(
            metric(
                &text,
                &format!("imagegate_lane_endpoints{{lane=\"{lane}\",state=\"ejected\"}}")
            ),
            Some(1.0),
            "{lane}"
        );
    }

    // It thaws: within 30 s it gets image work again.
    let before = logs[1].count("Compress");
    logs[1].release("Check");
    logs[1].release("Compress");
    assert!(
        eventually(Duration::from_secs(30), async || {
            health().await;
            let _ = client
                .post(bff.url("/v1/images/compress"))
                .multipart(Form::new().part("file", file(jpeg(32, 24))))
                .send()
                .await;
            logs[1].count("Compress") > before
        })
        .await,
        "the thawed replica never got image work back"
    );
}
