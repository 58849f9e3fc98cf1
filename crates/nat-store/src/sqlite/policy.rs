//! [`PolicyStore`] on SQLite: reward estimates, checkpoints, samples, policy updates.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::rows::*;
use super::SqliteStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::{PolicyStore, POLICY_CHECKPOINTS_KEPT};
use crate::types::*;

/// Folds one observation into its estimate (the one Welford update of this backend, for
/// `record_reward` and reports) and returns the estimate.
pub(super) async fn upsert_reward(
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

#[async_trait]
impl PolicyStore for SqliteStore {
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
        let mut tx = self.begin().await?;
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
            ids.push(SampleId::from(id));
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn set_sample_reward(&self, sample: SampleId, reward: f64) -> Result<bool> {
        validate_sample_reward(reward)?;
        let mut tx = self.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM policy_samples WHERE id = ?1")
            .bind(sample.get())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(Entity::PolicySample, sample));
        }
        let changed =
            sqlx::query("UPDATE policy_samples SET reward = ?2 WHERE id = ?1 AND reward IS NULL")
                .bind(sample.get())
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
        .bind(sample.get())
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
        let all = validate_policy_update(&checkpoint, consumed, dropped)?;
        let meta = json_text("meta", &checkpoint.meta)?;
        let mut tx = self.begin().await?;
        if checkpoint.leader_epoch.is_some() {
            // The term must still be current (the one writer connection orders this and a takeover).
            let current: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM leadership WHERE name = ?1")
                    .bind(COORDINATOR_LEADERSHIP)
                    .fetch_optional(&mut *tx)
                    .await?;
            check_term(&checkpoint, current)?;
        }
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
            .bind(id.get())
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
               baseline, source_job, meta, created_at, leader_epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
        .bind(checkpoint.leader_epoch)
        .execute(&mut *tx)
        .await?;
        // One version falls out of the window of full checkpoints (O(1) per update).
        sqlx::query(
            "UPDATE policy_checkpoints SET params = X'', optimizer_state = X'' \
             WHERE policy_id = ?1 AND version = ?2 AND version > 1",
        )
        .bind(&checkpoint.policy_id)
        .bind(checkpoint.version - POLICY_CHECKPOINTS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
