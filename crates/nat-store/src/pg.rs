//! PostgreSQL backend.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{Entity, Result, StoreError};
use crate::logic::*;
use crate::store::Store;
use crate::types::*;

const NAME: &str = "postgres";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and runs the migrations. The pool size defaults to
    /// [`PgStore::DEFAULT_MAX_CONNECTIONS`] and can be set with a `max_connections=N` URL query
    /// parameter (removed before the URL reaches the driver).
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, max) = split_max_connections(url)?;
        Self::connect_with_pool_size(&url, max.unwrap_or(Self::DEFAULT_MAX_CONNECTIONS)).await
    }

    /// Default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;

    /// Connects with a pool of at most `max_connections` connections (1..=1000).
    pub async fn connect_with_pool_size(url: &str, max_connections: u32) -> Result<Self> {
        if !(1..=1000).contains(&max_connections) {
            return Err(StoreError::invalid(
                "max_connections",
                "must be in 1..=1000",
            ));
        }
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::invalid("database_url", "not a valid PostgreSQL URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const TASK_COLS: &str = "t.id, t.job_id, t.kind, t.payload, t.requirements, t.state, t.attempt, \
    t.max_attempts, t.lease_token, t.leased_by, t.lease_expires_at, t.result, t.progress, \
    t.failures, t.created_at, t.updated_at, t.finished_at";

/// The claim statement (see the crate docs): walk the active jobs in scheduling order (the
/// nested loop keeps the ordered sub-select's order and the LIMIT stops at the first job with a
/// claimable task, so only one task row is locked), claim the task with a new token, and mark
/// the job served, all in one statement.
///
/// Marking the job served never waits: the job row is updated only if no other transaction
/// holds it (`SKIP LOCKED`). A concurrent lease of the same job is marking it served at the same
/// instant anyway, and a report holding it moves `queued` to `running` itself; so under
/// contention round robin is approximate (exact when uncontended), and leases never queue on
/// a hot job row.
fn lease_sql() -> String {
    format!(
        "WITH pick AS ( \
           SELECT c.id FROM ( \
             SELECT j.id FROM jobs j WHERE j.state IN ('queued', 'running') \
             ORDER BY j.priority DESC, j.last_served_at ASC NULLS FIRST, j.created_at, j.id \
           ) j \
           CROSS JOIN LATERAL ( \
             SELECT t.id FROM tasks t \
             WHERE t.job_id = j.id AND t.next_claim_at <= $1 \
               AND (NOT t.needs_gpu OR $2) AND t.min_gpu_memory_mb <= $3 AND t.min_cpu_cores <= $4 \
             ORDER BY t.next_claim_at, t.seq LIMIT 1 FOR UPDATE SKIP LOCKED \
           ) c \
           LIMIT 1 \
         ), claimed AS ( \
           UPDATE tasks t SET \
             failures = CASE WHEN t.state = 'leased' THEN t.failures || jsonb_build_array(jsonb_build_object( \
               'attempt', t.attempt, 'worker', t.leased_by, 'reason', 'lease expired', \
               'at', (extract(epoch FROM t.lease_expires_at) * 1000000)::bigint)) ELSE t.failures END, \
             state = 'leased', attempt = t.attempt + 1, lease_token = t.lease_token + 1, \
             leased_by = $5, lease_expires_at = $6, \
             next_claim_at = CASE WHEN t.attempt + 1 < t.max_attempts THEN $6 ELSE NULL END, \
             progress = NULL, updated_at = $1 \
           FROM pick WHERE t.id = pick.id \
           RETURNING t.* \
         ), served AS ( \
           UPDATE jobs SET last_served_at = $1, updated_at = $1, \
             state = CASE WHEN jobs.state = 'queued' THEN 'running' ELSE jobs.state END \
           WHERE jobs.id = (SELECT b.id FROM jobs b WHERE b.id = (SELECT job_id FROM claimed) \
                            FOR NO KEY UPDATE SKIP LOCKED) \
         ) \
         SELECT {TASK_COLS} FROM claimed t"
    )
}

static LEASE_SQL: LazyLock<String> = LazyLock::new(lease_sql);

/// The single statement of the hot report path (see `PgStore::report_fast`).
static REPORT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH upd AS ( \
       UPDATE tasks SET state = $4, reported_token = $2, leased_by = $3, lease_expires_at = NULL, next_claim_at = $5, \
         result = $6, failures = CASE WHEN $7::jsonb IS NULL THEN failures \
           ELSE failures || jsonb_build_array($7::jsonb) END, \
         finished_at = $8, updated_at = $9 \
       WHERE id = $1 AND state = 'leased' AND lease_token = $2 AND (leased_by = $3 OR leased_by IS NULL) \
       RETURNING job_id \
     ), rew AS ( \
       INSERT INTO reward_estimates AS r (arch_hash, dataset, budget, count, mean, m2, updated_at) \
       SELECT u.h, u.d, u.b, 1, u.x, 0, $9 \
       FROM upd CROSS JOIN UNNEST($15::text[], $16::text[], $17::text[], $18::float8[]) AS u(h, d, b, x) \
       ON CONFLICT (arch_hash, dataset, budget) DO UPDATE SET \
         count = r.count + 1, \
         mean = r.mean + (EXCLUDED.mean - r.mean) / (r.count + 1), \
         m2 = r.m2 + (EXCLUDED.mean - r.mean) * (EXCLUDED.mean - (r.mean + (EXCLUDED.mean - r.mean) / (r.count + 1))), \
         updated_at = EXCLUDED.updated_at \
     ), cur AS ( \
       SELECT id, state, completion, tasks_total, tasks_done + $10 AS d, tasks_failed + $11 AS f, \
         tasks_cancelled + $12 AS c, event_seq, CASE WHEN $13::text IS NULL THEN 0 ELSE 1 END AS n \
       FROM jobs WHERE id = (SELECT job_id FROM upd) FOR NO KEY UPDATE \
     {accounting} \
     ), ev AS ( \
       INSERT INTO events (job_id, seq, kind, payload, created_at) \
       SELECT jupd.id, jupd.base + 1, $13, $14, $9 FROM jupd WHERE $13::text IS NOT NULL \
       UNION ALL \
       {job_finished} \
     ) \
     SELECT (SELECT count(*) FROM upd) AS applied, (SELECT state FROM jupd) AS job_state",
        accounting = job_accounting_sql("$9"),
        job_finished = job_finished_event_sql("$9"),
    )
});

