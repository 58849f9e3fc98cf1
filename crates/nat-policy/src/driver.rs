//! Coordinator-side learning loop over the durable store: each reward moves the policy exactly
//! once, across crashes and concurrent updaters.
//!
//! Protocol (every step is one store call, so a crash between any two leaves a consistent state):
//! 1. [`PolicyDriver::open`] loads the latest checkpoint of a policy (or stores version 1 of a
//!    new one).
//! 2. [`PolicyDriver::sample`] draws transformations and inserts them as `policy_samples` with the
//!    store version and log π they were drawn with.
//! 3. Workers' results arrive through [`PolicyDriver::record_reward`] (idempotent).
//! 4. [`PolicyDriver::step`] reads unconsumed rewards, updates the in-memory learner, and calls
//!    `commit_policy_update`, which stores the new checkpoint and marks the used and the
//!    too-stale samples consumed in ONE transaction. If the commit fails (crash, or `Conflict`
//!    because another updater won), the in-memory learner is reloaded from the latest stored
//!    checkpoint, so an update that was not committed never survives, and the rewards it read
//!    are still unconsumed for the next step.
//!
//! Versions: the store numbers checkpoints from 1, the learner counts optimizer steps from 0;
//! store version = learner version + 1.
//!
//! CPU work (sampling, updates) runs on `tokio::task::spawn_blocking`, never on the async
//! executor.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use nat_arch::Genotype;
use nat_store::{JobId, NewCheckpoint, NewPolicySample, PolicySample, SampleId, Store, StoreError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::config::PolicyConfig;
use crate::error::PolicyError;
use crate::input::{validate_input, validate_output};
use crate::learner::{PolicyLearner, Sample, UpdateStats};
use crate::space::ActionSpace;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store failed or refused.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The policy failed (bad input, corrupt checkpoint).
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// A stored genotype could not be decoded.
    #[error("sample {id}: stored {field} is not a genotype: {reason}")]
    BadSample {
        /// Sample id.
        id: SampleId,
        /// `input` or `output`.
        field: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("policy worker thread failed: {0}")]
    Join(String),
    /// The learner lock was poisoned by a panic in another thread.
    #[error("policy learner lock poisoned")]
    Poisoned,
}

/// Result of the driver.
pub type DriverResult<T> = Result<T, DriverError>;

/// The outcome of [`PolicyDriver::step`].
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// No unconsumed reward was waiting.
    Idle,
    /// A new version was committed.
    Committed {
        /// Store version of the new checkpoint.
        version: i64,
        /// What the update did.
        stats: UpdateStats,
    },
    /// Every waiting reward was too stale: they were consumed as dropped, in a new version
    /// whose parameters equal the previous one's.
    DroppedOnly {
        /// Store version of the new checkpoint.
        version: i64,
        /// Number of samples dropped.
        dropped: usize,
    },
}

/// An update computed but not yet committed (exposed so tests can crash between the two).
#[derive(Debug)]
pub struct PreparedUpdate {
    checkpoint: NewCheckpoint,
    consumed: Vec<SampleId>,
    dropped: Vec<SampleId>,
    stats: UpdateStats,
}

impl PreparedUpdate {
    /// Store version this update would create.
    pub fn version(&self) -> i64 {
        self.checkpoint.version
    }

    /// Samples it would mark as used.
    pub fn consumed(&self) -> &[SampleId] {
        &self.consumed
    }
}

/// Drives one policy through the store. Cheap to share behind an `Arc`.
pub struct PolicyDriver {
    store: Arc<dyn Store>,
    policy_id: String,
    space: ActionSpace,
    source_job: Option<JobId>,
    /// The coordinator leadership term every checkpoint is written in (see
    /// [`NewCheckpoint::leader_epoch`]): once the term is over, commits are refused.
    leader_epoch: Option<i64>,
    learner: Arc<Mutex<PolicyLearner>>,
    update_lock: tokio::sync::Mutex<()>,
}

