//! What an optimize job shows: its result document (written while it runs and when it
//! finishes), the optimize part of `GetJobResult`, and its `WatchJob` events.

use nat_arch::Genotype;
use nat_policy::driver::PolicyDriver;
use nat_proto::v1;
use nat_schema::event::{JobEvent, NewBest, PolicyUpdate, TaskSucceeded};
use nat_schema::result::{
    ArchMeasurement, DriverProgress, Learning, OptimizeResult, PolicyRef, Summary,
};
use nat_schema::{OptimizeJobSpec, TaskResult};
use nat_store::Job;

use super::{Failure, Outcomes};
use crate::convert::decode;
use crate::error::ApiError;
use crate::jobs::watch::finite;
use crate::jobs::KindEvents;

/// The result document: the summary, the outcomes (empty until the final check), the policy,
/// and the driver's progress.
pub(super) fn document(
    spec: &OptimizeJobSpec,
    progress: &DriverProgress,
    driver: &PolicyDriver,
    outcomes: Outcomes,
    learning: Option<Learning>,
) -> Result<OptimizeResult, Failure> {
    let version = driver.version()?;
    let best_accuracy = outcomes
        .iter()
        .map(|o| o.best.accuracy)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    Ok(OptimizeResult {
        summary: Summary {
            best_accuracy,
            best_reward: progress.best_reward,
            policy_version: version,
            iterations_done: progress.iteration,
            iterations_total: spec.optimize.iterations,
        },
        optimize: outcomes,
        policy: Some(PolicyRef {
            id: driver.policy_id().to_string(),
            version,
        }),
        rewards: progress.rewards,
        driver: progress.clone(),
        learning,
    })
}

/// The optimize part of `GetJobResult`: original vs best per input, the policy, the rewards it
/// learned from (empty while nothing is known yet).
pub(super) fn result_parts(job: &Job, out: &mut v1::GetJobResultResponse) -> Result<(), ApiError> {
    let Some(doc) = job.result.as_ref() else {
        return Ok(());
    };
    let doc: OptimizeResult = decode("optimize result", doc)?;
    let arch = |m: &ArchMeasurement, index: u32| -> Result<v1::ArchitectureResult, ApiError> {
        let g = Genotype::from_json_value(&m.genotype).map_err(|e| {
            ApiError::from(nat_schema::DecodeError {
                document: "optimize result",
                field: "optimize[].genotype".into(),
                reason: e.to_string(),
            })
        })?;
        Ok(v1::ArchitectureResult {
            index,
            genotype_json: g.to_json(),
            genotype_darts: g.to_darts_string(),
            canonical_hash: g.canonical_hash(),
            state: v1::TaskState::Succeeded as i32,
            result: Some(v1::TrainEvalResult {
                accuracy: m.accuracy,
                loss: 0.0,
                params: m.params,
                madds: m.madds,
                wall_seconds: 0.0,
                images_per_second: 0.0,
            }),
            error: String::new(),
            attempts: 0,
        })
    };
    for o in &doc.optimize {
        out.optimize.push(v1::OptimizeOutcome {
            original: Some(arch(&o.original, o.input_index)?),
            best: Some(arch(&o.best, o.input_index)?),
            changed_edges: o.changed_edges.clone(),
            verdict: o
                .verdict
                .map(|v| v.as_str().to_string())
                .unwrap_or_default(),
            recommended: o.recommended.as_ref().map(|r| r.to_proto()),
            r#final: o.final_evaluation.as_ref().map(|f| f.to_proto()),
            control: o.control.as_ref().map(|c| c.to_proto()),
            input_darts: o.original.genotype_darts.clone(),
        });
    }
    out.learning = doc.learning.as_ref().map(|l| l.to_proto());
    out.policy = doc.policy.map(|p| v1::PolicyRef {
        id: p.id,
        version: u64::try_from(p.version).unwrap_or(0),
    });
    out.rewards = doc.rewards;
    Ok(())
}

/// An optimize job's events: `phase` becomes `PhaseChanged`, `policy_update` becomes
/// `PolicyUpdated`, `new_best` becomes `NewBest` with the derived genotype; its `rewards` event
/// only tells which learning round the next updates belong to. A task's completion carries its
/// genotype (read from the task: an optimize job's tasks are not the submitted architectures)
/// and makes no new best (those come from derive).
pub(super) struct OptimizeEvents {
    /// Learning rounds of the job.
    iterations: u32,
    /// Learning round of the latest `rewards` event.
    iteration: Option<u32>,
}

