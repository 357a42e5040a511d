//! The real `imagegate` binary as a pod runs it: the environment a Kubernetes pod gets
//! (service-link variables such as `IMAGEGATE_BFF_SERVICE_HOST`) never stops it, a real
//! config path with a typo still does, naming the key; and its logs are what a log shipper
//! needs (`[log] format = "json"`: one JSON object a line, no colour codes in a file, the
//! request id in the BFF's access line and in compute's line for the same call).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn imagegate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imagegate"));
    // Only what the test sets: no IMAGEGATE_* of the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("IMAGEGATE_") || k == "GRPC_COMPUTE_URL" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// `imagegate dev` on ephemeral ports with the service links a kubelet injects for the
/// project's own Services (deploy/k8s), and `extra` variables.
fn dev_with(extra: &[(&str, &str)]) -> Command {
    let store = scratch_dir("process-store");
    let mut c = imagegate();
    c.arg("dev")
        .env("IMAGEGATE_BFF__LISTEN", "127.0.0.1:0")
        .env("IMAGEGATE_COMPUTE__LISTEN", "127.0.0.1:0")
        .env("IMAGEGATE_COMPUTE__METRICS_LISTEN", "127.0.0.1:0")
        .env("IMAGEGATE_STORE__DIR", store.to_str().unwrap())
        .env("IMAGEGATE_BFF_SERVICE_HOST", "10.96.0.10")
        .env("IMAGEGATE_BFF_SERVICE_PORT", "8080")
        .env("IMAGEGATE_BFF_PORT", "tcp://10.96.0.10:8080")
        .env("IMAGEGATE_COMPUTE_SERVICE_HOST", "10.96.0.11")
        .env("IMAGEGATE_COMPUTE_PORT_50051_TCP", "tcp://10.96.0.11:50051")
        .env("IMAGEGATE_COMPUTE_PORT_50051_TCP_PROTO", "tcp")
        .env("IMAGEGATE_FOO", "a script's own variable");
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

/// Kills the child on drop (a failed assertion must not leave a server running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's stderr as it comes, as a pod's log collector does: a pipe nobody reads
/// fills up (64 KiB) and then blocks the process on its next log line.
fn drain(stderr: std::process::ChildStderr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut all);
        all
    })
}

/// Starts `cmd` and waits for `imagegate dev` to print the BFF's address; its stderr is
/// collected by the returned thread (joined once the process has exited).
fn start(mut cmd: Command) -> (Running, String, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = drain(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    let url = loop {
        let line = lines
            .next()
            .expect("imagegate dev ended before it printed its address")
            .unwrap();
        if let Some(rest) = line.split("BFF on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    };
    // Keep reading what it prints after the address: a closed pipe would make its next line
    // fail (EPIPE) and the process die.
    std::thread::spawn(move || lines.for_each(drop));
    (Running(child), url, logs)
}

#[tokio::test]
async fn service_link_variables_never_stop_the_process_and_json_logs_carry_the_request_id() {
    let (running, url, logs) = start(dev_with(&[
        ("IMAGEGATE_LOG__FORMAT", "json"),
        ("RUST_LOG", "info"),
    ]));
    let client = reqwest::Client::new();
    let up = eventually(Duration::from_secs(20), async || {
        client
            .get(format!("{url}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    if !up {
        drop(running);
        let log = logs.join().unwrap();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!("the BFF never reported compute up; its last log lines:\n{tail:#?}");
    }
    let r = client
        .post(format!("{url}/v1/images/compress"))
        .header("x-request-id", "field-test-123")
        .multipart(reqwest::multipart::Form::new().part("file", file(jpeg(32, 32))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "field-test-123");

    // Stop it and read everything it logged (stderr is a pipe here, as in a pod).
    unsafe { libc::kill(running.0.id() as i32, libc::SIGTERM) };
    let stderr = logs.join().unwrap();
    drop(running);
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["variables"].is_string())
        .unwrap_or_else(|| panic!("no warning about ignored variables: {stderr}"));
    let named = warning["variables"].as_str().unwrap();
    for v in [
        "IMAGEGATE_BFF_SERVICE_HOST",
        "IMAGEGATE_COMPUTE_PORT_50051_TCP",
        "IMAGEGATE_FOO",
    ] {
        assert!(named.contains(v), "{named} lacks {v}");
    }
    assert!(!named.contains("IMAGEGATE_STORE__DIR"));
    let access = lines
        .iter()
        .find(|l| l["target"] == "imagegate::access" && l["route"] == "/v1/images/compress")
        .unwrap_or_else(|| panic!("no access-log line: {stderr}"));
    assert_eq!(access["request_id"], "field-test-123");
    assert_eq!(access["status"], 200);
    assert_eq!(access["method"], "POST");
    assert_eq!(access["lane"], "heavy");
    assert!(access["bytes_in"].as_i64().unwrap() > 0);
    assert!(access["bytes_out"].as_i64().unwrap() > 0);
    assert!(access["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(access["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let rpc = lines
        .iter()
        .find(|l| l["target"] == "imagegate::compute::rpc" && l["request_id"] == "field-test-123")
        .unwrap_or_else(|| panic!("compute did not log the call with its request id: {stderr}"));
    assert_eq!(rpc["method"], "/compute.ImageService/Compress");
    assert!(rpc["traceparent"].as_str().unwrap().starts_with("00-"));
}

#[test]
fn a_config_path_with_a_typo_still_refuses_to_start_naming_the_key() {
    for (var, key) in [
        ("IMAGEGATE_LANES__HEAVY__MAX_INFLIGHT", "max_inflight"),
        ("IMAGEGATE_MODE", "mode"),
    ] {
        let out = dev_with(&[(var, "5")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.to_lowercase().contains(key), "{var}: {stderr}");
    }
    // The compute command alone, with the same service links, starts too.
    let mut compute = imagegate();
    compute
        .args([
            "compute",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env("IMAGEGATE_COMPUTE_SERVICE_HOST", "10.96.0.11")
        .env("IMAGEGATE_COMPUTE_PORT", "tcp://10.96.0.11:50051")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Running(compute.spawn().unwrap());
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    let started = Instant::now();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "compute exited");
        assert!(!line.contains('\u{1b}'), "colour codes in a pipe: {line}");
        if line.contains("compute listening") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
