//! Build script of nat-train: rpath (and, on a full CUDA install, libtorch_cuda) for this crate's
//! tests, examples and benches. The logic lives in `libtorch_link.rs` so the worker can include it.

include!("libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=libtorch_link.rs");
    emit_libtorch_link_args();
}
