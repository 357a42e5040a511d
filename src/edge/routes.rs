//! The HTTP routes of CONTRACT §2: image endpoints (multipart in, image out), batch as
//! server-sent events, health and metrics.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::json;

use super::intake::{declared_length, read_form, refuse_unread, FormSpec};
use super::params;
use super::problem::Problem;
use super::resource::{get, limits, post, required_file, vary_accept};
use super::AppState;
use crate::dispatch::lane::LaneStream;
use crate::dispatch::{self, Dispatcher};
use crate::proto::{BatchProcessRequest, Operation, ProcessChunk, ServingStatus};
use crate::vocab::media::Format;

/// Mounts the API: the image operations, batch, health checks and uploads.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/v1/images/compress", compress))
        .service(post("/v1/images/resize", resize))
        .service(post("/v1/images/watermark", watermark))
        .service(post("/v1/images/batch", batch))
        .service(get("/health", health))
        .service(get("/health/live", live))
        .service(get("/health/ready", ready))
        .configure(super::uploads::configure);
}

/// `/metrics` and `/admin/reload`: on the main listener by default, or alone on
/// `bff.admin_listen`.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/metrics", metrics))
        .service(post("/admin/reload", reload));
}

fn content_type(data: &[u8]) -> &'static str {
    Format::sniff(data).map_or("application/octet-stream", Format::content_type)
}

fn image_response(
    form: &super::intake::Form,
    data: Bytes,
    original: i64,
    elapsed_ms: i64,
) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::Ok();
    vary_accept(&mut r, form);
    r.insert_header((header::CONTENT_TYPE, content_type(&data)))
        .insert_header(("X-Original-Size", original.to_string()))
        .insert_header(("X-Output-Size", data.len().to_string()))
        .insert_header(("X-Elapsed-Ms", elapsed_ms.to_string()));
    r
}

const SINGLE: FormSpec = FormSpec {
    file_fields: &["file"],
    text_fields: &[],
    many_files: false,
};

async fn compress(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let spec = FormSpec {
        text_fields: params::COMPRESS_FIELDS,
        ..SINGLE
    };
    let payload = shed_early(&req, &state, dispatch::COMPRESS, payload).await?;
    let form = read_form(&req, payload, limits(&state), &state.body_budget, &spec).await?;
    let request = params::compress_request(&form, required_file(&form)?)?;
    let r = state.dispatcher.compress(request).await?;
    let ratio = r.compression_ratio;
    Ok(
        image_response(&form, r.image_data.clone(), r.original_size, r.elapsed_ms)
            .insert_header(("X-Compression-Ratio", format!("{ratio:.3}")))
            .insert_header(("X-Image-Width", r.width.to_string()))
            .insert_header(("X-Image-Height", r.height.to_string()))
            .body(r.image_data),
    )
}

async fn resize(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let spec = FormSpec {
        text_fields: params::RESIZE_FIELDS,
        ..SINGLE
    };
    let payload = shed_early(&req, &state, dispatch::RESIZE, payload).await?;
    let form = read_form(&req, payload, limits(&state), &state.body_budget, &spec).await?;
    let request = params::resize_request(&form, required_file(&form)?)?;
    let r = state.dispatcher.resize(request).await?;
    Ok(
        image_response(&form, r.image_data.clone(), r.original_size, r.elapsed_ms)
            .insert_header(("X-Image-Width", r.width.to_string()))
            .insert_header(("X-Image-Height", r.height.to_string()))
            .insert_header(("X-Compression-Ratio", ratio(r.original_size, r.output_size)))
            .body(r.image_data),
    )
}

async fn watermark(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let spec = FormSpec {
        file_fields: &["file", "overlay"],
        text_fields: params::WATERMARK_FIELDS,
        many_files: false,
    };
    let payload = shed_early(&req, &state, dispatch::WATERMARK, payload).await?;
    let form = read_form(&req, payload, limits(&state), &state.body_budget, &spec).await?;
    let request = params::watermark_request(&form, required_file(&form)?)?;
    let r = state.dispatcher.watermark(request).await?;
    Ok(
        image_response(&form, r.image_data.clone(), r.original_size, r.elapsed_ms)
            .insert_header(("X-Compression-Ratio", ratio(r.original_size, r.output_size)))
            .body(r.image_data),
    )
}

