//! The `optimize` job kind: NAT (spec §4 and §5.1), in the `proxy` and `supernet` reward modes.
//!
//! A job runs three phases, driven by one tokio task per job ([`spawn`], a [`Run`]) on the
//! leader coordinator only (see [`crate::leader`]); its policy updates carry the leader's term:
//! 1. **learn** ([`learn`]): each round samples M transformations α of the inputs β with the
//!    job's policy (`nat_policy::driver::PolicyDriver`), measures reward = acc(α) − acc(β) per
//!    sample, and lets the driver take policy steps (exactly-once reward consumption in the
//!    store) until the round's rewards are used. How a round is measured is the job's reward
//!    mode:
//!    - `proxy`: α and β by accuracy after a short training (`train_eval` tasks; an
//!      architecture already measured with the same dataset and budget is answered from the
//!      reward-estimate cache or this job's earlier task, so nothing is trained twice);
//!    - `supernet` (spec §4.3, §4.6; [`supernet`]): the job's durable, versioned supernet.
//!      A warm-up makes version 1; each round is sharded across the fleet: every shard task
//!      fetches the latest version, trains on random β, scores its share of the round's M
//!      (β, α) pairs (acc(β), acc(α) on the same minibatch) and uploads its weights; the
//!      driver averages them into the next version, committed with the round's rewards.
//! 2. **derive** ([`derive`]): K transformations of every input (or the argmax), ranked with
//!    the original itself by a training from scratch with the job's budget (validation split);
//!    candidates costing more than `max_cost_ratio` times the original are out of the running;
//!    the most accurate is kept (the original when nothing beats it). With `control: random`
//!    the same derive also runs on K uniform samples of the space.
//! 3. **final evaluation** ([`final_check`]): original and best (and the control's pick)
//!    trained from scratch with the final budget on `final_seeds` fresh seeds, measured on the
//!    test split, paired by seed; the verdict and the recommendation
//!    ([`nat_schema::verdict`]). [`learning`] adds whether the policy learned.
//!
//! [`submit`] validates a submission; [`scoring`] tracks the job's tasks and their results
//! (O(1) per report: the driver reads only the job's new events); [`document`] builds the
//! result document, `GetJobResult`'s optimize part and the kind's `WatchJob` events.
//!
//! Crash safety: the driver keeps its progress in the job's result document
//! (`nat_schema::result::DriverProgress` under `driver`), the samples and rewards in the
//! store's policy tables, and the measurements in tasks and reward estimates. Every unfinished
//! optimize job is resumed at coordinator start; every step is idempotent (a reward recorded
//! twice is ignored, a task is only created for a (hash, budget) key the job has no task for).

mod derive;
mod document;
mod final_check;
mod learn;
mod learning;
mod scoring;
mod submit;
mod supernet;

use std::sync::Arc;
use std::time::Duration;

use nat_policy::driver::{DriverError, PolicyDriver};
use nat_proto::v1;
use nat_schema::event::PhaseChanged;
use nat_schema::result::{DriverProgress, OptimizeOutcome};
use nat_schema::{EventKind, JobKind, OptimizeJobSpec, Phase};
use nat_store::{Job, JobId, JobOutcome, StoreError};
use serde::Serialize;
use tokio::sync::broadcast;

use super::{JobType, KindEvents, Submission};
use crate::convert::decode;
use crate::error::ApiError;
use crate::state::Coordinator;

pub use submit::{
    DEFAULT_DERIVE_SAMPLES, MAX_DERIVE_SAMPLES, MAX_ITERATIONS, MAX_SAMPLES_PER_ITERATION,
};

/// Cells' intermediate nodes of random inputs (β ~ p(β), spec §4.2).
const RANDOM_INPUT_NODES: usize = 4;
/// How often a waiting driver re-reads the store without a change signal.
const POLL: Duration = Duration::from_millis(250);
/// Pause before a driver retries after a store error.
const RETRY: Duration = Duration::from_secs(1);

/// The `optimize` kind.
#[derive(Debug, Clone, Copy)]
pub struct Optimize;

#[tonic::async_trait]
impl JobType for Optimize {
    fn kind(&self) -> JobKind {
        JobKind::Optimize
    }

    fn allows_no_architectures(&self, request: &v1::SubmitJobRequest) -> bool {
        request.optimize.as_ref().is_some_and(|o| o.random_inputs)
    }

    async fn submit(
        &self,
        c: &Arc<Coordinator>,
        request: &v1::SubmitJobRequest,
        submission: Submission,
    ) -> Result<Job, ApiError> {
        let job = submit::submit(c, request, submission).await?;
        // On a follower nothing starts: the leader finds the job at its next scan.
        spawn(c.clone(), job.id);
        Ok(job)
    }

