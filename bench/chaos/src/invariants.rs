//! The invariants a chaos run must leave true, each one SQL query over the store's tables
//! (migrations/postgres/*.sql) whose result is a count of violations (0 = holds). Every query
//! is printed with its result.

use anyhow::Context;
use serde::Serialize;
use sqlx::postgres::PgPool;

/// One checked invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub sql: String,
    pub violations: i64,
    /// Up to 5 offending rows (as text), for the report.
    pub examples: Vec<String>,
}

impl Check {
    pub fn holds(&self) -> bool {
        self.violations == 0
    }
}

/// (name, query counting violations, query listing examples).
fn checks(has_leader_epoch: bool, ha: bool) -> Vec<(&'static str, String, String)> {
    let mut v: Vec<(&'static str, String, String)> = vec![
        (
            "every job succeeded",
            "SELECT count(*) FROM jobs WHERE state <> 'succeeded'".into(),
            "SELECT id::text || ' ' || kind || ' ' || state || coalesce(' ' || error, '') FROM jobs WHERE state <> 'succeeded' LIMIT 5".into(),
        ),
        (
            "every task final (done, failed, or cancelled with its job)",
            "SELECT count(*) FROM tasks WHERE state NOT IN ('done', 'failed', 'cancelled')".into(),
            "SELECT id::text || ' ' || state || ' attempt ' || attempt FROM tasks WHERE state NOT IN ('done', 'failed', 'cancelled') LIMIT 5".into(),
        ),
        (
            "no lease held at the end (no task leased, none by a dead worker)",
            "SELECT count(*) FROM tasks WHERE state = 'leased' OR (leased_by IS NOT NULL AND state NOT IN ('done', 'failed', 'cancelled'))".into(),
            "SELECT t.id::text || ' leased by ' || coalesce(w.name, t.leased_by::text, 'a reservation') || ' (' || coalesce(w.state, '?') || ')' FROM tasks t LEFT JOIN workers w ON w.id = t.leased_by WHERE t.state = 'leased' LIMIT 5".into(),
        ),
        (
            "a succeeded task has exactly one stored result",
            "SELECT count(*) FROM tasks WHERE (state = 'done') <> (result IS NOT NULL) OR (state = 'done' AND reported_token IS NULL)".into(),
            "SELECT id::text || ' ' || state || ' result ' || (result IS NOT NULL)::text FROM tasks WHERE (state = 'done') <> (result IS NOT NULL) OR (state = 'done' AND reported_token IS NULL) LIMIT 5".into(),
        ),
        (
            "a succeeded task was counted once (exactly one task_succeeded event)",
            "SELECT count(*) FROM tasks t LEFT JOIN (SELECT (payload->>'task_id')::uuid AS task_id, count(*) AS n FROM events WHERE kind = 'task_succeeded' GROUP BY 1) e ON e.task_id = t.id WHERE (t.state = 'done' AND coalesce(e.n, 0) <> 1) OR (t.state <> 'done' AND coalesce(e.n, 0) <> 0)".into(),
            "SELECT t.id::text || ' ' || t.state || ' events ' || coalesce(e.n, 0) FROM tasks t LEFT JOIN (SELECT (payload->>'task_id')::uuid AS task_id, count(*) AS n FROM events WHERE kind = 'task_succeeded' GROUP BY 1) e ON e.task_id = t.id WHERE (t.state = 'done' AND coalesce(e.n, 0) <> 1) OR (t.state <> 'done' AND coalesce(e.n, 0) <> 0) LIMIT 5".into(),
        ),
        (
            "a failed task has its reasons recorded (and one task_failed event)",
            "SELECT count(*) FROM tasks t WHERE t.state = 'failed' AND (jsonb_array_length(t.failures) = 0 OR (SELECT count(*) FROM events e WHERE e.job_id = t.job_id AND e.kind = 'task_failed' AND e.payload->>'task_id' = t.id::text) <> 1)".into(),
            "SELECT t.id::text || ' failures ' || t.failures::text FROM tasks t WHERE t.state = 'failed' AND (jsonb_array_length(t.failures) = 0 OR (SELECT count(*) FROM events e WHERE e.job_id = t.job_id AND e.kind = 'task_failed' AND e.payload->>'task_id' = t.id::text) <> 1) LIMIT 5".into(),
        ),
        (
            "job counters equal the task rows",
            "SELECT count(*) FROM jobs j LEFT JOIN (SELECT job_id, count(*) AS total, count(*) FILTER (WHERE state = 'done') AS done, count(*) FILTER (WHERE state = 'failed') AS failed, count(*) FILTER (WHERE state = 'cancelled') AS cancelled FROM tasks GROUP BY job_id) t ON t.job_id = j.id WHERE j.tasks_total <> coalesce(t.total, 0) OR j.tasks_done <> coalesce(t.done, 0) OR j.tasks_failed <> coalesce(t.failed, 0) OR j.tasks_cancelled <> coalesce(t.cancelled, 0)".into(),
            "SELECT j.id::text || format(' jobs(total %s done %s failed %s cancelled %s) tasks(total %s done %s failed %s cancelled %s)', j.tasks_total, j.tasks_done, j.tasks_failed, j.tasks_cancelled, coalesce(t.total, 0), coalesce(t.done, 0), coalesce(t.failed, 0), coalesce(t.cancelled, 0)) FROM jobs j LEFT JOIN (SELECT job_id, count(*) AS total, count(*) FILTER (WHERE state = 'done') AS done, count(*) FILTER (WHERE state = 'failed') AS failed, count(*) FILTER (WHERE state = 'cancelled') AS cancelled FROM tasks GROUP BY job_id) t ON t.job_id = j.id WHERE j.tasks_total <> coalesce(t.total, 0) OR j.tasks_done <> coalesce(t.done, 0) OR j.tasks_failed <> coalesce(t.failed, 0) OR j.tasks_cancelled <> coalesce(t.cancelled, 0) LIMIT 5".into(),
        ),
        (
            "every reward consumed (once) by a finished job's policy",
            "SELECT count(*) FROM policy_samples s JOIN jobs j ON j.id = s.job_id WHERE j.state = 'succeeded' AND s.reward IS NOT NULL AND s.consumed_in_version IS NULL".into(),
            "SELECT s.id::text || ' job ' || s.job_id::text || ' reward ' || s.reward FROM policy_samples s JOIN jobs j ON j.id = s.job_id WHERE j.state = 'succeeded' AND s.reward IS NOT NULL AND s.consumed_in_version IS NULL LIMIT 5".into(),
        ),
        (
            "a consumed reward names a stored version and has a reward",
            "SELECT count(*) FROM policy_samples s WHERE s.consumed_in_version IS NOT NULL AND (s.reward IS NULL OR NOT EXISTS (SELECT 1 FROM policy_checkpoints c WHERE c.policy_id = s.policy_id AND c.version = s.consumed_in_version))".into(),
            "SELECT s.id::text || ' consumed in ' || s.consumed_in_version FROM policy_samples s WHERE s.consumed_in_version IS NOT NULL AND (s.reward IS NULL OR NOT EXISTS (SELECT 1 FROM policy_checkpoints c WHERE c.policy_id = s.policy_id AND c.version = s.consumed_in_version)) LIMIT 5".into(),
        ),
        (
            "each version applied exactly the rewards it consumed (meta.rewards_applied steps)",
            "SELECT count(*) FROM (SELECT c.policy_id, c.version, (c.meta->>'rewards_applied')::bigint - coalesce(lag((c.meta->>'rewards_applied')::bigint) OVER (PARTITION BY c.policy_id ORDER BY c.version), 0) AS applied, (SELECT count(*) FROM policy_samples s WHERE s.policy_id = c.policy_id AND s.consumed_in_version = c.version AND NOT s.dropped) AS consumed FROM policy_checkpoints c WHERE c.meta ? 'rewards_applied') x WHERE applied <> consumed".into(),
            "SELECT policy_id || ' v' || version || ' applied ' || applied || ' consumed ' || consumed FROM (SELECT c.policy_id, c.version, (c.meta->>'rewards_applied')::bigint - coalesce(lag((c.meta->>'rewards_applied')::bigint) OVER (PARTITION BY c.policy_id ORDER BY c.version), 0) AS applied, (SELECT count(*) FROM policy_samples s WHERE s.policy_id = c.policy_id AND s.consumed_in_version = c.version AND NOT s.dropped) AS consumed FROM policy_checkpoints c WHERE c.meta ? 'rewards_applied') x WHERE applied <> consumed LIMIT 5".into(),
        ),
        (
            "policy versions contiguous (1..N per policy)",
            "SELECT count(*) FROM (SELECT policy_id FROM policy_checkpoints GROUP BY policy_id HAVING min(version) <> 1 OR max(version) <> count(*)) x".into(),
            "SELECT policy_id || format(' versions %s..%s, %s rows', min(version), max(version), count(*)) FROM policy_checkpoints GROUP BY policy_id HAVING min(version) <> 1 OR max(version) <> count(*) LIMIT 5".into(),
        ),
    ];
    if has_leader_epoch {
        v.push((
            "leader_epoch non-decreasing by version (no deposed leader's update)",
            "SELECT count(*) FROM (SELECT leader_epoch, lag(leader_epoch) OVER (PARTITION BY policy_id ORDER BY version) AS prev FROM policy_checkpoints) x WHERE leader_epoch < prev OR (prev IS NOT NULL AND leader_epoch IS NULL)".into(),
            "SELECT policy_id || ' v' || version || ' epoch ' || coalesce(leader_epoch::text, 'NULL') || ' after ' || coalesce(prev::text, 'NULL') FROM (SELECT policy_id, version, leader_epoch, lag(leader_epoch) OVER (PARTITION BY policy_id ORDER BY version) AS prev FROM policy_checkpoints) x WHERE leader_epoch < prev OR (prev IS NOT NULL AND leader_epoch IS NULL) LIMIT 5".into(),
        ));
    }
    if has_leader_epoch && ha {
        // With leader election every version of an optimize job's policy (the first one
        // included) is written by a driver in a term: it carries that term, one the
        // leadership row has reached.
        v.push((
            "every optimize policy version carries a term (1..current epoch)",
            "SELECT count(*) FROM policy_checkpoints c JOIN jobs j ON j.id = c.source_job AND j.kind = 'optimize' WHERE c.leader_epoch IS NULL OR c.leader_epoch < 1 OR c.leader_epoch > (SELECT coalesce(max(epoch), 0) FROM leadership WHERE name = 'coordinator')".into(),
            "SELECT c.policy_id || ' v' || c.version || ' epoch ' || coalesce(c.leader_epoch::text, 'NULL') FROM policy_checkpoints c JOIN jobs j ON j.id = c.source_job AND j.kind = 'optimize' WHERE c.leader_epoch IS NULL OR c.leader_epoch < 1 OR c.leader_epoch > (SELECT coalesce(max(epoch), 0) FROM leadership WHERE name = 'coordinator') LIMIT 5".into(),
        ));
    }
    v
}

/// Whether `table.column` exists.
pub async fn has_column(pool: &PgPool, table: &str, column: &str) -> anyhow::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
    )
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .with_context(|| format!("look up {table}.{column}"))?;
    Ok(n > 0)
}

/// Runs every check (`ha`: the run had leader election).
pub async fn check_all(pool: &PgPool, ha: bool) -> anyhow::Result<Vec<Check>> {
    let epoch = has_column(pool, "policy_checkpoints", "leader_epoch").await?;
    let mut out = Vec::new();
    for (name, sql, examples_sql) in checks(epoch, ha) {
        let violations: i64 = sqlx::query_scalar(&sql)
            .fetch_one(pool)
            .await
            .with_context(|| format!("invariant query `{name}`"))?;
        let examples = if violations > 0 {
            sqlx::query_scalar::<_, Option<String>>(&examples_sql)
                .fetch_all(pool)
                .await
                .with_context(|| format!("examples of `{name}`"))?
                .into_iter()
                .flatten()
                .collect()
        } else {
            Vec::new()
        };
        out.push(Check {
            name,
            sql,
            violations,
            examples,
        });
    }
    Ok(out)
}
