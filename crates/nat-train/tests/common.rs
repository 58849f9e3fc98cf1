//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use nat_train::Budget;

/// `NAT_DATA_DIR`, default `$HOME/.cache/nat-orchestrator/data` (what scripts/fetch-data.sh uses).
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NAT_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/nat-orchestrator/data")
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests that train take this lock and run on one libtorch thread: libtorch's RNG is global to
/// the process, so two trainings at once would make each other irreproducible (and the machine is
/// shared).
pub fn serial() -> MutexGuard<'static, ()> {
    nat_train::set_threads(1);
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn init_threads() {
    nat_train::set_threads(1);
}

pub fn budget(epochs: u32, channels: u32, layers: u32) -> Budget {
    Budget {
        epochs,
        batch_size: 64,
        learning_rate: 0.05,
        lr_min: 0.001,
        momentum: 0.9,
        weight_decay: 3e-4,
        grad_clip: 5.0,
        init_channels: channels,
        layers,
        max_train_examples: 0,
        max_eval_examples: 0,
        validation_fraction: 0.2,
        cutout: 0,
        label_smoothing: 0.0,
        auxiliary_weight: 0.0,
        drop_path_prob: 0.0,
        max_wall_seconds: 0.0,
    }
}

pub fn preset(name: &str) -> nat_arch::Genotype {
    match nat_arch::presets::get(name) {
        Some(p) => p.genotype(),
        None => panic!("nat-arch has no preset {name}"),
    }
}
