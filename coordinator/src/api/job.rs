//! `nat.v1.JobService`: submit, inspect, watch and cancel jobs.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use nat_proto::v1;
use nat_schema::TaskKind;
use nat_store::{JobFilter, TaskState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::convert;
use crate::error::ApiError;
use crate::jobs::{Registry, Submission, Translator};
use crate::state::{check_len, parse_id, Coordinator};

/// The JobService implementation: converts wire types and dispatches to the job kinds.
#[derive(Debug, Clone)]
pub struct JobApi {
    c: Arc<Coordinator>,
    kinds: Arc<Registry>,
}

impl JobApi {
    /// The service over shared state, serving the job kinds of `kinds`.
    pub fn new(c: Arc<Coordinator>, kinds: Arc<Registry>) -> Self {
        JobApi { c, kinds }
    }

    /// Reads a job the caller may read (`write`: cancel).
    async fn job_for(
        &self,
        principal: &Principal,
        id: nat_store::JobId,
        write: bool,
    ) -> Result<nat_store::Job, ApiError> {
        let job = self.c.store.get_job(id).await?;
        principal.check_job(
            &job.id.to_string(),
            job.owner.as_deref(),
            write,
            self.c.config.auth.users_read_all,
        )?;
        Ok(job)
    }

    async fn submit(
        &self,
        principal: &Principal,
        r: v1::SubmitJobRequest,
    ) -> Result<v1::Job, ApiError> {
        let wire_kind = v1::JobKind::try_from(r.kind)
            .map_err(|_| ApiError::invalid("kind", format!("unknown job kind {}", r.kind)))?;
        let kind = convert::schema_job_kind(wire_kind)
            .and_then(|k| self.kinds.get(k))
            .ok_or_else(|| ApiError::invalid("kind", "is required (evaluate or optimize)"))?;
        // A user dataset's shape may be learned from the registered workers.
        let workers = if nat_arch::Dataset::from_name(r.dataset.trim()).is_some() {
            Vec::new()
        } else {
            self.c.store.list_workers().await?
        };
        let mut submission = Submission::validate(&r, kind.allows_no_architectures(&r), &workers)?;
        submission.owner = principal.owner().map(str::to_string);
        let job = kind.submit(&self.c, &r, submission).await?;
        nat_telemetry::record::job_submitted(nat_telemetry::JobKind::from_kind(&job.kind));
        self.c.job_changed(job.id);
        convert::job_to_proto(&job, Some(0))
    }

    async fn get(&self, principal: &Principal, job_id: &str) -> Result<v1::Job, ApiError> {
        let id = parse_id("job_id", job_id)?;
        let job = self.job_for(principal, id, false).await?;
        let running = if job.state.is_final() {
            0
        } else {
            self.c
                .store
                .list_tasks(id, Some(TaskState::Leased), nat_store::limits::MAX_PAGE, 0)
                .await?
                .len() as u64
        };
        let mut out = convert::job_to_proto(&job, Some(running))?;
        if is_waiting(&out, true) {
            let workers = self.c.store.list_workers().await?;
            out.waiting_reason = self.waiting_reason(&out, &workers);
        }
        Ok(out)
    }

    /// Why the waiting tasks of `job` are not leased ("" when a worker may run them).
    fn waiting_reason(&self, job: &v1::Job, workers: &[nat_store::Worker]) -> String {
        crate::jobs::dataset::waiting_reason(
            &job.dataset,
            workers,
            self.c.clock.now(),
            self.c.config.lease_duration,
        )
        .unwrap_or_default()
    }

    async fn result(
        &self,
        principal: &Principal,
        job_id: &str,
    ) -> Result<v1::GetJobResultResponse, ApiError> {
        let id = parse_id("job_id", job_id)?;
        let job = self.job_for(principal, id, false).await?;
        let mut architectures = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = self
                .c
                .store
                .list_tasks(id, None, nat_store::limits::MAX_PAGE, offset)
                .await?;
            let n = page.len();
            for task in &page {
                if task.kind == TaskKind::TrainEval.as_str() {
                    architectures.push(convert::architecture_result(task)?);
                }
            }
            if n < nat_store::limits::MAX_PAGE as usize {
                break;
            }
            offset += n as u64;
        }
        architectures.sort_by_key(|a| a.index);
        let mut out = v1::GetJobResultResponse {
            job_id: job.id.to_string(),
            kind: convert::job_kind(&job.kind) as i32,
            state: convert::job_state(job.state) as i32,
            architectures,
            ..Default::default()
        };
        self.kinds.of(&job)?.result(&job, &mut out)?;
        Ok(out)
    }
}

