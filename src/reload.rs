//! Live reload: SIGHUP or `POST /admin/reload` re-reads the configuration (the same file and
//! environment as at start) and applies new lane limits — max in flight, queue wait, deadline,
//! retries and budget — without a restart and without failing calls in flight. An invalid
//! config is refused with a message naming the key, and the old one stays in force.
//! Settings that shape connections or listeners (connections, windows, keepalive, addresses,
//! mode, routes), `[compute]`, `[store]` and `[log]` need a restart; a reload that changes them
//! says so. Which keys are live is one list, [`LIVE_KEYS`]; every other changed key is reported
//! as needing a restart, found by comparing the running config with the new one key by key.
//!
//! In `[bff]`, the API keys, the intake limits and the body and health timeouts are live:
//! the edge reads them from [`Reloader::current`] on every request. Listeners, workers,
//! the header timeout and the shutdown timeout are fixed when the server starts. A reload
//! names changed keys, never their values (the API keys are secrets).

use std::path::PathBuf;
use std::sync::Arc;

use prometheus::{IntCounterVec, Opts, Registry};

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::metrics::register;

/// Re-reads the config and applies what can change at run time.
pub struct Reloader {
    path: Option<PathBuf>,
    dispatcher: Arc<Dispatcher>,
    current: arc_swap::ArcSwap<Config>,
    reloads: IntCounterVec,
    /// One reload at a time: a SIGHUP and a `POST /admin/reload` together must not both
    /// compare with the same old config and store in either order.
    reloading: std::sync::Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// Keys whose new values are in force.
    pub applied: Vec<String>,
    /// Keys that changed but need a restart to take effect.
    pub restart_needed: Vec<String>,
}

impl Reloader {
    /// A reloader that re-reads the config as [`Config::load`] does from `path`, applies it to
    /// `dispatcher`, starts from `config`, and counts reloads in `registry`.
    pub fn new(
        path: Option<PathBuf>,
        config: Arc<Config>,
        dispatcher: Arc<Dispatcher>,
        registry: &Registry,
    ) -> Self {
        let reloads = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "imagegate_config_reloads_total",
                    "Configuration reloads by result (ok, error).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        Reloader {
            path,
            dispatcher,
            current: arc_swap::ArcSwap::new(config),
            reloads,
            reloading: std::sync::Mutex::new(()),
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Reads and validates the config, then applies the lane limits.
    pub fn reload(&self) -> Result<Outcome, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        match Config::load(self.path.as_deref()) {
            Ok(new) => {
                let outcome = self.apply(new);
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(applied = ?outcome.applied, restart_needed = ?outcome.restart_needed, "configuration reloaded");
                Ok(outcome)
            }
            Err(e) => {
                self.reloads.with_label_values(&["error"]).inc();
                let message = format!("{e:#}");
                tracing::error!("configuration reload refused, keeping the old one: {message}");
                Err(message)
            }
        }
    }

    fn apply(&self, new: Config) -> Outcome {
        let old = self.current.load_full();
        let (applied, restart_needed) = changed_keys(&old, &new);
        self.dispatcher.set_limits(&new);
        self.current.store(Arc::new(new));
        Outcome {
            applied,
            restart_needed,
        }
    }
}

/// Every key a reload puts in force at run time: the one list the reload follows (and
/// docs/operations.md repeats). A changed key not on it needs a restart. `*` stands for one
/// whole level (a lane's name); a segment ending in `*` is a prefix.
pub const LIVE_KEYS: &[&str] = &[
    "lanes.*.max_in_flight",
    "lanes.*.concurrency",
    "lanes.*.min_in_flight",
    "lanes.*.queue_wait",
    "lanes.*.max_queued",
    "lanes.*.deadline",
    "lanes.*.retries",
    "lanes.*.retry_backoff",
    "lanes.*.retry_budget_ratio",
    "lanes.*.max_message_size",
    "lanes.*.circuit_*",
    "lanes.*.eject_*",
    "lanes.*.yield_*",
    "bff.api_keys",
    "bff.body_read_timeout",
    "bff.max_file_size",
    "bff.max_request_size",
    "bff.max_files",
    "bff.max_buffered_bytes",
    "bff.max_field_size",
    "bff.max_fields",
    "bff.health_timeout",
    "bff.cors.*",
];

