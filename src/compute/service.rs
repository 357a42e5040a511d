//! The gRPC services: ImageService (the image operations) and the contract's HealthService.
//!
//! Each handler validates the request's parameters (the proto's rules: 0 means the default,
//! out of range is INVALID_ARGUMENT, never clamped), reserves a place on the CPU pool (or fails
//! fast with QUEUE_FULL), runs the pure operation there, and records metrics.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::metrics::ComputeMetrics;
use super::ops::{
    self, Encoded, Limits, Mark, OpError, OutputFormat, Position, ResizeSpec, WatermarkSpec,
};
use super::pool::{CpuPool, PoolError, Slot};
use super::status::op_reason;
use crate::proto::{
    self, health_service_server::HealthService, image_service_server::ImageService, operation,
    BatchProcessRequest, CompressRequest, CompressResponse, HealthCheckRequest,
    HealthCheckResponse, ProcessChunk, ResizeRequest, ResizeResponse, ServingStatus,
    WatermarkRequest, WatermarkResponse,
};
use crate::vocab::errors::{bad_parameter, reason};

use crate::vocab::limits::{MAX_BOX_SIDE, MAX_FONT_SIZE, MAX_WATERMARK_TEXT_CHARS};

/// A hook run at the start of every call with the method name and the caller's address:
/// lets an operator (or a test) observe which connection a call came on, or hold it.
pub type CallHook =
    Arc<dyn Fn(&'static str, Option<SocketAddr>) -> BoxFuture<'static, ()> + Send + Sync>;

/// State shared by every service's handlers: the CPU pool, the limits, the metrics.
#[derive(Clone)]
pub struct Engine {
    /// The bounded CPU pool every operation runs on.
    pub pool: CpuPool,
    /// Image limits (pixels, AVIF speed).
    pub limits: Limits,
    /// FileService.Extract's limits.
    pub archive: crate::compute::files::ArchiveLimits,
    /// The `imagegate_compute_*` metrics.
    pub metrics: ComputeMetrics,
    /// Run at the start of every call, if set.
    pub hook: Option<CallHook>,
}

/// Validated operation, ready to run on the CPU pool.
#[derive(Debug, Clone)]
enum Job {
    Compress {
        quality: u8,
        out: OutputFormat,
    },
    Resize {
        spec: ResizeSpec,
        quality: u8,
        out: OutputFormat,
    },
    Watermark {
        text: Option<String>,
        overlay: Option<Bytes>,
        position: Position,
        opacity: f32,
        font_size: Option<u32>,
        quality: u8,
        out: OutputFormat,
    },
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::Compress { .. } => "compress",
            Job::Resize { .. } => "resize",
            Job::Watermark { .. } => "watermark",
        }
    }

    fn run(&self, data: &[u8], limits: &Limits) -> Result<Encoded, OpError> {
        match self {
            Job::Compress { quality, out } => ops::compress(data, *quality, *out, limits),
            Job::Resize { spec, quality, out } => ops::resize(data, *spec, *out, *quality, limits),
            Job::Watermark {
                text,
                overlay,
                position,
                opacity,
                font_size,
                quality,
                out,
            } => {
                let mark = match (text, overlay) {
                    (Some(text), _) => Mark::Text {
                        text,
                        font_size: *font_size,
                    },
                    (None, Some(logo)) => Mark::Overlay(logo),
                    (None, None) => return Err(OpError::BadParameter("no watermark given".into())),
                };
                let spec = WatermarkSpec {
                    mark,
                    position: *position,
                    opacity: *opacity,
                };
                ops::watermark(data, &spec, *out, *quality, limits)
            }
        }
    }
}

// ---- parameter validation: the proto's rules, in one place ----

fn quality(q: i32) -> Result<u8, Status> {
    match q {
        0 => Ok(80),
        1..=100 => Ok(q as u8),
        _ => Err(bad_parameter(format!(
            "quality {q} is out of range: expected 1-100 (0 means the default, 80)"
        ))),
    }
}

fn output_format(f: i32) -> Result<OutputFormat, Status> {
    match proto::ImageFormat::try_from(f) {
        Ok(proto::ImageFormat::Unspecified) => Ok(OutputFormat::Keep),
        Ok(proto::ImageFormat::Jpeg) => Ok(OutputFormat::Jpeg),
        Ok(proto::ImageFormat::Png) => Ok(OutputFormat::Png),
        Ok(proto::ImageFormat::Webp) => Ok(OutputFormat::WebP),
        Ok(proto::ImageFormat::Avif) => Ok(OutputFormat::Avif),
        Err(_) => Err(bad_parameter(format!(
            "output_format {f} is not a known ImageFormat"
        ))),
    }
}

