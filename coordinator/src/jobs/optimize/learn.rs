//! The learning phase: rounds of M (β, α) samples, their rewards, and the policy steps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use nat_arch::Genotype;
use nat_policy::driver::{PolicyDriver, StepOutcome};
use nat_schema::event::{PolicyUpdate, Rewards};
use nat_schema::result::{DriverProgress, PendingSample};
use nat_schema::{EventKind, OptimizeJobSpec, RewardKind, SupernetPair, SupernetPayload, TaskKind};
use nat_store::{NewTask, SampleId};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::scoring::{Measure, Score, Tracked};
use super::{submit, Failure, Run, RANDOM_INPUT_NODES};
use crate::jobs::submission::requirements_of;

impl Run {
    /// Runs the learning rounds left (from `progress.iteration` to the job's `iterations`).
    pub(super) async fn learn(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &Arc<PolicyDriver>,
        progress: &mut DriverProgress,
    ) -> Result<(), Failure> {
        let s = &spec.optimize;
        let m = s.samples_per_iteration as usize;
        while progress.iteration < s.iterations {
            if progress.pending.is_empty() {
                let round_seed = spec
                    .base
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(u64::from(progress.iteration));
                let (betas, per_input) = if s.random_inputs || inputs.is_empty() {
                    let mut rng = ChaCha8Rng::seed_from_u64(round_seed ^ 0xB5);
                    let betas: Vec<Genotype> = (0..m)
                        .map(|_| {
                            nat_arch::sampler::sample_genotype(
                                s.op_set,
                                RANDOM_INPUT_NODES,
                                &mut rng,
                            )
                        })
                        .collect();
                    (betas, 1)
                } else {
                    (inputs.to_vec(), m.div_ceil(inputs.len()).max(1))
                };
                let samples = driver
                    .sample(self.job, betas, per_input, round_seed, self.c.clock.now())
                    .await?;
                progress.pending = samples
                    .into_iter()
                    .take(m)
                    .map(|(id, sample)| PendingSample {
                        sample_id: id,
                        beta: sample.input.to_json(),
                        alpha: sample.alpha.to_json(),
                    })
                    .collect();
                self.save(spec, progress, driver).await?;
            }
            let measured = match s.reward {
                RewardKind::Proxy => self.proxy_rewards(spec, &progress.pending).await?,
                RewardKind::Supernet => {
                    self.supernet_rewards(spec, inputs, progress.iteration, &progress.pending)
                        .await?
                }
            };
            let mut rewards = Vec::new();
            for (p, reward) in progress.pending.iter().zip(measured) {
                let Some(reward) = reward else {
                    tracing::warn!(job = %self.job, sample = p.sample_id.get(), "sample without a reward: its task failed");
                    continue;
                };
                driver.record_reward(p.sample_id, reward).await?;
                nat_telemetry::record::policy_reward(reward);
                rewards.push(reward);
                if progress.best_reward.is_none_or(|r| reward > r) {
                    progress.best_reward = Some(reward);
                }
            }
            self.event(
                EventKind::Rewards,
                &Rewards {
                    iteration: progress.iteration,
                    rewards: rewards.clone(),
                },
            )
            .await?;
            self.step_policy(spec, driver, progress, &rewards).await?;
            progress.rewards += rewards.len() as u64;
            progress.iteration += 1;
            progress.pending.clear();
            self.save(spec, progress, driver).await?;
        }
        Ok(())
    }

    /// Takes policy steps until the recorded rewards are consumed.
    async fn step_policy(
        &self,
        spec: &OptimizeJobSpec,
        driver: &PolicyDriver,
        progress: &mut DriverProgress,
        rewards: &[f64],
    ) -> Result<(), Failure> {
        let s = &spec.optimize;
        loop {
            let t0 = Instant::now();
            match driver
                .step(s.samples_per_iteration, self.c.clock.now())
                .await?
            {
                StepOutcome::Idle => return Ok(()),
                StepOutcome::DroppedOnly { version, dropped } => {
                    tracing::info!(job = %self.job, version, dropped, "stale samples dropped");
                }
                StepOutcome::Committed { version, stats } => {
                    progress.policy_version = version;
                    nat_telemetry::record::policy_updated(
                        version,
                        stats.baseline,
                        stats.used as u64,
                        stats.dropped_stale.len() as u64,
                        t0.elapsed(),
                    );
                    let finite = |v: f64| v.is_finite().then_some(v);
                    self.event(
                        EventKind::PolicyUpdate,
                        &PolicyUpdate {
                            policy_version: version,
                            iteration: Some(progress.iteration),
                            iterations: Some(s.iterations),
                            loss: finite(stats.loss),
                            baseline: finite(stats.baseline),
                            mean_reward: finite(stats.mean_reward),
                            rewards: rewards.to_vec(),
                            samples_used: stats.used as u64,
                            samples_stale: stats.dropped_stale.len() as u64,
                            entropy: finite(stats.mean_entropy),
                        },
                    )
                    .await?;
                }
            }
        }
    }