/// The batched claim (see [`Store::lease_tasks`]): up to `$7` tasks for slots that offer the
/// same capabilities, in one statement. Jobs are walked in scheduling order; each job's
/// claimable tasks are scanned in order with `FOR UPDATE SKIP LOCKED` *inside* the scan, so a
/// row taken by a concurrent claim is skipped and the scan goes on to the next row (no
/// spurious empty answer while unlocked claimable tasks exist), and the outer `LIMIT` stops the
/// walk once enough rows are locked (only the rows handed out are locked). The `n`-th claimed
/// task goes to the `n`-th worker of `$5`. Jobs are marked served once, with `SKIP LOCKED`.
fn lease_many_sql() -> String {
    format!(
        "WITH pick AS ( \
           SELECT p.id, row_number() OVER () AS n FROM ( \
             SELECT c.id FROM ( \
               SELECT j.id FROM jobs j WHERE j.state IN ('queued', 'running') \
               ORDER BY j.priority DESC, j.last_served_at ASC NULLS FIRST, j.created_at, j.id \
             ) j \
             CROSS JOIN LATERAL ( \
               SELECT t.id FROM tasks t \
               WHERE t.job_id = j.id AND t.next_claim_at <= $1 \
                 AND (NOT t.needs_gpu OR $2) AND t.min_gpu_memory_mb <= $3 AND t.min_cpu_cores <= $4 \
                 AND (cardinality($8::text[]) = 0 OR t.dataset IS NULL OR t.dataset = ANY($8::text[])) \
               ORDER BY t.next_claim_at, t.seq LIMIT $7 FOR UPDATE SKIP LOCKED \
             ) c \
             LIMIT $7 \
           ) p \
         ), claimed AS ( \
           UPDATE tasks t SET \
             failures = CASE WHEN t.state = 'leased' THEN t.failures || jsonb_build_array(jsonb_build_object( \
               'attempt', t.attempt, 'worker', t.leased_by, 'reason', 'lease expired', \
               'at', (extract(epoch FROM t.lease_expires_at) * 1000000)::bigint)) ELSE t.failures END, \
             state = 'leased', attempt = t.attempt + 1, lease_token = t.lease_token + 1, \
             leased_by = w.worker, lease_expires_at = $6, \
             next_claim_at = CASE WHEN t.attempt + 1 < t.max_attempts THEN $6 ELSE NULL END, \
             progress = NULL, updated_at = $1 \
           FROM pick JOIN UNNEST($5::uuid[]) WITH ORDINALITY AS w(worker, n) ON w.n = pick.n \
           WHERE t.id = pick.id \
           RETURNING t.*, w.n AS slot \
         ), served AS ( \
           UPDATE jobs SET last_served_at = $1, updated_at = $1, \
             state = CASE WHEN jobs.state = 'queued' THEN 'running' ELSE jobs.state END \
           WHERE jobs.id IN (SELECT b.id FROM jobs b WHERE b.id IN (SELECT job_id FROM claimed) \
                             ORDER BY b.id FOR NO KEY UPDATE SKIP LOCKED) \
         ) \
         SELECT {TASK_COLS}, t.slot FROM claimed t"
    )
}

static LEASE_MANY_SQL: LazyLock<String> = LazyLock::new(lease_many_sql);

/// Returns unassigned reservations to the queue (`$1` = now): state `ready`, the attempt given
/// back, claimable at once; the token is not reused. Callers append a filter on the rows.
const RELEASE_SQL: &str = "UPDATE tasks t SET state = 'ready', attempt = t.attempt - 1, \
       lease_expires_at = NULL, next_claim_at = $1, progress = NULL, updated_at = $1 \
     WHERE t.state = 'leased' AND t.leased_by IS NULL";

/// The batched report statement (see `PgStore::report_batch`): one row of the `u` arrays per
/// report, decided beforehand from one read. The task update applies only where the lease is
/// still (token, worker); everything else is computed from the rows it actually updated: the
/// reward estimates (observations of one key in the batch are folded together first, then
/// merged into the stored estimate with Chan's parallel Welford update, which equals the
/// sequential one), one counters/completion update per job (job rows locked in id order after
/// the task rows) and the events, numbered per job in batch order.
static REPORT_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH u AS ( \
       SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::uuid[], $4::text[], $5::bool[], \
         $6::jsonb[], $7::jsonb[], $8::text[], $9::jsonb[]) \
         WITH ORDINALITY AS u(id, token, worker, state, requeue, result, failure, ev_kind, ev_payload, ord) \
     ), upd AS ( \
       UPDATE tasks t SET state = u.state, reported_token = u.token, leased_by = u.worker, lease_expires_at = NULL, \
         next_claim_at = CASE WHEN u.requeue THEN $10::timestamptz ELSE NULL END, result = u.result, \
         failures = CASE WHEN u.failure IS NULL THEN t.failures \
           ELSE t.failures || jsonb_build_array(u.failure) END, \
         finished_at = CASE WHEN u.requeue THEN NULL ELSE $10::timestamptz END, updated_at = $10 \
       FROM u WHERE t.id = u.id AND t.state = 'leased' AND t.lease_token = u.token \
         AND (t.leased_by = u.worker OR t.leased_by IS NULL) \
       RETURNING t.id, t.job_id, u.state, u.ord, u.ev_kind, u.ev_payload \
     ), obs AS ( \
       SELECT r.h, r.d, r.b, count(*) AS n, avg(r.x) AS mean, \
         coalesce(var_pop(r.x), 0) * count(*) AS m2 \
       FROM UNNEST($11::uuid[], $12::text[], $13::text[], $14::text[], $15::float8[]) AS r(task, h, d, b, x) \
       JOIN upd ON upd.id = r.task WHERE upd.state = 'done' \
       GROUP BY r.h, r.d, r.b \
     ), rew AS ( \
       INSERT INTO reward_estimates AS e (arch_hash, dataset, budget, count, mean, m2, updated_at) \
       SELECT h, d, b, n, mean, m2, $10 FROM obs ORDER BY h, d, b \
       ON CONFLICT (arch_hash, dataset, budget) DO UPDATE SET \
         count = e.count + EXCLUDED.count, \
         mean = e.mean + (EXCLUDED.mean - e.mean) * EXCLUDED.count / (e.count + EXCLUDED.count), \
         m2 = e.m2 + EXCLUDED.m2 + (EXCLUDED.mean - e.mean) * (EXCLUDED.mean - e.mean) \
           * e.count * EXCLUDED.count / (e.count + EXCLUDED.count), \
         updated_at = EXCLUDED.updated_at \
     ), per_job AS ( \
       SELECT job_id, count(*) FILTER (WHERE state = 'done') AS dd, \
         count(*) FILTER (WHERE state = 'failed') AS df, \
         count(*) FILTER (WHERE state = 'cancelled') AS dc, count(ev_kind) AS n \
       FROM upd GROUP BY job_id \
     ), cur AS ( \
       SELECT j.id, j.state, j.completion, j.tasks_total, j.tasks_done + p.dd AS d, \
         j.tasks_failed + p.df AS f, j.tasks_cancelled + p.dc AS c, j.event_seq, p.n \
       FROM jobs j JOIN per_job p ON p.job_id = j.id ORDER BY j.id FOR NO KEY UPDATE OF j \
     {accounting} \
     ), ev AS ( \
       INSERT INTO events (job_id, seq, kind, payload, created_at) \
       SELECT e.job_id, jupd.base + e.k, e.ev_kind, e.ev_payload, $10 FROM ( \
         SELECT upd.job_id, upd.ev_kind, upd.ev_payload, \
           row_number() OVER (PARTITION BY upd.job_id ORDER BY upd.ord) AS k \
         FROM upd WHERE upd.ev_kind IS NOT NULL \
       ) e JOIN jupd ON jupd.id = e.job_id \
       UNION ALL \
       {job_finished} \
     ) \
     SELECT upd.ord, jupd.state AS job_state FROM upd JOIN jupd ON jupd.id = upd.job_id",
        accounting = job_accounting_sql("$10"),
        job_finished = job_finished_event_sql("$10"),
    )
});

