//! Where a lane finds compute: one address, a list of replicas, or a DNS name whose addresses
//! are the replicas (a Kubernetes headless Service).
//!
//! Accepted forms (`GRPC_COMPUTE_URL`, `compute_url`, `lanes.<name>.url`):
//! - `host:port`, `http://host:port`, `https://host:port` (TLS);
//! - a comma-separated list of those, all with the same scheme;
//! - `dns://name:port` (or gRPC's `dns:///name:port`): every address `name` resolves to, on
//!   `port`, re-resolved every `resolve_interval`.

use std::fmt;

/// A parsed compute address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://` addresses.
    pub https: bool,
    /// Fixed endpoints or a DNS name.
    pub kind: TargetKind,
}

/// What a [`Target`] names: endpoints, or a name to resolve to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// Fixed endpoints, each `host:port` (a host name is resolved when connecting).
    Static(Vec<String>),
    /// Every address of `host`, on `port`.
    Dns {
        /// The name to resolve.
        host: String,
        /// The port every resolved address is dialled on.
        port: u16,
    },
}

impl Target {
    /// Parses any accepted form; the error says what was expected.
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty address; expected host:port".into());
        }
        if let Some(rest) = text.strip_prefix("dns://") {
            // gRPC's form has an (empty) authority of the DNS server: `dns:///name:port`.
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            let (host, port) = split_host_port(rest)
                .ok_or_else(|| format!("{text:?}: expected dns://name:port"))?;
            return Ok(Target {
                https: false,
                kind: TargetKind::Dns { host, port },
            });
        }
        let mut https = None;
        let mut endpoints = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (is_https, rest) = if let Some(r) = entry.strip_prefix("https://") {
                (true, r)
            } else if let Some(r) = entry.strip_prefix("http://") {
                (false, r)
            } else if entry.contains("://") {
                return Err(format!(
                    "{entry:?}: expected host:port, http://host:port, https://host:port or dns://name:port"
                ));
            } else {
                (false, entry)
            };
            if *https.get_or_insert(is_https) != is_https {
                return Err(format!(
                    "{text:?}: mixes http:// and https:// addresses; use one scheme for all"
                ));
            }
            let rest = rest.trim_end_matches('/');
            let (host, port) =
                split_host_port(rest).ok_or_else(|| format!("{entry:?}: expected host:port"))?;
            let endpoint = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }
        if endpoints.is_empty() {
            return Err(format!("{text:?}: no address; expected host:port"));
        }
        Ok(Target {
            https: https.unwrap_or(false),
            kind: TargetKind::Static(endpoints),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self, tls: bool) -> &'static str {
        if self.https || tls {
            "https"
        } else {
            "http"
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TargetKind::Dns { host, port } => write!(f, "dns://{host}:{port}"),
            TargetKind::Static(endpoints) => {
                let scheme = self.scheme(false);
                let list: Vec<String> = endpoints
                    .iter()
                    .map(|e| format!("{scheme}://{e}"))
                    .collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// `host:port` or `[v6]:port` → (host without brackets, port); the port must be present.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    let uri: http::Uri = format!("http://{text}").parse().ok()?;
    let authority = uri.authority()?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return None;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16()?;
    if host.is_empty() || authority.as_str().contains('@') {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(list: &[&str]) -> TargetKind {
        TargetKind::Static(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_seeds_forms_and_lists_parse() {
        let t = Target::parse("compute:50051").unwrap();
        assert_eq!(t.kind, stat(&["compute:50051"]));
        assert!(!t.https);
        assert_eq!(t.to_string(), "http://compute:50051");
        let t = Target::parse("http://127.0.0.1:1, http://127.0.0.1:2,127.0.0.1:3").unwrap();
        assert_eq!(t.kind, stat(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]));
        assert_eq!(
            t.to_string(),
            "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3"
        );
        let t = Target::parse("https://a.example:443").unwrap();
        assert!(t.https);
        assert_eq!(t.to_string(), "https://a.example:443");
        let t = Target::parse("[::1]:9000").unwrap();
        assert_eq!(t.kind, stat(&["[::1]:9000"]));
        // Duplicates collapse: one endpoint, not twice the share.
        let t = Target::parse("a:1,a:1").unwrap();
        assert_eq!(t.kind, stat(&["a:1"]));
    }

    #[test]
    fn dns_names_parse_in_both_forms() {
        for text in ["dns://compute.ns.svc:50051", "dns:///compute.ns.svc:50051"] {
            let t = Target::parse(text).unwrap();
            assert_eq!(
                t.kind,
                TargetKind::Dns {
                    host: "compute.ns.svc".into(),
                    port: 50051
                }
            );
            assert_eq!(t.to_string(), "dns://compute.ns.svc:50051");
        }
    }

    #[test]
    fn bad_addresses_say_what_was_expected() {
        for bad in [
            "",
            "compute",
            "ftp://a:1",
            "http://a:1,https://b:2",
            "dns://name",
            "http://a:1/path",
            "user@a:1",
            ",",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(
                err.contains("expected") || err.contains("scheme"),
                "{bad:?}: {err}"
            );
        }
    }
}
