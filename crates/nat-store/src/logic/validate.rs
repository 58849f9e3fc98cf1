//! Input validation shared by both backends: every public method checks its arguments here
//! before touching the database, so both backends refuse the same inputs with the same field
//! names.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Result, StoreError};
use crate::types::*;

pub(crate) fn validate_text(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > limits::MAX_TEXT_LEN {
        return Err(StoreError::invalid(
            field,
            format!("longer than {} bytes", limits::MAX_TEXT_LEN),
        ));
    }
    Ok(())
}

pub(crate) fn validate_job(job: &NewJob, tasks: &[NewTask]) -> Result<()> {
    validate_text("kind", &job.kind)?;
    if let Some(owner) = &job.owner {
        validate_text("owner", owner)?;
    }
    if !(limits::MIN_PRIORITY..=limits::MAX_PRIORITY).contains(&job.priority) {
        return Err(StoreError::invalid(
            "priority",
            format!(
                "must be in {}..={}",
                limits::MIN_PRIORITY,
                limits::MAX_PRIORITY
            ),
        ));
    }
    if tasks.is_empty() && job.completion == Completion::AllTasks {
        return Err(StoreError::invalid(
            "tasks",
            "a job that completes with its tasks needs at least one task",
        ));
    }
    validate_tasks(tasks)
}

pub(crate) fn validate_tasks(tasks: &[NewTask]) -> Result<()> {
    if tasks.len() > limits::MAX_TASKS_PER_CALL {
        return Err(StoreError::invalid(
            "tasks",
            format!("more than {} tasks", limits::MAX_TASKS_PER_CALL),
        ));
    }
    for (i, task) in tasks.iter().enumerate() {
        validate_text(&format!("tasks[{i}].kind"), &task.kind)?;
        if !(1..=limits::MAX_ATTEMPTS).contains(&task.max_attempts) {
            return Err(StoreError::invalid(
                format!("tasks[{i}].max_attempts"),
                format!("must be in 1..={}", limits::MAX_ATTEMPTS),
            ));
        }
        if task.requirements.min_gpu_memory_mb > i64::MAX as u64 {
            return Err(StoreError::invalid(
                format!("tasks[{i}].requirements.min_gpu_memory_mb"),
                "too large",
            ));
        }
        if task.requirements.min_cpu_cores > i32::MAX as u32 {
            return Err(StoreError::invalid(
                format!("tasks[{i}].requirements.min_cpu_cores"),
                "too large",
            ));
        }
    }
    Ok(())
}

