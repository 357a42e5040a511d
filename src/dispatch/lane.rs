//! A bulkhead lane: admission (a resizable permit counter with a bounded wait, then shedding),
//! its own TCP connections to each compute replica (the [`Upstream`]), per-call deadline sent
//! as grpc-timeout, safe retries (on another replica when there is one) with jittered
//! exponential backoff under a retry budget, and the lane's metrics. An adaptive lane
//! (`concurrency = "adaptive"`) feeds every finished call to its [`AdaptiveLimit`], which
//! resizes the permit counter.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};
use tower::retry::budget::{Budget, TpsBudget};

use super::adaptive::{AdaptiveLimit, Signal};
use super::balancer::{Outcome, Picked, Upstream};
use super::channel::LaneChannel;
use super::circuit::{Circuit, CircuitSettings, Ticket};
use super::limiter::{Limiter, Permit};
use super::metrics::{code_name, rejected, LaneMetrics};
use super::DispatchError;
use crate::config::{Concurrency, LaneConfig};
use crate::vocab::errors::{reason, reason_of};
use crate::vocab::failure::is_compute_failure;

/// One lane: its limits (swappable at run time), permits, connections and metrics.
pub struct Lane {
    name: String,
    config: ArcSwap<LaneConfig>,
    limiter: Arc<Limiter>,
    circuit: Arc<Circuit>,
    upstream: Arc<Upstream>,
    budget: ArcSwap<TpsBudget>,
    metrics: LaneMetrics,
    /// The controller of an adaptive lane (`None`: the limit is `max_in_flight`).
    adaptive: Mutex<Option<AdaptiveLimit>>,
}

/// The work compute reports in an answer (`elapsed_ms`), which the adaptive limit subtracts
/// from the round trip to see the wait in front of compute.
pub trait ReportsWork {
    /// `None` for answers that carry no work time (health checks).
    fn work(&self) -> Option<Duration>;
}

/// The queue in front of the permits of an adaptive lane: at most half its limit (at least
/// one), so a call that waits is served within about half a call's time; a fixed lane keeps
/// `max_queued` as configured.
fn max_queued_for(config: &LaneConfig, limit: usize) -> usize {
    match config.concurrency {
        Concurrency::Fixed => config.max_queued,
        Concurrency::Adaptive => config.max_queued.min(limit.div_ceil(2).max(1)),
    }
}

fn publish_bounds(metrics: &LaneMetrics, config: &LaneConfig) {
    let min = match config.concurrency {
        Concurrency::Adaptive => config.min_in_flight,
        Concurrency::Fixed => config.max_in_flight,
    };
    metrics.limit_min.set(min as i64);
    metrics.limit_max.set(config.max_in_flight as i64);
}

fn controller_for(config: &LaneConfig) -> Option<AdaptiveLimit> {
    (config.concurrency == Concurrency::Adaptive)
        .then(|| AdaptiveLimit::new(config.min_in_flight, config.max_in_flight, Instant::now()))
}

/// Decrements the in-flight gauge when the call (or stream) ends, however it ends.
struct InFlight {
    gauge: prometheus::IntGauge,
    _permit: Permit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn budget_for(config: &LaneConfig) -> TpsBudget {
    // Retries may add `retry_budget_ratio` of the last 10 s of calls, plus 1 per second.
    TpsBudget::new(Duration::from_secs(10), 1, config.retry_budget_ratio)
}

impl Lane {
    /// A lane sending to `upstream` with `config`'s limits, recording into `metrics`.
    pub fn new(
        name: &str,
        config: LaneConfig,
        upstream: Arc<Upstream>,
        metrics: LaneMetrics,
    ) -> Self {
        let adaptive = controller_for(&config);
        let limit = adaptive
            .as_ref()
            .map_or(config.max_in_flight, AdaptiveLimit::limit);
        let limiter = Limiter::new(limit);
        limiter.set_max_queued(max_queued_for(&config, limit));
        metrics.limit.set(limit as i64);
        publish_bounds(&metrics, &config);
        Lane {
            adaptive: Mutex::new(adaptive),
            name: name.to_string(),
            budget: ArcSwap::from_pointee(budget_for(&config)),
            circuit: Arc::new(Circuit::new(CircuitSettings::of(&config))),
            config: ArcSwap::from_pointee(config),
            limiter,
            upstream,
            metrics,
        }
    }

