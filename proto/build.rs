//! Generates the nat.v1 messages, clients and servers, plus a file descriptor set for gRPC reflection.
//!
//! `protoc` comes from `protoc-bin-vendored` unless `PROTOC` is already set, so the build needs no
//! system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=nat/v1/nat.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Build scripts are single-threaded: setting the variable here is sound.
        std::env::set_var("PROTOC", protoc);
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("nat_v1_descriptor.bin"))
        .compile_protos(&["nat/v1/nat.proto"], &["."])?;
    Ok(())
}
