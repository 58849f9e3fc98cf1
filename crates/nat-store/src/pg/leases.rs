//! [`LeaseStore`] on PostgreSQL: workers, heartbeats, claims (one statement per lease, one per
//! group of equal slots in a batch), reservations and expiry. The reports are in `reports`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use sqlx::Row;

use super::jobs::{lock_account, write_account};
use super::rows::*;
use super::sql::{LEASE_MANY_SQL, LEASE_SQL, RELEASE_SQL};
use super::PgStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::LeaseStore;
use crate::types::*;

/// The capability columns a claim filters on (slots with equal filters share one statement).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClaimFilter {
    gpu: bool,
    gpu_memory_mb: i64,
    cpu_cores: i32,
    /// Sorted, without repeats; empty = any dataset.
    datasets: Vec<String>,
}

impl ClaimFilter {
    fn of(r: &LeaseRequest) -> Self {
        let c = &r.capabilities;
        let mut datasets = r.datasets.clone();
        datasets.sort();
        datasets.dedup();
        ClaimFilter {
            gpu: c.gpus > 0,
            gpu_memory_mb: i64::try_from(c.gpu_memory_mb).unwrap_or(i64::MAX),
            cpu_cores: i32::try_from(c.cpu_cores).unwrap_or(i32::MAX),
            datasets,
        }
    }
}

/// Claims tasks for the `members` of `requests` (equal filters) in one statement and puts
/// each lease at its request's position in `out`.
async fn claim_group(
    conn: &mut PgConnection,
    requests: &[LeaseRequest],
    filter: &ClaimFilter,
    members: &[usize],
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
    out: &mut [Option<Lease>],
) -> Result<()> {
    // NULL for reservations (no worker yet).
    let workers: Vec<Option<WorkerId>> = members.iter().map(|&i| requests[i].worker).collect();
    let rows = sqlx::query(&LEASE_MANY_SQL)
        .bind(now)
        .bind(filter.gpu)
        .bind(filter.gpu_memory_mb)
        .bind(filter.cpu_cores)
        .bind(&workers)
        .bind(expires)
        .bind(members.len() as i64)
        .bind(&filter.datasets)
        .fetch_all(&mut *conn)
        .await?;
    for row in &rows {
        let slot: i64 = row.try_get("slot")?;
        let Some(&i) = usize::try_from(slot - 1).ok().and_then(|k| members.get(k)) else {
            return Err(StoreError::corrupt(format!(
                "claim slot {slot} out of range"
            )));
        };
        let task = task_from_row(row)?;
        out[i] = Some(Lease {
            token: task.lease_token,
            attempt: task.attempt,
            expires_at: expires,
            task,
        });
    }
    Ok(())
}

