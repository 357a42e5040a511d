//! The ImageService client: the image operations, on the lane routed for each (heavy by
//! default).

use super::{service_client, work_of};
use crate::dispatch::lane::{LaneStream, ReportsWork};
use crate::dispatch::{DispatchError, Dispatcher};
use crate::proto::image_service_client::ImageServiceClient;
use crate::proto::{
    BatchProcessRequest, CompressRequest, CompressResponse, ProcessChunk, ResizeRequest,
    ResizeResponse, WatermarkRequest, WatermarkResponse,
};

/// gRPC path of ImageService.Compress (its routing and metrics name).
pub const COMPRESS: &str = "compute.ImageService/Compress";
/// gRPC path of ImageService.Resize.
pub const RESIZE: &str = "compute.ImageService/Resize";
/// gRPC path of ImageService.Watermark.
pub const WATERMARK: &str = "compute.ImageService/Watermark";
/// gRPC path of ImageService.BatchProcess (server streaming).
pub const BATCH_PROCESS: &str = "compute.ImageService/BatchProcess";

service_client!(ImageServiceClient);
type Client = ImageServiceClient<crate::dispatch::channel::LaneChannel>;

impl ReportsWork for CompressResponse {
    fn work(&self) -> Option<std::time::Duration> {
        work_of(self.elapsed_ms)
    }
}

impl ReportsWork for ResizeResponse {
    fn work(&self) -> Option<std::time::Duration> {
        work_of(self.elapsed_ms)
    }
}

impl ReportsWork for WatermarkResponse {
    fn work(&self) -> Option<std::time::Duration> {
        work_of(self.elapsed_ms)
    }
}

impl Dispatcher {
    /// Re-encodes one image at a quality, optionally in another format.
    pub async fn compress(&self, req: CompressRequest) -> Result<CompressResponse, DispatchError> {
        self.call_unary_with_image(COMPRESS, req).await
    }

    /// Resizes one image to fit a box, or to exactly its size.
    pub async fn resize(&self, req: ResizeRequest) -> Result<ResizeResponse, DispatchError> {
        self.call_unary_with_image(RESIZE, req).await
    }

    /// Draws a text or logo watermark on one image.
    pub async fn watermark(
        &self,
        req: WatermarkRequest,
    ) -> Result<WatermarkResponse, DispatchError> {
        self.call_unary_with_image(WATERMARK, req).await
    }

    /// One chunk per image as compute finishes it.
    pub async fn batch_process(
        &self,
        req: BatchProcessRequest,
    ) -> Result<LaneStream<ProcessChunk>, DispatchError> {
        self.call_streaming(BATCH_PROCESS, req, |mut c: Client, r| async move {
            c.batch_process(r).await
        })
        .await
    }
}
