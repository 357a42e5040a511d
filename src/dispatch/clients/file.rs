//! The FileService client: general-purpose compression and archive extraction, on the lane
//! routed for each (heavy by default: archives are payloads). The batch route opens ZIP and
//! tar parts with [`Dispatcher::extract`].

use super::{service_client, work_of};
use crate::dispatch::lane::ReportsWork;
use crate::dispatch::{DispatchError, Dispatcher};
use crate::proto::file_service_client::FileServiceClient;
use crate::proto::{ExtractRequest, ExtractResponse, FileCompressRequest, FileCompressResponse};

/// gRPC path of FileService.Compress (its routing and metrics name).
pub const FILE_COMPRESS: &str = "compute.FileService/Compress";
/// gRPC path of FileService.Extract.
pub const EXTRACT: &str = "compute.FileService/Extract";

service_client!(FileServiceClient);
type Client = FileServiceClient<crate::dispatch::channel::LaneChannel>;

impl ReportsWork for FileCompressResponse {
    fn work(&self) -> Option<std::time::Duration> {
        work_of(self.elapsed_ms)
    }
}

impl ReportsWork for ExtractResponse {
    /// Extract reports no work time: the adaptive limit does not judge its wait.
    fn work(&self) -> Option<std::time::Duration> {
        None
    }
}

impl Dispatcher {
    /// Compresses one file with gzip or zstd.
    pub async fn file_compress(
        &self,
        req: FileCompressRequest,
    ) -> Result<FileCompressResponse, DispatchError> {
        self.call_unary(FILE_COMPRESS, None, req, |mut c: Client, r| async move {
            c.compress(r).await
        })
        .await
    }

    /// The regular files of a ZIP or tar archive, in archive order.
    pub async fn extract(&self, req: ExtractRequest) -> Result<ExtractResponse, DispatchError> {
        self.call_unary(EXTRACT, None, req, |mut c: Client, r| async move {
            c.extract(r).await
        })
        .await
    }
}
