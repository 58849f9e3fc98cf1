//! The SQL of the PostgreSQL backend that is shared by several paths or too long to sit in
//! place: the claim statements, the report statements, and the fragments they share (the
//! Welford upsert of reward estimates, the job accounting, the `job_finished` event).

use std::sync::LazyLock;

use super::rows::TASK_COLS;
use crate::logic::fencing::{next_token_sql, RANDOM_BITS};

// The random bits are whole hex digits taken before the version digit of a UUID (the 13th).
const _: () = assert!(RANDOM_BITS & 3 == 0 && RANDOM_BITS / 4 <= 12);

/// The new fencing token of a claimed task `t` (see `logic::fencing`). Its random part, a
/// uniformly random integer in `0..2^RANDOM_BITS`, comes from a cryptographically strong
/// source: the leading hex digits of a version 4 UUID are random (the version and variant bits
/// come later), and `gen_random_uuid()` (core since PostgreSQL 13) draws them with
/// `pg_strong_random`. It is volatile: one draw per claimed row.
fn next_token() -> String {
    next_token_sql(&format!(
        "('x' || substr(replace(gen_random_uuid()::text, '-', ''), 1, {digits}))\
         ::bit({RANDOM_BITS})::int8",
        digits = RANDOM_BITS / 4
    ))
}

/// The columns of a report's read of its task (the lease state and the job's state), decoded
/// by `rows::lease_row_from_row`.
macro_rules! lease_row_cols {
    () => {
        "t.job_id, t.state, t.attempt, t.max_attempts, t.lease_token, t.leased_by, \
         t.reported_token, t.failures, j.state AS job_state"
    };
}

/// A report's read of its task (`$1`), without lock (the one-statement path).
pub(super) const READ_LEASE_ROW: &str = concat!(
    "SELECT ",
    lease_row_cols!(),
    " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1"
);

/// A report's read of its task (`$1`), locking the task row only (the in-transaction path; the
/// job row is locked by the last statement, so that reports of one job hold its row for one
/// statement and the commit).
pub(super) const LOCK_LEASE_ROW: &str = concat!(
    "SELECT ",
    lease_row_cols!(),
    " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1 FOR NO KEY UPDATE OF t"
);

/// The batch path's read of its tasks (`$1` = ids), with their ids.
pub(super) const READ_LEASE_ROWS: &str = concat!(
    "SELECT t.id, ",
    lease_row_cols!(),
    " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ANY($1)"
);

/// The Welford update of reward estimates, for every path that folds observations in (one
/// observation: `record_reward`, the one-statement and in-transaction report paths; folded
/// observations: the batch path). It ends an `INSERT INTO reward_estimates AS r (…) VALUES/SELECT
/// (key, count, mean, m2, updated_at)` whose row is the new observations' own estimate, and
/// merges it into the stored one with Chan's parallel update, written as
/// `m2 = m2_a + m2_b + d * n_b * (mean_b - mean')` with `d = mean_b - mean_a`: for one
/// observation (`n_b = 1`, `m2_b = 0`) this is bit for bit the sequential update
/// `mean' = mean + (x - mean) / (n + 1)`, `m2' = m2 + (x - mean) * (x - mean')`.
pub(super) const WELFORD_MERGE: &str = "ON CONFLICT (arch_hash, dataset, budget) DO UPDATE SET \
       count = r.count + EXCLUDED.count, \
       mean = r.mean + (EXCLUDED.mean - r.mean) * EXCLUDED.count / (r.count + EXCLUDED.count), \
       m2 = r.m2 + EXCLUDED.m2 + (EXCLUDED.mean - r.mean) * EXCLUDED.count * (EXCLUDED.mean \
         - (r.mean + (EXCLUDED.mean - r.mean) * EXCLUDED.count / (r.count + EXCLUDED.count))), \
       updated_at = EXCLUDED.updated_at";

/// Folds one observation (`$1`..`$3` key, `$4` value, `$5` now) into its estimate and returns it.
pub(super) static UPSERT_REWARD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO reward_estimates AS r (arch_hash, dataset, budget, count, mean, m2, updated_at) \
         VALUES ($1, $2, $3, 1, $4, 0, $5) {WELFORD_MERGE} \
         RETURNING arch_hash, dataset, budget, count, mean, m2, updated_at"
    )
});

/// The claim statement (see the crate docs): walk the active jobs in scheduling order (the
/// nested loop keeps the ordered sub-select's order and the LIMIT stops at the first job with a
/// claimable task, so only one task row is locked), claim the task with a new token, and mark
/// the job served, all in one statement. The new token is the old one plus 1 plus a random
/// amount (`logic::fencing`), so the next token of a task cannot be guessed.
///
/// Marking the job served never waits: the job row is updated only if no other transaction
/// holds it (`SKIP LOCKED`). A concurrent lease of the same job is marking it served at the same
/// instant anyway, and a report holding it moves `queued` to `running` itself; so under
/// contention round robin is approximate (exact when uncontended), and leases never queue on
/// a hot job row.
pub(super) fn lease_sql() -> String {
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
             state = 'leased', attempt = t.attempt + 1, lease_token = {next_token}, \
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
         SELECT {TASK_COLS} FROM claimed t",
        next_token = next_token(),
    )
}

