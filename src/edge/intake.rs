//! Streaming multipart intake with limits.
//!
//! Parts are read as they arrive; every limit (request size, file size, number of files and
//! fields, field size) and the image type (sniffed from the first bytes, never taken from the
//! client's Content-Type) are checked while streaming, so a bad upload is refused before the
//! rest of it is read. After refusing, the rest of the body is read and dropped up to a cap,
//! so the client sees the answer instead of a connection reset.
//!
//! A body that arrives faster than it is read takes turns with the worker's other connections
//! ([`TURN_BYTES`]), so a fast upload cannot hold a `/health` on the same worker waiting.
//!
//! A body that stops arriving (no byte for `bff.body_read_timeout`) is answered 408 at once
//! and not drained; a client that disconnects mid-body ends the read with an error. Either way
//! the handler returns and everything buffered is dropped with it. No lane permit is held
//! here: handlers ask the dispatcher for one only after the whole form has been read, so a
//! slow client costs a connection and its buffer, never a slot of the bulkhead.
//!
//! Buffers are bounded across requests too: every chunk read is taken from one
//! [`BodyBudget`] (`bff.max_buffered_bytes`) and given back when the request's form is
//! dropped; an allowance for the parsers' and the connection's own buffers is held with it
//! ([`PARSER_BUFFERS`]). A refused upload is drained, then its connection closed, so that
//! those buffers do not outlive it in an idle keep-alive connection. Files are read into one
//! buffer sized from `Content-Length`, and that buffer is what goes to compute (no copy on the
//! way: `dispatch::clients::zero_copy`), so the budget counts what is resident. A request that
//! finds the budget spent is answered 503 + `Retry-After` at once (its body drained, not
//! kept): many concurrent uploads cost waiting clients, not memory.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_multipart::Multipart;
use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::problem::Problem;
use crate::config::BffConfig;
use crate::vocab::media::{self, Format};

/// The intake limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single file part, in bytes (413 past it).
    pub max_file: usize,
    /// Largest whole body, in bytes (413).
    pub max_request: usize,
    /// Most file parts (413).
    pub max_files: usize,
    /// Largest text field, in bytes (413).
    pub max_field: usize,
    /// Most text fields, unknown ones included (413).
    pub max_fields: usize,
    /// Longest wait for the next chunk of the body (408 after it).
    pub body_read_timeout: Duration,
    /// Request bodies held in memory at once, across all requests (503 past it).
    pub max_buffered: usize,
}

impl Limits {
    /// The limits in `c` (`bff.max_*`, `bff.body_read_timeout`).
    pub fn from_config(c: &BffConfig) -> Self {
        Limits {
            max_file: c.max_file_size.as_usize(),
            max_request: c.max_request_size.as_usize(),
            max_files: c.max_files,
            max_field: c.max_field_size.as_usize(),
            max_fields: c.max_fields,
            body_read_timeout: c.body_read_timeout,
            max_buffered: c.max_buffered_bytes.as_usize(),
        }
    }
}

/// What a route accepts.
pub struct FormSpec {
    /// Part names that carry an image (`file`, `overlay`).
    pub file_fields: &'static [&'static str],
    /// Part names that carry text parameters.
    pub text_fields: &'static [&'static str],
    /// Whether `file` may repeat (batch). A batch judges each file on its own, so an
    /// unsupported type there is not an error of the whole request.
    pub many_files: bool,
}

/// An uploaded image, its type sniffed from its bytes.
#[derive(Debug)]
pub struct FilePart {
    /// The multipart part's name (`file`, `overlay`).
    pub field: String,
    /// The file's bytes.
    pub data: Bytes,
    /// `None` only in a batch, for a file of no supported type (compute fails its event).
    pub format: Option<Format>,
}

/// A parsed form.
#[derive(Debug, Default)]
pub struct Form {
    /// File parts, in the order received.
    pub files: Vec<FilePart>,
    /// Text fields by name.
    pub fields: HashMap<String, String>,
    /// This form's share of the BFF's body budget, given back when the form is dropped (the
    /// handler keeps it until its answer is sent).
    pub budget: Option<BudgetHold>,
    /// Which output types the client's `Accept` header takes (for `format=auto`).
    pub accept: AcceptedImages,
}