fn position(p: i32) -> Result<Position, Status> {
    match proto::Position::try_from(p) {
        Ok(proto::Position::Unspecified | proto::Position::BottomRight) => {
            Ok(Position::BottomRight)
        }
        Ok(proto::Position::BottomLeft) => Ok(Position::BottomLeft),
        Ok(proto::Position::TopRight) => Ok(Position::TopRight),
        Ok(proto::Position::TopLeft) => Ok(Position::TopLeft),
        Ok(proto::Position::Center) => Ok(Position::Center),
        Err(_) => Err(bad_parameter(format!(
            "position {p} is not a known Position"
        ))),
    }
}

fn resize_job(width: i32, height: i32, keep: bool, out: i32, q: i32) -> Result<Job, Status> {
    if width < 0 || height < 0 {
        return Err(bad_parameter(format!(
            "resize box {width}x{height}: sizes must not be negative"
        )));
    }
    if width == 0 && height == 0 {
        return Err(bad_parameter(
            "resize box 0x0: give a width, a height, or both",
        ));
    }
    if !keep && (width == 0 || height == 0) {
        return Err(bad_parameter(format!(
            "resize box {width}x{height}: an exact resize (keep_aspect_ratio = false) needs both sides"
        )));
    }
    if width > MAX_BOX_SIDE || height > MAX_BOX_SIDE {
        return Err(bad_parameter(format!(
            "resize box {width}x{height} is above the limit of {MAX_BOX_SIDE} per side"
        )));
    }
    Ok(Job::Resize {
        spec: ResizeSpec {
            width: width as u32,
            height: height as u32,
            keep_aspect: keep,
        },
        quality: quality(q)?,
        out: output_format(out)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn watermark_job(
    text: String,
    overlay: Bytes,
    pos: i32,
    opacity: f32,
    font_size: i32,
    out: i32,
    q: i32,
) -> Result<Job, Status> {
    let has_text = !text.is_empty();
    let has_overlay = !overlay.is_empty();
    if has_text == has_overlay {
        return Err(bad_parameter(
            "give exactly one of text and overlay_image for a watermark",
        ));
    }
    if has_text && text.trim().is_empty() {
        return Err(bad_parameter("watermark text is only whitespace"));
    }
    if text.chars().count() > MAX_WATERMARK_TEXT_CHARS {
        return Err(bad_parameter(format!(
            "watermark text is longer than {MAX_WATERMARK_TEXT_CHARS} characters"
        )));
    }
    if !opacity.is_finite() || !(0.0..=1.0).contains(&opacity) {
        return Err(bad_parameter(format!(
            "opacity {opacity} is out of range: expected 0-1 (0 means the default, 0.5)"
        )));
    }
    if !(0..=MAX_FONT_SIZE).contains(&font_size) {
        return Err(bad_parameter(format!(
            "font_size {font_size} is out of range: expected 1-{MAX_FONT_SIZE} pixels (0 scales it to the image)"
        )));
    }
    Ok(Job::Watermark {
        text: has_text.then_some(text),
        overlay: has_overlay.then_some(overlay),
        position: position(pos)?,
        opacity: if opacity == 0.0 { 0.5 } else { opacity },
        font_size: (font_size > 0).then_some(font_size as u32),
        quality: quality(q)?,
        out: output_format(out)?,
    })
}

fn proto_format(f: ops::Format) -> proto::ImageFormat {
    match f {
        ops::Format::Jpeg => proto::ImageFormat::Jpeg,
        ops::Format::Png | ops::Format::Gif => proto::ImageFormat::Png,
        ops::Format::WebP => proto::ImageFormat::Webp,
        ops::Format::Avif => proto::ImageFormat::Avif,
    }
}

/// The caller's deadline from its `grpc-timeout` header, if any.
pub fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value).map(|d| Instant::now() + d)
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// One image's result plus how long its operation took.
struct Done {
    result: Result<Encoded, OpError>,
    elapsed: Duration,
    /// From submitting the job to the pool to its start: the wait for a CPU worker.
    queued: Duration,
}

/// The metrics `result` label of a job the pool did not run: the ErrorInfo reason clients see.
pub(super) fn pool_reason(e: &PoolError) -> &'static str {
    match e {
        PoolError::QueueFull(_) => reason::QUEUE_FULL,
        PoolError::DeadlineExceeded => reason::DEADLINE,
        PoolError::Closed => "SHUTTING_DOWN",
    }
}

impl Engine {
    pub(super) async fn before_call<T>(&self, method: &'static str, request: &Request<T>) {
        if let Some(hook) = &self.hook {
            hook(method, request.remote_addr()).await;
        }
    }

    /// Runs `job` on `data` in a reserved slot, recording metrics.
    async fn run_job(
        &self,
        slot: Slot,
        deadline: Option<Instant>,
        job: Job,
        data: Bytes,
    ) -> Result<Done, Status> {
        let started = StdInstant::now();
        let limits = self.limits;
        let name = job.name();
        let outcome = self
            .pool
            .run(slot, deadline, move || {
                let t = StdInstant::now();
                let queued = t.duration_since(started);
                let result = job.run(&data, &limits);
                Done {
                    result,
                    elapsed: t.elapsed(),
                    queued,
                }
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        match &outcome {
            Ok(Done { result: Ok(_), .. }) => self.metrics.record(name, "ok", seconds),
            Ok(Done { result: Err(e), .. }) => self.metrics.record(name, op_reason(e), seconds),
            Err(e) => self.metrics.record(name, pool_reason(e), seconds),
        }
        Ok(outcome?)
    }

    async fn unary(
        &self,
        deadline: Option<Instant>,
        job: Job,
        data: Bytes,
    ) -> Result<(Encoded, Duration, Duration), Status> {
        if data.is_empty() {
            self.metrics.record_untimed(job.name(), "BAD_PARAMETER");
            return Err(bad_parameter("image_data is empty"));
        }
        let slot = self.pool.try_reserve().inspect_err(|_| {
            self.metrics.record_untimed(job.name(), "QUEUE_FULL");
        })?;
        let done = self.run_job(slot, deadline, job, data).await?;
        Ok((done.result?, done.elapsed, done.queued))
    }
}

/// An answer carrying how long its job waited for a CPU worker
/// ([`crate::vocab::metadata::QUEUED_MICROS`]), which the BFF's adaptive limit judges
/// compute's queue by.
fn with_queue_time<T>(queued: Duration, answer: T) -> Response<T> {
    let mut response = Response::new(answer);
    response.metadata_mut().insert(
        crate::vocab::metadata::QUEUED_MICROS,
        crate::vocab::metadata::queued_value(queued),
    );
    response
}

/// The ImageService: compress, resize, watermark, batch.
#[derive(Clone)]
pub struct ImageServiceImpl(pub Arc<Engine>);

type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ProcessChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ImageService for ImageServiceImpl {
    async fn compress(
        &self,
        request: Request<CompressRequest>,
    ) -> Result<Response<CompressResponse>, Status> {
        self.0.before_call("Compress", &request).await;
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        let job = Job::Compress {
            quality: quality(r.quality)?,
            out: output_format(r.output_format)?,
        };
        let original = r.image_data.len() as i64;
        let (out, elapsed, queued) = self.0.unary(deadline, job, r.image_data).await?;
        let compressed = out.data.len() as i64;
        Ok(with_queue_time(
            queued,
            CompressResponse {
                original_size: original,
                compressed_size: compressed,
                compression_ratio: original as f32 / compressed.max(1) as f32,
                elapsed_ms: elapsed.as_millis() as i64,
                width: out.width as i32,
                height: out.height as i32,
                output_format: proto_format(out.format) as i32,
                image_data: out.data.into(),
            },
        ))
    }

    async fn resize(
        &self,
        request: Request<ResizeRequest>,
    ) -> Result<Response<ResizeResponse>, Status> {
        self.0.before_call("Resize", &request).await;
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        let job = resize_job(
            r.width,
            r.height,
            r.keep_aspect_ratio,
            r.output_format,
            r.quality,
        )?;
        let original = r.image_data.len() as i64;
        let (out, elapsed, queued) = self.0.unary(deadline, job, r.image_data).await?;
        Ok(with_queue_time(
            queued,
            ResizeResponse {
                width: out.width as i32,
                height: out.height as i32,
                elapsed_ms: elapsed.as_millis() as i64,
                original_size: original,
                output_size: out.data.len() as i64,
                image_data: out.data.into(),
            },
        ))
    }

    async fn watermark(
        &self,
        request: Request<WatermarkRequest>,
    ) -> Result<Response<WatermarkResponse>, Status> {
        self.0.before_call("Watermark", &request).await;
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        let job = watermark_job(
            r.text,
            r.overlay_image,
            r.position,
            r.opacity,
            r.font_size,
            r.output_format,
            r.quality,
        )?;
        let original = r.image_data.len() as i64;
        let (out, elapsed, queued) = self.0.unary(deadline, job, r.image_data).await?;
        Ok(with_queue_time(
            queued,
            WatermarkResponse {
                elapsed_ms: elapsed.as_millis() as i64,
                original_size: original,
                output_size: out.data.len() as i64,
                image_data: out.data.into(),
            },
        ))
    }

    type BatchProcessStream = ChunkStream;

    async fn batch_process(
        &self,
        request: Request<BatchProcessRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        self.0.before_call("BatchProcess", &request).await;
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        let job = match r.operation.and_then(|o| o.op) {
            Some(operation::Op::Compress(o)) => Job::Compress {
                quality: quality(o.quality)?,
                out: output_format(o.output_format)?,
            },
            Some(operation::Op::Resize(o)) => resize_job(
                o.width,
                o.height,
                o.keep_aspect_ratio,
                o.output_format,
                o.quality,
            )?,
            Some(operation::Op::Watermark(o)) => watermark_job(
                o.text,
                Bytes::new(),
                o.position,
                o.opacity,
                o.font_size,
                o.output_format,
                o.quality,
            )?,
            None => {
                return Err(bad_parameter(
                    "operation is missing: set compress, resize or watermark",
                ))
            }
        };
        if r.images.is_empty() {
            return Err(bad_parameter("images is empty: send at least one image"));
        }
        // Fail fast when the pool is already full; later images wait for their turn.
        let first_slot = self.0.pool.try_reserve().inspect_err(|_| {
            self.0.metrics.record_untimed("batch", "QUEUE_FULL");
        })?;
        let engine = self.0.clone();
        let parallel = engine.pool.workers().max(1);
        let (tx, rx) = mpsc::channel(parallel);
        tokio::spawn(async move {
            let started = StdInstant::now();
            let mut first_slot = Some(first_slot);
            let mut images = r.images.into_iter().enumerate();
            let mut running = FuturesUnordered::new();
            loop {
                // Keep up to `parallel` images on the pool; send each chunk when it is done.
                while running.len() < parallel {
                    let Some((index, data)) = images.next() else {
                        break;
                    };
                    let slot = match first_slot.take() {
                        Some(s) => s,
                        None => match engine.pool.reserve().await {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        },
                    };
                    let engine = engine.clone();
                    let job = job.clone();
                    running.push(async move {
                        let original = data.len() as i64;
                        let chunk = if data.is_empty() {
                            failed_chunk(index, original, "image is empty".into())
                        } else {
                            match engine.run_job(slot, deadline, job, data).await {
                                Ok(Done {
                                    result: Ok(out),
                                    elapsed,
                                    ..
                                }) => ProcessChunk {
                                    index: index as i32,
                                    success: true,
                                    original_size: original,
                                    output_size: out.data.len() as i64,
                                    elapsed_ms: elapsed.as_millis() as i64,
                                    image_data: out.data.into(),
                                    error: String::new(),
                                },
                                Ok(Done { result: Err(e), .. }) => {
                                    failed_chunk(index, original, format!("{}: {e}", op_reason(&e)))
                                }
                                Err(status) => {
                                    failed_chunk(index, original, status.message().to_string())
                                }
                            }
                        };
                        chunk
                    });
                }
                let Some(chunk) = running.next().await else {
                    break;
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return; // the client went away: stop starting new images
                }
            }
            engine
                .metrics
                .record("batch", "ok", started.elapsed().as_secs_f64());
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn failed_chunk(index: usize, original: i64, error: String) -> ProcessChunk {
    ProcessChunk {
        index: index as i32,
        success: false,
        original_size: original,
        error,
        ..Default::default()
    }
}

/// The contract's HealthService: SERVING while the server accepts work.
#[derive(Clone)]
pub struct HealthServiceImpl {
    /// Shared state (its metrics and call hook).
    pub engine: Arc<Engine>,
    /// True until shutdown begins; then checks answer NOT_SERVING.
    pub serving: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl HealthService for HealthServiceImpl {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.engine.before_call("Check", &request).await;
        let serving = self.serving.load(std::sync::atomic::Ordering::Relaxed);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.engine.metrics.record_untimed("health", "ok");
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parses_every_unit() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
    }

    #[test]
    fn quality_zero_is_the_default_and_out_of_range_is_refused() {
        assert_eq!(quality(0).unwrap(), 80);
        assert_eq!(quality(100).unwrap(), 100);
        assert!(quality(101).is_err());
        assert!(quality(-1).is_err());
    }

    #[test]
    fn watermark_needs_exactly_one_mark() {
        let none = watermark_job(String::new(), Bytes::new(), 0, 0.0, 0, 0, 0);
        assert!(none.is_err());
        let both = watermark_job("x".into(), Bytes::from_static(b"png"), 0, 0.0, 0, 0, 0);
        assert!(both.is_err());
        assert!(watermark_job("x".into(), Bytes::new(), 0, 1.5, 0, 0, 0).is_err());
        assert!(watermark_job("x".into(), Bytes::new(), 0, f32::NAN, 0, 0, 0).is_err());
        assert!(watermark_job("x".into(), Bytes::new(), 9, 0.0, 0, 0, 0).is_err());
    }

    #[test]
    fn resize_boxes_are_checked() {
        assert!(resize_job(0, 0, true, 0, 0).is_err());
        assert!(resize_job(-1, 10, true, 0, 0).is_err());
        assert!(resize_job(16385, 10, true, 0, 0).is_err());
        assert!(resize_job(10, 0, false, 0, 0).is_err());
        assert!(resize_job(200, 0, true, 0, 0).is_ok());
    }
}