/// The store's space name for an action space.
pub fn space_name(space: ActionSpace) -> &'static str {
    match space {
        ActionSpace::Nat(_) => "nat",
        ActionSpace::NatPlusPlus => "nat++",
    }
}

impl PolicyDriver {
    /// Loads the latest checkpoint of `policy_id`, or creates the policy (version 1) with
    /// `config` and `seed` if the store has none. Its writes carry no leadership term:
    /// [`PolicyDriver::open_in_term`] for a coordinator's leader.
    pub async fn open(
        store: Arc<dyn Store>,
        policy_id: &str,
        config: PolicyConfig,
        seed: u64,
        source_job: Option<JobId>,
        now: DateTime<Utc>,
    ) -> DriverResult<Self> {
        Self::open_in_term(store, policy_id, config, seed, source_job, None, now).await
    }

    /// [`PolicyDriver::open`] for the leader of the leadership term `leader_epoch`: every
    /// checkpoint it writes (version 1 included) is refused by the store once that term is
    /// over (`StoreError::FailedPrecondition`), so a deposed leader cannot move the policy.
    pub async fn open_in_term(
        store: Arc<dyn Store>,
        policy_id: &str,
        config: PolicyConfig,
        seed: u64,
        source_job: Option<JobId>,
        leader_epoch: Option<i64>,
        now: DateTime<Utc>,
    ) -> DriverResult<Self> {
        let learner = match store.latest_checkpoint(policy_id).await {
            Ok(cp) => load(&cp.params, &cp.optimizer_state).await?,
            Err(StoreError::NotFound { .. }) => {
                let learner = blocking(move || Ok(PolicyLearner::new(config, seed)?)).await?;
                let mut checkpoint = checkpoint_of(&learner, policy_id, source_job)?;
                checkpoint.leader_epoch = leader_epoch;
                store.save_checkpoint(checkpoint, now).await?;
                learner
            }
            Err(e) => return Err(e.into()),
        };
        let space = learner.config().space;
        Ok(PolicyDriver {
            store,
            policy_id: policy_id.to_string(),
            space,
            source_job,
            leader_epoch,
            learner: Arc::new(Mutex::new(learner)),
            update_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The action space of the policy.
    pub fn space(&self) -> ActionSpace {
        self.space
    }

    /// The policy id.
    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }

    /// Store version of the in-memory policy.
    pub fn version(&self) -> DriverResult<i64> {
        Ok(self.lock()?.version() as i64 + 1)
    }

    /// Runs `f` on the in-memory learner (inspection: probabilities, argmax, logits).
    pub fn with_learner<T>(&self, f: impl FnOnce(&PolicyLearner) -> T) -> DriverResult<T> {
        Ok(f(&*self.lock()?))
    }

    /// Draws `n` transformations of every input (seeded) and stores them for `job`.
    /// Returns the stored ids with the samples, in input-major order.
    pub async fn sample(
        &self,
        job: JobId,
        inputs: Vec<Genotype>,
        n: usize,
        seed: u64,
        now: DateTime<Utc>,
    ) -> DriverResult<Vec<(SampleId, Sample)>> {
        let learner = Arc::clone(&self.learner);
        let samples = blocking(move || {
            let guard = learner.lock().map_err(|_| DriverError::Poisoned)?;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            Ok(guard.sample(&inputs, n, &mut rng)?)
        })
        .await?;
        let rows = samples
            .iter()
            .map(|s| {
                Ok(NewPolicySample {
                    job_id: job,
                    policy_id: self.policy_id.clone(),
                    policy_version: s.version as i64 + 1,
                    log_prob: s.log_prob,
                    entropy: s.entropy(),
                    input: serde_json::to_value(&s.input).map_err(PolicyError::from)?,
                    output: serde_json::to_value(&s.alpha).map_err(PolicyError::from)?,
                    task_id: None,
                })
            })
            .collect::<DriverResult<Vec<_>>>()?;
        let ids = self.store.insert_samples(rows, now).await?;
        Ok(ids.into_iter().zip(samples).collect())
    }

    /// Records a sample's reward; false if it already had one (idempotent).
    pub async fn record_reward(&self, sample: SampleId, reward: f64) -> DriverResult<bool> {
        if !reward.is_finite() {
            return Err(
                PolicyError::invalid("reward", format!("must be finite, got {reward}")).into(),
            );
        }
        Ok(self.store.set_sample_reward(sample, reward).await?)
    }

    /// Reads up to `limit` unconsumed rewards and computes the update, without committing.
    /// Returns `None` when nothing is waiting. The in-memory learner already holds the update;
    /// call [`PolicyDriver::commit`] next (or drop it and [`PolicyDriver::reload`]).
    pub async fn prepare(&self, limit: u32) -> DriverResult<Option<PreparedUpdate>> {
        let rows = self
            .store
            .take_unconsumed_rewards(&self.policy_id, limit)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        // Rows that can never be learned from (undecodable, outside the space, from a future
        // version, non-finite reward) are consumed as dropped so they cannot block the queue.
        let current = self.lock()?.version();
        let mut batch = Vec::with_capacity(rows.len());
        let mut learnable = Vec::with_capacity(rows.len());
        let mut invalid = Vec::new();
        for row in &rows {
            match usable(self.space, row, current) {
                Ok(sample) => {
                    batch.push((sample, row.reward.unwrap_or(f64::NAN)));
                    learnable.push(row.id);
                }
                Err(reason) => {
                    tracing::warn!(policy_id = %self.policy_id, sample_id = row.id.get(), error = %reason, "dropping unusable policy sample");
                    invalid.push(row.id);
                }
            }
        }
        let learner = Arc::clone(&self.learner);
        let policy_id = self.policy_id.clone();
        let source_job = self.source_job;
        let (stats, checkpoint) = blocking(move || {
            let mut guard = learner.lock().map_err(|_| DriverError::Poisoned)?;
            let stats = guard.update(&batch)?;
            let checkpoint = checkpoint_of(&guard, &policy_id, source_job)?;
            Ok((stats, checkpoint))
        })
        .await?;
        let mut consumed = Vec::new();
        let mut dropped = invalid;
        for (i, id) in learnable.iter().enumerate() {
            if stats.dropped_stale.contains(&i) {
                dropped.push(*id);
            } else {
                consumed.push(*id);
            }
        }
        let mut checkpoint = checkpoint;
        checkpoint.leader_epoch = self.leader_epoch;
        if !stats.step_taken {
            // Nothing learned but the dropped samples must still be consumed exactly once:
            // a new version with unchanged parameters records that.
            checkpoint.version = self.version()? + 1;
            checkpoint.meta["dropped_only"] = json!(true);
        }
        Ok(Some(PreparedUpdate {
            checkpoint,
            consumed,
            dropped,
            stats,
        }))
    }

    /// Commits a prepared update. On any failure the in-memory learner is reloaded from the
    /// store, so it always equals a committed version.
    pub async fn commit(
        &self,
        prepared: PreparedUpdate,
        now: DateTime<Utc>,
    ) -> DriverResult<StepOutcome> {
        let version = prepared.checkpoint.version;
        let result = self
            .store
            .commit_policy_update(
                prepared.checkpoint,
                &prepared.consumed,
                &prepared.dropped,
                now,
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(policy_id = %self.policy_id, error = %e, "policy update not committed, reloading");
            self.reload().await?;
            return Err(e.into());
        }
        if prepared.stats.step_taken {
            Ok(StepOutcome::Committed {
                version,
                stats: prepared.stats,
            })
        } else {
            // Keep the learner's version in step with the store's.
            self.reload().await?;
            Ok(StepOutcome::DroppedOnly {
                version,
                dropped: prepared.dropped.len(),
            })
        }
    }

    /// One learning step: [`prepare`](Self::prepare) then [`commit`](Self::commit).
    /// Serialised per driver; concurrent drivers of one policy are arbitrated by the store.
    pub async fn step(&self, limit: u32, now: DateTime<Utc>) -> DriverResult<StepOutcome> {
        let _guard = self.update_lock.lock().await;
        match self.prepare(limit).await {
            Ok(Some(prepared)) => self.commit(prepared, now).await,
            Ok(None) => Ok(StepOutcome::Idle),
            Err(e) => {
                self.reload().await?;
                Err(e)
            }
        }
    }

    /// Replaces the in-memory learner with the latest stored checkpoint.
    pub async fn reload(&self) -> DriverResult<()> {
        let cp = self.store.latest_checkpoint(&self.policy_id).await?;
        let fresh = load(&cp.params, &cp.optimizer_state).await?;
        let version = cp.version;
        let mut guard = self.lock()?;
        *guard = fresh;
        // A dropped-only version keeps the parameters of the previous one; align the counter.
        guard.version = u64::try_from(version - 1).unwrap_or(0);
        Ok(())
    }

    fn lock(&self) -> DriverResult<std::sync::MutexGuard<'_, PolicyLearner>> {
        self.learner.lock().map_err(|_| DriverError::Poisoned)
    }
}

/// Rebuilds a [`Sample`] from its stored row (entropy is stored as the total; it is kept in
/// `entropy_normal`, the update recomputes both).
pub fn sample_of(row: &PolicySample) -> DriverResult<Sample> {
    let decode = |value: &serde_json::Value, field: &'static str| {
        serde_json::from_value::<Genotype>(value.clone()).map_err(|e| DriverError::BadSample {
            id: row.id,
            field,
            reason: e.to_string(),
        })
    };
    Ok(Sample {
        input: decode(&row.input, "input")?,
        alpha: decode(&row.output, "output")?,
        log_prob: row.log_prob,
        entropy_normal: row.entropy,
        entropy_reduce: 0.0,
        version: u64::try_from(row.policy_version - 1).unwrap_or(0),
    })
}

