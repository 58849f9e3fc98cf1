//! The reports of leased tasks on SQLite (results and progress). A report reads the task's lease
//! state and its job's account, asks [`decide_report`] what to do, and writes what it decided,
//! in one transaction.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::jobs::write_account;
use super::policy::upsert_reward;
use super::rows::*;
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::types::*;

/// A report's read of its task (`?1`): its lease state and its job's account.
static READ_LEASE_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.job_id, t.state, t.attempt, t.max_attempts, t.lease_token, t.leased_by, \
           t.reported_token, t.failures, {ACCOUNT_COLS} \
         FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ?1"
    )
});

/// Sets the rewards of samples that have none (the first value wins); an unknown sample is
/// `NotFound` (and the caller's transaction is rolled back).
async fn set_sample_rewards(tx: &mut SqliteConnection, rewards: &[SampleReward]) -> Result<()> {
    for r in rewards {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM policy_samples WHERE id = ?1")
            .bind(r.sample_id.get())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(Entity::PolicySample, r.sample_id));
        }
        sqlx::query("UPDATE policy_samples SET reward = ?2 WHERE id = ?1 AND reward IS NULL")
            .bind(r.sample_id.get())
            .bind(r.reward)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

impl SqliteStore {
    /// `report_result`: one transaction; the task read, [`decide_report`], the writes.
    pub(super) async fn report_one(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck> {
        validate_outcome(&outcome)?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&READ_LEASE_ROW)
            .bind(task.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(Entity::Task, task));
        };
        let mut acc = account_from_row(&row)?;
        let mut t = match decide_report(
            task,
            lease_row_from_row(&row)?,
            token,
            worker,
            &outcome,
            now,
        )? {
            ReportVerdict::Duplicate => return Ok(ReportAck::Duplicate),
            ReportVerdict::Apply(t) => t,
        };
        let requeue = t.requeue();
        let result_text = t
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
        .bind(t.new_state.as_str())
        .bind(token)
        .bind(requeue.then_some(ts(now)))
        .bind(result_text)
        .bind(json_text("failures", &t.failures)?)
        .bind((!requeue).then_some(ts(now)))
        .bind(ts(now))
        .bind(worker.to_string())
        .execute(&mut *tx)
        .await?;
        acc.count_final(t.new_state);
        let mut events = Vec::with_capacity(2);
        if let Some((kind, payload)) = t.event.take() {
            events.push(acc.event(kind, payload));
        }
        if let Some(ev) = acc.maybe_complete(now) {
            events.push(ev);
        }
        write_account(&mut tx, t.job_id, &acc, &events, now).await?;
        for obs in t.rewards(&outcome) {
            upsert_reward(&mut tx, obs, now).await?;
        }
        set_sample_rewards(&mut tx, t.sample_rewards(&outcome)).await?;
        tx.commit().await?;
        Ok(t.ack(acc.state))
    }

    /// `report_progress`: the lease checked, the progress stored, one event.
    pub(super) async fn progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let text = json_text("progress", &progress)?;
        let mut tx = self.begin().await?;
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
        let ev = acc.progress(task, attempt, &progress);
        write_account(&mut tx, job_id, &acc, &[ev], now).await?;
        tx.commit().await?;
        Ok(())
    }
}
