//! Whether the policy learned: the `learning` section of an optimize job's result.
//!
//! Per policy update, the mean reward (and its moving average) and the mean entropy of the
//! samples, read back from the job's `policy_update` events (at most [`MAX_CURVE_POINTS`]
//! points: a longer job's updates are merged in equal buckets, see [`Curve`]); per input, the policy's
//! probability of leaving the input as it is (the identity transformation) and of its argmax,
//! at the version the job started from (recorded when learning starts) and at the last.
//! A policy that learned nothing shows a flat curve and unchanged probabilities.

use std::sync::Arc;

use nat_arch::Genotype;
use nat_policy::driver::PolicyDriver;
use nat_policy::PolicyLearner;
use nat_schema::event::JobEvent;
use nat_schema::result::{DriverProgress, InputLearning, Learning, LearningPoint, PolicyView};

use super::{Failure, Run};

/// Weight of the newest update in the reward's moving average.
const MOVING_AVERAGE_WEIGHT: f64 = 0.1;
/// Most points of the stored learning curve (see [`Curve`]).
pub(super) const MAX_CURVE_POINTS: usize = 1000;

/// Consecutive policy updates merged into one point of the curve.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The last update's version.
    version: i64,
    /// Updates merged.
    updates: u64,
    /// Sum of their mean rewards.
    reward_sum: f64,
    /// The moving average at the last update.
    moving_average: f64,
    /// Sum and count of their entropies (updates without one are left out).
    entropy_sum: f64,
    entropies: u64,
}

impl Bucket {
    fn merge(self, next: Bucket) -> Bucket {
        Bucket {
            version: next.version,
            updates: self.updates + next.updates,
            reward_sum: self.reward_sum + next.reward_sum,
            moving_average: next.moving_average,
            entropy_sum: self.entropy_sum + next.entropy_sum,
            entropies: self.entropies + next.entropies,
        }
    }

    fn point(&self) -> LearningPoint {
        LearningPoint {
            version: self.version,
            mean_reward: self.reward_sum / self.updates.max(1) as f64,
            reward_moving_average: self.moving_average,
            entropy: (self.entropies > 0).then(|| self.entropy_sum / self.entropies as f64),
        }
    }
}

/// The learning curve of a job with at most [`MAX_CURVE_POINTS`] points, whatever the number of
/// policy updates: one point per update up to that many; beyond, consecutive updates are merged
/// into buckets of equal size (a power of two; the last bucket may be partial), each point the
/// mean reward and mean entropy of its bucket at the bucket's last version, with the moving
/// average (over every update) at that version. Memory and the stored curve stay bounded at
/// 50,000 rewards with M = 1 as with M = 64.
#[derive(Debug, Default)]
pub(super) struct Curve {
    buckets: Vec<Bucket>,
    /// Updates per full bucket.
    size: u64,
    /// Updates added.
    updates: u64,
    average: Option<f64>,
}

impl Curve {
    /// Adds one update: its version, mean reward and entropy.
    pub(super) fn add(&mut self, version: i64, mean: f64, entropy: Option<f64>) {
        let avg = self
            .average
            .map_or(mean, |a| a + MOVING_AVERAGE_WEIGHT * (mean - a));
        self.average = Some(avg);
        self.updates += 1;
        self.size = self.size.max(1);
        let one = Bucket {
            version,
            updates: 1,
            reward_sum: mean,
            moving_average: avg,
            entropy_sum: entropy.unwrap_or(0.0),
            entropies: u64::from(entropy.is_some()),
        };
        match self.buckets.last_mut() {
            Some(last) if last.updates < self.size => *last = last.merge(one),
            _ => self.buckets.push(one),
        }
        if self.buckets.len() > MAX_CURVE_POINTS {
            self.buckets = self
                .buckets
                .chunks(2)
                .filter_map(|pair| pair.iter().copied().reduce(Bucket::merge))
                .collect();
            self.size *= 2;
        }
    }

    /// Policy updates added.
    pub(super) fn updates(&self) -> u64 {
        self.updates
    }

    /// The points, oldest first.
    pub(super) fn points(&self) -> Vec<LearningPoint> {
        self.buckets.iter().map(Bucket::point).collect()
    }
}
/// Events read per store call.
const PAGE: u32 = 1000;

