//! Generates the nat.v1 messages, clients and servers, plus a file descriptor set for gRPC reflection.
//!
//! `protoc` comes from `protoc-bin-vendored` unless `PROTOC` is already set, so the build needs no
//! system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=nat/v1/nat.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    // The vendored protoc is handed to prost-build directly (no process-wide `set_var`).
    let mut config = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("nat_v1_descriptor.bin"))
        .compile_with_config(config, &["nat/v1/nat.proto"], &["."])?;
    Ok(())
}