    /// The lane's name (`heavy`, `realtime` or a custom one).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits in force.
    pub fn config(&self) -> Arc<LaneConfig> {
        self.config.load_full()
    }

    /// The lane's compute endpoints.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The lane's metric handles.
    pub fn metrics(&self) -> &LaneMetrics {
        &self.metrics
    }

    /// The concurrency limit in force (adaptive or fixed).
    pub fn limit(&self) -> usize {
        self.limiter.limit()
    }

    /// Applies new limits (max in flight, queue wait, deadline, retries, budget) to calls
    /// admitted from now on; calls in flight finish under the old ones. Connection settings
    /// (connections, keepalive, windows, message size) take effect for new lanes only.
    /// An adaptive limit is clamped into the new bounds, not reset.
    pub fn set_limits(&self, config: LaneConfig) {
        let limit = {
            let mut adaptive = self.adaptive.lock().expect("adaptive lock");
            match (&mut *adaptive, config.concurrency) {
                (Some(controller), Concurrency::Adaptive) => {
                    controller.set_bounds(config.min_in_flight, config.max_in_flight);
                    controller.limit()
                }
                (None, Concurrency::Adaptive) => {
                    // Switched from fixed: start from the limit in force.
                    let mut controller = AdaptiveLimit::new(
                        config.min_in_flight,
                        config.max_in_flight,
                        Instant::now(),
                    );
                    controller.start_at(self.limiter.limit());
                    let limit = controller.limit();
                    *adaptive = Some(controller);
                    limit
                }
                (_, Concurrency::Fixed) => {
                    *adaptive = None;
                    config.max_in_flight
                }
            }
        };
        self.limiter.set_limit(limit);
        self.limiter.set_max_queued(max_queued_for(&config, limit));
        self.circuit.set_settings(CircuitSettings::of(&config));
        self.upstream.set_eject((&config).into());
        self.metrics.limit.set(limit as i64);
        publish_bounds(&self.metrics, &config);
        if config.retry_budget_ratio != self.config.load().retry_budget_ratio {
            self.budget.store(Arc::new(budget_for(&config)));
        }
        self.config.store(Arc::new(config));
    }

    /// Feeds one finished call to the adaptive limit (if the lane has one) and applies a new
    /// limit at once: the permit counter, the queue in front of it and the gauge.
    fn adapt(&self, signal: Signal) {
        let mut adaptive = self.adaptive.lock().expect("adaptive lock");
        let Some(controller) = adaptive.as_mut() else {
            return;
        };
        // The finishing call still holds its permit: it counts as in flight.
        let in_flight = self.metrics.in_flight.get().max(1) as usize;
        if let Signal::Answered {
            round_trip,
            work,
            queued,
        } = signal
        {
            self.metrics
                .compute_wait
                .observe(super::adaptive::signal_wait(round_trip, work, queued).as_secs_f64());
        }
        let Some(limit) = controller.observe(Instant::now(), in_flight, signal) else {
            if let Some(v) = controller.last_verdict() {
                self.metrics.compute_busy.set(v.busy);
            }
            return;
        };
        let verdict = controller.last_verdict();
        let config = self.config.load();
        self.limiter.set_limit(limit);
        self.limiter.set_max_queued(max_queued_for(&config, limit));
        self.metrics.limit.set(limit as i64);
        if let Some(v) = verdict {
            self.metrics.compute_busy.set(v.busy);
            tracing::debug!(
                lane = %self.name,
                limit,
                busy = format_args!("{:.1}", v.busy),
                wait_p90_ms = format_args!("{:.2}", v.wait_p90.as_secs_f64() * 1e3),
                tolerance_ms = format_args!("{:.2}", v.tolerance.as_secs_f64() * 1e3),
                "adaptive limit moved"
            );
        }
    }

    /// What a failed call tells the adaptive limit: compute refused it (QUEUE_FULL), or the
    /// deadline passed. Other failures say nothing about compute's capacity.
    fn adapt_to_failure(&self, e: &DispatchError) {
        match e {
            DispatchError::Deadline { .. } => self.adapt(Signal::Deadline),
            DispatchError::Status(s) if is_queue_full(s) => self.adapt(Signal::QueueFull),
            _ => {}
        }
    }