    fn resume(&self, c: &Arc<Coordinator>, job: &Job) -> bool {
        let started = spawn(c.clone(), job.id);
        if started {
            tracing::info!(job = %job.id, "resuming optimize job");
        }
        started
    }

    fn has_driver(&self) -> bool {
        true
    }

    fn result(&self, job: &Job, out: &mut v1::GetJobResultResponse) -> Result<(), ApiError> {
        document::result_parts(job, out)
    }

    fn events(&self, job: &Job) -> Result<Box<dyn KindEvents>, ApiError> {
        let spec: OptimizeJobSpec = decode("optimize job spec", &job.spec)?;
        Ok(Box::new(document::OptimizeEvents::new(
            spec.optimize.iterations,
        )))
    }
}

/// Starts the driver task of one job if this coordinator leads and does not drive it yet;
/// returns whether it started. The driver ends when the job is final, the coordinator stops,
/// or it loses the leadership term it started in (see [`crate::leader`]).
pub fn spawn(c: Arc<Coordinator>, job: JobId) -> bool {
    let Some(mut ticket) = c.leader.start_driver(job) else {
        return false;
    };
    tokio::spawn(async move {
        let mut shutdown = c.shutdown_signal();
        let epoch = ticket.epoch();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = tokio::select! {
                r = Run::drive(c.clone(), job, epoch) => r,
                _ = shutdown.changed() => return,
                _ = ticket.deposed() => {
                    tracing::info!(job = %job, epoch, "driver stopped: no longer the leader");
                    return;
                }
            };
            match result {
                Ok(()) => return,
                Err(Failure::Stopped) => return,
                Err(Failure::Fatal(error)) => {
                    tracing::warn!(job = %job, %error, "optimize job failed");
                    let outcome = JobOutcome::Failed {
                        error: error.chars().take(1000).collect(),
                        result: None,
                    };
                    match c.store.finish_job(job, outcome, c.clock.now()).await {
                        Ok(_) => {
                            c.reservations.drop_job(job);
                            nat_telemetry::record::job_finished(
                                nat_telemetry::JobKind::Optimize,
                                nat_telemetry::JobState::Failed,
                            );
                            c.job_changed(job);
                            return;
                        }
                        Err(StoreError::FailedPrecondition(_)) => return,
                        Err(e) => nat_telemetry::report_error(&e, "cannot fail optimize job"),
                    }
                }
                Err(Failure::Transient(error)) => {
                    tracing::warn!(job = %job, %error, "optimize driver retries after an error");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = shutdown.changed() => return,
                _ = ticket.deposed() => return,
            }
        }
    });
    true
}

/// Why a driver run stopped early.
#[derive(Debug)]
pub(super) enum Failure {
    /// The job is final (cancelled, or finished by another process) or the coordinator stops.
    Stopped,
    /// The job cannot succeed; it is failed with this error.
    Fatal(String),
    /// A store or thread error; the driver restarts from the stored state.
    Transient(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::FailedPrecondition(_) => Failure::Stopped,
            StoreError::Backend(_) => Failure::Transient(format!("store: {e}")),
            other => Failure::Fatal(format!("store: {other}")),
        }
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Store(s) => s.into(),
            DriverError::Join(_) | DriverError::Poisoned => Failure::Transient(e.to_string()),
            other => Failure::Fatal(other.to_string()),
        }
    }
}

impl From<nat_schema::DecodeError> for Failure {
    fn from(e: nat_schema::DecodeError) -> Self {
        Failure::Fatal(e.to_string())
    }
}

/// One driver run over one job.
pub(super) struct Run {
    c: Arc<Coordinator>,
    job: JobId,
    /// The leadership term the run drives in.
    epoch: i64,
    changes: broadcast::Receiver<JobId>,
    /// The job's tasks and their results.
    tracker: scoring::Tracker,
}

