//! `nat.v1.WorkerService`: registration, heartbeats, leases and reports.

use std::sync::Arc;
use std::time::Duration;

use nat_proto::v1;
use nat_schema::{
    EvalSplit, SupernetPayload, SupernetResult, TaskKind, TrainEvalOutcome, TrainEvalPayload,
    TrainEvalResult,
};
use nat_store::{
    HeldLease, Lease, LeaseAssignment, LeaseRequest, Outcome, ReportAck, ReportItem, RewardKey,
    RewardObservation, TaskId, TaskState, WorkerId,
};
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::batch::Batcher;
use crate::convert::{self, decode, encode};
use crate::error::ApiError;
use crate::reserve::Profile;
use crate::state::{check_len, parse_id, Coordinator};

use super::validate::{
    capabilities_from_proto, dataset_infos_from_proto, datasets_from_proto, lease_expiry,
    slot_capabilities, token,
};

/// Most tasks listed in one heartbeat.
const MAX_HELD: usize = 256;
/// Longest failure reason, in bytes.
const MAX_REASON_LEN: usize = 4000;

/// The WorkerService implementation.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    c: Arc<Coordinator>,
    /// Group commit of leases and reports, started on first use (inside the runtime).
    batcher: Arc<std::sync::OnceLock<Batcher>>,
}