    /// Fails fast while the lane's circuit is open.
    fn check_circuit(&self) -> Result<Ticket, DispatchError> {
        self.circuit.allow().map_err(|open| {
            self.metrics.rejected(rejected::CIRCUIT_OPEN).inc();
            DispatchError::CircuitOpen {
                lane: self.name.clone(),
                retry_after: open.retry_after.max(Duration::from_secs(1)),
            }
        })
    }

    /// Compute answered a health check on another lane that shares this lane's address: an
    /// open circuit probes with its next call instead of waiting out `circuit_open_for`.
    pub fn note_compute_serving(&self) {
        self.circuit.probe_now();
    }

    /// A health check on another lane that shares this lane's address found compute failing
    /// with no endpoint left in rotation: fail fast now rather than after `circuit_failures`
    /// calls have each waited out the deadline.
    pub fn note_compute_failing(&self) {
        self.circuit.open_on_failed_health_check();
    }

    /// Sheds a call before it is built when the lane would shed it now (no permit free, no
    /// room in the queue): the edge asks before reading an upload, so that under sustained
    /// overload a refusal costs no multipart parsing, no buffer and no budget, only the drain
    /// of its body, and the CPU stays with the calls compute serves. Counted and answered as
    /// the same `saturated` shed as one at admission.
    pub fn shed_early(&self) -> Result<(), DispatchError> {
        let config = self.config.load();
        if !self.limiter.is_saturated(config.queue_wait) {
            return Ok(());
        }
        self.metrics.rejected(rejected::SATURATED).inc();
        Err(DispatchError::Saturated {
            lane: self.name.clone(),
            retry_after: retry_after(&config),
        })
    }

    /// Waits up to the lane's queue wait for a permit, or sheds the call.
    async fn admit(&self, config: &LaneConfig) -> Result<InFlight, DispatchError> {
        let start = Instant::now();
        let permit = self.limiter.acquire(config.queue_wait).await;
        self.metrics
            .queue_wait
            .observe(start.elapsed().as_secs_f64());
        let Some(permit) = permit else {
            self.metrics.rejected(rejected::SATURATED).inc();
            return Err(DispatchError::Saturated {
                lane: self.name.clone(),
                retry_after: retry_after(config),
            });
        };
        self.metrics.in_flight.inc();
        Ok(InFlight {
            gauge: self.metrics.in_flight.clone(),
            _permit: permit,
        })
    }

    /// Sends one unary call with this lane's limits. `call` receives a channel and a request
    /// carrying the remaining deadline; it may be invoked again for a safe retry.
    pub async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> Result<Resp, DispatchError>
    where
        Req: Clone,
        Resp: ReportsWork,
        F: Fn(LaneChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.unary_within(method, None, request, call).await
    }

