//! The derive phase: K transformations of every input sampled from the learned policy (or its
//! argmax), ranked together with the original by accuracy after a training from scratch with
//! the job's budget (validation split, the job's seed); the most accurate is kept, the original
//! when nothing beats it.
//!
//! "No extra cost" is a constraint: a candidate whose params or multiply-adds exceed
//! `max_cost_ratio` times the original's is out of the running before it is trained (NAT's
//! null → skip move can add a FactorizedReduce with weights at stride 2).
//!
//! With `control: random` the same derive runs on K candidates drawn uniformly from the space
//! (plus the original): what selection alone finds, for the final evaluation to compare.

use std::collections::HashMap;
use std::sync::Arc;

use nat_arch::{Genotype, NetworkSpec};
use nat_policy::driver::PolicyDriver;
use nat_policy::PolicyLearner;
use nat_schema::event::NewBest;
use nat_schema::result::DriverProgress;
use nat_schema::{Budget, Control, EventKind, OptimizeJobSpec, RewardKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::scoring::{Measure, Score};
use super::{submit, Failure, Run};

/// What derive chose for one input.
#[derive(Debug, Clone)]
pub(super) struct DeriveChoice {
    /// The most accurate eligible candidate (the original when nothing beat it).
    pub best: Genotype,
    /// Its derive accuracy (validation split, job seed): the selection measurement.
    pub best_accuracy: f64,
    /// The random control's pick, when the job runs the control.
    pub control: Option<Genotype>,
}

/// Seed offset of the control's uniform draws.
const CONTROL_SEED: u64 = 0xC047_2011;

impl Run {
    /// Derives candidates per input and returns what was chosen for each.
    pub(super) async fn derive(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &Arc<PolicyDriver>,
        progress: &mut DriverProgress,
    ) -> Result<Vec<DeriveChoice>, Failure> {
        let s = &spec.optimize;
        let k = s.derive_samples as usize;
        if progress.candidates.len() != inputs.len() {
            let d = Arc::clone(driver);
            let inputs_owned = inputs.to_vec();
            let (argmax, seed) = (s.derive_argmax, spec.base.seed);
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
            progress.control_candidates = match s.control {
                Control::None => Vec::new(),
                Control::Random => {
                    let space = submit::space(s);
                    let mut rng = ChaCha8Rng::seed_from_u64(spec.base.seed ^ CONTROL_SEED);
                    inputs
                        .iter()
                        .map(|b| {
                            (0..k)
                                .map(|_| space.uniform_transform(b, &mut rng).to_json())
                                .collect()
                        })
                        .collect()
                }
            };
            self.save(spec, progress, driver).await?;
        }
        let policy = parse_lists(&progress.candidates)?;
        let control = parse_lists(&progress.control_candidates)?;
        let net = network_spec(spec, &spec.base.budget);
        let seed = spec.base.seed;
        let mut wanted: Vec<(Genotype, u64)> = Vec::new();
        let mut eligible_policy = Vec::new();
        let mut eligible_control = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            wanted.push((input.clone(), seed));
            let limit = CostLimit::of(input, &net, s.max_cost_ratio)?;
            let keep = |list: Option<&Vec<Genotype>>, what: &str| -> Vec<Genotype> {
                let list = list.map(Vec::as_slice).unwrap_or_default();
                let kept: Vec<Genotype> = list
                    .iter()
                    .filter(|g| limit.allows(g, &net))
                    .cloned()
                    .collect();
                if kept.len() < list.len() {
                    tracing::info!(
                        job = %self.job,
                        input = i,
                        excluded = list.len() - kept.len(),
                        of = list.len(),
                        max_cost_ratio = s.max_cost_ratio,
                        "{what} candidates out of the running: they cost more than the original allows"
                    );
                }
                kept
            };
            let p = keep(policy.get(i), "policy");
            let c = keep(control.get(i), "control");
            wanted.extend(p.iter().chain(&c).map(|g| (g.clone(), seed)));
            eligible_policy.push(p);
            eligible_control.push(c);
        }
        if s.reward == RewardKind::Supernet {
            // Derive on the supernet (spec §5.1): every eligible candidate is scored on the
            // job's supernet; only the best `derive_top_k` of each list are trained from scratch.
            let (policy_top, control_top) = self
                .screen_candidates(
                    spec,
                    inputs,
                    driver,
                    progress,
                    &eligible_policy,
                    &eligible_control,
                )
                .await?;
            eligible_policy = policy_top;
            eligible_control = control_top;
            wanted = inputs.iter().map(|g| (g.clone(), seed)).collect();
            for g in eligible_policy.iter().chain(&eligible_control).flatten() {
                wanted.push((g.clone(), seed));
            }
        }
        let scores = self
            .scores(spec, &wanted, Measure::selection(&spec.base.budget))
            .await?;
        let accuracy = |g: &Genotype| match scores.get(&(g.canonical_hash(), seed)) {
            Some(Score::Known(a, _)) => Some(*a),
            _ => None,
        };
        let mut out = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            // The original first: a candidate must be strictly more accurate to replace it.
            let pick = |list: &[Genotype]| -> Option<(Genotype, f64)> {
                let mut top = accuracy(input).map(|a| (input.clone(), a));
                for g in list {
                    if let Some(a) = accuracy(g) {
                        if top.as_ref().is_none_or(|(_, t)| a > *t) {
                            top = Some((g.clone(), a));
                        }
                    }
                }
                top
            };
            let Some((best, best_accuracy)) = pick(&eligible_policy[i]) else {
                return Err(Failure::Fatal(format!(
                    "input {i}: the original and every derived candidate failed to train"
                )));
            };
            let control = if s.control == Control::Random {
                pick(&eligible_control[i]).map(|(g, _)| g)
            } else {
                None
            };
            let input_accuracy = accuracy(input);
            self.event(
                EventKind::NewBest,
                &NewBest {
                    input_index: u32::try_from(i).unwrap_or(u32::MAX),
                    genotype: best.to_json_value(),
                    accuracy: best_accuracy,
                    reward: input_accuracy.map(|a| best_accuracy - a),
                    input_accuracy,
                },
            )
            .await?;
            out.push(DeriveChoice {
                best,
                best_accuracy,
                control,
            });
        }
        Ok(out)
    }
}

