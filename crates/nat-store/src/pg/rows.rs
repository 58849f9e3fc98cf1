//! Row decoders of the PostgreSQL backend, and the column lists they decode.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;

use crate::error::Result;
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

pub(super) fn job_from_row(row: &PgRow) -> Result<Job> {
    let state: String = row.try_get("state")?;
    let completion: String = row.try_get("completion")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        spec: row.try_get::<Json<Value>, _>("spec")?.0,
        state: parse("jobs.state", &state)?,
        priority: row.try_get("priority")?,
        completion: parse("jobs.completion", &completion)?,
        tasks_total: to_u64("tasks_total", row.try_get("tasks_total")?)?,
        tasks_done: to_u64("tasks_done", row.try_get("tasks_done")?)?,
        tasks_failed: to_u64("tasks_failed", row.try_get("tasks_failed")?)?,
        tasks_cancelled: to_u64("tasks_cancelled", row.try_get("tasks_cancelled")?)?,
        result: row
            .try_get::<Option<Json<Value>>, _>("result")?
            .map(|j| j.0),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        last_served_at: row.try_get("last_served_at")?,
        owner: row.try_get("owner")?,
    })
}

pub(super) fn task_from_row(row: &PgRow) -> Result<Task> {
    let state: String = row.try_get("state")?;
    Ok(Task {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        payload: row.try_get::<Json<Value>, _>("payload")?.0,
        requirements: row.try_get::<Json<Requirements>, _>("requirements")?.0,
        state: parse("tasks.state", &state)?,
        attempt: to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?,
        max_attempts: to_u32(
            "max_attempts",
            i64::from(row.try_get::<i32, _>("max_attempts")?),
        )?,
        lease_token: row.try_get("lease_token")?,
        leased_by: row.try_get("leased_by")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        result: row
            .try_get::<Option<Json<Value>>, _>("result")?
            .map(|j| j.0),
        progress: row
            .try_get::<Option<Json<Value>>, _>("progress")?
            .map(|j| j.0),
        failures: row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(super) fn worker_from_row(row: &PgRow) -> Result<Worker> {
    let state: String = row.try_get("state")?;
    Ok(Worker {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        capabilities: row.try_get::<Json<Capabilities>, _>("capabilities")?.0,
        state: parse("workers.state", &state)?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        registered_at: row.try_get("registered_at")?,
        tasks_in_hand: to_u32("tasks_in_hand", row.try_get("tasks_in_hand")?)?,
    })
}

pub(super) fn estimate_from_row(row: &PgRow) -> Result<RewardEstimate> {
    Ok(RewardEstimate {
        key: RewardKey {
            arch_hash: row.try_get("arch_hash")?,
            dataset: row.try_get("dataset")?,
            budget: row.try_get("budget")?,
        },
        count: to_u64("count", row.try_get("count")?)?,
        mean: row.try_get("mean")?,
        m2: row.try_get("m2")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn checkpoint_from_row(row: &PgRow) -> Result<PolicyCheckpoint> {
    Ok(PolicyCheckpoint {
        policy_id: row.try_get("policy_id")?,
        version: row.try_get("version")?,
        space: row.try_get("space")?,
        params: row.try_get("params")?,
        optimizer_state: row.try_get("optimizer_state")?,
        baseline: row.try_get("baseline")?,
        source_job: row.try_get("source_job")?,
        meta: row.try_get::<Json<Value>, _>("meta")?.0,
        leader_epoch: row.try_get("leader_epoch")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) const SAMPLE_COLS: &str = "id, job_id, policy_id, policy_version, log_prob, entropy, \
    input_genotype, output_genotype, task_id, reward, consumed_in_version, dropped, created_at";

pub(super) fn sample_from_row(row: &PgRow) -> Result<PolicySample> {
    Ok(PolicySample {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        policy_id: row.try_get("policy_id")?,
        policy_version: row.try_get("policy_version")?,
        log_prob: row.try_get("log_prob")?,
        entropy: row.try_get("entropy")?,
        input: row.try_get::<Json<Value>, _>("input_genotype")?.0,
        output: row.try_get::<Json<Value>, _>("output_genotype")?.0,
        task_id: row.try_get("task_id")?,
        reward: row.try_get("reward")?,
        consumed_in_version: row.try_get("consumed_in_version")?,
        dropped: row.try_get("dropped")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn account_from_row(row: &PgRow) -> Result<JobAccount> {
    let state: String = row.try_get("job_state")?;
    let completion: String = row.try_get("completion")?;
    Ok(JobAccount {
        state: parse("jobs.state", &state)?,
        completion: parse("jobs.completion", &completion)?,
        total: row.try_get("tasks_total")?,
        done: row.try_get("tasks_done")?,
        failed: row.try_get("tasks_failed")?,
        cancelled: row.try_get("tasks_cancelled")?,
        event_seq: row.try_get("event_seq")?,
        error: row.try_get("error")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(super) const ACCOUNT_COLS: &str =
    "j.state AS job_state, j.completion, j.tasks_total, j.tasks_done, \
    j.tasks_failed, j.tasks_cancelled, j.event_seq, j.error, j.finished_at";

pub(super) fn event_from_row(row: &PgRow) -> Result<Event> {
    Ok(Event {
        job_id: row.try_get("job_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        payload: row.try_get::<Json<Value>, _>("payload")?.0,
        created_at: row.try_get("created_at")?,
    })
}

/// Decodes a report's read of its task (`sql::READ_LEASE_ROW` and its variants).
pub(super) fn lease_row_from_row(row: &PgRow) -> Result<LeaseRow> {
    let state: String = row.try_get("state")?;
    let job_state: String = row.try_get("job_state")?;
    Ok(LeaseRow {
        job_id: row.try_get("job_id")?,
        state: parse("tasks.state", &state)?,
        attempt: to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?,
        max_attempts: to_u32(
            "max_attempts",
            i64::from(row.try_get::<i32, _>("max_attempts")?),
        )?,
        lease_token: row.try_get("lease_token")?,
        leased_by: row.try_get("leased_by")?,
        reported_token: row.try_get("reported_token")?,
        failures: row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0,
        job_state: parse("jobs.state", &job_state)?,
    })
}