    /// [`Lane::unary`] with a deadline shorter than the lane's (`/health` answers within
    /// `bff.health_timeout`). The lane itself enforces it, so a call that runs out is judged
    /// like any other — a metric, a circuit verdict, a failure against the endpoint (a hung
    /// replica is ejected) — instead of being dropped unseen by an outer timeout.
    pub async fn unary_within<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        shorter_deadline: Option<Duration>,
        request: Req,
        call: F,
    ) -> Result<Resp, DispatchError>
    where
        Req: Clone,
        Resp: ReportsWork,
        F: Fn(LaneChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let entered = Instant::now();
        let mut config = self.config.load_full();
        let shorter = shorter_deadline.filter(|d| *d < config.deadline);
        if let Some(shorter) = shorter {
            let mut c = (*config).clone();
            c.deadline = shorter;
            config = Arc::new(c);
        }
        let ticket = self.check_circuit()?;
        let _in_flight = self.admit(&config).await?;
        let started = Instant::now();
        // Until the call is recorded below, dropping it (the HTTP client went away) records
        // it as CANCELLED: the slowest calls are the ones clients give up on, and they must
        // not vanish from the request metrics.
        let mut unrecorded = Unrecorded {
            metrics: &self.metrics,
            method,
            started,
            armed: true,
        };
        // A caller's own bound counts from its call, admission included.
        let deadline = match shorter {
            Some(shorter) => entered + shorter,
            None => started + config.deadline,
        };
        let result = self
            .with_retries(&config, deadline, request, &call)
            .await
            .map(|(response, picked, round_trip)| {
                picked.record(Outcome::Answered);
                if let Some(work) = response.get_ref().work() {
                    let queued = crate::vocab::metadata::queued_of(response.metadata());
                    self.adapt(Signal::Answered {
                        round_trip,
                        work,
                        queued,
                    });
                }
                response
            });
        if let Err(e) = &result {
            self.adapt_to_failure(e);
        }
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(e) => error_code(e),
        };
        ticket.record_outcome(is_compute_failure(code), code == Code::Unavailable);
        unrecorded.armed = false;
        self.metrics
            .request(method, code_name(code), started.elapsed().as_secs_f64());
        result.map(tonic::Response::into_inner)
    }

    /// Opens a server-streaming call; the permit and the deadline belong to the returned
    /// stream, so a client that goes away releases both at once.
    pub async fn server_streaming<Req, Item, F, Fut>(
        self: &Arc<Self>,
        method: &'static str,
        request: Req,
        call: F,
    ) -> Result<LaneStream<Item>, DispatchError>
    where
        Req: Clone,
        Item: Send + 'static,
        F: Fn(LaneChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Item>>, Status>>,
    {
        let config = self.config.load_full();
        let ticket = self.check_circuit()?;
        let in_flight = self.admit(&config).await?;
        let started = Instant::now();
        let deadline = started + config.deadline;
        match self.with_retries(&config, deadline, request, &call).await {
            Ok((response, picked, _)) => Ok(LaneStream {
                inner: Box::pin(response.into_inner()),
                lane: self.name.clone(),
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                deadline_len: config.deadline,
                finished: false,
                handed_out_at: None,
                record: Some(StreamRecord {
                    lane: self.clone(),
                    metrics: self.metrics.clone(),
                    method,
                    started,
                    in_flight,
                    ticket,
                    picked,
                }),
            }),
            Err(e) => {
                self.adapt_to_failure(&e);
                let code = error_code(&e);
                ticket.record_outcome(is_compute_failure(code), code == Code::Unavailable);
                self.metrics
                    .request(method, code_name(code), started.elapsed().as_secs_f64());
                Err(e)
            }
        }
    }

    async fn with_retries<Req, Resp, F, Fut>(
        &self,
        config: &LaneConfig,
        deadline: Instant,
        request: Req,
        call: &F,
    ) -> Result<(tonic::Response<Resp>, Picked, Duration), DispatchError>
    where
        Req: Clone,
        F: Fn(LaneChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let budget = self.budget.load_full();
        budget.deposit();
        let mut attempt = 0;
        // Endpoints this call already failed on: a retry goes elsewhere while it can.
        let mut tried = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.deadline_exceeded(config));
            }
            let picked = self.upstream.pick(&tried).map_err(DispatchError::Status)?;
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(remaining);
            crate::trace_context::TraceContext::inject_current(req.metadata_mut());
            let sent = Instant::now();
            let outcome =
                tokio::time::timeout_at(deadline, call(picked.channel.clone(), req)).await;
            let status = match outcome {
                Err(_) => {
                    picked.record(Outcome::Failed);
                    return Err(self.deadline_exceeded(config));
                }
                Ok(Ok(response)) => return Ok((response, picked, sent.elapsed())),
                Ok(Err(status)) => transport_failure_is_unavailable(status),
            };
            // Compute enforces the grpc-timeout we sent: on a busy host its timer may fire
            // before ours and answer CANCELLED (tonic's server) or DEADLINE_EXCEEDED. That is
            // our deadline passing, a failure of the endpoint; counted as the client going
            // away (CANCELLED → no verdict), a hung replica would never be ejected.
            if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
                && deadline.saturating_duration_since(Instant::now()) <= SERVER_TIMER_SLACK
            {
                picked.record(Outcome::Failed);
                return Err(self.deadline_exceeded(config));
            }
            tried.push(picked.endpoint.clone());
            picked.record(Outcome::of(status.code()));
            if attempt >= config.retries
                || !worth_retrying(&status, self.upstream.has_untried(&tried))
                || !budget.withdraw()
            {
                return Err(DispatchError::Status(status));
            }
            attempt += 1;
            let backoff = backoff(config.retry_backoff, attempt);
            if Instant::now() + backoff >= deadline {
                return Err(DispatchError::Status(status));
            }
            tracing::debug!(
                lane = %self.name,
                attempt,
                ?backoff,
                "retrying a call that never reached compute"
            );
            tokio::time::sleep(backoff).await;
        }
    }

    fn deadline_exceeded(&self, config: &LaneConfig) -> DispatchError {
        self.metrics.rejected(rejected::DEADLINE).inc();
        DispatchError::Deadline {
            lane: self.name.clone(),
            deadline: config.deadline,
        }
    }
}

