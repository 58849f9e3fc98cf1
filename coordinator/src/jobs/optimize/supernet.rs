//! The job's durable supernet (spec §4.3, §4.6) at fleet scale: versioned shared weights owned
//! by the coordinator, trained by rounds sharded across the workers (local SGD with federated
//! averaging).
//!
//! - **Versions.** Version 1 is made by a warm-up task (one shard from fresh weights,
//!   `warmup_steps` steps, no pairs). Round r starts from the latest version v: one shard task
//!   per free matching worker slot (or `supernet.shards`), each fetching v over gRPC, training
//!   `steps_per_shard` steps on random β with its own seed, scoring its share of the round's
//!   (β, α) pairs on one minibatch each, and uploading its weights. The driver averages the
//!   shards that reported (in Rust, `nat_weights`) into v + 1 and commits the version **and
//!   the round's rewards in one store transaction**, fenced by the leader's term.
//! - **Failures.** A worker that dies costs its shard's steps: the lease expires and the shard
//!   is leased again from v. A shard that fails for good loses only its pairs' rewards. Past
//!   `round_deadline_seconds` the round averages what reported and cancels the rest. A
//!   coordinator that restarts finds the round's shard tasks (by round and shard) and, if the
//!   round was committed before it died, the committed version and rewards, so nothing is
//!   counted twice and the version sequence has no gap.
//! - **Storage.** Weights (safetensors) go through [`nat_store::BlobStore`]: the job's
//!   database by default, or a directory / object store (`--blob-url`). Shard uploads are
//!   deleted once their round is committed; the two latest versions are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use nat_arch::Genotype;
use nat_policy::driver::PolicyDriver;
use nat_schema::result::{DriverProgress, PendingSample, SupernetState};
use nat_schema::{
    supernet_version_key, OptimizeJobSpec, SupernetPair, SupernetPayload, SupernetResult, TaskKind,
    MAX_SUPERNET_SHARDS,
};
use nat_store::{
    JobId, NewSupernetVersion, NewTask, SampleId, StoreError, SupernetCommit, SupernetVersion,
    TaskId, WorkerState,
};

use super::scoring::{Tracked, SCREENING_ROUND, WARMUP_ROUND};
use super::{submit, Failure, Run, RANDOM_INPUT_NODES};
use crate::jobs::submission::requirements_of;

/// The indexes of a round's pairs that shard `shard` of `shards` scores: round-robin, so
/// shards get equal shares (±1) and the assignment is a pure function of the round.
pub(super) fn shard_pairs(pairs: usize, shards: u32, shard: u32) -> Vec<usize> {
    let (shards, shard) = (shards.max(1) as usize, shard as usize);
    (shard..pairs).step_by(shards).collect()
}

/// The indexes shard `shard` of `shards` was given, checked against the `scored` results it
/// reported; a mismatch fails the job naming the stage and the shard.
fn shard_share(
    stage: Stage,
    items: usize,
    shards: u32,
    shard: u32,
    scored: usize,
    what: &str,
) -> Result<Vec<usize>, Failure> {
    let indexes = shard_pairs(items, shards, shard);
    if scored != indexes.len() {
        return Err(Failure::Fatal(format!(
            "{stage}: shard {shard} scored {scored} {what}, it was given {}",
            indexes.len()
        )));
    }
    Ok(indexes)
}

/// A stage of the supernet: the warm-up or a learning round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Warmup,
    Round(u32),
    /// The derive phase's screening of candidates (makes no version).
    Screening,
}

impl Stage {
    fn round(self) -> i64 {
        match self {
            Stage::Warmup => WARMUP_ROUND,
            Stage::Round(r) => i64::from(r),
            Stage::Screening => SCREENING_ROUND,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Warmup => write!(f, "the supernet warm-up"),
            Stage::Round(r) => write!(f, "learning round {r}"),
            Stage::Screening => write!(f, "the derive screening"),
        }
    }
}

