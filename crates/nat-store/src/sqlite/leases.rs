//! [`LeaseStore`] on SQLite: workers, heartbeats, claims, reservations and expiry. The reports
//! are in `reports`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use super::jobs::{read_account, write_account};
use super::rows::*;
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::fencing::{next_token_sql, RANDOM_BITS};
use crate::logic::*;
use crate::store::LeaseStore;
use crate::types::*;

/// The new fencing token of a claimed task `t` (see `logic::fencing`). Its random part is the low
/// `RANDOM_BITS` bits of `random()`, which since SQLite 3.40 (the bundled one is newer) is a
/// ChaCha20 generator seeded from the operating system's randomness; one draw per claimed row.
fn next_token() -> String {
    next_token_sql(&format!("(random() & {})", (1i64 << RANDOM_BITS) - 1))
}

/// Returns unassigned reservations to the queue (`?1` = now): state `ready`, the attempt given
/// back, claimable at once; the token is not reused. Callers append a filter on the rows.
pub(super) const RELEASE_SQL: &str = "UPDATE tasks SET state = 'ready', attempt = attempt - 1, \
       lease_expires_at = NULL, next_claim_at = ?1, progress = NULL, updated_at = ?1 \
     WHERE state = 'leased' AND leased_by IS NULL";

impl SqliteStore {
    /// The claim of `lease_task`, also for the slots of `lease_tasks`:
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
        let mut tx = self.begin().await?;
        // SQLite serializes writers, so the claim cannot race; it is one statement all the same.
        let row = sqlx::query(&format!(
            "UPDATE tasks AS t SET \
               failures = CASE WHEN t.state = 'leased' THEN json_insert(t.failures, '$[#]', json_object( \
                 'attempt', t.attempt, 'worker', t.leased_by, 'reason', 'lease expired', \
                 'at', t.lease_expires_at)) ELSE t.failures END, \
               state = 'leased', attempt = t.attempt + 1, lease_token = {next_token}, \
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
             RETURNING {cols}",
            next_token = next_token(),
            cols = TASK_COLS.replace("t.", "")
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
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn register_worker_as(
        &self,
        name: &str,
        capabilities: Capabilities,
        principal: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Worker> {
        validate_text("name", name)?;
        if let Some(p) = principal {
            validate_text("principal", p)?;
        }
        let row = sqlx::query(&format!(
            "INSERT INTO workers (id, name, capabilities, state, last_heartbeat_at, registered_at, principal) \
             VALUES (?1, ?2, ?3, 'active', ?4, ?4, ?5) RETURNING {WORKER_COLS}, 0 AS tasks_in_hand"
        ))
        .bind(WorkerId::new().to_string())
        .bind(name)
        .bind(json_text("capabilities", &capabilities)?)
        .bind(ts(now))
        .bind(principal)
        .fetch_one(&self.writer)
        .await?;
        worker_from_row(&row)
    }

    async fn worker_principal(&self, id: WorkerId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT principal FROM workers WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        match row {
            Some(row) => Ok(row.try_get("principal")?),
            None => Err(StoreError::NotFound {
                what: Entity::Worker,
                id: id.to_string(),
            }),
        }
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
        let mut tx = self.begin().await?;
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
        let held_json = Value::Array(
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
        validate_batch("requests", requests.len())?;
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
        let list = Value::Array(
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
        let list = Value::Array(
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

    async fn release_unassigned_leases(
        &self,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        // A claim sets `updated_at`; nothing else touches a lease no worker holds.
        let done = sqlx::query(&format!("{RELEASE_SQL} AND updated_at < ?2"))
            .bind(ts(now))
            .bind(ts(claimed_before))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(done)
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiryReport> {
        let mut tx = self.begin().await?;
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
        let mut expired = Vec::with_capacity(rows.len());
        for row in &rows {
            let task = ExpiredTask {
                id: get_uuid(row, "id")?,
                state: get_enum(row, "state")?,
                attempt: to_u32("attempt", row.try_get("attempt")?)?,
                failures: get_json(row, "failures")?,
            };
            expired.push((get_uuid(row, "job_id")?, task));
        }
        let (mut report, by_job) = group_expired(expired);
        for (job, tasks) in by_job {
            let Some(mut acc) = read_account(&mut tx, job).await? else {
                continue;
            };
            let (events, finished) = acc.expired(&tasks, now);
            if finished {
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
        self.report_one(task, token, worker, outcome, now).await
    }

    // `report_results`: the trait's default (one `report_result` after the other; SQLite
    // serializes writers, so a batch transaction would not commit any faster).

    async fn report_progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.progress(task, token, worker, progress, now).await
    }
}
