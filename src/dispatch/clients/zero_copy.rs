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
//! The answer is decoded by tonic's own [`Streaming`] (its message limit, its trailer
//! handling and error texts), and transport errors are mapped by [`Status::from_error`] as
//! tonic's client does, so the lane sees the same statuses either way.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use tonic::codec::Streaming;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
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
    channel: Channel,
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
        .map_err(|e| Status::from_error(e.into()))?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != tonic::Code::Ok {
            return Err(status); // a trailers-only answer
        }
    }
    let decoder = tonic_prost::ProstDecoder::<Resp>::default();
    let mut body = Streaming::new_response(decoder, body, parts.status, None, Some(max_message));
    // A failed call's status carries what compute sent in the trailers (code, message, error
    // details), which is all the lane reads of it.
    let message = body
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing response message."))?;
    let mut headers = parts.headers;
    if let Some(trailers) = body.trailers().await? {
        headers.extend(trailers.into_headers());
    }
    Ok(tonic::Response::from_parts(
        MetadataMap::from_headers(headers),
        message,
        parts.extensions,
    ))
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
}
