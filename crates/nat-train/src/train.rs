//! Training: `train_eval` (train from scratch for a [`Budget`] and evaluate on the validation or
//! the test split), `final_eval` (the same with periodic checkpoints and resume), and supernet
//! sessions (§4.3 rewards, on the validation split).

mod augment;
mod budget;
mod checkpoint;
mod runner;
mod sgd;
mod supernet;

pub use budget::{validate as validate_budget, Budget};
pub use runner::{
    checkpoint_dir_usable, final_eval, train_eval, CheckpointConfig, Progress, TrainEvalReport,
    TrainSpec,
};
pub use supernet::{infer_op_set, PairScore, SupernetReport, SupernetSession, SupernetSettings};
