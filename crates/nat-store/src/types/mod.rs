//! Domain types exchanged with the [`Store`](crate::Store). The reward and policy types are in
//! `types/policy.rs`, the supernet and blob types in `types/supernet.rs` (both re-exported
//! here).
//!
//! Free-form parts (job specs, task payloads, results, event payloads, genotypes) are
//! `serde_json::Value`: their schema belongs to the coordinator and policy crates, the store only
//! keeps them durable. Everything the store itself interprets (states, requirements, capabilities,
//! counters, tokens, reward keys) is typed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;

mod auth;
mod leader;
mod policy;
mod supernet;
pub use auth::*;
pub use leader::*;
pub use policy::*;
pub use supernet::*;

pub use nat_schema::{JobId, ParseIdError, SampleId, TaskId, WorkerId};

/// Bounds enforced on input by the store (the coordinator validates first; these are the last
/// line of defence so that nothing absurd becomes durable).
pub mod limits {
    /// Smallest accepted job priority.
    pub const MIN_PRIORITY: i32 = -1000;
    /// Largest accepted job priority.
    pub const MAX_PRIORITY: i32 = 1000;
    /// Largest accepted `max_attempts` of a task.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// Most tasks accepted in one `create_job`/`add_tasks` call.
    pub const MAX_TASKS_PER_CALL: usize = 100_000;
    /// Longest accepted kind / name / reason string, in bytes.
    pub const MAX_TEXT_LEN: usize = 4096;
    /// Most rows returned by one list call.
    pub const MAX_PAGE: u32 = 10_000;
    /// Most requests in one `lease_tasks` / `report_results` batch.
    pub const MAX_BATCH: usize = 1_000;
    /// Longest accepted blob key (and supernet `blob_key`), in bytes.
    pub const MAX_BLOB_KEY_LEN: usize = 512;
    /// Most sample rewards committed with one supernet version, and most workers named by it.
    pub const MAX_SUPERNET_REWARDS: usize = 100_000;
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// The text stored in the database (and used in JSON).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::invalid(
                        stringify!($name),
                        format!("unknown value {other:?}"),
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// Life cycle of a job: `queued` until its first task is leased, then `running`, then one of
    /// the three final states.
    JobState {
        /// Created, no task leased yet.
        Queued => "queued",
        /// At least one task was leased.
        Running => "running",
        /// Finished successfully (final).
        Succeeded => "succeeded",
        /// Finished with an error (final).
        Failed => "failed",
        /// Cancelled by a user (final).
        Cancelled => "cancelled",
    }
);

impl JobState {
    /// True for `succeeded`, `failed` and `cancelled`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

string_enum!(
    /// Life cycle of a task.
    TaskState {
        /// Waiting for a worker.
        Ready => "ready",
        /// Held by a worker under a lease (which may have expired and not yet been collected).
        Leased => "leased",
        /// Finished successfully (final).
        Done => "done",
        /// Failed for good: a non-retryable failure, or `max_attempts` reached (final).
        Failed => "failed",
        /// Withdrawn because its job was cancelled (final).
        Cancelled => "cancelled",
    }
);

impl TaskState {
    /// True for `done`, `failed` and `cancelled`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::Failed | TaskState::Cancelled
        )
    }
}

string_enum!(
    /// When a job is finished.
    Completion {
        /// The store finishes the job when its last task ends: `succeeded` if at least one task
        /// succeeded, `failed` if every task failed. Used by `evaluate` jobs.
        AllTasks => "all_tasks",
        /// The coordinator decides (phased jobs such as `optimize` add tasks as they go) and
        /// calls [`JobStore::finish_job`](crate::JobStore::finish_job).
        Manual => "manual",
    }
);

string_enum!(
    /// Liveness of a worker as last recorded.
    WorkerState {
        /// Heartbeating.
        Active => "active",
        /// Marked lost by [`LeaseStore::mark_lost_workers`](crate::LeaseStore::mark_lost_workers).
        Lost => "lost",
    }
);