/// Refuses an upload before reading it when the lane its call would take is saturated now
/// (`Lane::shed_early`): the same 503 + `Retry-After` it would get after the read, without
/// the parsing and buffering. Otherwise hands the body on, untouched.
async fn shed_early(
    req: &HttpRequest,
    state: &AppState,
    method: &str,
    payload: web::Payload,
) -> Result<web::Payload, Problem> {
    let limits = limits(state);
    // A body declared above the limit gets its 413 from the intake at once, unread: draining
    // it for a 503 would cost more than reading it ever could.
    if declared_length(req).is_some_and(|n| n > limits.max_request as u64) {
        return Ok(payload);
    }
    match state.dispatcher.shed_early(method) {
        Ok(()) => Ok(payload),
        Err(e) => Err(refuse_unread(payload, &limits, e.into()).await),
    }
}

fn ratio(original: i64, output: i64) -> String {
    format!("{:.3}", original as f64 / output.max(1) as f64)
}

/// Room left in a gRPC message for everything but the images themselves.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// Splits images into groups whose BatchProcess message stays under `max_message`.
fn split_batch(images: Vec<Bytes>, max_message: usize) -> VecDeque<(usize, Vec<Bytes>)> {
    let budget = max_message.saturating_sub(MESSAGE_OVERHEAD).max(1);
    let mut groups = VecDeque::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let mut offset = 0;
    for image in images {
        let len = image.len() + 16; // field tag and length prefix
        if !current.is_empty() && size + len > budget {
            let n = current.len();
            groups.push_back((offset, std::mem::take(&mut current)));
            offset += n;
            size = 0;
        }
        size += len;
        current.push(image);
    }
    if !current.is_empty() {
        groups.push_back((offset, current));
    }
    groups
}

