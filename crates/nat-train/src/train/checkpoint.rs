//! Checkpoints of a training run in a directory: `latest` names the newest complete
//! `epoch-NNNNN/` folder, which holds `model.ot` (weights and BN statistics), `optimizer.ot`
//! (momentum buffers) and `state.json`. A checkpoint is written into a temporary folder and
//! renamed into place, and `latest` is replaced atomically, so a crash never leaves a torn one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use super::sgd::Sgd;
use crate::error::TrainError;

/// Progress saved with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    /// Identifies the task (genotype, budget, dataset, seed); a checkpoint of another task is
    /// ignored.
    pub fingerprint: String,
    pub epochs_done: u32,
    pub train_seconds: f64,
    pub train_images: u64,
    pub last_train_loss: f64,
    pub last_train_accuracy: f64,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

pub(crate) fn save(
    dir: &Path,
    vs: &VarStore,
    sgd: &Sgd,
    state: &CheckpointState,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let name = format!("epoch-{:05}", state.epochs_done);
    let partial = dir.join(format!(".partial-{name}"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| err(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| err(&partial, e))?;
    vs.save(partial.join("model.ot"))
        .map_err(|e| err(&partial.join("model.ot"), e))?;
    sgd.save(&partial.join("optimizer.ot"))
        .map_err(|e| err(&partial.join("optimizer.ot"), e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(&partial, e))?;
    std::fs::write(partial.join("state.json"), json).map_err(|e| err(&partial, e))?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| err(&final_dir, e))?;
    }
    std::fs::rename(&partial, &final_dir).map_err(|e| err(&final_dir, e))?;
    let latest_tmp = dir.join(".latest.tmp");
    std::fs::write(&latest_tmp, &name).map_err(|e| err(&latest_tmp, e))?;
    std::fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| err(dir, e))?;
    // Older complete checkpoints are no longer needed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with("epoch-") && file_name != name {
                if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), %error, "cannot remove old checkpoint");
                }
            }
        }
    }
    Ok(final_dir)
}

/// Loads the newest checkpoint of `dir` into `vs` and `sgd` if there is one with the same
/// fingerprint. Returns its state, or `None` when there is nothing (matching) to resume from.
pub(crate) fn load(
    dir: &Path,
    fingerprint: &str,
    vs: &mut VarStore,
    sgd: &mut Sgd,
) -> Result<Option<CheckpointState>, TrainError> {
    let latest = dir.join("latest");
    let name = match std::fs::read_to_string(&latest) {
        Ok(name) => name.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&latest, e)),
    };
    if !name.starts_with("epoch-") || name.contains('/') {
        return Err(err(
            &latest,
            format!("names '{name}', not an epoch-NNNNN folder"),
        ));
    }
    let folder = dir.join(&name);
    let state_path = folder.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| err(&state_path, e))?;
    let state: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| err(&state_path, e))?;
    if state.fingerprint != fingerprint {
        tracing::warn!(
            dir = %dir.display(),
            "checkpoint belongs to a different task (genotype/budget/seed differ); starting over"
        );
        return Ok(None);
    }
    vs.load(folder.join("model.ot"))
        .map_err(|e| err(&folder.join("model.ot"), e))?;
    sgd.load(&folder.join("optimizer.ot"))
        .map_err(|e| err(&folder.join("optimizer.ot"), e))?;
    Ok(Some(state))
}
