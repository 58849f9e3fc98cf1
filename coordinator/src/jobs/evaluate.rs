//! The `evaluate` job kind: train and evaluate each given architecture once, one `train_eval`
//! task per architecture, created with the job in one transaction. The store finishes the job
//! when its last task ends (`Completion::AllTasks`), so there is nothing to drive.

use std::sync::Arc;

use nat_proto::v1;
use nat_schema::event::{JobEvent, TaskSucceeded};
use nat_schema::{EvalSplit, JobKind, JobSpec, TaskKind, TrainEvalPayload, TrainEvalResult};
use nat_store::{Completion, Job, NewJob, NewTask};

use super::{JobType, KindEvents, Submission};
use crate::convert::{self, decode, encode};
use crate::error::ApiError;
use crate::state::Coordinator;

/// The `evaluate` kind.
#[derive(Debug, Clone, Copy)]
pub struct Evaluate;

#[tonic::async_trait]
impl JobType for Evaluate {
    fn kind(&self) -> JobKind {
        JobKind::Evaluate
    }

    async fn submit(
        &self,
        c: &Arc<Coordinator>,
        _request: &v1::SubmitJobRequest,
        s: Submission,
    ) -> Result<Job, ApiError> {
        let spec = &s.spec;
        let tasks = s
            .genotypes
            .iter()
            .zip(&spec.architectures)
            .enumerate()
            .map(|(i, (g, json))| {
                let payload = TrainEvalPayload {
                    index: i as u32,
                    genotype_json: json.clone(),
                    arch_hash: g.canonical_hash(),
                    dataset: spec.dataset.clone(),
                    dataset_shape: Some(spec.dataset_shape),
                    budget: spec.budget,
                    seed: spec.seed,
                    checkpointed: false,
                    checkpoint_key: String::new(),
                    split: EvalSplit::Validation,
                };
                Ok(NewTask {
                    kind: TaskKind::TrainEval.as_str().into(),
                    payload: encode("train_eval payload", &payload)?,
                    requirements: s.requirements.clone(),
                    max_attempts: c.config.max_attempts,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let n = tasks.len();
        let job = c
            .store
            .create_job(
                NewJob {
                    kind: JobKind::Evaluate.as_str().into(),
                    spec: encode("job spec", spec)?,
                    priority: s.priority,
                    completion: Completion::AllTasks,
                    owner: s.owner.clone(),
                },
                tasks,
                c.clock.now(),
            )
            .await?;
        tracing::info!(job = %job.id, tasks = n, dataset = %spec.dataset, "job submitted");
        nat_telemetry::record::tasks_created(nat_telemetry::TaskKind::TrainEval, n as u64);
        c.wake_workers(n);
        Ok(job)
    }

    fn result(&self, _job: &Job, _out: &mut v1::GetJobResultResponse) -> Result<(), ApiError> {
        // The per-architecture results are the whole result.
        Ok(())
    }

    fn events(&self, job: &Job) -> Result<Box<dyn KindEvents>, ApiError> {
        let spec: JobSpec = decode("job spec", &job.spec)?;
        Ok(Box::new(EvaluateEvents {
            architectures: spec.architectures,
            best: None,
        }))
    }
}

/// An evaluate job's events: each task's completion with its architecture, and a `NewBest`
/// whenever a task beats the most accurate architecture so far.
struct EvaluateEvents {
    architectures: Vec<String>,
    best: Option<f64>,
}

impl KindEvents for EvaluateEvents {
    fn task_succeeded(
        &mut self,
        e: &TaskSucceeded,
        _task_genotype: Option<String>,
    ) -> Result<Vec<v1::job_event::Event>, ApiError> {
        use v1::job_event::Event as E;
        let r: TrainEvalResult = decode("train_eval result", &e.result)?;
        let genotype = self
            .architectures
            .get(r.index as usize)
            .cloned()
            .unwrap_or_default();
        let mut out = vec![E::TaskCompleted(v1::TaskCompleted {
            task_id: e.task_id.clone(),
            architecture_index: r.index,
            genotype_json: genotype.clone(),
            result: Some(r.outcome.to_proto()),
            worker_id: r.worker_id,
            attempt: e.attempt,
        })];
        if self.best.is_none_or(|b| r.outcome.accuracy > b) {
            self.best = Some(r.outcome.accuracy);
            out.push(E::NewBest(v1::NewBest {
                genotype_darts: convert::darts_of(&genotype),
                genotype_json: genotype,
                accuracy: r.outcome.accuracy,
                reward: r.outcome.accuracy,
                input_index: r.index,
            }));
        }
        Ok(out)
    }

    fn own_event(&mut self, _event: &JobEvent) -> Vec<v1::job_event::Event> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Translator;
    use chrono::Utc;
    use nat_store::{Event, JobId};
    use serde_json::json;
    use v1::job_event::Event as E;

    #[test]
    fn an_evaluate_task_that_beats_the_best_is_a_new_best_with_its_genotype() {
        let g = nat_arch::parse_any("darts-v2").expect("preset");
        let mut t = Translator::new(Box::new(EvaluateEvents {
            architectures: vec![g.to_json()],
            best: None,
        }));
        let done = Event {
            job_id: JobId::nil(),
            seq: 1,
            kind: "task_succeeded".into(),
            payload: json!({"task_id": "t", "attempt": 1, "result": {"index": 0,
                   "accuracy": 0.5, "loss": 0.1, "params": 1, "madds": 2,
                   "wall_seconds": 0.1, "images_per_second": 1.0}}),
            created_at: Utc::now(),
        };
        let out = t.translate(&done, None).expect("decodes");
        assert_eq!(out.len(), 2);
        let Some(E::NewBest(b)) = &out[1].event else {
            panic!("{out:?}");
        };
        assert_eq!(b.genotype_json, g.to_json());
        assert_eq!(b.genotype_darts, g.to_darts_string());
        assert_eq!(
            t.translate(&done, None).expect("decodes").len(),
            1,
            "not better the second time"
        );
    }
}