/// What a task needs from a worker. Matched against [`Capabilities`] when leasing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requirements {
    /// The task needs at least one GPU.
    pub needs_gpu: bool,
    /// Minimum memory of the worker's largest GPU, in MiB (0 = no requirement).
    pub min_gpu_memory_mb: u64,
    /// Minimum number of CPU cores (0 = no requirement).
    pub min_cpu_cores: u32,
}

/// What a worker offers. Stored as JSON with the worker; the numeric fields are used to match
/// [`Requirements`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Number of GPUs.
    pub gpus: u32,
    /// Memory of the largest GPU in MiB.
    pub gpu_memory_mb: u64,
    /// GPU model, e.g. "NVIDIA H100".
    pub gpu_model: Option<String>,
    /// CPU cores available to tasks.
    pub cpu_cores: u32,
    /// Tasks the worker runs at once.
    pub slots: u32,
    /// Device names, e.g. `["cpu", "cuda:0"]`.
    pub devices: Vec<String>,
    /// Worker software version.
    pub version: String,
    /// Datasets the worker holds (lease matching: a task on another dataset is not offered to
    /// it); empty = unknown, any dataset. Stored with the worker, so the matching survives a
    /// coordinator restart.
    pub datasets: Vec<String>,
    /// Shapes and sizes the worker reported for (some of) `datasets`, by name: where a job on a
    /// user dataset learns its shape. Stored with the worker (rows written before it: none).
    pub dataset_infos: Vec<nat_schema::DatasetInfo>,
}

impl Capabilities {
    /// True when a worker with these capabilities can run a task with `req`.
    pub fn satisfies(&self, req: &Requirements) -> bool {
        (!req.needs_gpu || self.gpus > 0)
            && req.min_gpu_memory_mb <= self.gpu_memory_mb
            && req.min_cpu_cores <= self.cpu_cores
    }
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Job kind, e.g. `evaluate` or `optimize` (non-empty).
    pub kind: String,
    /// The validated job specification (opaque to the store).
    pub spec: Value,
    /// Scheduling priority, higher first, in `limits::MIN_PRIORITY..=limits::MAX_PRIORITY`.
    pub priority: i32,
    /// Who finishes the job.
    pub completion: Completion,
    /// Name of the token that submitted it (`None` without authentication).
    pub owner: Option<String>,
}

/// A task to create inside a job.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Task kind, e.g. `train_eval` (non-empty).
    pub kind: String,
    /// What the worker must do (opaque to the store).
    pub payload: Value,
    /// What the worker must have.
    pub requirements: Requirements,
    /// Leases granted before the task fails for good, in `1..=limits::MAX_ATTEMPTS`.
    pub max_attempts: u32,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// Kind, as given at creation.
    pub kind: String,
    /// Specification, as given at creation.
    pub spec: Value,
    /// Current state.
    pub state: JobState,
    /// Scheduling priority.
    pub priority: i32,
    /// Who finishes the job.
    pub completion: Completion,
    /// Number of tasks created so far.
    pub tasks_total: u64,
    /// Tasks that ended `done`.
    pub tasks_done: u64,
    /// Tasks that ended `failed`.
    pub tasks_failed: u64,
    /// Tasks that ended `cancelled`.
    pub tasks_cancelled: u64,
    /// Result document (set by [`JobStore::finish_job`](crate::JobStore::finish_job) or
    /// [`JobStore::set_job_result`](crate::JobStore::set_job_result)).
    pub result: Option<Value>,
    /// Error message of a failed job.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of the row.
    pub updated_at: DateTime<Utc>,
    /// When the job reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Name of the token that submitted it (`None` without authentication).
    pub owner: Option<String>,
    /// When a task of this job was last leased (round robin between equal priorities).
    pub last_served_at: Option<DateTime<Utc>>,
}

/// One failed attempt of a task, kept in order in [`Task::failures`]. An expired lease is
/// recorded with the reason `"lease expired"`; [`FailureRecord`]'s `Display` gives the full
/// sentence ("attempt 2: lease expired on worker … at …").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// The worker that held the lease.
    pub worker: Option<WorkerId>,
    /// Human-readable reason, e.g. "lease expired on worker … at …" or the worker's message.
    pub reason: String,
    /// When the failure happened (the lease expiry, or the report time); microseconds in JSON.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub at: DateTime<Utc>,
}