/// `now + d`, refusing zero and absurd durations.
pub(crate) fn lease_expiry(now: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>> {
    if d.is_zero() || d > Duration::from_secs(7 * 24 * 3600) {
        return Err(StoreError::invalid(
            "lease_duration",
            "must be between 1 µs and 7 days",
        ));
    }
    let d = chrono::Duration::from_std(d)
        .map_err(|_| StoreError::invalid("lease_duration", "out of range"))?;
    now.checked_add_signed(d)
        .ok_or_else(|| StoreError::invalid("lease_duration", "out of range"))
}

pub(crate) fn page_limit(limit: u32) -> Result<i64> {
    match limit {
        0 => Ok(100),
        l if l <= limits::MAX_PAGE => Ok(i64::from(l)),
        _ => Err(StoreError::invalid(
            "limit",
            format!("must be at most {}", limits::MAX_PAGE),
        )),
    }
}

pub(crate) fn page_offset(offset: u64) -> Result<i64> {
    i64::try_from(offset).map_err(|_| StoreError::invalid("offset", "too large"))
}

pub(crate) fn validate_observation(i: usize, obs: &RewardObservation) -> Result<()> {
    validate_text(&format!("rewards[{i}].key.arch_hash"), &obs.key.arch_hash)?;
    validate_text(&format!("rewards[{i}].key.dataset"), &obs.key.dataset)?;
    validate_text(&format!("rewards[{i}].key.budget"), &obs.key.budget)?;
    if !obs.value.is_finite() {
        return Err(StoreError::invalid(
            format!("rewards[{i}].value"),
            "must be finite",
        ));
    }
    Ok(())
}

pub(crate) fn validate_outcome(outcome: &Outcome) -> Result<()> {
    match outcome {
        Outcome::Succeeded {
            rewards,
            sample_rewards,
            ..
        } => {
            for (i, obs) in rewards.iter().enumerate() {
                validate_observation(i, obs)?;
            }
            for (i, sr) in sample_rewards.iter().enumerate() {
                if !sr.reward.is_finite() {
                    return Err(StoreError::invalid(
                        format!("sample_rewards[{i}].reward"),
                        "must be finite",
                    ));
                }
            }
            Ok(())
        }
        Outcome::Failed { reason, .. } => {
            if reason.len() > limits::MAX_TEXT_LEN {
                return Err(StoreError::invalid(
                    "reason",
                    format!("longer than {} bytes", limits::MAX_TEXT_LEN),
                ));
            }
            Ok(())
        }
    }
}

pub(crate) fn validate_checkpoint(cp: &NewCheckpoint) -> Result<()> {
    validate_text("policy_id", &cp.policy_id)?;
    validate_text("space", &cp.space)?;
    if cp.version < 1 {
        return Err(StoreError::invalid("version", "must be at least 1"));
    }
    if !cp.baseline.is_finite() {
        return Err(StoreError::invalid("baseline", "must be finite"));
    }
    Ok(())
}

pub(crate) fn validate_sample(i: usize, s: &NewPolicySample) -> Result<()> {
    validate_text(&format!("samples[{i}].policy_id"), &s.policy_id)?;
    if s.policy_version < 1 {
        return Err(StoreError::invalid(
            format!("samples[{i}].policy_version"),
            "must be at least 1",
        ));
    }
    if !s.log_prob.is_finite() {
        return Err(StoreError::invalid(
            format!("samples[{i}].log_prob"),
            "must be finite",
        ));
    }
    if !s.entropy.is_finite() {
        return Err(StoreError::invalid(
            format!("samples[{i}].entropy"),
            "must be finite",
        ));
    }
    Ok(())
}

/// Refuses a batch of more than `limits::MAX_BATCH` elements (`field` names the argument).
pub(crate) fn validate_batch(field: &str, len: usize) -> Result<()> {
    if len > limits::MAX_BATCH {
        return Err(StoreError::invalid(
            field,
            format!("more than {} in one batch", limits::MAX_BATCH),
        ));
    }
    Ok(())
}

/// Refuses a policy update written in a leadership term that is over: `epoch` is the update's
/// term ([`NewCheckpoint::leader_epoch`]), `current` the term the leadership row holds, read in
/// the update's transaction.
pub(crate) fn check_term(checkpoint: &NewCheckpoint, current: Option<i64>) -> Result<()> {
    check_leader_term(
        &format!(
            "policy {} version {}",
            checkpoint.policy_id, checkpoint.version
        ),
        "update a policy",
        checkpoint.leader_epoch,
        current,
    )
}

/// Refuses a supernet commit written in a leadership term that is over (see [`check_term`]).
pub(crate) fn check_supernet_term(v: &NewSupernetVersion, current: Option<i64>) -> Result<()> {
    check_leader_term(
        &format!("supernet of job {} version {}", v.job_id, v.version),
        "commit a supernet version",
        v.leader_epoch,
        current,
    )
}

/// `FailedPrecondition` when a write of `subject` carries a term `epoch` that is not `current`.
fn check_leader_term(
    subject: &str,
    action: &str,
    epoch: Option<i64>,
    current: Option<i64>,
) -> Result<()> {
    match epoch {
        Some(epoch) if current != Some(epoch) => Err(StoreError::FailedPrecondition(format!(
            "{subject}: leadership term {epoch} is over (current term: {}); a deposed leader \
             cannot {action}",
            current.map_or_else(|| "none".to_string(), |c| c.to_string())
        ))),
        _ => Ok(()),
    }
}

/// Checks a blob key (`field` names it): non-empty, at most [`limits::MAX_BLOB_KEY_LEN`]
/// bytes of `[A-Za-z0-9._/-]`, made of non-empty `/`-separated segments none of which is `.`
/// or contains `..`.
pub(crate) fn validate_blob_key(field: &str, key: &str) -> Result<()> {
    validate_key_text(field, key)?;
    if key.starts_with('/') || key.ends_with('/') || key.contains("//") {
        return Err(StoreError::invalid(
            field,
            "must not start or end with '/' nor contain an empty segment",
        ));
    }
    if key.split('/').any(|segment| segment == ".") {
        return Err(StoreError::invalid(field, "must not contain a '.' segment"));
    }
    Ok(())
}

/// Checks a blob key prefix (`field` names it): as a key ([`validate_blob_key`]) but it may end
/// with `/`.
pub(crate) fn validate_blob_prefix(field: &str, prefix: &str) -> Result<()> {
    validate_blob_key(field, prefix.strip_suffix('/').unwrap_or(prefix))
}

/// The character rules of blob keys and prefixes.
fn validate_key_text(field: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if key.len() > limits::MAX_BLOB_KEY_LEN {
        return Err(StoreError::invalid(
            field,
            format!("longer than {} bytes", limits::MAX_BLOB_KEY_LEN),
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(StoreError::invalid(
            field,
            format!("{c:?} is not allowed (only A-Z, a-z, 0-9, '.', '_', '/', '-')"),
        ));
    }
    if key.contains("..") {
        return Err(StoreError::invalid(field, "must not contain '..'"));
    }
    Ok(())
}

/// Checks a SHA-256 digest in text (`field` names it): 64 lowercase hex digits.
pub(crate) fn validate_sha256(field: &str, sha256: &str) -> Result<()> {
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(StoreError::invalid(
            field,
            "must be 64 lowercase hex digits (a SHA-256 digest)",
        ));
    }
    Ok(())
}

/// Validates a supernet commit: the version's fields, and `rewards` (finite, no sample
/// twice). Returns the rewards sorted by sample id (the order in which they are set).
pub(crate) fn validate_supernet_commit(
    v: &NewSupernetVersion,
    rewards: &[(SampleId, f64)],
) -> Result<Vec<(SampleId, f64)>> {
    if v.version < 1 {
        return Err(StoreError::invalid("version", "must be at least 1"));
    }
    if v.round < -1 {
        return Err(StoreError::invalid(
            "round",
            "must be at least -1 (-1 is the warm-up)",
        ));
    }
    validate_blob_key("blob_key", &v.blob_key)?;
    if v.bytes < 0 {
        return Err(StoreError::invalid("bytes", "must not be negative"));
    }
    validate_sha256("sha256", &v.sha256)?;
    if v.workers.len() > limits::MAX_SUPERNET_REWARDS {
        return Err(StoreError::invalid(
            "workers",
            format!("more than {}", limits::MAX_SUPERNET_REWARDS),
        ));
    }
    for (i, w) in v.workers.iter().enumerate() {
        validate_text(&format!("workers[{i}]"), w)?;
    }
    if rewards.len() > limits::MAX_SUPERNET_REWARDS {
        return Err(StoreError::invalid(
            "rewards",
            format!("more than {} in one commit", limits::MAX_SUPERNET_REWARDS),
        ));
    }
    for (i, (_, reward)) in rewards.iter().enumerate() {
        if !reward.is_finite() {
            return Err(StoreError::invalid(
                format!("rewards[{i}].reward"),
                "must be finite",
            ));
        }
    }
    let mut sorted = rewards.to_vec();
    sorted.sort_unstable_by_key(|(id, _)| *id);
    if let Some(pair) = sorted.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(StoreError::invalid(
            "rewards",
            format!("sample {} is listed twice", pair[0].0),
        ));
    }
    Ok(sorted)
}

/// Validates the task list of `cancel_tasks`: at most [`limits::MAX_TASKS_PER_CALL`]. Returns
/// the tasks sorted, without repeats (the order in which they are locked).
pub(crate) fn validate_task_list(tasks: &[TaskId]) -> Result<Vec<TaskId>> {
    if tasks.len() > limits::MAX_TASKS_PER_CALL {
        return Err(StoreError::invalid(
            "tasks",
            format!("more than {} tasks", limits::MAX_TASKS_PER_CALL),
        ));
    }
    let mut sorted = tasks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(sorted)
}

/// Validates a policy update: the checkpoint, and `consumed` and `dropped` disjoint and without
/// repeats. Returns every listed sample, sorted (the order in which they are marked).
pub(crate) fn validate_policy_update(
    checkpoint: &NewCheckpoint,
    consumed: &[SampleId],
    dropped: &[SampleId],
) -> Result<Vec<SampleId>> {
    validate_checkpoint(checkpoint)?;
    let mut all: Vec<SampleId> = consumed.iter().chain(dropped).copied().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    if all.len() != before {
        return Err(StoreError::invalid(
            "consumed",
            "a sample is listed twice (consumed and dropped must be disjoint)",
        ));
    }
    Ok(all)
}

/// A `set_sample_reward` value must be finite.
pub(crate) fn validate_sample_reward(reward: f64) -> Result<()> {
    if !reward.is_finite() {
        return Err(StoreError::invalid("reward", "must be finite"));
    }
    Ok(())
}

pub(crate) fn to_u32(field: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::corrupt(format!("{field} out of range: {v}")))
}

