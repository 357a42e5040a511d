//! gRPC metadata that compute adds to its answers and the BFF reads.

use std::time::Duration;

/// How long a call waited in compute for a CPU worker, in microseconds (answers of the
/// image RPCs). The adaptive limit judges compute's queue by it: the round trip minus the work
/// also holds the time the request took to cross the network, which on a slow link grows with
/// every upload sharing it, and is no queue of compute's.
pub const QUEUED_MICROS: &str = "imagegate-queued-us";

/// The metadata value for `queued`.
pub fn queued_value(queued: Duration) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    tonic::metadata::MetadataValue::from(queued.as_micros().min(u64::MAX as u128) as u64)
}

/// Reads [`QUEUED_MICROS`] from an answer's metadata (absent from older computes).
pub fn queued_of(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get(QUEUED_MICROS)?.to_str().ok()?;
    value.parse::<u64>().ok().map(Duration::from_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_time_round_trips_through_metadata_and_junk_is_ignored() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(queued_of(&m), None);
        m.insert(QUEUED_MICROS, queued_value(Duration::from_micros(1234)));
        assert_eq!(queued_of(&m), Some(Duration::from_micros(1234)));
        m.insert(QUEUED_MICROS, "soon".parse().unwrap());
        assert_eq!(queued_of(&m), None);
    }
}