/// The image types a request's `Accept` header names with a non-zero quality. Only explicit
/// types count: `*/*` and `image/*` do not promise AVIF or WebP support (browsers that decode
/// them say so by name).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedImages {
    /// `image/avif` is accepted.
    pub avif: bool,
    /// `image/webp` is accepted.
    pub webp: bool,
}

impl AcceptedImages {
    /// Reads the `Accept` headers of a request (types with `q=0` do not count).
    pub fn from_headers(headers: &actix_web::http::header::HeaderMap) -> Self {
        let mut accepted = AcceptedImages::default();
        for value in headers.get_all(actix_web::http::header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                if refused {
                    continue;
                }
                match media.as_str() {
                    "image/avif" => accepted.avif = true,
                    "image/webp" => accepted.webp = true,
                    _ => {}
                }
            }
        }
        accepted
    }
}

impl Form {
    /// A text field, trimmed; `None` if absent or empty.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// The first file part named `field`.
    pub fn file(&self, field: &str) -> Option<&FilePart> {
        self.files.iter().find(|f| f.field == field)
    }
}

/// Bytes of request bodies held in memory by all requests of one BFF.
#[derive(Debug, Default)]
pub struct BodyBudget {
    in_use: AtomicUsize,
    /// The limit of the last request that took from the budget (`bff.max_buffered_bytes`,
    /// which a reload may change): what "near the limit" means when bodies are freed.
    limit: AtomicUsize,
    /// `imagegate_http_buffered_body_bytes`, kept equal to `in_use`.
    gauge: Option<prometheus::IntGauge>,
}

impl BodyBudget {
    /// A budget whose use is published on `registry`.
    pub fn new(registry: &prometheus::Registry) -> Self {
        let gauge = crate::metrics::register(
            registry,
            prometheus::IntGauge::new(
                "imagegate_http_buffered_body_bytes",
                "Request body bytes held in memory now, across all requests (limit: bff.max_buffered_bytes).",
            )
            .expect("valid metric"),
        );
        BodyBudget {
            in_use: AtomicUsize::new(0),
            limit: AtomicUsize::new(0),
            gauge: Some(gauge),
        }
    }

    fn publish(&self, in_use: usize) {
        if let Some(g) = &self.gauge {
            g.set(in_use as i64);
        }
    }

    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if that keeps the total within `limit`.
    fn try_take(&self, n: usize, limit: usize) -> bool {
        self.limit.store(limit, Ordering::Relaxed);
        match self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= limit)
            }) {
            Ok(before) => {
                self.publish(before + n);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, n: usize) {
        let before = self.in_use.fetch_sub(n, Ordering::AcqRel);
        self.publish(before - n);
        self.freed(n, before);
    }

    /// `n` bytes of body buffers were freed while `in_use` bytes were held. Near the limit
    /// (half of it or more), malloc is asked to return the freed pages, so that resident
    /// memory follows the budget down after a burst. Far from it, the pages are left for reuse:
    /// trimming after every large upload costs the next one its page faults (+30 % BFF CPU per
    /// 2 MB answer in `make bench-edge`).
    fn freed(&self, n: usize, in_use: usize) {
        if in_use >= self.limit.load(Ordering::Relaxed) / 2 {
            crate::heap_trim::released(n);
        }
    }
}

/// What one request has taken from the [`BodyBudget`]; given back on drop.
#[derive(Debug)]
pub struct BudgetHold {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BudgetHold {
    fn new(budget: Arc<BodyBudget>) -> Self {
        BudgetHold { budget, bytes: 0 }
    }