async fn batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let spec = FormSpec {
        file_fields: &["file"],
        text_fields: params::BATCH_FIELDS,
        many_files: true,
    };
    // One reading of the limits for the intake and the archives' unpacked entries alike.
    let intake_limits = limits(&state);
    let payload = shed_early(&req, &state, dispatch::BATCH_PROCESS, payload).await?;
    let mut form = read_form(&req, payload, intake_limits, &state.body_budget, &spec).await?;
    let operation = params::batch_operation(&form)?;
    let auto_format = params::varies_with_accept(&form);
    if form.files.is_empty() {
        return Err(Problem::bad_request("at least one `file` part is required"));
    }
    let items = super::archives::expand(
        &state.dispatcher,
        &form.files,
        &intake_limits,
        form.budget.as_mut(),
    )
    .await?;
    let total = items.len();
    // What goes to compute, and where each of its answers belongs among the items.
    let mut images = Vec::with_capacity(total);
    let mut item_of_image = Vec::with_capacity(total);
    let mut failed_here = VecDeque::new();
    let mut names = Vec::with_capacity(total);
    for (index, item) in items.into_iter().enumerate() {
        names.push(item.name().map(str::to_string));
        match item {
            super::archives::Item::Image { data, .. } => {
                images.push(data);
                item_of_image.push(index);
            }
            super::archives::Item::Failed { error, .. } => failed_here.push_back((index, error)),
        }
    }
    let max_message = state
        .dispatcher
        .lane_for(crate::dispatch::BATCH_PROCESS)
        .config()
        .max_message_size
        .as_usize();
    let mut groups = split_batch(images, max_message);
    // Open the first call before answering, so a saturated lane or a dead compute is a plain
    // 503/504, not a 200 stream that fails at once.
    let current = match groups.pop_front() {
        Some((offset, first)) => {
            let first_len = first.len();
            let stream = state
                .dispatcher
                .batch_process(BatchProcessRequest {
                    images: first,
                    operation: Some(operation.clone()),
                })
                .await?;
            Some((offset, first_len, 0, stream))
        }
        None => None, // every item already failed at the edge
    };
    let run = BatchRun {
        dispatcher: state.dispatcher.clone(),
        store: state.store.clone(),
        operation,
        groups,
        current,
        item_of_image,
        names,
        failed_here,
        total,
        succeeded: 0,
        failed: 0,
        finished: false,
        _body_budget: form.budget,
        trace: crate::trace_context::TraceContext::current(),
    };
    let mut response = sse::Sse::from_stream(run.events())
        // Comments on a quiet stream keep proxies and load balancers from timing it out.
        .with_keep_alive(SSE_KEEP_ALIVE)
        .respond_to(&req);
    if auto_format {
        response
            .headers_mut()
            .append(header::VARY, header::HeaderValue::from_static("Accept"));
    }
    // nginx (ingress-nginx) would otherwise buffer the stream and deliver it at the end.
    response.headers_mut().insert(
        header::HeaderName::from_static("x-accel-buffering"),
        header::HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// How often a batch stream with nothing to say sends a `:` comment line.
const SSE_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The state of one batch's event stream. Owns the open gRPC stream (and through it the
/// lane permit): when the client goes away the response body is dropped, and both with it.
struct BatchRun {
    dispatcher: Arc<Dispatcher>,
    /// Each successful image is stored, and its event carries the stored image's `url`.
    store: Arc<crate::store::Store>,
    operation: Operation,
    groups: VecDeque<(usize, Vec<Bytes>)>,
    /// (offset of the group, images in it, chunks seen, stream)
    current: Option<(usize, usize, usize, LaneStream<ProcessChunk>)>,
    /// The item each image sent to compute is (items failed at the edge are not sent).
    item_of_image: Vec<usize>,
    /// Each item's name inside its archive (None for a plain file part).
    names: Vec<Option<String>>,
    /// Items failed at the edge (archive entries that are not images): told first.
    failed_here: VecDeque<(usize, String)>,
    total: usize,
    succeeded: usize,
    failed: usize,
    finished: bool,
    /// The uploaded images stay in memory until the stream ends: so does their share of
    /// the body budget.
    _body_budget: Option<super::intake::BudgetHold>,
    /// The request's ids: the stream outlives the handler, and its later calls to compute
    /// and its `error` event still belong to the request.
    trace: Option<crate::trace_context::TraceContext>,
}

type SseResult = Result<sse::Event, std::convert::Infallible>;

fn json_event(name: &'static str, value: serde_json::Value) -> SseResult {
    Ok(sse::Data::new(value.to_string()).event(name).into())
}

impl BatchRun {
    fn events(self) -> impl Stream<Item = SseResult> {
        futures_util::stream::unfold(self, |mut run| async move {
            let event = match run.trace.clone() {
                Some(trace) => trace.scope(run.next_event()).await?,
                None => run.next_event().await?,
            };
            Some((event, run))
        })
    }

    /// A `progress` event for item `index`: `fields`, the index, and the item's name inside
    /// its archive if it came from one.
    fn progress(&self, index: usize, mut fields: serde_json::Value) -> SseResult {
        fields["index"] = json!(index);
        if let Some(Some(name)) = self.names.get(index) {
            fields["name"] = json!(name);
        }
        json_event("progress", fields)
    }

    fn fail(&mut self, problem: Problem) -> Option<SseResult> {
        self.finished = true;
        self.current = None;
        Some(Ok(sse::Data::new(problem.to_json()).event("error").into()))
    }

    async fn next_event(&mut self) -> Option<SseResult> {
        loop {
            if self.finished {
                return None;
            }
            if let Some((index, error)) = self.failed_here.pop_front() {
                self.failed += 1;
                return Some(self.progress(index, json!({"success": false, "error": error})));
            }
            if let Some((offset, len, seen, stream)) = &mut self.current {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        *seen += 1;
                        let image = *offset + chunk.index.max(0) as usize;
                        let index = self.item_of_image.get(image).copied().unwrap_or(image);
                        let stored = if chunk.success {
                            Some(self.store.put(chunk.image_data).await)
                        } else {
                            None
                        };
                        return Some(if let Some(Ok(stored)) = stored {
                            self.succeeded += 1;
                            self.progress(
                                index,
                                json!({
                                    "success": true,
                                    "original_size": chunk.original_size,
                                    "output_size": chunk.output_size,
                                    "elapsed_ms": chunk.elapsed_ms,
                                    "url": super::uploads::url_of(&stored.id),
                                }),
                            )
                        } else if let Some(Err(e)) = stored {
                            // Processed but not kept: this image fails, the batch goes on.
                            self.failed += 1;
                            let problem = Problem::from(e);
                            self.progress(index, json!({"success": false, "error": problem.detail}))
                        } else {
                            self.failed += 1;
                            self.progress(index, json!({"success": false, "error": chunk.error}))
                        });
                    }
                    Some(Err(e)) => return self.fail(e.into()),
                    None if *seen < *len => {
                        let detail =
                            format!("compute ended the batch after {seen} of {len} images");
                        return self.fail(Problem::new(
                            actix_web::http::StatusCode::BAD_GATEWAY,
                            "compute-failed",
                            detail,
                        ));
                    }
                    None => self.current = None,
                }
                continue;
            }
            if let Some((offset, images)) = self.groups.pop_front() {
                let len = images.len();
                let request = BatchProcessRequest {
                    images,
                    operation: Some(self.operation.clone()),
                };
                match self.dispatcher.batch_process(request).await {
                    Ok(stream) => self.current = Some((offset, len, 0, stream)),
                    Err(e) => return self.fail(e.into()),
                }
                continue;
            }
            self.finished = true;
            return Some(json_event(
                "done",
                json!({"total": self.total, "succeeded": self.succeeded, "failed": self.failed}),
            ));
        }
    }
}

