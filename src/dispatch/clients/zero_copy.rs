//! Unary calls that send an upload's bytes to compute without copying them.
//!
//! tonic's codec encodes every request into one fresh buffer: a 8 MB upload is copied into a
//! second 8 MB allocation before h2 sends it, so the BFF holds each upload twice and pays
//! the page faults and the `memcpy` of the copy on every request (docs/benchmarks-edge.md).
//! Here the request body is two `Bytes` instead: the 5-byte gRPC prefix with every small
//! field and the header of the image field, then the upload's own `Bytes` (the buffer the
//! multipart intake filled). h2 frames that buffer in place. Protobuf lets fields come in any
//! order, so compute decodes the result exactly like tonic's encoding.
//!
//! The answer is read the same way round: a message that arrives in one HTTP/2 DATA frame is
//! decoded from that frame's own `Bytes` (prost takes `bytes` fields from it without copying),
//! with tonic's checks and error texts (its message limit, trailers, a missing status), and
//! transport errors are mapped by [`Status::from_error`] as tonic's client does, so the lane
//! sees the same statuses either way.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::dispatch::channel::LaneChannel;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use tonic::metadata::MetadataMap;
use tonic::Status;
use tower::ServiceExt;

use crate::proto::{CompressRequest, ResizeRequest, WatermarkRequest};

/// The protobuf field that carries the image in every request with one (`image_data = 1`).
const IMAGE_FIELD: u32 = 1;

/// A request whose image bytes can be sent apart from its other fields.
pub(crate) trait ImagePayload: prost::Message + Sized {
    /// Moves the image bytes out, leaving the field empty (so prost does not encode it).
    fn take_image(&mut self) -> Bytes;
}

macro_rules! image_payload {
    ($($request:ty),*) => {$(
        impl ImagePayload for $request {
            fn take_image(&mut self) -> Bytes {
                std::mem::take(&mut self.image_data)
            }
        }
    )*};
}
image_payload!(CompressRequest, ResizeRequest, WatermarkRequest);

/// The gRPC message of `request` as two buffers: prefix and small fields, then the image
/// itself (not copied). Above `max_message` bytes it fails as tonic's encoder does.
pub(crate) fn encode<Req: ImagePayload>(
    mut request: Req,
    max_message: usize,
) -> Result<[Bytes; 2], Status> {
    let image = request.take_image();
    let small = request.encoded_len();
    let image_header = key_len(IMAGE_FIELD) + encoded_len_varint(image.len() as u64);
    let total = small + image_header + image.len();
    if total > max_message || u32::try_from(total).is_err() {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {total} bytes, the limit is: {max_message} bytes"
        )));
    }
    let mut head = BytesMut::with_capacity(5 + small + image_header);
    head.put_u8(0); // not compressed
    head.put_u32(total as u32);
    request
        .encode(&mut head)
        .expect("the buffer was sized by encoded_len");
    encode_key(IMAGE_FIELD, WireType::LengthDelimited, &mut head);
    encode_varint(image.len() as u64, &mut head);
    Ok([head.freeze(), image])
}

/// The unary call `method` (`compute.ImageService/Compress`) on `channel`, its request body
/// sent as [`encode`] lays it out, its answer decoded with the lane's message limit.
pub(crate) async fn unary<Req, Resp>(
    channel: LaneChannel,
    method: &str,
    request: tonic::Request<Req>,
    max_message: usize,
) -> Result<tonic::Response<Resp>, Status>
where
    Req: ImagePayload,
    Resp: prost::Message + Default + Send + 'static,
{
    let (metadata, extensions, message) = request.into_parts();
    let body = ChunkBody::new(encode(message, max_message)?);
    let mut http_request = http::Request::new(tonic::body::Body::new(body));
    *http_request.method_mut() = http::Method::POST;
    *http_request.uri_mut() = http::Uri::try_from(format!("/{method}"))
        .map_err(|e| Status::internal(format!("method {method:?} is no gRPC path: {e}")))?;
    *http_request.version_mut() = http::Version::HTTP_2;
    *http_request.extensions_mut() = extensions;
    let headers = http_request.headers_mut();
    *headers = metadata.into_headers();
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );

    let response = channel
        .oneshot(http_request)
        .await
        .map_err(Status::from_error)?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != tonic::Code::Ok {
            return Err(status); // a trailers-only answer
        }
    }
    let (message, trailers) = read_answer(body, parts.status, max_message).await?;
    let message = Resp::decode(message).map_err(|e| Status::internal(e.to_string()))?;
    let mut headers = parts.headers;
    if let Some(trailers) = trailers {
        headers.extend(trailers);
    }
    Ok(tonic::Response::from_parts(
        MetadataMap::from_headers(headers),
        message,
        parts.extensions,
    ))
}

