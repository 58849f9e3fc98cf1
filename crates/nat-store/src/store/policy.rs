//! [`PolicyStore`]: reward estimates, policy checkpoints and samples, and policy updates.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::types::*;

/// Newest versions of a policy whose parameters and optimizer state are kept in full (version 1,
/// the policy's start, is kept too); see [`PolicyStore::checkpoint`].
pub const POLICY_CHECKPOINTS_KEPT: i64 = 16;

/// Reward estimates and policies. The conventions of every method are those of [`Store`](super::Store).
#[async_trait]
pub trait PolicyStore: Send + Sync {
    // ----- reward estimates -------------------------------------------------------------------

    /// Folds one observation into the estimate of its key (Welford update, upsert) and returns
    /// the updated estimate.
    async fn record_reward(
        &self,
        observation: RewardObservation,
        now: DateTime<Utc>,
    ) -> Result<RewardEstimate>;

    /// Reads the estimate of a key.
    async fn reward_estimate(&self, key: &RewardKey) -> Result<Option<RewardEstimate>>;

    // ----- policies ---------------------------------------------------------------------------

    /// Stores a checkpoint without consuming samples (a new policy's version 1, or a manual
    /// save). The version must be latest + 1, else `Conflict`.
    async fn save_checkpoint(&self, checkpoint: NewCheckpoint, now: DateTime<Utc>) -> Result<()>;

    /// The latest checkpoint of a policy, `NotFound` if none.
    async fn latest_checkpoint(&self, policy_id: &str) -> Result<PolicyCheckpoint>;

    /// A given version of a policy, `NotFound` if absent. Every version keeps its row (term,
    /// baseline, meta, time), but only version 1 and the newest [`POLICY_CHECKPOINTS_KEPT`]
    /// keep their `params` and `optimizer_state`: [`PolicyStore::commit_policy_update`] empties
    /// those of the version that falls out of that window, so a job of tens of thousands of
    /// updates stores a bounded number of full checkpoints (≈ 4 MB each at the official
    /// dimensions). An emptied version has both empty.
    async fn checkpoint(&self, policy_id: &str, version: i64) -> Result<PolicyCheckpoint>;

    /// Every policy, latest version each, by id.
    async fn list_policies(&self) -> Result<Vec<PolicySummary>>;

    /// Stores sampled transformations; returns their ids in order.
    async fn insert_samples(
        &self,
        samples: Vec<NewPolicySample>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SampleId>>;

    /// Sets the reward of a sample if it has none; returns false (and changes nothing) if it
    /// already had one. Idempotent.
    async fn set_sample_reward(&self, sample: SampleId, reward: f64) -> Result<bool>;

    /// Reads a sample.
    async fn get_sample(&self, sample: SampleId) -> Result<PolicySample>;

    /// Samples of `policy_id` that have a reward and were not consumed yet, oldest first, at
    /// most `limit`. Reads only: consumption happens in [`PolicyStore::commit_policy_update`].
    async fn take_unconsumed_rewards(
        &self,
        policy_id: &str,
        limit: u32,
    ) -> Result<Vec<PolicySample>>;

    /// In one transaction: stores `checkpoint` (its version must be latest + 1, else
    /// `Conflict`) and marks `consumed` (used by the update) and `dropped` (too stale, discarded)
    /// samples as consumed in that version. Every listed sample must belong to the policy, have
    /// a reward and be unconsumed, else `Conflict` and nothing changes. Hence each reward moves
    /// the policy exactly once, across crashes and concurrent updaters. In the same transaction
    /// the parameters and optimizer state of version `version − POLICY_CHECKPOINTS_KEPT` are
    /// emptied (unless it is version 1), see [`PolicyStore::checkpoint`].
    async fn commit_policy_update(
        &self,
        checkpoint: NewCheckpoint,
        consumed: &[SampleId],
        dropped: &[SampleId],
        now: DateTime<Utc>,
    ) -> Result<()>;
}
