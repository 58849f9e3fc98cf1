//! The JSON documents the coordinator stores through the (schema-agnostic) store, and their
//! conversion to and from the wire types.

use chrono::{DateTime, Utc};
use nat_proto::v1;
use nat_store::{Job, JobState, Task, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::budget::Budget;

/// `jobs.spec` of an `evaluate` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Free-text label.
    pub name: String,
    /// Dataset wire name.
    pub dataset: String,
    /// Seed of every task.
    pub seed: u64,
    /// Preset the budget was resolved from.
    pub budget_preset: String,
    /// Resolved budget.
    pub budget: Budget,
    /// Canonical genotype JSON of each architecture, in submission order.
    pub architectures: Vec<String>,
    /// Device requirement: "" (any) or "cuda".
    #[serde(default)]
    pub device: String,
    /// Minimum GPU memory in bytes (0 = none).
    #[serde(default)]
    pub min_device_memory_bytes: u64,
}

/// `tasks.payload` of a `train_eval` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainEvalPayload {
    /// Position of the architecture in the job.
    pub index: u32,
    /// Canonical genotype JSON.
    pub genotype_json: String,
    /// `Genotype::canonical_hash` of it.
    pub arch_hash: String,
    /// Dataset wire name.
    pub dataset: String,
    /// Resolved budget.
    pub budget: Budget,
    /// Seed.
    pub seed: u64,
    /// Resume from checkpoints (final evaluations).
    #[serde(default)]
    pub checkpointed: bool,
    /// Checkpoint key, stable across attempts.
    #[serde(default)]
    pub checkpoint_key: String,
}

/// `tasks.result` of a `train_eval` task (the worker's `TrainEvalResult`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainEvalOutcome {
    /// Top-1 accuracy, fraction.
    pub accuracy: f64,
    /// Loss.
    pub loss: f64,
    /// Parameters.
    pub params: u64,
    /// Multiply-adds.
    pub madds: u64,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// Images per second.
    pub images_per_second: f64,
}

impl TrainEvalOutcome {
    /// From the wire, validated: every float finite, accuracy in [0, 1], the rest non-negative.
    pub fn from_proto(r: &v1::TrainEvalResult) -> Result<Self, crate::ApiError> {
        let check = |name: &str, v: f64, hi: f64| {
            if v.is_finite() && (0.0..=hi).contains(&v) {
                Ok(())
            } else {
                Err(crate::ApiError::invalid(
                    format!("train_eval.{name}"),
                    format!("must be a finite number in [0, {hi}], got {v}"),
                ))
            }
        };
        check("accuracy", r.accuracy, 1.0)?;
        check("loss", r.loss, 1e12)?;
        check("wall_seconds", r.wall_seconds, 1e9)?;
        check("images_per_second", r.images_per_second, 1e12)?;
        Ok(TrainEvalOutcome {
            accuracy: r.accuracy,
            loss: r.loss,
            params: r.params,
            madds: r.madds,
            wall_seconds: r.wall_seconds,
            images_per_second: r.images_per_second,
        })
    }

    /// To the wire.
    pub fn to_proto(self) -> v1::TrainEvalResult {
        v1::TrainEvalResult {
            accuracy: self.accuracy,
            loss: self.loss,
            params: self.params,
            madds: self.madds,
            wall_seconds: self.wall_seconds,
            images_per_second: self.images_per_second,
        }
    }
}

