//! [`SupernetStore`] on PostgreSQL: supernet versions (with their round's sample rewards) and
//! the cancelling of single tasks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;

use super::jobs::{lock_account, write_account};
use super::PgStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::SupernetStore;
use crate::types::*;

/// The columns [`supernet_from_row`] decodes.
const SUPERNET_COLS: &str =
    "job_id, version, round, blob_key, bytes, sha256, shards, workers, leader_epoch, created_at";

fn supernet_from_row(row: &PgRow) -> Result<SupernetVersion> {
    Ok(SupernetVersion {
        job_id: row.try_get("job_id")?,
        version: row.try_get("version")?,
        round: row.try_get("round")?,
        blob_key: row.try_get("blob_key")?,
        bytes: row.try_get("bytes")?,
        sha256: row.try_get("sha256")?,
        shards: to_u32("supernet_versions.shards", row.try_get("shards")?)?,
        workers: row.try_get::<Json<Vec<String>>, _>("workers")?.0,
        leader_epoch: row.try_get("leader_epoch")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The first of `wanted` (sorted) that is not in `found` (sorted).
fn first_missing<T: Ord + Copy>(wanted: &[T], found: &[T]) -> Option<T> {
    wanted
        .iter()
        .find(|w| found.binary_search(w).is_err())
        .copied()
}

#[async_trait]
impl SupernetStore for PgStore {
    async fn commit_supernet_version(
        &self,
        v: NewSupernetVersion,
        rewards: &[(SampleId, f64)],
        now: DateTime<Utc>,
    ) -> Result<SupernetCommit> {
        let rewards = validate_supernet_commit(&v, rewards)?;
        let mut tx = self.begin().await?;
        if v.leader_epoch.is_some() {
            // As in `commit_policy_update`: `FOR SHARE` makes a takeover wait until this
            // transaction ends, so the version commits within its term or not at all.
            let current: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM leadership WHERE name = $1 FOR SHARE")
                    .bind(COORDINATOR_LEADERSHIP)
                    .fetch_optional(&mut *tx)
                    .await?;
            check_supernet_term(&v, current)?;
        }
        let job_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)")
                .bind(v.job_id)
                .fetch_one(&mut *tx)
                .await?;
        if !job_exists {
            return Err(StoreError::not_found(Entity::Job, v.job_id));
        }
        let existing = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = $1 AND round = $2"
        ))
        .bind(v.job_id)
        .bind(v.round)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return Ok(SupernetCommit::AlreadyCommitted(supernet_from_row(&row)?));
        }
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM supernet_versions WHERE job_id = $1")
                .bind(v.job_id)
                .fetch_one(&mut *tx)
                .await?;
        let expected = latest.unwrap_or(0) + 1;
        if v.version != expected {
            return Err(StoreError::Conflict(format!(
                "supernet of job {} version {} is not the next version ({expected})",
                v.job_id, v.version
            )));
        }
        let row = sqlx::query(&format!(
            "INSERT INTO supernet_versions (job_id, version, round, blob_key, bytes, sha256, shards, \
               workers, leader_epoch, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             RETURNING {SUPERNET_COLS}"
        ))
        .bind(v.job_id)
        .bind(v.version)
        .bind(v.round)
        .bind(&v.blob_key)
        .bind(v.bytes)
        .bind(&v.sha256)
        .bind(i64::from(v.shards))
        .bind(Json(&v.workers))
        .bind(v.leader_epoch)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            // A concurrent commit of the same version or round won.
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(format!(
                "supernet of job {} version {} (round {}) was committed concurrently",
                v.job_id, v.version, v.round
            )),
            _ => StoreError::from(e),
        })?;
        let stored = supernet_from_row(&row)?;
        if !rewards.is_empty() {
            let ids: Vec<SampleId> = rewards.iter().map(|(id, _)| *id).collect();
            let values: Vec<f64> = rewards.iter().map(|(_, r)| *r).collect();
            // Samples last (the lock order), in id order.
            let found: Vec<SampleId> = sqlx::query_scalar(
                "SELECT id FROM policy_samples WHERE id = ANY($1) AND job_id = $2 \
                 ORDER BY id FOR NO KEY UPDATE",
            )
            .bind(&ids)
            .bind(v.job_id)
            .fetch_all(&mut *tx)
            .await?;
            if let Some(missing) = first_missing(&ids, &found) {
                return Err(StoreError::not_found(Entity::PolicySample, missing));
            }
            sqlx::query(
                "UPDATE policy_samples s SET reward = r.reward \
                 FROM UNNEST($1::int8[], $2::float8[]) AS r (id, reward) \
                 WHERE s.id = r.id AND s.reward IS NULL",
            )
            .bind(&ids)
            .bind(&values)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(SupernetCommit::Committed(stored))
    }

    async fn latest_supernet_version(&self, job: JobId) -> Result<Option<SupernetVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = $1 \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(job)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(supernet_from_row).transpose()
    }

    async fn supernet_version(&self, job: JobId, version: i64) -> Result<SupernetVersion> {
        let row = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = $1 AND version = $2"
        ))
        .bind(job)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => supernet_from_row(&row),
            None => Err(StoreError::not_found(
                Entity::SupernetVersion,
                format!("{version} of job {job}"),
            )),
        }
    }

    async fn supernet_round(&self, job: JobId, round: i64) -> Result<Option<SupernetVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = $1 AND round = $2"
        ))
        .bind(job)
        .bind(round)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(supernet_from_row).transpose()
    }

    async fn count_supernet_versions(&self, job: JobId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM supernet_versions WHERE job_id = $1")
            .bind(job)
            .fetch_one(&self.pool)
            .await?;
        to_u64("count", n)
    }

    async fn cancel_tasks(&self, job: JobId, tasks: &[TaskId], now: DateTime<Utc>) -> Result<u64> {
        let ids = validate_task_list(tasks)?;
        let mut tx = self.begin().await?;
        let of_job: Vec<TaskId> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE id = ANY($1) AND job_id = $2 ORDER BY id",
        )
        .bind(&ids)
        .bind(job)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(missing) = first_missing(&ids, &of_job) {
            return Err(StoreError::not_found(Entity::Task, missing));
        }
        // Task rows first, in id order, then the job row (the lock order of every transition).
        let cancelled = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', next_claim_at = NULL, lease_expires_at = NULL, \
               finished_at = $3, updated_at = $3 \
             WHERE id IN (SELECT id FROM tasks WHERE id = ANY($1) AND job_id = $2 \
                 AND state IN ('ready', 'leased') ORDER BY id FOR NO KEY UPDATE) \
               AND state IN ('ready', 'leased')",
        )
        .bind(&ids)
        .bind(job)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let Some(mut acc) = lock_account(&mut tx, job).await? else {
            return Err(StoreError::not_found(Entity::Job, job));
        };
        if cancelled > 0 {
            let events = acc.tasks_cancelled(cancelled, now);
            write_account(&mut tx, job, &acc, &events, now).await?;
        }
        tx.commit().await?;
        Ok(cancelled)
    }
}
