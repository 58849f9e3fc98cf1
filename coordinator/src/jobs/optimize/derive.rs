//! The derive phase: K transformations of every input sampled from the learned policy (or its
//! argmax), each trained from scratch with the job's budget; the most accurate is kept.

use std::sync::Arc;

use nat_arch::Genotype;
use nat_policy::driver::PolicyDriver;
use nat_policy::PolicyLearner;
use nat_schema::event::NewBest;
use nat_schema::result::DriverProgress;
use nat_schema::{EventKind, OptimizeJobSpec};
use nat_store::RewardKey;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::scoring::Score;
use super::{Failure, Run};

impl Run {
    /// Derives candidates per input and returns the best of each.
    pub(super) async fn derive(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &Arc<PolicyDriver>,
        progress: &mut DriverProgress,
    ) -> Result<Vec<Genotype>, Failure> {
        let s = &spec.optimize;
        if progress.candidates.len() != inputs.len() {
            let d = Arc::clone(driver);
            let inputs_owned = inputs.to_vec();
            let (k, argmax, seed) = (s.derive_samples as usize, s.derive_argmax, spec.base.seed);
            let samples = tokio::task::spawn_blocking(move || {
                d.with_learner(|l: &PolicyLearner| {
                    if argmax {
                        l.argmax(&inputs_owned)
                    } else {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00DE_517E);
                        l.sample(&inputs_owned, k, &mut rng)
                    }
                })
            })
            .await
            .map_err(|e| Failure::Transient(format!("derive thread: {e}")))??
            .map_err(|e| Failure::Fatal(format!("derive: {e}")))?;
            let per_input = if argmax { 1 } else { k };
            progress.candidates = samples
                .chunks(per_input)
                .map(|c| c.iter().map(|s| s.alpha.to_json()).collect())
                .collect();
            self.save(spec, progress, driver).await?;
        }
        let mut wanted = Vec::new();
        let mut per_input = Vec::new();
        for list in &progress.candidates {
            let gs = list
                .iter()
                .map(|j| Genotype::from_json_str(j))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::Fatal(format!("stored candidate: {e}")))?;
            wanted.extend(gs.iter().cloned());
            per_input.push(gs);
        }
        let scores = self.scores(spec, &wanted, &spec.base.budget, false).await?;
        let mut best = Vec::new();
        for (i, gs) in per_input.into_iter().enumerate() {
            let mut top: Option<(Genotype, f64)> = None;
            for g in gs {
                if let Some(Score::Known(acc, _)) = scores.get(&g.canonical_hash()) {
                    if top.as_ref().is_none_or(|(_, a)| acc > a) {
                        top = Some((g, *acc));
                    }
                }
            }
            let Some((g, acc)) = top else {
                return Err(Failure::Fatal(format!(
                    "input {i}: every derived candidate failed to train"
                )));
            };
            let mut event = NewBest {
                input_index: u32::try_from(i).unwrap_or(u32::MAX),
                genotype: g.to_json_value(),
                accuracy: acc,
                reward: None,
                input_accuracy: None,
            };
            // The reward of the best: its accuracy over the input's on the same (learn) budget,
            // when the input's accuracy is known (always in proxy mode; in supernet mode only
            // if some job trained the input from scratch on that budget).
            if let Some(input) = inputs.get(i) {
                let key = RewardKey {
                    arch_hash: input.canonical_hash(),
                    dataset: spec.base.dataset.clone(),
                    budget: spec.base.budget.key(),
                };
                if let Some(estimate) = self.c.store.reward_estimate(&key).await? {
                    if estimate.count > 0 && estimate.mean.is_finite() {
                        event.reward = Some(acc - estimate.mean);
                        event.input_accuracy = Some(estimate.mean);
                    }
                }
            }
            self.event(EventKind::NewBest, &event).await?;
            best.push(g);
        }
        Ok(best)
    }
}
