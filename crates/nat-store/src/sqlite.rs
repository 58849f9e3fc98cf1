//! SQLite backend.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::Store;
use crate::types::*;

const NAME: &str = "sqlite";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The SQLite store: one writer connection, a small pool of readers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database file at `path` and
    /// runs the migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
            }
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base)
            .await?;
        Ok(Self { writer, reader })
    }
}

const TASK_COLS: &str = "t.id, t.job_id, t.kind, t.payload, t.requirements, t.state, t.attempt, \
    t.max_attempts, t.lease_token, t.leased_by, t.lease_expires_at, t.result, t.progress, \
    t.failures, t.created_at, t.updated_at, t.finished_at";

const JOB_COLS: &str = "id, kind, spec, state, priority, completion, tasks_total, tasks_done, \
    tasks_failed, tasks_cancelled, result, error, created_at, updated_at, finished_at, \
    last_served_at";

const ACCOUNT_COLS: &str = "j.state AS job_state, j.completion, j.tasks_total, j.tasks_done, \
    j.tasks_failed, j.tasks_cancelled, j.event_seq, j.error, j.finished_at";

const SAMPLE_COLS: &str = "id, job_id, policy_id, policy_version, log_prob, entropy, \
    input_genotype, output_genotype, task_id, reward, consumed_in_version, dropped, created_at";

const WORKER_COLS: &str = "id, name, capabilities, state, last_heartbeat_at, registered_at";
/// [`WORKER_COLS`] of `workers w` plus the number of tasks leased to the worker.
const WORKER_COLS_IN_HAND: &str = "w.id, w.name, w.capabilities, w.state, w.last_heartbeat_at, \
    w.registered_at, (SELECT count(*) FROM tasks t WHERE t.leased_by = w.id AND t.state = 'leased') \
    AS tasks_in_hand";

/// Timestamps are stored as microseconds since the Unix epoch.
fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_ts(field: &str, v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::corrupt(format!("{field}: timestamp {v} out of range")))
}

fn opt_ts(field: &str, v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(|v| from_ts(field, v)).transpose()
}

fn get_ts(row: &SqliteRow, field: &str) -> Result<DateTime<Utc>> {
    from_ts(field, row.try_get(field)?)
}

fn get_opt_ts(row: &SqliteRow, field: &str) -> Result<Option<DateTime<Utc>>> {
    opt_ts(field, row.try_get(field)?)
}

fn uuid_of(field: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| StoreError::corrupt(format!("{field}: bad uuid {s:?}")))
}

fn get_uuid(row: &SqliteRow, field: &str) -> Result<Uuid> {
    let s: String = row.try_get(field)?;
    uuid_of(field, &s)
}

fn get_opt_uuid(row: &SqliteRow, field: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(field)?;
    s.map(|s| uuid_of(field, &s)).transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(row: &SqliteRow, field: &str) -> Result<T> {
    let s: String = row.try_get(field)?;
    serde_json::from_str(&s).map_err(|_| StoreError::corrupt(format!("{field}: bad JSON")))
}

fn get_opt_json<T: serde::de::DeserializeOwned>(row: &SqliteRow, field: &str) -> Result<Option<T>> {
    let s: Option<String> = row.try_get(field)?;
    s.map(|s| {
        serde_json::from_str(&s).map_err(|_| StoreError::corrupt(format!("{field}: bad JSON")))
    })
    .transpose()
}

fn json_text<T: serde::Serialize>(field: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::invalid(field, "cannot be encoded as JSON"))
}

fn parse<T: FromStr<Err = StoreError>>(field: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::corrupt(format!("{field}: {s:?}")))
}

fn get_enum<T: FromStr<Err = StoreError>>(row: &SqliteRow, field: &str) -> Result<T> {
    let s: String = row.try_get(field)?;
    parse(field, &s)
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
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
    })
}