impl Run {
    async fn drive(c: Arc<Coordinator>, job: JobId, epoch: i64) -> Result<(), Failure> {
        let changes = c.subscribe_jobs();
        let mut run = Run {
            c,
            job,
            epoch,
            changes,
            tracker: scoring::Tracker::default(),
        };
        let stored = run.c.store.get_job(job).await?;
        if stored.state.is_final() {
            return Err(Failure::Stopped);
        }
        run.tracker = scoring::Tracker::load(&*run.c.store, job).await?;
        let spec: OptimizeJobSpec = nat_schema::decode("optimize job spec", &stored.spec)?;
        let mut progress = match &stored.result {
            Some(doc) => {
                nat_schema::decode::<nat_schema::result::OptimizeResult>("optimize result", doc)?
                    .driver
            }
            None => DriverProgress::default(),
        };
        // The shards of committed rounds are not read again (see `Tracker::forget_round`).
        run.tracker.forget_rounds_before(progress.iteration);
        let inputs = spec
            .base
            .architectures
            .iter()
            .map(|s| nat_arch::Genotype::from_json_str(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::Fatal(format!("stored architecture: {e}")))?;
        let s = &spec.optimize;
        let policy_id = if s.policy_id.is_empty() {
            format!("job-{job}")
        } else {
            s.policy_id.clone()
        };
        let driver = Arc::new(
            PolicyDriver::open_in_term(
                run.c.store.clone(),
                &policy_id,
                submit::policy_config(s),
                spec.base.seed,
                Some(job),
                Some(epoch),
                run.c.clock.now(),
            )
            .await?,
        );
        if progress.phase.is_none() {
            progress.policy_version = driver.version()?;
            progress.policy_start = learning::policy_views(&driver, &inputs).await?;
            run.enter(Phase::Learn, &spec, &mut progress, &driver)
                .await?;
        }
        if progress.phase == Some(Phase::Learn) {
            run.learn(&spec, &inputs, &driver, &mut progress).await?;
            run.enter(Phase::Derive, &spec, &mut progress, &driver)
                .await?;
        }
        if inputs.is_empty() {
            // A general policy learned on random architectures: nothing to derive.
            let learning = run.learning(&inputs, &progress, &driver).await?;
            let result = document::document(&spec, &progress, &driver, Vec::new(), Some(learning))?;
            return run.finish(result).await;
        }
        let chosen = run.derive(&spec, &inputs, &driver, &mut progress).await?;
        if progress.phase != Some(Phase::Final) {
            run.enter(Phase::Final, &spec, &mut progress, &driver)
                .await?;
        }
        let outcomes = run.final_check(&spec, &inputs, &chosen).await?;
        let learning = run.learning(&inputs, &progress, &driver).await?;
        let result = document::document(&spec, &progress, &driver, outcomes, Some(learning))?;
        run.finish(result).await
    }

    /// Moves to `phase`: the event, then the progress that says so.
    async fn enter(
        &self,
        phase: Phase,
        spec: &OptimizeJobSpec,
        progress: &mut DriverProgress,
        driver: &PolicyDriver,
    ) -> Result<(), Failure> {
        progress.phase = Some(phase);
        self.event(EventKind::Phase, &PhaseChanged { phase })
            .await?;
        self.save(spec, progress, driver).await
    }

    /// Waits for a change of this job (a report), a poll tick, or a stop. Stops the run once
    /// this coordinator no longer leads in its term (checked on its own clock, so a starved
    /// election task does not keep a deposed driver going).
    async fn wait(&mut self) -> Result<(), Failure> {
        if self.c.leader.epoch() != Some(self.epoch) {
            return Err(Failure::Stopped);
        }
        let deadline = tokio::time::sleep(POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = self.changes.recv() => match changed {
                    Ok(id) if id == self.job => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Err(Failure::Stopped),
                },
                _ = &mut deadline => break,
            }
        }
        let job = self.c.store.get_job(self.job).await?;
        if job.state.is_final() {
            return Err(Failure::Stopped);
        }
        Ok(())
    }

    /// Appends one of the driver's events.
    async fn event<T: Serialize>(&self, kind: EventKind, payload: &T) -> Result<(), Failure> {
        let payload = nat_schema::encode("optimize event", payload)?;
        self.c
            .store
            .append_event(self.job, kind.as_str(), payload, self.c.clock.now())
            .await?;
        self.c.job_changed(self.job);
        Ok(())
    }

    /// Writes the running result document (summary for the dashboard, progress for a restart).
    async fn save(
        &self,
        spec: &OptimizeJobSpec,
        progress: &DriverProgress,
        driver: &PolicyDriver,
    ) -> Result<(), Failure> {
        let doc = document::document(spec, progress, driver, Vec::new(), None)?;
        self.c
            .store
            .set_job_result(
                self.job,
                nat_schema::encode("optimize result", &doc)?,
                self.c.clock.now(),
            )
            .await?;
        Ok(())
    }

    async fn finish(&self, result: nat_schema::result::OptimizeResult) -> Result<(), Failure> {
        self.c
            .store
            .finish_job(
                self.job,
                JobOutcome::Succeeded {
                    result: nat_schema::encode("optimize result", &result)?,
                },
                self.c.clock.now(),
            )
            .await?;
        self.c.reservations.drop_job(self.job);
        nat_telemetry::record::job_finished(
            nat_telemetry::JobKind::Optimize,
            nat_telemetry::JobState::Succeeded,
        );
        tracing::info!(job = %self.job, "optimize job finished");
        self.c.job_changed(self.job);
        Ok(())
    }
}

/// The final check's outcome per input (what [`document::document`] reports).
type Outcomes = Vec<OptimizeOutcome>;
