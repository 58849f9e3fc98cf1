//! The final evaluation: for every input, the original and derive's best (and the random
//! control's pick) trained from scratch with the final budget on `final_seeds` seeds that no
//! learning or derive task used, measured on the test split, paired by seed; then the verdict
//! ([`nat_schema::verdict`]).
//!
//! Nothing measured for selection is reused: the final tasks have their own seeds and split,
//! so their keys never match a learning or derive task, and they neither read nor write the
//! reward-estimate cache.

use nat_arch::Genotype;
use nat_schema::result::{
    ArchMeasurement, ControlOutcome, FinalEvaluation, OptimizeOutcome, Recommendation,
};
use nat_schema::verdict::{decide, PairedDifference, SeedAccuracies};
use nat_schema::{EvalSplit, OptimizeJobSpec, RecommendedFrom};

use super::derive::{network_spec, DeriveChoice};
use super::scoring::{Measure, Score};
use super::{Failure, Outcomes, Run};
use crate::convert::changed_edges;

/// The seeds of a job's final evaluation: `n` distinct seeds derived from the job's seed
/// (`seed × 1000 + 1`, `+ 2`, …: readable, deterministic so a restarted driver finds its tasks
/// again), none equal to it (learning and derive train with the job's seed).
pub(super) fn final_seeds(job_seed: u64, n: u32) -> Vec<u64> {
    let base = job_seed.wrapping_mul(1000);
    let mut seeds = Vec::with_capacity(n as usize);
    let mut j = 1u64;
    while seeds.len() < n as usize {
        let s = base.wrapping_add(j);
        if s != job_seed && !seeds.contains(&s) {
            seeds.push(s);
        }
        j += 1;
    }
    seeds
}

impl Run {
    /// Trains originals, bests (and control picks) on the final seeds and decides.
    pub(super) async fn final_check(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        chosen: &[DeriveChoice],
    ) -> Result<Outcomes, Failure> {
        let budget = spec.optimize.final_budget;
        let seeds = final_seeds(spec.base.seed, spec.optimize.final_seeds);
        let mut wanted = Vec::new();
        for (input, c) in inputs.iter().zip(chosen) {
            for g in std::iter::once(input)
                .chain(std::iter::once(&c.best))
                .chain(c.control.as_ref())
            {
                wanted.extend(seeds.iter().map(|s| (g.clone(), *s)));
            }
        }
        let measure = Measure {
            budget: &budget,
            split: EvalSplit::Test,
            checkpointed: true,
        };
        let scores = self.scores(spec, &wanted, measure).await?;
        let net = network_spec(spec, &budget);
        let per_seed = |g: &Genotype| -> Result<SeedAccuracies, Failure> {
            let hash = g.canonical_hash();
            let mut accuracies = Vec::with_capacity(seeds.len());
            let mut measured = None;
            for seed in &seeds {
                match scores.get(&(hash.clone(), *seed)) {
                    Some(Score::Known(a, m)) => {
                        accuracies.push(*a);
                        measured = measured.or(*m);
                    }
                    _ => {
                        return Err(Failure::Fatal(format!(
                            "final evaluation of {hash} with seed {seed} failed to train"
                        )))
                    }
                }
            }
            let (params, madds) = match measured {
                Some(m) if m.params > 0 => (m.params, m.madds),
                _ => nat_arch::network_cost(g, &net)
                    .map(|c| (c.params(), c.madds()))
                    .map_err(|e| Failure::Fatal(format!("cost of {hash}: {e}")))?,
            };
            Ok(SeedAccuracies::new(accuracies, params, madds))
        };
        let pairs = |a: &SeedAccuracies, b: &SeedAccuracies| -> Result<PairedDifference, Failure> {
            PairedDifference::of(&a.accuracies, &b.accuracies)
                .ok_or_else(|| Failure::Fatal("the final evaluation has no seeds".into()))
        };
        let mut out = Vec::new();
        for (i, (orig, c)) in inputs.iter().zip(chosen).enumerate() {
            let original = per_seed(orig)?;
            let best = per_seed(&c.best)?;
            let same = orig.canonical_hash() == c.best.canonical_hash();
            let diff = pairs(&original, &best)?;
            let decision = decide(&original, &best, &diff, same);
            let control = match &c.control {
                None => None,
                Some(g) => {
                    let picked = per_seed(g)?;
                    let vs_original = pairs(&original, &picked)?;
                    let same_control = orig.canonical_hash() == g.canonical_hash();
                    let verdict = decide(&original, &picked, &vs_original, same_control).verdict;
                    Some(ControlOutcome {
                        genotype: g.to_json_value(),
                        genotype_darts: g.to_darts_string(),
                        policy_vs_control: pairs(&picked, &best)?,
                        final_accuracies: picked,
                        vs_original,
                        verdict,
                    })
                }
            };
            let recommended = match decision.recommended {
                RecommendedFrom::Best => &c.best,
                RecommendedFrom::Original => orig,
            };
            tracing::info!(
                job = %self.job,
                input = i,
                verdict = %decision.verdict,
                difference = diff.mean,
                "final evaluation done"
            );
            out.push(OptimizeOutcome {
                input_index: u32::try_from(i).unwrap_or(u32::MAX),
                original: measurement(orig, &original),
                best: measurement(&c.best, &best),
                changed_edges: changed_edges(orig, &c.best),
                verdict: Some(decision.verdict),
                recommended: Some(Recommendation {
                    from: decision.recommended,
                    genotype: recommended.to_json_value(),
                    genotype_darts: recommended.to_darts_string(),
                    reason: decision.reason,
                }),
                final_evaluation: Some(FinalEvaluation {
                    seeds: seeds.clone(),
                    original,
                    best,
                    paired_difference: diff,
                }),
                control,
                derive_accuracy: Some(c.best_accuracy),
            });
        }
        Ok(out)
    }
}

/// An architecture as the final evaluation measured it: its mean accuracy over the seeds.
fn measurement(g: &Genotype, m: &SeedAccuracies) -> ArchMeasurement {
    ArchMeasurement {
        genotype: g.to_json_value(),
        genotype_darts: g.to_darts_string(),
        canonical_hash: g.canonical_hash(),
        accuracy: m.mean,
        params: m.params,
        madds: m.madds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_seeds_are_distinct_and_never_the_job_seed() {
        assert_eq!(final_seeds(1, 3), vec![1001, 1002, 1003]);
        assert_eq!(final_seeds(0, 2), vec![1, 2]);
        for job_seed in [0, 1, 42, u64::MAX] {
            let seeds = final_seeds(job_seed, 32);
            assert_eq!(seeds.len(), 32);
            assert!(!seeds.contains(&job_seed));
            let distinct: std::collections::HashSet<_> = seeds.iter().collect();
            assert_eq!(distinct.len(), 32);
            // Deterministic: a restarted driver finds the same tasks.
            assert_eq!(seeds, final_seeds(job_seed, 32));
            assert_eq!(final_seeds(job_seed, 3), seeds[..3]);
        }
    }
}