impl Run {
    /// Scores the eligible candidates of every input on the supernet (each distinct
    /// architecture once, the originals too, for the log) and keeps the `derive_top_k` most
    /// accurate of each list, best first. Ties keep the sampling order.
    async fn screen_candidates(
        &mut self,
        spec: &OptimizeJobSpec,
        inputs: &[Genotype],
        driver: &Arc<PolicyDriver>,
        progress: &mut DriverProgress,
        policy: &[Vec<Genotype>],
        control: &[Vec<Genotype>],
    ) -> Result<(Vec<Vec<Genotype>>, Vec<Vec<Genotype>>), Failure> {
        let mut distinct: Vec<Genotype> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for g in inputs
            .iter()
            .chain(policy.iter().flatten())
            .chain(control.iter().flatten())
        {
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(g.canonical_hash()) {
                e.insert(distinct.len());
                distinct.push(g.clone());
            }
        }
        let accuracies = self
            .screen(spec, inputs, driver, &distinct, progress)
            .await?;
        let accuracy = |g: &Genotype| {
            index
                .get(&g.canonical_hash())
                .and_then(|i| accuracies.get(*i).copied().flatten())
        };
        let k = spec.optimize.derive_top_k as usize;
        let top = |list: &[Genotype]| -> Vec<Genotype> {
            let mut scored: Vec<(f64, &Genotype)> = list
                .iter()
                .filter_map(|g| accuracy(g).map(|a| (a, g)))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut kept: Vec<Genotype> = Vec::new();
            for (_, g) in scored {
                if kept.len() == k {
                    break;
                }
                if !kept
                    .iter()
                    .any(|h| h.canonical_hash() == g.canonical_hash())
                {
                    kept.push(g.clone());
                }
            }
            kept
        };
        for (i, input) in inputs.iter().enumerate() {
            let best = policy
                .get(i)
                .and_then(|l| l.iter().filter_map(&accuracy).reduce(f64::max));
            tracing::info!(
                job = %self.job,
                input = i,
                candidates = policy.get(i).map_or(0, Vec::len),
                original = ?accuracy(input),
                best_candidate = ?best,
                top_k = k,
                "derive screened on the supernet"
            );
        }
        Ok((
            policy.iter().map(|l| top(l)).collect(),
            control.iter().map(|l| top(l)).collect(),
        ))
    }
}

/// Parses stored candidate lists.
fn parse_lists(lists: &[Vec<String>]) -> Result<Vec<Vec<Genotype>>, Failure> {
    lists
        .iter()
        .map(|list| {
            list.iter()
                .map(|j| Genotype::from_json_str(j))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::Fatal(format!("stored candidate: {e}")))
        })
        .collect()
}

/// The network a budget trains on the job's dataset, of the job's resolved shape (for costs).
pub(super) fn network_spec(spec: &OptimizeJobSpec, budget: &Budget) -> NetworkSpec {
    NetworkSpec::for_shape(
        spec.base.dataset_shape,
        u64::from(budget.init_channels),
        u64::from(budget.layers),
    )
}

/// The most params and multiply-adds a candidate of one input may have.
struct CostLimit {
    params: f64,
    madds: f64,
}

impl CostLimit {
    fn of(input: &Genotype, net: &NetworkSpec, ratio: f64) -> Result<CostLimit, Failure> {
        let c = nat_arch::network_cost(input, net)
            .map_err(|e| Failure::Fatal(format!("cost of the input: {e}")))?;
        Ok(CostLimit {
            params: c.params() as f64 * ratio,
            madds: c.madds() as f64 * ratio,
        })
    }

    /// Whether `g` is within the limit (a candidate whose cost cannot be computed is not).
    fn allows(&self, g: &Genotype, net: &NetworkSpec) -> bool {
        nat_arch::network_cost(g, net)
            .is_ok_and(|c| c.params() as f64 <= self.params && c.madds() as f64 <= self.madds)
    }
}