    /// Holds `n` more bytes for this request (what it unpacked, such as an archive's entries),
    /// or answers the 503 the intake gives when the budget is spent.
    pub fn grow(&mut self, n: usize, limits: &Limits) -> Result<(), Problem> {
        if !self.budget.try_take(n, limits.max_buffered) {
            return Err(over_budget(limits));
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The request body, shared between the multipart parser and the drain, counted and timed.
#[derive(Clone)]
struct CountedBody {
    payload: Rc<RefCell<web::Payload>>,
    read: Rc<RefCell<usize>>,
    max: usize,
    idle: Rc<RefCell<IdleTimer>>,
    /// Taken from the BFF's budget for the chunks handed to the parser (`None` once moved
    /// into the finished form).
    hold: Rc<RefCell<Option<BudgetHold>>>,
    max_buffered: usize,
    over_budget: Rc<RefCell<bool>>,
    /// Still to take with the first chunk: the request's allowance for parser buffers.
    allowance_due: Rc<Cell<usize>>,
}

/// What reading one body holds besides its own bytes: actix's read buffer (it fills up to
/// 128 KiB per poll and grows by doubling, and keeps its size for the connection's life), its
/// payload queue (32 KiB), the multipart parser's buffer, the chunks on their way between
/// them. Measured with heaptrack: ~0.5 MiB per connection that carried an upload
/// (docs/benchmarks-edge.md). It is taken from the body budget with the first chunk and held
/// until the request ends (at most the declared body: a small upload cannot buffer more than
/// itself), so that `bff.max_buffered_bytes` bounds what is really resident.
const PARSER_BUFFERS: usize = 512 * 1024;

/// How much of a body a handler reads before it gives its actix worker back for a moment.
///
/// A body that arrives faster than the worker reads it (a client on the same LAN, or an ingress
/// that buffers whole requests and then forwards each at once, as ingress-nginx does by default)
/// is otherwise read in one go: actix's HTTP/1 dispatcher wakes itself at once while its
/// 128 KiB read buffer is full and the handler keeps taking chunks, and tokio's `LocalSet`
/// polls a task up to 61 times before it lets the I/O driver look at other sockets. That is
/// ~8 MB: while one upload was read, every other connection of that worker, `/health`
/// included, waited up to 43 ms (docs/benchmarks-hol.md). 256 KiB is a few hundred
/// microseconds of intake work; a turn costs one spawned task (8 for a 2 MB upload).
const TURN_BYTES: usize = 256 * 1024;

/// Counts what a handler has read since its last yield, and yields every [`TURN_BYTES`].
#[derive(Default)]
struct WorkerTurn {
    read: usize,
}

impl WorkerTurn {
    /// `n` more bytes were read; past [`TURN_BYTES`], waits until the worker has looked at
    /// its other sockets.
    ///
    /// `tokio::task::yield_now` defers its wake-up until the runtime has polled its I/O
    /// driver, but awaited here it is swallowed: the dispatcher has already woken this task
    /// again in the same poll (its read buffer is full), and a yield that is polled a second
    /// time is over. So a task of its own yields, and this handler waits for that task to
    /// end, which is after the driver ran and after the tasks it woke were queued. Meanwhile
    /// the handler takes no chunk, actix's payload fills, and the dispatcher stops waking
    /// itself.
    async fn took(&mut self, n: usize) {
        self.read += n;
        if self.read >= TURN_BYTES {
            self.read = 0;
            let _ = tokio::spawn(tokio::task::yield_now()).await;
        }
    }
}

/// Fires when no chunk has arrived for `limit`. The timer is re-armed lazily, from the time
/// of the last chunk, only when it fires or when the body is waited on: a fast upload's
/// thousands of chunks cost an `Instant::now()` each, not a timer reset each.
struct IdleTimer {
    limit: Duration,
    last_chunk: tokio::time::Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        IdleTimer {
            limit,
            last_chunk: now,
            sleep: Box::pin(tokio::time::sleep_until(now + limit)),
            expired: false,
        }
    }

    /// Ready once `limit` has passed since the last chunk; registers a wake-up otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.expired {
            let deadline = self.last_chunk + self.limit;
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if std::future::Future::poll(self.sleep.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            self.expired = true;
        }
        Poll::Ready(())
    }
}

fn body_timed_out() -> PayloadError {
    PayloadError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the request body stopped arriving",
    ))
}

impl Stream for CountedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = this.poll_chunk(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            let mut read = this.read.borrow_mut();
            *read += chunk.len();
            if *read > this.max {
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
            if !this.take_budget(chunk.len()) {
                *this.over_budget.borrow_mut() = true;
                return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(
                    "the BFF's memory budget for request bodies is spent",
                )))));
            }
        }
        polled
    }
}

