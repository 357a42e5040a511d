//! The one place errors become HTTP responses: RFC 9457 `application/problem+json` with
//! `type`, `title`, `status`, `detail`, mapped from edge errors and from gRPC statuses per the
//! contract's table.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tonic::Code;

use crate::dispatch::DispatchError;
use crate::vocab::errors::{reason, reason_of};

/// A problem detail, ready to be answered.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// Short stable name, also the end of the `type` URI (`file-too-large`).
    pub kind: &'static str,
    /// What went wrong, for the client (the JSON `detail`).
    pub detail: String,
    /// `Retry-After` in seconds, for 503s.
    pub retry_after: Option<u64>,
    /// Close the connection after answering (see [`Problem::closing_connection`]).
    pub close_connection: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// `urn:imagegate:request:<id>`: the request's `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
}

impl Problem {
    /// A problem with this status, kind and detail, and no `Retry-After`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
            retry_after: None,
            close_connection: false,
        }
    }

    /// 400 `bad-request`: a malformed form or a bad parameter.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 413 `too-large`: a file, field, count or body above its limit.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", detail)
    }

    /// 415 `unsupported-image-type`: bytes of no image type compute reads.
    pub fn unsupported_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-image-type",
            detail,
        )
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 401: answered with `WWW-Authenticate: Bearer` (RFC 9110 requires the challenge).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 408: the client stopped sending its request body.
    pub fn body_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "body-timeout", detail)
    }

    /// 503 with `Retry-After` (`retry_after` rounded up to whole seconds, at least 1).
    pub fn unavailable(
        kind: &'static str,
        detail: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        Problem {
            retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, detail)
        }
    }

    /// The same problem, answered with `Connection: close`. For a refused upload: actix keeps
    /// a connection's read buffer as large as the body made it (up to ~0.5 MiB) for as long as
    /// the connection lives, so an idle keep-alive connection after a refusal would hold memory
    /// that `bff.max_buffered_bytes` no longer counts (docs/benchmarks-edge.md, budget phase).
    /// The body has been drained first, so the client reads the answer, not a reset.
    pub fn closing_connection(self) -> Self {
        Problem {
            close_connection: true,
            ..self
        }
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> String {
        format!("urn:imagegate:problem:{}", self.kind)
    }

    /// The JSON body (also used for an SSE `error` event); `instance` names the request being
    /// handled (see [`crate::trace_context`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Body {
            type_: self.type_uri(),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            instance: crate::trace_context::TraceContext::current().map(|c| c.instance()),
        })
        .expect("serializable")
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.close_connection || self.status == StatusCode::REQUEST_TIMEOUT {
            // A 408's body may still be on its way (or never come): the connection cannot be
            // reused. Others ask for it (a refused upload's buffers are freed with it).
            response.force_close();
        }
        response.body(self.to_json())
    }
}

/// How long a client should wait after compute reported itself busy or unreachable.
const COMPUTE_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<DispatchError> for Problem {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Saturated { lane, retry_after } => Problem::unavailable(
                "lane-saturated",
                format!("the {lane} lane is at its concurrency limit; retry later"),
                retry_after,
            ),
            DispatchError::CircuitOpen { lane, retry_after } => Problem::unavailable(
                "circuit-open",
                format!("the {lane} lane's circuit is open after repeated compute failures; retry later"),
                retry_after,
            ),
            DispatchError::Deadline { lane, deadline } => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline-exceeded",
                format!("compute did not answer within the {lane} lane's deadline of {deadline:?}"),
            ),
            DispatchError::Status(status) => from_status(&status),
        }
    }
}

/// How long a client should wait after the upload store failed.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotAnImage => Problem::new(
                StatusCode::BAD_GATEWAY,
                "compute-failed",
                "the compute service returned bytes of no storable image type",
            ),
            StoreError::NotFound => Problem::not_found("no such upload"),
            // The cause (paths, endpoints) is logged by the store, not shown to clients.
            e => {
                let what = match e.op() {
                    "put" => "storing the image failed and nothing was stored",
                    "get" | "head" | "read" => "reading the image failed",
                    _ => "the operation failed",
                };
                let timed_out = matches!(e, StoreError::Timeout { .. });
                Problem::unavailable(
                    "store-unavailable",
                    format!(
                        "the image store is unavailable: {what}{}; retry later",
                        if timed_out { " (timed out)" } else { "" }
                    ),
                    STORE_RETRY_AFTER,
                )
            }
        }
    }
}

