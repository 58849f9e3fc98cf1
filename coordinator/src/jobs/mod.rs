//! Job kinds. Each kind is a type implementing [`JobType`]: it validates its part of a
//! submission into a typed spec, creates the job with its first tasks, drives it (if it has
//! phases), builds its result, and translates its events for `WatchJob`. The gRPC handlers
//! (`crate::api`) only convert wire types and dispatch through [`Registry`].
//!
//! - [`evaluate`]: one `train_eval` task per given architecture; the store finishes the job
//!   when the last task ends.
//! - [`optimize`]: NAT — learn a policy, derive, final check; driven by one task per job.
//! - [`dataset`]: a job's dataset name and shape (built in, given, or learned from the
//!   workers), and why its tasks wait for a worker.
//!
//! A new kind is a module here plus one line in [`Registry::standard`] (and its name in
//! `nat_schema::JobKind` and `nat.v1.JobKind`).

pub mod dataset;
pub mod evaluate;
pub mod optimize;
mod submission;
pub mod watch;

use std::sync::Arc;

use nat_proto::v1;
use nat_schema::JobKind;
use nat_store::{Job, JobFilter, JobState, StoreError};

use crate::error::ApiError;
use crate::state::Coordinator;

pub use submission::{Submission, MAX_ARCHITECTURES, MAX_ARCHITECTURE_LEN, MAX_NAME_LEN};
pub use watch::{KindEvents, Translator};

/// What a job kind does. Object safe: the registry holds `Arc<dyn JobType>`.
#[tonic::async_trait]
pub trait JobType: Send + Sync + 'static {
    /// The kind this type implements.
    fn kind(&self) -> JobKind;

    /// Whether a submission of this kind may come without architectures.
    fn allows_no_architectures(&self, _request: &v1::SubmitJobRequest) -> bool {
        false
    }

    /// Validates the kind's part of `request` (the shared part is in `submission`), creates
    /// the job with its first tasks, and starts driving it. Bad input is `INVALID_ARGUMENT`
    /// naming the field, and nothing is written.
    async fn submit(
        &self,
        c: &Arc<Coordinator>,
        request: &v1::SubmitJobRequest,
        submission: Submission,
    ) -> Result<Job, ApiError>;

    /// Starts driving a job of this kind that is not final (after a coordinator restart or a
    /// takeover), unless this coordinator does not lead or already drives it. Returns whether
    /// a driver started. Kinds whose jobs finish with their tasks have nothing to drive.
    fn resume(&self, _c: &Arc<Coordinator>, _job: &Job) -> bool {
        false
    }

    /// Whether jobs of this kind have a driver ([`JobType::resume`] does something).
    fn has_driver(&self) -> bool {
        false
    }

    /// Fills in the kind's part of `GetJobResult` (the per-task architectures are shared and
    /// already in `out`).
    fn result(&self, job: &Job, out: &mut v1::GetJobResultResponse) -> Result<(), ApiError>;

    /// The kind's part of the `WatchJob` translation of a job's events.
    fn events(&self, job: &Job) -> Result<Box<dyn KindEvents>, ApiError>;
}

/// The job kinds this coordinator serves.
pub struct Registry {
    kinds: Vec<Arc<dyn JobType>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.kinds.iter().map(|k| k.kind()))
            .finish()
    }
}

impl Registry {
    /// Every kind of this build.
    pub fn standard() -> Registry {
        Registry {
            kinds: vec![Arc::new(evaluate::Evaluate), Arc::new(optimize::Optimize)],
        }
    }

    /// The type of `kind`.
    pub fn get(&self, kind: JobKind) -> Option<&Arc<dyn JobType>> {
        self.kinds.iter().find(|k| k.kind() == kind)
    }

    /// The type of a stored job, `FAILED_PRECONDITION` for a kind this build does not serve.
    pub fn of(&self, job: &Job) -> Result<&Arc<dyn JobType>, ApiError> {
        job.kind
            .parse::<JobKind>()
            .ok()
            .and_then(|k| self.get(k))
            .ok_or_else(|| {
                ApiError::FailedPrecondition(format!(
                    "job {} is of kind {:?}, which this coordinator does not serve",
                    job.id, job.kind
                ))
            })
    }

    /// Resumes every unfinished job of every kind that has no driver in this coordinator's
    /// term (at election, then periodically). Returns how many drivers started.
    pub async fn resume_all(&self, c: &Arc<Coordinator>) -> Result<usize, StoreError> {
        let mut n = 0;
        for kind in self.kinds.iter().filter(|k| k.has_driver()) {
            for state in [JobState::Queued, JobState::Running] {
                let mut offset = 0u64;
                loop {
                    let page = c
                        .store
                        .list_jobs(JobFilter {
                            state: Some(state),
                            kind: Some(kind.kind().as_str().into()),
                            limit: nat_store::limits::MAX_PAGE,
                            offset,
                            owner: None,
                        })
                        .await?;
                    for job in &page {
                        n += usize::from(kind.resume(c, job));
                    }
                    if page.len() < nat_store::limits::MAX_PAGE as usize {
                        break;
                    }
                    offset += page.len() as u64;
                }
            }
        }
        Ok(n)
    }
}
