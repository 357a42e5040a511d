//! Turning compute's failures into gRPC statuses: every error carries a `google.rpc.ErrorInfo` detail
//! (domain `imagegate.compute`, a stable reason) so clients never parse messages. The reasons themselves are
//! [`crate::vocab::errors`].

use tonic::{Code, Status};

use super::ops::OpError;
use super::pool::PoolError;
use crate::vocab::errors::{reason, status};

/// The reason of an operation error, also used as the metrics `result` label.
pub fn op_reason(e: &OpError) -> &'static str {
    match e {
        OpError::BadParameter(_) => reason::BAD_PARAMETER,
        OpError::UnsupportedFormat(_) => reason::UNSUPPORTED_FORMAT,
        OpError::Undecodable(_) => reason::UNDECODABLE_IMAGE,
        OpError::PixelLimit(_) => reason::PIXEL_LIMIT,
    }
}

impl From<OpError> for Status {
    fn from(e: OpError) -> Status {
        status(Code::InvalidArgument, op_reason(&e), e.to_string())
    }
}

impl From<PoolError> for Status {
    fn from(e: PoolError) -> Status {
        match e {
            PoolError::QueueFull(_) => {
                status(Code::ResourceExhausted, reason::QUEUE_FULL, e.to_string())
            }
            PoolError::DeadlineExceeded => {
                status(Code::DeadlineExceeded, reason::DEADLINE, e.to_string())
            }
            PoolError::Closed => status(Code::Unavailable, reason::SHUTTING_DOWN, e.to_string()),
        }
    }
}

/// tonic answers an oversized request with OUT_OF_RANGE and no detail; the contract says
/// RESOURCE_EXHAUSTED / MESSAGE_TOO_LARGE. This rewrites such a trailers-only response.
pub fn rewrite_message_too_large<B: Default>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    let out_of_range = headers
        .get(Status::GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == b"11");
    if !out_of_range {
        return response;
    }
    let Some(message) = headers
        .get(Status::GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .filter(|m| m.contains("message length too large"))
    else {
        return response;
    };
    let replacement = status(
        Code::ResourceExhausted,
        reason::MESSAGE_TOO_LARGE,
        format!("the request message is above the server's size limit: {message}"),
    )
    .into_http::<B>();
    let headers = response.headers_mut();
    for name in [
        Status::GRPC_STATUS,
        Status::GRPC_MESSAGE,
        Status::GRPC_STATUS_DETAILS,
    ] {
        headers.remove(&name);
        if let Some(v) = replacement.headers().get(&name) {
            headers.insert(name, v.clone());
        }
    }
    response
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