/// A seed per (job seed, round, shard): each shard samples its own β and data order.
fn shard_seed(seed: u64, round: i64, shard: u32) -> u64 {
    let mut z = seed
        ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(shard).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn now_ms(c: &crate::state::Coordinator) -> i64 {
    c.clock.now().timestamp_millis()
}

impl Run {
    /// Makes sure the job's supernet has a first version: runs the warm-up if none is
    /// committed yet.
    pub(super) async fn supernet_warmup(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &PolicyDriver,
        progress: &mut DriverProgress,
    ) -> Result<(), Failure> {
        if let Some(latest) = self.c.store.latest_supernet_version(self.job).await? {
            absorb(progress, &latest);
            return Ok(());
        }
        self.stage(spec, inputs, driver, Stage::Warmup, &[], progress)
            .await
            .map(|_| ())
    }

    /// The supernet reward of each pending sample of learning round `iteration` (`None` where
    /// its shard failed for good or missed the deadline). The rewards are recorded in the
    /// store together with the round's weight version.
    pub(super) async fn supernet_rewards(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &PolicyDriver,
        iteration: u32,
        pending: &[PendingSample],
        progress: &mut DriverProgress,
    ) -> Result<Vec<Option<f64>>, Failure> {
        self.stage(
            spec,
            inputs,
            driver,
            Stage::Round(iteration),
            pending,
            progress,
        )
        .await
    }

    /// Runs one stage to its committed version; returns the rewards of `pending` in order.
    async fn stage(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &PolicyDriver,
        stage: Stage,
        pending: &[PendingSample],
        progress: &mut DriverProgress,
    ) -> Result<Vec<Option<f64>>, Failure> {
        // Committed before a restart: the rewards are in the store with it.
        if let Some(row) = self.c.store.supernet_round(self.job, stage.round()).await? {
            absorb(progress, &row);
            self.tracker.forget_round(stage.round());
            self.save(spec, progress, driver).await?;
            return self.stored_rewards(pending).await;
        }
        let base = match (stage, self.c.store.latest_supernet_version(self.job).await?) {
            (Stage::Warmup, _) => 0,
            (Stage::Round(_) | Stage::Screening, Some(v)) => u64::try_from(v.version).unwrap_or(0),
            (Stage::Round(_) | Stage::Screening, None) => {
                return Err(Failure::Fatal(format!(
                    "{stage}: the job's supernet has no version (the warm-up did not commit)"
                )))
            }
        };
        if self.tracker.shards(stage.round()).is_empty() {
            let shards = match stage {
                Stage::Warmup => 1,
                Stage::Round(_) | Stage::Screening => self.shard_count(spec, pending.len()).await?,
            };
            self.queue_shards(spec, inputs, stage, base, shards, pending)
                .await?;
            progress
                .supernet
                .get_or_insert_with(SupernetState::default)
                .round_queued_ms = Some(now_ms(&self.c));
            self.save(spec, progress, driver).await?;
        }
        let done = self.wait_for_shards(spec, stage, progress).await?;
        let (row, rewards) = self.average_and_commit(stage, base, pending, &done).await?;
        absorb(progress, &row);
        if let Some(s) = progress.supernet.as_mut() {
            s.round_queued_ms = None;
        }
        // The round is committed: its shard tasks leave the tracker (the job's memory stays
        // one round's, however many rounds it runs).
        self.tracker.forget_round(stage.round());
        let (train_eval, shards) = self.tracker.held();
        tracing::debug!(job = %self.job, %stage, train_eval, shards, "tracker after the round");
        self.collect_garbage(stage, &row).await;
        self.save(spec, progress, driver).await?;
        Ok(rewards)
    }

    /// Derive on the supernet (spec §5.1): the validation accuracy of every candidate on the
    /// job's latest weight version, sharded across the fleet like a round (each shard scores its
    /// share on the same validation examples; nothing is trained). `None` where its shard failed
    /// for good. Found again after a restart: the candidates come in the same order.
    pub(super) async fn screen(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &PolicyDriver,
        candidates: &[Genotype],
        progress: &mut DriverProgress,
    ) -> Result<Vec<Option<f64>>, Failure> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let stage = Stage::Screening;
        if self.tracker.shards(stage.round()).is_empty() {
            let base = match self.c.store.latest_supernet_version(self.job).await? {
                Some(v) => u64::try_from(v.version).unwrap_or(0),
                None => {
                    return Err(Failure::Fatal(format!(
                        "{stage}: the job's supernet has no version"
                    )))
                }
            };
            let shards = self.shard_count(spec, candidates.len()).await?;
            let budget = supernet_settings(spec)?;
            let settings = shard_settings(spec, inputs)?;
            let mut tasks = Vec::with_capacity(shards as usize);
            for shard in 0..shards {
                let payload = SupernetPayload {
                    iteration: progress.iteration,
                    shard,
                    shards,
                    base_version: base,
                    train_steps: 0,
                    warmup: false,
                    shard_seed: shard_seed(spec.base.seed, stage.round(), shard),
                    candidates: shard_pairs(candidates.len(), shards, shard)
                        .into_iter()
                        .map(|i| candidates[i].to_json())
                        .collect(),
                    eval_examples: budget.derive_examples,
                    sample_ids: Vec::new(),
                    pairs: Vec::new(),
                    dataset: spec.base.dataset.clone(),
                    dataset_shape: Some(spec.base.dataset_shape),
                    settings: settings.clone(),
                    seed: spec.base.seed,
                    supernet_key: supernet_key(self.job),
                };
                tasks.push(self.shard_task(spec, &payload)?);
            }
            tracing::info!(job = %self.job, base, shards, candidates = candidates.len(), "derive screening queued on the supernet");
            self.add_tasks(tasks, nat_telemetry::TaskKind::Supernet)
                .await?;
            progress
                .supernet
                .get_or_insert_with(SupernetState::default)
                .round_queued_ms = Some(now_ms(&self.c));
            self.save(spec, progress, driver).await?;
        }
        let done = self.wait_for_shards(spec, stage, progress).await?;
        let shards = u32::try_from(self.tracker.shards(stage.round()).len()).unwrap_or(u32::MAX);
        let mut out = vec![None; candidates.len()];
        for (shard, result) in &done {
            let indexes = shard_share(
                stage,
                candidates.len(),
                shards,
                *shard,
                result.accuracies.len(),
                "candidates",
            )?;
            for (i, a) in indexes.into_iter().zip(&result.accuracies) {
                out[i] = Some(*a);
            }
        }
        if let Some(s) = progress.supernet.as_mut() {
            s.round_queued_ms = None;
        }
        self.save(spec, progress, driver).await?;
        Ok(out)
    }

    /// Shards of a round: as set, or one per live worker slot that can run the job's tasks;
    /// at most one per pair and [`MAX_SUPERNET_SHARDS`].
    async fn shard_count(&self, spec: &OptimizeJobSpec, pairs: usize) -> Result<u32, Failure> {
        let settings = supernet_settings(spec)?;
        let cap = u32::try_from(pairs)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_SUPERNET_SHARDS);
        if settings.shards > 0 {
            return Ok(settings.shards.min(cap));
        }
        let requirements = requirements_of(&spec.base);
        let dataset = &spec.base.dataset;
        let slots: u32 = self
            .c
            .store
            .list_workers()
            .await?
            .iter()
            .filter(|w| w.state == WorkerState::Active)
            .filter(|w| w.capabilities.satisfies(&requirements))
            .filter(|w| {
                w.capabilities.datasets.is_empty() || w.capabilities.datasets.contains(dataset)
            })
            .map(|w| w.capabilities.slots.max(1))
            .sum();
        Ok(slots.clamp(1, cap))
    }

    /// Queues the shard tasks of a stage.
    async fn queue_shards(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        stage: Stage,
        base: u64,
        shards: u32,
        pending: &[PendingSample],
    ) -> Result<(), Failure> {
        let budget = supernet_settings(spec)?;
        let settings = shard_settings(spec, inputs)?;
        let (iteration, warmup, train_steps) = match stage {
            Stage::Warmup => (0, true, budget.warmup_steps),
            Stage::Round(r) => (r, false, budget.steps_per_shard),
            Stage::Screening => {
                return Err(Failure::Fatal(
                    "the derive screening is queued by `screen`".into(),
                ))
            }
        };
        let mut tasks = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            let mine: Vec<&PendingSample> = shard_pairs(pending.len(), shards, shard)
                .into_iter()
                .map(|i| &pending[i])
                .collect();
            let payload = SupernetPayload {
                iteration,
                shard,
                shards,
                base_version: base,
                train_steps,
                warmup,
                shard_seed: shard_seed(spec.base.seed, stage.round(), shard),
                candidates: Vec::new(),
                eval_examples: 0,
                sample_ids: mine.iter().map(|p| p.sample_id).collect(),
                pairs: mine
                    .iter()
                    .map(|p| SupernetPair {
                        beta_json: p.beta.clone(),
                        alpha_json: p.alpha.clone(),
                    })
                    .collect(),
                dataset: spec.base.dataset.clone(),
                dataset_shape: Some(spec.base.dataset_shape),
                settings: settings.clone(),
                seed: spec.base.seed,
                supernet_key: supernet_key(self.job),
            };
            tasks.push(self.shard_task(spec, &payload)?);
        }
        tracing::info!(job = %self.job, %stage, base, shards, "supernet shards queued");
        self.add_tasks(tasks, nat_telemetry::TaskKind::Supernet)
            .await
    }

    /// The queued `supernet` task of one shard's payload.
    fn shard_task(
        &self,
        spec: &OptimizeJobSpec,
        payload: &SupernetPayload,
    ) -> Result<NewTask, Failure> {
        Ok(NewTask {
            kind: TaskKind::Supernet.as_str().into(),
            payload: nat_schema::encode("supernet payload", payload)?,
            requirements: requirements_of(&spec.base),
            max_attempts: self.c.config.max_attempts,
        })
    }

    /// Waits until every shard of the stage ended, or the deadline passed with at least one
    /// reported (the others are cancelled then). Returns the reported shards by index.
    async fn wait_for_shards(
        &mut self,
        spec: &OptimizeJobSpec,
        stage: Stage,
        progress: &DriverProgress,
    ) -> Result<BTreeMap<u32, SupernetResult>, Failure> {
        let deadline_s = supernet_settings(spec)?.round_deadline_seconds;
        let queued = progress.supernet.as_ref().and_then(|s| s.round_queued_ms);
        loop {
            let shards = self.tracker.shards(stage.round());
            let waiting: Vec<TaskId> = shards
                .iter()
                .filter(|(_, _, t)| matches!(t, Tracked::Waiting))
                .map(|(_, id, _)| *id)
                .collect();
            let reported = shards
                .iter()
                .filter(|(_, _, t)| matches!(t, Tracked::Done(_)))
                .count();
            let late = match (queued, deadline_s > 0.0) {
                (Some(at), true) => (now_ms(&self.c) - at) as f64 / 1000.0 >= deadline_s,
                _ => false,
            };
            if !waiting.is_empty() && late && reported > 0 {
                let n = self
                    .c
                    .store
                    .cancel_tasks(self.job, &waiting, self.c.clock.now())
                    .await?;
                tracing::warn!(job = %self.job, %stage, cancelled = n, reported, "round deadline passed: averaging the shards that reported");
                self.tracker.refresh(&*self.c.store, self.job).await?;
                for id in waiting {
                    self.tracker.cancelled(id);
                }
                continue;
            }
            if waiting.is_empty() {
                let mut done = BTreeMap::new();
                let mut reasons = Vec::new();
                for (shard, id, state) in shards {
                    match state {
                        Tracked::Done(r) => {
                            done.insert(shard, r);
                        }
                        Tracked::Failed(reason) => {
                            tracing::warn!(job = %self.job, %stage, shard, task = %id, %reason, "supernet shard failed: its pairs have no reward");
                            reasons.push(format!("shard {shard} (task {id}): {reason}"));
                        }
                        Tracked::Waiting => {}
                    }
                }
                if done.is_empty() {
                    return Err(Failure::Fatal(format!(
                        "{stage}: every supernet shard failed: {}",
                        reasons.join("; ")
                    )));
                }
                return Ok(done);
            }
            self.wait().await?;
            self.tracker.refresh(&*self.c.store, self.job).await?;
        }
    }

    /// Averages the reported shards into version `base + 1`, stores it and commits it with
    /// the rewards of the shards' pairs. Returns the committed version and the rewards of
    /// `pending` in order.
    async fn average_and_commit(
        &self,
        stage: Stage,
        base: u64,
        pending: &[PendingSample],
        done: &BTreeMap<u32, SupernetResult>,
    ) -> Result<(SupernetVersion, Vec<Option<f64>>), Failure> {
        let t0 = Instant::now();
        let shards = u32::try_from(self.tracker.shards(stage.round()).len()).unwrap_or(u32::MAX);
        let mut averager = nat_weights::Averager::new();
        let mut workers = BTreeSet::new();
        let mut rewards: Vec<(SampleId, f64)> = Vec::new();
        for (shard, result) in done {
            let weights = result.weights.as_ref().ok_or_else(|| {
                Failure::Fatal(format!(
                    "{stage}: shard {shard} reported no weights (a result from a coordinator before sharded rounds)"
                ))
            })?;
            let bytes = self.c.blobs.get(&weights.key).await?;
            averager =
                tokio::task::spawn_blocking(move || averager.add(&bytes, 1.0).map(|()| averager))
                    .await
                    .map_err(|e| Failure::Transient(format!("averaging thread: {e}")))?
                    .map_err(|e| {
                        Failure::Fatal(format!("{stage}: shard {shard}'s weights: {e}"))
                    })?;
            workers.insert(result.worker_id.clone());
            let indexes = shard_share(
                stage,
                pending.len(),
                shards,
                *shard,
                result.scores.len(),
                "pairs",
            )?;
            for (i, score) in indexes.iter().zip(&result.scores) {
                if let Some(r) = score.reward() {
                    rewards.push((pending[*i].sample_id, r));
                }
            }
        }
        let version = base + 1;
        let metadata: BTreeMap<String, String> = [
            ("job".to_string(), self.job.to_string()),
            ("version".to_string(), version.to_string()),
            ("round".to_string(), stage.round().to_string()),
            ("shards".to_string(), done.len().to_string()),
        ]
        .into_iter()
        .collect();
        let document = tokio::task::spawn_blocking(move || averager.finish(metadata))
            .await
            .map_err(|e| Failure::Transient(format!("averaging thread: {e}")))?
            .map_err(|e| Failure::Fatal(format!("{stage}: averaging: {e}")))?;
        let key = supernet_version_key(&self.job.to_string(), version);
        let meta = self.c.blobs.put(&key, document.into()).await?;
        let new = NewSupernetVersion {
            job_id: self.job,
            version: i64::try_from(version).unwrap_or(i64::MAX),
            round: stage.round(),
            blob_key: key,
            bytes: i64::try_from(meta.bytes).unwrap_or(i64::MAX),
            sha256: meta.sha256,
            shards: u32::try_from(done.len()).unwrap_or(u32::MAX),
            workers: workers.into_iter().collect(),
            leader_epoch: Some(self.epoch),
        };
        let committed = self
            .c
            .store
            .commit_supernet_version(new, &rewards, self.c.clock.now())
            .await;
        match committed {
            Ok(SupernetCommit::Committed(row)) => {
                nat_telemetry::record::supernet_version_committed(t0.elapsed());
                tracing::info!(job = %self.job, %stage, version = row.version, shards = row.shards, rewards = rewards.len(), seconds = t0.elapsed().as_secs_f64(), "supernet version committed");
                let by_sample: HashMap<SampleId, f64> = rewards.into_iter().collect();
                let ordered = pending
                    .iter()
                    .map(|p| by_sample.get(&p.sample_id).copied())
                    .collect();
                Ok((row, ordered))
            }
            Ok(SupernetCommit::AlreadyCommitted(row)) => {
                let stored = self.stored_rewards(pending).await?;
                Ok((row, stored))
            }
            Err(StoreError::Conflict(m)) => Err(Failure::Transient(format!(
                "{stage}: the supernet version moved under this driver: {m}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The rewards the store holds for `pending` (a round committed earlier).
    async fn stored_rewards(&self, pending: &[PendingSample]) -> Result<Vec<Option<f64>>, Failure> {
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(self.c.store.get_sample(p.sample_id).await?.reward);
        }
        Ok(out)
    }

    /// Deletes the stage's shard uploads and the versions older than the two latest. A
    /// failure only leaves garbage behind (logged).
    async fn collect_garbage(&self, stage: Stage, row: &SupernetVersion) {
        let job = self.job.to_string();
        let uploads = match stage {
            Stage::Warmup => format!("supernet/job-{job}/uploads/w-"),
            Stage::Round(r) => format!("supernet/job-{job}/uploads/r{r}-"),
            Stage::Screening => return,
        };
        if let Err(error) = self.c.blobs.delete_prefix(&uploads).await {
            tracing::warn!(job = %self.job, %error, "could not delete a round's shard uploads");
        }
        if row.version >= 3 {
            let old = supernet_version_key(&job, u64::try_from(row.version - 2).unwrap_or(0));
            if let Err(error) = self.c.blobs.delete(&old).await {
                tracing::warn!(job = %self.job, %error, "could not delete an old supernet version");
            }
        }
    }
}

/// Folds a committed version into the driver's supernet state (idempotent: a restart that
/// finds the version again computes the same state).
fn absorb(progress: &mut DriverProgress, row: &SupernetVersion) {
    let s = progress.supernet.get_or_insert_with(SupernetState::default);
    let version = u64::try_from(row.version).unwrap_or(0);
    if version >= s.version {
        s.version = version;
        // Version 1 is the warm-up; each round adds one.
        s.rounds = u32::try_from(row.version.saturating_sub(1)).unwrap_or(u32::MAX);
        if row.round >= 0 {
            s.shards_per_round = row.shards;
        }
    }
    s.workers_seen.extend(row.workers.iter().cloned());
}

/// The settings every shard of the job carries: its resolved supernet budget for the op set of
/// its space and the node count of its inputs.
fn shard_settings(
    spec: &OptimizeJobSpec,
    inputs: &[Genotype],
) -> Result<nat_schema::SupernetSettings, Failure> {
    let s = &spec.optimize;
    let num_nodes = if s.random_inputs || inputs.is_empty() {
        RANDOM_INPUT_NODES
    } else {
        inputs[0].num_nodes()
    };
    Ok(supernet_settings(spec)?.task_settings(
        submit::op_set_name(s.op_set),
        u32::try_from(num_nodes).unwrap_or(u32::MAX),
    ))
}

/// The job's resolved supernet settings.
fn supernet_settings(spec: &OptimizeJobSpec) -> Result<nat_schema::SupernetBudget, Failure> {
    spec.optimize
        .supernet
        .ok_or_else(|| Failure::Fatal("a supernet-reward job without supernet settings".into()))
}

/// The `supernet_key` of a job's supernet tasks: one set of shared weights per job.
pub fn supernet_key(job: JobId) -> String {
    format!("job-{job}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_pairs_round_robin_without_loss_or_overlap() {
        for pairs in 0..20usize {
            for shards in 1..8u32 {
                let mut seen: Vec<usize> = (0..shards)
                    .flat_map(|s| shard_pairs(pairs, shards, s))
                    .collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..pairs).collect::<Vec<_>>());
                let sizes: Vec<usize> = (0..shards)
                    .map(|s| shard_pairs(pairs, shards, s).len())
                    .collect();
                let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{sizes:?}");
            }
        }
    }

    #[test]
    fn shard_seeds_differ_by_round_and_shard() {
        let seeds: BTreeSet<u64> = (-1..5i64)
            .flat_map(|r| (0..8u32).map(move |s| shard_seed(7, r, s)))
            .collect();
        assert_eq!(seeds.len(), 6 * 8);
    }
}
