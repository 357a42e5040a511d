//! The ErrorInfo vocabulary of compute's statuses (CONTRACT §1): every error status carries a
//! `google.rpc.ErrorInfo` with domain [`DOMAIN`] and one of the [`reason`]s, so the BFF (or any
//! client) maps statuses to answers without parsing messages.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// ErrorInfo domain of every compute error.
pub const DOMAIN: &str = "imagegate.compute";

/// Reasons (CONTRACT §1 status table). They double as the `result` label of
/// `imagegate_compute_operations_total`.
pub mod reason {
    /// INVALID_ARGUMENT: a request parameter out of range or malformed (400 at the edge).
    pub const BAD_PARAMETER: &str = "BAD_PARAMETER";
    /// INVALID_ARGUMENT: the bytes are not an image type compute reads (415).
    pub const UNSUPPORTED_FORMAT: &str = "UNSUPPORTED_FORMAT";
    /// INVALID_ARGUMENT: a supported type that does not decode (422).
    pub const UNDECODABLE_IMAGE: &str = "UNDECODABLE_IMAGE";
    /// INVALID_ARGUMENT: the image, read or produced, is above `max_pixels` (422).
    pub const PIXEL_LIMIT: &str = "PIXEL_LIMIT";
    /// RESOURCE_EXHAUSTED: a message above the gRPC size limit (413).
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    /// RESOURCE_EXHAUSTED: the CPU pool's queue is full; retry later (503).
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    /// DEADLINE_EXCEEDED: the caller's deadline passed before the job ran (504).
    pub const DEADLINE: &str = "DEADLINE_EXCEEDED";
    /// UNAVAILABLE: the CPU pool is closed because compute is shutting down.
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    /// FileService.Extract: an archive above an entry, size or expansion limit.
    pub const ARCHIVE_LIMIT: &str = "ARCHIVE_LIMIT";
    /// FileService.Extract: bytes that are not a ZIP or tar it can read.
    pub const UNDECODABLE_ARCHIVE: &str = "UNDECODABLE_ARCHIVE";
    /// FileService.Compress: bytes that do not compress (an internal codec failure).
    pub const CODEC_FAILED: &str = "CODEC_FAILED";
}

/// A status with an ErrorInfo detail.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, HashMap::new()),
    )
}

/// A bad request parameter.
pub fn bad_parameter(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, reason::BAD_PARAMETER, message)
}

/// The ErrorInfo reason of a status, if it has one.
pub fn reason_of(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}