/// The `calc` and `jupd` steps shared by both report statements: from a `cur` step (the job
/// rows with their new counters `d`, `f`, `c` and `n` new events), decide completion and update
/// the job row (counters, event sequence, state, error, times at `now`).
fn job_accounting_sql(now: &str) -> String {
    format!(
        "), calc AS ( \
           SELECT cur.*, (completion = 'all_tasks' AND state IN ('queued', 'running') \
             AND d + f + c >= tasks_total) AS fin FROM cur \
         ), jupd AS ( \
           UPDATE jobs SET tasks_done = calc.d, tasks_failed = calc.f, tasks_cancelled = calc.c, \
             event_seq = calc.event_seq + calc.n + CASE WHEN calc.fin THEN 1 ELSE 0 END, \
             state = CASE WHEN calc.fin THEN CASE WHEN calc.d > 0 THEN 'succeeded' ELSE 'failed' END \
               WHEN jobs.state = 'queued' THEN 'running' ELSE jobs.state END, \
             error = CASE WHEN calc.fin AND calc.d = 0 \
               THEN 'all ' || calc.tasks_total || ' tasks failed' ELSE jobs.error END, \
             finished_at = CASE WHEN calc.fin THEN {now} ELSE jobs.finished_at END, \
             updated_at = {now} \
           FROM calc WHERE jobs.id = calc.id \
           RETURNING jobs.id, jobs.state, jobs.error, calc.fin, calc.event_seq AS base, calc.n, calc.d, calc.f"
    )
}

/// The `job_finished` event row of the jobs the `jupd` step completed, at `now`.
fn job_finished_event_sql(now: &str) -> String {
    format!(
        "SELECT jupd.id, jupd.base + jupd.n + 1, 'job_finished', jsonb_build_object('state', jupd.state, \
           'error', jupd.error, 'tasks_done', jupd.d, 'tasks_failed', jupd.f), {now} FROM jupd WHERE jupd.fin"
    )
}

const JOB_COLS: &str = "id, kind, spec, state, priority, completion, tasks_total, tasks_done, \
    tasks_failed, tasks_cancelled, result, error, created_at, updated_at, finished_at, \
    last_served_at";

/// Removes a `max_connections=N` query parameter from a PostgreSQL URL.
fn split_max_connections(url: &str) -> Result<(String, Option<u32>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut max = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("max_connections", v)) => {
                max = Some(v.parse::<u32>().map_err(|_| {
                    StoreError::invalid("max_connections", "must be a positive integer")
                })?);
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, max))
}

fn parse<T: std::str::FromStr<Err = StoreError>>(field: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::corrupt(format!("{field}: {s:?}")))
}

fn job_from_row(row: &PgRow) -> Result<Job> {
    let state: String = row.try_get("state")?;
    let completion: String = row.try_get("completion")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        spec: row.try_get::<Json<Value>, _>("spec")?.0,
        state: parse("jobs.state", &state)?,
        priority: row.try_get("priority")?,
        completion: parse("jobs.completion", &completion)?,
        tasks_total: to_u64("tasks_total", row.try_get("tasks_total")?)?,
        tasks_done: to_u64("tasks_done", row.try_get("tasks_done")?)?,
        tasks_failed: to_u64("tasks_failed", row.try_get("tasks_failed")?)?,
        tasks_cancelled: to_u64("tasks_cancelled", row.try_get("tasks_cancelled")?)?,
        result: row
            .try_get::<Option<Json<Value>>, _>("result")?
            .map(|j| j.0),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        last_served_at: row.try_get("last_served_at")?,
    })
}

