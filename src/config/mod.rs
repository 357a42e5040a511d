//! Configuration: one TOML file plus environment overrides, validated at start.
//!
//! Sources, later wins: built-in defaults (they run the whole system on loopback), the TOML
//! file (`--config` or `IMAGEGATE_CONFIG`), `IMAGEGATE_*` variables (`__` between levels, e.g.
//! `IMAGEGATE_LANES__HEAVY__MAX_IN_FLIGHT=64`), and the seed's `GRPC_COMPUTE_URL`. Unknown keys
//! and bad values are refused with a message that names the key.
//!
//! Config is data: each part of the file has its own module (`bff`, `compute`, `lanes`,
//! `store`, `log`) of plain values, and each part of the program builds its own run-time
//! settings from them (the lane its circuit, the edge its key check). Nothing here imports the
//! edge, the dispatcher or compute.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod bff;
mod compute;
mod lanes;
mod log;
mod size;
mod store;
pub mod target;

pub use bff::{ApiKeys, BffConfig, CorsConfig, StringList};
pub use compute::{ComputeConfig, ComputeTlsConfig, DEFAULT_AVIF_SPEED, TCP_RTO_MIN_MAX};
use lanes::{default_routes, is_route_key};
pub use lanes::{route, Concurrency, LaneConfig, Lanes};
pub use log::{LogConfig, LogFormat};
pub use size::Size;
pub use store::{StoreBackend, StoreConfig};

/// How the BFF reaches compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Two lanes, each with its own connections and limits (default).
    Bulkhead,
    /// The seed's design: one TCP connection for every call (kept for comparison).
    Shared,
}

/// The whole configuration of both processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `bulkhead` or `shared`.
    pub mode: Mode,
    /// Where the BFF finds compute: `host:port`, `http://host:port`, `https://host:port`, a
    /// comma-separated list of those (replicas), or `dns://name:port` (every address the
    /// name resolves to, re-resolved every `resolve_interval`).
    pub compute_url: String,
    /// TLS from the BFF to compute (`[compute_tls]`).
    pub compute_tls: ComputeTlsConfig,
    /// The HTTP edge (`[bff]`).
    pub bff: BffConfig,
    /// The compute server (`[compute]`).
    pub compute: ComputeConfig,
    /// The bulkhead lanes (`[lanes.*]`).
    pub lanes: Lanes,
    /// RPC → lane: keys `"compute.ImageService"` or `"compute.ImageService/Compress"` (wins).
    pub routes: BTreeMap<String, String>,
    /// Where uploads and batch results are stored (`[store]`).
    pub store: StoreConfig,
    /// Log output (`[log]`).
    pub log: LogConfig,
}

