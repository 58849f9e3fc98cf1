//! Whether the policy learned: the `learning` section of an optimize job's result.
//!
//! Per policy update, the mean reward (and its moving average) and the mean entropy of the
//! samples, read back from the job's `policy_update` events; per input, the policy's
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
        let mut curve = Vec::new();
        let mut average: Option<f64> = None;
        let mut cursor = 0;
        loop {
            let events = self.c.store.events_after(self.job, cursor, PAGE).await?;
            let n = events.len();
            for e in events {
                cursor = e.seq;
                if let JobEvent::PolicyUpdate(u) = JobEvent::decode(&e.kind, &e.payload)? {
                    let Some(mean) = u.mean_reward else { continue };
                    let avg = average.map_or(mean, |a| a + MOVING_AVERAGE_WEIGHT * (mean - a));
                    average = Some(avg);
                    curve.push(LearningPoint {
                        version: u.policy_version,
                        mean_reward: mean,
                        reward_moving_average: avg,
                        entropy: u.entropy,
                    });
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
            policy_versions: curve.len() as u64,
            curve,
            inputs,
            supernet: progress.supernet.as_ref().map(|s| s.progress()),
        })
    }
}
