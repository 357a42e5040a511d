//! A lane's compute endpoints (replicas) and the choice among them.
//!
//! Each endpoint has its own [`ChannelPool`] of `connections` TCP connections. Calls go round
//! robin, skipping an endpoint that has more than one call more in flight than the least busy
//! one: an even load spreads evenly (pure least-in-flight does not: the replica that just
//! answered is always the least busy, and wins the next call), while a slow or stuck replica,
//! whose calls pile up, gets no more until it catches up. An endpoint whose calls fail
//! `eject_after` times in a row (its connection refused, reset, or its calls timing out) is
//! ejected for `eject_for`, doubling on each further ejection up to `eject_max`; then one
//! probe call is let through and a success readmits it: a per-endpoint circuit breaker. If
//! every endpoint is ejected the lane uses them all anyway ("panic mode": trying beats
//! failing, and the lane's own circuit breaker then decides).
//!
//! A `dns://` target is resolved again every `resolve_interval`: new addresses are added,
//! vanished ones are dropped from the rotation while calls already on them run to their end
//! (a call holds its endpoint, whose connections close when its last call finishes).

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::{Code, Status};

use super::channel::{ChannelSettings, ChannelTls, LaneChannel};
use super::connector::{ConnectionMetrics, MeteredConnector};
use super::metrics::EndpointMetrics;
use super::pool::ChannelPool;
use crate::config::target::{Target, TargetKind};
use crate::config::{ComputeTlsConfig, LaneConfig};
use crate::pacing::SocketRegistry;

/// Resolves a name to addresses (the system resolver; tests inject their own).
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS with resolv.conf's search
/// domains, as in a Kubernetes pod).
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// How a call ended, as far as its endpoint's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered (any answer of its own, errors about the input included).
    Answered,
    /// Unreachable, reset, broken or too slow.
    Failed,
    /// No verdict (the client went away).
    Abandoned,
}

impl Outcome {
    /// The verdict a gRPC status gives on the endpoint that produced it.
    pub fn of(code: Code) -> Outcome {
        if crate::vocab::failure::is_compute_failure(code) {
            Outcome::Failed
        } else if code == Code::Cancelled {
            Outcome::Abandoned
        } else {
            Outcome::Answered
        }
    }
}

/// Ejection thresholds (from the lane's config; swappable at run time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectSettings {
    /// Consecutive failures that eject an endpoint (0 = never).
    pub after: u32,
    /// Length of a first ejection; each further one doubles it.
    pub base: Duration,
    /// Longest an ejection lasts.
    pub max: Duration,
}