#[async_trait]
impl LeaseStore for PgStore {
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
        let row = sqlx::query(
            "INSERT INTO workers (id, name, capabilities, state, last_heartbeat_at, registered_at, principal) \
             VALUES ($1, $2, $3, 'active', $4, $4, $5) \
             RETURNING id, name, capabilities, state, last_heartbeat_at, registered_at, \
               0::int8 AS tasks_in_hand",
        )
        .bind(WorkerId::new())
        .bind(name)
        .bind(Json(&capabilities))
        .bind(now)
        .bind(principal)
        .fetch_one(&self.pool)
        .await?;
        worker_from_row(&row)
    }

    async fn worker_principal(&self, id: WorkerId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT principal FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
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
        let row = sqlx::query(
            "SELECT w.id, w.name, w.capabilities, w.state, w.last_heartbeat_at, w.registered_at, \
               (SELECT count(*) FROM tasks t WHERE t.leased_by = w.id AND t.state = 'leased') \
                 AS tasks_in_hand \
             FROM workers w WHERE w.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => worker_from_row(&row),
            None => Err(StoreError::not_found(Entity::Worker, id)),
        }
    }

    async fn list_workers(&self) -> Result<Vec<Worker>> {
        let rows = sqlx::query(
            "SELECT w.id, w.name, w.capabilities, w.state, w.last_heartbeat_at, w.registered_at, \
               (SELECT count(*) FROM tasks t WHERE t.leased_by = w.id AND t.state = 'leased') \
                 AS tasks_in_hand \
             FROM workers w ORDER BY w.registered_at DESC, w.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    async fn mark_lost_workers(&self, cutoff: DateTime<Utc>) -> Result<Vec<WorkerId>> {
        let ids: Vec<WorkerId> = sqlx::query_scalar(
            "UPDATE workers SET state = 'lost' WHERE state = 'active' AND last_heartbeat_at < $1 \
             RETURNING id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
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
        // Tasks first (lock order), then the worker row.
        // Only the leases the worker says it holds (task and token): a lease whose LeaseTask
        // response never reached the worker is not kept alive by its heartbeats and expires.
        let held_ids: Vec<TaskId> = held.iter().map(|h| h.task_id).collect();
        let held_tokens: Vec<i64> = held.iter().map(|h| h.token).collect();
        let extended: Vec<(TaskId, i64)> = sqlx::query_as(
            "UPDATE tasks t SET lease_expires_at = $3, leased_by = $1, \
               next_claim_at = CASE WHEN t.attempt < t.max_attempts THEN $3 ELSE NULL END, \
               updated_at = $2 \
             FROM jobs j \
             WHERE (t.leased_by = $1 OR t.leased_by IS NULL) AND t.state = 'leased' \
               AND j.id = t.job_id AND j.state <> 'cancelled' \
               AND (t.id, t.lease_token) IN (SELECT * FROM UNNEST($4::uuid[], $5::int8[])) \
             RETURNING t.id, t.lease_token",
        )
        .bind(worker)
        .bind(now)
        .bind(expires)
        .bind(&held_ids)
        .bind(&held_tokens)
        .fetch_all(&mut *tx)
        .await?;
        let cancelled: Vec<TaskId> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id \
             WHERE t.leased_by = $1 AND t.state = 'leased' AND j.state = 'cancelled'",
        )
        .bind(worker)
        .fetch_all(&mut *tx)
        .await?;
        let found = sqlx::query(
            "UPDATE workers SET last_heartbeat_at = $2, state = 'active' WHERE id = $1",
        )
        .bind(worker)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if found == 0 {
            return Err(StoreError::not_found(Entity::Worker, worker));
        }
        tx.commit().await?;
        Ok(heartbeat_ack(held, extended, cancelled, expires))
    }

    async fn lease_task(
        &self,
        worker: WorkerId,
        capabilities: &Capabilities,
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Option<Lease>> {
        let expires = lease_expiry(now, lease_duration)?;
        let gpu_mem = i64::try_from(capabilities.gpu_memory_mb).unwrap_or(i64::MAX);
        let cores = i32::try_from(capabilities.cpu_cores).unwrap_or(i32::MAX);
        let row = sqlx::query(&LEASE_SQL)
            .bind(now)
            .bind(capabilities.gpus > 0)
            .bind(gpu_mem)
            .bind(cores)
            .bind(worker)
            .bind(expires)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let task = task_from_row(&row)?;
        Ok(Some(Lease {
            token: task.lease_token,
            attempt: task.attempt,
            expires_at: expires,
            task,
        }))
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiryReport> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE tasks t SET \
               state = CASE WHEN j.state IN ('queued', 'running') THEN \
                   CASE WHEN t.attempt < t.max_attempts THEN 'ready' ELSE 'failed' END \
                 ELSE 'cancelled' END, \
               failures = CASE WHEN j.state IN ('queued', 'running') THEN t.failures || jsonb_build_array(jsonb_build_object( \
                   'attempt', t.attempt, 'worker', t.leased_by, 'reason', 'lease expired', \
                   'at', (extract(epoch FROM t.lease_expires_at) * 1000000)::bigint)) ELSE t.failures END, \
               next_claim_at = CASE WHEN j.state IN ('queued', 'running') AND t.attempt < t.max_attempts THEN $1 ELSE NULL END, \
               finished_at = CASE WHEN j.state IN ('queued', 'running') AND t.attempt < t.max_attempts THEN NULL ELSE $1 END, \
               lease_expires_at = NULL, updated_at = $1 \
             FROM jobs j \
             WHERE j.id = t.job_id AND t.state = 'leased' AND t.lease_expires_at <= $1 \
             RETURNING t.id, t.job_id, t.state, t.attempt, t.failures",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: String = row.try_get("state")?;
            let task = ExpiredTask {
                id: row.try_get("id")?,
                state: parse("tasks.state", &state)?,
                attempt: to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?,
                failures: row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0,
            };
            expired.push((row.try_get("job_id")?, task));
        }
        let (mut report, by_job) = group_expired(expired);
        for (job, tasks) in by_job {
            let Some(mut acc) = lock_account(&mut tx, job).await? else {
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

    async fn lease_tasks(
        &self,
        requests: &[LeaseRequest],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Vec<Option<Lease>>> {
        let expires = lease_expiry(now, lease_duration)?;
        validate_batch("requests", requests.len())?;
        // Slots offering the same capabilities are served by one statement; groups in the
        // order of their first request.
        let mut groups: Vec<(ClaimFilter, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let f = ClaimFilter::of(r);
            match groups.iter_mut().find(|(g, _)| *g == f) {
                Some((_, members)) => members.push(i),
                None => groups.push((f, vec![i])),
            }
        }
        let mut out: Vec<Option<Lease>> = vec![None; requests.len()];
        match groups.as_slice() {
            [] => {}
            [(filter, members)] => {
                // One statement: its own transaction, one commit.
                let mut conn = self.pool.acquire().await?;
                claim_group(&mut conn, requests, filter, members, now, expires, &mut out).await?;
            }
            _ => {
                // Several statements in ONE transaction (one commit for the batch).
                let mut tx = self.begin().await?;
                for (filter, members) in &groups {
                    claim_group(&mut tx, requests, filter, members, now, expires, &mut out).await?;
                }
                tx.commit().await?;
            }
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
        let ids: Vec<TaskId> = assignments.iter().map(|a| a.task_id).collect();
        let tokens: Vec<i64> = assignments.iter().map(|a| a.token).collect();
        let workers: Vec<WorkerId> = assignments.iter().map(|a| a.worker).collect();
        let expires: Vec<DateTime<Utc>> = assignments.iter().map(|a| a.expires_at).collect();
        let done = sqlx::query(
            // Best effort, never waiting: a row locked right now belongs to a report or a
            // heartbeat of the same lease, which records the worker itself. Waiting instead
            // could deadlock with a report batch locking the same rows in another order.
            "WITH lk AS ( \
               SELECT t.id, a.worker, a.expires FROM tasks t \
               JOIN UNNEST($2::uuid[], $3::int8[], $4::uuid[], $5::timestamptz[]) AS a(id, token, worker, expires) \
                 ON t.id = a.id \
               WHERE t.state = 'leased' AND t.lease_token = a.token AND t.leased_by IS NULL \
               FOR UPDATE OF t SKIP LOCKED \
             ) \
             UPDATE tasks t SET leased_by = lk.worker, lease_expires_at = lk.expires, \
               next_claim_at = CASE WHEN t.attempt < t.max_attempts THEN lk.expires ELSE NULL END, \
               updated_at = $1 \
             FROM lk WHERE t.id = lk.id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&tokens)
        .bind(&workers)
        .bind(&expires)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done)
    }

    async fn release_leases(&self, leases: &[HeldLease], now: DateTime<Utc>) -> Result<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        let ids: Vec<TaskId> = leases.iter().map(|l| l.task_id).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let done = sqlx::query(&format!(
            "{RELEASE_SQL} AND (t.id, t.lease_token) IN (SELECT * FROM UNNEST($2::uuid[], $3::int8[]))"
        ))
        .bind(now)
        .bind(&ids)
        .bind(&tokens)
        .execute(&self.pool)
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
        let done = sqlx::query(&format!("{RELEASE_SQL} AND t.updated_at < $2"))
            .bind(now)
            .bind(claimed_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(done)
    }

    async fn report_results(
        &self,
        items: Vec<ReportItem>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<ReportAck>>> {
        self.report_many(items, now).await
    }

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
