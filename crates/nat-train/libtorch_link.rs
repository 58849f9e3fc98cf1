// Link arguments for binaries that use libtorch through tch/torch-sys 0.26.
//
// Shared build-script logic: `crates/nat-train/build.rs` includes it, and any other crate that
// builds a binary or test against libtorch (the worker) does the same from its own build.rs:
//
//     include!("../crates/nat-train/libtorch_link.rs");
//     fn main() { emit_libtorch_link_args(); }
//
// The including crate must depend on `torch-sys` directly (so that torch-sys's
// `cargo:libtorch_lib=<dir>` reaches it as `DEP_TCH_LIBTORCH_LIB`); link args of a build script
// apply only to its own crate's binaries/tests/examples/benches, never to dependents.
//
// What it emits:
// - `-Wl,-rpath,<libtorch lib dir>`: torch-sys sets no rpath, so without it binaries fail with
//   "libtorch_cpu.so: cannot open shared object file" unless LD_LIBRARY_PATH is set.
// - `-Wl,--no-as-needed,-ltorch_cuda,--as-needed` when libtorch_cuda.so AND the CUDA libraries it
//   needs (the full wheel set: cuBLAS, cuDNN) are present: tch references no symbol of
//   libtorch_cuda.so, so `--as-needed` drops it and `tch::Cuda::is_available()` is false on a GPU
//   node. With the CPU-only minimum install libtorch_cuda.so exists but its dependencies do not, so
//   forcing it would make every binary fail to start; it is left out there.
//   Override with NAT_LINK_TORCH_CUDA=1 (always force) or =0 (never).

#[allow(dead_code)]
fn emit_libtorch_link_args() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=NAT_LINK_TORCH_CUDA");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib_dir = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => {
            println!(
                "cargo:warning=DEP_TCH_LIBTORCH_LIB is not set (is torch-sys a direct dependency?): \
                 no rpath emitted, binaries will need LD_LIBRARY_PATH"
            );
            return;
        }
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rerun-if-changed={}", lib_dir.join("libtorch_cuda.so").display());

    let force = std::env::var("NAT_LINK_TORCH_CUDA").ok();
    let link_cuda = match force.as_deref() {
        Some("1" | "true" | "yes") => true,
        Some("0" | "false" | "no") => false,
        _ => cuda_backend_loadable(&lib_dir),
    };
    if link_cuda {
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// libtorch_cuda.so is there and so are the libraries of the full wheel set it needs (looked up
/// where the wheel's own RPATH looks: `<site-packages>/nvidia/...`).
#[allow(dead_code)]
fn cuda_backend_loadable(lib_dir: &std::path::Path) -> bool {
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return false;
    }
    let Ok(real) = std::fs::canonicalize(lib_dir) else {
        return false;
    };
    let Some(site_packages) = real.parent().and_then(|torch| torch.parent()) else {
        return false;
    };
    let nvidia = site_packages.join("nvidia");
    // Installing the full wheel set later adds folders here: re-run this script then.
    println!("cargo:rerun-if-changed={}", nvidia.display());
    let has = |sub: &str, prefix: &str| -> bool {
        std::fs::read_dir(nvidia.join(sub))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or(false)
    };
    let cublas = has("cu13/lib", "libcublas.so") || has("cublas/lib", "libcublas.so");
    let cudnn = has("cudnn/lib", "libcudnn.so");
    cublas && cudnn
}