impl From<&LaneConfig> for EjectSettings {
    fn from(c: &LaneConfig) -> Self {
        EjectSettings {
            after: c.eject_after,
            base: c.eject_for,
            max: c.eject_max,
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    /// Ejected until then; after it, one probe call may go.
    ejected_until: Option<Instant>,
    /// Ejections since the endpoint was last healthy (the backoff's exponent).
    ejections: u32,
    probe_in_flight: bool,
    /// Out of rotation because another lane sending to the same address found it failing
    /// (the realtime lane's health checks): back when that lane sees it answer again.
    held_by_peer: bool,
}

/// At most this share of a lane's endpoints is ejected at once (Envoy's
/// `max_ejection_percent`): when calls fail everywhere (a deadline shorter than the work under
/// overload, a shared dependency down), ejecting replica after replica would only concentrate
/// the load on the last ones.
pub const MAX_EJECTED_SHARE: f64 = 0.5;

/// One compute replica of a lane.
pub struct ComputeEndpoint {
    /// `host:port` as configured, or `ip:port` as resolved.
    pub address: String,
    channels: ChannelPool,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

impl ComputeEndpoint {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// In rotation, or due for its probe.
    fn available(&self, now: Instant) -> bool {
        let h = self.health();
        match h.ejected_until {
            None => true,
            Some(until) => until <= now && !h.probe_in_flight,
        }
    }

    /// Ejected (after its own failures, or while a peer lane's health checks fail), until it
    /// answers again; possibly due for its probe already.
    pub fn is_ejected(&self) -> bool {
        self.health().ejected_until.is_some()
    }

    /// Calls of this lane on the endpoint now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Builds the channel settings of one address with the lane's settings.
#[derive(Clone)]
struct EndpointTemplate {
    scheme: &'static str,
    tls: Option<Arc<ClientConfig>>,
    /// For TLS: the name compute's certificate must carry, when it is not the address's host
    /// (a `dns://` target connects to IPs but verifies the DNS name).
    server_name: Option<String>,
    io: LaneIo,
    config: LaneConfig,
    connector: MeteredConnector,
}

/// Where a lane's work runs: its own runtime (its connections, unless `io_threads = 0`, and
/// its background tasks), and how many HTTP workers call it (with `io_threads = 0` each
/// drives a share of the connections).
#[derive(Clone)]
pub struct LaneIo {
    /// The lane's own runtime.
    pub runtime: tokio::runtime::Handle,
    /// The HTTP worker threads that make the calls.
    pub http_workers: usize,
}

impl EndpointTemplate {
    fn settings(&self, address: &str) -> anyhow::Result<ChannelSettings> {
        let c = &self.config;
        let authority: http::uri::Authority = address
            .parse()
            .map_err(|e| anyhow::anyhow!("compute address {address:?}: {e}"))?;
        let tls = match &self.tls {
            None => None,
            Some(config) => {
                let name = self
                    .server_name
                    .clone()
                    .unwrap_or_else(|| authority.host().trim_matches(['[', ']']).to_string());
                let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                    anyhow::anyhow!("{name:?} is no name a TLS certificate can carry: {e}")
                })?;
                Some(ChannelTls {
                    config: Arc::clone(config),
                    server_name,
                })
            }
        };
        let runtime = self.connection_runtime();
        Ok(ChannelSettings {
            scheme: self.scheme.parse().expect("http or https"),
            authority,
            tls,
            // Bounds the whole connect through the TLS handshake: a hung peer whose kernel
            // still accepts connections must not hold a connect for minutes.
            connect_timeout: c.connect_timeout,
            http2: ChannelSettings::http2(
                runtime.as_ref(),
                c.stream_window.0 as u32,
                c.connection_window.0 as u32,
                c.keepalive_interval,
                c.keepalive_timeout,
            ),
            runtime,
            connector: self.connector.clone(),
        })
    }

    /// Where the connections are driven: the lane's runtime, or (`io_threads = 0`) the
    /// callers' own.
    fn connection_runtime(&self) -> Option<tokio::runtime::Handle> {
        (self.config.io_threads > 0).then(|| self.io.runtime.clone())
    }

    async fn build(&self, address: String) -> anyhow::Result<Arc<ComputeEndpoint>> {
        let channels = ChannelPool::new(
            self.settings(&address)?,
            self.config.connections,
            self.io.http_workers,
        );
        Ok(Arc::new(ComputeEndpoint {
            address,
            channels,
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
        }))
    }
}

/// rustls' client settings from the PEM files of `[compute_tls]` (none: no roots, as with
/// tonic's default), with ALPN `h2`.
pub fn client_tls(config: Option<&ComputeTlsConfig>) -> anyhow::Result<Arc<ClientConfig>> {
    let read = |key: &str, path: &str| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("compute_tls.{key}: cannot read {path:?}: {e}"))
    };
    let certificates = |key: &str, path: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_slice_iter(&read(key, path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("compute_tls.{key}: {path:?} is no PEM certificate: {e}"))
    };
    let mut roots = RootCertStore::empty();
    if let Some(ca) = config.and_then(|c| c.ca_cert.as_deref()) {
        roots.add_parsable_certificates(certificates("ca_cert", ca)?);
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut tls = match config.and_then(|c| c.cert.as_deref().zip(c.key.as_deref())) {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_slice(&read("key", key)?)
                .map_err(|e| anyhow::anyhow!("compute_tls.key: {key:?} is no PEM key: {e}"))?;
            builder.with_client_auth_cert(certificates("cert", cert)?, key)?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(tls))
}

/// A lane's replicas and the balancer over them.
pub struct Upstream {
    target: Target,
    template: EndpointTemplate,
    endpoints: ArcSwap<Vec<Arc<ComputeEndpoint>>>,
    next: AtomicUsize,
    eject: ArcSwap<EjectSettings>,
    metrics: EndpointMetrics,
}

/// A call's claim on one endpoint: counts it in flight there until recorded or dropped.
pub struct Picked {
    /// The replica chosen.
    pub endpoint: Arc<ComputeEndpoint>,
    /// One of its connections to send the call on.
    pub channel: LaneChannel,
    upstream: Arc<Upstream>,
    probe: bool,
    done: bool,
}

impl Picked {
    /// Reports how the call ended (a dropped claim counts as abandoned).
    pub fn record(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.upstream.record(&self.endpoint, self.probe, outcome);
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

impl Upstream {
    /// The endpoints of `target` (a `dns://` name is resolved now, then kept fresh by a task
    /// on `runtime`). A name that does not resolve yet is not an error: the lane starts empty
    /// and answers UNAVAILABLE until it does, like a compute that is down.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        lane: &str,
        target: Target,
        config: &LaneConfig,
        tls: Option<&ComputeTlsConfig>,
        connections: ConnectionMetrics,
        metrics: EndpointMetrics,
        io: LaneIo,
        resolver: Resolver,
    ) -> anyhow::Result<Arc<Upstream>> {
        let use_tls = target.https || tls.is_some_and(|t| t.enabled);
        let tls_config = if use_tls {
            Some(client_tls(tls)?)
        } else {
            None
        };
        let server_name = match (&target.kind, tls.and_then(|t| t.server_name.clone())) {
            (_, Some(name)) => Some(name),
            (TargetKind::Dns { host, .. }, None) => Some(host.clone()),
            (TargetKind::Static(_), None) => None,
        };
        let template = EndpointTemplate {
            scheme: target.scheme(use_tls),
            tls: tls_config,
            server_name,
            io: io.clone(),
            config: config.clone(),
            connector: MeteredConnector {
                metrics: connections,
                connect_timeout: config.connect_timeout,
                tcp_rto_min: config.tcp_rto_min,
                sockets: Arc::new(SocketRegistry::default()),
            },
        };
        let upstream = Arc::new(Upstream {
            target: target.clone(),
            template,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            eject: ArcSwap::from_pointee(EjectSettings::from(config)),
            metrics,
        });
        match &target.kind {
            TargetKind::Static(list) => {
                let mut endpoints = Vec::with_capacity(list.len());
                for address in list {
                    endpoints.push(upstream.template.build(address.clone()).await?);
                }
                upstream.endpoints.store(Arc::new(endpoints));
                upstream.publish();
            }
            TargetKind::Dns { host, port } => {
                let first = tokio::time::timeout(
                    config.connect_timeout.max(Duration::from_secs(1)),
                    resolver(host.clone(), *port),
                )
                .await;
                match first {
                    Ok(Ok(addrs)) => upstream.reconcile(&addrs).await,
                    Ok(Err(e)) => {
                        tracing::warn!(lane, %host, error = %e, "compute name does not resolve yet")
                    }
                    Err(_) => tracing::warn!(lane, %host, "resolving the compute name timed out"),
                }
                io.runtime.spawn(refresh(
                    Arc::downgrade(&upstream),
                    lane.to_string(),
                    host.clone(),
                    *port,
                    config.resolve_interval,
                    resolver,
                ));
            }
        }
        Ok(upstream)
    }

    /// The lane's open connections, by address (what `dispatch::yielding` paces).
    pub fn sockets(&self) -> &Arc<SocketRegistry> {
        &self.template.connector.sockets
    }

    /// The endpoints in the rotation's order (ejected ones included).
    pub fn endpoints(&self) -> Arc<Vec<Arc<ComputeEndpoint>>> {
        self.endpoints.load_full()
    }

    /// True when an endpoint not in `tried` is in rotation: a retry could go elsewhere.
    pub fn has_untried(&self, tried: &[Arc<ComputeEndpoint>]) -> bool {
        let now = Instant::now();
        self.endpoints
            .load()
            .iter()
            .any(|e| e.available(now) && !tried.iter().any(|t| Arc::ptr_eq(t, e)))
    }

    /// New ejection thresholds, for decisions from now on.
    pub fn set_eject(&self, settings: EjectSettings) {
        self.eject.store(Arc::new(settings));
    }

    /// Chooses the endpoint for a call, avoiding `tried` ones (a retry goes elsewhere) while
    /// others are available.
    /// Nothing here awaits: a claim (in flight, the probe flag) is never left behind by a
    /// caller that goes away in the middle of a pick.
    pub fn pick(self: &Arc<Self>, tried: &[Arc<ComputeEndpoint>]) -> Result<Picked, Status> {
        let endpoint = self.choose(tried).ok_or_else(|| {
            Status::unavailable(format!(
                "no compute endpoint: {} resolved to no address",
                self.target
            ))
        })?;
        let channel = endpoint.channels.pick();
        let probe = {
            let mut h = endpoint.health();
            match h.ejected_until {
                Some(until) if until <= Instant::now() && !h.probe_in_flight => {
                    h.probe_in_flight = true;
                    true
                }
                _ => false,
            }
        };
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Picked {
            endpoint,
            channel,
            upstream: self.clone(),
            probe,
            done: false,
        })
    }

