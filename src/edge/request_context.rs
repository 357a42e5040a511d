//! The outermost middleware: gives every request its [`TraceContext`] (the client's
//! `X-Request-Id` when valid, else a new one), runs the rest of the request inside it and
//! inside a `request` tracing span (so every log line of the request, the dispatcher's
//! included, names its id), answers with `X-Request-Id` and `X-Content-Type-Options: nosniff`,
//! and writes one access-log line per request (target `imagegate::access`).

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use super::AppState;
use crate::trace_context::{TraceContext, REQUEST_ID, TRACEPARENT};

/// Middleware: see the module docs.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let headers = req.headers();
    let ctx = TraceContext::from_client(
        headers.get(REQUEST_ID).map(HeaderValue::as_bytes),
        headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
    );
    let bytes_in = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let method = req.method().clone();
    let peer = req.peer_addr();
    let lane = req.app_data::<web::Data<AppState>>().and_then(|state| {
        let rpc = rpc_of(req.match_pattern().as_deref()?)?;
        Some(state.dispatcher.lane_for(rpc).name().to_string())
    });
    req.extensions_mut().insert(ctx.clone());
    let span = tracing::info_span!("request", request_id = %ctx.request_id);
    let id_header = HeaderValue::from_str(&ctx.request_id).ok();
    // Handlers and the middlewares inside this one answer errors as responses (a `Problem`
    // renders inside this scope, so its `instance` names the request). No clone of the
    // request may be kept across the call: actix's router needs it unshared.
    let mut res = ctx
        .clone()
        .scope(next.call(req).instrument(span.clone()))
        .await?;
    if let Some(id) = id_header {
        res.headers_mut()
            .insert(header::HeaderName::from_static(REQUEST_ID), id);
    }
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let bytes_out = match res.response().body().size() {
        BodySize::Sized(n) => Some(n),
        _ => None,
    };
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let _enter = span.enter();
    tracing::info!(
        target: "imagegate::access",
        request_id = %ctx.request_id,
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        bytes_in = bytes_in.map_or(-1, |n| n as i64),
        bytes_out = bytes_out.map_or(-1, |n| n as i64),
        duration_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        lane = lane.as_deref().unwrap_or("-"),
        peer = %peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
        "request"
    );
    drop(_enter);
    Ok(res)
}

/// The RPC a route sends to compute (for the lane named in the access log).
fn rpc_of(route: &str) -> Option<&'static str> {
    use crate::dispatch::{BATCH_PROCESS, COMPRESS, HEALTH_CHECK, RESIZE, WATERMARK};
    Some(match route {
        "/v1/images/compress" | "/v1/uploads" => COMPRESS,
        "/v1/images/resize" => RESIZE,
        "/v1/images/watermark" => WATERMARK,
        "/v1/images/batch" => BATCH_PROCESS,
        "/health" | "/health/ready" => HEALTH_CHECK,
        _ => return None,
    })
}