impl WorkerApi {
    /// The service over shared state.
    pub fn new(c: Arc<Coordinator>) -> Self {
        WorkerApi {
            c,
            batcher: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// The batcher; must be called from inside the Tokio runtime (RPC handlers are).
    fn batcher(&self) -> &Batcher {
        self.batcher.get_or_init(|| {
            Batcher::start(
                self.c.store.clone(),
                self.c.clock.clone(),
                self.c.config.lease_duration,
                self.c.reservations.clone(),
                self.c.handouts.clone(),
                {
                    let c = self.c.clone();
                    Arc::new(move |n| c.wake_for_reservations(n))
                },
            )
        })
    }

    /// Refuses a call that names a worker registered by another credential (a worker speaks
    /// only for itself; see [`crate::auth::WorkerBindings`]).
    async fn check_worker(&self, worker: WorkerId, principal: &Principal) -> Result<(), ApiError> {
        self.c
            .bindings
            .check(&*self.c.store, worker, principal)
            .await
    }

    fn lease_to_task(&self, lease: &Lease) -> Result<v1::Task, ApiError> {
        let kind: TaskKind = lease
            .task
            .kind
            .parse()
            .map_err(|e| ApiError::Internal(nat_store::StoreError::backend(e)))?;
        let payload = match kind {
            TaskKind::TrainEval => {
                // Deserialized from the borrowed JSON: no copy of the payload tree (the hot
                // path; `decode` would name the field of an error but copies nothing less).
                let p = TrainEvalPayload::deserialize(&lease.task.payload).map_err(|e| {
                    ApiError::from(nat_schema::DecodeError {
                        document: "train_eval payload",
                        field: ".".into(),
                        reason: e.to_string(),
                    })
                })?;
                let task = p.to_proto();
                self.c.remember_lease(lease.task.id, Arc::new(p));
                v1::task::Payload::TrainEval(task)
            }
            TaskKind::Supernet => {
                let p: SupernetPayload = decode("supernet payload", &lease.task.payload)?;
                v1::task::Payload::Supernet(p.to_proto())
            }
        };
        let payload = Some(payload);
        Ok(v1::Task {
            task_id: lease.task.id.to_string(),
            job_id: lease.task.job_id.to_string(),
            lease_token: lease.token as u64,
            attempt: lease.attempt,
            lease_expires_at_unix_ms: convert::unix_ms(lease.expires_at),
            payload,
        })
    }

    async fn lease(
        &self,
        r: v1::LeaseTaskRequest,
        principal: &Principal,
    ) -> Result<Option<v1::Task>, ApiError> {
        let worker = parse_id("worker_id", &r.worker_id)?;
        self.check_worker(worker, principal).await?;
        if let Some(d) = &r.device {
            v1::DeviceKind::try_from(d.kind).map_err(|_| {
                ApiError::invalid("device.kind", format!("unknown device kind {}", d.kind))
            })?;
        }
        let caps = slot_capabilities(
            &self.c.worker_capabilities(worker).await?,
            r.device.as_ref(),
        );
        let profile = Profile::of(&caps, &caps.datasets);
        let wait = Duration::from_millis(u64::from(r.wait_ms)).min(self.c.config.max_lease_wait);
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = self.c.shutdown_signal();
        loop {
            // Register interest before looking, so a wake-up between the look and the wait is
            // not lost.
            let notified = self.c.work().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A reservation of this slot's profile if there is one (answered from memory; the
            // hand-out is recorded in the background), else a claim batched with concurrent
            // LeaseTask calls: one store transaction for all of them.
            let (reserved, refill) = self.c.reservations.take(&profile);
            if refill {
                self.batcher().refill(profile.clone());
            }
            let lease = match reserved {
                Some(mut lease) => {
                    lease.expires_at =
                        lease_expiry(self.c.clock.now(), self.c.config.lease_duration);
                    self.batcher().assign(LeaseAssignment {
                        task_id: lease.task.id,
                        token: lease.token,
                        worker,
                        expires_at: lease.expires_at,
                    });
                    Some(lease)
                }
                None => {
                    self.batcher()
                        .lease(LeaseRequest {
                            worker: Some(worker),
                            capabilities: caps.clone(),
                            datasets: caps.datasets.clone(),
                        })
                        .await?
                }
            };
            if let Some(lease) = lease {
                tracing::debug!(task = %lease.task.id, %worker, attempt = lease.attempt, "task leased");
                nat_telemetry::record::task_leased(nat_telemetry::TaskKind::from_kind(
                    &lease.task.kind,
                ));
                if lease.attempt == 1 && lease.task.attempt == 1 {
                    // First lease may move the job to running: let watchers refresh.
                    self.c.job_changed(lease.task.job_id);
                }
                return self.lease_to_task(&lease).map(Some);
            }
            if *shutdown.borrow() || tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = shutdown.changed() => return Ok(None),
            }
        }
    }

    /// Refuses a lease that was handed out from the reservations to another worker and is not
    /// yet recorded in the store (the store would take it from anyone holding the token).
    fn check_holder(&self, task: TaskId, token: i64, worker: WorkerId) -> Result<(), ApiError> {
        match self.c.handouts.holder(task, token) {
            Some(holder) if holder != worker => Err(ApiError::FailedPrecondition(format!(
                "lease token {token} of task {task} is stale or held by another worker"
            ))),
            _ => Ok(()),
        }
    }

    /// Applies a report; the answer says whether it was a duplicate and whether its outcome
    /// was discarded (the task's job had ended: the task ends cancelled).
    async fn report(
        &self,
        r: v1::ReportResultRequest,
        principal: &Principal,
    ) -> Result<v1::ReportResultResponse, ApiError> {
        let worker: WorkerId = parse_id("worker_id", &r.worker_id)?;
        self.check_worker(worker, principal).await?;
        let task_id: TaskId = parse_id("task_id", &r.task_id)?;
        let lease_token = token("lease_token", r.lease_token)?;
        self.check_holder(task_id, lease_token, worker)?;
        // For metrics: the task's kind as far as known without a read, and the accuracy.
        let mut kind = if self.c.leased_payload(task_id).is_some() {
            nat_telemetry::TaskKind::TrainEval
        } else {
            nat_telemetry::TaskKind::Other
        };
        let mut accuracy = None;
        let outcome = match r.outcome {
            None => return Err(ApiError::invalid("outcome", "is required")),
            Some(v1::report_result_request::Outcome::Failure(f)) => {
                check_len("failure.reason", &f.reason, MAX_REASON_LEN)?;
                let reason = if f.reason.trim().is_empty() {
                    "no reason given".to_string()
                } else {
                    f.reason.trim().to_string()
                };
                Outcome::Failed {
                    reason,
                    retryable: f.retryable,
                }
            }
            Some(v1::report_result_request::Outcome::TrainEval(res)) => {
                let measured = TrainEvalOutcome::from_proto(&res).map_err(ApiError::from)?;
                kind = nat_telemetry::TaskKind::TrainEval;
                accuracy = Some(measured.accuracy);
                let payload = match self.c.leased_payload(task_id) {
                    Some(p) => p,
                    None => {
                        let task = self.c.store.get_task(task_id).await?;
                        if task.kind != TaskKind::TrainEval.as_str() {
                            return Err(ApiError::FailedPrecondition(format!(
                                "task {task_id} is a {} task; a train_eval result does not fit it",
                                task.kind
                            )));
                        }
                        Arc::new(decode::<TrainEvalPayload>(
                            "train_eval payload",
                            &task.payload,
                        )?)
                    }
                };
                let stored = TrainEvalResult {
                    index: payload.index,
                    worker_id: worker.to_string(),
                    outcome: measured,
                };
                // Only validation-split measurements feed the reward-estimate cache (keyed
                // by architecture, dataset and budget): a final evaluation's test-split
                // accuracy is never reused for selection, nor selection's for a verdict.
                let rewards = match payload.split {
                    EvalSplit::Validation => vec![RewardObservation {
                        key: RewardKey {
                            arch_hash: payload.arch_hash.clone(),
                            dataset: payload.dataset.clone(),
                            budget: payload.budget.key(),
                        },
                        value: measured.accuracy,
                    }],
                    EvalSplit::Test => Vec::new(),
                };
                Outcome::Succeeded {
                    result: encode("train_eval result", &stored)?,
                    rewards,
                    sample_rewards: Vec::new(),
                }
            }
            Some(v1::report_result_request::Outcome::Supernet(res)) => {
                kind = nat_telemetry::TaskKind::Supernet;
                let task = self.c.store.get_task(task_id).await?;
                if task.kind != TaskKind::Supernet.as_str() {
                    return Err(ApiError::FailedPrecondition(format!(
                        "task {task_id} is a {} task; a supernet result does not fit it",
                        task.kind
                    )));
                }
                let payload: SupernetPayload = decode("supernet payload", &task.payload)?;
                // Sharded rounds: the shard's weights were uploaded under this lease first (a
                // derive screening trains nothing and uploads nothing).
                let weights = if payload.is_screening() {
                    None
                } else if res.weights_bytes == 0 && res.weights_sha256.is_empty() {
                    return Err(ApiError::invalid(
                        "supernet.weights_sha256",
                        "a supernet shard reports the weights it uploaded with PutSupernet",
                    ));
                } else {
                    Some(
                        super::weights::reported_upload(
                            &self.c,
                            &task,
                            &payload,
                            lease_token,
                            &res,
                        )
                        .await?,
                    )
                };
                let result =
                    SupernetResult::from_proto(&res, &payload, worker.to_string(), weights)?;
                Outcome::Succeeded {
                    result: encode("supernet result", &result)?,
                    rewards: Vec::new(),
                    sample_rewards: Vec::new(),
                }
            }
        };
        // Batched with concurrent ReportResult calls: one store transaction for all of them,
        // each report answered on its own (a stale token fails only its own report).
        let ack = self
            .batcher()
            .report(ReportItem {
                task: task_id,
                token: lease_token,
                worker,
                outcome,
            })
            .await?;
        self.c.forget_lease(task_id);
        // The report recorded the worker: a pending hand-out write is not needed any more.
        self.c.handouts.reported(task_id, lease_token);
        match ack {
            ReportAck::Accepted {
                job_id,
                task_state,
                job_state,
            } => {
                tracing::debug!(task = %task_id, %worker, state = %task_state, "result recorded");
                record_report_metrics(kind, accuracy, task_state, job_state);
                if task_state == TaskState::Ready {
                    self.c.wake_workers(1);
                }
                self.c.job_changed(job_id);
                Ok(v1::ReportResultResponse {
                    duplicate: false,
                    // A report ends its task cancelled only when the job had ended.
                    discarded: task_state == TaskState::Cancelled,
                })
            }
            ReportAck::Duplicate => {
                // Rare (a retry after a lost answer): read the task to answer as the first time.
                let task = self.c.store.get_task(task_id).await?;
                Ok(v1::ReportResultResponse {
                    duplicate: true,
                    discarded: convert::report_discarded(&task),
                })
            }
        }
    }
}

/// Counters of an accepted report.
fn record_report_metrics(
    kind: nat_telemetry::TaskKind,
    accuracy: Option<f64>,
    task_state: TaskState,
    job_state: nat_store::JobState,
) {
    use nat_telemetry::{record, JobKind, JobState, RetryReason, TaskOutcome};
    match task_state {
        TaskState::Done => {
            record::task_finished(kind, TaskOutcome::Succeeded);
            if let Some(a) = accuracy {
                record::evaluated_accuracy(a);
            }
        }
        TaskState::Failed => record::task_finished(kind, TaskOutcome::Failed),
        TaskState::Cancelled => record::task_finished(kind, TaskOutcome::Cancelled),
        TaskState::Ready => record::task_retried(kind, RetryReason::WorkerFailure),
        TaskState::Leased => {}
    }
    let state = match job_state {
        nat_store::JobState::Succeeded => Some(JobState::Succeeded),
        nat_store::JobState::Failed => Some(JobState::Failed),
        // A report never cancels a job (CancelJob records that); reports on a cancelled job
        // only end its leftover tasks.
        _ => None,
    };
    if let Some(state) = state {
        // Every job this coordinator creates so far is an evaluate job.
        record::job_finished(JobKind::Evaluate, state);
    }
}

#[tonic::async_trait]
impl v1::worker_service_server::WorkerService for WorkerApi {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let binding = Principal::of(&request).worker_binding();
        let r = request.into_inner();
        check_len("name", &r.name, 200)?;
        let mut caps = capabilities_from_proto(r.capabilities.as_ref())?;
        caps.datasets = datasets_from_proto(r.capabilities.as_ref())?;
        caps.dataset_infos = dataset_infos_from_proto(r.capabilities.as_ref(), &caps.datasets)?;
        let name = if r.name.trim().is_empty() {
            r.capabilities
                .as_ref()
                .map(|c| c.hostname.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "worker".into())
        } else {
            r.name.trim().to_string()
        };
        let worker = self
            .c
            .store
            .register_worker_as(&name, caps.clone(), binding.as_deref(), self.c.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(worker = %worker.id, name = %worker.name, slots = caps.slots, gpus = caps.gpus, credential = binding.as_deref().unwrap_or("none"), "worker registered");
        self.c.bindings.remember(worker.id, binding);
        self.c.remember_worker(worker.id, caps);
        nat_telemetry::record::worker_registered();
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Ok(Response::new(v1::RegisterWorkerResponse {
            worker_id: worker.id.to_string(),
            lease_duration_ms: ms(self.c.config.lease_duration),
            heartbeat_interval_ms: ms(self.c.config.heartbeat_interval),
            max_lease_wait_ms: ms(self.c.config.max_lease_wait),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        span_ids(&r.worker_id, "", "");
        let worker = parse_id("worker_id", &r.worker_id)?;
        self.check_worker(worker, &principal).await?;
        if r.tasks.len() > MAX_HELD {
            return Err(ApiError::invalid("tasks", format!("at most {MAX_HELD} tasks")).into());
        }
        let mut held = Vec::with_capacity(r.tasks.len());
        for (i, t) in r.tasks.iter().enumerate() {
            let lease = HeldLease {
                task_id: parse_id(&format!("tasks[{i}].task_id"), &t.task_id)?,
                token: token(&format!("tasks[{i}].lease_token"), t.lease_token)?,
            };
            // A lease handed out to another worker is not extended (nor recorded for this one).
            if self
                .check_holder(lease.task_id, lease.token, worker)
                .is_ok()
            {
                held.push(lease);
            }
        }
        let ack = self
            .c
            .store
            .heartbeat(
                worker,
                &held,
                self.c.clock.now(),
                self.c.config.lease_duration,
            )
            .await
            .map_err(ApiError::from)?;
        let expires = convert::unix_ms(ack.lease_expires_at);
        let extended = ack
            .extended
            .iter()
            .filter_map(|id| held.iter().find(|h| h.task_id == *id))
            .map(|h| v1::LeaseExtension {
                task_id: h.task_id.to_string(),
                lease_token: h.token as u64,
                lease_expires_at_unix_ms: expires,
            })
            .collect();
        Ok(Response::new(v1::HeartbeatResponse {
            extended,
            stop_task_ids: ack.stop.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        use nat_telemetry::{record, LeaseResult};
        let t0 = std::time::Instant::now();
        let principal = Principal::of(&request);
        let r = request.into_inner();
        span_ids(&r.worker_id, "", "");
        let result = self.lease(r, &principal).await;
        if let Ok(Some(task)) = &result {
            span_ids("", &task.task_id, &task.job_id);
        }
        let outcome = match &result {
            Ok(Some(_)) => LeaseResult::Leased,
            Ok(None) => LeaseResult::Empty,
            Err(_) => LeaseResult::Error,
        };
        record::lease_task_rpc(outcome, t0.elapsed());
        Ok(Response::new(v1::LeaseTaskResponse { task: result? }))
    }

    async fn report_progress(
        &self,
        request: Request<v1::ReportProgressRequest>,
    ) -> Result<Response<v1::ReportProgressResponse>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        span_ids(&r.worker_id, &r.task_id, "");
        let worker = parse_id("worker_id", &r.worker_id)?;
        self.check_worker(worker, &principal).await?;
        let task_id = parse_id("task_id", &r.task_id)?;
        let lease_token = token("lease_token", r.lease_token)?;
        check_len("message", &r.message, 1000)?;
        self.check_holder(task_id, lease_token, worker)?;
        for (name, v, hi) in [
            ("fraction", r.fraction, 1.0),
            ("train_accuracy", r.train_accuracy, 1.0),
            ("train_loss", r.train_loss, 1e12),
        ] {
            if !(v.is_finite() && (0.0..=hi).contains(&v)) {
                return Err(ApiError::invalid(
                    name,
                    format!("must be a finite number in [0, {hi}], got {v}"),
                )
                .into());
            }
        }
        let task = self
            .c
            .store
            .get_task(task_id)
            .await
            .map_err(ApiError::from)?;
        let progress = encode(
            "task progress",
            &nat_schema::event::Progress {
                epoch: r.epoch,
                epochs: r.epochs,
                step: r.step,
                message: r.message.clone(),
                train_loss: r.train_loss,
                train_accuracy: r.train_accuracy,
                fraction: r.fraction,
            },
        )?;
        let now = self.c.clock.now();
        // A lost lease (expired and re-leased, or the task ended) is FAILED_PRECONDITION.
        self.c
            .store
            .report_progress(task_id, lease_token, worker, progress, now)
            .await
            .map_err(ApiError::from)?;
        // Progress counts as a heartbeat for this lease.
        let held = [HeldLease {
            task_id,
            token: lease_token,
        }];
        let ack = self
            .c
            .store
            .heartbeat(worker, &held, now, self.c.config.lease_duration)
            .await
            .map_err(ApiError::from)?;
        self.c.job_changed(task.job_id);
        Ok(Response::new(v1::ReportProgressResponse {
            stop: ack.stop.contains(&task_id),
            lease_expires_at_unix_ms: if ack.extended.contains(&task_id) {
                convert::unix_ms(ack.lease_expires_at)
            } else {
                0
            },
        }))
    }

    type FetchSupernetStream = super::weights::ChunkStream;

    async fn fetch_supernet(
        &self,
        request: Request<v1::FetchSupernetRequest>,
    ) -> Result<Response<Self::FetchSupernetStream>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        span_ids(&r.worker_id, &r.task_id, "");
        let worker = parse_id("worker_id", &r.worker_id)?;
        self.check_worker(worker, &principal).await?;
        Ok(Response::new(
            super::weights::fetch(self.c.clone(), r, worker).await?,
        ))
    }

    async fn put_supernet(
        &self,
        request: Request<tonic::Streaming<v1::PutSupernetRequest>>,
    ) -> Result<Response<v1::PutSupernetResponse>, Status> {
        let principal = Principal::of(&request);
        let stream = request.into_inner();
        let this = self.clone();
        let answer = super::weights::put(self.c.clone(), stream, async move |worker| {
            this.check_worker(worker, &principal).await
        })
        .await?;
        Ok(Response::new(answer))
    }

    async fn report_result(
        &self,
        request: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        use nat_telemetry::{record, ReportOutcome};
        let t0 = std::time::Instant::now();
        let principal = Principal::of(&request);
        let r = request.into_inner();
        span_ids(&r.worker_id, &r.task_id, "");
        let result = self.report(r, &principal).await;
        let outcome = match &result {
            Ok(r) if r.duplicate => ReportOutcome::Duplicate,
            Ok(_) => ReportOutcome::Accepted,
            Err(ApiError::FailedPrecondition(_) | ApiError::PermissionDenied(_)) => {
                ReportOutcome::Rejected
            }
            Err(_) => ReportOutcome::Error,
        };
        record::report_result_rpc(outcome, t0.elapsed());
        Ok(Response::new(result?))
    }
}

/// Records the ids a request carries on the current RPC span (declared empty by the server's
/// `trace_fn`), so log lines inside the request carry them. Empty strings are skipped.
fn span_ids(worker_id: &str, task_id: &str, job_id: &str) {
    let span = tracing::Span::current();
    for (field, value) in [
        ("worker_id", worker_id),
        ("task_id", task_id),
        ("job_id", job_id),
    ] {
        if !value.is_empty() {
            span.record(field, value);
        }
    }
}