fn task_from_row(row: &SqliteRow) -> Result<Task> {
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

fn worker_from_row(row: &SqliteRow) -> Result<Worker> {
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

fn estimate_from_row(row: &SqliteRow) -> Result<RewardEstimate> {
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

fn checkpoint_from_row(row: &SqliteRow) -> Result<PolicyCheckpoint> {
    Ok(PolicyCheckpoint {
        policy_id: row.try_get("policy_id")?,
        version: row.try_get("version")?,
        space: row.try_get("space")?,
        params: row.try_get("params")?,
        optimizer_state: row.try_get("optimizer_state")?,
        baseline: row.try_get("baseline")?,
        source_job: get_opt_uuid(row, "source_job")?,
        meta: get_json(row, "meta")?,
        created_at: get_ts(row, "created_at")?,
    })
}

fn sample_from_row(row: &SqliteRow) -> Result<PolicySample> {
    Ok(PolicySample {
        id: row.try_get("id")?,
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

fn event_from_row(row: &SqliteRow) -> Result<Event> {
    Ok(Event {
        job_id: get_uuid(row, "job_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        payload: get_json(row, "payload")?,
        created_at: get_ts(row, "created_at")?,
    })
}

fn account_from_row(row: &SqliteRow) -> Result<JobAccount> {
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

async fn read_account(tx: &mut SqliteConnection, job: JobId) -> Result<Option<JobAccount>> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLS} FROM jobs j WHERE j.id = ?1"
    ))
    .bind(job.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(account_from_row).transpose()
}

async fn write_account(
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

async fn upsert_reward(
    tx: &mut SqliteConnection,
    obs: &RewardObservation,
    now: DateTime<Utc>,
) -> Result<RewardEstimate> {
    // Welford: n' = n + 1, mean' = mean + (x - mean) / n', m2' = m2 + (x - mean) * (x - mean').
    let row = sqlx::query(
        "INSERT INTO reward_estimates AS r (arch_hash, dataset, budget, count, mean, m2, updated_at) \
         VALUES (?1, ?2, ?3, 1, ?4, 0.0, ?5) \
         ON CONFLICT (arch_hash, dataset, budget) DO UPDATE SET \
           count = r.count + 1, \
           mean = r.mean + (?4 - r.mean) / (r.count + 1), \
           m2 = r.m2 + (?4 - r.mean) * (?4 - (r.mean + (?4 - r.mean) / (r.count + 1))), \
           updated_at = ?5 \
         RETURNING arch_hash, dataset, budget, count, mean, m2, updated_at",
    )
    .bind(&obs.key.arch_hash)
    .bind(&obs.key.dataset)
    .bind(&obs.key.budget)
    .bind(obs.value)
    .bind(ts(now))
    .fetch_one(&mut *tx)
    .await?;
    estimate_from_row(&row)
}

async fn set_sample_rewards(tx: &mut SqliteConnection, rewards: &[SampleReward]) -> Result<()> {
    for r in rewards {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM policy_samples WHERE id = ?1")
            .bind(r.sample_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(Entity::PolicySample, r.sample_id));
        }
        sqlx::query("UPDATE policy_samples SET reward = ?2 WHERE id = ?1 AND reward IS NULL")
            .bind(r.sample_id)
            .bind(r.reward)
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
        let id = Uuid::new_v4();
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

/// Returns unassigned reservations to the queue (`?1` = now): state `ready`, the attempt given
/// back, claimable at once; the token is not reused. Callers append a filter on the rows.
const RELEASE_SQL: &str = "UPDATE tasks SET state = 'ready', attempt = attempt - 1, \
       lease_expires_at = NULL, next_claim_at = ?1, progress = NULL, updated_at = ?1 \
     WHERE state = 'leased' AND leased_by IS NULL";

impl SqliteStore {
    /// The claim of [`Store::lease_task`], also for the slots of [`Store::lease_tasks`]:
    /// `datasets` (empty = any) restricts tasks whose payload names a dataset.
    async fn claim(
        &self,
        worker: Option<WorkerId>,
        capabilities: &Capabilities,
        datasets: &[String],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Option<Lease>> {
        let expires = lease_expiry(now, lease_duration)?;
        let gpu_mem = i64::try_from(capabilities.gpu_memory_mb).unwrap_or(i64::MAX);
        let mut tx = self.writer.begin().await?;
        // SQLite serializes writers, so the claim cannot race; it is one statement all the same.
        let row = sqlx::query(&format!(
            "UPDATE tasks AS t SET \
               failures = CASE WHEN t.state = 'leased' THEN json_insert(t.failures, '$[#]', json_object( \
                 'attempt', t.attempt, 'worker', t.leased_by, 'reason', 'lease expired', \
                 'at', t.lease_expires_at)) ELSE t.failures END, \
               state = 'leased', attempt = t.attempt + 1, lease_token = t.lease_token + 1, \
               leased_by = ?5, lease_expires_at = ?6, \
               next_claim_at = CASE WHEN t.attempt + 1 < t.max_attempts THEN ?6 ELSE NULL END, \
               progress = NULL, updated_at = ?1 \
             WHERE t.id = ( \
               SELECT (SELECT c.id FROM tasks c \
                       WHERE c.job_id = j.id AND c.next_claim_at <= ?1 \
                         AND (c.needs_gpu = 0 OR ?2) AND c.min_gpu_memory_mb <= ?3 AND c.min_cpu_cores <= ?4 \
                         AND (?7 = '[]' OR c.dataset IS NULL OR c.dataset IN (SELECT value FROM json_each(?7))) \
                       ORDER BY c.next_claim_at, c.seq LIMIT 1) AS pick \
               FROM jobs j WHERE j.state IN ('queued', 'running') AND pick IS NOT NULL \
               ORDER BY j.priority DESC, COALESCE(j.last_served_at, -1), j.created_at, j.id LIMIT 1) \
             RETURNING {}",
            TASK_COLS.replace("t.", "")
        ))
        .bind(ts(now))
        .bind(capabilities.gpus > 0)
        .bind(gpu_mem)
        .bind(i64::from(capabilities.cpu_cores))
        .bind(worker.map(|w| w.to_string()))
        .bind(ts(expires))
        .bind(
            serde_json::to_string(datasets)
                .map_err(|_| StoreError::invalid("datasets", "cannot be encoded"))?,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let task = task_from_row(&row)?;
        sqlx::query(
            "UPDATE jobs SET last_served_at = ?2, updated_at = ?2, \
               state = CASE WHEN state = 'queued' THEN 'running' ELSE state END WHERE id = ?1",
        )
        .bind(task.job_id.to_string())
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Lease {
            token: task.lease_token,
            attempt: task.attempt,
            expires_at: expires,
            task,
        }))
    }

    async fn end_job(
        &self,
        id: JobId,
        final_state: JobState,
        result: Option<Option<Value>>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        let mut tx = self.writer.begin().await?;
        let Some(mut acc) = read_account(&mut tx, id).await? else {
            return Err(StoreError::not_found(Entity::Job, id));
        };
        if acc.state.is_final() {
            return Err(StoreError::FailedPrecondition(format!(
                "job {id} is already {}",
                acc.state
            )));
        }
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
        acc.cancelled += withdrawn as i64;
        acc.state = final_state;
        acc.error = error;
        acc.finished_at = Some(now);
        let ev = acc.event(
            event_kind::JOB_FINISHED,
            json!({ "state": final_state.as_str(), "error": acc.error, "tasks_withdrawn": withdrawn }),
        );
        write_account(&mut tx, id, &acc, &[ev], now).await?;
        if let Some(result) = result {
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    async fn create_job(
        &self,
        job: NewJob,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        validate_job(&job, &tasks)?;
        let spec = json_text("spec", &job.spec)?;
        let id = Uuid::new_v4();
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (id, kind, spec, state, priority, completion, tasks_total, event_seq, \
               created_at, updated_at) \
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, 1, ?7, ?7) RETURNING {JOB_COLS}"
        ))
        .bind(id.to_string())
        .bind(&job.kind)
        .bind(spec)
        .bind(job.priority)
        .bind(job.completion.as_str())
        .bind(tasks.len() as i64)
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await?;
        let created = job_from_row(&row)?;
        insert_tasks(&mut tx, id, 0, &tasks, now).await?;
        let ev = PendingEvent {
            seq: 1,
            kind: event_kind::JOB_CREATED,
            payload: json!({ "kind": job.kind, "priority": job.priority, "tasks": tasks.len() }),
        };
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
             ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.kind.as_deref())
        .bind(limit)
        .bind(offset)
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
        let mut tx = self.writer.begin().await?;
        let Some(mut acc) = read_account(&mut tx, job).await? else {
            return Err(StoreError::not_found(Entity::Job, job));
        };
        if acc.state.is_final() {
            return Err(StoreError::FailedPrecondition(format!(
                "job {job} is {}, tasks cannot be added",
                acc.state
            )));
        }
        let ids = insert_tasks(&mut tx, job, acc.total, &tasks, now).await?;
        acc.total += tasks.len() as i64;
        let ev = acc.event(
            event_kind::TASKS_ADDED,
            json!({ "added": tasks.len(), "tasks_total": acc.total }),
        );
        write_account(&mut tx, job, &acc, &[ev], now).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn cancel_job(&self, id: JobId, now: DateTime<Utc>) -> Result<Job> {
        self.end_job(id, JobState::Cancelled, None, None, now).await
    }

    async fn finish_job(&self, id: JobId, outcome: JobOutcome, now: DateTime<Utc>) -> Result<Job> {
        match outcome {
            JobOutcome::Succeeded { result } => {
                self.end_job(id, JobState::Succeeded, Some(Some(result)), None, now)
                    .await
            }
            JobOutcome::Failed { error, result } => {
                validate_text("error", &error)?;
                self.end_job(id, JobState::Failed, result.map(Some), Some(error), now)
                    .await
            }
        }
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
        match state {
            None => Err(StoreError::not_found(Entity::Job, id)),
            Some(s) => {
                let s: JobState = parse("jobs.state", &s)?;
                if s.is_final() {
                    Err(StoreError::FailedPrecondition(format!("job {id} is {s}")))
                } else {
                    Ok(())
                }
            }
        }
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

    async fn register_worker(
        &self,
        name: &str,
        capabilities: Capabilities,
        now: DateTime<Utc>,
    ) -> Result<Worker> {
        validate_text("name", name)?;
        let row = sqlx::query(&format!(
            "INSERT INTO workers (id, name, capabilities, state, last_heartbeat_at, registered_at) \
             VALUES (?1, ?2, ?3, 'active', ?4, ?4) RETURNING {WORKER_COLS}, 0 AS tasks_in_hand"
        ))
        .bind(Uuid::new_v4().to_string())
        .bind(name)
        .bind(json_text("capabilities", &capabilities)?)
        .bind(ts(now))
        .fetch_one(&self.writer)
        .await?;
        worker_from_row(&row)
    }

    async fn get_worker(&self, id: WorkerId) -> Result<Worker> {
        let row = sqlx::query(&format!(
            "SELECT {WORKER_COLS_IN_HAND} FROM workers w WHERE w.id = ?1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(row) => worker_from_row(&row),
            None => Err(StoreError::not_found(Entity::Worker, id)),
        }
    }

    async fn list_workers(&self) -> Result<Vec<Worker>> {
        let rows = sqlx::query(&format!(
            "SELECT {WORKER_COLS_IN_HAND} FROM workers w ORDER BY w.registered_at DESC, w.id"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    async fn mark_lost_workers(&self, cutoff: DateTime<Utc>) -> Result<Vec<WorkerId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE workers SET state = 'lost' WHERE state = 'active' AND last_heartbeat_at < ?1 \
             RETURNING id",
        )
        .bind(ts(cutoff))
        .fetch_all(&self.writer)
        .await?;
        ids.iter().map(|s| uuid_of("workers.id", s)).collect()
    }

    async fn heartbeat(
        &self,
        worker: WorkerId,
        held: &[HeldLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<HeartbeatAck> {
        let expires = lease_expiry(now, lease_duration)?;
        let mut tx = self.writer.begin().await?;
        let found = sqlx::query(
            "UPDATE workers SET last_heartbeat_at = ?2, state = 'active' WHERE id = ?1",
        )
        .bind(worker.to_string())
        .bind(ts(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if found == 0 {
            return Err(StoreError::not_found(Entity::Worker, worker));
        }
        // Only the leases the worker says it holds (task and token): a lease whose LeaseTask
        // response never reached the worker is not kept alive by its heartbeats and expires.
        let held_json = serde_json::Value::Array(
            held.iter()
                .map(|h| serde_json::json!([h.task_id.to_string(), h.token]))
                .collect(),
        )
        .to_string();
        let extended: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE tasks SET lease_expires_at = ?3, leased_by = ?1, \
               next_claim_at = CASE WHEN attempt < max_attempts THEN ?3 ELSE NULL END, \
               updated_at = ?2 \
             WHERE (leased_by = ?1 OR leased_by IS NULL) AND state = 'leased' \
               AND (SELECT j.state FROM jobs j WHERE j.id = tasks.job_id) <> 'cancelled' \
               AND EXISTS (SELECT 1 FROM json_each(?4) h \
                           WHERE json_extract(h.value, '$[0]') = tasks.id \
                             AND json_extract(h.value, '$[1]') = tasks.lease_token) \
             RETURNING id, lease_token",
        )
        .bind(worker.to_string())
        .bind(ts(now))
        .bind(ts(expires))
        .bind(held_json)
        .fetch_all(&mut *tx)
        .await?;
        let cancelled: Vec<String> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id \
             WHERE t.leased_by = ?1 AND t.state = 'leased' AND j.state = 'cancelled'",
        )
        .bind(worker.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let extended = extended
            .iter()
            .map(|(id, token)| Ok((uuid_of("tasks.id", id)?, *token)))
            .collect::<Result<Vec<_>>>()?;
        let cancelled = cancelled
            .iter()
            .map(|id| uuid_of("tasks.id", id))
            .collect::<Result<Vec<_>>>()?;
        Ok(heartbeat_ack(held, extended, cancelled, expires))
    }

    async fn lease_task(
        &self,
        worker: WorkerId,
        capabilities: &Capabilities,
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Option<Lease>> {
        self.claim(Some(worker), capabilities, &[], now, lease_duration)
            .await
    }

    async fn lease_tasks(
        &self,
        requests: &[LeaseRequest],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Vec<Option<Lease>>> {
        if requests.len() > limits::MAX_BATCH {
            return Err(StoreError::invalid(
                "requests",
                format!("more than {} in one batch", limits::MAX_BATCH),
            ));
        }
        // SQLite serializes writers: one claim after the other, each its own transaction.
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(
                self.claim(r.worker, &r.capabilities, &r.datasets, now, lease_duration)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn assign_leases(
        &self,
        assignments: &[LeaseAssignment],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        if assignments.is_empty() {
            return Ok(0);
        }
        let list = serde_json::Value::Array(
            assignments
                .iter()
                .map(|a| {
                    serde_json::json!([
                        a.task_id.to_string(),
                        a.token,
                        a.worker.to_string(),
                        ts(a.expires_at)
                    ])
                })
                .collect(),
        )
        .to_string();
        let done = sqlx::query(
            "UPDATE tasks AS t SET leased_by = json_extract(a.value, '$[2]'), \
               lease_expires_at = json_extract(a.value, '$[3]'), \
               next_claim_at = CASE WHEN t.attempt < t.max_attempts \
                 THEN json_extract(a.value, '$[3]') ELSE NULL END, \
               updated_at = ?1 \
             FROM json_each(?2) AS a \
             WHERE t.id = json_extract(a.value, '$[0]') AND t.lease_token = json_extract(a.value, '$[1]') \
               AND t.state = 'leased' AND t.leased_by IS NULL",
        )
        .bind(ts(now))
        .bind(list)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(done)
    }

    async fn release_leases(&self, leases: &[HeldLease], now: DateTime<Utc>) -> Result<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let list = serde_json::Value::Array(
            leases
                .iter()
                .map(|l| serde_json::json!([l.task_id.to_string(), l.token]))
                .collect(),
        )
        .to_string();
        let done = sqlx::query(&format!(
            "{RELEASE_SQL} AND EXISTS (SELECT 1 FROM json_each(?2) r \
               WHERE json_extract(r.value, '$[0]') = tasks.id \
                 AND json_extract(r.value, '$[1]') = tasks.lease_token)"
        ))
        .bind(ts(now))
        .bind(list)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(done)
    }

    async fn release_unassigned_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(RELEASE_SQL)
            .bind(ts(now))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(done)
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiryReport> {
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "UPDATE tasks AS t SET \
               state = CASE WHEN j.state IN ('queued', 'running') THEN \
                   CASE WHEN t.attempt < t.max_attempts THEN 'ready' ELSE 'failed' END \
                 ELSE 'cancelled' END, \
               failures = CASE WHEN j.state IN ('queued', 'running') THEN json_insert(t.failures, '$[#]', json_object( \
                   'attempt', t.attempt, 'worker', t.leased_by, 'reason', 'lease expired', \
                   'at', t.lease_expires_at)) ELSE t.failures END, \
               next_claim_at = CASE WHEN j.state IN ('queued', 'running') AND t.attempt < t.max_attempts THEN ?1 ELSE NULL END, \
               finished_at = CASE WHEN j.state IN ('queued', 'running') AND t.attempt < t.max_attempts THEN NULL ELSE ?1 END, \
               lease_expires_at = NULL, updated_at = ?1 \
             FROM jobs AS j \
             WHERE j.id = t.job_id AND t.state = 'leased' AND t.lease_expires_at <= ?1 \
             RETURNING id, job_id, state, attempt, failures",
        )
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await?;
        let mut report = ExpiryReport::default();
        let mut by_job: BTreeMap<JobId, Vec<(TaskId, TaskState, u32, Vec<FailureRecord>)>> =
            BTreeMap::new();
        for row in &rows {
            let id = get_uuid(row, "id")?;
            let job = get_uuid(row, "job_id")?;
            let state: TaskState = get_enum(row, "state")?;
            let attempt = to_u32("attempt", row.try_get("attempt")?)?;
            let failures: Vec<FailureRecord> = get_json(row, "failures")?;
            match state {
                TaskState::Ready => report.requeued.push(id),
                TaskState::Failed => report.failed.push(id),
                _ => report.cancelled.push(id),
            }
            by_job
                .entry(job)
                .or_default()
                .push((id, state, attempt, failures));
        }
        for (job, tasks) in by_job {
            let Some(mut acc) = read_account(&mut tx, job).await? else {
                continue;
            };
            let mut events = Vec::new();
            for (id, state, attempt, failures) in &tasks {
                acc.count_final(*state);
                if let Some(ev) = task_event(&mut acc, *id, *attempt, *state, None, failures) {
                    events.push(ev);
                }
            }
            if let Some(ev) = acc.maybe_complete(now) {
                events.push(ev);
                report.finished_jobs.push(job);
            }
            write_account(&mut tx, job, &acc, &events, now).await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn report_result(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck> {
        validate_outcome(&outcome)?;
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT t.job_id, t.state, t.attempt, t.max_attempts, t.lease_token, t.leased_by, \
               t.reported_token, t.failures, {ACCOUNT_COLS} \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?1"
        ))
        .bind(task.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(Entity::Task, task));
        };
        let job_id = get_uuid(&row, "job_id")?;
        let state: TaskState = get_enum(&row, "state")?;
        let lease_token: i64 = row.try_get("lease_token")?;
        let leased_by = get_opt_uuid(&row, "leased_by")?;
        let reported: Option<i64> = row.try_get("reported_token")?;
        check_lease(task, state, lease_token, leased_by, reported, token, worker)?;
        if reported == Some(token) && leased_by == Some(worker) {
            return Ok(ReportAck::Duplicate);
        }
        let attempt = to_u32("attempt", row.try_get("attempt")?)?;
        let max_attempts = to_u32("max_attempts", row.try_get("max_attempts")?)?;
        let mut failures: Vec<FailureRecord> = get_json(&row, "failures")?;
        let mut acc = account_from_row(&row)?;
        let decision = decide_report(acc.state, attempt, max_attempts, worker, &outcome, now);
        if let Some(f) = &decision.failure {
            failures.push(f.clone());
        }
        let requeue = decision.new_state == TaskState::Ready;
        let result_text = decision
            .result
            .as_ref()
            .map(|r| json_text("result", r))
            .transpose()?;
        sqlx::query(
            "UPDATE tasks SET state = ?2, reported_token = ?3, leased_by = ?9, lease_expires_at = NULL, \
               next_claim_at = ?4, result = ?5, failures = ?6, finished_at = ?7, updated_at = ?8 \
             WHERE id = ?1",
        )
        .bind(task.to_string())
        .bind(decision.new_state.as_str())
        .bind(token)
        .bind(requeue.then_some(ts(now)))
        .bind(result_text)
        .bind(json_text("failures", &failures)?)
        .bind((!requeue).then_some(ts(now)))
        .bind(ts(now))
        .bind(worker.to_string())
        .execute(&mut *tx)
        .await?;
        acc.count_final(decision.new_state);
        let mut events = Vec::with_capacity(2);
        if let Some(ev) = task_event(
            &mut acc,
            task,
            attempt,
            decision.new_state,
            decision.result.as_ref(),
            &failures,
        ) {
            events.push(ev);
        }
        if let Some(ev) = acc.maybe_complete(now) {
            events.push(ev);
        }
        write_account(&mut tx, job_id, &acc, &events, now).await?;
        if let (
            TaskState::Done,
            Outcome::Succeeded {
                rewards,
                sample_rewards,
                ..
            },
        ) = (decision.new_state, &outcome)
        {
            for obs in rewards {
                upsert_reward(&mut tx, obs, now).await?;
            }
            set_sample_rewards(&mut tx, sample_rewards).await?;
        }
        tx.commit().await?;
        Ok(ReportAck::Accepted {
            job_id,
            task_state: decision.new_state,
            job_state: acc.state,
        })
    }

    async fn report_progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let text = json_text("progress", &progress)?;
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT t.job_id, t.state, t.attempt, t.lease_token, t.leased_by, {ACCOUNT_COLS} \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?1"
        ))
        .bind(task.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(Entity::Task, task));
        };
        let job_id = get_uuid(&row, "job_id")?;
        let state: TaskState = get_enum(&row, "state")?;
        let lease_token: i64 = row.try_get("lease_token")?;
        let leased_by = get_opt_uuid(&row, "leased_by")?;
        check_lease(task, state, lease_token, leased_by, None, token, worker)?;
        let attempt: i64 = row.try_get("attempt")?;
        let mut acc = account_from_row(&row)?;
        sqlx::query(
            "UPDATE tasks SET progress = ?2, updated_at = ?3, leased_by = ?4 WHERE id = ?1",
        )
        .bind(task.to_string())
        .bind(text)
        .bind(ts(now))
        .bind(worker.to_string())
        .execute(&mut *tx)
        .await?;
        let ev = acc.event(
            event_kind::TASK_PROGRESS,
            json!({ "task_id": task, "attempt": attempt, "progress": progress }),
        );
        write_account(&mut tx, job_id, &acc, &[ev], now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_event(
        &self,
        job: JobId,
        kind: &str,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<Event> {
        validate_text("kind", kind)?;
        let text = json_text("payload", &payload)?;
        let mut tx = self.writer.begin().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET event_seq = event_seq + 1 WHERE id = ?1 RETURNING event_seq",
        )
        .bind(job.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Err(StoreError::not_found(Entity::Job, job));
        };
        sqlx::query(
            "INSERT INTO events (job_id, seq, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(job.to_string())
        .bind(seq)
        .bind(kind)
        .bind(text)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Event {
            job_id: job,
            seq,
            kind: kind.to_string(),
            payload,
            created_at: from_ts("created_at", ts(now))?,
        })
    }

    async fn events_after(&self, job: JobId, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        let limit = page_limit(limit)?;
        let mut conn = self.reader.acquire().await?;
        let rows = sqlx::query(
            "SELECT job_id, seq, kind, payload, created_at FROM events \
             WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(job.to_string())
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?1")
                .bind(job.to_string())
                .fetch_optional(&mut *conn)
                .await?;
            if exists.is_none() {
                return Err(StoreError::not_found(Entity::Job, job));
            }
        }
        rows.iter().map(event_from_row).collect()
    }

    async fn record_reward(
        &self,
        observation: RewardObservation,
        now: DateTime<Utc>,
    ) -> Result<RewardEstimate> {
        validate_observation(0, &observation)?;
        let mut conn = self.writer.acquire().await?;
        upsert_reward(&mut conn, &observation, now).await
    }

    async fn reward_estimate(&self, key: &RewardKey) -> Result<Option<RewardEstimate>> {
        let row = sqlx::query(
            "SELECT arch_hash, dataset, budget, count, mean, m2, updated_at FROM reward_estimates \
             WHERE arch_hash = ?1 AND dataset = ?2 AND budget = ?3",
        )
        .bind(&key.arch_hash)
        .bind(&key.dataset)
        .bind(&key.budget)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(estimate_from_row).transpose()
    }

    async fn save_checkpoint(&self, checkpoint: NewCheckpoint, now: DateTime<Utc>) -> Result<()> {
        self.commit_policy_update(checkpoint, &[], &[], now).await
    }

    async fn latest_checkpoint(&self, policy_id: &str) -> Result<PolicyCheckpoint> {
        let row = sqlx::query(
            "SELECT * FROM policy_checkpoints WHERE policy_id = ?1 ORDER BY version DESC LIMIT 1",
        )
        .bind(policy_id)
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(row) => checkpoint_from_row(&row),
            None => Err(StoreError::not_found(Entity::Policy, policy_id)),
        }
    }

    async fn checkpoint(&self, policy_id: &str, version: i64) -> Result<PolicyCheckpoint> {
        let row =
            sqlx::query("SELECT * FROM policy_checkpoints WHERE policy_id = ?1 AND version = ?2")
                .bind(policy_id)
                .bind(version)
                .fetch_optional(&self.reader)
                .await?;
        match row {
            Some(row) => checkpoint_from_row(&row),
            None => Err(StoreError::not_found(
                Entity::Policy,
                format!("{policy_id} version {version}"),
            )),
        }
    }

    async fn list_policies(&self) -> Result<Vec<PolicySummary>> {
        let rows = sqlx::query(
            "SELECT c.policy_id, c.version, c.space, c.source_job, c.created_at, \
               (SELECT count(*) FROM policy_samples s WHERE s.policy_id = c.policy_id \
                  AND s.consumed_in_version IS NOT NULL AND s.dropped = 0) AS consumed \
             FROM policy_checkpoints c \
             WHERE c.version = (SELECT max(version) FROM policy_checkpoints m WHERE m.policy_id = c.policy_id) \
             ORDER BY c.policy_id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PolicySummary {
                    policy_id: row.try_get("policy_id")?,
                    version: row.try_get("version")?,
                    space: row.try_get("space")?,
                    source_job: get_opt_uuid(row, "source_job")?,
                    rewards_consumed: to_u64("consumed", row.try_get("consumed")?)?,
                    updated_at: get_ts(row, "created_at")?,
                })
            })
            .collect()
    }

    async fn insert_samples(
        &self,
        samples: Vec<NewPolicySample>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SampleId>> {
        for (i, s) in samples.iter().enumerate() {
            validate_sample(i, s)?;
        }
        let mut tx = self.writer.begin().await?;
        let mut ids = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO policy_samples (job_id, policy_id, policy_version, log_prob, entropy, \
                   input_genotype, output_genotype, task_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
            )
            .bind(s.job_id.to_string())
            .bind(&s.policy_id)
            .bind(s.policy_version)
            .bind(s.log_prob)
            .bind(s.entropy)
            .bind(json_text(&format!("samples[{i}].input"), &s.input)?)
            .bind(json_text(&format!("samples[{i}].output"), &s.output)?)
            .bind(s.task_id.map(|t| t.to_string()))
            .bind(ts(now))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    StoreError::not_found(Entity::Job, s.job_id)
                }
                _ => StoreError::from(e),
            })?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn set_sample_reward(&self, sample: SampleId, reward: f64) -> Result<bool> {
        if !reward.is_finite() {
            return Err(StoreError::invalid("reward", "must be finite"));
        }
        let mut tx = self.writer.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM policy_samples WHERE id = ?1")
            .bind(sample)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(Entity::PolicySample, sample));
        }
        let changed =
            sqlx::query("UPDATE policy_samples SET reward = ?2 WHERE id = ?1 AND reward IS NULL")
                .bind(sample)
                .bind(reward)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn get_sample(&self, sample: SampleId) -> Result<PolicySample> {
        let row = sqlx::query(&format!(
            "SELECT {SAMPLE_COLS} FROM policy_samples WHERE id = ?1"
        ))
        .bind(sample)
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(row) => sample_from_row(&row),
            None => Err(StoreError::not_found(Entity::PolicySample, sample)),
        }
    }

    async fn take_unconsumed_rewards(
        &self,
        policy_id: &str,
        limit: u32,
    ) -> Result<Vec<PolicySample>> {
        let limit = page_limit(limit)?;
        let rows = sqlx::query(&format!(
            "SELECT {SAMPLE_COLS} FROM policy_samples \
             WHERE policy_id = ?1 AND reward IS NOT NULL AND consumed_in_version IS NULL \
             ORDER BY id LIMIT ?2"
        ))
        .bind(policy_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(sample_from_row).collect()
    }

    async fn commit_policy_update(
        &self,
        checkpoint: NewCheckpoint,
        consumed: &[SampleId],
        dropped: &[SampleId],
        now: DateTime<Utc>,
    ) -> Result<()> {
        validate_checkpoint(&checkpoint)?;
        let mut all: Vec<i64> = consumed.iter().chain(dropped).copied().collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        if all.len() != before {
            return Err(StoreError::invalid(
                "consumed",
                "a sample is listed twice (consumed and dropped must be disjoint)",
            ));
        }
        let meta = json_text("meta", &checkpoint.meta)?;
        let mut tx = self.writer.begin().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM policy_checkpoints WHERE policy_id = ?1")
                .bind(&checkpoint.policy_id)
                .fetch_one(&mut *tx)
                .await?;
        let expected = latest.unwrap_or(0) + 1;
        if checkpoint.version != expected {
            return Err(StoreError::Conflict(format!(
                "policy {} version {} is not the next version ({expected})",
                checkpoint.policy_id, checkpoint.version
            )));
        }
        let mut marked = 0u64;
        for id in &all {
            marked += sqlx::query(
                "UPDATE policy_samples SET consumed_in_version = ?2, dropped = ?4 \
                 WHERE id = ?1 AND policy_id = ?3 AND reward IS NOT NULL AND consumed_in_version IS NULL",
            )
            .bind(id)
            .bind(checkpoint.version)
            .bind(&checkpoint.policy_id)
            .bind(dropped.contains(id))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if marked != all.len() as u64 {
            return Err(StoreError::Conflict(format!(
                "{} of {} samples are unknown, of another policy, without reward or already consumed",
                all.len() as u64 - marked,
                all.len()
            )));
        }
        sqlx::query(
            "INSERT INTO policy_checkpoints (policy_id, version, space, params, optimizer_state, \
               baseline, source_job, meta, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&checkpoint.policy_id)
        .bind(checkpoint.version)
        .bind(&checkpoint.space)
        .bind(&checkpoint.params)
        .bind(&checkpoint.optimizer_state)
        .bind(checkpoint.baseline)
        .bind(checkpoint.source_job.map(|j| j.to_string()))
        .bind(meta)
        .bind(ts(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