impl fmt::Display for FailureRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt {}: {}", self.attempt, self.reason)?;
        if let Some(worker) = self.worker {
            write!(f, " on worker {worker}")?;
        }
        write!(f, " at {}", self.at.to_rfc3339())
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// Id.
    pub id: TaskId,
    /// Owning job.
    pub job_id: JobId,
    /// Kind.
    pub kind: String,
    /// Payload, as given at creation.
    pub payload: Value,
    /// Requirements, as given at creation.
    pub requirements: Requirements,
    /// Current state.
    pub state: TaskState,
    /// Leases granted so far (the current one included).
    pub attempt: u32,
    /// Leases allowed.
    pub max_attempts: u32,
    /// Fencing token of the latest lease (0 before the first lease); strictly increasing.
    pub lease_token: i64,
    /// Worker of the latest lease.
    pub leased_by: Option<WorkerId>,
    /// Expiry of the current lease (only while `leased`).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Result reported by the worker (when `done`).
    pub result: Option<Value>,
    /// Last progress document reported for the current lease.
    pub progress: Option<Value>,
    /// One entry per failed attempt, oldest first.
    pub failures: Vec<FailureRecord>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of the row.
    pub updated_at: DateTime<Utc>,
    /// When the task reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A granted lease: the task, and the fencing token that every report must carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lease {
    /// The task, as stored after the claim.
    pub task: Task,
    /// Fencing token; only reports with this token (and the same worker) are accepted.
    pub token: i64,
    /// Attempt number of this lease (1-based).
    pub attempt: u32,
    /// When the lease expires unless extended by a heartbeat.
    pub expires_at: DateTime<Utc>,
}

/// A worker's report on its lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task succeeded.
    Succeeded {
        /// Result document.
        result: Value,
        /// Observations folded into the reward-estimate table in the same transaction.
        rewards: Vec<RewardObservation>,
        /// Rewards of policy samples set in the same transaction (first value wins), so that a
        /// reward is recorded exactly once even if the coordinator crashes right after.
        sample_rewards: Vec<SampleReward>,
    },
    /// The task failed on the worker.
    Failed {
        /// Message for the user (kept in [`Task::failures`]).
        reason: String,
        /// When true and attempts remain, the task returns to the queue.
        retryable: bool,
    },
}

/// One worker slot asking for a task, for [`LeaseStore::lease_tasks`](crate::LeaseStore::lease_tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The worker, or `None` for a *reservation*: the coordinator claims the task for a slot
    /// that will ask for it soon, and hands it to a worker later (see
    /// [`LeaseStore::assign_leases`](crate::LeaseStore::assign_leases)). A reservation is a lease like
    /// any other (attempt, fencing token, expiry) with no worker recorded yet.
    pub worker: Option<WorkerId>,
    /// What it offers.
    pub capabilities: Capabilities,
    /// Datasets the slot's worker has locally; empty = unknown (no filtering). A task whose
    /// payload names a top-level `"dataset"` is given only to slots that list it (or list none).
    pub datasets: Vec<String>,
}

/// A reserved lease handed to a worker, for
/// [`LeaseStore::assign_leases`](crate::LeaseStore::assign_leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAssignment {
    /// The task.
    pub task_id: TaskId,
    /// The reservation's fencing token (handed to the worker unchanged).
    pub token: i64,
    /// The worker that now holds it.
    pub worker: WorkerId,
    /// The lease's expiry as told to the worker.
    pub expires_at: DateTime<Utc>,
}

/// One report, for [`LeaseStore::report_results`](crate::LeaseStore::report_results).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportItem {
    /// The task.
    pub task: TaskId,
    /// The lease token.
    pub token: i64,
    /// The reporting worker.
    pub worker: WorkerId,
    /// What happened.
    pub outcome: Outcome,
}

/// Answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ReportAck {
    /// The report was applied.
    Accepted {
        /// The task's job.
        job_id: JobId,
        /// The task's state after the report (`done`, `failed`, `ready` for a retry, or
        /// `cancelled` when the job was cancelled meanwhile).
        task_state: TaskState,
        /// The job's state after the report (a final state if this report finished it).
        job_state: JobState,
    },
    /// The same report (same task, token and worker) was already applied; nothing changed.
    Duplicate,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeartbeatAck {
    /// Leases of this worker that were extended.
    pub extended: Vec<TaskId>,
    /// Tasks the worker must stop: their job was cancelled, or the worker no longer holds their
    /// lease (expired and re-leased, or finished).
    pub stop: Vec<TaskId>,
    /// New expiry of the extended leases.
    pub lease_expires_at: DateTime<Utc>,
}

