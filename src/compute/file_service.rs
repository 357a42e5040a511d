//! The FileService (CONTRACT §1, the seed's §7 extension): general-purpose compression and
//! archive extraction, served by the same compute on the same port. Like image work, each call
//! reserves a place on the CPU pool (or fails fast with QUEUE_FULL) and runs [`super::files`]
//! there; results are counted in `imagegate_compute_operations_total` as `file_compress` and
//! `extract`.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use super::files::{self, Codec, FileError};
use super::service::{deadline_of, pool_reason, Engine};
use crate::proto::{
    self, file_service_server::FileService, ArchiveEntry, ExtractRequest, ExtractResponse,
    FileCompressRequest, FileCompressResponse,
};
use crate::vocab::errors::{bad_parameter, reason, status};

/// The FileService's handlers.
#[derive(Clone)]
pub struct FileServiceImpl(pub Arc<Engine>);

fn codec(c: i32) -> Result<Codec, Status> {
    match proto::Codec::try_from(c) {
        Ok(proto::Codec::Unspecified | proto::Codec::Zstd) => Ok(Codec::Zstd),
        Ok(proto::Codec::Gzip) => Ok(Codec::Gzip),
        Err(_) => Err(bad_parameter(format!("codec {c} is not a known Codec"))),
    }
}

fn proto_codec(c: Codec) -> proto::Codec {
    match c {
        Codec::Gzip => proto::Codec::Gzip,
        Codec::Zstd => proto::Codec::Zstd,
    }
}

fn file_reason(e: &FileError) -> &'static str {
    match e {
        FileError::BadParameter(_) => reason::BAD_PARAMETER,
        FileError::Limit(_) => reason::ARCHIVE_LIMIT,
        FileError::Undecodable(_) => reason::UNDECODABLE_ARCHIVE,
    }
}

impl From<FileError> for Status {
    fn from(e: FileError) -> Status {
        let code = match e {
            FileError::Limit(_) => Code::ResourceExhausted,
            FileError::BadParameter(_) | FileError::Undecodable(_) => Code::InvalidArgument,
        };
        status(code, file_reason(&e), e.to_string())
    }
}

impl FileServiceImpl {
    /// Runs `work` on the CPU pool under the caller's deadline, recording it as `operation`.
    async fn on_pool<T: Send + 'static>(
        &self,
        operation: &'static str,
        deadline: Option<Instant>,
        work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
    ) -> Result<(T, Duration), Status> {
        let engine = &self.0;
        let slot = engine.pool.try_reserve().inspect_err(|_| {
            engine.metrics.record_untimed(operation, reason::QUEUE_FULL);
        })?;
        let started = StdInstant::now();
        let outcome = engine
            .pool
            .run(slot, deadline, move || {
                let t = StdInstant::now();
                (work(), t.elapsed())
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok((Ok(value), elapsed)) => {
                engine.metrics.record(operation, "ok", seconds);
                Ok((value, elapsed))
            }
            Ok((Err(e), _)) => {
                engine.metrics.record(operation, file_reason(&e), seconds);
                Err(e.into())
            }
            Err(e) => {
                engine.metrics.record(operation, pool_reason(&e), seconds);
                Err(e.into())
            }
        }
    }
}

#[tonic::async_trait]
impl FileService for FileServiceImpl {
    async fn compress(
        &self,
        request: Request<FileCompressRequest>,
    ) -> Result<Response<FileCompressResponse>, Status> {
        self.0.before_call("FileCompress", &request).await;
        let deadline = deadline_of(&request);
        let r = request.into_inner();
        let codec = codec(r.codec).inspect_err(|_| {
            self.0
                .metrics
                .record_untimed("file_compress", reason::BAD_PARAMETER);
        })?;
        let (level, data) = (r.level, r.data);
        let original = data.len() as i64;
        let (packed, elapsed) = self
            .on_pool("file_compress", deadline, move || {
                files::compress(&data, codec, level)
            })
            .await?;
        Ok(Response::new(FileCompressResponse {
            original_size: original,
            compressed_size: packed.len() as i64,
            elapsed_ms: elapsed.as_millis() as i64,
            codec: proto_codec(codec) as i32,
            data: packed.into(),
        }))
    }

    async fn extract(
        &self,
        request: Request<ExtractRequest>,
    ) -> Result<Response<ExtractResponse>, Status> {
        self.0.before_call("Extract", &request).await;
        let deadline = deadline_of(&request);
        let archive = request.into_inner().archive;
        let limits = self.0.archive;
        let (entries, _) = self
            .on_pool("extract", deadline, move || {
                files::extract(&archive, &limits)
            })
            .await?;
        Ok(Response::new(ExtractResponse {
            entries: entries
                .into_iter()
                .map(|e| ArchiveEntry {
                    size: e.data.len() as i64,
                    name: e.name,
                    data: e.data.into(),
                })
                .collect(),
        }))
    }
}
