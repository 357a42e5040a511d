//! `[bff]`: the HTTP edge's listener, intake limits, timeouts, API keys and CORS.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::*;

/// A list of strings written as a TOML list or as one comma-separated string (the natural
/// form of an environment variable: `IMAGEGATE_BFF__CORS__ALLOWED_ORIGINS="https://a,https://b"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            One(String),
        }
        let items = match Raw::deserialize(d)? {
            Raw::List(v) => v,
            Raw::One(s) => s.split(',').map(str::to_string).collect(),
        };
        Ok(StringList(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

/// `[bff.cors]`: which web origins may call the API from a browser (CONTRACT §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins such as `"https://app.example.com"`, or `["*"]` for any; empty = CORS off.
    pub allowed_origins: StringList,
    /// How long a browser may cache a preflight's answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: StringList::default(),
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        for origin in &self.allowed_origins.0 {
            if origin == "*" {
                continue;
            }
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.bytes().all(|b| b.is_ascii_graphic())
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !ok {
                errors.push(format!(
                    "bff.cors.allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path, no trailing slash) or \"*\""
                ));
            }
        }
        if self.max_age > Duration::from_secs(86_400) {
            errors.push("bff.cors.max_age: must be at most 24h".into());
        }
    }
}

/// `[bff]`: the HTTP edge (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BffConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Actix worker threads (0 = one per core).
    pub workers: usize,
    /// Largest single uploaded file.
    pub max_file_size: Size,
    /// Largest whole request body.
    pub max_request_size: Size,
    /// Most `file` parts in one batch.
    pub max_files: usize,
    /// Largest text form field (quality, text, …).
    pub max_field_size: Size,
    /// Most text fields in one request (stops "thousands of parts").
    pub max_fields: usize,
    /// Request bodies the BFF holds in memory at once, across all requests: past it, a
    /// request that needs more is answered 503 + `Retry-After` (its body is read and dropped,
    /// not kept), so many concurrent uploads cannot exhaust memory.
    pub max_buffered_bytes: Size,
    /// Deadline of the `/health` check over the realtime lane.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// How long a client may take to send its request headers.
    #[serde(with = "humantime_serde")]
    pub client_request_timeout: Duration,
    /// How long a request body may go without a new byte arriving before it is answered 408
    /// (a stalled or abandoned upload): idle time between chunks, not the whole upload's.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// API keys (`Authorization: Bearer <key>` or `X-API-Key: <key>`); empty = auth off.
    /// A TOML list or one comma-separated string; `Debug` redacts them.
    pub api_keys: ApiKeys,
    /// Where `/metrics` and `/admin/reload` are served instead of `listen` (unset: on `listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Graceful shutdown: how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Cross-origin access from browsers (`[bff.cors]`; off by default).
    #[serde(default)]
    pub cors: CorsConfig,
}

/// Longest key accepted in the config (a header value of that size is already unusual).
const MAX_KEY_LEN: usize = 1024;

/// The configured API keys. Written as a TOML list or as one comma-separated string (the
/// natural form of an environment variable: `IMAGEGATE_BFF__API_KEYS="k1,k2"`).
///
/// `Debug` prints only how many keys there are, so a logged config never shows one.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<String>,
    /// SHA-256 of each key, computed once: requests compare digests, never raw strings.
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// These keys, each hashed once for comparison.
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        let digests = keys.iter().map(|k| digest(k.as_bytes())).collect();
        ApiKeys { keys, digests }
    }

    /// No keys: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether `presented` is one of the keys, in time that does not depend on which key
    /// (or how much of one) matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let mut any = subtle::Choice::from(0u8);
        for d in &self.digests {
            any |= d.ct_eq(&presented);
        }
        any.into()
    }

    /// Config validation; messages name the key's position, never its value.
    pub fn validate(&self, errors: &mut Vec<String>) {
        for (i, key) in self.keys.iter().enumerate() {
            let n = i + 1;
            if key.is_empty() {
                errors.push(format!("bff.api_keys: key #{n} is empty"));
            } else if key.len() > MAX_KEY_LEN {
                errors.push(format!(
                    "bff.api_keys: key #{n} is longer than {MAX_KEY_LEN} characters"
                ));
            } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
                // Anything else cannot travel reliably in an HTTP header.
                errors.push(format!(
                    "bff.api_keys: key #{n} has a space, control or non-ASCII character; keys are visible ASCII"
                ));
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl PartialEq for ApiKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys(<{} redacted>)", self.keys.len())
    }
}

impl Serialize for ApiKeys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ApiKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeysVisitor).map(ApiKeys::new)
    }
}

/// Error messages here never include the offending value: it may be a key.
const NOT_A_STRING: &str = "an API key was read as a number or a boolean; write keys as strings \
     (in the environment, quote an all-digit key: IMAGEGATE_BFF__API_KEYS='\"0123\"')";

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings or one comma-separated string")
    }

    /// The environment form: `"k1,k2"`. Blank entries (a trailing comma, or an empty
    /// variable meaning "no keys") are dropped; surrounding spaces are trimmed.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = seq.next_element::<KeyString>()? {
            keys.push(key.0);
        }
        Ok(keys)
    }

    // figment reads an all-digit environment value as a number ("0123" → 123): refuse it
    // rather than compare against a silently changed key.
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_STRING))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(NOT_A_STRING))
    }
}

/// One list entry; like [`KeysVisitor`], its errors never echo the value.
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        d.deserialize_any(V).map(KeyString)
    }
}

impl BffConfig {
    /// Adds a message naming the key for every bad value.
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        let b = self;
        if b.max_file_size.0 == 0 {
            errors.push("bff.max_file_size: must be above 0".into());
        }
        if b.max_request_size < b.max_file_size {
            errors.push("bff.max_request_size: must be at least bff.max_file_size".into());
        }
        if !(1..=10_000).contains(&b.max_files) {
            errors.push("bff.max_files: must be 1..=10000".into());
        }
        if !(1..=10_000).contains(&b.max_fields) {
            errors.push("bff.max_fields: must be 1..=10000".into());
        }
        if b.max_buffered_bytes < b.max_request_size {
            errors.push(
                "bff.max_buffered_bytes: must be at least bff.max_request_size (or no request of the largest size could ever be read)".into(),
            );
        }
        if b.max_field_size < Size(16) {
            errors.push("bff.max_field_size: must be at least 16 bytes".into());
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&b.body_read_timeout) {
            errors.push("bff.body_read_timeout: must be 10ms..=1h".into());
        }
        b.api_keys.validate(errors);
        b.cors.validate(errors);
        if b.admin_listen
            .is_some_and(|a| a == b.listen && a.port() != 0)
        {
            errors.push("bff.admin_listen: must differ from bff.listen".into());
        }
    }
}