/// The top-level keys: an `IMAGEGATE_<KEY>` variable without `__` is a config path only when
/// it names one of these (anything else is a Kubernetes service link or a script's own).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "mode",
    "compute_url",
    "compute_tls",
    "bff",
    "compute",
    "lanes",
    "routes",
    "store",
    "log",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Bulkhead,
            compute_url: "http://127.0.0.1:50051".into(),
            compute_tls: ComputeTlsConfig::default(),
            bff: BffConfig {
                listen: "127.0.0.1:8080".parse().expect("valid"),
                workers: 0,
                max_file_size: Size::mib(20),
                max_request_size: Size::mib(100),
                max_files: 32,
                max_field_size: Size::kib(64),
                max_fields: 64,
                max_buffered_bytes: Size::mib(1024),
                health_timeout: Duration::from_secs(1),
                client_request_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(30),
                api_keys: Default::default(),
                admin_listen: None,
                shutdown_timeout: Duration::from_secs(30),
                cors: CorsConfig::default(),
            },
            compute: ComputeConfig {
                listen: "127.0.0.1:50051".parse().expect("valid"),
                metrics_listen: "127.0.0.1:9464".parse().expect("valid"),
                max_message_size: Size::mib(64),
                max_pixels: 50_000_000,
                workers: 0,
                queue_capacity: 64,
                avif_speed: DEFAULT_AVIF_SPEED,
                archive_max_entries: 1000,
                archive_max_expansion: 1000,
                drain_timeout: Duration::from_secs(30),
                cpu_nice: 5,
                tcp_rto_min: Duration::from_millis(20),
                yield_answers: false,
                yield_delay_target: Duration::from_millis(3),
                yield_min_rate: Size::mib(1),
                tls_cert: None,
                tls_key: None,
                tls_client_ca: None,
            },
            lanes: Lanes {
                heavy: LaneConfig::heavy_defaults(),
                realtime: LaneConfig::realtime_defaults(),
                custom: BTreeMap::new(),
            },
            routes: default_routes(),
            store: StoreConfig::default(),
            log: LogConfig {
                format: LogFormat::Text,
            },
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then `IMAGEGATE_*` and `GRPC_COMPUTE_URL`; validated.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("IMAGEGATE_CONFIG").map(Into::into));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(env_provider()))
    }

    /// Defaults merged with a TOML string (tests and examples), no environment.
    pub fn from_toml(toml: &str) -> anyhow::Result<Config> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Config> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.compute_url = normalize_compute_url(&config.compute_url)
            .map_err(|why| anyhow::anyhow!("invalid configuration: compute_url: {why}"))?;
        let lanes = &mut config.lanes;
        for (name, lane) in [
            ("heavy", &mut lanes.heavy),
            ("realtime", &mut lanes.realtime),
        ]
        .into_iter()
        .chain(lanes.custom.iter_mut().map(|(k, v)| (k.as_str(), v)))
        {
            if let Some(url) = &lane.url {
                lane.url = Some(normalize_compute_url(url).map_err(|why| {
                    anyhow::anyhow!("invalid configuration: lanes.{name}.url: {why}")
                })?);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and reports all bad keys at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for (name, lane) in self.lanes.iter() {
            lane.validate(name, &mut errors);
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid_name {
                errors.push(format!(
                    "lanes.{name}: a lane name is lowercase letters, digits, '_' or '-'"
                ));
            }
            if !lane.yield_to.is_empty() && self.lanes.get(&lane.yield_to).is_none() {
                let names: Vec<&str> = self.lanes.iter().map(|(n, _)| n).collect();
                errors.push(format!(
                    "lanes.{name}.yield_to: unknown lane {:?}, expected one of {names:?} (or \"\" for off)",
                    lane.yield_to
                ));
            }
            if !matches!(name, "heavy" | "realtime") && !self.routes.values().any(|l| l == name) {
                errors.push(format!(
                    "lanes.{name}: no route in [routes] uses this lane (a typo of a lane name?)"
                ));
            }
        }
        self.bff.validate(&mut errors);
        self.compute.validate(&mut errors);
        self.compute_tls.validate(&mut errors);
        self.store.validate(&mut errors);
        for (key, lane) in &self.routes {
            if !is_route_key(key) {
                errors.push(format!(
                    "routes.\"{key}\": a key is a service (\"compute.ImageService\") or a method (\"compute.ImageService/Compress\")"
                ));
            }
            if self.lanes.get(lane).is_none() {
                let names: Vec<&str> = self.lanes.iter().map(|(n, _)| n).collect();
                errors.push(format!(
                    "routes.\"{key}\": unknown lane {lane:?}, expected one of {names:?}"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  {}", errors.join("\n  "))
        }
    }

    /// The lane an RPC path (`/compute.ImageService/Compress`) is routed to: the method's own
    /// entry wins over its service's; unrouted RPCs go to `heavy`.
    pub fn lane_for(&self, path: &str) -> &str {
        route(&self.routes, path)
    }
}

/// `IMAGEGATE_A__B=…` → `a.b`, and `GRPC_COMPUTE_URL` → `compute_url`.
///
/// Only variables that are config paths are read: a name with `__`, or one naming a top-level
/// key (`IMAGEGATE_MODE`, `IMAGEGATE_COMPUTE_URL`). Those stay strict: an unknown path or a bad
/// value refuses to start, naming the key. Every other `IMAGEGATE_*` is left alone (see
/// [`ignored_env_vars`]): the kubelet injects `IMAGEGATE_BFF_SERVICE_HOST`,
/// `IMAGEGATE_COMPUTE_PORT_50051_TCP`, … for the project's own Services, and a pod must not
/// crash-loop on them.
fn env_provider() -> Figment {
    Figment::new()
        .merge(
            Env::prefixed("IMAGEGATE_")
                .filter(|k| is_config_env_key(k.as_str()))
                .split("__"),
        )
        .merge(
            Env::raw()
                .only(&["GRPC_COMPUTE_URL"])
                .map(|_| "compute_url".into()),
        )
}

/// Whether `IMAGEGATE_<key>` (key lower-cased, prefix stripped) is a config path.
fn is_config_env_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key != "config" && (key.contains("__") || TOP_LEVEL_KEYS.contains(&key.as_str()))
}

/// The `IMAGEGATE_*` variables of this process that are not config paths and were ignored
/// (Kubernetes service links and the like): logged once at start, so that a typo such as
/// `IMAGEGATE_LANES_HEAVY__…` does not go unseen.
pub fn ignored_env_vars() -> Vec<String> {
    ignored_among(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
}

fn ignored_among(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut ignored: Vec<String> = names
        .filter(|name| {
            name.len() > "IMAGEGATE_".len()
                && name[.."IMAGEGATE_".len()].eq_ignore_ascii_case("IMAGEGATE_")
                && !is_config_env_key(&name["IMAGEGATE_".len()..])
                // The config file's path: read by `Config::load` itself.
                && !name["IMAGEGATE_".len()..].eq_ignore_ascii_case("config")
        })
        .collect();
    ignored.sort();
    ignored
}

/// Accepts the seed's `host:port` as well as `http://host:port`, lists and `dns://` names
/// (see [`target`]), and writes it in one canonical form.
fn normalize_compute_url(url: &str) -> Result<String, String> {
    target::Target::parse(url).map(|t| t.to_string())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_equals_the_defaults() {
        let text = include_str!("../../deploy/imagegate.example.toml");
        let example = Config::from_toml(text).unwrap();
        let defaults = Config::default();
        assert_eq!(example.lanes.heavy, defaults.lanes.heavy);
        assert_eq!(example.lanes.realtime, defaults.lanes.realtime);
        assert_eq!(example.routes, defaults.routes);
        assert_eq!(example.bff.max_file_size, defaults.bff.max_file_size);
        assert_eq!(example.compute.max_pixels, defaults.compute.max_pixels);
    }
}