/// Whether `job` has tasks waiting for a worker: not finished, with tasks neither finished nor
/// (when `running_known`) leased.
fn is_waiting(job: &v1::Job, running_known: bool) -> bool {
    let active = matches!(
        v1::JobState::try_from(job.state),
        Ok(v1::JobState::Queued | v1::JobState::Running)
    );
    let waiting = if running_known {
        job.tasks_pending > job.tasks_running
    } else {
        job.tasks_pending > 0
    };
    active && waiting
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let principal = Principal::of(&request);
        let job = self.submit(&principal, request.into_inner()).await?;
        Ok(Response::new(v1::SubmitJobResponse { job: Some(job) }))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let principal = Principal::of(&request);
        let job = self.get(&principal, &request.into_inner().job_id).await?;
        Ok(Response::new(v1::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let owner = Principal::of(&request).list_owner(self.c.config.auth.users_read_all);
        let r = request.into_inner();
        if r.limit > 1000 {
            return Err(ApiError::invalid("limit", "must be at most 1000").into());
        }
        let limit = if r.limit == 0 { 100 } else { r.limit };
        let mut states = Vec::new();
        for (i, s) in r.states.iter().enumerate() {
            let state = v1::JobState::try_from(*s)
                .ok()
                .and_then(convert::store_job_state)
                .ok_or_else(|| {
                    ApiError::invalid(format!("states[{i}]"), format!("unknown state {s}"))
                })?;
            states.push(state);
        }
        let mut jobs = Vec::new();
        if states.is_empty() {
            jobs = self
                .c
                .store
                .list_jobs(JobFilter {
                    limit,
                    owner: owner.clone(),
                    ..Default::default()
                })
                .await
                .map_err(ApiError::from)?;
        } else {
            for state in states {
                jobs.extend(
                    self.c
                        .store
                        .list_jobs(JobFilter {
                            state: Some(state),
                            limit,
                            owner: owner.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(ApiError::from)?,
                );
            }
            jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
            jobs.truncate(limit as usize);
        }
        let mut jobs: Vec<v1::Job> = jobs
            .iter()
            .map(|j| convert::job_to_proto(j, None))
            .collect::<Result<_, _>>()?;
        // One read of the workers for the whole page, only when a job waits.
        if jobs.iter().any(|j| is_waiting(j, false)) {
            let workers = self.c.store.list_workers().await.map_err(ApiError::from)?;
            for job in jobs.iter_mut().filter(|j| is_waiting(j, false)) {
                job.waiting_reason = self.waiting_reason(job, &workers);
            }
        }
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        let id = parse_id("job_id", &r.job_id)?;
        let after = i64::try_from(r.after_sequence)
            .map_err(|_| ApiError::invalid("after_sequence", "too large"))?;
        // Subscribe before the first read so that no change between the two is missed.
        let changes = self.c.subscribe_jobs();
        let job = self.job_for(&principal, id, false).await?;
        let translator = Translator::new(self.kinds.of(&job)?.events(&job)?);
        let (tx, rx) = mpsc::channel(64);
        let watcher = super::watch::Watcher::new(self.c.clone(), job.id, translator, after, tx);
        tokio::spawn(watcher.run(changes));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        let id = parse_id("job_id", &r.job_id)?;
        check_len("reason", &r.reason, 1000)?;
        self.job_for(&principal, id, true).await?;
        // Reserved leases already handed out must reach the store as their workers' first:
        // the cancel then tells those workers to stop instead of withdrawing the tasks.
        if !self
            .c
            .handouts
            .flush(std::time::Duration::from_secs(2))
            .await
        {
            tracing::warn!(job = %id, "hand-outs not all written before the cancel");
        }
        let job = self
            .c
            .store
            .cancel_job(id, self.c.clock.now())
            .await
            .map_err(ApiError::from)?;
        // The store cancelled its reservations with its ready tasks.
        self.c.reservations.drop_job(id);
        tracing::info!(job = %id, reason = %r.reason, by = principal.owner().unwrap_or("-"), "job cancelled");
        nat_telemetry::record::job_finished(
            nat_telemetry::JobKind::from_kind(&job.kind),
            nat_telemetry::JobState::Cancelled,
        );
        self.c.job_changed(id);
        Ok(Response::new(v1::CancelJobResponse {
            job: Some(convert::job_to_proto(&job, None)?),
        }))
    }

    async fn get_job_result(
        &self,
        request: Request<v1::GetJobResultRequest>,
    ) -> Result<Response<v1::GetJobResultResponse>, Status> {
        let principal = Principal::of(&request);
        Ok(Response::new(
            self.result(&principal, &request.into_inner().job_id)
                .await?,
        ))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let workers = self.c.store.list_workers().await.map_err(ApiError::from)?;
        let now = self.c.clock.now();
        let lease = chrono::Duration::from_std(self.c.config.lease_duration)
            .unwrap_or(chrono::Duration::MAX);
        let workers = workers
            .into_iter()
            .map(|w| v1::WorkerInfo {
                worker_id: w.id.to_string(),
                name: w.name.clone(),
                capabilities: Some(convert::capabilities_to_proto(&w.capabilities)),
                registered_at_unix_ms: convert::unix_ms(w.registered_at),
                last_seen_unix_ms: convert::unix_ms(w.last_heartbeat_at),
                tasks_in_hand: w.tasks_in_hand,
                alive: w.state == nat_store::WorkerState::Active
                    && now.signed_duration_since(w.last_heartbeat_at) <= lease,
            })
            .collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }
}
