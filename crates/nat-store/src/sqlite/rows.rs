//! Row decoders of the SQLite backend, the column lists they decode, and the encodings of
//! timestamps (integer microseconds), UUIDs (text) and JSON (text).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::logic::{parse, to_u32, to_u64, JobAccount, LeaseRow};
use crate::types::*;

pub(super) const TASK_COLS: &str =
    "t.id, t.job_id, t.kind, t.payload, t.requirements, t.state, t.attempt, \
    t.max_attempts, t.lease_token, t.leased_by, t.lease_expires_at, t.result, t.progress, \
    t.failures, t.created_at, t.updated_at, t.finished_at";

pub(super) const JOB_COLS: &str =
    "id, kind, spec, state, priority, completion, tasks_total, tasks_done, \
    tasks_failed, tasks_cancelled, result, error, created_at, updated_at, finished_at, \
    last_served_at, owner";

pub(super) const ACCOUNT_COLS: &str =
    "j.state AS job_state, j.completion, j.tasks_total, j.tasks_done, \
    j.tasks_failed, j.tasks_cancelled, j.event_seq, j.error, j.finished_at";

pub(super) const SAMPLE_COLS: &str = "id, job_id, policy_id, policy_version, log_prob, entropy, \
    input_genotype, output_genotype, task_id, reward, consumed_in_version, dropped, created_at";

pub(super) const WORKER_COLS: &str =
    "id, name, capabilities, state, last_heartbeat_at, registered_at";
/// [`WORKER_COLS`] of `workers w` plus the number of tasks leased to the worker.
pub(super) const WORKER_COLS_IN_HAND: &str = "w.id, w.name, w.capabilities, w.state, w.last_heartbeat_at, \
    w.registered_at, (SELECT count(*) FROM tasks t WHERE t.leased_by = w.id AND t.state = 'leased') \
    AS tasks_in_hand";

/// Timestamps are stored as microseconds since the Unix epoch.
pub(super) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_ts(field: &str, v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::corrupt(format!("{field}: timestamp {v} out of range")))
}

pub(super) fn opt_ts(field: &str, v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(|v| from_ts(field, v)).transpose()
}

pub(super) fn get_ts(row: &SqliteRow, field: &str) -> Result<DateTime<Utc>> {
    from_ts(field, row.try_get(field)?)
}

pub(super) fn get_opt_ts(row: &SqliteRow, field: &str) -> Result<Option<DateTime<Utc>>> {
    opt_ts(field, row.try_get(field)?)
}

/// An id (job, task or worker) from its stored text.
pub(super) fn uuid_of<T: From<Uuid>>(field: &str, s: &str) -> Result<T> {
    Uuid::parse_str(s)
        .map(T::from)
        .map_err(|_| StoreError::corrupt(format!("{field}: bad uuid {s:?}")))
}

pub(super) fn get_uuid<T: From<Uuid>>(row: &SqliteRow, field: &str) -> Result<T> {
    let s: String = row.try_get(field)?;
    uuid_of(field, &s)
}

pub(super) fn get_opt_uuid<T: From<Uuid>>(row: &SqliteRow, field: &str) -> Result<Option<T>> {
    let s: Option<String> = row.try_get(field)?;
    s.map(|s| uuid_of(field, &s)).transpose()
}

pub(super) fn get_json<T: serde::de::DeserializeOwned>(row: &SqliteRow, field: &str) -> Result<T> {
    let s: String = row.try_get(field)?;
    serde_json::from_str(&s).map_err(|_| StoreError::corrupt(format!("{field}: bad JSON")))
}

pub(super) fn get_opt_json<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    field: &str,
) -> Result<Option<T>> {
    let s: Option<String> = row.try_get(field)?;
    s.map(|s| {
        serde_json::from_str(&s).map_err(|_| StoreError::corrupt(format!("{field}: bad JSON")))
    })
    .transpose()
}

pub(super) fn json_text<T: serde::Serialize>(field: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::invalid(field, "cannot be encoded as JSON"))
}

pub(super) fn get_enum<T: FromStr<Err = StoreError>>(row: &SqliteRow, field: &str) -> Result<T> {
    let s: String = row.try_get(field)?;
    parse(field, &s)
}

pub(super) fn job_from_row(row: &SqliteRow) -> Result<Job> {
    Ok(Job {
        id: get_uuid(row, "id")?,
        kind: row.try_get("kind")?,
        spec: get_json(row, "spec")?,
        state: get_enum(row, "state")?,
        priority: row.try_get("priority")?,
        completion: get_enum(row, "completion")?,
        tasks_total: to_u64("tasks_total", row.try_get("tasks_total")?)?,
        tasks_done: to_u64("tasks_done", row.try_get("tasks_done")?)?,
        tasks_failed: to_u64("tasks_failed", row.try_get("tasks_failed")?)?,
        tasks_cancelled: to_u64("tasks_cancelled", row.try_get("tasks_cancelled")?)?,
        result: get_opt_json(row, "result")?,
        error: row.try_get("error")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        finished_at: get_opt_ts(row, "finished_at")?,
        last_served_at: get_opt_ts(row, "last_served_at")?,
        owner: row.try_get("owner")?,
    })
}

