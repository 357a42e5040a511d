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
    pub const BAD_PARAMETER: &str = "BAD_PARAMETER";
    pub const UNSUPPORTED_FORMAT: &str = "UNSUPPORTED_FORMAT";
    pub const UNDECODABLE_IMAGE: &str = "UNDECODABLE_IMAGE";
    pub const PIXEL_LIMIT: &str = "PIXEL_LIMIT";
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    pub const DEADLINE: &str = "DEADLINE_EXCEEDED";
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
