//! `[store]`: where uploads and batch results are kept, and for how long.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;

/// Which object store keeps uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A local directory (`store.dir`), created at start.
    Fs,
    /// Any S3-compatible object store (`store.bucket`, `store.endpoint`, …).
    S3,
}

/// `[store]`: where uploads and batch results live, and how long they are kept.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `fs` (default) or `s3`.
    pub backend: StoreBackend,
    /// `fs`: the data directory (created at start).
    pub dir: String,
    /// Key prefix inside the directory or bucket (`""` = its root); lets a bucket be shared.
    pub prefix: String,
    /// `s3`: the bucket (must exist).
    pub bucket: String,
    /// `s3`: endpoint URL of an S3-compatible service; empty = AWS itself.
    pub endpoint: String,
    /// `s3`: the region; empty = `AWS_REGION` or else `us-east-1` (S3-compatible services
    /// usually accept any).
    pub region: String,
    /// `s3`: credentials; empty = the standard `AWS_*` environment variables.
    pub access_key_id: String,
    /// `s3`: the secret key that goes with `access_key_id`.
    pub secret_access_key: String,
    /// `s3`: allow a plain `http://` endpoint (a local or in-cluster service).
    pub allow_http: bool,
    /// Deadline of one store operation (a put, get or delete).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retention: objects older than this are removed (`"0s"` = no age limit).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Retention: above this total, the oldest objects are removed (`0` = no size limit).
    pub max_total_bytes: Size,
    /// How often the retention sweep runs (it also runs once at start).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Fs,
            dir: "./data/uploads".into(),
            prefix: String::new(),
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_total_bytes: Size::mib(1024),
            sweep_interval: Duration::from_secs(300),
        }
    }
}

// By hand, so that the secret never reaches a log line.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret_access_key.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .field("max_total_bytes", &self.max_total_bytes)
            .field("sweep_interval", &self.sweep_interval)
            .finish()
    }
}

impl StoreConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let mut check = |ok: bool, field: &str, why: &str| {
            if !ok {
                errors.push(format!("store.{field}: {why}"));
            }
        };
        match self.backend {
            StoreBackend::Fs => check(
                !self.dir.trim().is_empty(),
                "dir",
                "must name a directory when store.backend = \"fs\"",
            ),
            StoreBackend::S3 => {
                check(
                    !self.bucket.trim().is_empty(),
                    "bucket",
                    "is required when store.backend = \"s3\"",
                );
                let endpoint = self.endpoint.trim();
                check(
                    endpoint.is_empty()
                        || endpoint.starts_with("https://")
                        || endpoint.starts_with("http://"),
                    "endpoint",
                    "must be an http:// or https:// URL (or empty for AWS)",
                );
                check(
                    !endpoint.starts_with("http://") || self.allow_http,
                    "endpoint",
                    "is plain http://; set store.allow_http = true to allow it",
                );
                check(
                    self.access_key_id.is_empty() == self.secret_access_key.is_empty(),
                    "secret_access_key",
                    "give both store.access_key_id and store.secret_access_key, or neither",
                );
            }
        }
        check(
            self.prefix.is_empty()
                || self.prefix.split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                }),
            "prefix",
            "must be empty or segments of [A-Za-z0-9._-] separated by single `/` (no `..`)",
        );
        check(
            self.timeout >= Duration::from_millis(1),
            "timeout",
            "must be at least 1ms",
        );
        check(
            self.sweep_interval >= Duration::from_secs(1),
            "sweep_interval",
            "must be at least 1s",
        );
    }
}