pub(super) fn task_from_row(row: &SqliteRow) -> Result<Task> {
    Ok(Task {
        id: get_uuid(row, "id")?,
        job_id: get_uuid(row, "job_id")?,
        kind: row.try_get("kind")?,
        payload: get_json(row, "payload")?,
        requirements: get_json(row, "requirements")?,
        state: get_enum(row, "state")?,
        attempt: to_u32("attempt", row.try_get("attempt")?)?,
        max_attempts: to_u32("max_attempts", row.try_get("max_attempts")?)?,
        lease_token: row.try_get("lease_token")?,
        leased_by: get_opt_uuid(row, "leased_by")?,
        lease_expires_at: get_opt_ts(row, "lease_expires_at")?,
        result: get_opt_json(row, "result")?,
        progress: get_opt_json(row, "progress")?,
        failures: get_json(row, "failures")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        finished_at: get_opt_ts(row, "finished_at")?,
    })
}

pub(super) fn worker_from_row(row: &SqliteRow) -> Result<Worker> {
    Ok(Worker {
        id: get_uuid(row, "id")?,
        name: row.try_get("name")?,
        capabilities: get_json(row, "capabilities")?,
        state: get_enum(row, "state")?,
        last_heartbeat_at: get_ts(row, "last_heartbeat_at")?,
        registered_at: get_ts(row, "registered_at")?,
        tasks_in_hand: to_u32("tasks_in_hand", row.try_get("tasks_in_hand")?)?,
    })
}

pub(super) fn estimate_from_row(row: &SqliteRow) -> Result<RewardEstimate> {
    Ok(RewardEstimate {
        key: RewardKey {
            arch_hash: row.try_get("arch_hash")?,
            dataset: row.try_get("dataset")?,
            budget: row.try_get("budget")?,
        },
        count: to_u64("count", row.try_get("count")?)?,
        mean: row.try_get("mean")?,
        m2: row.try_get("m2")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

pub(super) fn checkpoint_from_row(row: &SqliteRow) -> Result<PolicyCheckpoint> {
    Ok(PolicyCheckpoint {
        policy_id: row.try_get("policy_id")?,
        version: row.try_get("version")?,
        space: row.try_get("space")?,
        params: row.try_get("params")?,
        optimizer_state: row.try_get("optimizer_state")?,
        baseline: row.try_get("baseline")?,
        source_job: get_opt_uuid(row, "source_job")?,
        meta: get_json(row, "meta")?,
        leader_epoch: row.try_get("leader_epoch")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub(super) fn sample_from_row(row: &SqliteRow) -> Result<PolicySample> {
    Ok(PolicySample {
        id: SampleId::from(row.try_get::<i64, _>("id")?),
        job_id: get_uuid(row, "job_id")?,
        policy_id: row.try_get("policy_id")?,
        policy_version: row.try_get("policy_version")?,
        log_prob: row.try_get("log_prob")?,
        entropy: row.try_get("entropy")?,
        input: get_json(row, "input_genotype")?,
        output: get_json(row, "output_genotype")?,
        task_id: get_opt_uuid(row, "task_id")?,
        reward: row.try_get("reward")?,
        consumed_in_version: row.try_get("consumed_in_version")?,
        dropped: row.try_get::<i64, _>("dropped")? != 0,
        created_at: get_ts(row, "created_at")?,
    })
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<Event> {
    Ok(Event {
        job_id: get_uuid(row, "job_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        payload: get_json(row, "payload")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub(super) fn account_from_row(row: &SqliteRow) -> Result<JobAccount> {
    Ok(JobAccount {
        state: get_enum(row, "job_state")?,
        completion: get_enum(row, "completion")?,
        total: row.try_get("tasks_total")?,
        done: row.try_get("tasks_done")?,
        failed: row.try_get("tasks_failed")?,
        cancelled: row.try_get("tasks_cancelled")?,
        event_seq: row.try_get("event_seq")?,
        error: row.try_get("error")?,
        finished_at: get_opt_ts(row, "finished_at")?,
    })
}

/// Decodes a report's read of its task (`reports::READ_LEASE_ROW`).
pub(super) fn lease_row_from_row(row: &SqliteRow) -> Result<LeaseRow> {
    Ok(LeaseRow {
        job_id: get_uuid(row, "job_id")?,
        state: get_enum(row, "state")?,
        attempt: to_u32("attempt", row.try_get("attempt")?)?,
        max_attempts: to_u32("max_attempts", row.try_get("max_attempts")?)?,
        lease_token: row.try_get("lease_token")?,
        leased_by: get_opt_uuid(row, "leased_by")?,
        reported_token: row.try_get("reported_token")?,
        failures: get_json(row, "failures")?,
        job_state: get_enum(row, "job_state")?,
    })
}
