//! Conversions between the store's rows, the typed documents of `nat_schema` and the wire
//! types. The documents themselves are defined in `nat_schema`; a stored document that does not
//! decode is an [`ApiError::Internal`]-class error naming the field ([`decode`]).

use chrono::{DateTime, Utc};
use nat_proto::v1;
use nat_schema::{
    DecodeError, JobKind, JobSpec, OptimizeJobSpec, TrainEvalPayload, TrainEvalResult,
};
use nat_store::{Capabilities, Job, JobState, Task, TaskState};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Reads a stored document as a `T`: an error naming the document and the field when it does
/// not fit (the coordinator wrote it, so this is an internal error, logged with its cause).
pub fn decode<T: DeserializeOwned>(document: &'static str, value: &Value) -> Result<T, ApiError> {
    nat_schema::decode(document, value).map_err(ApiError::from)
}

/// The JSON of a document the coordinator is about to store.
pub fn encode<T: serde::Serialize>(document: &'static str, value: &T) -> Result<Value, ApiError> {
    nat_schema::encode(document, value).map_err(ApiError::from)
}

/// The stored kind of a job, `None` for a kind this build does not know.
pub fn stored_job_kind(job: &Job) -> Option<JobKind> {
    job.kind.parse().ok()
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::Internal(nat_store::StoreError::backend(e))
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
    match kind.parse::<JobKind>() {
        Ok(JobKind::Evaluate) => v1::JobKind::Evaluate,
        Ok(JobKind::Optimize) => v1::JobKind::Optimize,
        Err(_) => v1::JobKind::Unspecified,
    }
}

/// The job kind of a wire kind (`None` for UNSPECIFIED).
pub fn schema_job_kind(kind: v1::JobKind) -> Option<JobKind> {
    match kind {
        v1::JobKind::Evaluate => Some(JobKind::Evaluate),
        v1::JobKind::Optimize => Some(JobKind::Optimize),
        v1::JobKind::Unspecified => None,
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The wire form of a stored job. `running` is the number of leased tasks when known. Every
/// job kind's spec starts with the shared [`JobSpec`] fields.
pub fn job_to_proto(job: &Job, running: Option<u64>) -> Result<v1::Job, ApiError> {
    let spec: JobSpec = decode("job spec", &job.spec)?;
    let finished = job.tasks_done + job.tasks_failed + job.tasks_cancelled;
    let mut out = v1::Job {
        job_id: job.id.to_string(),
        kind: job_kind(&job.kind) as i32,
        state: job_state(job.state) as i32,
        priority: job.priority,
        owner: job.owner.clone().unwrap_or_default(),
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
    out.requirements = Some(v1::TaskRequirements {
        device: if spec.needs_gpu() {
            v1::DeviceKind::Cuda as i32
        } else {
            v1::DeviceKind::Unspecified as i32
        },
        min_device_memory_bytes: spec.min_device_memory_bytes,
    });
    if stored_job_kind(job) == Some(JobKind::Optimize) {
        let optimize: OptimizeJobSpec = decode("optimize job spec", &job.spec)?;
        out.optimize = Some(optimize.optimize.to_proto());
    }
    out.name = spec.name;
    out.dataset = spec.dataset;
    out.dataset_shape = Some(nat_schema::dataset::shape_to_proto(spec.dataset_shape));
    out.seed = spec.seed;
    out.budget_preset = spec.budget_preset;
    out.budget = Some(spec.budget.to_proto());
    out.architectures = spec.architectures;
    Ok(out)
}

/// DARTS string of a canonical genotype JSON, or "" if it does not parse (never for stored ones).
pub fn darts_of(genotype_json: &str) -> String {
    nat_arch::Genotype::from_json_str(genotype_json)
        .map(|g| g.to_darts_string())
        .unwrap_or_default()
}

/// The per-architecture result of a `train_eval` task. The result is shown only for a task
/// that succeeded.
pub fn architecture_result(task: &Task) -> Result<v1::ArchitectureResult, ApiError> {
    let payload: TrainEvalPayload = decode("train_eval payload", &task.payload)?;
    let result = match (&task.result, task.state) {
        (Some(r), TaskState::Done) => Some(
            decode::<TrainEvalResult>("train_eval result", r)?
                .outcome
                .to_proto(),
        ),
        _ => None,
    };
    let error = if task.state == TaskState::Failed {
        task.failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        String::new()
    };
    Ok(v1::ArchitectureResult {
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

/// Whether the accepted report of `task`'s latest lease was discarded: the report found the
/// job ended and cancelled the task, so neither a result nor a failure of that attempt was
/// recorded (`ReportResultResponse.discarded`). A task that failed an attempt, went back to
/// the queue and was cancelled with its job keeps that failure: its report was not discarded.
pub fn report_discarded(task: &Task) -> bool {
    task.state == TaskState::Cancelled
        && task.result.is_none()
        && !task.failures.iter().any(|f| f.attempt == task.attempt)
}

/// The edges whose op differs between `a` and `b`, as text.
pub fn changed_edges(a: &nat_arch::Genotype, b: &nat_arch::Genotype) -> Vec<String> {
    nat_arch::edge_changes(a, b)
        .map(|changes| changes.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// Wire capabilities of stored ones (for listings).
pub fn capabilities_to_proto(c: &Capabilities) -> v1::WorkerCapabilities {
    let devices = c
        .devices
        .iter()
        .map(|d| {
            if let Some(index) = d.strip_prefix("cuda:") {
                v1::Device {
                    kind: v1::DeviceKind::Cuda as i32,
                    index: index.parse().unwrap_or(0),
                    model: c.gpu_model.clone().unwrap_or_default(),
                    memory_bytes: c.gpu_memory_mb * 1024 * 1024,
                    name: d.clone(),
                }
            } else {
                v1::Device {
                    kind: v1::DeviceKind::Cpu as i32,
                    index: 0,
                    model: String::new(),
                    memory_bytes: 0,
                    name: d.clone(),
                }
            }
        })
        .collect();
    v1::WorkerCapabilities {
        devices,
        cpu_cores: c.cpu_cores,
        slots: c.slots,
        version: c.version.clone(),
        hostname: String::new(),
        datasets: c.datasets.clone(),
        dataset_infos: c
            .dataset_infos
            .iter()
            .map(nat_schema::DatasetInfo::to_proto)
            .collect(),
    }
}
