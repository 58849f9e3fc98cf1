//! [`LeaseStore`]: workers, heartbeats, leases and reservations, and the reports of leased
//! tasks (results and progress).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::types::*;

/// Workers, leases and reports. The conventions of every method are those of [`Store`](super::Store).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Registers a worker (state `active`, heartbeat = `now`) and returns it with its new id.
    /// The same as [`LeaseStore::register_worker_as`] with no principal.
    async fn register_worker(
        &self,
        name: &str,
        capabilities: Capabilities,
        now: DateTime<Utc>,
    ) -> Result<Worker> {
        self.register_worker_as(name, capabilities, None, now).await
    }

    /// Registers a worker bound to `principal`, the credential that registered it
    /// (`token:<id>` or `cert:<fingerprint>`; `None` without authentication).
    async fn register_worker_as(
        &self,
        name: &str,
        capabilities: Capabilities,
        principal: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Worker>;

    /// The principal a worker registered with (`None`: registered without authentication).
    /// `NotFound` for an unknown worker.
    async fn worker_principal(&self, id: WorkerId) -> Result<Option<String>>;

    /// Reads a worker.
    async fn get_worker(&self, id: WorkerId) -> Result<Worker>;

    /// Lists workers, most recently registered first.
    async fn list_workers(&self) -> Result<Vec<Worker>>;

    /// Marks `active` workers whose last heartbeat is older than `cutoff` as `lost`; returns them.
    async fn mark_lost_workers(&self, cutoff: DateTime<Utc>) -> Result<Vec<WorkerId>>;

    /// Records a heartbeat: sets the worker `active`, extends the leases of `held` that it still
    /// holds (same task and token) on tasks of non-cancelled jobs to `now + lease_duration`, and
    /// returns the tasks it must stop: those of `held` it no longer holds (token superseded, task
    /// final or re-leased) and those whose job was cancelled. An unassigned reservation listed
    /// with its token is extended and recorded as this worker's. A lease the worker does not list
    /// (its LeaseTask response was lost) is not extended, so it expires and the task is re-queued.
    async fn heartbeat(
        &self,
        worker: WorkerId,
        held: &[HeldLease],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<HeartbeatAck>;

    /// Claims one task for `worker` in a single statement: a `ready` task, or a `leased` task
    /// whose lease expired before `now` and that has attempts left (its expired attempt is
    /// recorded in `failures`). Only tasks of non-final jobs whose requirements `capabilities`
    /// satisfy. Order: higher job priority first, then the least recently served job (round
    /// robin), then task creation order. Increments `attempt`, issues a new fencing token,
    /// sets the expiry to `now + lease_duration`, updates the job's `last_served_at` and moves it
    /// from `queued` to `running`. `None` when nothing matches.
    async fn lease_task(
        &self,
        worker: WorkerId,
        capabilities: &Capabilities,
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Option<Lease>>;

    /// Collects leases that expired before `now`: the task returns to `ready` (failure
    /// "lease expired on worker W at T" recorded) or, when its attempts are exhausted, becomes
    /// `failed` with all recorded reasons; leased tasks of cancelled jobs become `cancelled`.
    /// Job counters, events and `all_tasks` completion are updated in the same transaction.
    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiryReport>;

    /// Applies a worker's report for the lease (`task`, `token`, `worker`). A token that is not
    /// the task's current one, a foreign worker, or a task not leased is `FailedPrecondition`
    /// and changes nothing; the same report again is [`ReportAck::Duplicate`] and changes
    /// nothing. In one transaction: the task state (a retryable failure with attempts left
    /// requeues it), the job counters, reward-estimate upserts, sample rewards, an event, and
    /// for [`Completion::AllTasks`] jobs the job's completion when its last task ends. A report
    /// on a task of a cancelled job is accepted and cancels the task.
    async fn report_result(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<ReportAck>;

    /// Claims tasks for several worker slots at once, in ONE transaction (one commit for the
    /// batch): element `i` of the answer is the lease of `requests[i]` (`None`: nothing it can
    /// run is claimable). Slots are served as [`LeaseStore::lease_task`] serves them (priority,
    /// round robin, creation order, requirements), slots with equal capabilities in request
    /// order; PostgreSQL claims all slots of equal capabilities in one statement, and the job
    /// marked served once per batch (round robin between batches). Concurrent batches never
    /// hand a task out twice and never come back short while claimable tasks they can run are
    /// unclaimed. At most `limits::MAX_BATCH` requests.
    ///
    /// A request without a worker is a *reservation*: the task is leased (attempt, new token,
    /// expiry) with no worker recorded; [`LeaseStore::assign_leases`] records the worker it is
    /// handed to, [`LeaseStore::release_leases`] returns it unused. Until assigned, a report or a
    /// heartbeat carrying its token is accepted from any worker and records that worker.
    async fn lease_tasks(
        &self,
        requests: &[LeaseRequest],
        now: DateTime<Utc>,
        lease_duration: Duration,
    ) -> Result<Vec<Option<Lease>>>;

    /// Records the workers that reserved leases were handed to, in one statement: each
    /// reservation still current (leased, same token, no worker yet) gets its worker and the
    /// expiry told to that worker. Returns how many were recorded; the others (already
    /// reported, or claimed by the worker's heartbeat or report first, or released) are left
    /// alone. Never waits for a row lock: a reservation being reported or heartbeaten right
    /// now is skipped (that report or heartbeat records the worker).
    async fn assign_leases(
        &self,
        assignments: &[LeaseAssignment],
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Returns unused reservations to the queue, in one statement: each one still current
    /// (leased, same token, no worker) becomes `ready` again with its attempt given back (its
    /// token stays spent, so a copy handed out meanwhile can never report). Returns how many.
    async fn release_leases(&self, leases: &[HeldLease], now: DateTime<Utc>) -> Result<u64>;

    /// Returns every reservation that no worker holds yet and that was claimed before
    /// `claimed_before` to the queue (what [`LeaseStore::release_leases`] does, for all of them).
    /// Reservations of a process that died were never handed out, or only just (their workers'
    /// reports are then refused as stale and the task runs again). A single coordinator calls
    /// it at start with `claimed_before = now`; coordinators sharing a database call it with a
    /// cutoff older than any reservation a live coordinator keeps, so they never take back
    /// each other's.
    async fn release_unassigned_leases(
        &self,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Applies several reports, in ONE transaction where the backend allows it (one commit for
    /// the batch). Element `i` of the answer is what [`LeaseStore::report_result`] would have
    /// answered for `items[i]`: a rejected item (stale token, duplicate, bad input) does not
    /// affect the others; the same report twice in one batch is applied once (the second is
    /// `Duplicate`). An accepted item's `job_state` is the job's state after the batch. The
    /// outer error means the batch failed (backend failure). At most `limits::MAX_BATCH` items.
    async fn report_results(
        &self,
        items: Vec<ReportItem>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<ReportAck>>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match self
                .report_result(item.task, item.token, item.worker, item.outcome, now)
                .await
            {
                Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// Stores the progress document of a long task and appends a `task_progress` event.
    /// The lease (`task`, `token`, `worker`) must be current, else `FailedPrecondition`.
    async fn report_progress(
        &self,
        task: TaskId,
        token: i64,
        worker: WorkerId,
        progress: Value,
        now: DateTime<Utc>,
    ) -> Result<()>;
}