/// How close to our deadline a CANCELLED or DEADLINE_EXCEEDED answer counts as compute's
/// timer for that same deadline firing first.
const SERVER_TIMER_SLACK: Duration = Duration::from_millis(100);

/// How long a shed client should wait before trying again: at least a second (the header
/// has whole seconds), longer for a lane whose calls take longer.
fn retry_after(config: &LaneConfig) -> Duration {
    Duration::from_secs(1).max(config.queue_wait * 4)
}

/// `base · 2^(attempt-1)`, with ±50 % jitter, capped at 5 s.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << (attempt - 1).min(16));
    let jittered = exp.mul_f64(0.5 + fastrand::f64());
    jittered.min(Duration::from_secs(5))
}

/// Whether a failed attempt is retried. Only calls compute never processed are: one queued on a
/// connection that closed first (a fresh connection to the same endpoint may take it), and
/// — only when another endpoint is in rotation — a refused connect or a QUEUE_FULL answer
/// (compute's queue was full: not run). Against the same endpoint those fail again within a
/// backoff, so the client gets its 503 + Retry-After at once instead of 100–200 ms later.
fn worth_retrying(status: &Status, another_endpoint: bool) -> bool {
    if is_queue_full(status) || source_of::<tonic::ConnectError>(status).is_some() {
        return another_endpoint && never_reached_server_or_refused(status);
    }
    never_reached_server(status)
}

/// A connect failure or QUEUE_FULL: compute did not run the call.
fn never_reached_server_or_refused(status: &Status) -> bool {
    is_queue_full(status) || never_reached_server(status)
}

/// True when the call failed before any byte of it reached the server: the connection could
/// not be made, or the call was still queued on a connection that closed. Only then is a retry
/// safe for a non-idempotent call.
pub fn never_reached_server(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && (source_of::<tonic::ConnectError>(status).is_some()
            || source_of::<NotSent>(status).is_some())
}

/// tonic reports the transport's own failures with a hyper error as the source: a connection
/// that broke mid-call (compute killed, connection reset) as UNKNOWN, a call still queued on a
/// connection that closed as CANCELLED. Both are compute being unreachable, not an answer
/// from it: they become UNAVAILABLE here, once, so the lane metrics, the circuit, the balancer
/// and the HTTP answer (503 + Retry-After, not 502) all see the same code. The queued call
/// never left the BFF, so it is marked [`NotSent`] and may be retried on another endpoint.
fn transport_failure_is_unavailable(status: Status) -> Status {
    if refused_before_processing(&status) {
        let mut unsent = Status::unavailable(format!(
            "compute refused the call before processing it (HTTP/2 REFUSED_STREAM or GOAWAY): {}",
            status.message()
        ));
        unsent.set_source(Arc::new(NotSent));
        return unsent;
    }
    if matches!(status.code(), Code::Ok | Code::Unavailable) {
        return status;
    }
    let Some(transport) = source_of::<hyper::Error>(&status) else {
        return status;
    };
    if transport.is_canceled() {
        let mut unsent = Status::unavailable(format!(
            "the connection to the compute service closed before the call was sent: {}",
            status.message()
        ));
        unsent.set_source(Arc::new(NotSent));
        unsent
    } else {
        Status::unavailable(format!(
            "the connection to the compute service broke during the call: {}",
            status.message()
        ))
    }
}

