//! Backend-independent rules: input validation, and the accounting of a job when its tasks end
//! (counters, `all_tasks` completion, the events to append). Both backends lock/read the job
//! row, call into this module, and write back what it decided, inside their transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

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

/// The mutable accounting part of a job row, read under lock.
#[derive(Debug, Clone)]
pub(crate) struct JobAccount {
    pub state: JobState,
    pub completion: Completion,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub event_seq: i64,
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An event to append, its `seq` already allocated.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub seq: i64,
    pub kind: &'static str,
    pub payload: Value,
}

impl JobAccount {
    /// Allocates the next event seq.
    pub fn event(&mut self, kind: &'static str, payload: Value) -> PendingEvent {
        self.event_seq += 1;
        PendingEvent {
            seq: self.event_seq,
            kind,
            payload,
        }
    }

    /// Counts a task that reached `state` (a final state).
    pub fn count_final(&mut self, state: TaskState) {
        match state {
            TaskState::Done => self.done += 1,
            TaskState::Failed => self.failed += 1,
            TaskState::Cancelled => self.cancelled += 1,
            TaskState::Ready | TaskState::Leased => {}
        }
    }

    /// For `all_tasks` jobs that are not final: when every task ended, finishes the job and
    /// returns its `job_finished` event.
    pub fn maybe_complete(&mut self, now: DateTime<Utc>) -> Option<PendingEvent> {
        if self.completion != Completion::AllTasks
            || self.state.is_final()
            || self.done + self.failed + self.cancelled < self.total
        {
            return None;
        }
        if self.done > 0 {
            self.state = JobState::Succeeded;
        } else {
            self.state = JobState::Failed;
            self.error = Some(format!("all {} tasks failed", self.total));
        }
        self.finished_at = Some(now);
        let payload = json!({
            "state": self.state.as_str(),
            "error": self.error,
            "tasks_done": self.done,
            "tasks_failed": self.failed,
        });
        Some(self.event(event_kind::JOB_FINISHED, payload))
    }
}

/// What a report does to its task, decided from the locked task and job rows.
#[derive(Debug, Clone)]
pub(crate) struct ReportDecision {
    pub new_state: TaskState,
    /// Failure to append to the task's `failures`.
    pub failure: Option<FailureRecord>,
    pub result: Option<Value>,
}

pub(crate) fn decide_report(
    job_state: JobState,
    attempt: u32,
    max_attempts: u32,
    worker: WorkerId,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> ReportDecision {
    if job_state.is_final() {
        let result = match outcome {
            Outcome::Succeeded { result, .. } => Some(result.clone()),
            Outcome::Failed { .. } => None,
        };
        return ReportDecision {
            new_state: TaskState::Cancelled,
            failure: None,
            result,
        };
    }
    match outcome {
        Outcome::Succeeded { result, .. } => ReportDecision {
            new_state: TaskState::Done,
            failure: None,
            result: Some(result.clone()),
        },
        Outcome::Failed { reason, retryable } => ReportDecision {
            new_state: if *retryable && attempt < max_attempts {
                TaskState::Ready
            } else {
                TaskState::Failed
            },
            failure: Some(FailureRecord {
                attempt,
                worker: Some(worker),
                reason: if reason.trim().is_empty() {
                    "failed without a reason".to_string()
                } else {
                    reason.clone()
                },
                at: now,
            }),
            result: None,
        },
    }
}

/// The kind and payload of the event for a task that reached `state` through a report or an
/// expiry (`None` for states that log no event).
pub(crate) fn task_event_payload(
    task: TaskId,
    attempt: u32,
    state: TaskState,
    result: Option<&Value>,
    failures: &[FailureRecord],
) -> Option<(&'static str, Value)> {
    match state {
        TaskState::Done => Some((
            event_kind::TASK_SUCCEEDED,
            json!({ "task_id": task, "attempt": attempt, "result": result }),
        )),
        TaskState::Ready => Some((
            event_kind::TASK_RETRY,
            json!({
                "task_id": task,
                "attempt": attempt,
                "reason": failures.last().map(|f| f.to_string()),
            }),
        )),
        TaskState::Failed => Some((
            event_kind::TASK_FAILED,
            json!({
                "task_id": task,
                "attempt": attempt,
                "reasons": failures.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            }),
        )),
        TaskState::Cancelled | TaskState::Leased => None,
    }
}

/// [`task_event_payload`] with its `seq` allocated from `account`.
pub(crate) fn task_event(
    account: &mut JobAccount,
    task: TaskId,
    attempt: u32,
    state: TaskState,
    result: Option<&Value>,
    failures: &[FailureRecord],
) -> Option<PendingEvent> {
    task_event_payload(task, attempt, state, result, failures)
        .map(|(kind, payload)| account.event(kind, payload))
}

/// Checks that (`token`, `worker`) is the current lease of a task (or, when `reported` equals
/// `token`, an already applied report of that lease, which the caller answers as duplicate).
pub(crate) fn check_lease(
    task: TaskId,
    state: TaskState,
    lease_token: i64,
    leased_by: Option<WorkerId>,
    reported: Option<i64>,
    token: i64,
    worker: WorkerId,
) -> Result<()> {
    // An unassigned reservation (no worker yet) belongs to whoever holds its token.
    let holder_ok = match leased_by {
        Some(w) => w == worker,
        None => state == TaskState::Leased,
    };
    if !holder_ok || lease_token != token {
        return Err(StoreError::FailedPrecondition(format!(
            "lease token {token} of task {task} is stale or held by another worker"
        )));
    }
    if reported == Some(token) {
        return Ok(());
    }
    if state != TaskState::Leased {
        return Err(StoreError::FailedPrecondition(format!(
            "task {task} is {state}, its lease {token} is no longer valid"
        )));
    }
    Ok(())
}

/// Builds the heartbeat answer: the worker must stop every task it reported holding that is not
/// among the extended leases (same token), and every leased task of a cancelled job.
pub(crate) fn heartbeat_ack(
    held: &[HeldLease],
    extended: Vec<(TaskId, i64)>,
    cancelled: Vec<TaskId>,
    expires: DateTime<Utc>,
) -> HeartbeatAck {
    let mut stop: Vec<TaskId> = held
        .iter()
        .filter(|h| !extended.contains(&(h.task_id, h.token)))
        .map(|h| h.task_id)
        .collect();
    for id in cancelled {
        if !stop.contains(&id) {
            stop.push(id);
        }
    }
    HeartbeatAck {
        extended: extended.into_iter().map(|(id, _)| id).collect(),
        stop,
        lease_expires_at: expires,
    }
}

pub(crate) fn to_u32(field: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::corrupt(format!("{field} out of range: {v}")))
}

pub(crate) fn to_u64(field: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(format!("{field} out of range: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Welford update of (count, mean, m2) with `x` (what the SQL upserts compute).
    fn welford(count: u64, mean: f64, m2: f64, x: f64) -> (u64, f64, f64) {
        let n = count + 1;
        let delta = x - mean;
        let mean2 = mean + delta / n as f64;
        (n, mean2, m2 + delta * (x - mean2))
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [0.5, 0.75, 0.25, 0.9, 0.6];
        let (mut n, mut mean, mut m2) = (0, 0.0, 0.0);
        for x in xs {
            (n, mean, m2) = welford(n, mean, m2, x);
        }
        let m: f64 = xs.iter().sum::<f64>() / xs.len() as f64;
        let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
        assert_eq!(n, 5);
        assert!((mean - m).abs() < 1e-12);
        assert!((m2 - ss).abs() < 1e-12);
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
}