pub(super) static LEASE_SQL: LazyLock<String> = LazyLock::new(lease_sql);

/// The batched claim (see [`LeaseStore::lease_tasks`](crate::LeaseStore::lease_tasks)): up to `$7` tasks for slots that offer the
/// same capabilities, in one statement. Jobs are walked in scheduling order; each job's
/// claimable tasks are scanned in order with `FOR UPDATE SKIP LOCKED` *inside* the scan, so a
/// row taken by a concurrent claim is skipped and the scan goes on to the next row (no
/// spurious empty answer while unlocked claimable tasks exist), and the outer `LIMIT` stops the
/// walk once enough rows are locked (only the rows handed out are locked). The `n`-th claimed
/// task goes to the `n`-th worker of `$5`. Jobs are marked served once, with `SKIP LOCKED`.
pub(super) fn lease_many_sql() -> String {
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
             state = 'leased', attempt = t.attempt + 1, lease_token = {next_token}, \
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
         SELECT {TASK_COLS}, t.slot FROM claimed t",
        next_token = next_token(),
    )
}

pub(super) static LEASE_MANY_SQL: LazyLock<String> = LazyLock::new(lease_many_sql);

/// Returns unassigned reservations to the queue (`$1` = now): state `ready`, the attempt given
/// back, claimable at once; the token is not reused. Callers append a filter on the rows.
pub(super) const RELEASE_SQL: &str =
    "UPDATE tasks t SET state = 'ready', attempt = t.attempt - 1, \
       lease_expires_at = NULL, next_claim_at = $1, progress = NULL, updated_at = $1 \
     WHERE t.state = 'leased' AND t.leased_by IS NULL";

/// The single statement of the hot report path (see `PgStore::report_fast`): the task transition guarded by
/// (state, token, worker), then, from the row it updated, the reward estimates ([`WELFORD_MERGE`]),
/// the job's counters and completion ([`job_accounting_sql`]) and the events.
pub(super) static REPORT_SQL: LazyLock<String> = LazyLock::new(|| {
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
       {welford} \
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
        welford = WELFORD_MERGE,
    )
});

/// The batched report statement (see `PgStore::report_batch`): one row of the `u` arrays per
/// report, decided beforehand from one read. The task update applies only where the lease is
/// still (token, worker); everything else is computed from the rows it actually updated: the
/// reward estimates (observations of one key in the batch are folded together first, then
/// merged into the stored estimate with Chan's parallel Welford update, which equals the
/// sequential one), one counters/completion update per job (job rows locked in id order after
/// the task rows) and the events, numbered per job in batch order.
pub(super) static REPORT_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
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
       INSERT INTO reward_estimates AS r (arch_hash, dataset, budget, count, mean, m2, updated_at) \
       SELECT h, d, b, n, mean, m2, $10 FROM obs ORDER BY h, d, b \
       {welford} \
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
        welford = WELFORD_MERGE,
    )
});

/// The `calc` and `jupd` steps shared by every statement that ends tasks of jobs (the two report
/// statements and [`JOB_DELTAS_SQL`]): from a `cur` step (the job
/// rows with their new counters `d`, `f`, `c` and `n` new events), decide completion and update
/// the job row (counters, event sequence, state, error, times at `now`).
pub(super) fn job_accounting_sql(now: &str) -> String {
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
pub(super) fn job_finished_event_sql(now: &str) -> String {
    format!(
        "SELECT jupd.id, jupd.base + jupd.n + 1, 'job_finished', jsonb_build_object('state', jupd.state, \
           'error', jupd.error, 'tasks_done', jupd.d, 'tasks_failed', jupd.f), {now} FROM jupd WHERE jupd.fin"
    )
}

/// The job part of a report in a transaction (see `reports::apply_job_deltas`), in one
/// statement: lock the job row (`$1`), add the counters (`$2` done, `$3` failed, `$4` cancelled),
/// finish an `all_tasks` job whose last task ended, append the events (`$5` kinds, `$6`
/// payloads) in order at `$7`, and return the job's state.
pub(super) static JOB_DELTAS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH cur AS ( \
           SELECT id, state, completion, tasks_total, tasks_done + $2 AS d, tasks_failed + $3 AS f, \
             tasks_cancelled + $4 AS c, event_seq, cardinality($5::text[]) AS n \
           FROM jobs WHERE id = $1 FOR NO KEY UPDATE \
         {accounting} \
         ), ev AS ( \
           INSERT INTO events (job_id, seq, kind, payload, created_at) \
           SELECT jupd.id, jupd.base + u.o, u.k, u.p, $7 \
           FROM jupd CROSS JOIN UNNEST($5::text[], $6::jsonb[]) WITH ORDINALITY AS u(k, p, o) \
           UNION ALL \
           {job_finished} \
         ) \
         SELECT state FROM jupd",
        accounting = job_accounting_sql("$7"),
        job_finished = job_finished_event_sql("$7"),
    )
});
