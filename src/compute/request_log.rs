//! A tower layer in front of every compute service: each call runs in a `grpc` span that
//! carries the caller's request id (gRPC metadata `x-request-id`, set by the BFF from the
//! HTTP request's `X-Request-Id`), so compute's log lines can be matched with the BFF's, and
//! one log line per call (target `imagegate::compute::rpc`) says what it was and how it ended.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;

use crate::trace_context::{is_valid_request_id, REQUEST_ID, TRACEPARENT};

/// Adds [`RequestLog`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestLog { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, B, ResB> tower::Service<http::Request<B>> for RequestLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| is_valid_request_id(v))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let request_id = header(REQUEST_ID).unwrap_or_else(|| "-".into());
        let traceparent = header(TRACEPARENT).unwrap_or_else(|| "-".into());
        let method = req.uri().path().to_string();
        let span = tracing::info_span!("grpc", request_id = %request_id);
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(
            async move {
                let result = call.await;
                if let Ok(res) = &result {
                    // An error answered before any message is "trailers-only": its status is
                    // in the head. A call that streams has its status in the trailers (OK
                    // unless it failed later, which the service logs itself).
                    let status = res
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                    tracing::info!(
                        target: "imagegate::compute::rpc",
                        request_id = %request_id,
                        traceparent = %traceparent,
                        method = %method,
                        status = ?status,
                        duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                        "rpc"
                    );
                }
                result
            }
            .instrument(span),
        )
    }
}