    fn choose(&self, tried: &[Arc<ComputeEndpoint>]) -> Option<Arc<ComputeEndpoint>> {
        let all = self.endpoints.load();
        if all.is_empty() {
            return None;
        }
        let now = Instant::now();
        let untried = |e: &&Arc<ComputeEndpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
        let mut candidates: Vec<&Arc<ComputeEndpoint>> = all
            .iter()
            .filter(|e| e.available(now))
            .filter(untried)
            .collect();
        if candidates.is_empty() {
            candidates = all.iter().filter(|e| e.available(now)).collect();
        }
        if candidates.is_empty() {
            // Panic mode: everything is ejected; spread over all rather than fail.
            candidates = all.iter().collect();
        }
        // The next in turn that is at most one call busier than the least busy.
        let least = candidates.iter().map(|e| e.in_flight()).min().unwrap_or(0);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = candidates.len();
        (0..n)
            .map(|i| candidates[(start + i) % n])
            .find(|e| e.in_flight() <= least + 1)
            .or(candidates.first().copied())
            .cloned()
    }

    fn record(&self, endpoint: &ComputeEndpoint, probe: bool, outcome: Outcome) {
        let settings = **self.eject.load();
        let now = Instant::now();
        let mut changed = false;
        {
            let mut h = endpoint.health();
            if probe {
                h.probe_in_flight = false;
            }
            match outcome {
                Outcome::Answered => {
                    h.consecutive_failures = 0;
                    h.held_by_peer = false;
                    if h.ejected_until.take().is_some() {
                        h.ejections = 0;
                        changed = true;
                        tracing::info!(endpoint = %endpoint.address, "compute endpoint answers again: back in rotation");
                    }
                }
                Outcome::Failed => {
                    h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                    let trip = settings.after > 0
                        && (probe
                            || (h.ejected_until.is_none()
                                && h.consecutive_failures >= settings.after
                                && self.may_eject_another()));
                    if trip {
                        h.ejections = h.ejections.saturating_add(1);
                        let backoff = settings
                            .base
                            .saturating_mul(1 << (h.ejections - 1).min(16))
                            .min(settings.max);
                        h.ejected_until = Some(now + backoff);
                        h.consecutive_failures = 0;
                        changed = true;
                        self.metrics.ejections.inc();
                        tracing::warn!(
                            endpoint = %endpoint.address,
                            ?backoff,
                            "compute endpoint ejected after consecutive failures"
                        );
                    }
                }
                Outcome::Abandoned => {}
            }
        }
        if changed {
            self.publish();
        }
    }