/// Terminus-style health over the realtime lane.
async fn check_compute(state: &AppState) -> HttpResponse {
    let timeout = state.reloader.current().bff.health_timeout;
    let lane = state
        .dispatcher
        .lane_for(crate::dispatch::HEALTH_CHECK)
        .name();
    let details_up = json!({"grpc-compute": {"status": "up", "lane": lane}});
    let down = |message: String| {
        let entry = json!({"grpc-compute": {"status": "down", "message": message}});
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "error", "info": {}, "error": entry, "details": entry,
        }))
    };
    match state.dispatcher.health_check(timeout).await {
        Ok(ServingStatus::Serving) => HttpResponse::Ok().json(json!({
            "status": "ok", "info": details_up, "error": {}, "details": details_up,
        })),
        Ok(other) => down(format!("compute reports {}", other.as_str_name())),
        Err(e) => down(e.to_string()),
    }
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    check_compute(&state).await
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    check_compute(&state).await
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `POST /admin/reload`: re-reads the config and applies new lane limits. Only from loopback
/// (an operator on the host or `kubectl exec`/`port-forward`), never from the public side.
async fn reload(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let from_loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if !from_loopback {
        return Err(Problem::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            "admin endpoints answer only on loopback",
        ));
    }
    match state.reloader.reload() {
        Ok(outcome) => Ok(HttpResponse::Ok().json(outcome)),
        Err(message) => Err(Problem::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-configuration",
            format!("the new configuration was refused, the old one stays in force: {message}"),
        )),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, crate::metrics::TEXT_FORMAT))
        .body(crate::metrics::encode(&state.registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_under_the_message_limit_and_keep_order() {
        let images: Vec<Bytes> = (0..5)
            .map(|i| Bytes::from(vec![i as u8; 400_000]))
            .collect();
        let groups = split_batch(images, 1024 * 1024);
        let offsets: Vec<usize> = groups.iter().map(|(o, _)| *o).collect();
        let sizes: Vec<usize> = groups.iter().map(|(_, g)| g.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(offsets, vec![0, 2, 4]);
        let one = split_batch(vec![Bytes::from(vec![0u8; 10])], 1024 * 1024);
        assert_eq!(one.len(), 1);
    }
}
