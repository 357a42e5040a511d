//! The integration suite, built as one test binary: each module below used to be its own
//! `tests/*.rs` target, but every target links the whole dependency tree again, which costs
//! minutes and gigabytes of disk in CI. Run one part with a filter, e.g.
//! `cargo test --test it hostile::` or `cargo test --test it proto_compat`.
//!
//! Every part starts the real compute server and the real BFF on `127.0.0.1:0` (see
//! `support`), except `proto_compat`, which checks the compiled proto descriptor.

mod support;

mod batch_archives;
mod browser;
mod compute_grpc;
mod e2e;
mod edge_security;
mod file_service;
mod hostile;
mod openapi;
mod process_env;
mod prometheus_scrape;
mod proto_compat;
mod replicas;
mod tls;
mod uploads;
mod uploads_s3;
mod web_clients;
