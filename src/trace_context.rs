//! The request's identity as it crosses the system: the `X-Request-Id` the edge answers with
//! (the client's own when valid, else a new one) and a W3C `traceparent`, carried to compute as
//! gRPC metadata. Shared vocabulary: the edge sets it, the dispatcher passes it on, compute
//! reads it; none of them imports another for it.
//!
//! The context lives in a Tokio task-local for the duration of one request's handling (the
//! dispatcher's calls run on the handler's own task), so no signature between the route and
//! the lane has to thread it through.

use std::fmt::Write;

/// HTTP header and gRPC metadata key of the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// W3C trace context header and metadata key.
pub const TRACEPARENT: &str = "traceparent";
/// Longest request id accepted from a client (CONTRACT §2).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// One request's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `X-Request-Id` (the client's own when valid, else a new one).
    pub request_id: String,
    /// The W3C `traceparent` sent on to compute.
    pub traceparent: String,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// From what the client sent: its `X-Request-Id` if it is 1–128 visible ASCII characters,
    /// its `traceparent` if well-formed (then a new span id under the same trace); otherwise new.
    pub fn from_client(request_id: Option<&[u8]>, traceparent: Option<&[u8]>) -> Self {
        let request_id = request_id
            .filter(|id| is_valid_request_id(id))
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .unwrap_or_else(new_request_id);
        let trace_id = traceparent
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(parse_trace_id)
            .unwrap_or_else(|| random_hex(16));
        TraceContext {
            request_id,
            traceparent: format!("00-{trace_id}-{}-01", random_hex(8)),
        }
    }

    /// The `instance` of a problem+json body.
    pub fn instance(&self) -> String {
        format!("urn:imagegate:request:{}", self.request_id)
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The context of the request being handled on this task, if any.
    pub fn current() -> Option<TraceContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Adds the ids to an outgoing gRPC call.
    pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
        let _ = CURRENT.try_with(|ctx| {
            if let Ok(v) = ctx.request_id.parse() {
                metadata.insert(REQUEST_ID, v);
            }
            if let Ok(v) = ctx.traceparent.parse() {
                metadata.insert(TRACEPARENT, v);
            }
        });
    }

    /// The request id of an incoming gRPC call (compute's log lines carry it), if valid.
    pub fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
        metadata
            .get(REQUEST_ID)
            .map(|v| v.as_bytes())
            .filter(|id| is_valid_request_id(id))
            .map(|id| String::from_utf8_lossy(id).into_owned())
    }
}

/// 1–128 visible ASCII characters (no spaces, no control characters).
pub fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// A new request id: 32 lowercase hex digits (128 random bits).
pub fn new_request_id() -> String {
    random_hex(16)
}

fn random_hex(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    loop {
        s.clear();
        for _ in 0..bytes {
            let _ = write!(s, "{:02x}", fastrand::u8(..));
        }
        // All-zero ids are invalid in W3C trace context.
        if s.bytes().any(|b| b != b'0') {
            return s;
        }
    }
}

/// The trace id of a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if valid.
fn parse_trace_id(t: &str) -> Option<String> {
    let parts: Vec<&str> = t.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    valid.then(|| parts[1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_client_id_is_kept_and_a_bad_one_replaced() {
        let c = TraceContext::from_client(Some(b"abc-123_X"), None);
        assert_eq!(c.request_id, "abc-123_X");
        for bad in [
            &b""[..],
            b"has space",
            b"tab\t",
            "é".as_bytes(),
            &[b'a'; 129],
        ] {
            let c = TraceContext::from_client(Some(bad), None);
            assert_ne!(c.request_id.as_bytes(), bad);
            assert_eq!(c.request_id.len(), 32);
            assert!(is_valid_request_id(c.request_id.as_bytes()));
        }
        assert!(is_valid_request_id(&[b'a'; 128]));
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn a_client_trace_is_continued_and_a_bad_one_restarted() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::from_client(None, Some(t.as_bytes()));
        assert!(c
            .traceparent
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!c.traceparent.contains("00f067aa0ba902b7"), "a new span id");
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let c = TraceContext::from_client(None, Some(bad.as_bytes()));
            assert!(!c.traceparent.contains("4bf92f3577b34da6"), "{bad}");
            assert!(parse_trace_id(&c.traceparent).is_some());
        }
    }

    #[tokio::test]
    async fn the_context_reaches_outgoing_metadata_only_inside_its_scope() {
        let mut outside = tonic::metadata::MetadataMap::new();
        TraceContext::inject_current(&mut outside);
        assert!(outside.is_empty());
        let ctx = TraceContext::from_client(Some(b"req-1"), None);
        let md = ctx
            .clone()
            .scope(async {
                let mut md = tonic::metadata::MetadataMap::new();
                TraceContext::inject_current(&mut md);
                md
            })
            .await;
        assert_eq!(TraceContext::request_id_of(&md).as_deref(), Some("req-1"));
        assert_eq!(md.get(TRACEPARENT).unwrap(), ctx.traceparent.as_str());
    }
}
