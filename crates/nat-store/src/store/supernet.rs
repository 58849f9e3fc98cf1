//! [`SupernetStore`]: the durable, versioned supernet of an optimize job, and the cancelling of
//! single tasks (a round's shard tasks that are no longer needed).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::types::*;

/// The versions of a job's shared supernet weights. The weights themselves are blobs of a
/// [`BlobStore`](crate::BlobStore); a version row names its blob. The conventions of every
/// method are those of [`Store`](super::Store).
#[async_trait]
pub trait SupernetStore: Send + Sync {
    /// In one transaction:
    /// 1. if `v.leader_epoch` is set, the term must still be the current one (read under
    ///    `FOR SHARE` on PostgreSQL, as [`PolicyStore::commit_policy_update`](super::PolicyStore::commit_policy_update)
    ///    does), else `FailedPrecondition`;
    /// 2. if the job already has a version of `v.round`, answers
    ///    [`SupernetCommit::AlreadyCommitted`] with it and changes nothing (a restarted
    ///    coordinator commits a round again);
    /// 3. `v.version` must be the job's latest version + 1 (1 when it has none), else
    ///    `Conflict` (also when a concurrent commit of the same version or round won);
    /// 4. stores the version;
    /// 5. sets the reward of every `(sample, reward)` of `rewards`, as
    ///    [`PolicyStore::set_sample_reward`](super::PolicyStore::set_sample_reward) does: only
    ///    where the sample has no reward yet (a sample keeps its first reward). A sample that does
    ///    not exist, or belongs to another job, is `NotFound` and nothing changes.
    ///
    /// Returns [`SupernetCommit::Committed`] with the stored row. An unknown job is `NotFound`.
    /// Bad input is `InvalidArgument` naming the field: `version` (>= 1), `round` (>= -1),
    /// `blob_key` (a blob key), `bytes` (>= 0), `sha256` (64 lowercase hex digits),
    /// `workers[i]`, `rewards[i].reward` (finite), `rewards` (a sample twice).
    async fn commit_supernet_version(
        &self,
        v: NewSupernetVersion,
        rewards: &[(SampleId, f64)],
        now: DateTime<Utc>,
    ) -> Result<SupernetCommit>;

    /// The job's latest version, `None` when it has none (nor when the job does not exist).
    async fn latest_supernet_version(&self, job: JobId) -> Result<Option<SupernetVersion>>;

    /// A given version of the job's supernet, `NotFound` if absent.
    async fn supernet_version(&self, job: JobId, version: i64) -> Result<SupernetVersion>;

    /// The version that round `round` of the job produced, if committed.
    async fn supernet_round(&self, job: JobId, round: i64) -> Result<Option<SupernetVersion>>;

    /// How many versions the job's supernet has.
    async fn count_supernet_versions(&self, job: JobId) -> Result<u64>;

    /// Cancels tasks of job `job`: those among `tasks` that are `ready` or `leased` (a lease
    /// or an unassigned reservation) become `cancelled`, their lease cleared, and the job's
    /// `tasks_cancelled` counter grows by their number (an `all_tasks` job whose last open task
    /// this was finishes, with its `job_finished` event). Returns how many changed. Tasks already
    /// `done`, `failed` or `cancelled` are left alone; repeats count once. A later report,
    /// progress or heartbeat of a cancelled task with its old token is refused as stale
    /// (`FailedPrecondition`), and a heartbeat naming it tells its worker to stop. A task that does
    /// not exist or belongs to another job is `NotFound` and nothing changes; an unknown job is
    /// `NotFound`.
    async fn cancel_tasks(&self, job: JobId, tasks: &[TaskId], now: DateTime<Utc>) -> Result<u64>;
}
