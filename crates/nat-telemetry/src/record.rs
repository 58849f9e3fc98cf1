//! One typed function per observation. Each call is one line at the instrumentation site and
//! emits exactly the metric of [`catalog`](crate::catalog) it names, with bounded labels only.
//! Without an installed recorder every function is a no-op.
//!
//! Coordinator: [`job_submitted`], [`tasks_created`], [`task_leased`], [`lease_task_rpc`],
//! [`report_result_rpc`], [`task_finished`], [`task_retried`], [`lease_expired`],
//! [`lease_reservations`], [`job_finished`], [`evaluated_accuracy`], [`policy_reward`], [`policy_updated`],
//! [`reward_cache_lookup`], [`worker_registered`], [`auth_refused`], and the gauges [`set_jobs`], [`set_tasks`],
//! [`set_workers`] (refreshed from the store, see `nat_dashboard::gauges`).
//!
//! Worker: [`worker_task_finished`], [`worker_images`], [`worker_slots`],
//! [`worker_gpu_memory`], [`worker_rpc_error`].

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::catalog::{self, MAX_GPU_INDEX};
use crate::labels::*;

// ----- coordinator: jobs and tasks ----------------------------------------------------------

/// A job was accepted by SubmitJob.
pub fn job_submitted(kind: JobKind) {
    counter!(catalog::JOBS_SUBMITTED.name, "job_kind" => kind.as_str()).increment(1);
}

/// `count` tasks of `kind` were created (job submission or `add_tasks`).
pub fn tasks_created(kind: TaskKind, count: u64) {
    counter!(catalog::TASKS_CREATED.name, "task_kind" => kind.as_str()).increment(count);
}

/// A lease was granted for a task of `kind`.
pub fn task_leased(kind: TaskKind) {
    counter!(catalog::TASKS_LEASED.name, "task_kind" => kind.as_str()).increment(1);
}

/// One LeaseTask RPC finished after `latency` with `result`.
pub fn lease_task_rpc(result: LeaseResult, latency: Duration) {
    histogram!(catalog::LEASE_TASK_DURATION.name, "result" => result.as_str())
        .record(latency.as_secs_f64());
}

/// One ReportResult RPC finished after `latency` with `outcome`.
pub fn report_result_rpc(outcome: ReportOutcome, latency: Duration) {
    histogram!(catalog::REPORT_RESULT_DURATION.name, "outcome" => outcome.as_str())
        .record(latency.as_secs_f64());
}