impl OptimizeEvents {
    pub(super) fn new(iterations: u32) -> Self {
        OptimizeEvents {
            iterations,
            iteration: None,
        }
    }

    fn policy_updated(&self, u: &PolicyUpdate) -> v1::PolicyUpdated {
        let rewards: Vec<f64> = u
            .rewards
            .iter()
            .copied()
            .filter(|r| r.is_finite())
            .collect();
        let iteration = u.iteration.or(self.iteration).unwrap_or(0);
        v1::PolicyUpdated {
            version: u64::try_from(u.policy_version).unwrap_or(0),
            iteration,
            iterations: u.iterations.unwrap_or(self.iterations),
            mean_reward: finite(u.mean_reward).unwrap_or(0.0),
            baseline: finite(u.baseline).unwrap_or(0.0),
            entropy: finite(u.entropy).unwrap_or(0.0),
            loss: finite(u.loss),
            rewards_used: u32::try_from(u.samples_used).unwrap_or(u32::MAX),
            stale_dropped: u32::try_from(u.samples_stale).unwrap_or(u32::MAX),
            rewards,
        }
    }
}

/// A `new_best` event on the wire: the genotype as canonical JSON and DARTS string.
fn new_best(b: &NewBest) -> v1::NewBest {
    let genotype = Genotype::from_json_value(&b.genotype).ok();
    v1::NewBest {
        genotype_json: genotype.as_ref().map(Genotype::to_json).unwrap_or_default(),
        genotype_darts: genotype
            .as_ref()
            .map(Genotype::to_darts_string)
            .unwrap_or_default(),
        accuracy: finite(Some(b.accuracy)).unwrap_or(0.0),
        reward: finite(b.reward).unwrap_or(0.0),
        input_index: b.input_index,
    }
}

impl KindEvents for OptimizeEvents {
    fn needs_task_genotype(&self) -> bool {
        true
    }

    fn task_succeeded(
        &mut self,
        e: &TaskSucceeded,
        task_genotype: Option<String>,
    ) -> Result<Vec<v1::job_event::Event>, ApiError> {
        use v1::job_event::Event as E;
        // A train_eval task carries its measurement; a supernet round completes without one.
        let (index, result, worker_id) = match TaskResult::decode(&e.result)? {
            TaskResult::TrainEval(r) => (r.index, Some(r.outcome.to_proto()), r.worker_id),
            TaskResult::Supernet(r) => (0, None, r.worker_id),
        };
        Ok(vec![E::TaskCompleted(v1::TaskCompleted {
            task_id: e.task_id.clone(),
            architecture_index: index,
            genotype_json: task_genotype.unwrap_or_default(),
            result,
            worker_id,
            attempt: e.attempt,
        })])
    }