/// Unix milliseconds of a time.
pub fn unix_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Wire job state.
pub fn job_state(s: JobState) -> v1::JobState {
    match s {
        JobState::Queued => v1::JobState::Queued,
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

/// Store job state of a wire one (`None` for UNSPECIFIED).
pub fn store_job_state(s: v1::JobState) -> Option<JobState> {
    match s {
        v1::JobState::Unspecified => None,
        v1::JobState::Queued => Some(JobState::Queued),
        v1::JobState::Running => Some(JobState::Running),
        v1::JobState::Succeeded => Some(JobState::Succeeded),
        v1::JobState::Failed => Some(JobState::Failed),
        v1::JobState::Cancelled => Some(JobState::Cancelled),
    }
}

/// Wire task state.
pub fn task_state(s: TaskState) -> v1::TaskState {
    match s {
        TaskState::Ready => v1::TaskState::Queued,
        TaskState::Leased => v1::TaskState::Leased,
        TaskState::Done => v1::TaskState::Succeeded,
        TaskState::Failed => v1::TaskState::Failed,
        TaskState::Cancelled => v1::TaskState::Cancelled,
    }
}

/// Wire job kind of the stored kind text.
pub fn job_kind(kind: &str) -> v1::JobKind {
    match kind {
        "evaluate" => v1::JobKind::Evaluate,
        "optimize" => v1::JobKind::Optimize,
        _ => v1::JobKind::Unspecified,
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The wire form of a stored job. `running` is the number of leased tasks when known.
pub fn job_to_proto(job: &Job, running: Option<u64>) -> v1::Job {
    let spec: Option<JobSpec> = serde_json::from_value(job.spec.clone()).ok();
    let finished = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
    let mut out = v1::Job {
        job_id: job.id.to_string(),
        kind: job_kind(&job.kind) as i32,
        state: job_state(job.state) as i32,
        priority: job.priority,
        tasks_total: clamp_u32(job.tasks_total),
        tasks_pending: clamp_u32(job.tasks_total.saturating_sub(finished)),
        tasks_running: clamp_u32(running.unwrap_or(0)),
        tasks_succeeded: clamp_u32(job.tasks_done),
        tasks_failed: clamp_u32(job.tasks_failed),
        tasks_cancelled: clamp_u32(job.tasks_cancelled),
        created_at_unix_ms: unix_ms(job.created_at),
        updated_at_unix_ms: unix_ms(job.updated_at),
        finished_at_unix_ms: job.finished_at.map(unix_ms).unwrap_or(0),
        error: job.error.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(spec) = spec {
        out.name = spec.name;
        out.dataset = spec.dataset;
        out.seed = spec.seed;
        out.budget_preset = spec.budget_preset;
        out.budget = Some(spec.budget.to_proto());
        out.architectures = spec.architectures;
        out.requirements = Some(v1::TaskRequirements {
            device: if spec.device == "cuda" {
                v1::DeviceKind::Cuda as i32
            } else {
                v1::DeviceKind::Unspecified as i32
            },
            min_device_memory_bytes: spec.min_device_memory_bytes,
        });
    }
    out
}

/// The wire form of a leased `train_eval` task.
pub fn train_eval_task(p: &TrainEvalPayload) -> v1::TrainEvalTask {
    v1::TrainEvalTask {
        genotype_json: p.genotype_json.clone(),
        dataset: p.dataset.clone(),
        budget: Some(p.budget.to_proto()),
        seed: p.seed,
        checkpointed: p.checkpointed,
        checkpoint_key: p.checkpoint_key.clone(),
    }
}

/// DARTS string of a canonical genotype JSON, or "" if it does not parse (never for stored ones).
pub fn darts_of(genotype_json: &str) -> String {
    nat_arch::Genotype::from_json_str(genotype_json)
        .map(|g| g.to_darts_string())
        .unwrap_or_default()
}

/// The per-architecture result of a task of an `evaluate` job.
pub fn architecture_result(task: &Task) -> Option<v1::ArchitectureResult> {
    let payload: TrainEvalPayload = serde_json::from_value(task.payload.clone()).ok()?;
    let result = task
        .result
        .as_ref()
        .and_then(|r| serde_json::from_value::<TrainEvalOutcome>(r.clone()).ok())
        .map(TrainEvalOutcome::to_proto);
    let error = if task.state == TaskState::Failed {
        task.failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        String::new()
    };
    Some(v1::ArchitectureResult {
        index: payload.index,
        genotype_darts: darts_of(&payload.genotype_json),
        genotype_json: payload.genotype_json,
        canonical_hash: payload.arch_hash,
        state: task_state(task.state) as i32,
        result,
        error,
        attempts: task.attempt,
    })
}

/// Reads `key` of an event payload as a string.
pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