    /// True while ejecting one more endpoint keeps the ejected share within
    /// [`MAX_EJECTED_SHARE`]. Called with one endpoint's health locked, so it only tries the
    /// locks: an endpoint locked elsewhere at this instant counts as in rotation.
    fn may_eject_another(&self) -> bool {
        let all = self.endpoints.load();
        let ejected = all
            .iter()
            .filter(|e| e.health.try_lock().is_ok_and(|h| h.ejected_until.is_some()))
            .count();
        (ejected + 1) as f64 <= MAX_EJECTED_SHARE * all.len() as f64
    }

    /// Follows another lane's view of `address` (the realtime lane's health checks): taken out
    /// of rotation while that lane has it ejected, for at most `eject_max` without news (then
    /// this lane probes it itself), and back as soon as that lane sees it answer. So a hung
    /// replica that the health checks found costs image calls nothing, instead of each of
    /// them waiting out the heavy deadline there.
    pub fn follow_peer(&self, address: &str, peer_ejected: bool) {
        let settings = **self.eject.load();
        let now = Instant::now();
        let mut changed = false;
        for endpoint in self
            .endpoints
            .load()
            .iter()
            .filter(|e| e.address == address)
        {
            let held = {
                let h = endpoint.health();
                h.held_by_peer
            };
            if peer_ejected && !held {
                if !endpoint.is_ejected() && !self.may_eject_another() {
                    continue;
                }
                let mut h = endpoint.health();
                if h.ejected_until.is_none() {
                    h.ejected_until = Some(now + settings.max);
                    h.held_by_peer = true;
                    changed = true;
                    self.metrics.ejections.inc();
                    tracing::warn!(endpoint = %address, "compute endpoint out of rotation: its health checks fail");
                }
            } else if !peer_ejected && held {
                let mut h = endpoint.health();
                h.held_by_peer = false;
                h.ejected_until = None;
                h.ejections = 0;
                h.consecutive_failures = 0;
                changed = true;
                tracing::info!(endpoint = %address, "compute endpoint back in rotation: its health checks pass");
            }
        }
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        let all = self.endpoints.load();
        let ejected = all.iter().filter(|e| e.is_ejected()).count();
        self.metrics.ejected.set(ejected as i64);
        self.metrics.healthy.set((all.len() - ejected) as i64);
    }