    fn own_event(&mut self, event: &JobEvent) -> Vec<v1::job_event::Event> {
        use v1::job_event::Event as E;
        match event {
            JobEvent::Phase(p) => vec![E::PhaseChanged(v1::PhaseChanged {
                phase: p.phase.as_str().to_string(),
            })],
            JobEvent::Rewards(r) => {
                self.iteration = Some(r.iteration);
                Vec::new()
            }
            JobEvent::PolicyUpdate(u) => vec![E::PolicyUpdated(self.policy_updated(u))],
            JobEvent::NewBest(b) => vec![E::NewBest(new_best(b))],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Translator;
    use chrono::Utc;
    use nat_store::{Event, JobId};
    use serde_json::{json, Value};
    use v1::job_event::Event as E;

    fn stored(seq: i64, kind: &str, payload: Value) -> Event {
        Event {
            job_id: JobId::nil(),
            seq,
            kind: kind.into(),
            payload,
            created_at: Utc::now(),
        }
    }

    fn optimize_job() -> Translator {
        Translator::new(Box::new(OptimizeEvents::new(5)))
    }

    #[test]
    fn tasks_added_keeps_the_done_count_of_the_latest_progress() {
        let mut t = optimize_job();
        t.done = 27;
        let out = t
            .translate(
                &stored(9, "tasks_added", json!({"added": 2, "tasks_total": 29})),
                None,
            )
            .expect("decodes");
        let Some(E::Progress(p)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((p.tasks_done, p.tasks_total), (27, 29));
    }

    #[test]
    fn policy_updates_carry_the_round_from_the_rewards_event_and_the_rounds_from_the_spec() {
        let mut t = optimize_job();
        assert!(t
            .translate(
                &stored(1, "rewards", json!({"iteration": 2, "rewards": [0.1]})),
                None
            )
            .expect("decodes")
            .is_empty());
        let out = t
            .translate(
                &stored(
                    2,
                    "policy_update",
                    json!({"policy_version": 4, "baseline": 0.05, "mean_reward": 0.1,
                           "rewards": [0.1], "samples_used": 1, "samples_stale": 2,
                           "entropy": 3.5}),
                ),
                None,
            )
            .expect("decodes");
        let Some(E::PolicyUpdated(u)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((u.version, u.iteration, u.iterations), (4, 2, 5));
        assert_eq!((u.rewards_used, u.stale_dropped), (1, 2));
        assert_eq!((u.mean_reward, u.baseline, u.entropy), (0.1, 0.05, 3.5));
        assert_eq!(u.loss, None);
        assert_eq!(u.rewards, vec![0.1]);
        // The document's own fields win when the driver writes them.
        let out = t
            .translate(
                &stored(
                    3,
                    "policy_update",
                    json!({"policy_version": 5, "iteration": 3, "iterations": 9, "loss": -0.25}),
                ),
                None,
            )
            .expect("decodes");
        let Some(E::PolicyUpdated(u)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((u.iteration, u.iterations, u.loss), (3, 9, Some(-0.25)));
    }

    #[test]
    fn an_event_that_does_not_decode_is_an_error_naming_the_field() {
        let mut t = optimize_job();
        let err = t
            .translate(
                &stored(1, "policy_update", json!({"policy_version": "four"})),
                None,
            )
            .expect_err("a string is no version");
        assert!(err.to_string().contains("internal"), "{err}");
        let ApiError::Internal(cause) = err else {
            panic!("not internal");
        };
        let text = format!("{:?}", cause);
        assert!(text.contains("policy_version"), "{text}");
    }

    #[test]
    fn an_optimize_new_best_carries_the_genotype_and_tasks_make_none() {
        let mut t = optimize_job();
        let g = nat_arch::parse_any("darts-v2").expect("preset");
        let out = t
            .translate(
                &stored(
                    1,
                    "new_best",
                    json!({"input_index": 0, "genotype": g.to_json_value(), "accuracy": 0.9}),
                ),
                None,
            )
            .expect("decodes");
        let Some(E::NewBest(b)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!(b.genotype_json, g.to_json());
        assert_eq!(b.genotype_darts, g.to_darts_string());
        assert_eq!((b.accuracy, b.reward), (0.9, 0.0));
        let done = stored(
            2,
            "task_succeeded",
            json!({"task_id": "t", "attempt": 1, "result": {"index": 3, "worker_id": "w",
                   "accuracy": 0.95, "loss": 0.1, "params": 1, "madds": 2,
                   "wall_seconds": 0.1, "images_per_second": 1.0}}),
        );
        let out = t.translate(&done, Some(g.to_json())).expect("decodes");
        assert_eq!(
            out.len(),
            1,
            "no per-task new best in an optimize job: {out:?}"
        );
        let Some(E::TaskCompleted(c)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!(c.genotype_json, g.to_json());
        assert_eq!(c.architecture_index, 3);
        let supernet = stored(
            3,
            "task_succeeded",
            json!({"task_id": "s", "attempt": 1, "result": {"scores": [{"acc_beta": 0.5,
                   "acc_alpha": 0.6}], "wall_seconds": 1.0, "worker_id": "w2"}}),
        );
        let out = t
            .translate(&supernet, Some(String::new()))
            .expect("decodes");
        let Some(E::TaskCompleted(c)) = &out[0].event else {
            panic!("{out:?}");
        };
        assert_eq!((c.result.is_none(), c.worker_id.as_str()), (true, "w2"));
        let out = t
            .translate(&stored(4, "phase", json!({"phase": "derive"})), None)
            .expect("decodes");
        assert!(matches!(&out[0].event, Some(E::PhaseChanged(p)) if p.phase == "derive"));
    }
}