fn task_from_row(row: &PgRow) -> Result<Task> {
    let state: String = row.try_get("state")?;
    Ok(Task {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        payload: row.try_get::<Json<Value>, _>("payload")?.0,
        requirements: row.try_get::<Json<Requirements>, _>("requirements")?.0,
        state: parse("tasks.state", &state)?,
        attempt: to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?,
        max_attempts: to_u32(
            "max_attempts",
            i64::from(row.try_get::<i32, _>("max_attempts")?),
        )?,
        lease_token: row.try_get("lease_token")?,
        leased_by: row.try_get("leased_by")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        result: row
            .try_get::<Option<Json<Value>>, _>("result")?
            .map(|j| j.0),
        progress: row
            .try_get::<Option<Json<Value>>, _>("progress")?
            .map(|j| j.0),
        failures: row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn worker_from_row(row: &PgRow) -> Result<Worker> {
    let state: String = row.try_get("state")?;
    Ok(Worker {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        capabilities: row.try_get::<Json<Capabilities>, _>("capabilities")?.0,
        state: parse("workers.state", &state)?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        registered_at: row.try_get("registered_at")?,
        tasks_in_hand: to_u32("tasks_in_hand", row.try_get("tasks_in_hand")?)?,
    })
}

fn estimate_from_row(row: &PgRow) -> Result<RewardEstimate> {
    Ok(RewardEstimate {
        key: RewardKey {
            arch_hash: row.try_get("arch_hash")?,
            dataset: row.try_get("dataset")?,
            budget: row.try_get("budget")?,
        },
        count: to_u64("count", row.try_get("count")?)?,
        mean: row.try_get("mean")?,
        m2: row.try_get("m2")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn checkpoint_from_row(row: &PgRow) -> Result<PolicyCheckpoint> {
    Ok(PolicyCheckpoint {
        policy_id: row.try_get("policy_id")?,
        version: row.try_get("version")?,
        space: row.try_get("space")?,
        params: row.try_get("params")?,
        optimizer_state: row.try_get("optimizer_state")?,
        baseline: row.try_get("baseline")?,
        source_job: row.try_get("source_job")?,
        meta: row.try_get::<Json<Value>, _>("meta")?.0,
        created_at: row.try_get("created_at")?,
    })
}

const SAMPLE_COLS: &str = "id, job_id, policy_id, policy_version, log_prob, entropy, \
    input_genotype, output_genotype, task_id, reward, consumed_in_version, dropped, created_at";

fn sample_from_row(row: &PgRow) -> Result<PolicySample> {
    Ok(PolicySample {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        policy_id: row.try_get("policy_id")?,
        policy_version: row.try_get("policy_version")?,
        log_prob: row.try_get("log_prob")?,
        entropy: row.try_get("entropy")?,
        input: row.try_get::<Json<Value>, _>("input_genotype")?.0,
        output: row.try_get::<Json<Value>, _>("output_genotype")?.0,
        task_id: row.try_get("task_id")?,
        reward: row.try_get("reward")?,
        consumed_in_version: row.try_get("consumed_in_version")?,
        dropped: row.try_get("dropped")?,
        created_at: row.try_get("created_at")?,
    })
}

fn account_from_row(row: &PgRow) -> Result<JobAccount> {
    let state: String = row.try_get("job_state")?;
    let completion: String = row.try_get("completion")?;
    Ok(JobAccount {
        state: parse("jobs.state", &state)?,
        completion: parse("jobs.completion", &completion)?,
        total: row.try_get("tasks_total")?,
        done: row.try_get("tasks_done")?,
        failed: row.try_get("tasks_failed")?,
        cancelled: row.try_get("tasks_cancelled")?,
        event_seq: row.try_get("event_seq")?,
        error: row.try_get("error")?,
        finished_at: row.try_get("finished_at")?,
    })
}

const ACCOUNT_COLS: &str = "j.state AS job_state, j.completion, j.tasks_total, j.tasks_done, \
    j.tasks_failed, j.tasks_cancelled, j.event_seq, j.error, j.finished_at";

/// Writes back a job's accounting and appends its pending events.
async fn write_account(
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

async fn upsert_reward(
    tx: &mut PgConnection,
    obs: &RewardObservation,
    now: DateTime<Utc>,
) -> Result<RewardEstimate> {
    // Welford: n' = n + 1, mean' = mean + (x - mean) / n', m2' = m2 + (x - mean) * (x - mean').
    let row = sqlx::query(
        "INSERT INTO reward_estimates AS r (arch_hash, dataset, budget, count, mean, m2, updated_at) \
         VALUES ($1, $2, $3, 1, $4, 0, $5) \
         ON CONFLICT (arch_hash, dataset, budget) DO UPDATE SET \
           count = r.count + 1, \
           mean = r.mean + ($4 - r.mean) / (r.count + 1), \
           m2 = r.m2 + ($4 - r.mean) * ($4 - (r.mean + ($4 - r.mean) / (r.count + 1))), \
           updated_at = $5 \
         RETURNING arch_hash, dataset, budget, count, mean, m2, updated_at",
    )
    .bind(&obs.key.arch_hash)
    .bind(&obs.key.dataset)
    .bind(&obs.key.budget)
    .bind(obs.value)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    estimate_from_row(&row)
}

async fn set_sample_rewards(tx: &mut PgConnection, rewards: &[SampleReward]) -> Result<()> {
    if rewards.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rewards.iter().map(|r| r.sample_id).collect();
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

async fn find_missing_sample(tx: &mut PgConnection, ids: &[i64]) -> Result<i64> {
    let present: Vec<i64> = sqlx::query_scalar("SELECT id FROM policy_samples WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
    Ok(ids
        .iter()
        .copied()
        .find(|id| !present.contains(id))
        .unwrap_or_default())
}

async fn insert_tasks(
    tx: &mut PgConnection,
    job: JobId,
    first_seq: i64,
    tasks: &[NewTask],
    now: DateTime<Utc>,
) -> Result<Vec<TaskId>> {
    let ids: Vec<TaskId> = tasks.iter().map(|_| Uuid::new_v4()).collect();
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

/// What the task part of a report did.
enum TaskApplied {
    /// The same report was already applied.
    Duplicate,
    /// The task moved to `new_state`; the job part is still to apply.
    Applied {
        job_id: JobId,
        new_state: TaskState,
        event: Option<(&'static str, Value)>,
    },
}

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
    fn add(&mut self, state: TaskState, event: Option<(&'static str, Value)>) {
        match state {
            TaskState::Done => self.done += 1,
            TaskState::Failed => self.failed += 1,
            TaskState::Cancelled => self.cancelled += 1,
            TaskState::Ready | TaskState::Leased => {}
        }
        if let Some((kind, payload)) = event {
            self.kinds.push(kind);
            self.payloads.push(payload);
        }
    }
}

/// One statement: lock the job row, apply the counters, finish an `all_tasks` job whose last
/// task ended (same rule as `JobAccount::maybe_complete`), append the events in order.
async fn apply_job_deltas(
    tx: &mut PgConnection,
    job: JobId,
    deltas: &JobDeltas,
    now: DateTime<Utc>,
) -> Result<JobState> {
    let state: Option<String> = sqlx::query_scalar(
        "WITH cur AS ( \
           SELECT id, state, completion, tasks_total, tasks_done + $2 AS d, tasks_failed + $3 AS f, \
             tasks_cancelled + $4 AS c, event_seq, cardinality($5::text[]) AS n \
           FROM jobs WHERE id = $1 FOR NO KEY UPDATE \
         ), calc AS ( \
           SELECT cur.*, (completion = 'all_tasks' AND state IN ('queued', 'running') \
             AND d + f + c >= tasks_total) AS fin FROM cur \
         ), upd AS ( \
           UPDATE jobs SET tasks_done = calc.d, tasks_failed = calc.f, tasks_cancelled = calc.c, \
             event_seq = calc.event_seq + calc.n + CASE WHEN calc.fin THEN 1 ELSE 0 END, \
             state = CASE WHEN calc.fin THEN CASE WHEN calc.d > 0 THEN 'succeeded' ELSE 'failed' END \
               WHEN jobs.state = 'queued' THEN 'running' ELSE jobs.state END, \
             error = CASE WHEN calc.fin AND calc.d = 0 \
               THEN 'all ' || calc.tasks_total || ' tasks failed' ELSE jobs.error END, \
             finished_at = CASE WHEN calc.fin THEN $7 ELSE jobs.finished_at END, \
             updated_at = $7 \
           FROM calc WHERE jobs.id = calc.id \
           RETURNING jobs.state, jobs.error, calc.fin, calc.event_seq AS base, calc.n, calc.d, calc.f \
         ), ev AS ( \
           INSERT INTO events (job_id, seq, kind, payload, created_at) \
           SELECT $1, upd.base + u.o, u.k, u.p, $7 \
           FROM upd CROSS JOIN UNNEST($5::text[], $6::jsonb[]) WITH ORDINALITY AS u(k, p, o) \
           UNION ALL \
           SELECT $1, upd.base + upd.n + 1, 'job_finished', jsonb_build_object('state', upd.state, \
             'error', upd.error, 'tasks_done', upd.d, 'tasks_failed', upd.f), $7 FROM upd WHERE upd.fin \
         ) \
         SELECT state FROM upd",
    )
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

impl PgStore {
    /// The hot report path: one read, then ONE statement (so one implicit transaction) that
    /// applies the task transition only if the lease is still (`token`, `worker`), and in the
    /// same statement upserts the reward estimates, updates the job counters (locking the job
    /// row only for that statement and its commit, never across a client round trip), finishes
    /// an `all_tasks` job and appends the events. Returns `None` when the report needs the
    /// general path (sample rewards, or the same reward key twice in one report) or keeps
    /// racing with other transitions of the task.
    async fn report_fast(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<Option<ReportAck>> {
        let rewards: &[RewardObservation] = match outcome {
            Outcome::Succeeded {
                rewards,
                sample_rewards,
                ..
            } => {
                if !sample_rewards.is_empty() {
                    return Ok(None);
                }
                let mut keys: Vec<&RewardKey> = rewards.iter().map(|r| &r.key).collect();
                keys.sort_by(|a, b| {
                    (&a.arch_hash, &a.dataset, &a.budget).cmp(&(
                        &b.arch_hash,
                        &b.dataset,
                        &b.budget,
                    ))
                });
                keys.dedup();
                if keys.len() != rewards.len() {
                    return Ok(None);
                }
                rewards
            }
            Outcome::Failed { .. } => &[],
        };
        for _ in 0..3 {
            let row = sqlx::query(
                "SELECT t.job_id, t.state, t.attempt, t.max_attempts, t.lease_token, t.leased_by, \
                   t.reported_token, t.failures, j.state AS job_state \
                 FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1",
            )
            .bind(task)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Err(StoreError::not_found(Entity::Task, task));
            };
            let job_id: Uuid = row.try_get("job_id")?;
            let state: String = row.try_get("state")?;
            let state: TaskState = parse("tasks.state", &state)?;
            let lease_token: i64 = row.try_get("lease_token")?;
            let leased_by: Option<Uuid> = row.try_get("leased_by")?;
            let reported: Option<i64> = row.try_get("reported_token")?;
            check_lease(task, state, lease_token, leased_by, reported, token, worker)?;
            if reported == Some(token) && leased_by == Some(worker) {
                return Ok(Some(ReportAck::Duplicate));
            }
            let attempt = to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?;
            let max_attempts = to_u32(
                "max_attempts",
                i64::from(row.try_get::<i32, _>("max_attempts")?),
            )?;
            let job_state: String = row.try_get("job_state")?;
            let job_state: JobState = parse("jobs.state", &job_state)?;
            let mut failures = row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0;
            let decision = decide_report(job_state, attempt, max_attempts, worker, outcome, now);
            if let Some(f) = &decision.failure {
                failures.push(f.clone());
            }
            let requeue = decision.new_state == TaskState::Ready;
            let event = task_event_payload(
                task,
                attempt,
                decision.new_state,
                decision.result.as_ref(),
                &failures,
            );
            let (done, failed, cancelled) = match decision.new_state {
                TaskState::Done => (1i64, 0i64, 0i64),
                TaskState::Failed => (0, 1, 0),
                TaskState::Cancelled => (0, 0, 1),
                TaskState::Ready | TaskState::Leased => (0, 0, 0),
            };
            let counted: &[RewardObservation] = if decision.new_state == TaskState::Done {
                rewards
            } else {
                &[]
            };
            let row = sqlx::query(&REPORT_SQL)
                .bind(task)
                .bind(token)
                .bind(worker)
                .bind(decision.new_state.as_str())
                .bind(requeue.then_some(now))
                .bind(decision.result.as_ref().map(Json))
                .bind(decision.failure.as_ref().map(Json))
                .bind((!requeue).then_some(now))
                .bind(now)
                .bind(done)
                .bind(failed)
                .bind(cancelled)
                .bind(event.as_ref().map(|(kind, _)| *kind))
                .bind(event.as_ref().map(|(_, payload)| Json(payload)))
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
                    None => return Err(StoreError::corrupt(format!("job {job_id} vanished"))),
                };
                return Ok(Some(ReportAck::Accepted {
                    job_id,
                    task_state: decision.new_state,
                    job_state,
                }));
            }
            // The task changed between the read and the write (an expiry, a concurrent
            // duplicate): read again and decide again.
        }
        Ok(None)
    }

    /// The general report path: one explicit transaction, task row locked first.
    async fn report_in_tx(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck> {
        let mut tx = self.pool.begin().await?;
        let ack = match Self::report_task_part(&mut tx, task, token, worker, &outcome, now).await? {
            TaskApplied::Duplicate => ReportAck::Duplicate,
            TaskApplied::Applied {
                job_id,
                new_state,
                event,
            } => {
                let mut deltas = JobDeltas::default();
                deltas.add(new_state, event);
                let job_state = apply_job_deltas(&mut tx, job_id, &deltas, now).await?;
                ReportAck::Accepted {
                    job_id,
                    task_state: new_state,
                    job_state,
                }
            }
        };
        tx.commit().await?;
        Ok(ack)
    }

    /// Applies the task part of a report (task row, reward estimates, sample rewards) inside
    /// the caller's transaction; the job part is [`apply_job_deltas`].
    async fn report_task_part(
        tx: &mut PgConnection,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<TaskApplied> {
        // Only the task row is locked here; the job row is locked by the last statement, so
        // that reports of one job hold its row for one statement and the commit.
        let row = sqlx::query(
            "SELECT t.job_id, t.state, t.attempt, t.max_attempts, t.lease_token, t.leased_by, \
               t.reported_token, t.failures, j.state AS job_state \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1 \
             FOR NO KEY UPDATE OF t",
        )
        .bind(task)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(Entity::Task, task));
        };
        let job_id: Uuid = row.try_get("job_id")?;
        let state: String = row.try_get("state")?;
        let state: TaskState = parse("tasks.state", &state)?;
        let lease_token: i64 = row.try_get("lease_token")?;
        let leased_by: Option<Uuid> = row.try_get("leased_by")?;
        let reported: Option<i64> = row.try_get("reported_token")?;
        check_lease(task, state, lease_token, leased_by, reported, token, worker)?;
        if reported == Some(token) && leased_by == Some(worker) {
            return Ok(TaskApplied::Duplicate);
        }
        let attempt = to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?;
        let max_attempts = to_u32(
            "max_attempts",
            i64::from(row.try_get::<i32, _>("max_attempts")?),
        )?;
        let job_state: String = row.try_get("job_state")?;
        let job_state: JobState = parse("jobs.state", &job_state)?;
        let mut failures = row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0;
        let decision = decide_report(job_state, attempt, max_attempts, worker, outcome, now);
        if let Some(f) = &decision.failure {
            failures.push(f.clone());
        }
        let requeue = decision.new_state == TaskState::Ready;
        sqlx::query(
            "UPDATE tasks SET state = $2, reported_token = $3, leased_by = $9, lease_expires_at = NULL, \
               next_claim_at = $4, result = $5, failures = $6, finished_at = $7, updated_at = $8 \
             WHERE id = $1",
        )
        .bind(task)
        .bind(decision.new_state.as_str())
        .bind(token)
        .bind(requeue.then_some(now))
        .bind(decision.result.as_ref().map(Json))
        .bind(Json(&failures))
        .bind((!requeue).then_some(now))
        .bind(now)
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        if let (
            TaskState::Done,
            Outcome::Succeeded {
                rewards,
                sample_rewards,
                ..
            },
        ) = (decision.new_state, outcome)
        {
            for obs in rewards {
                upsert_reward(tx, obs, now).await?;
            }
            set_sample_rewards(tx, sample_rewards).await?;
        }
        let event = task_event_payload(
            task,
            attempt,
            decision.new_state,
            decision.result.as_ref(),
            &failures,
        );
        Ok(TaskApplied::Applied {
            job_id,
            new_state: decision.new_state,
            event,
        })
    }

    /// Locks a job row (after any task rows the caller holds) and reads its accounting.
    async fn lock_account(tx: &mut PgConnection, job: JobId) -> Result<Option<JobAccount>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLS} FROM jobs j WHERE j.id = $1 FOR NO KEY UPDATE"
        ))
        .bind(job)
        .fetch_optional(&mut *tx)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn end_job(
        &self,
        id: JobId,
        final_state: JobState,
        result: Option<Option<Value>>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Job> {
        let mut tx = self.pool.begin().await?;
        // The job row first: every transition that changes the job's tasks holds it, so once we
        // have it no report or expiry of this job is in flight. The ready tasks are then
        // withdrawn with SKIP LOCKED, so this never waits for a task lock (no deadlock with a
        // lease that holds a task and waits for the job row): a task being leased right now is
        // skipped, ends up leased in a cancelled job, and is told to stop by the heartbeat.
        let Some(mut acc) = Self::lock_account(&mut tx, id).await? else {
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
               finished_at = $2, updated_at = $2 \
             WHERE id IN (SELECT id FROM tasks WHERE job_id = $1 \
               AND (state = 'ready' OR (state = 'leased' AND leased_by IS NULL)) FOR UPDATE SKIP LOCKED)",
        )
        .bind(id)
        .bind(now)
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

/// True for a PostgreSQL deadlock (`40P01`) or serialization failure (`40001`): the statement
/// was rolled back and may be retried.
fn is_retryable_conflict(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

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

impl PgStore {
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
        let workers: Vec<Option<Uuid>> = members.iter().map(|&i| requests[i].worker).collect();
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

    /// Applies the reports `batch` (indices into `items`, distinct tasks, valid outcomes, no
    /// sample rewards) with one read and ONE statement. Rejected items (unknown task, stale or
    /// foreign token) and duplicates are answered from the read and change nothing. Returns
    /// the items that raced with another transition of their task between the read and the
    /// statement (their answers are left unset).
    async fn report_batch(
        &self,
        items: &[ReportItem],
        batch: &[usize],
        now: DateTime<Utc>,
        results: &mut [Option<Result<ReportAck>>],
    ) -> Result<Vec<usize>> {
        let ids: Vec<Uuid> = batch.iter().map(|&i| items[i].task).collect();
        let rows = sqlx::query(
            "SELECT t.id, t.job_id, t.state, t.attempt, t.max_attempts, t.lease_token, t.leased_by, \
               t.reported_token, t.failures, j.state AS job_state \
             FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut by_id = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
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
            let job_id: Uuid = row.try_get("job_id")?;
            let state: String = row.try_get("state")?;
            let state: TaskState = parse("tasks.state", &state)?;
            let lease_token: i64 = row.try_get("lease_token")?;
            let leased_by: Option<Uuid> = row.try_get("leased_by")?;
            let reported: Option<i64> = row.try_get("reported_token")?;
            if let Err(e) = check_lease(
                item.task,
                state,
                lease_token,
                leased_by,
                reported,
                item.token,
                item.worker,
            ) {
                results[i] = Some(Err(e));
                continue;
            }
            if reported == Some(item.token) && leased_by == Some(item.worker) {
                results[i] = Some(Ok(ReportAck::Duplicate));
                continue;
            }
            let attempt = to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?;
            let max_attempts = to_u32(
                "max_attempts",
                i64::from(row.try_get::<i32, _>("max_attempts")?),
            )?;
            let job_state: String = row.try_get("job_state")?;
            let job_state: JobState = parse("jobs.state", &job_state)?;
            let mut failures = row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0;
            let decision = decide_report(
                job_state,
                attempt,
                max_attempts,
                item.worker,
                &item.outcome,
                now,
            );
            if let Some(f) = &decision.failure {
                failures.push(f.clone());
            }
            let event = task_event_payload(
                item.task,
                attempt,
                decision.new_state,
                decision.result.as_ref(),
                &failures,
            );
            if let (TaskState::Done, Outcome::Succeeded { rewards, .. }) =
                (decision.new_state, &item.outcome)
            {
                for obs in rewards {
                    r_task.push(item.task);
                    r_h.push(obs.key.arch_hash.clone());
                    r_d.push(obs.key.dataset.clone());
                    r_b.push(obs.key.budget.clone());
                    r_x.push(obs.value);
                }
            }
            a_id.push(item.task);
            a_token.push(item.token);
            a_worker.push(item.worker);
            a_state.push(decision.new_state.as_str());
            a_requeue.push(decision.new_state == TaskState::Ready);
            a_result.push(decision.result.map(Json));
            a_failure.push(decision.failure.map(Json));
            let (kind, payload) = match event {
                Some((k, p)) => (Some(k), Some(Json(p))),
                None => (None, None),
            };
            a_kind.push(kind);
            a_payload.push(payload);
            members.push((i, job_id, decision.new_state));
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
}

#[async_trait]
impl Store for PgStore {
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
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (id, kind, spec, state, priority, completion, tasks_total, event_seq, \
               created_at, updated_at) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, 1, $7, $7) RETURNING {JOB_COLS}"
        ))
        .bind(id)
        .bind(&job.kind)
        .bind(Json(&job.spec))
        .bind(job.priority)
        .bind(job.completion.as_str())
        .bind(tasks.len() as i64)
        .bind(now)
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
             ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.kind.as_deref())
        .bind(limit)
        .bind(offset)
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
        let mut tx = self.pool.begin().await?;
        let Some(mut acc) = Self::lock_account(&mut tx, job).await? else {
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

    async fn register_worker(
        &self,
        name: &str,
        capabilities: Capabilities,
        now: DateTime<Utc>,
    ) -> Result<Worker> {
        validate_text("name", name)?;
        let row = sqlx::query(
            "INSERT INTO workers (id, name, capabilities, state, last_heartbeat_at, registered_at) \
             VALUES ($1, $2, $3, 'active', $4, $4) \
             RETURNING id, name, capabilities, state, last_heartbeat_at, registered_at, \
               0::int8 AS tasks_in_hand",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(Json(&capabilities))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        worker_from_row(&row)
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
        let ids: Vec<Uuid> = sqlx::query_scalar(
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
        let mut tx = self.pool.begin().await?;
        // Tasks first (lock order), then the worker row.
        // Only the leases the worker says it holds (task and token): a lease whose LeaseTask
        // response never reached the worker is not kept alive by its heartbeats and expires.
        let held_ids: Vec<Uuid> = held.iter().map(|h| h.task_id).collect();
        let held_tokens: Vec<i64> = held.iter().map(|h| h.token).collect();
        let extended: Vec<(Uuid, i64)> = sqlx::query_as(
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
        let cancelled: Vec<Uuid> = sqlx::query_scalar(
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
        let mut tx = self.pool.begin().await?;
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
        let mut report = ExpiryReport::default();
        let mut by_job: std::collections::BTreeMap<
            JobId,
            Vec<(TaskId, TaskState, u32, Vec<FailureRecord>)>,
        > = std::collections::BTreeMap::new();
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let job: Uuid = row.try_get("job_id")?;
            let state: String = row.try_get("state")?;
            let state: TaskState = parse("tasks.state", &state)?;
            let attempt = to_u32("attempt", i64::from(row.try_get::<i32, _>("attempt")?))?;
            let failures = row.try_get::<Json<Vec<FailureRecord>>, _>("failures")?.0;
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
            let Some(mut acc) = Self::lock_account(&mut tx, job).await? else {
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
        if let Some(ack) = self.report_fast(task, token, worker, &outcome, now).await? {
            return Ok(ack);
        }
        self.report_in_tx(task, token, worker, outcome, now).await
    }

    async fn lease_tasks(
        &self,
        requests: &[LeaseRequest],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Vec<Option<Lease>>> {
        let expires = lease_expiry(now, lease_duration)?;
        if requests.len() > limits::MAX_BATCH {
            return Err(StoreError::invalid(
                "requests",
                format!("more than {} in one batch", limits::MAX_BATCH),
            ));
        }
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
                Self::claim_group(&mut conn, requests, filter, members, now, expires, &mut out)
                    .await?;
            }
            _ => {
                // Several statements in ONE transaction (one commit for the batch).
                let mut tx = self.pool.begin().await?;
                for (filter, members) in &groups {
                    Self::claim_group(&mut tx, requests, filter, members, now, expires, &mut out)
                        .await?;
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
        let ids: Vec<Uuid> = assignments.iter().map(|a| a.task_id).collect();
        let tokens: Vec<i64> = assignments.iter().map(|a| a.token).collect();
        let workers: Vec<Uuid> = assignments.iter().map(|a| a.worker).collect();
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
        let ids: Vec<Uuid> = leases.iter().map(|l| l.task_id).collect();
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

    async fn release_unassigned_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(RELEASE_SQL)
            .bind(now)
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
        if items.len() > limits::MAX_BATCH {
            return Err(StoreError::invalid(
                "items",
                format!("more than {} in one batch", limits::MAX_BATCH),
            ));
        }
        let mut results: Vec<Option<Result<ReportAck>>> = (0..items.len()).map(|_| None).collect();
        // Items the batch statement does not take: a second report of a task already in the
        // batch, and reports carrying sample rewards (general path). They are applied one by one
        // afterwards, in order, so each gets exactly the answer it would get alone.
        let mut later: Vec<usize> = Vec::new();
        let mut batch: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
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
                .report_result(item.task, item.token, item.worker, item.outcome, now)
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

    async fn report_progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
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
        let job_id: Uuid = row.try_get("job_id")?;
        let state: String = row.try_get("state")?;
        let state: TaskState = parse("tasks.state", &state)?;
        let lease_token: i64 = row.try_get("lease_token")?;
        let leased_by: Option<Uuid> = row.try_get("leased_by")?;
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
        let row = sqlx::query(
            "WITH s AS (UPDATE jobs SET event_seq = event_seq + 1 WHERE id = $1 RETURNING id, event_seq) \
             INSERT INTO events (job_id, seq, kind, payload, created_at) \
             SELECT s.id, s.event_seq, $2, $3, $4 FROM s \
             RETURNING job_id, seq, kind, payload, created_at",
        )
        .bind(job)
        .bind(kind)
        .bind(Json(&payload))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => event_from_row(&row),
            None => Err(StoreError::not_found(Entity::Job, job)),
        }
    }

    async fn events_after(&self, job: JobId, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        let limit = page_limit(limit)?;
        let rows = sqlx::query(
            "SELECT job_id, seq, kind, payload, created_at FROM events \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_optional(&self.pool)
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
        let mut conn = self.pool.acquire().await?;
        upsert_reward(&mut conn, &observation, now).await
    }

    async fn reward_estimate(&self, key: &RewardKey) -> Result<Option<RewardEstimate>> {
        let row = sqlx::query(
            "SELECT arch_hash, dataset, budget, count, mean, m2, updated_at FROM reward_estimates \
             WHERE arch_hash = $1 AND dataset = $2 AND budget = $3",
        )
        .bind(&key.arch_hash)
        .bind(&key.dataset)
        .bind(&key.budget)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(estimate_from_row).transpose()
    }

    async fn save_checkpoint(&self, checkpoint: NewCheckpoint, now: DateTime<Utc>) -> Result<()> {
        self.commit_policy_update(checkpoint, &[], &[], now).await
    }

    async fn latest_checkpoint(&self, policy_id: &str) -> Result<PolicyCheckpoint> {
        let row = sqlx::query(
            "SELECT * FROM policy_checkpoints WHERE policy_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(policy_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => checkpoint_from_row(&row),
            None => Err(StoreError::not_found(Entity::Policy, policy_id)),
        }
    }

    async fn checkpoint(&self, policy_id: &str, version: i64) -> Result<PolicyCheckpoint> {
        let row =
            sqlx::query("SELECT * FROM policy_checkpoints WHERE policy_id = $1 AND version = $2")
                .bind(policy_id)
                .bind(version)
                .fetch_optional(&self.pool)
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
            "SELECT DISTINCT ON (c.policy_id) c.policy_id, c.version, c.space, c.source_job, c.created_at, \
               (SELECT count(*) FROM policy_samples s WHERE s.policy_id = c.policy_id \
                  AND s.consumed_in_version IS NOT NULL AND NOT s.dropped) AS consumed \
             FROM policy_checkpoints c ORDER BY c.policy_id, c.version DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PolicySummary {
                    policy_id: row.try_get("policy_id")?,
                    version: row.try_get("version")?,
                    space: row.try_get("space")?,
                    source_job: row.try_get("source_job")?,
                    rewards_consumed: to_u64("consumed", row.try_get("consumed")?)?,
                    updated_at: row.try_get("created_at")?,
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
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(samples.len());
        for s in &samples {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO policy_samples (job_id, policy_id, policy_version, log_prob, entropy, \
                   input_genotype, output_genotype, task_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(s.job_id)
            .bind(&s.policy_id)
            .bind(s.policy_version)
            .bind(s.log_prob)
            .bind(s.entropy)
            .bind(Json(&s.input))
            .bind(Json(&s.output))
            .bind(s.task_id)
            .bind(now)
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
        let row: Option<(bool,)> = sqlx::query_as(
            "WITH u AS (UPDATE policy_samples SET reward = $2 WHERE id = $1 AND reward IS NULL RETURNING id) \
             SELECT EXISTS (SELECT 1 FROM u) FROM policy_samples WHERE id = $1",
        )
        .bind(sample)
        .bind(reward)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((changed,)) => Ok(changed),
            None => Err(StoreError::not_found(Entity::PolicySample, sample)),
        }
    }

    async fn get_sample(&self, sample: SampleId) -> Result<PolicySample> {
        let row = sqlx::query(&format!(
            "SELECT {SAMPLE_COLS} FROM policy_samples WHERE id = $1"
        ))
        .bind(sample)
        .fetch_optional(&self.pool)
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
             WHERE policy_id = $1 AND reward IS NOT NULL AND consumed_in_version IS NULL \
             ORDER BY id LIMIT $2"
        ))
        .bind(policy_id)
        .bind(limit)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // Samples first (in id order), then the checkpoint: the version check and the primary key
        // make concurrent updaters of the same policy conflict instead of both succeeding.
        if !all.is_empty() {
            let marked = sqlx::query(
                "UPDATE policy_samples SET consumed_in_version = $2, dropped = (id = ANY($4)) \
                 WHERE id = ANY($1) AND policy_id = $3 AND reward IS NOT NULL AND consumed_in_version IS NULL",
            )
            .bind(&all)
            .bind(checkpoint.version)
            .bind(&checkpoint.policy_id)
            .bind(dropped)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked != all.len() as u64 {
                return Err(StoreError::Conflict(format!(
                    "{} of {} samples are unknown, of another policy, without reward or already consumed",
                    all.len() as u64 - marked,
                    all.len()
                )));
            }
        }
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM policy_checkpoints WHERE policy_id = $1")
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
        sqlx::query(
            "INSERT INTO policy_checkpoints (policy_id, version, space, params, optimizer_state, \
               baseline, source_job, meta, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&checkpoint.policy_id)
        .bind(checkpoint.version)
        .bind(&checkpoint.space)
        .bind(&checkpoint.params)
        .bind(&checkpoint.optimizer_state)
        .bind(checkpoint.baseline)
        .bind(checkpoint.source_job)
        .bind(Json(&checkpoint.meta))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(format!(
                "policy {} version {} was stored concurrently",
                checkpoint.policy_id, checkpoint.version
            )),
            _ => StoreError::from(e),
        })?;
        tx.commit().await?;
        Ok(())
    }
}

fn event_from_row(row: &PgRow) -> Result<Event> {
    Ok(Event {
        job_id: row.try_get("job_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        payload: row.try_get::<Json<Value>, _>("payload")?.0,
        created_at: row.try_get("created_at")?,
    })
}