/// Decodes and checks a stored row; the error says why it cannot be learned from.
fn usable(space: ActionSpace, row: &PolicySample, current: u64) -> DriverResult<Sample> {
    let sample = sample_of(row)?;
    validate_input(space, &sample.input, "sample.input")?;
    validate_output(space, &sample.input, &sample.alpha, "sample.output")?;
    if sample.version > current {
        return Err(PolicyError::invalid(
            "sample.policy_version",
            format!(
                "drawn by version {} but the policy is at {}",
                row.policy_version,
                current + 1
            ),
        )
        .into());
    }
    match row.reward {
        Some(r) if r.is_finite() && row.log_prob.is_finite() => Ok(sample),
        _ => Err(PolicyError::invalid("sample.reward", "missing or not finite").into()),
    }
}

fn checkpoint_of(
    learner: &PolicyLearner,
    policy_id: &str,
    source_job: Option<JobId>,
) -> DriverResult<NewCheckpoint> {
    let (params, optimizer_state) = learner.to_parts()?;
    let config = learner.config();
    Ok(NewCheckpoint {
        policy_id: policy_id.to_string(),
        version: learner.version() as i64 + 1,
        space: space_name(config.space).to_string(),
        params,
        optimizer_state,
        baseline: learner.baseline(),
        source_job,
        meta: json!({
            "format": "nat-policy NATPOL01",
            "profile": config.profile,
            "op_set": config.space.op_set(),
            "rewards_applied": learner.rewards_applied(),
            "stale_dropped": learner.stale_dropped(),
        }),
        leader_epoch: None,
    })
}

async fn load(params: &[u8], optimizer: &[u8]) -> DriverResult<PolicyLearner> {
    let (params, optimizer) = (params.to_vec(), optimizer.to_vec());
    blocking(move || Ok(PolicyLearner::from_parts(&params, &optimizer)?)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> DriverResult<T> + Send + 'static,
) -> DriverResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DriverError::Join(e.to_string()))?
}