/// The policy's view of each input at its current version.
pub(super) async fn policy_views(
    driver: &Arc<PolicyDriver>,
    inputs: &[Genotype],
) -> Result<Vec<PolicyView>, Failure> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let d = Arc::clone(driver);
    let inputs = inputs.to_vec();
    let version = driver.version()?;
    tokio::task::spawn_blocking(move || {
        d.with_learner(|l: &PolicyLearner| -> Result<Vec<PolicyView>, String> {
            let argmax = l.argmax(&inputs).map_err(|e| e.to_string())?;
            inputs
                .iter()
                .zip(argmax)
                .map(|(beta, best)| {
                    let identity = l.log_prob(beta, beta).map_err(|e| e.to_string())?;
                    let top = l.log_prob(beta, &best.alpha).map_err(|e| e.to_string())?;
                    Ok(PolicyView {
                        version,
                        identity_probability: identity.exp(),
                        argmax_darts: best.alpha.to_darts_string(),
                        argmax_probability: top.exp(),
                    })
                })
                .collect()
        })
    })
    .await
    .map_err(|e| Failure::Transient(format!("policy view thread: {e}")))??
    .map_err(|e| Failure::Fatal(format!("policy view: {e}")))
}

impl Run {
    /// The `learning` section, at the end of the job.
    pub(super) async fn learning(
        &self,
        inputs: &[Genotype],
        progress: &DriverProgress,
        driver: &Arc<PolicyDriver>,
    ) -> Result<Learning, Failure> {
        let mut curve = Curve::default();
        let mut cursor = 0;
        loop {
            let events = self.c.store.events_after(self.job, cursor, PAGE).await?;
            let n = events.len();
            for e in events {
                cursor = e.seq;
                if let JobEvent::PolicyUpdate(u) = JobEvent::decode(&e.kind, &e.payload)? {
                    let Some(mean) = u.mean_reward else { continue };
                    curve.add(u.policy_version, mean, u.entropy);
                }
            }
            if n < PAGE as usize {
                break;
            }
        }
        let last = policy_views(driver, inputs).await?;
        let inputs = last
            .into_iter()
            .enumerate()
            .map(|(i, last)| InputLearning {
                input_index: u32::try_from(i).unwrap_or(u32::MAX),
                first: progress.policy_start.get(i).cloned(),
                last,
            })
            .collect();
        Ok(Learning {
            rewards: progress.rewards,
            policy_versions: curve.updates(),
            curve: curve.points(),
            inputs,
            supernet: progress.supernet.as_ref().map(|s| s.progress()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_curve_has_one_point_per_update() {
        let mut c = Curve::default();
        for v in 1..=10i64 {
            c.add(v, v as f64, Some(1.0));
        }
        let p = c.points();
        assert_eq!((p.len(), c.updates()), (10, 10));
        assert_eq!(p[9].version, 10);
        assert_eq!(p[9].mean_reward, 10.0);
        assert_eq!(p[0].reward_moving_average, 1.0);
    }

    #[test]
    fn a_long_curve_is_merged_into_at_most_the_cap() {
        let mut c = Curve::default();
        let mut average: Option<f64> = None;
        let n = 50_000i64;
        for v in 1..=n {
            let mean = (v % 7) as f64;
            average = Some(average.map_or(mean, |a| a + MOVING_AVERAGE_WEIGHT * (mean - a)));
            c.add(v, mean, (v % 2 == 0).then_some(2.0));
            assert!(c.buckets.len() <= MAX_CURVE_POINTS);
        }
        let p = c.points();
        assert_eq!(c.updates(), 50_000);
        assert!(
            p.len() > MAX_CURVE_POINTS / 2 && p.len() <= MAX_CURVE_POINTS,
            "{}",
            p.len()
        );
        // Equal buckets of a power of two (the last one may be partial), the versions in order.
        let size = c.size;
        assert!(size.is_power_of_two() && size >= 64, "{size}");
        assert!(c.buckets[..c.buckets.len() - 1]
            .iter()
            .all(|b| b.updates == size));
        assert_eq!(c.buckets.iter().map(|b| b.updates).sum::<u64>(), 50_000);
        assert!(p.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(p.last().map(|l| l.version), Some(n));
        // The moving average is that of every update; entropies of the updates that had one.
        let last = p.last().expect("points");
        assert!((last.reward_moving_average - average.unwrap_or(0.0)).abs() < 1e-9);
        assert_eq!(p[0].entropy, Some(2.0));
        let first_mean = (1..=size as i64).map(|v| (v % 7) as f64).sum::<f64>() / size as f64;
        assert!((p[0].mean_reward - first_mean).abs() < 1e-9);
    }
}