/// A task a worker says it is running, sent with each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    /// The task.
    pub task_id: TaskId,
    /// The token the worker holds for it.
    pub token: i64,
}

/// What [`LeaseStore::expire_leases`](crate::LeaseStore::expire_leases) did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ExpiryReport {
    /// Tasks returned to the queue.
    pub requeued: Vec<TaskId>,
    /// Tasks that failed for good (attempts exhausted).
    pub failed: Vec<TaskId>,
    /// Leased tasks of cancelled jobs that are now `cancelled`.
    pub cancelled: Vec<TaskId>,
    /// Jobs that reached a final state as a consequence.
    pub finished_jobs: Vec<JobId>,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worker {
    /// Id (assigned by the store).
    pub id: WorkerId,
    /// Name given by the worker (host name, for instance).
    pub name: String,
    /// Capabilities given at registration.
    pub capabilities: Capabilities,
    /// Liveness.
    pub state: WorkerState,
    /// Last heartbeat (registration counts as one).
    pub last_heartbeat_at: DateTime<Utc>,
    /// Registration time.
    pub registered_at: DateTime<Utc>,
    /// Tasks leased to it right now (state `leased`: not yet reported, nor collected after
    /// expiry). 0 in the answer of [`LeaseStore::register_worker`](crate::LeaseStore::register_worker).
    pub tasks_in_hand: u32,
}

/// An entry of the per-job event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The job.
    pub job_id: JobId,
    /// Position in the job's log: 1, 2, 3, … without gaps, in commit order.
    pub seq: i64,
    /// Kind (see [`event_kind`]).
    pub kind: String,
    /// Details.
    pub payload: Value,
    /// When the event was appended.
    pub created_at: DateTime<Utc>,
}

/// Event kinds written by the store itself. Callers may append their own kinds.
///
/// The names come from `nat_schema::EventKind` (one definition for every component); the payload
/// of each is the type of that name in `nat_schema::event`.
pub mod event_kind {
    use nat_schema::EventKind;

    /// A job was created. Payload: `{kind, priority, tasks}`.
    pub const JOB_CREATED: &str = EventKind::JobCreated.as_str();
    /// Tasks were added. Payload: `{added, tasks_total}`.
    pub const TASKS_ADDED: &str = EventKind::TasksAdded.as_str();
    /// A task succeeded. Payload: `{task_id, attempt, result}`.
    pub const TASK_SUCCEEDED: &str = EventKind::TaskSucceeded.as_str();
    /// A task attempt failed and the task was requeued. Payload: `{task_id, attempt, reason}`.
    pub const TASK_RETRY: &str = EventKind::TaskRetry.as_str();
    /// A task failed for good. Payload: `{task_id, attempt, reasons}`.
    pub const TASK_FAILED: &str = EventKind::TaskFailed.as_str();
    /// Progress of a long task. Payload: `{task_id, attempt, progress}`.
    pub const TASK_PROGRESS: &str = EventKind::TaskProgress.as_str();
    /// The job reached a final state. Payload: `{state, error, …}`.
    pub const JOB_FINISHED: &str = EventKind::JobFinished.as_str();
}

/// Filter and page of [`JobStore::list_jobs`](crate::JobStore::list_jobs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this owner (the `owner` field of the job's spec, i.e. the name of the token
    /// that submitted it).
    pub owner: Option<String>,
    /// Page size (1..=limits::MAX_PAGE; 0 means 100).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

/// A job's final outcome, for [`JobStore::finish_job`](crate::JobStore::finish_job).
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The job succeeded with this result.
    Succeeded {
        /// Result document.
        result: Value,
    },
    /// The job failed.
    Failed {
        /// Message for the user.
        error: String,
        /// Partial result, if any.
        result: Option<Value>,
    },
}
