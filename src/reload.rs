//! Live reload: SIGHUP or `POST /admin/reload` re-reads the configuration (the same file and
//! environment as at start) and applies new lane limits — max in flight, queue wait, deadline,
//! retries and budget — without a restart and without failing calls in flight. An invalid
//! config is refused with a message naming the key, and the old one stays in force.
//! Settings that shape connections or listeners (connections, windows, keepalive, message
//! sizes, addresses, mode, routes) need a restart; a reload that changes them says so.
//!
//! In `[bff]`, the API keys, the intake limits and the body and health timeouts are live:
//! the edge reads them from [`Reloader::current`] on every request. Listeners, workers,
//! the header timeout and the shutdown timeout are fixed when the server starts. A reload
//! names changed keys, never their values (the API keys are secrets).

use std::path::PathBuf;
use std::sync::Arc;

use prometheus::{IntCounterVec, Opts, Registry};

use crate::config::{Config, LaneConfig};
use crate::dispatch::Dispatcher;
use crate::metrics::register;

/// Re-reads the config and applies what can change at run time.
pub struct Reloader {
    path: Option<PathBuf>,
    dispatcher: Arc<Dispatcher>,
    current: arc_swap::ArcSwap<Config>,
    reloads: IntCounterVec,
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
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Reads and validates the config, then applies the lane limits.
    pub fn reload(&self) -> Result<Outcome, String> {
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
        let mut applied = Vec::new();
        let mut restart_needed = Vec::new();
        for (name, n) in new.lanes.iter() {
            match old.lanes.get(name) {
                Some(o) => diff_lane(name, o, n, &mut applied, &mut restart_needed),
                None => restart_needed.push(format!("lanes.{name}")),
            }
        }
        for (name, _) in old.lanes.iter() {
            if new.lanes.get(name).is_none() {
                restart_needed.push(format!("lanes.{name}"));
            }
        }
        if old.mode != new.mode {
            restart_needed.push("mode".into());
        }
        if old.routes != new.routes {
            restart_needed.push("routes".into());
        }
        if old.compute_url != new.compute_url {
            restart_needed.push("compute_url".into());
        }
        if old.compute_tls != new.compute_tls {
            restart_needed.push("compute_tls".into());
        }
        if old.log != new.log {
            restart_needed.push("log".into());
        }
        diff_bff(&old.bff, &new.bff, &mut applied, &mut restart_needed);
        self.dispatcher.set_limits(&new);
        self.current.store(Arc::new(new));
        Outcome {
            applied,
            restart_needed,
        }
    }
}

fn diff_lane(
    name: &str,
    old: &LaneConfig,
    new: &LaneConfig,
    applied: &mut Vec<String>,
    restart: &mut Vec<String>,
) {
    let mut key = |changed: bool, live: bool, field: &str| {
        if changed {
            let k = format!("lanes.{name}.{field}");
            if live {
                applied.push(k);
            } else {
                restart.push(k);
            }
        }
    };
    key(
        old.max_in_flight != new.max_in_flight,
        true,
        "max_in_flight",
    );
    key(old.concurrency != new.concurrency, true, "concurrency");
    key(
        old.min_in_flight != new.min_in_flight,
        true,
        "min_in_flight",
    );
    key(old.queue_wait != new.queue_wait, true, "queue_wait");
    key(old.max_queued != new.max_queued, true, "max_queued");
    key(old.deadline != new.deadline, true, "deadline");
    key(old.retries != new.retries, true, "retries");
    key(
        old.retry_backoff != new.retry_backoff,
        true,
        "retry_backoff",
    );
    key(
        old.retry_budget_ratio != new.retry_budget_ratio,
        true,
        "retry_budget_ratio",
    );
    key(old.circuit() != new.circuit(), true, "circuit_*");
    key(old.url != new.url, false, "url");
    key(old.connections != new.connections, false, "connections");
    key(
        old.keepalive_interval != new.keepalive_interval,
        false,
        "keepalive_interval",
    );
    key(
        old.keepalive_timeout != new.keepalive_timeout,
        false,
        "keepalive_timeout",
    );
    key(
        old.connect_timeout != new.connect_timeout,
        false,
        "connect_timeout",
    );
    key(
        old.max_message_size != new.max_message_size,
        true,
        "max_message_size",
    );
    key(
        old.stream_window != new.stream_window,
        false,
        "stream_window",
    );
    key(
        old.connection_window != new.connection_window,
        false,
        "connection_window",
    );
    key(old.io_threads != new.io_threads, false, "io_threads");
    key(
        (old.eject_after, old.eject_for, old.eject_max)
            != (new.eject_after, new.eject_for, new.eject_max),
        true,
        "eject_*",
    );
    key(
        old.resolve_interval != new.resolve_interval,
        false,
        "resolve_interval",
    );
    key(old.tcp_rto_min != new.tcp_rto_min, false, "tcp_rto_min");
}

fn diff_bff(
    old: &crate::config::BffConfig,
    new: &crate::config::BffConfig,
    applied: &mut Vec<String>,
    restart: &mut Vec<String>,
) {
    let mut key = |changed: bool, live: bool, field: &str| {
        if changed {
            let k = format!("bff.{field}");
            if live {
                applied.push(k);
            } else {
                restart.push(k);
            }
        }
    };
    key(old.api_keys != new.api_keys, true, "api_keys");
    key(
        old.body_read_timeout != new.body_read_timeout,
        true,
        "body_read_timeout",
    );
    key(
        old.max_file_size != new.max_file_size,
        true,
        "max_file_size",
    );
    key(
        old.max_request_size != new.max_request_size,
        true,
        "max_request_size",
    );
    key(old.max_files != new.max_files, true, "max_files");
    key(
        old.max_buffered_bytes != new.max_buffered_bytes,
        true,
        "max_buffered_bytes",
    );
    key(
        old.max_field_size != new.max_field_size,
        true,
        "max_field_size",
    );
    key(old.max_fields != new.max_fields, true, "max_fields");
    key(
        old.health_timeout != new.health_timeout,
        true,
        "health_timeout",
    );
    key(old.cors != new.cors, true, "cors");
    // `listen` is left out: `imagegate bff --listen` overrides the file, so the re-read value
    // would differ on every reload without anything having changed.
    key(old.admin_listen != new.admin_listen, false, "admin_listen");
    key(old.workers != new.workers, false, "workers");
    key(
        old.client_request_timeout != new.client_request_timeout,
        false,
        "client_request_timeout",
    );
    key(
        old.shutdown_timeout != new.shutdown_timeout,
        false,
        "shutdown_timeout",
    );
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
