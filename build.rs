//! Compiles `proto/compute/compute.proto` without a system `protoc`: protox parses it into a
//! FileDescriptorSet, which is written to `OUT_DIR` (for gRPC reflection and the compatibility
//! test) and handed to tonic-prost-build for code generation.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["compute/compute.proto"], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("compute_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
