//! The reports of leased tasks on PostgreSQL: the one-statement hot path, the in-transaction
//! path (sample rewards, races), the batch path, and progress. Every path reads the task's lease
//! state, asks [`decide_report`] what to do, and writes what it decided.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use sqlx::Row;

use super::jobs::write_account;
use super::policy::upsert_reward;
use super::rows::*;
use super::sql::*;
use super::PgStore;
use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::types::*;

/// Counter changes and events to apply to one job.
#[derive(Default)]
struct JobDeltas {
    done: i64,
    failed: i64,
    cancelled: i64,
    kinds: Vec<&'static str>,
    payloads: Vec<Value>,
}

impl JobDeltas {
    fn of(t: Transition) -> Self {
        let (done, failed, cancelled) = t.counts();
        let (kinds, payloads) = t.event.into_iter().unzip();
        JobDeltas {
            done,
            failed,
            cancelled,
            kinds,
            payloads,
        }
    }
}

/// One statement ([`JOB_DELTAS_SQL`]): lock the job row, apply the counters, finish an
/// `all_tasks` job whose last task ended, append the events in order. Returns the job's state.
async fn apply_job_deltas(
    tx: &mut PgConnection,
    job: JobId,
    deltas: &JobDeltas,
    now: DateTime<Utc>,
) -> Result<JobState> {
    let state: Option<String> = sqlx::query_scalar(&JOB_DELTAS_SQL)
        .bind(job)
        .bind(deltas.done)
        .bind(deltas.failed)
        .bind(deltas.cancelled)
        .bind(&deltas.kinds)
        .bind(deltas.payloads.iter().map(Json).collect::<Vec<_>>())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    match state {
        Some(s) => parse("jobs.state", &s),
        None => Err(StoreError::not_found(Entity::Job, job)),
    }
}

