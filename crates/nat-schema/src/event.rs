//! The payload of every event kind in a job's log, and [`JobEvent`] to read one.
//!
//! The store writes the first seven kinds (see `nat_store::event_kind`), the optimize driver
//! the others. Readers (WatchJob, the dashboard, natctl) decode a stored event with
//! [`JobEvent::decode`]; an event of a kind this build does not know is [`JobEvent::Other`], a
//! known kind whose payload does not fit is an error naming the field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{decode, DecodeError, EventKind, Phase};

/// `job_created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCreated {
    /// Job kind.
    pub kind: String,
    /// Scheduling priority.
    pub priority: i32,
    /// Tasks created with the job.
    pub tasks: u64,
}

/// `tasks_added`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TasksAdded {
    /// Tasks added.
    pub added: u64,
    /// Tasks of the job now.
    pub tasks_total: u64,
}

/// `task_succeeded`: `result` is the task's result document (a
/// [`crate::TrainEvalResult`] or a [`crate::SupernetResult`], by the task's kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSucceeded {
    /// The task (UUID text).
    pub task_id: String,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// The task's result document.
    pub result: Value,
}

/// `task_retry`: an attempt failed and the task was requeued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRetry {
    /// The task.
    pub task_id: String,
    /// The attempt that failed.
    pub attempt: u32,
    /// Why, when known.
    pub reason: Option<String>,
}

/// `task_failed`: the task failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// The task.
    pub task_id: String,
    /// Its last attempt.
    pub attempt: u32,
    /// Every attempt's reason.
    pub reasons: Vec<String>,
}

/// `task_progress`: the progress document a worker reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// The task.
    pub task_id: String,
    /// The attempt.
    pub attempt: u32,
    /// The progress.
    pub progress: Progress,
}

/// A worker's progress on a long task (`tasks.progress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epoch reached.
    #[serde(default)]
    pub epoch: u32,
    /// Epochs planned.
    #[serde(default)]
    pub epochs: u32,
    /// Optimizer steps done.
    #[serde(default)]
    pub step: u64,
    /// A line of text from the worker.
    #[serde(default)]
    pub message: String,
    /// Training loss.
    #[serde(default)]
    pub train_loss: f64,
    /// Training accuracy.
    #[serde(default)]
    pub train_accuracy: f64,
    /// Fraction of the task done, 0..=1.
    #[serde(default)]
    pub fraction: f64,
}

/// `job_finished`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFinished {
    /// The final state's name.
    pub state: String,
    /// The error of a failed job.
    #[serde(default)]
    pub error: Option<String>,
    /// Tasks that succeeded (absent for jobs finished by their driver or a cancel).
    #[serde(default)]
    pub tasks_done: Option<u64>,
    /// Tasks that failed.
    #[serde(default)]
    pub tasks_failed: Option<u64>,
    /// Ready tasks withdrawn by a cancel or a driver's finish.
    #[serde(default)]
    pub tasks_withdrawn: Option<u64>,
}

/// `phase`: an optimize job entered a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseChanged {
    /// The new phase.
    pub phase: Phase,
}

/// `rewards`: the rewards of one learning round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rewards {
    /// The round.
    pub iteration: u32,
    /// Its rewards (samples whose measurement failed are left out).
    pub rewards: Vec<f64>,
}

/// `policy_update`: a committed policy update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    /// Version committed by the update.
    pub policy_version: i64,
    /// The learning round it belongs to (absent in documents of older drivers).
    #[serde(default)]
    pub iteration: Option<u32>,
    /// Rounds planned (absent in documents of older drivers).
    #[serde(default)]
    pub iterations: Option<u32>,
    /// Loss of the step (`None` if not finite).
    #[serde(default)]
    pub loss: Option<f64>,
    /// Reward baseline after the update.
    #[serde(default)]
    pub baseline: Option<f64>,
    /// Mean of the rewards used.
    #[serde(default)]
    pub mean_reward: Option<f64>,
    /// The round's rewards.
    #[serde(default)]
    pub rewards: Vec<f64>,
    /// Samples consumed.
    #[serde(default)]
    pub samples_used: u64,
    /// Samples dropped as stale.
    #[serde(default)]
    pub samples_stale: u64,
    /// Mean policy entropy of the samples.
    #[serde(default)]
    pub entropy: Option<f64>,
}

/// `new_best`: the best transformation of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBest {
    /// Index of the input architecture (into `spec.architectures`).
    pub input_index: u32,
    /// The genotype (its JSON object).
    pub genotype: Value,
    /// Its accuracy.
    pub accuracy: f64,
    /// Its accuracy minus the input's on the same budget, when the input's is known.
    #[serde(default)]
    pub reward: Option<f64>,
    /// The input's accuracy on that budget, when known.
    #[serde(default)]
    pub input_accuracy: Option<f64>,
}

/// A decoded event payload.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// `job_created`.
    JobCreated(JobCreated),
    /// `tasks_added`.
    TasksAdded(TasksAdded),
    /// `task_succeeded`.
    TaskSucceeded(TaskSucceeded),
    /// `task_retry`.
    TaskRetry(TaskRetry),
    /// `task_failed`.
    TaskFailed(TaskFailed),
    /// `task_progress`.
    TaskProgress(TaskProgress),
    /// `job_finished`.
    JobFinished(JobFinished),
    /// `phase`.
    Phase(PhaseChanged),
    /// `rewards`.
    Rewards(Rewards),
    /// `policy_update`.
    PolicyUpdate(PolicyUpdate),
    /// `new_best`.
    NewBest(NewBest),
    /// A kind this build does not know (written by a newer coordinator).
    Other(String),
}

impl JobEvent {
    /// Decodes a stored event of `kind` with `payload`.
    pub fn decode(kind: &str, payload: &Value) -> Result<JobEvent, DecodeError> {
        let Ok(kind) = kind.parse::<EventKind>() else {
            return Ok(JobEvent::Other(kind.to_string()));
        };
        Ok(match kind {
            EventKind::JobCreated => JobEvent::JobCreated(decode("job_created event", payload)?),
            EventKind::TasksAdded => JobEvent::TasksAdded(decode("tasks_added event", payload)?),
            EventKind::TaskSucceeded => {
                JobEvent::TaskSucceeded(decode("task_succeeded event", payload)?)
            }
            EventKind::TaskRetry => JobEvent::TaskRetry(decode("task_retry event", payload)?),
            EventKind::TaskFailed => JobEvent::TaskFailed(decode("task_failed event", payload)?),
            EventKind::TaskProgress => {
                JobEvent::TaskProgress(decode("task_progress event", payload)?)
            }
            EventKind::JobFinished => JobEvent::JobFinished(decode("job_finished event", payload)?),
            EventKind::Phase => JobEvent::Phase(decode("phase event", payload)?),
            EventKind::Rewards => JobEvent::Rewards(decode("rewards event", payload)?),
            EventKind::PolicyUpdate => {
                JobEvent::PolicyUpdate(decode("policy_update event", payload)?)
            }
            EventKind::NewBest => JobEvent::NewBest(decode("new_best event", payload)?),
        })
    }
}
