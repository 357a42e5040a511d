//! The shared vocabulary: what the BFF and compute both say about images and errors, owned by
//! neither. The edge never imports `compute`, and compute never imports `edge` or `dispatch`;
//! both import this.
//!
//! - [`media`]: image and archive types, sniffed from their bytes (never from a client's claim);
//! - [`errors`]: the ErrorInfo domain and reasons of compute's statuses, and how to read them;
//! - [`failure`]: which gRPC codes mean "compute failed" (for the circuit and for ejection);
//! - [`limits`]: request limits fixed by the contract that both sides check;
//! - [`metadata`]: gRPC metadata compute adds to its answers for the BFF.

pub mod errors;
pub mod failure;
pub mod limits;
pub mod media;
pub mod metadata;