/// A task of `kind` reached a final state.
pub fn task_finished(kind: TaskKind, outcome: TaskOutcome) {
    counter!(
        catalog::TASKS_FINISHED.name,
        "task_kind" => kind.as_str(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// A task of `kind` went back to the queue.
pub fn task_retried(kind: TaskKind, reason: RetryReason) {
    counter!(
        catalog::TASK_RETRIES.name,
        "task_kind" => kind.as_str(),
        "reason" => reason.as_str()
    )
    .increment(1);
}

/// `count` expired leases were collected with `outcome` (from `Store::expire_leases`).
pub fn lease_expired(outcome: ExpiryOutcome, count: u64) {
    counter!(catalog::LEASE_EXPIRIES.name, "outcome" => outcome.as_str()).increment(count);
}

/// `count` lease reservations had `event` (see `coordinator/src/reserve.rs`).
pub fn lease_reservations(event: ReservationEvent, count: u64) {
    if count > 0 {
        counter!(catalog::LEASE_RESERVATIONS.name, "event" => event.as_str()).increment(count);
    }
}

/// A job of `kind` reached the final `state`.
pub fn job_finished(kind: JobKind, state: JobState) {
    counter!(
        catalog::JOBS_FINISHED.name,
        "job_kind" => kind.as_str(),
        "state" => state.as_str()
    )
    .increment(1);
}

/// A train_eval task reported `accuracy` (a fraction). Non-finite values are ignored.
pub fn evaluated_accuracy(accuracy: f64) {
    if accuracy.is_finite() {
        histogram!(catalog::EVALUATED_ACCURACY.name).record(accuracy);
    }
}

// ----- coordinator: policy -------------------------------------------------------------------

/// A reward was computed for a policy sample. Non-finite values are ignored.
pub fn policy_reward(reward: f64) {
    if reward.is_finite() {
        histogram!(catalog::POLICY_REWARD.name).record(reward);
    }
}

/// A policy update committed `version` with `baseline`, using `used` samples and dropping
/// `stale` ones, in `latency`.
pub fn policy_updated(version: i64, baseline: f64, used: u64, stale: u64, latency: Duration) {
    gauge!(catalog::POLICY_VERSION.name).set(version as f64);
    if baseline.is_finite() {
        gauge!(catalog::POLICY_BASELINE.name).set(baseline);
    }
    counter!(catalog::POLICY_SAMPLES_USED.name).increment(used);
    counter!(catalog::POLICY_SAMPLES_STALE.name).increment(stale);
    histogram!(catalog::POLICY_UPDATE_DURATION.name).record(latency.as_secs_f64());
}

/// Which way supernet weights moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Streamed to a worker.
    Sent,
    /// Uploaded by a worker.
    Received,
}

/// `bytes` of supernet weights moved `direction`.
pub fn supernet_bytes(direction: Direction, bytes: u64) {
    let name = match direction {
        Direction::Sent => catalog::SUPERNET_BYTES_SENT.name,
        Direction::Received => catalog::SUPERNET_BYTES_RECEIVED.name,
    };
    counter!(name).increment(bytes);
}

/// A supernet weight version was committed after averaging for `latency`.
pub fn supernet_version_committed(latency: Duration) {
    counter!(catalog::SUPERNET_VERSIONS.name).increment(1);
    histogram!(catalog::SUPERNET_AVERAGE_DURATION.name).record(latency.as_secs_f64());
}

/// The reward cache was consulted before scheduling training.
pub fn reward_cache_lookup(result: CacheResult) {
    counter!(catalog::REWARD_CACHE_LOOKUPS.name, "result" => result.as_str()).increment(1);
}

// ----- coordinator: workers and gauges -------------------------------------------------------

/// A worker registered.
pub fn worker_registered() {
    counter!(catalog::WORKERS_REGISTERED.name).increment(1);
}

/// A call was refused by authentication; `reason` is `unauthenticated` or
/// `permission_denied` (anything else is counted as `permission_denied`).
pub fn auth_refused(reason: &'static str) {
    let reason = if reason == "unauthenticated" {
        "unauthenticated"
    } else {
        "permission_denied"
    };
    counter!(catalog::AUTH_REFUSED.name, "reason" => reason).increment(1);
}

/// This coordinator began a leadership term (`elected`) or ended one (`false`).
pub fn leadership_changed(elected: bool, epoch: i64) {
    let change = if elected { "elected" } else { "stepped_down" };
    counter!(catalog::LEADER_CHANGES.name, "change" => change).increment(1);
    gauge!(catalog::LEADER.name).set(if elected { 1.0 } else { 0.0 });
    gauge!(catalog::LEADER_EPOCH.name).set(epoch as f64);
}

/// The leadership term this follower saw held by another coordinator.
pub fn leader_seen(epoch: i64) {
    gauge!(catalog::LEADER.name).set(0.0);
    gauge!(catalog::LEADER_EPOCH.name).set(epoch as f64);
}

/// Sets the number of jobs in `state`.
pub fn set_jobs(state: JobState, count: u64) {
    gauge!(catalog::JOBS.name, "state" => state.as_str()).set(count as f64);
}

/// Sets the number of tasks of unfinished jobs in `state`.
pub fn set_tasks(state: TaskState, count: u64) {
    gauge!(catalog::TASKS.name, "state" => state.as_str()).set(count as f64);
}

/// Sets the number of workers in `state`.
pub fn set_workers(state: WorkerState, count: u64) {
    gauge!(catalog::WORKERS.name, "state" => state.as_str()).set(count as f64);
}

// ----- worker ------------------------------------------------------------------------------

/// A task finished on this worker after `elapsed`.
pub fn worker_task_finished(
    kind: TaskKind,
    device: DeviceKind,
    outcome: WorkerTaskOutcome,
    elapsed: Duration,
) {
    histogram!(
        catalog::WORKER_TASK_DURATION.name,
        "task_kind" => kind.as_str(),
        "device_kind" => device.as_str(),
        "outcome" => outcome.as_str()
    )
    .record(elapsed.as_secs_f64());
}

/// `images` were processed on `device`; `images_per_second` is the throughput measured for them
/// (ignored unless finite and non-negative).
pub fn worker_images(device: DeviceKind, images: u64, images_per_second: f64) {
    counter!(catalog::WORKER_IMAGES.name, "device_kind" => device.as_str()).increment(images);
    if images_per_second.is_finite() && images_per_second >= 0.0 {
        gauge!(catalog::WORKER_THROUGHPUT.name, "device_kind" => device.as_str())
            .set(images_per_second);
    }
}

/// Sets how many slots are busy and idle.
pub fn worker_slots(busy: u32, idle: u32) {
    gauge!(catalog::WORKER_SLOTS.name, "state" => SlotState::Busy.as_str()).set(f64::from(busy));
    gauge!(catalog::WORKER_SLOTS.name, "state" => SlotState::Idle.as_str()).set(f64::from(idle));
}

/// Sets the memory in use and the capacity of GPU `index`. Indexes above
/// [`MAX_GPU_INDEX`] are not exported (they would make the label unbounded).
pub fn worker_gpu_memory(index: u32, used_bytes: u64, total_bytes: u64) {
    if index > MAX_GPU_INDEX {
        return;
    }
    let gpu = index.to_string();
    gauge!(catalog::WORKER_GPU_MEMORY_USED.name, "gpu" => gpu.clone()).set(used_bytes as f64);
    gauge!(catalog::WORKER_GPU_MEMORY_TOTAL.name, "gpu" => gpu).set(total_bytes as f64);
}

/// An RPC from this worker to the coordinator failed.
pub fn worker_rpc_error(rpc: WorkerRpc) {
    counter!(catalog::WORKER_RPC_ERRORS.name, "rpc" => rpc.as_str()).increment(1);
}