    /// Proxy reward of each pending sample: acc(α) − acc(β) after a short training from
    /// scratch (`None` where a training task failed for good).
    async fn proxy_rewards(
        &mut self,
        spec: &OptimizeJobSpec,
        pending: &[PendingSample],
    ) -> Result<Vec<Option<f64>>, Failure> {
        let seed = spec.base.seed;
        let mut wanted: Vec<(Genotype, u64)> = Vec::new();
        for p in pending {
            for json in [&p.beta, &p.alpha] {
                let g = Genotype::from_json_str(json)
                    .map_err(|e| Failure::Fatal(format!("stored sample: {e}")))?;
                wanted.push((g, seed));
            }
        }
        let scores = self
            .scores(spec, &wanted, Measure::selection(&spec.base.budget))
            .await?;
        let score = |json: &str| -> Result<Option<f64>, Failure> {
            Ok(match scores.get(&(hash_of(json)?, seed)) {
                Some(Score::Known(a, _)) => Some(*a),
                _ => None,
            })
        };
        pending
            .iter()
            .map(|p| Ok(score(&p.alpha)?.zip(score(&p.beta)?).map(|(a, b)| a - b)))
            .collect()
    }

    /// Supernet reward of each pending sample: the round's `supernet` task (created once per
    /// round; found again after a restart by its `iteration`) reports acc(β) and acc(α) per
    /// pair (`None` where it did not score the sample). A round whose task failed for good
    /// fails the job with the task's last reason: every later round would meet the same
    /// supernet.
    async fn supernet_rewards(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        iteration: u32,
        pending: &[PendingSample],
    ) -> Result<Vec<Option<f64>>, Failure> {
        if self.tracker.supernet(iteration).is_none() {
            self.create_supernet_task(spec, inputs, iteration, pending)
                .await?;
        }
        loop {
            let state = self
                .tracker
                .supernet(iteration)
                .map(|(task, state)| (*task, state.clone()));
            match state {
                Some((_, Tracked::Done(result))) => {
                    let payload = self.round_payload(spec, inputs, iteration, pending)?;
                    let by_sample: HashMap<SampleId, f64> = result.rewards(&payload).collect();
                    return Ok(pending
                        .iter()
                        .map(|p| by_sample.get(&p.sample_id).copied())
                        .collect());
                }
                Some((task, Tracked::Failed(reason))) => {
                    return Err(Failure::Fatal(format!(
                        "learning round {iteration}: the supernet task {task} failed: {reason}"
                    )));
                }
                Some((_, Tracked::Waiting)) | None => {
                    self.wait().await?;
                    self.tracker.refresh(&*self.c.store, self.job).await?;
                }
            }
        }
    }

    /// The `supernet` task payload of one learning round: the round's (β, α) pairs in sample
    /// order, with the sample ids, the job's supernet key, dataset, seed and settings.
    fn round_payload(
        &self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        iteration: u32,
        pending: &[PendingSample],
    ) -> Result<SupernetPayload, Failure> {
        let s = &spec.optimize;
        let settings = s.supernet.ok_or_else(|| {
            Failure::Fatal("a supernet-reward job without supernet settings".into())
        })?;
        let num_nodes = if s.random_inputs || inputs.is_empty() {
            RANDOM_INPUT_NODES
        } else {
            inputs[0].num_nodes()
        };
        Ok(SupernetPayload {
            iteration,
            sample_ids: pending.iter().map(|p| p.sample_id).collect(),
            pairs: pending
                .iter()
                .map(|p| SupernetPair {
                    beta_json: p.beta.clone(),
                    alpha_json: p.alpha.clone(),
                })
                .collect(),
            dataset: spec.base.dataset.clone(),
            dataset_shape: Some(spec.base.dataset_shape),
            settings: settings.task_settings(
                submit::op_set_name(s.op_set),
                u32::try_from(num_nodes).unwrap_or(u32::MAX),
            ),
            seed: spec.base.seed,
            supernet_key: supernet_key(self.job),
        })
    }

    /// Queues the `supernet` task of one learning round.
    async fn create_supernet_task(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        iteration: u32,
        pending: &[PendingSample],
    ) -> Result<(), Failure> {
        let payload = self.round_payload(spec, inputs, iteration, pending)?;
        let task = NewTask {
            kind: TaskKind::Supernet.as_str().into(),
            payload: nat_schema::encode("supernet payload", &payload)?,
            requirements: requirements_of(&spec.base),
            max_attempts: self.c.config.max_attempts,
        };
        self.add_tasks(vec![task], nat_telemetry::TaskKind::Supernet)
            .await
    }
}

/// The `supernet_key` of a job's supernet tasks: one set of shared weights per job.
pub fn supernet_key(job: nat_store::JobId) -> String {
    format!("job-{job}")
}

/// Canonical hash of a stored genotype JSON.
pub(super) fn hash_of(json: &str) -> Result<String, Failure> {
    Genotype::from_json_str(json)
        .map(|g| g.canonical_hash())
        .map_err(|e| Failure::Fatal(format!("stored sample: {e}")))
}