/// HTTP/2 says the server did not process the stream: it reset it with REFUSED_STREAM, or its
/// GOAWAY named a last stream below this one (RFC 9113 §8.7). Such a call is safe to retry,
/// like one that never left the BFF.
fn refused_before_processing(status: &Status) -> bool {
    source_of::<h2::Error>(status).is_some_and(|e| {
        e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
    })
}

/// The first error of type `E` in the status's chain of sources.
fn source_of<E: std::error::Error + 'static>(status: &Status) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// Marks a call that never left the BFF: it was queued on a connection that closed first.
#[derive(Debug)]
struct NotSent;

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call was queued on a connection that closed before it was sent")
    }
}

impl std::error::Error for NotSent {}

/// Records a unary call dropped before its end as CANCELLED (see [`Lane::unary_within`]).
struct Unrecorded<'a> {
    metrics: &'a LaneMetrics,
    method: &'static str,
    started: Instant,
    armed: bool,
}

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.metrics.request(
                self.method,
                code_name(Code::Cancelled),
                self.started.elapsed().as_secs_f64(),
            );
        }
    }
}

struct StreamRecord {
    lane: Arc<Lane>,
    metrics: LaneMetrics,
    method: &'static str,
    started: Instant,
    in_flight: InFlight,
    ticket: Ticket,
    picked: Picked,
}

/// RESOURCE_EXHAUSTED with reason QUEUE_FULL: compute's queue was full, the call was not run.
fn is_queue_full(status: &Status) -> bool {
    status.code() == Code::ResourceExhausted
        && reason_of(status).as_deref() == Some(reason::QUEUE_FULL)
}

fn error_code(e: &DispatchError) -> Code {
    match e {
        DispatchError::Deadline { .. } => Code::DeadlineExceeded,
        DispatchError::Status(s) => s.code(),
        DispatchError::Saturated { .. } | DispatchError::CircuitOpen { .. } => Code::Unavailable,
    }
}

/// A server stream that holds its lane permit and enforces the lane deadline to its end.
///
/// The deadline measures compute, not the consumer: the time between handing out an item
/// and being asked for the next (the BFF storing a result in a slow S3, a client reading the
/// event stream slowly) is added to it, so a slow store or client is never judged as compute
/// failing (a deadline that would count against the circuit and the endpoint).
pub struct LaneStream<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>,
    lane: String,
    deadline: Pin<Box<Sleep>>,
    deadline_len: Duration,
    finished: bool,
    /// When the last item was handed out, until the consumer asks for the next one.
    handed_out_at: Option<Instant>,
    record: Option<StreamRecord>,
}

impl<T> LaneStream<T> {
    fn finish(&mut self, code: Code) {
        self.finished = true;
        if let Some(r) = self.record.take() {
            if code == Code::DeadlineExceeded {
                r.metrics.rejected(rejected::DEADLINE).inc();
                // A batch's items carry their own work times, but a stream is one permit for
                // many items (run in parallel by compute): only its overload signal is fed.
                r.lane.adapt(Signal::Deadline);
            }
            r.metrics
                .request(r.method, code_name(code), r.started.elapsed().as_secs_f64());
            if code == Code::Cancelled {
                drop(r.ticket); // the client went away: no verdict on compute
            } else {
                r.ticket
                    .record_outcome(is_compute_failure(code), code == Code::Unavailable);
            }
            r.picked.record(Outcome::of(code));
            drop(r.in_flight);
        }
    }
}

impl<T> Drop for LaneStream<T> {
    fn drop(&mut self) {
        // Dropped before its end: the client went away.
        self.finish(Code::Cancelled);
    }
}