pub(crate) fn to_u64(field: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(format!("{field} out of range: {v}")))
}

/// Parses an enum stored as text (`field` names the column in the error).
pub(crate) fn parse<T: std::str::FromStr<Err = StoreError>>(field: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::corrupt(format!("{field}: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[i64]) -> Vec<SampleId> {
        v.iter().copied().map(SampleId::from).collect()
    }

    #[test]
    fn lease_expiry_rejects_zero() {
        let now = Utc::now();
        assert!(matches!(
            lease_expiry(now, Duration::ZERO),
            Err(StoreError::InvalidArgument { field, .. }) if field == "lease_duration"
        ));
        assert_eq!(
            lease_expiry(now, Duration::from_secs(30)).ok(),
            Some(now + chrono::Duration::seconds(30))
        );
    }

    #[test]
    fn policy_update_refuses_a_sample_listed_twice() {
        let cp = NewCheckpoint {
            policy_id: "p".into(),
            version: 1,
            space: "s".into(),
            params: vec![],
            optimizer_state: vec![],
            baseline: 0.0,
            source_job: None,
            meta: serde_json::json!({}),
            leader_epoch: None,
        };
        assert_eq!(
            validate_policy_update(&cp, &ids(&[3, 1]), &ids(&[2])).ok(),
            Some(ids(&[1, 2, 3]))
        );
        assert!(matches!(
            validate_policy_update(&cp, &ids(&[1]), &ids(&[1])),
            Err(StoreError::InvalidArgument { field, .. }) if field == "consumed"
        ));
    }
}
