//! A real Prometheus server (Debian's `prometheus` package) scrapes the real BFF and compute on
//! loopback, with deploy/prometheus/rules.yml loaded, and its HTTP API is asked what it saw:
//! the lane gauges of both lanes, compute's queue depth, both targets up, and every recording
//! and alerting rule evaluated without error against the real metrics.
//!
//! Prometheus is installed by `make deps` (which `make test` runs) or `make lint-deploy`; if it
//! is missing this test fails and says so: it never passes without having run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

/// How long Prometheus may take to start, scrape both targets and evaluate the rules.
const WAIT: Duration = Duration::from_secs(60);

/// A running Prometheus and its scratch directory: killed and removed on drop, so the server
/// dies with the test even when an assertion panics.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Panics with the server's log if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "prometheus exited early ({status}); its log:\n{}",
                self.log()
            );
        }
    }

    /// `GET /api/v1/{path}`: the `data` of a successful answer, or None.
    async fn api(
        &self,
        client: &reqwest::Client,
        path: &str,
        query: &[(&str, &str)],
    ) -> Option<Value> {
        let response = client
            .get(format!("http://{}/api/v1/{path}", self.addr))
            .query(query)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The label sets of an instant query's result.
    async fn series(&self, client: &reqwest::Client, query: &str) -> Vec<Value> {
        self.api(client, "query", &[("query", query)])
            .await
            .and_then(|d| d["result"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|s| s["metric"].clone())
            .collect()
    }
}

/// The `prometheus` binary on PATH, or a failure that says how to get it.
fn prometheus_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` server is not installed, so this test cannot run. \
                 Install it with `make deps` (run by `make test`) or `make lint-deploy`, \
                 or as root: apt-get install -y --no-install-recommends prometheus"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// deploy/prometheus/rules.yml with every group evaluated each second (instead of 30 s), so
/// the rules run within the test's wait.
fn rules_for_test(dir: &Path) -> PathBuf {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml"),
    )
    .expect("deploy/prometheus/rules.yml");
    let path = dir.join("rules.yml");
    std::fs::write(&path, rules.replace("interval: 30s", "interval: 1s")).unwrap();
    path
}

fn start_prometheus(binary: &Path, bff: SocketAddr, compute_metrics: SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!(
        "imagegate-prometheus-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let rules = rules_for_test(&dir);
    // The labels are the ones deploy/prometheus/prometheus.yml gives pods in Kubernetes.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n\
         \x20 - job_name: imagegate-bff\n    static_configs:\n      - targets: ['{bff}']\n        labels: {{component: bff}}\n\
         \x20 - job_name: imagegate-compute\n    static_configs:\n      - targets: ['{compute_metrics}']\n        labels: {{component: compute}}\n",
        rules = rules.display(),
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Prometheus { child, dir, addr }
}

/// What the test waits for, re-checked until all of it holds or WAIT passes.
#[derive(Debug, Default)]
struct Seen {
    heavy_in_flight: bool,
    realtime_in_flight: bool,
    queue_depth: bool,
    bff_up: bool,
    compute_up: bool,
    saturation_recorded: Vec<String>,
    rules_evaluated: usize,
    rule_errors: Vec<String>,
    rules_total: usize,
    active_alerts: Vec<String>,
}

impl Seen {
    fn done(&self) -> bool {
        self.heavy_in_flight
            && self.realtime_in_flight
            && self.queue_depth
            && self.bff_up
            && self.compute_up
            && self.saturation_recorded.len() == 2
            && self.rules_total > 0
            && self.rules_evaluated == self.rules_total
            // Both processes are up with the labels the alerts expect, so once the alerts have
            // been evaluated after the first scrapes, neither "absent" alert is active.
            && !self
                .active_alerts
                .iter()
                .any(|a| a == "ImagegateBffAbsent" || a == "ImagegateComputeAbsent")
    }
}

async fn look(prom: &Prometheus, client: &reqwest::Client) -> Seen {
    let lanes = |series: &[Value]| -> Vec<String> {
        let mut l: Vec<String> = series
            .iter()
            .filter_map(|s| s["lane"].as_str().map(str::to_string))
            .collect();
        l.sort();
        l
    };
    let mut seen = Seen {
        heavy_in_flight: !prom
            .series(client, r#"imagegate_lane_in_flight{lane="heavy"}"#)
            .await
            .is_empty(),
        realtime_in_flight: !prom
            .series(client, r#"imagegate_lane_in_flight{lane="realtime"}"#)
            .await
            .is_empty(),
        queue_depth: !prom
            .series(
                client,
                r#"imagegate_compute_queue_depth{component="compute"}"#,
            )
            .await
            .is_empty(),
        bff_up: !prom
            .series(client, r#"up{component="bff"} == 1"#)
            .await
            .is_empty(),
        compute_up: !prom
            .series(client, r#"up{component="compute"} == 1"#)
            .await
            .is_empty(),
        saturation_recorded: lanes(
            &prom
                .series(client, "instance_lane:imagegate_lane_saturation:ratio")
                .await,
        ),
        ..Seen::default()
    };
    if let Some(data) = prom.api(client, "rules", &[]).await {
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                seen.rules_total += 1;
                let name = rule["name"].as_str().unwrap_or("?");
                match rule["health"].as_str() {
                    Some("ok") => seen.rules_evaluated += 1,
                    Some("err") => seen
                        .rule_errors
                        .push(format!("{name}: {}", rule["lastError"])),
                    _ => {}
                }
            }
        }
    }
    if let Some(data) = prom.api(client, "alerts", &[]).await {
        seen.active_alerts = data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
            .collect();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_both_processes_and_evaluates_the_rules() {
    let binary = prometheus_binary();
    let compute = start_compute(compute_config(), None);
    let config = bff_config(&compute.url());
    let want_limits = [
        (
            "heavy".to_string(),
            // Adaptive: the limit in force starts at INITIAL_LIMIT within its bounds.
            imagegate::dispatch::adaptive::INITIAL_LIMIT
                .clamp(
                    config.lanes.heavy.min_in_flight,
                    config.lanes.heavy.max_in_flight,
                )
                .to_string(),
        ),
        (
            "realtime".to_string(),
            config.lanes.realtime.max_in_flight.to_string(),
        ),
    ];
    let bff = start_bff(config);
    let client = reqwest::Client::new();
    // One call over the realtime lane, so the request families have a series too.
    let health = client.get(bff.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the BFF reaches compute");

    let mut prom = start_prometheus(&binary, bff.addr, compute.metrics_addr);
    let started = Instant::now();
    let seen = loop {
        prom.assert_running();
        let seen = look(&prom, &client).await;
        assert!(
            seen.rule_errors.is_empty(),
            "rules from deploy/prometheus/rules.yml failed to evaluate: {:?}",
            seen.rule_errors
        );
        if seen.done() {
            break seen;
        }
        if started.elapsed() > WAIT {
            panic!(
                "after {WAIT:?} Prometheus had not seen everything: {seen:#?}\nits log:\n{}",
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(seen.saturation_recorded, ["heavy", "realtime"]);
    // 4 rule groups: lanes, http and compute recordings, and the alerts.
    assert!(seen.rules_total >= 30, "rules loaded: {}", seen.rules_total);

    // The BFF's lane limits reached Prometheus as configured.
    let limits = prom
        .api(&client, "query", &[("query", "imagegate_lane_limit")])
        .await
        .expect("query imagegate_lane_limit");
    let mut by_lane: Vec<(String, String)> = limits["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["metric"]["lane"].as_str().unwrap_or("").to_string(),
                s["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    by_lane.sort();
    assert_eq!(by_lane, want_limits);
    drop(prom);
}