    /// Makes the endpoint set match `addrs`: adds new ones, drops vanished ones (their calls
    /// in flight finish on connections they hold), keeps the rest with their health.
    async fn reconcile(&self, addrs: &[SocketAddr]) {
        let wanted: Vec<String> = {
            let mut seen = HashSet::new();
            addrs
                .iter()
                .map(SocketAddr::to_string)
                .filter(|a| seen.insert(a.clone()))
                .collect()
        };
        let current = self.endpoints.load_full();
        let mut next = Vec::with_capacity(wanted.len());
        for address in &wanted {
            match current.iter().find(|e| &e.address == address) {
                Some(existing) => next.push(existing.clone()),
                None => match self.template.build(address.clone()).await {
                    Ok(endpoint) => {
                        tracing::info!(%address, target = %self.target, "compute endpoint added");
                        next.push(endpoint);
                    }
                    Err(e) => tracing::warn!(%address, error = %e, "cannot add compute endpoint"),
                },
            }
        }
        for gone in current.iter().filter(|e| !wanted.contains(&e.address)) {
            tracing::info!(address = %gone.address, in_flight = gone.in_flight(), "compute endpoint removed; draining");
        }
        self.endpoints.store(Arc::new(next));
        self.publish();
    }
}

/// Re-resolves a `dns://` target until its lane is gone. A failed or empty answer keeps the
/// endpoints we have (a DNS hiccup must not empty the lane).
async fn refresh(
    upstream: Weak<Upstream>,
    lane: String,
    host: String,
    port: u16,
    interval: Duration,
    resolver: Resolver,
) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        match tokio::time::timeout(
            interval.max(Duration::from_secs(1)),
            resolver(host.clone(), port),
        )
        .await
        {
            Ok(Ok(addrs)) if !addrs.is_empty() => upstream.reconcile(&addrs).await,
            Ok(Ok(_)) => {
                tracing::warn!(%lane, %host, "compute name resolved to no address; keeping the endpoints we have")
            }
            Ok(Err(e)) => {
                tracing::warn!(%lane, %host, error = %e, "re-resolving the compute name failed; keeping the endpoints we have")
            }
            Err(_) => tracing::warn!(%lane, %host, "re-resolving the compute name timed out"),
        }
    }
}

#[cfg(test)]
mod tests;