impl CountedBody {
    fn new(
        payload: web::Payload,
        limits: &Limits,
        budget: &Arc<BodyBudget>,
        declared: Option<u64>,
    ) -> Self {
        let allowance = declared
            .map_or(usize::MAX, |d| usize::try_from(d).unwrap_or(usize::MAX))
            .min(limits.max_request)
            .min(PARSER_BUFFERS);
        CountedBody {
            payload: Rc::new(RefCell::new(payload)),
            read: Rc::new(RefCell::new(0)),
            max: limits.max_request,
            idle: Rc::new(RefCell::new(IdleTimer::new(limits.body_read_timeout))),
            hold: Rc::new(RefCell::new(Some(BudgetHold::new(budget.clone())))),
            max_buffered: limits.max_buffered,
            over_budget: Rc::new(RefCell::new(false)),
            allowance_due: Rc::new(Cell::new(allowance)),
        }
    }

    /// Takes `n` bytes from the budget for this request; false if it is spent.
    /// The first chunk also takes the request's allowance for parser buffers.
    fn take_budget(&self, n: usize) -> bool {
        let mut hold = self.hold.borrow_mut();
        let Some(hold) = hold.as_mut() else {
            return true;
        };
        let allowance = self.allowance_due.get();
        if !hold.budget.try_take(n + allowance, self.max_buffered) {
            return false;
        }
        hold.bytes += n + allowance;
        self.allowance_due.set(0);
        true
    }

    fn over_budget(&self) -> bool {
        *self.over_budget.borrow()
    }

    /// The next chunk of the body, or a timeout error once it has been idle too long.
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, PayloadError>>> {
        poll_timed(
            &mut self.payload.borrow_mut(),
            &mut self.idle.borrow_mut(),
            cx,
        )
    }

    fn over_limit(&self) -> bool {
        *self.read.borrow() > self.max
    }

    fn timed_out(&self) -> bool {
        self.idle.borrow().expired
    }

    /// Reads and drops what is left of the body, up to `cap` more bytes (uncounted: the
    /// request is refused). Through the idle timer: a client that stalls after its refusal
    /// must not keep this handler waiting forever.
    async fn drain(&self, cap: usize) {
        drain_chunks(futures_util::stream::poll_fn(|cx| self.poll_chunk(cx)), cap).await;
    }
}

/// The next chunk of `payload`, or a timeout error once `idle`'s limit has passed since the
/// last one.
fn poll_timed(
    payload: &mut web::Payload,
    idle: &mut IdleTimer,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, PayloadError>>> {
    if idle.expired {
        return Poll::Ready(Some(Err(body_timed_out())));
    }
    match Pin::new(payload).poll_next(cx) {
        Poll::Ready(Some(Ok(chunk))) => {
            idle.last_chunk = tokio::time::Instant::now();
            Poll::Ready(Some(Ok(chunk)))
        }
        Poll::Pending => match idle.poll_expired(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(body_timed_out()))),
            Poll::Pending => Poll::Pending,
        },
        done => done,
    }
}

/// Reads and drops `chunks` until they end, fail (a broken body, a stall) or pass `cap` bytes
/// (not worth reading further: actix closes a connection whose body is unfinished), taking
/// worker turns as a body being read does.
async fn drain_chunks(chunks: impl Stream<Item = Result<Bytes, PayloadError>>, cap: usize) {
    let mut chunks = std::pin::pin!(chunks);
    let mut drained = 0usize;
    let mut turn = WorkerTurn::default();
    while let Some(Ok(chunk)) = chunks.next().await {
        drained += chunk.len();
        if drained > cap {
            return;
        }
        turn.took(chunk.len()).await;
    }
}

fn body_timeout(limits: &Limits) -> Problem {
    Problem::body_timeout(format!(
        "no part of the request body arrived for {:?}; the request was abandoned",
        limits.body_read_timeout
    ))
}

fn over_budget(limits: &Limits) -> Problem {
    Problem::unavailable(
        "bff-busy",
        format!(
            "the BFF is holding its limit of {} bytes of request bodies; retry shortly",
            limits.max_buffered
        ),
        Duration::from_secs(1),
    )
}

fn too_large_request(limits: &Limits) -> Problem {
    Problem::too_large(format!(
        "the request body is above the limit of {} bytes",
        limits.max_request
    ))
}

