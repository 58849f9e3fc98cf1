//! Build script of nat-worker: torch-sys sets no rpath, so the binary (and its tests) would need
//! LD_LIBRARY_PATH to find libtorch. The shared logic of `crates/nat-train/libtorch_link.rs` emits
//! `-Wl,-rpath,<libtorch lib dir>` from DEP_TCH_LIBTORCH_LIB (torch-sys is a direct dependency for
//! that reason) and forces libtorch_cuda on a full CUDA install.

include!("../crates/nat-train/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../crates/nat-train/libtorch_link.rs");
    emit_libtorch_link_args();
}