/// Reads a unary answer to its end: its message (without the gRPC prefix) and its trailers.
///
/// The checks, codes and texts are tonic's `Streaming` (the message limit, the compression
/// flag, a truncated message, the status from the trailers or else from the HTTP status), so
/// the lane sees the same answers. What differs is the copying: tonic copies every DATA frame
/// into one growing buffer; here a message that arrives in one frame (with 1 MiB frames, every
/// answer up to 1 MiB) is that frame's own `Bytes`, and a longer one is copied once into a
/// buffer of its exact size. prost decodes `bytes` fields from a `Bytes` without copying, so
/// the answer's image is the frame compute sent.
async fn read_answer(
    mut body: hyper::body::Incoming,
    http_status: http::StatusCode,
    max_message: usize,
) -> Result<(Bytes, Option<http::HeaderMap>), Status> {
    let mut answer = AnswerBuffer::new(max_message, http_status);
    let mut trailers: Option<http::HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::from_error(Box::new(e)))?;
        match frame.into_data() {
            Ok(data) => answer.push(data)?,
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers
                        .get_or_insert_with(http::HeaderMap::new)
                        .extend(more);
                }
            }
        }
    }
    let message = answer.finish(trailers.as_ref())?;
    Ok((message, trailers))
}

/// The first gRPC message of an answer, assembled from its DATA frames.
struct AnswerBuffer {
    max_message: usize,
    http_status: http::StatusCode,
    /// Frames received before the message was complete.
    chunks: Vec<Bytes>,
    received: usize,
    /// The message's length, once its 5-byte prefix has arrived.
    length: Option<usize>,
    /// The whole message (a unary answer carries one; bytes after it are dropped, as tonic
    /// drops further messages of a unary answer).
    message: Option<Bytes>,
}

/// gRPC's message prefix: the compression flag and the length (big-endian `u32`).
const PREFIX: usize = 5;

impl AnswerBuffer {
    fn new(max_message: usize, http_status: http::StatusCode) -> Self {
        AnswerBuffer {
            max_message,
            http_status,
            chunks: Vec::new(),
            received: 0,
            length: None,
            message: None,
        }
    }

    fn push(&mut self, data: Bytes) -> Result<(), Status> {
        if self.message.is_some() || data.is_empty() {
            return Ok(());
        }
        self.received += data.len();
        self.chunks.push(data);
        if self.length.is_none() && self.received >= PREFIX {
            let mut prefix = [0u8; PREFIX];
            let mut filled = 0;
            for chunk in &self.chunks {
                let n = (PREFIX - filled).min(chunk.len());
                prefix[filled..filled + n].copy_from_slice(&chunk[..n]);
                filled += n;
                if filled == PREFIX {
                    break;
                }
            }
            match prefix[0] {
                0 => {}
                1 => {
                    return Err(Status::internal(
                        "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                    ))
                }
                f => {
                    return Err(Status::internal(format!(
                        "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1) while receiving response with status: {}",
                        self.http_status
                    )))
                }
            }
            let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if length > self.max_message {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {length} bytes, the limit is: {} bytes",
                    self.max_message
                )));
            }
            self.length = Some(length);
        }
        if let Some(length) = self.length {
            if self.received >= PREFIX + length {
                self.message = Some(self.assemble(length));
                self.chunks = Vec::new();
            }
        }
        Ok(())
    }

    /// The message's bytes: a slice of its frame when one frame holds it all, else one copy.
    fn assemble(&self, length: usize) -> Bytes {
        if let [only] = self.chunks.as_slice() {
            return only.slice(PREFIX..PREFIX + length);
        }
        let mut message = BytesMut::with_capacity(length);
        let mut skip = PREFIX;
        for chunk in &self.chunks {
            let start = skip.min(chunk.len());
            skip -= start;
            let rest = &chunk[start..];
            let n = (length - message.len()).min(rest.len());
            message.extend_from_slice(&rest[..n]);
            if message.len() == length {
                break;
            }
        }
        message.freeze()
    }

    /// At the end of the answer: its message, or the error tonic would have given.
    fn finish(self, trailers: Option<&http::HeaderMap>) -> Result<Bytes, Status> {
        if self.message.is_none() && self.received > 0 {
            return Err(Status::internal("Unexpected EOF decoding stream."));
        }
        match trailers.and_then(Status::from_header_map) {
            Some(status) if status.code() != tonic::Code::Ok => return Err(status),
            Some(_) => {}
            None => return Err(missing_status(self.http_status)),
        }
        self.message
            .ok_or_else(|| Status::internal("Missing response message."))
    }
}

