//! [`JobStore`] on SQLite: jobs and tasks, and the helpers that read and write a job's
//! accounting.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteConnection;

use super::rows::*;
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::JobStore;
use crate::types::*;

pub(super) async fn read_account(
    tx: &mut SqliteConnection,
    job: JobId,
) -> Result<Option<JobAccount>> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM jobs j WHERE j.id = ?1"
    ))
    .bind(job.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(account_from_row).transpose()
}

pub(super) async fn write_account(
    tx: &mut SqliteConnection,
    job: JobId,
    acc: &JobAccount,
    events: &[PendingEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = ?2, tasks_total = ?3, tasks_done = ?4, tasks_failed = ?5, \
         tasks_cancelled = ?6, event_seq = ?7, error = ?8, finished_at = ?9, updated_at = ?10 \
         WHERE id = ?1",
    )
    .bind(job.to_string())
    .bind(acc.state.as_str())
    .bind(acc.total)
    .bind(acc.done)
    .bind(acc.failed)
    .bind(acc.cancelled)
    .bind(acc.event_seq)
    .bind(&acc.error)
    .bind(acc.finished_at.map(ts))
    .bind(ts(now))
    .execute(&mut *tx)
    .await?;
    insert_events(tx, job, events, now).await
}

async fn insert_events(
    tx: &mut SqliteConnection,
    job: JobId,
    events: &[PendingEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    let job = job.to_string();
    for e in events {
        sqlx::query(
            "INSERT INTO events (job_id, seq, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&job)
        .bind(e.seq)
        .bind(e.kind)
        .bind(json_text("payload", &e.payload)?)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn insert_tasks(
    tx: &mut SqliteConnection,
    job: JobId,
    first_seq: i64,
    tasks: &[NewTask],
    now: DateTime<Utc>,
) -> Result<Vec<TaskId>> {
    let job = job.to_string();
    let mut ids = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let id = TaskId::new();
        sqlx::query(
            "INSERT INTO tasks (id, job_id, seq, kind, payload, requirements, needs_gpu, \
               min_gpu_memory_mb, min_cpu_cores, state, max_attempts, next_claim_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'ready', ?10, ?11, ?11, ?11)",
        )
        .bind(id.to_string())
        .bind(&job)
        .bind(first_seq + i as i64)
        .bind(&t.kind)
        .bind(json_text(&format!("tasks[{i}].payload"), &t.payload)?)
        .bind(json_text(&format!("tasks[{i}].requirements"), &t.requirements)?)
        .bind(t.requirements.needs_gpu)
        .bind(t.requirements.min_gpu_memory_mb as i64)
        .bind(i64::from(t.requirements.min_cpu_cores))
        .bind(i64::from(t.max_attempts))
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

impl SqliteStore {
    /// Cancels or finishes a job (see `cancel_job`).
    async fn end_job(&self, id: JobId, end: JobEnd, now: DateTime<Utc>) -> Result<Job> {
        let mut tx = self.begin().await?;
        let mut acc = job_open_to_end(id, read_account(&mut tx, id).await?)?;
        let withdrawn = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', next_claim_at = NULL, lease_expires_at = NULL, \
               finished_at = ?2, updated_at = ?2 \
             WHERE job_id = ?1 AND (state = 'ready' OR (state = 'leased' AND leased_by IS NULL))",
        )
        .bind(id.to_string())
        .bind(ts(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let ev = acc.end(end.state, end.error, withdrawn, now);
        write_account(&mut tx, id, &acc, &[ev], now).await?;
        if let Some(result) = end.result {
            let text = result.map(|r| json_text("result", &r)).transpose()?;
            sqlx::query("UPDATE jobs SET result = ?2 WHERE id = ?1")
                .bind(id.to_string())
                .bind(text)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let job = job_from_row(&row)?;
        tx.commit().await?;
        Ok(job)
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(
        &self,
        job: NewJob,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        validate_job(&job, &tasks)?;
        let spec = json_text("spec", &job.spec)?;
        let id = JobId::new();
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (id, kind, spec, state, priority, completion, tasks_total, event_seq, \
               created_at, updated_at, owner) \
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, 1, ?7, ?7, ?8) RETURNING {JOB_COLS}"
        ))
        .bind(id.to_string())
        .bind(&job.kind)
        .bind(spec)
        .bind(job.priority)
        .bind(job.completion.as_str())
        .bind(tasks.len() as i64)
        .bind(ts(now))
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
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
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
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR kind = ?2) \
               AND (?5 IS NULL OR owner = ?5) \
             ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.kind.as_deref())
        .bind(limit)
        .bind(offset)
        .bind(filter.owner.as_deref())
        .fetch_all(&self.reader)
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
        let mut acc = job_open_for_tasks(job, read_account(&mut tx, job).await?)?;
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
        let text = json_text("result", &result)?;
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET result = CASE WHEN state IN ('queued', 'running') THEN ?2 ELSE result END, \
               updated_at = CASE WHEN state IN ('queued', 'running') THEN ?3 ELSE updated_at END \
             WHERE id = ?1 RETURNING state",
        )
        .bind(id.to_string())
        .bind(text)
        .bind(ts(now))
        .fetch_optional(&self.writer)
        .await?;
        let state = state.map(|s| parse("jobs.state", &s)).transpose()?;
        set_result_answer(id, state)
    }

    async fn get_task(&self, id: TaskId) -> Result<Task> {
        let row = sqlx::query(&format!("SELECT {TASK_COLS} FROM tasks t WHERE t.id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
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
        let mut conn = self.reader.acquire().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?1")
            .bind(job.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(Entity::Job, job));
        }
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLS} FROM tasks t WHERE t.job_id = ?1 AND (?2 IS NULL OR t.state = ?2) \
             ORDER BY t.seq LIMIT ?3 OFFSET ?4"
        ))
        .bind(job.to_string())
        .bind(state.map(|s| s.as_str()))
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(task_from_row).collect()
    }
}