/// The contract's status table, from compute's gRPC status and ErrorInfo reason.
pub fn from_status(status: &tonic::Status) -> Problem {
    let message = status.message().to_string();
    let reason = reason_of(status);
    match (status.code(), reason.as_deref()) {
        (Code::InvalidArgument, Some(reason::UNSUPPORTED_FORMAT)) => {
            Problem::unsupported_type(message)
        }
        (Code::InvalidArgument, Some(reason::UNDECODABLE_IMAGE)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "undecodable-image",
            message,
        ),
        (Code::InvalidArgument, Some(reason::PIXEL_LIMIT)) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "pixel-limit", message)
        }
        (Code::InvalidArgument, Some(reason::UNDECODABLE_ARCHIVE)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "undecodable-archive",
            message,
        ),
        (Code::InvalidArgument, _) => Problem::bad_request(message),
        (Code::ResourceExhausted, Some(reason::ARCHIVE_LIMIT)) => Problem::too_large(message),
        (Code::ResourceExhausted, Some(reason::QUEUE_FULL)) => {
            Problem::unavailable("compute-busy", message, COMPUTE_RETRY_AFTER)
        }
        (Code::ResourceExhausted, Some(reason::MESSAGE_TOO_LARGE)) => Problem::too_large(message),
        // Our own client refused compute's answer: the client did nothing wrong.
        (Code::OutOfRange, _) if message.contains("decoded message length too large") => {
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "compute-answer-too-large",
                format!("compute's answer is above the lane's max_message_size: {message}"),
            )
        }
        (Code::OutOfRange, _) if message.contains("message length too large") => {
            Problem::too_large(message)
        }
        (Code::ResourceExhausted, _) => {
            Problem::unavailable("compute-busy", message, COMPUTE_RETRY_AFTER)
        }
        (Code::DeadlineExceeded, _) => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "deadline-exceeded", message)
        }
        (Code::Unavailable, _) => Problem::unavailable(
            "compute-unavailable",
            format!("the compute service is unreachable: {message}"),
            COMPUTE_RETRY_AFTER,
        ),
        (code, _) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "compute-failed",
            format!("the compute service failed ({code:?}): {message}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::errors::status;

    #[test]
    fn compute_reasons_map_to_the_contracts_statuses() {
        let cases = [
            (
                status(Code::InvalidArgument, reason::BAD_PARAMETER, "q"),
                400,
            ),
            (
                status(Code::InvalidArgument, reason::UNSUPPORTED_FORMAT, "x"),
                415,
            ),
            (
                status(Code::InvalidArgument, reason::UNDECODABLE_IMAGE, "x"),
                422,
            ),
            (status(Code::InvalidArgument, reason::PIXEL_LIMIT, "x"), 422),
            (
                status(Code::ResourceExhausted, reason::MESSAGE_TOO_LARGE, "x"),
                413,
            ),
            (
                status(Code::ResourceExhausted, reason::QUEUE_FULL, "x"),
                503,
            ),
            (
                status(Code::ResourceExhausted, reason::ARCHIVE_LIMIT, "x"),
                413,
            ),
            (
                status(Code::InvalidArgument, reason::UNDECODABLE_ARCHIVE, "x"),
                422,
            ),
            // tonic's own limits: our request too large is the client's (413), compute's
            // answer too large for the lane is not (502).
            (
                tonic::Status::out_of_range(
                    "Error, encoded message length too large: found 9 bytes, the limit is: 8 bytes",
                ),
                413,
            ),
            (
                tonic::Status::out_of_range(
                    "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
                ),
                502,
            ),
            (tonic::Status::deadline_exceeded("x"), 504),
            (tonic::Status::unavailable("x"), 503),
            (tonic::Status::internal("x"), 502),
            // UNKNOWN from compute itself (a broken connection is UNAVAILABLE by now: the
            // dispatcher maps transport failures).
            (tonic::Status::unknown("x"), 502),
        ];
        for (s, want) in cases {
            let p = from_status(&s);
            assert_eq!(p.status.as_u16(), want, "{s:?}");
            assert_eq!(p.retry_after.is_some(), want == 503, "{s:?}");
        }
    }

    #[test]
    fn the_body_is_rfc9457() {
        let p = Problem::too_large("file is 30 MiB, above the limit of 20 MiB");
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["status"], 413);
        assert_eq!(v["title"], "Payload Too Large");
        assert_eq!(v["type"], "urn:imagegate:problem:too-large");
        assert!(v["detail"].as_str().unwrap().contains("20 MiB"));
    }
}