impl<T> Stream for LaneStream<T> {
    type Item = Result<T, DispatchError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(handed_out) = this.handed_out_at.take() {
            let consumer_time = handed_out.elapsed();
            let extended = this.deadline.deadline() + consumer_time;
            this.deadline.as_mut().reset(extended);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let err = DispatchError::Deadline {
                lane: this.lane.clone(),
                deadline: this.deadline_len,
            };
            this.finish(Code::DeadlineExceeded);
            return Poll::Ready(Some(Err(err)));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => {
                this.handed_out_at = Some(Instant::now());
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Some(Err(status))) => {
                let status = transport_failure_is_unavailable(status);
                if let (true, Some(r)) = (is_queue_full(&status), &this.record) {
                    r.lane.adapt(Signal::QueueFull);
                }
                this.finish(status.code());
                Poll::Ready(Some(Err(DispatchError::Status(status))))
            }
            Poll::Ready(None) => {
                this.finish(Code::Ok);
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane_stream(items: Vec<(Duration, u32)>, deadline: Duration) -> LaneStream<u32> {
        // Each item arrives after its delay (compute's work), then the next one's starts.
        let inner = futures_util::stream::unfold(items.into_iter(), |mut items| async move {
            let (delay, item) = items.next()?;
            tokio::time::sleep(delay).await;
            Some((Ok(item), items))
        });
        LaneStream {
            inner: Box::pin(inner),
            lane: "heavy".into(),
            deadline: Box::pin(tokio::time::sleep(deadline)),
            deadline_len: deadline,
            finished: false,
            handed_out_at: None,
            record: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_does_not_use_up_the_streams_deadline() {
        use futures_util::StreamExt;
        let ms = Duration::from_millis;
        // Compute takes 3 × 300 ms; the consumer spends 2 s on each item (a slow store).
        let mut stream = lane_stream(vec![(ms(300), 1), (ms(300), 2), (ms(300), 3)], ms(1000));
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            got.push(item.expect("no deadline: compute took 900 ms of its 1 s"));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        assert_eq!(got, [1, 2, 3]);
        // Compute itself too slow: the deadline still ends it.
        let mut stream = lane_stream(vec![(ms(600), 1), (ms(600), 2)], ms(1000));
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert!(matches!(
            stream.next().await,
            Some(Err(DispatchError::Deadline { .. }))
        ));
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        for _ in 0..100 {
            let b1 = backoff(Duration::from_millis(100), 1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(150),
                "{b1:?}"
            );
            let b3 = backoff(Duration::from_millis(100), 3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(600),
                "{b3:?}"
            );
            assert!(backoff(Duration::from_secs(10), 10) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn a_stream_compute_refused_unprocessed_is_safe_to_retry() {
        // As tonic reports an h2 RST_STREAM(REFUSED_STREAM): UNAVAILABLE with the h2 error.
        let mut refused = Status::unavailable("h2 protocol error: stream refused");
        refused.set_source(Arc::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        let refused = transport_failure_is_unavailable(refused);
        assert!(never_reached_server(&refused), "{refused:?}");
        assert!(worth_retrying(&refused, false));
        // Another reset (the server was processing it) is not.
        let mut reset = Status::unknown("h2 protocol error: internal error");
        reset.set_source(Arc::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(!never_reached_server(&transport_failure_is_unavailable(
            reset
        )));
    }

    #[test]
    fn only_connect_failures_are_safe_to_retry() {
        assert!(!never_reached_server(&Status::unavailable(
            "server went away"
        )));
        assert!(!never_reached_server(&Status::internal("boom")));
        let mut s = Status::unavailable("connect failed");
        s.set_source(Arc::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert!(never_reached_server(&s));
        let mut queued = Status::unavailable("connection closed");
        queued.set_source(Arc::new(NotSent));
        assert!(never_reached_server(&queued));
    }

    #[test]
    fn refused_connects_and_queue_full_are_retried_only_on_another_endpoint() {
        let mut refused = Status::unavailable("connect failed");
        refused.set_source(Arc::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert!(worth_retrying(&refused, true));
        assert!(
            !worth_retrying(&refused, false),
            "the same endpoint refuses again within a backoff: fail fast"
        );
        let full = crate::vocab::errors::status(
            Code::ResourceExhausted,
            reason::QUEUE_FULL,
            "compute queue full",
        );
        assert!(
            worth_retrying(&full, true),
            "QUEUE_FULL: not run, try elsewhere"
        );
        assert!(!worth_retrying(&full, false));
        // A call queued on a connection that closed: a new connection may take it.
        let mut queued = Status::unavailable("connection closed");
        queued.set_source(Arc::new(NotSent));
        assert!(worth_retrying(&queued, false));
        // Compute saw it: never retried.
        assert!(!worth_retrying(&Status::internal("boom"), true));
        assert!(!worth_retrying(
            &Status::resource_exhausted("too large"),
            true
        ));
    }
}