/// No `grpc-status` in the trailers: the code from the HTTP status, as tonic (and gRPC's
/// http-grpc-status-mapping) infer it.
fn missing_status(http_status: http::StatusCode) -> Status {
    use http::StatusCode as H;
    let code = match http_status {
        H::OK => {
            return Status::unknown(
                "protocol error: missing grpc-status trailer, stream was terminated without a final status (possible truncation by a proxy or load balancer)",
            )
        }
        H::BAD_REQUEST => tonic::Code::Internal,
        H::UNAUTHORIZED => tonic::Code::Unauthenticated,
        H::FORBIDDEN => tonic::Code::PermissionDenied,
        H::NOT_FOUND => tonic::Code::Unimplemented,
        H::TOO_MANY_REQUESTS | H::BAD_GATEWAY | H::SERVICE_UNAVAILABLE | H::GATEWAY_TIMEOUT => {
            tonic::Code::Unavailable
        }
        _ => tonic::Code::Unknown,
    };
    Status::new(
        code,
        format!(
            "grpc-status header missing, mapped from HTTP status code {}",
            http_status.as_u16()
        ),
    )
}

/// A request body of a few ready buffers, handed to h2 one by one as they are.
struct ChunkBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl ChunkBody {
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        ChunkBody { chunks, remaining }
    }
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(c) = &chunk {
            self.remaining -= c.len() as u64;
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::CompressResponse;
    use prost::Message;

    fn decoded<M: Message + Default>(parts: &[Bytes; 2]) -> M {
        let mut wire = parts[0].to_vec();
        wire.extend_from_slice(&parts[1]);
        assert_eq!(wire[0], 0, "uncompressed flag");
        let len = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 5, "the prefix gives the message length");
        M::decode(&wire[5..]).unwrap()
    }

    #[test]
    fn compute_decodes_exactly_the_request_sent() {
        let image = Bytes::from(vec![7u8; 300_000]);
        let request = WatermarkRequest {
            image_data: image.clone(),
            text: "© imagegate".into(),
            opacity: 0.25,
            quality: 70,
            overlay_image: Bytes::from_static(b"\x89PNG logo"),
            ..Default::default()
        };
        let parts = encode(request.clone(), 1 << 20).unwrap();
        assert_eq!(decoded::<WatermarkRequest>(&parts), request);
        assert_eq!(
            parts[1].as_ptr(),
            image.as_ptr(),
            "the image is sent from the upload's own buffer"
        );
        // The same bytes on the wire as tonic's own encoding would need.
        assert_eq!(
            parts[0].len() + parts[1].len(),
            5 + request.encoded_len(),
            "same message length as prost's encoding"
        );
    }

    #[test]
    fn small_fields_and_an_empty_image_round_trip() {
        let request = CompressRequest {
            image_data: Bytes::new(),
            quality: 80,
            output_format: 2,
        };
        assert_eq!(
            decoded::<CompressRequest>(&encode(request.clone(), 1024).unwrap()),
            request
        );
    }

    #[test]
    fn above_the_message_limit_fails_like_tonic() {
        let request = ResizeRequest {
            image_data: Bytes::from(vec![0u8; 2000]),
            width: 10,
            ..Default::default()
        };
        let status = encode(request, 1000).unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert!(
            status
                .message()
                .contains("encoded message length too large"),
            "{}",
            status.message()
        );
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut wire = vec![0u8];
        wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
        wire.extend_from_slice(message);
        wire
    }

    fn ok_trailers() -> http::HeaderMap {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        t
    }

    #[test]
    fn an_answer_in_one_frame_is_decoded_from_that_frame_without_a_copy() {
        let answer = CompressResponse {
            image_data: Bytes::from(vec![9u8; 200_000]),
            elapsed_ms: 12,
            ..Default::default()
        };
        let frame = Bytes::from(framed(&answer.encode_to_vec()));
        let mut buffer = AnswerBuffer::new(1 << 20, http::StatusCode::OK);
        buffer.push(frame.clone()).unwrap();
        let message = buffer.finish(Some(&ok_trailers())).unwrap();
        let decoded = CompressResponse::decode(message).unwrap();
        assert_eq!(decoded, answer);
        let image = decoded.image_data.as_ptr() as usize;
        let within = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(
            within.contains(&image),
            "the image is the frame's own bytes"
        );
    }

    #[test]
    fn an_answer_split_anywhere_across_frames_is_the_same_message() {
        let answer = CompressResponse {
            image_data: Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>()),
            elapsed_ms: 3,
            ..Default::default()
        };
        let wire = framed(&answer.encode_to_vec());
        // Cuts inside the prefix, right after it, and in the middle, and one byte per frame.
        for cuts in [
            vec![2],
            vec![5],
            vec![3, 4, 700, 4000],
            (1..wire.len()).collect(),
        ] {
            let mut buffer = AnswerBuffer::new(1 << 20, http::StatusCode::OK);
            let mut from = 0;
            for cut in cuts.iter().copied().chain([wire.len()]) {
                buffer
                    .push(Bytes::copy_from_slice(&wire[from..cut]))
                    .unwrap();
                from = cut;
            }
            let message = buffer.finish(Some(&ok_trailers())).unwrap();
            assert_eq!(
                CompressResponse::decode(message).unwrap(),
                answer,
                "{cuts:?}"
            );
        }
    }

    #[test]
    fn an_answer_past_the_limit_fails_as_tonic_fails_it_before_it_arrives() {
        let mut buffer = AnswerBuffer::new(100, http::StatusCode::OK);
        // Only the prefix has arrived: the length alone decides.
        let status = buffer
            .push(Bytes::from(framed(&[0u8; 101])[..5].to_vec()))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert!(
            status
                .message()
                .contains("decoded message length too large"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_truncated_answer_a_failed_status_and_a_missing_status_are_errors() {
        let wire = framed(b"\x08\x01");
        let mut truncated = AnswerBuffer::new(1024, http::StatusCode::OK);
        truncated
            .push(Bytes::copy_from_slice(&wire[..wire.len() - 1]))
            .unwrap();
        let status = truncated.finish(Some(&ok_trailers())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "Unexpected EOF decoding stream.");

        let mut failed = AnswerBuffer::new(1024, http::StatusCode::OK);
        failed.push(Bytes::from(wire.clone())).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("8"));
        trailers.insert(
            "grpc-message",
            http::HeaderValue::from_static("queue%20full"),
        );
        let status = failed.finish(Some(&trailers)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "queue full");

        let status = AnswerBuffer::new(1024, http::StatusCode::BAD_GATEWAY)
            .finish(None)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let mut compressed = AnswerBuffer::new(1024, http::StatusCode::OK);
        let status = compressed
            .push(Bytes::from_static(&[1, 0, 0, 0, 1, 0]))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);

        let mut empty = AnswerBuffer::new(1024, http::StatusCode::OK);
        empty.push(Bytes::new()).unwrap();
        let status = empty.finish(Some(&ok_trailers())).unwrap_err();
        assert_eq!(status.message(), "Missing response message.");
    }
}
