//! Code generated from `proto/compute/compute.proto` by build.rs (protox + tonic-prost-build).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("compute");

/// The encoded FileDescriptorSet of the compute proto, for gRPC reflection and the
/// backward-compatibility test.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("compute_descriptor");
