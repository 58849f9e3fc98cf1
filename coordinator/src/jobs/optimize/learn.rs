//! The learning phase: rounds of M (β, α) samples, their rewards, and the policy steps.

use std::sync::Arc;
use std::time::Instant;

use nat_arch::Genotype;
use nat_policy::driver::{PolicyDriver, StepOutcome};
use nat_schema::event::{PolicyUpdate, Rewards};
use nat_schema::result::{DriverProgress, PendingSample};
use nat_schema::{EventKind, OptimizeJobSpec, RewardKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::scoring::{Measure, Score};
use super::{Failure, Run, RANDOM_INPUT_NODES};

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
        if s.reward == RewardKind::Supernet && progress.iteration < s.iterations {
            self.supernet_warmup(spec, inputs, driver, progress).await?;
        }
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
                    // Recorded in the store with the round's weight version.
                    let pending = progress.pending.clone();
                    let iteration = progress.iteration;
                    self.supernet_rewards(spec, inputs, driver, iteration, &pending, progress)
                        .await?
                }
            };
            let mut rewards = Vec::new();
            for (p, reward) in progress.pending.iter().zip(measured) {
                let Some(reward) = reward else {
                    tracing::warn!(job = %self.job, sample = p.sample_id.get(), "sample without a reward: its task failed");
                    continue;
                };
                if s.reward == RewardKind::Proxy {
                    driver.record_reward(p.sample_id, reward).await?;
                }
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
}

/// Canonical hash of a stored genotype JSON.
pub(super) fn hash_of(json: &str) -> Result<String, Failure> {
    Genotype::from_json_str(json)
        .map(|g| g.canonical_hash())
        .map_err(|e| Failure::Fatal(format!("stored sample: {e}")))
}
