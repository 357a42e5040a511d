//! One classifier of call outcomes for everything that judges compute: the lane's circuit, the
//! balancer's ejection and the adaptive limit all read a status the same way.

use tonic::Code;

/// Compute (or the path to it) failed: unreachable, reset, broken or too slow. Answers about
/// the input (INVALID_ARGUMENT, RESOURCE_EXHAUSTED…) are compute working, and CANCELLED is the
/// client going away: neither counts against compute.
pub fn is_compute_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_compute_count() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal] {
            assert!(is_compute_failure(code), "{code:?}");
        }
        for code in [
            Code::Ok,
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::Cancelled,
        ] {
            assert!(!is_compute_failure(code), "{code:?}");
        }
    }
}
