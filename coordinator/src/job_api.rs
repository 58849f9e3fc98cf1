//! `nat.v1.JobService`: submit, inspect, watch and cancel jobs.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use nat_proto::v1;
use nat_store::{Completion, JobFilter, NewJob, NewTask, Requirements, TaskState};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::budget::Budget;
use crate::convert::{self, JobSpec, TrainEvalOutcome, TrainEvalPayload};
use crate::error::ApiError;
use crate::state::{check_len, excerpt, parse_id, Coordinator};

mod watch; // watch (h2): WatchJob's streamer

/// Most architectures in one job.
pub const MAX_ARCHITECTURES: usize = 1024;
/// Longest accepted architecture text, in bytes.
pub const MAX_ARCHITECTURE_LEN: usize = 64 * 1024;
/// Longest job name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The JobService implementation.
#[derive(Debug, Clone)]
pub struct JobApi {
    c: Arc<Coordinator>,
}

impl JobApi {
    /// The service over shared state.
    pub fn new(c: Arc<Coordinator>) -> Self {
        JobApi { c }
    }

    async fn submit(&self, r: v1::SubmitJobRequest) -> Result<v1::Job, ApiError> {
        let kind = v1::JobKind::try_from(r.kind)
            .map_err(|_| ApiError::invalid("kind", format!("unknown job kind {}", r.kind)))?;
        match kind {
            v1::JobKind::Evaluate => {}
            v1::JobKind::Optimize => {} // optimize (h8): see crate::optimize::submit below
            v1::JobKind::Unspecified => {
                return Err(ApiError::invalid(
                    "kind",
                    "is required (evaluate or optimize)",
                ))
            }
        }
        check_len("name", &r.name, MAX_NAME_LEN)?;
        if !(nat_store::limits::MIN_PRIORITY..=nat_store::limits::MAX_PRIORITY)
            .contains(&r.priority)
        {
            return Err(ApiError::invalid(
                "priority",
                format!(
                    "must be in {}..={}, got {}",
                    nat_store::limits::MIN_PRIORITY,
                    nat_store::limits::MAX_PRIORITY,
                    r.priority
                ),
            ));
        }
        let dataset_name = r.dataset.trim();
        let dataset = nat_arch::Dataset::from_name(dataset_name).ok_or_else(|| {
            let names: Vec<&str> = nat_arch::Dataset::ALL.iter().map(|d| d.name()).collect();
            ApiError::invalid(
                "dataset",
                format!(
                    "unknown dataset {:?} (expected one of {})",
                    excerpt(dataset_name),
                    names.join(", ")
                ),
            )
        })?;
        let (budget_preset, budget) = Budget::resolve(r.budget.as_ref(), "budget")?;
        // optimize (h8): an optimize job may learn on random architectures instead.
        let random_inputs =
            kind == v1::JobKind::Optimize && r.optimize.as_ref().is_some_and(|o| o.random_inputs);
        if r.architectures.is_empty() && !random_inputs {
            return Err(ApiError::invalid(
                "architectures",
                "at least one architecture is required",
            ));
        }
        if r.architectures.len() > MAX_ARCHITECTURES {
            return Err(ApiError::invalid(
                "architectures",
                format!("at most {MAX_ARCHITECTURES} architectures per job"),
            ));
        }
        let mut genotypes = Vec::with_capacity(r.architectures.len());
        for (i, text) in r.architectures.iter().enumerate() {
            let field = format!("architectures[{i}]");
            check_len(&field, text, MAX_ARCHITECTURE_LEN)?;
            let g =
                nat_arch::parse_any(text).map_err(|e| ApiError::invalid(&field, e.to_string()))?;
            genotypes.push(g);
        }
        let (device, min_mem) = match r.requirements.as_ref() {
            None => (String::new(), 0),
            Some(req) => {
                let kind = v1::DeviceKind::try_from(req.device).map_err(|_| {
                    ApiError::invalid(
                        "requirements.device",
                        format!("unknown device kind {}", req.device),
                    )
                })?;
                let device = match kind {
                    v1::DeviceKind::Cuda => "cuda".to_string(),
                    v1::DeviceKind::Cpu | v1::DeviceKind::Unspecified => String::new(),
                };
                if req.min_device_memory_bytes > 0 && device.is_empty() {
                    return Err(ApiError::invalid(
                        "requirements.min_device_memory_bytes",
                        "only meaningful with device = DEVICE_KIND_CUDA",
                    ));
                }
                (device, req.min_device_memory_bytes)
            }
        };
        let requirements = Requirements {
            needs_gpu: device == "cuda",
            min_gpu_memory_mb: min_mem.div_ceil(1024 * 1024),
            min_cpu_cores: 0,
        };
        let architectures: Vec<String> = genotypes.iter().map(|g| g.to_json()).collect();
        // optimize (h8): the optimize driver creates its own tasks.
        if kind == v1::JobKind::Optimize {
            let base = JobSpec {
                name: r.name.trim().to_string(),
                dataset: dataset.name().to_string(),
                seed: r.seed,
                budget_preset,
                budget,
                architectures,
                device,
                min_device_memory_bytes: min_mem,
            };
            let v = crate::optimize::Validated { base, genotypes };
            return crate::optimize::submit(&self.c, &r, v).await;
        }
        let tasks = genotypes
            .iter()
            .zip(&architectures)
            .enumerate()
            .map(|(i, (g, json))| {
                let payload = TrainEvalPayload {
                    index: i as u32,
                    genotype_json: json.clone(),
                    arch_hash: g.canonical_hash(),
                    dataset: dataset.name().to_string(),
                    budget,
                    seed: r.seed,
                    checkpointed: false,
                    checkpoint_key: String::new(),
                };
                Ok(NewTask {
                    kind: "train_eval".into(),
                    payload: to_json(&payload)?,
                    requirements: requirements.clone(),
                    max_attempts: self.c.config.max_attempts,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let spec = JobSpec {
            name: r.name.trim().to_string(),
            dataset: dataset.name().to_string(),
            seed: r.seed,
            budget_preset,
            budget,
            architectures,
            device,
            min_device_memory_bytes: min_mem,
        };
        let n = tasks.len();
        let job = self
            .c
            .store
            .create_job(
                NewJob {
                    kind: "evaluate".into(),
                    spec: to_json(&spec)?,
                    priority: r.priority,
                    completion: Completion::AllTasks,
                },
                tasks,
                self.c.clock.now(),
            )
            .await?;
        tracing::info!(job = %job.id, tasks = n, dataset = %spec.dataset, "job submitted");
        nat_telemetry::record::job_submitted(nat_telemetry::JobKind::from_kind(&job.kind));
        nat_telemetry::record::tasks_created(nat_telemetry::TaskKind::TrainEval, n as u64);
        self.c.wake_workers(n);
        self.c.job_changed(job.id);
        Ok(convert::job_to_proto(&job, Some(0)))
    }

    async fn get(&self, job_id: &str) -> Result<v1::Job, ApiError> {
        let id = parse_id("job_id", job_id)?;
        let job = self.c.store.get_job(id).await?;
        let running = if job.state.is_final() {
            0
        } else {
            self.c
                .store
                .list_tasks(id, Some(TaskState::Leased), nat_store::limits::MAX_PAGE, 0)
                .await?
                .len() as u64
        };
        Ok(convert::job_to_proto(&job, Some(running)))
    }

    async fn result(&self, job_id: &str) -> Result<v1::GetJobResultResponse, ApiError> {
        let id = parse_id("job_id", job_id)?;
        let job = self.c.store.get_job(id).await?;
        let mut architectures = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = self
                .c
                .store
                .list_tasks(id, None, nat_store::limits::MAX_PAGE, offset)
                .await?;
            let n = page.len();
            architectures.extend(
                page.iter()
                    .filter(|t| t.kind == "train_eval")
                    .filter_map(convert::architecture_result),
            );
            if n < nat_store::limits::MAX_PAGE as usize {
                break;
            }
            offset += n as u64;
        }
        architectures.sort_by_key(|a| a.index);
        // optimize (h8): original vs best, the policy and the rewards it learned from.
        let (optimize, policy, rewards) = if job.kind == crate::optimize::JOB_KIND {
            crate::optimize::result_parts(&job)
        } else {
            (Vec::new(), None, 0)
        };
        Ok(v1::GetJobResultResponse {
            job_id: job.id.to_string(),
            kind: convert::job_kind(&job.kind) as i32,
            state: convert::job_state(job.state) as i32,
            architectures,
            optimize,
            policy,
            rewards,
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(nat_store::StoreError::backend(e)))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let job = self.submit(request.into_inner()).await?;
        Ok(Response::new(v1::SubmitJobResponse { job: Some(job) }))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let job = self.get(&request.into_inner().job_id).await?;
        Ok(Response::new(v1::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
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
                            ..Default::default()
                        })
                        .await
                        .map_err(ApiError::from)?,
                );
            }
            jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
            jobs.truncate(limit as usize);
        }
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs
                .iter()
                .map(|j| convert::job_to_proto(j, None))
                .collect(),
        }))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let r = request.into_inner();
        let id = parse_id("job_id", &r.job_id)?;
        let after = i64::try_from(r.after_sequence)
            .map_err(|_| ApiError::invalid("after_sequence", "too large"))?;
        // Subscribe before the first read so that no change between the two is missed.
        let changes = self.c.subscribe_jobs();
        let job = self.c.store.get_job(id).await.map_err(ApiError::from)?;
        let (tx, rx) = mpsc::channel(64);
        let watcher = watch::Watcher::new(self.c.clone(), &job, after, tx);
        tokio::spawn(watcher.run(changes));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("job_id", &r.job_id)?;
        check_len("reason", &r.reason, 1000)?;
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
        tracing::info!(job = %id, reason = %r.reason, "job cancelled");
        nat_telemetry::record::job_finished(
            nat_telemetry::JobKind::from_kind(&job.kind),
            nat_telemetry::JobState::Cancelled,
        );
        self.c.job_changed(id);
        Ok(Response::new(v1::CancelJobResponse {
            job: Some(convert::job_to_proto(&job, None)),
        }))
    }

    async fn get_job_result(
        &self,
        request: Request<v1::GetJobResultRequest>,
    ) -> Result<Response<v1::GetJobResultResponse>, Status> {
        Ok(Response::new(
            self.result(&request.into_inner().job_id).await?,
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
                capabilities: Some(crate::worker_api::capabilities_to_proto(&w.capabilities)),
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

/// `tasks.result` of a `train_eval` task as the coordinator writes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredResult {
    /// Position of the architecture in the job.
    pub index: u32,
    /// The worker that reported it.
    #[serde(default)]
    pub worker_id: String,
    /// The measurements.
    #[serde(flatten)]
    pub outcome: TrainEvalOutcome,
}
