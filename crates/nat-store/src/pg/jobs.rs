//! [`JobStore`] on PostgreSQL: jobs and tasks, and the helpers that write a job's accounting.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;

use super::rows::*;
use super::PgStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::JobStore;
use crate::types::*;

/// Locks a job row (after any task rows the caller holds) and reads its accounting.
pub(super) async fn lock_account(tx: &mut PgConnection, job: JobId) -> Result<Option<JobAccount>> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM jobs j WHERE j.id = $1 FOR NO KEY UPDATE"
    ))
    .bind(job)
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Writes back a job's accounting and appends its pending events.
pub(super) async fn write_account(
    tx: &mut PgConnection,
    job: JobId,
    acc: &JobAccount,
    events: &[PendingEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = $2, tasks_total = $3, tasks_done = $4, tasks_failed = $5, \
         tasks_cancelled = $6, event_seq = $7, error = $8, finished_at = $9, updated_at = $10 \
         WHERE id = $1",
    )
    .bind(job)
    .bind(acc.state.as_str())
    .bind(acc.total)
    .bind(acc.done)
    .bind(acc.failed)
    .bind(acc.cancelled)
    .bind(acc.event_seq)
    .bind(&acc.error)
    .bind(acc.finished_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_events(tx, job, events, now).await
}

async fn insert_events(
    tx: &mut PgConnection,
    job: JobId,
    events: &[PendingEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    match events {
        [] => Ok(()),
        [e] => {
            sqlx::query(
                "INSERT INTO events (job_id, seq, kind, payload, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job)
            .bind(e.seq)
            .bind(e.kind)
            .bind(Json(&e.payload))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        many => {
            let seqs: Vec<i64> = many.iter().map(|e| e.seq).collect();
            let kinds: Vec<&str> = many.iter().map(|e| e.kind).collect();
            let payloads: Vec<Json<&Value>> = many.iter().map(|e| Json(&e.payload)).collect();
            sqlx::query(
                "INSERT INTO events (job_id, seq, kind, payload, created_at) \
                 SELECT $1, s, k, p, $5 FROM UNNEST($2::bigint[], $3::text[], $4::jsonb[]) AS u(s, k, p)",
            )
            .bind(job)
            .bind(seqs)
            .bind(kinds)
            .bind(payloads)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
    }
}

async fn insert_tasks(
    tx: &mut PgConnection,
    job: JobId,
    first_seq: i64,
    tasks: &[NewTask],
    now: DateTime<Utc>,
) -> Result<Vec<TaskId>> {
    let ids: Vec<TaskId> = tasks.iter().map(|_| TaskId::new()).collect();
    // Batches keep each statement's parameter arrays moderate.
    for (chunk_no, chunk) in tasks.chunks(5000).enumerate() {
        let base = chunk_no * 5000;
        let chunk_ids = &ids[base..base + chunk.len()];
        let seqs: Vec<i64> = (0..chunk.len())
            .map(|i| first_seq + (base + i) as i64)
            .collect();
        let kinds: Vec<&str> = chunk.iter().map(|t| t.kind.as_str()).collect();
        let payloads: Vec<Json<&Value>> = chunk.iter().map(|t| Json(&t.payload)).collect();
        let reqs: Vec<Json<&Requirements>> = chunk.iter().map(|t| Json(&t.requirements)).collect();
        let gpu: Vec<bool> = chunk.iter().map(|t| t.requirements.needs_gpu).collect();
        let mem: Vec<i64> = chunk
            .iter()
            .map(|t| t.requirements.min_gpu_memory_mb as i64)
            .collect();
        let cores: Vec<i32> = chunk
            .iter()
            .map(|t| t.requirements.min_cpu_cores as i32)
            .collect();
        let max_attempts: Vec<i32> = chunk.iter().map(|t| t.max_attempts as i32).collect();
        sqlx::query(
            "INSERT INTO tasks (id, job_id, seq, kind, payload, requirements, needs_gpu, \
               min_gpu_memory_mb, min_cpu_cores, state, max_attempts, next_claim_at, created_at, updated_at) \
             SELECT u.id, $1, u.seq, u.kind, u.payload, u.req, u.gpu, u.mem, u.cores, 'ready', u.ma, $2, $2, $2 \
             FROM UNNEST($3::uuid[], $4::bigint[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bool[], \
                         $9::bigint[], $10::int[], $11::int[]) AS u(id, seq, kind, payload, req, gpu, mem, cores, ma)",
        )
        .bind(job)
        .bind(now)
        .bind(chunk_ids)
        .bind(seqs)
        .bind(kinds)
        .bind(payloads)
        .bind(reqs)
        .bind(gpu)
        .bind(mem)
        .bind(cores)
        .bind(max_attempts)
        .execute(&mut *tx)
        .await?;
    }
    Ok(ids)
}

impl PgStore {
    /// Cancels or finishes a job (see `cancel_job`).
    async fn end_job(&self, id: JobId, end: JobEnd, now: DateTime<Utc>) -> Result<Job> {
        let mut tx = self.begin().await?;
        // The job row first: every transition that changes the job's tasks holds it, so once we
        // have it no report or expiry of this job is in flight. The ready tasks are then
        // withdrawn with SKIP LOCKED, so this never waits for a task lock (no deadlock with a
        // lease that holds a task and waits for the job row): a task being leased right now is
        // skipped, ends up leased in a cancelled job, and is told to stop by the heartbeat.
        let mut acc = job_open_to_end(id, lock_account(&mut tx, id).await?)?;
        let withdrawn = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', next_claim_at = NULL, lease_expires_at = NULL, \
               finished_at = $2, updated_at = $2 \
             WHERE id IN (SELECT id FROM tasks WHERE job_id = $1 \
               AND (state = 'ready' OR (state = 'leased' AND leased_by IS NULL)) FOR UPDATE SKIP LOCKED)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let ev = acc.end(end.state, end.error, withdrawn, now);
        write_account(&mut tx, id, &acc, &[ev], now).await?;
        if let Some(result) = end.result {
            sqlx::query("UPDATE jobs SET result = $2 WHERE id = $1")
                .bind(id)
                .bind(result.map(Json))
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let job = job_from_row(&row)?;
        tx.commit().await?;
        Ok(job)
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn create_job(
        &self,
        job: NewJob,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        validate_job(&job, &tasks)?;
        let id = JobId::new();
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (id, kind, spec, state, priority, completion, tasks_total, event_seq, \
               created_at, updated_at, owner) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, 1, $7, $7, $8) RETURNING {JOB_COLS}"
        ))
        .bind(id)
        .bind(&job.kind)
        .bind(Json(&job.spec))
        .bind(job.priority)
        .bind(job.completion.as_str())
        .bind(tasks.len() as i64)
        .bind(now)
        .bind(job.owner.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        let created = job_from_row(&row)?;
        insert_tasks(&mut tx, id, 0, &tasks, now).await?;
        let ev = job_created_event(&job, tasks.len());
        insert_events(&mut tx, id, &[ev], now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_job(&self, id: JobId) -> Result<Job> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => job_from_row(&row),
            None => Err(StoreError::not_found(Entity::Job, id)),
        }
    }

    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>> {
        let limit = page_limit(filter.limit)?;
        let offset = page_offset(filter.offset)?;
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLS} FROM jobs \
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) \
               AND ($5::text IS NULL OR owner = $5) \
             ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.kind.as_deref())
        .bind(limit)
        .bind(offset)
        .bind(filter.owner.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn add_tasks(
        &self,
        job: JobId,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskId>> {
        validate_tasks(&tasks)?;
        let mut tx = self.begin().await?;
        let mut acc = job_open_for_tasks(job, lock_account(&mut tx, job).await?)?;
        let ids = insert_tasks(&mut tx, job, acc.total, &tasks, now).await?;
        let ev = acc.add_tasks(tasks.len());
        write_account(&mut tx, job, &acc, &[ev], now).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn cancel_job(&self, id: JobId, now: DateTime<Utc>) -> Result<Job> {
        self.end_job(id, JobEnd::cancel(), now).await
    }

    async fn finish_job(&self, id: JobId, outcome: JobOutcome, now: DateTime<Utc>) -> Result<Job> {
        self.end_job(id, JobEnd::finish(outcome)?, now).await
    }

    async fn set_job_result(&self, id: JobId, result: Value, now: DateTime<Utc>) -> Result<()> {
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET result = CASE WHEN state IN ('queued', 'running') THEN $2 ELSE result END, \
               updated_at = CASE WHEN state IN ('queued', 'running') THEN $3 ELSE updated_at END \
             WHERE id = $1 RETURNING state",
        )
        .bind(id)
        .bind(Json(&result))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let state = state.map(|s| parse("jobs.state", &s)).transpose()?;
        set_result_answer(id, state)
    }

    async fn get_task(&self, id: TaskId) -> Result<Task> {
        let row = sqlx::query(&format!("SELECT {TASK_COLS} FROM tasks t WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => task_from_row(&row),
            None => Err(StoreError::not_found(Entity::Task, id)),
        }
    }

    async fn list_tasks(
        &self,
        job: JobId,
        state: Option<TaskState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Task>> {
        let limit = page_limit(limit)?;
        let offset = page_offset(offset)?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(Entity::Job, job));
        }
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLS} FROM tasks t WHERE t.job_id = $1 AND ($2::text IS NULL OR t.state = $2) \
             ORDER BY t.seq LIMIT $3 OFFSET $4"
        ))
        .bind(job)
        .bind(state.map(|s| s.as_str()))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }
}
