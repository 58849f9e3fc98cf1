//! nat-train: the worker-side libtorch (tch) library of nat-orchestrator.
//!
//! # Layout
//! - [`data`]: any dataset of the data dir (built-in, image folder, packed npz / safetensors, all
//!   decoded by `nat-data`) as tensors: a deterministic partition into disjoint train, validation and test splits (a dataset without
//!   test files, such as the digits, has a fixed 20 % of its training files held out as its test
//!   split), normalisation, tensors kept on the device.
//! - [`model`]: every op of the NAT, NAT++ and NAONet sets, the evaluation [`model::Network`] of a
//!   genotype (DARTS `NetworkCIFAR` skeleton, input-size aware) and the weight-sharing
//!   [`model::Supernet`].
//! - [`train`]: [`train::train_eval`], [`train::final_eval`] (checkpoints + resume; each
//!   evaluates on the validation or the test split, [`EvalSplit`]) and
//!   [`train::SupernetSession`] (reward = acc(α) − acc(β) on the same minibatch).
//! - [`error`]: [`DataError`], [`ModelError`], [`TrainError`] (with `is_retryable`).
//!
//! Nothing here panics on task input: shapes that come from a task go through tch's fallible
//! `f_` operations and come back as errors. Training is synchronous and blocking: run it on a
//! dedicated thread that owns the tensors. Cancellation is an `&AtomicBool` checked between
//! steps. On the CPU a call is reproducible for a given seed (the libtorch RNG is global to the
//! process, so run one training at a time per process for bit-identical results).
//!
//! Linking: binaries, tests and benches that link libtorch need the rpath logic of
//! `crates/nat-train/libtorch_link.rs` in their own build script (see that file).

pub mod data;
pub mod error;
pub mod model;
pub mod train;

pub use data::{
    load as load_dataset, load_named as load_named_dataset, DatasetSplits, EvalSplit, Partition,
    Split, TestSource,
};
pub use error::{DataError, ModelError, TrainError};
pub use model::{Network, NetworkConfig, Supernet, SupernetConfig};
pub use train::{
    final_eval, train_eval, Budget, CheckpointConfig, PairScore, Progress, SupernetReport,
    SupernetSession, SupernetSettings, TrainEvalReport, TrainSpec,
};

/// Sets libtorch's intra-op CPU thread count for the whole process (call once at start-up, from
/// the worker's `--threads`). Values below 1 are raised to 1.
pub fn set_threads(threads: usize) {
    let n = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
    tch::set_num_threads(n);
}

/// libtorch's current intra-op CPU thread count.
pub fn threads() -> i32 {
    tch::get_num_threads()
}

/// Whether libtorch's CUDA backend is loaded and sees at least one device.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Number of CUDA devices libtorch sees (0 without the CUDA backend).
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}