/// Answers `problem` for a request whose body is not wanted (its call would be shed): the
/// body is read and dropped first, up to `max_request` and within `body_read_timeout` per
/// chunk, so that the client reads the answer, not a reset, and the connection stays usable.
/// Nothing is parsed, buffered or taken from the budget.
pub async fn refuse_unread(
    mut payload: web::Payload,
    limits: &Limits,
    problem: Problem,
) -> Problem {
    let mut idle = IdleTimer::new(limits.body_read_timeout);
    let chunks = futures_util::stream::poll_fn(|cx| poll_timed(&mut payload, &mut idle, cx));
    drain_chunks(chunks, limits.max_request).await;
    problem
}

/// The body length the request declares (`Content-Length`), if any.
pub fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a multipart form per `spec` and `limits`.
pub async fn read_form(
    req: &HttpRequest,
    payload: web::Payload,
    limits: Limits,
    budget: &Arc<BodyBudget>,
    spec: &FormSpec,
) -> Result<Form, Problem> {
    // A declared length above the limit is refused before reading a byte.
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > limits.max_request as u64) {
        return Err(too_large_request(&limits));
    }
    let body = CountedBody::new(payload, &limits, budget, declared);
    let mut multipart = Multipart::new(req.headers(), body.clone());
    let result = read_parts(&mut multipart, &body, limits, spec, declared).await;
    drop(multipart);
    // The parser's buffers and the chunks it consumed are freed now.
    budget.freed(*body.read.borrow(), budget.in_use());
    if body.timed_out() {
        // Whatever went wrong first, a stalled body is the answer; and draining a body that
        // does not come would only wait again. Actix closes the connection after the 408.
        return Err(body_timeout(&limits));
    }
    match result {
        Ok(mut form) => {
            form.accept = AcceptedImages::from_headers(req.headers());
            // The buffers now belong to the form: so does their share of the budget, the
            // parsers' allowance included. The multipart parser is gone, but actix keeps the
            // connection's read buffer as large as this body made it while the request lives.
            form.budget = body.hold.borrow_mut().take();
            Ok(form)
        }
        Err(problem) => {
            // Nothing read so far is kept: give it back before draining the rest.
            drop(body.hold.borrow_mut().take());
            body.drain(limits.max_request).await;
            // Drained, so the client reads the answer; closed, so the buffers this body grew
            // are freed instead of idling in a keep-alive connection outside the budget.
            Err(problem.closing_connection())
        }
    }
}

async fn read_parts(
    multipart: &mut Multipart,
    body: &CountedBody,
    limits: Limits,
    spec: &FormSpec,
    declared: Option<u64>,
) -> Result<Form, Problem> {
    let malformed = |e: actix_multipart::MultipartError| {
        if body.timed_out() {
            body_timeout(&limits)
        } else if body.over_budget() {
            over_budget(&limits)
        } else if body.over_limit() {
            too_large_request(&limits)
        } else {
            Problem::bad_request(format!("malformed multipart/form-data body: {e}"))
        }
    };
    let mut form = Form::default();
    let mut ignored = 0;
    let mut turn = WorkerTurn::default();
    while let Some(mut field) = multipart.try_next().await.map_err(malformed)? {
        let name = field
            .name()
            .ok_or_else(|| Problem::bad_request("a multipart part has no name"))?
            .to_string();
        if spec.file_fields.contains(&name.as_str()) {
            let count = form.files.iter().filter(|f| f.field == name).count();
            if count > 0 && !(spec.many_files && name == "file") {
                return Err(Problem::bad_request(format!(
                    "field `{name}` is given more than once"
                )));
            }
            if form.files.len() >= limits.max_files {
                return Err(Problem::too_large(format!(
                    "more than {} files in one request",
                    limits.max_files
                )));
            }
            // Sized once from the declared body (what earlier files took is not this one's): a
            // buffer that doubles as it fills touches up to 3x the file in fresh pages, and
            // the pages never written are never resident.
            let files_so_far: usize = form.files.iter().map(|f| f.data.len()).sum();
            let room = declared.map_or(0, |d| {
                usize::try_from(d)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(files_so_far)
                    .min(limits.max_file)
            });
            let mut data = BytesMut::with_capacity(room);
            let mut format = None;
            while let Some(chunk) = field.try_next().await.map_err(malformed)? {
                if data.len() + chunk.len() > limits.max_file {
                    return Err(Problem::too_large(format!(
                        "file `{name}` (part {}) is above the limit of {} bytes",
                        form.files.len() + 1,
                        limits.max_file
                    )));
                }
                data.extend_from_slice(&chunk);
                if format.is_none() && data.len() >= 16 {
                    format = Some(sniff(&data, &name, spec.many_files)?);
                }
                turn.took(chunk.len()).await;
            }
            if data.is_empty() {
                return Err(Problem::bad_request(format!("file `{name}` is empty")));
            }
            let format = match format {
                Some(f) => f,
                None => sniff(&data, &name, spec.many_files)?,
            };
            form.files.push(FilePart {
                field: name,
                data: data.freeze(),
                format,
            });
        } else if spec.text_fields.contains(&name.as_str()) {
            if form.fields.contains_key(&name) {
                return Err(Problem::bad_request(format!(
                    "field `{name}` is given more than once"
                )));
            }
            if form.fields.len() >= limits.max_fields {
                return Err(Problem::too_large(format!(
                    "more than {} text fields in one request",
                    limits.max_fields
                )));
            }
            let mut value = BytesMut::new();
            while let Some(chunk) = field.try_next().await.map_err(malformed)? {
                if value.len() + chunk.len() > limits.max_field {
                    return Err(Problem::too_large(format!(
                        "field `{name}` is above the limit of {} bytes",
                        limits.max_field
                    )));
                }
                value.extend_from_slice(&chunk);
            }
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| Problem::bad_request(format!("field `{name}` is not valid UTF-8")))?;
            form.fields.insert(name, value);
        } else {
            // A field this endpoint does not know (browser upload libraries add their own,
            // such as Uppy's `name` and `type`): read and dropped. It still counts against the
            // field limit, and its bytes against the request's, so it cannot be a way around them.
            ignored += 1;
            if form.fields.len() + ignored > limits.max_fields {
                return Err(Problem::too_large(format!(
                    "more than {} text fields in one request",
                    limits.max_fields
                )));
            }
            while let Some(chunk) = field.try_next().await.map_err(malformed)? {
                turn.took(chunk.len()).await;
            }
        }
    }
    // Drain any epilogue so the connection stays usable.
    while let Some(chunk) = body.clone().next().await {
        match chunk {
            Ok(chunk) => turn.took(chunk.len()).await,
            Err(_) => break,
        }
    }
    Ok(form)
}