/// Keys never reported: `imagegate bff --listen` overrides `bff.listen`, so the re-read value
/// would differ on every reload without anything having changed.
const UNREPORTED: &[&str] = &["bff.listen"];

fn matches(pattern: &str, key: &str) -> bool {
    let (p, k): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), key.split('.').collect());
    p.len() == k.len()
        && p.iter().zip(&k).all(|(p, k)| match p.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => p == k,
        })
}

/// Whether a changed `key` takes effect on reload.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|p| matches(p, key))
}

/// The keys whose values differ between `old` and `new`, split into live and restart-needed.
/// A lane that appears or disappears is one restart-needed `lanes.<name>`.
fn changed_keys(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let as_value = |c: &Config| serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
    let mut changed = Vec::new();
    diff_values("", &as_value(old), &as_value(new), &mut changed);
    let lanes_of =
        |c: &Config| -> Vec<String> { c.lanes.iter().map(|(n, _)| n.to_string()).collect() };
    let (old_lanes, new_lanes) = (lanes_of(old), lanes_of(new));
    let added_or_removed: Vec<&String> = old_lanes
        .iter()
        .filter(|n| !new_lanes.contains(n))
        .chain(new_lanes.iter().filter(|n| !old_lanes.contains(n)))
        .collect();
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    for name in &added_or_removed {
        restart.push(format!("lanes.{name}"));
    }
    for key in changed {
        let in_lane =
            |n: &&String| key == format!("lanes.{n}") || key.starts_with(&format!("lanes.{n}."));
        if UNREPORTED.contains(&key.as_str()) || added_or_removed.iter().any(in_lane) {
            continue;
        }
        if is_live(&key) {
            applied.push(key);
        } else {
            restart.push(key);
        }
    }
    (applied, restart)
}

/// Appends the path of every leaf that differs (objects are walked, anything else compared).
fn diff_values(
    prefix: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let missing = Value::Null;
                diff_values(
                    &path,
                    a.get(key).unwrap_or(&missing),
                    b.get(key).unwrap_or(&missing),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Reloads on every SIGHUP until the process ends.
#[cfg(unix)]
pub async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = reloader.reload();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
        changed_keys(
            &Config::from_toml(before).unwrap(),
            &Config::from_toml(after).unwrap(),
        )
    }

    #[test]
    fn live_keys_are_applied_and_every_other_change_needs_a_restart() {
        let (applied, restart) = changes(
            "",
            r#"
            [lanes.heavy]
            max_in_flight = 7
            circuit_failures = 9
            connections = 2
            [bff]
            max_files = 3
            listen = "127.0.0.1:9999"
            [bff.cors]
            allowed_origins = ["https://app.example"]
            [compute]
            archive_max_entries = 10
            [store]
            max_age = "2h"
            [log]
            format = "json"
            "#,
        );
        assert_eq!(
            applied,
            [
                "bff.cors.allowed_origins",
                "bff.max_files",
                "lanes.heavy.circuit_failures",
                "lanes.heavy.max_in_flight"
            ]
        );
        assert_eq!(
            restart,
            [
                "compute.archive_max_entries",
                "lanes.heavy.connections",
                "log.format",
                "store.max_age"
            ]
        );
    }

    #[test]
    fn a_new_lane_is_one_restart_needed_key() {
        let (applied, restart) = changes(
            "",
            "[lanes.files]\nmax_in_flight = 3\n[routes]\n\"compute.FileService\" = \"files\"",
        );
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(restart, ["lanes.files", "routes.compute.FileService"]);
    }

    #[test]
    fn nothing_changed_reports_nothing() {
        assert_eq!(changes("", ""), (vec![], vec![]));
        assert!(is_live("lanes.custom.eject_for"));
        assert!(!is_live("lanes.heavy.connections"));
    }

    #[test]
    fn the_operations_guide_names_every_live_key() {
        let guide = include_str!("../docs/operations.md");
        for pattern in LIVE_KEYS {
            let last = pattern.rsplit('.').next().unwrap();
            let name = if last == "*" {
                pattern.trim_end_matches(".*").rsplit('.').next().unwrap()
            } else {
                last
            };
            assert!(
                guide.contains(name),
                "docs/operations.md does not name {pattern}"
            );
        }
    }
}