async fn set_sample_rewards(tx: &mut PgConnection, rewards: &[SampleReward]) -> Result<()> {
    if rewards.is_empty() {
        return Ok(());
    }
    let ids: Vec<SampleId> = rewards.iter().map(|r| r.sample_id).collect();
    let values: Vec<f64> = rewards.iter().map(|r| r.reward).collect();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM policy_samples WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&mut *tx)
        .await?;
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if found != distinct.len() as i64 {
        let missing = find_missing_sample(tx, &distinct).await?;
        return Err(StoreError::not_found(Entity::PolicySample, missing));
    }
    // First value wins: a sample's reward is set once.
    sqlx::query(
        "UPDATE policy_samples s SET reward = u.r \
         FROM (SELECT DISTINCT ON (i) i, r FROM UNNEST($1::bigint[], $2::float8[]) WITH ORDINALITY AS u(i, r, o) ORDER BY i, o) u \
         WHERE s.id = u.i AND s.reward IS NULL",
    )
    .bind(&ids)
    .bind(&values)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn find_missing_sample(tx: &mut PgConnection, ids: &[SampleId]) -> Result<SampleId> {
    let present: Vec<SampleId> =
        sqlx::query_scalar("SELECT id FROM policy_samples WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
    Ok(ids
        .iter()
        .copied()
        .find(|id| !present.contains(id))
        .unwrap_or(SampleId::from(0)))
}

/// True for a PostgreSQL deadlock (`40P01`) or serialization failure (`40001`): the statement
/// was rolled back and may be retried.
fn is_retryable_conflict(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

/// True when the report can take the one-statement path: no sample rewards (they need their
/// checks in a transaction) and no reward key twice (one upsert statement cannot update a row
/// twice).
fn fast_path_fits(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Succeeded {
            rewards,
            sample_rewards,
            ..
        } => {
            if !sample_rewards.is_empty() {
                return false;
            }
            let mut keys: Vec<&RewardKey> = rewards.iter().map(|r| &r.key).collect();
            keys.sort_by(|a, b| {
                (&a.arch_hash, &a.dataset, &a.budget).cmp(&(&b.arch_hash, &b.dataset, &b.budget))
            });
            keys.dedup();
            keys.len() == rewards.len()
        }
        Outcome::Failed { .. } => true,
    }
}

impl PgStore {
    /// `report_result`: the hot path, or the general one when the report needs it.
    pub(super) async fn report_one(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck> {
        validate_outcome(&outcome)?;
        if fast_path_fits(&outcome) {
            if let Some(ack) = self.report_fast(task, token, worker, &outcome, now).await? {
                return Ok(ack);
            }
        }
        self.report_in_tx(task, token, worker, outcome, now).await
    }

    /// The hot report path: one read, then ONE statement ([`REPORT_SQL`], so one implicit
    /// transaction) that applies the task transition only if the lease is still (`token`,
    /// `worker`), and in the same statement upserts the reward estimates, updates the job
    /// counters (locking the job row only for that statement and its commit, never across a
    /// client round trip), finishes an `all_tasks` job and appends the events. Returns `None`
    /// when the report keeps racing with other transitions of the task.
    async fn report_fast(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<Option<ReportAck>> {
        for _ in 0..3 {
            let row = sqlx::query(READ_LEASE_ROW)
                .bind(task)
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::not_found(Entity::Task, task));
            };
            let t = match decide_report(
                task,
                lease_row_from_row(&row)?,
                token,
                worker,
                outcome,
                now,
            )? {
                ReportVerdict::Duplicate => return Ok(Some(ReportAck::Duplicate)),
                ReportVerdict::Apply(t) => t,
            };
            let requeue = t.requeue();
            let (done, failed, cancelled) = t.counts();
            let counted = t.rewards(outcome);
            let row = sqlx::query(&REPORT_SQL)
                .bind(task)
                .bind(token)
                .bind(worker)
                .bind(t.new_state.as_str())
                .bind(requeue.then_some(now))
                .bind(t.result.as_ref().map(Json))
                .bind(t.failure.as_ref().map(Json))
                .bind((!requeue).then_some(now))
                .bind(now)
                .bind(done)
                .bind(failed)
                .bind(cancelled)
                .bind(t.event.as_ref().map(|(kind, _)| *kind))
                .bind(t.event.as_ref().map(|(_, payload)| Json(payload)))
                .bind(
                    counted
                        .iter()
                        .map(|r| r.key.arch_hash.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    counted
                        .iter()
                        .map(|r| r.key.dataset.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    counted
                        .iter()
                        .map(|r| r.key.budget.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(counted.iter().map(|r| r.value).collect::<Vec<_>>())
                .fetch_one(&self.pool)
                .await?;
            let applied: i64 = row.try_get("applied")?;
            if applied == 1 {
                let job_state: Option<String> = row.try_get("job_state")?;
                let job_state = match job_state {
                    Some(s) => parse("jobs.state", &s)?,
                    None => return Err(StoreError::corrupt(format!("job {} vanished", t.job_id))),
                };
                return Ok(Some(t.ack(job_state)));
            }
            // The task changed between the read and the write (an expiry, a concurrent
            // duplicate): read again and decide again.
        }
        Ok(None)
    }

    /// The general report path: one explicit transaction, the task row locked first, then the
    /// task, reward estimates and sample rewards written, then the job part in one statement
    /// ([`apply_job_deltas`]).
    async fn report_in_tx(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(LOCK_LEASE_ROW)
            .bind(task)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(Entity::Task, task));
        };
        let t = match decide_report(
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
        sqlx::query(
            "UPDATE tasks SET state = $2, reported_token = $3, leased_by = $9, lease_expires_at = NULL,                next_claim_at = $4, result = $5, failures = $6, finished_at = $7, updated_at = $8              WHERE id = $1",
        )
        .bind(task)
        .bind(t.new_state.as_str())
        .bind(token)
        .bind(requeue.then_some(now))
        .bind(t.result.as_ref().map(Json))
        .bind(Json(&t.failures))
        .bind((!requeue).then_some(now))
        .bind(now)
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        for obs in t.rewards(&outcome) {
            upsert_reward(&mut tx, obs, now).await?;
        }
        set_sample_rewards(&mut tx, t.sample_rewards(&outcome)).await?;
        let (job_id, task_state) = (t.job_id, t.new_state);
        let job_state = apply_job_deltas(&mut tx, job_id, &JobDeltas::of(t), now).await?;
        tx.commit().await?;
        Ok(ReportAck::Accepted {
            job_id,
            task_state,
            job_state,
        })
    }

    /// Applies the reports `batch` (indices into `items`, distinct tasks, valid outcomes, no
    /// sample rewards) with one read and ONE statement ([`REPORT_MANY_SQL`]). Rejected items
    /// (unknown task, stale or foreign token) and duplicates are answered from the read and
    /// change nothing. Returns the items that raced with another transition of their task
    /// between the read and the statement (their answers are left unset).
    async fn report_batch(
        &self,
        items: &[ReportItem],
        batch: &[usize],
        now: DateTime<Utc>,
        results: &mut [Option<Result<ReportAck>>],
    ) -> Result<Vec<usize>> {
        let ids: Vec<TaskId> = batch.iter().map(|&i| items[i].task).collect();
        let rows = sqlx::query(READ_LEASE_ROWS)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let mut by_id = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: TaskId = row.try_get("id")?;
            by_id.insert(id, row);
        }
        // Column arrays of the statement; `members[k]` is the item of array row k + 1.
        let mut members: Vec<(usize, JobId, TaskState)> = Vec::new();
        let (mut a_id, mut a_token, mut a_worker, mut a_state, mut a_requeue) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut a_result, mut a_failure, mut a_kind, mut a_payload) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut r_task, mut r_h, mut r_d, mut r_b, mut r_x) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &i in batch {
            let item = &items[i];
            let Some(row) = by_id.get(&item.task) else {
                results[i] = Some(Err(StoreError::not_found(Entity::Task, item.task)));
                continue;
            };
            let row = lease_row_from_row(row)?;
            let t = match decide_report(item.task, row, item.token, item.worker, &item.outcome, now)
            {
                Ok(ReportVerdict::Apply(t)) => t,
                Ok(ReportVerdict::Duplicate) => {
                    results[i] = Some(Ok(ReportAck::Duplicate));
                    continue;
                }
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            for obs in t.rewards(&item.outcome) {
                r_task.push(item.task);
                r_h.push(obs.key.arch_hash.as_str());
                r_d.push(obs.key.dataset.as_str());
                r_b.push(obs.key.budget.as_str());
                r_x.push(obs.value);
            }
            members.push((i, t.job_id, t.new_state));
            a_id.push(item.task);
            a_token.push(item.token);
            a_worker.push(item.worker);
            a_state.push(t.new_state.as_str());
            a_requeue.push(t.requeue());
            a_result.push(t.result.map(Json));
            a_failure.push(t.failure.map(Json));
            let (kind, payload) = match t.event {
                Some((k, p)) => (Some(k), Some(Json(p))),
                None => (None, None),
            };
            a_kind.push(kind);
            a_payload.push(payload);
        }
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&REPORT_MANY_SQL)
            .bind(&a_id)
            .bind(&a_token)
            .bind(&a_worker)
            .bind(&a_state)
            .bind(&a_requeue)
            .bind(&a_result)
            .bind(&a_failure)
            .bind(&a_kind)
            .bind(&a_payload)
            .bind(now)
            .bind(&r_task)
            .bind(&r_h)
            .bind(&r_d)
            .bind(&r_b)
            .bind(&r_x)
            .fetch_all(&self.pool)
            .await?;
        let mut applied = vec![false; members.len()];
        for row in &rows {
            let ord: i64 = row.try_get("ord")?;
            let Some(k) = usize::try_from(ord - 1).ok().filter(|&k| k < members.len()) else {
                return Err(StoreError::corrupt(format!(
                    "report row {ord} out of range"
                )));
            };
            let job_state: String = row.try_get("job_state")?;
            let (i, job_id, task_state) = members[k];
            applied[k] = true;
            results[i] = Some(Ok(ReportAck::Accepted {
                job_id,
                task_state,
                job_state: parse("jobs.state", &job_state)?,
            }));
        }
        Ok(members
            .iter()
            .zip(applied)
            .filter(|(_, a)| !a)
            .map(|((i, _, _), _)| *i)
            .collect())
    }

    /// `report_results`: the batch path for what it takes, the single path for the rest.
    pub(super) async fn report_many(
        &self,
        items: Vec<ReportItem>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<ReportAck>>> {
        validate_batch("items", items.len())?;
        let mut results: Vec<Option<Result<ReportAck>>> = (0..items.len()).map(|_| None).collect();
        // Items the batch statement does not take: a second report of a task already in the
        // batch, and reports carrying sample rewards (general path). They are applied one by one
        // afterwards, in order, so each gets exactly the answer it would get alone.
        let mut later: Vec<usize> = Vec::new();
        let mut batch: Vec<usize> = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if let Err(e) = validate_outcome(&item.outcome) {
                results[i] = Some(Err(e));
                continue;
            }
            let has_samples = matches!(&item.outcome,
                Outcome::Succeeded { sample_rewards, .. } if !sample_rewards.is_empty());
            if has_samples || !seen.insert(item.task) {
                later.push(i);
            } else {
                batch.push(i);
            }
        }
        if !batch.is_empty() {
            match self.report_batch(&items, &batch, now, &mut results).await {
                // Items whose task changed between the read and the statement (an expiry, a
                // concurrent report): decided again on their own.
                Ok(retry) => later.extend(retry),
                // The statement lost a deadlock (e.g. against a heartbeat holding the same task
                // rows in another order) or a serialization conflict: it was rolled back as a
                // whole, so every item goes through the single path instead.
                Err(StoreError::Backend(e)) if is_retryable_conflict(e.as_ref()) => {
                    tracing::debug!(error = %e, "report batch rolled back; applying items one by one");
                    for &i in &batch {
                        results[i] = None;
                    }
                    later.extend(batch.iter().copied());
                }
                Err(e) => return Err(e),
            }
            later.sort_unstable();
        }
        let mut items: Vec<Option<ReportItem>> = items.into_iter().map(Some).collect();
        for i in later {
            let Some(item) = items[i].take() else {
                continue;
            };
            match self
                .report_one(item.task, item.token, item.worker, item.outcome, now)
                .await
            {
                Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                other => results[i] = Some(other),
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::corrupt("batch item not processed"))))
            .collect())
    }

    /// `report_progress`: the task and job rows locked, the lease checked, one event.
    pub(super) async fn progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT t.job_id, t.state, t.attempt, t.lease_token, t.leased_by, t.reported_token, {ACCOUNT_COLS} \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1 \
             FOR NO KEY UPDATE OF t, j"
        ))
        .bind(task)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(Entity::Task, task));
        };
        let job_id: JobId = row.try_get("job_id")?;
        let state: String = row.try_get("state")?;
        let state: TaskState = parse("tasks.state", &state)?;
        let lease_token: i64 = row.try_get("lease_token")?;
        let leased_by: Option<WorkerId> = row.try_get("leased_by")?;
        check_lease(task, state, lease_token, leased_by, None, token, worker)?;
        let attempt: i32 = row.try_get("attempt")?;
        let mut acc = account_from_row(&row)?;
        sqlx::query(
            "UPDATE tasks SET progress = $2, updated_at = $3, leased_by = $4 WHERE id = $1",
        )
        .bind(task)
        .bind(Json(&progress))
        .bind(now)
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        let ev = acc.progress(task, i64::from(attempt), &progress);
        write_account(&mut tx, job_id, &acc, &[ev], now).await?;
        tx.commit().await?;
        Ok(())
    }
}