/// The file's type from its bytes; unknown is refused (415) unless `lenient` (batch).
fn sniff(data: &[u8], field: &str, lenient: bool) -> Result<Option<Format>, Problem> {
    match media::sniff_readable(data) {
        Some(f) => Ok(Some(f)),
        None if lenient => Ok(None),
        None => Err(unsupported(field)),
    }
}

fn unsupported(field: &str) -> Problem {
    Problem::unsupported_type(format!(
        "file `{field}` is not a supported image type (JPEG, PNG, WebP or GIF, judged by its bytes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A body read at full speed, by a task woken again within each of its polls (as actix's
    /// dispatcher wakes itself while its read buffer is full), still lets a connection whose
    /// socket just became readable run within a turn or two, not after the whole body.
    #[test]
    fn a_fast_body_lets_a_ready_connection_in_between_its_turns() {
        const CHUNK: usize = 64 * 1024;
        const TURNS: usize = 100;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let read_when_other_ran = local.block_on(&runtime, async {
            let (mut client, mut server) = tokio::net::UnixStream::pair().unwrap();
            let read = Rc::new(Cell::new(0usize));
            // The other connection: waiting on its socket, as a keep-alive `/health` does.
            let seen = read.clone();
            let other = tokio::task::spawn_local(async move {
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).await.unwrap();
                seen.get()
            });
            tokio::task::yield_now().await; // `other` is now registered with the driver
            let progress = read.clone();
            let reader = tokio::task::spawn_local(async move {
                client.write_all(b"x").await.unwrap();
                let mut turn = WorkerTurn::default();
                let mut body = Box::pin(async move {
                    for _ in 0..TURNS * TURN_BYTES / CHUNK {
                        progress.set(progress.get() + CHUNK);
                        turn.took(CHUNK).await;
                    }
                });
                futures_util::future::poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    std::future::Future::poll(body.as_mut(), cx)
                })
                .await;
            });
            reader.await.unwrap();
            other.await.unwrap()
        });
        assert!(
            read_when_other_ran <= 2 * TURN_BYTES,
            "the other connection ran only after {read_when_other_ran} bytes of the body"
        );
    }
}
