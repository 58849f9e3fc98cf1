//! [`SupernetStore`] on SQLite: supernet versions (with their round's sample rewards) and the
//! cancelling of single tasks. SQLite has one writer, so the transactions below are serialized
//! with every other write (and with a leadership takeover).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::jobs::{read_account, write_account};
use super::rows::*;
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::SupernetStore;
use crate::types::*;

/// The columns [`supernet_from_row`] decodes.
const SUPERNET_COLS: &str =
    "job_id, version, round, blob_key, bytes, sha256, shards, workers, leader_epoch, created_at";

fn supernet_from_row(row: &SqliteRow) -> Result<SupernetVersion> {
    Ok(SupernetVersion {
        job_id: get_uuid(row, "job_id")?,
        version: row.try_get("version")?,
        round: row.try_get("round")?,
        blob_key: row.try_get("blob_key")?,
        bytes: row.try_get("bytes")?,
        sha256: row.try_get("sha256")?,
        shards: to_u32("supernet_versions.shards", row.try_get("shards")?)?,
        workers: get_json(row, "workers")?,
        leader_epoch: row.try_get("leader_epoch")?,
        created_at: get_ts(row, "created_at")?,
    })
}

#[async_trait]
impl SupernetStore for SqliteStore {
    async fn commit_supernet_version(
        &self,
        v: NewSupernetVersion,
        rewards: &[(SampleId, f64)],
        now: DateTime<Utc>,
    ) -> Result<SupernetCommit> {
        let rewards = validate_supernet_commit(&v, rewards)?;
        let workers = json_text("workers", &v.workers)?;
        let job = v.job_id.to_string();
        let mut tx = self.begin().await?;
        if v.leader_epoch.is_some() {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM leadership WHERE name = ?1")
                    .bind(COORDINATOR_LEADERSHIP)
                    .fetch_optional(&mut *tx)
                    .await?;
            check_supernet_term(&v, current)?;
        }
        let job_exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?1")
            .bind(&job)
            .fetch_optional(&mut *tx)
            .await?;
        if job_exists.is_none() {
            return Err(StoreError::not_found(Entity::Job, v.job_id));
        }
        let existing = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = ?1 AND round = ?2"
        ))
        .bind(&job)
        .bind(v.round)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return Ok(SupernetCommit::AlreadyCommitted(supernet_from_row(&row)?));
        }
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM supernet_versions WHERE job_id = ?1")
                .bind(&job)
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
               workers, leader_epoch, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             RETURNING {SUPERNET_COLS}"
        ))
        .bind(&job)
        .bind(v.version)
        .bind(v.round)
        .bind(&v.blob_key)
        .bind(v.bytes)
        .bind(&v.sha256)
        .bind(i64::from(v.shards))
        .bind(workers)
        .bind(v.leader_epoch)
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await?;
        let stored = supernet_from_row(&row)?;
        for (sample, reward) in &rewards {
            let of_job: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM policy_samples WHERE id = ?1 AND job_id = ?2")
                    .bind(sample.get())
                    .bind(&job)
                    .fetch_optional(&mut *tx)
                    .await?;
            if of_job.is_none() {
                return Err(StoreError::not_found(Entity::PolicySample, sample));
            }
            sqlx::query("UPDATE policy_samples SET reward = ?2 WHERE id = ?1 AND reward IS NULL")
                .bind(sample.get())
                .bind(reward)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(SupernetCommit::Committed(stored))
    }

    async fn latest_supernet_version(&self, job: JobId) -> Result<Option<SupernetVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = ?1 \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(job.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(supernet_from_row).transpose()
    }

    async fn supernet_version(&self, job: JobId, version: i64) -> Result<SupernetVersion> {
        let row = sqlx::query(&format!(
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = ?1 AND version = ?2"
        ))
        .bind(job.to_string())
        .bind(version)
        .fetch_optional(&self.reader)
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
            "SELECT {SUPERNET_COLS} FROM supernet_versions WHERE job_id = ?1 AND round = ?2"
        ))
        .bind(job.to_string())
        .bind(round)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(supernet_from_row).transpose()
    }

    async fn count_supernet_versions(&self, job: JobId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM supernet_versions WHERE job_id = ?1")
            .bind(job.to_string())
            .fetch_one(&self.reader)
            .await?;
        to_u64("count", n)
    }

    async fn cancel_tasks(&self, job: JobId, tasks: &[TaskId], now: DateTime<Utc>) -> Result<u64> {
        let ids = validate_task_list(tasks)?;
        let job_text = job.to_string();
        let mut tx = self.begin().await?;
        let Some(mut acc) = read_account(&mut tx, job).await? else {
            return Err(StoreError::not_found(Entity::Job, job));
        };
        let mut cancelled = 0u64;
        for id in &ids {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?1 AND job_id = ?2")
                    .bind(id.to_string())
                    .bind(&job_text)
                    .fetch_optional(&mut *tx)
                    .await?;
            if state.is_none() {
                return Err(StoreError::not_found(Entity::Task, id));
            }
            cancelled += sqlx::query(
                "UPDATE tasks SET state = 'cancelled', next_claim_at = NULL, lease_expires_at = NULL, \
                   finished_at = ?2, updated_at = ?2 \
                 WHERE id = ?1 AND state IN ('ready', 'leased')",
            )
            .bind(id.to_string())
            .bind(ts(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if cancelled > 0 {
            let events = acc.tasks_cancelled(cancelled, now);
            write_account(&mut tx, job, &acc, &events, now).await?;
        }
        tx.commit().await?;
        Ok(cancelled)
    }
}
