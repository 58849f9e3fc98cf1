//! The real `nat-worker` binary against a scripted coordinator: a real tonic `WorkerService`
//! over loopback gRPC, implemented in this test, that hands out chosen tasks and records every
//! request. This pins the worker's side of the protocol independently of the coordinator:
//! bad payloads fail as tasks and the worker keeps serving, draining on SIGTERM, handing back on
//! drain timeout, re-registering when the coordinator forgets the worker, and stopping a task the
//! heartbeat names.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nat_proto::v1;
use nat_proto::v1::report_result_request::Outcome;
use nat_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use common::{small_genotype_json, wait_until, WorkerProcess};

#[derive(Default)]
struct State {
    registrations: Vec<v1::RegisterWorkerRequest>,
    tasks: VecDeque<v1::Task>,
    leases: Vec<v1::LeaseTaskRequest>,
    heartbeats: Vec<v1::HeartbeatRequest>,
    progress: Vec<v1::ReportProgressRequest>,
    results: Vec<v1::ReportResultRequest>,
    /// Worker ids answered NOT_FOUND (as after a coordinator that lost its state).
    forgotten: Vec<String>,
    /// Task ids the next heartbeats tell the worker to stop.
    stop: Vec<String>,
    /// Task ids whose next report is refused with FAILED_PRECONDITION (stale lease).
    reject: Vec<String>,
    /// Reports refused that way.
    rejected: Vec<v1::ReportResultRequest>,
    /// Supernet weights uploaded, by task id (the whole document).
    uploads: Vec<(String, Vec<u8>)>,
    /// Weights `FetchSupernet` answers with (the latest upload unless set).
    serve_weights: Option<Vec<u8>>,
    /// Task ids that fetched weights.
    fetches: Vec<String>,
}

#[derive(Clone, Default)]
struct Scripted {
    state: Arc<Mutex<State>>,
}

impl Scripted {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn known(&self, worker_id: &str) -> Result<(), Status> {
        if self.with(|s| s.forgotten.iter().any(|id| id == worker_id)) {
            Err(Status::not_found(format!(
                "worker_id: unknown worker {worker_id}"
            )))
        } else {
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl WorkerService for Scripted {
    type FetchSupernetStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::SupernetChunk, Status>> + Send>,
    >;

    async fn fetch_supernet(
        &self,
        request: Request<v1::FetchSupernetRequest>,
    ) -> Result<Response<Self::FetchSupernetStream>, Status> {
        let r = request.into_inner();
        let data = self.with(|s| {
            s.fetches.push(r.task_id.clone());
            s.serve_weights
                .clone()
                .or_else(|| s.uploads.last().map(|(_, d)| d.clone()))
        });
        let Some(data) = data else {
            return Err(Status::failed_precondition("no weights to serve"));
        };
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&data));
        let total = data.len() as u64;
        let chunks: Vec<Result<v1::SupernetChunk, Status>> = data
            .chunks(100_000)
            .enumerate()
            .map(|(i, c)| {
                Ok(v1::SupernetChunk {
                    version: 1,
                    offset: (i * 100_000) as u64,
                    total_bytes: total,
                    sha256: sha.clone(),
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn put_supernet(
        &self,
        request: Request<tonic::Streaming<v1::PutSupernetRequest>>,
    ) -> Result<Response<v1::PutSupernetResponse>, Status> {
        use sha2::Digest;
        use tokio_stream::StreamExt;
        let mut stream = request.into_inner();
        let mut task_id = String::new();
        let mut data = Vec::new();
        while let Some(m) = stream.next().await {
            let m = m?;
            if task_id.is_empty() {
                task_id = m.task_id.clone();
            }
            assert_eq!(m.offset, data.len() as u64, "chunks in order");
            data.extend_from_slice(&m.data);
        }
        let sha = hex::encode(sha2::Sha256::digest(&data));
        let bytes = data.len() as u64;
        self.with(|s| s.uploads.push((task_id, data)));
        Ok(Response::new(v1::PutSupernetResponse {
            bytes,
            sha256: sha,
        }))
    }

    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let number = self.with(|s| {
            s.registrations.push(request.into_inner());
            s.registrations.len()
        });
        Ok(Response::new(v1::RegisterWorkerResponse {
            worker_id: format!("w-{number}"),
            lease_duration_ms: 5_000,
            heartbeat_interval_ms: 300,
            max_lease_wait_ms: 1_000,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        let stop = self.with(|s| {
            s.heartbeats.push(request.clone());
            s.stop.clone()
        });
        Ok(Response::new(v1::HeartbeatResponse {
            extended: Vec::new(),
            stop_task_ids: request
                .tasks
                .iter()
                .filter(|t| stop.contains(&t.task_id))
                .map(|t| t.task_id.clone())
                .collect(),
        }))
    }

    async fn lease_task(
        &self,
        request: Request<v1::LeaseTaskRequest>,
    ) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        let wait = Duration::from_millis(u64::from(request.wait_ms.min(1_000)));
        let task = self.with(|s| {
            s.leases.push(request);
            s.tasks.pop_front()
        });
        if task.is_none() {
            tokio::time::sleep(wait).await;
        }
        Ok(Response::new(v1::LeaseTaskResponse { task }))
    }

    async fn report_progress(
        &self,
        request: Request<v1::ReportProgressRequest>,
    ) -> Result<Response<v1::ReportProgressResponse>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        self.with(|s| s.progress.push(request));
        Ok(Response::new(v1::ReportProgressResponse {
            stop: false,
            lease_expires_at_unix_ms: 0,
        }))
    }

    async fn report_result(
        &self,
        request: Request<v1::ReportResultRequest>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        let refused = self.with(|s| {
            if let Some(index) = s.reject.iter().position(|id| *id == request.task_id) {
                s.reject.remove(index);
                s.rejected.push(request.clone());
                true
            } else {
                s.results.push(request);
                false
            }
        });
        if refused {
            return Err(Status::failed_precondition("lease_token: stale lease"));
        }
        // Not a duplicate, not discarded (every field's default).
        Ok(Response::new(v1::ReportResultResponse::default()))
    }
}

async fn serve(scripted: Scripted) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(scripted))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    address
}

fn budget(epochs: u32, max_train_examples: u32) -> v1::TrainingBudget {
    v1::TrainingBudget {
        epochs,
        batch_size: 32,
        learning_rate: 0.05,
        lr_min: 0.001,
        momentum: 0.9,
        weight_decay: 3e-4,
        grad_clip: 5.0,
        init_channels: 4,
        layers: 3,
        max_train_examples,
        max_eval_examples: 200,
        validation_fraction: 0.2,
        cutout: 0,
        label_smoothing: 0.0,
        auxiliary_weight: 0.0,
        drop_path_prob: 0.0,
        max_wall_seconds: 0.0,
    }
}

fn train_task(
    id: &str,
    genotype_json: &str,
    dataset: &str,
    budget: v1::TrainingBudget,
) -> v1::Task {
    v1::Task {
        task_id: id.to_owned(),
        job_id: "job-1".to_owned(),
        lease_token: 7,
        attempt: 1,
        lease_expires_at_unix_ms: 0,
        payload: Some(v1::task::Payload::TrainEval(v1::TrainEvalTask {
            genotype_json: genotype_json.to_owned(),
            dataset: dataset.to_owned(),
            budget: Some(budget),
            seed: 1,
            checkpointed: false,
            checkpoint_key: String::new(),
            split: v1::EvalSplit::Validation as i32,
            // What the coordinator sends: a built-in dataset's shape (unset for other names).
            dataset_shape: builtin_shape(dataset),
        })),
    }
}

/// The wire shape of a built-in dataset.
fn builtin_shape(name: &str) -> Option<v1::DatasetShape> {
    nat_arch::Dataset::from_name(name).map(|dataset| {
        let shape = dataset.shape();
        v1::DatasetShape {
            channels: shape.channels,
            image_size: shape.image_size,
            classes: shape.classes,
        }
    })
}

/// `task` (a `train_eval` task) evaluated on the split `split` (a raw `EvalSplit` value).
fn with_split(mut task: v1::Task, split: i32) -> v1::Task {
    if let Some(v1::task::Payload::TrainEval(payload)) = &mut task.payload {
        payload.split = split;
    }
    task
}

fn result_of<'a>(state: &'a State, task_id: &str) -> Option<&'a Outcome> {
    state
        .results
        .iter()
        .find(|r| r.task_id == task_id)
        .and_then(|r| r.outcome.as_ref())
}

fn failure(state: &State, task_id: &str) -> (String, bool) {
    match result_of(state, task_id) {
        Some(Outcome::Failure(failure)) => (failure.reason.clone(), failure.retryable),
        other => panic!("{task_id}: expected a failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_fail_as_tasks_and_the_worker_keeps_serving() {
    let scratch = tempfile::tempdir().unwrap();
    let scripted = Scripted::default();
    let mut bad_budget = budget(1, 64);
    bad_budget.batch_size = 0;
    // SGD that multiplies the weights by -99 each step (lr 100, weight decay 1): the loss overflows.
    let mut exploding = budget(2, 256);
    exploding.batch_size = 8;
    exploding.learning_rate = 100.0;
    exploding.lr_min = 100.0;
    exploding.momentum = 0.0;
    exploding.weight_decay = 1.0;
    exploding.grad_clip = 0.0;
    scripted.with(|s| {
        s.tasks.push_back(train_task(
            "bad-json",
            "{\"normal\": [",
            "digits",
            budget(1, 64),
        ));
        s.tasks.push_back(train_task(
            "bad-dataset",
            &small_genotype_json(),
            "imagenet",
            budget(1, 64),
        ));
        let mut wrong_shape =
            train_task("bad-shape", &small_genotype_json(), "digits", budget(1, 64));
        if let Some(v1::task::Payload::TrainEval(payload)) = &mut wrong_shape.payload {
            payload.dataset_shape = Some(v1::DatasetShape {
                channels: 3,
                image_size: 32,
                classes: 10,
            });
        }
        s.tasks.push_back(wrong_shape);
        s.tasks.push_back(train_task(
            "no-files",
            &small_genotype_json(),
            "cifar10",
            budget(1, 64),
        ));
        s.tasks.push_back(train_task(
            "bad-budget",
            &small_genotype_json(),
            "digits",
            bad_budget,
        ));
        s.tasks.push_back(v1::Task {
            payload: None,
            ..train_task("no-payload", "", "digits", budget(1, 64))
        });
        s.tasks.push_back(with_split(
            train_task("bad-split", &small_genotype_json(), "digits", budget(1, 64)),
            7,
        ));
        s.tasks.push_back(train_task(
            "diverges",
            &small_genotype_json(),
            "digits",
            exploding,
        ));
        s.tasks.push_back(train_task(
            "good",
            &small_genotype_json(),
            "digits",
            budget(1, 256),
        ));
        s.tasks.push_back(with_split(
            train_task(
                "good-test-split",
                &small_genotype_json(),
                "digits",
                budget(1, 64),
            ),
            v1::EvalSplit::Test as i32,
        ));
    });
    let address = serve(scripted.clone()).await;
    // An empty data dir for cifar10: only digits is linked in.
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(common::data_dir().join("digits"), data.join("digits")).unwrap();
    let mut worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "bad-payloads",
        scratch.path(),
        &["--data-dir", data.to_str().unwrap()],
    );

    wait_until(Duration::from_secs(120), "ten results", || {
        scripted.with(|s| s.results.len() >= 10)
    })
    .await;
    assert!(worker.is_running(), "the worker must survive bad tasks");
    scripted.with(|s| {
        let registration = &s.registrations[0];
        let capabilities = registration.capabilities.as_ref().unwrap();
        assert_eq!(registration.name, "bad-payloads");
        assert_eq!(capabilities.slots, 1);
        assert_eq!(capabilities.datasets, vec!["digits".to_owned()]);
        assert_eq!(capabilities.devices[0].kind, v1::DeviceKind::Cpu as i32);

        let (reason, retryable) = failure(s, "bad-json");
        assert!(reason.contains("train_eval.genotype_json"), "{reason}");
        assert!(!retryable);
        let (reason, retryable) = failure(s, "bad-dataset");
        assert!(
            reason.contains("train_eval.dataset") && reason.contains("imagenet"),
            "{reason}"
        );
        assert!(!retryable);
        let (reason, retryable) = failure(s, "bad-shape");
        assert!(
            reason.contains("train_eval.dataset_shape")
                && reason.contains("3x32x32")
                && reason.contains("1x8x8"),
            "{reason}"
        );
        assert!(!retryable);
        let (reason, retryable) = failure(s, "no-files");
        assert!(
            reason.contains("cifar10") && reason.contains("missing"),
            "{reason}"
        );
        assert!(!retryable);
        let (reason, retryable) = failure(s, "bad-budget");
        assert!(reason.contains("batch_size"), "{reason}");
        assert!(!retryable);
        let (reason, retryable) = failure(s, "no-payload");
        assert!(reason.contains("payload"), "{reason}");
        assert!(!retryable);
        let (reason, retryable) = failure(s, "bad-split");
        assert!(
            reason.contains("train_eval.split") && reason.contains('7'),
            "{reason}"
        );
        assert!(!retryable);

        let (reason, retryable) = failure(s, "diverges");
        assert!(reason.contains("non-finite"), "{reason}");
        assert!(!retryable);

        match result_of(s, "good") {
            Some(Outcome::TrainEval(result)) => {
                assert!((0.0..=1.0).contains(&result.accuracy), "{result:?}");
                assert!(result.params > 0 && result.madds > 0, "{result:?}");
                assert!(result.loss.is_finite() && result.images_per_second > 0.0);
            }
            other => panic!("good: expected a train_eval result, got {other:?}"),
        }
        match result_of(s, "good-test-split") {
            Some(Outcome::TrainEval(result)) => {
                assert!((0.0..=1.0).contains(&result.accuracy), "{result:?}");
                assert!(result.loss.is_finite(), "{result:?}");
            }
            other => panic!("good-test-split: expected a train_eval result, got {other:?}"),
        }
        assert!(s
            .results
            .iter()
            .all(|r| r.lease_token == 7 && r.worker_id == "w-1"));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_task_in_hand_then_exits_zero() {
    let scratch = tempfile::tempdir().unwrap();
    let scripted = Scripted::default();
    scripted.with(|s| {
        s.tasks.push_back(train_task(
            "long",
            &small_genotype_json(),
            "digits",
            // 40 epochs: seconds of training even on a fast machine, so that the task is still in
            // hand when SIGTERM arrives.
            budget(40, 600),
        ));
        s.tasks.push_back(train_task(
            "never",
            &small_genotype_json(),
            "digits",
            budget(1, 64),
        ));
    });
    let address = serve(scripted.clone()).await;
    let mut worker =
        WorkerProcess::spawn(&format!("http://{address}"), "drain", scratch.path(), &[]);

    wait_until(
        Duration::from_secs(60),
        "the task to be leased and heartbeaten",
        || {
            scripted.with(|s| {
                s.heartbeats
                    .iter()
                    .any(|h| h.tasks.iter().any(|t| t.task_id == "long"))
            })
        },
    )
    .await;
    worker.signal("TERM");
    let status = worker
        .wait_exit(Duration::from_secs(120))
        .expect("the worker exits after draining");
    assert!(status.success(), "exit status {status:?}");
    scripted.with(|s| {
        assert!(
            matches!(result_of(s, "long"), Some(Outcome::TrainEval(_))),
            "the task in hand is finished and reported: {:?}",
            result_of(s, "long")
        );
        assert!(
            result_of(s, "never").is_none(),
            "no task is leased while draining"
        );
        assert_eq!(s.tasks.len(), 1, "the second task stays queued");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_timeout_the_task_is_handed_back_as_retryable() {
    let scratch = tempfile::tempdir().unwrap();
    let scripted = Scripted::default();
    scripted.with(|s| {
        s.tasks.push_back(train_task(
            "huge",
            &small_genotype_json(),
            "digits",
            budget(500, 0),
        ));
    });
    let address = serve(scripted.clone()).await;
    let mut worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "drain-timeout",
        scratch.path(),
        &["--drain-timeout", "1s"],
    );
    wait_until(Duration::from_secs(60), "the task to be running", || {
        scripted.with(|s| s.heartbeats.iter().any(|h| !h.tasks.is_empty()))
    })
    .await;
    worker.signal("TERM");
    let status = worker
        .wait_exit(Duration::from_secs(60))
        .expect("the worker exits after the drain timeout");
    assert!(status.success(), "exit status {status:?}");
    scripted.with(|s| {
        let (reason, retryable) = failure(s, "huge");
        assert!(retryable, "a handed-back task may run elsewhere");
        assert!(reason.contains("shutting down"), "{reason}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_worker_registers_again_and_a_stopped_task_is_cancelled() {
    let scratch = tempfile::tempdir().unwrap();
    let scripted = Scripted::default();
    scripted.with(|s| {
        s.tasks.push_back(train_task(
            "doomed",
            &small_genotype_json(),
            "digits",
            budget(500, 0),
        ));
    });
    let address = serve(scripted.clone()).await;
    let _worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "forgotten",
        scratch.path(),
        &[],
    );

    wait_until(
        Duration::from_secs(60),
        "the task to be heartbeaten",
        || scripted.with(|s| s.heartbeats.iter().any(|h| !h.tasks.is_empty())),
    )
    .await;
    // The coordinator loses the worker: every call with w-1 is NOT_FOUND from now on.
    scripted.with(|s| s.forgotten.push("w-1".to_owned()));
    wait_until(Duration::from_secs(30), "a second registration", || {
        scripted.with(|s| s.registrations.len() >= 2)
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "heartbeats from the new id with the task",
        || {
            scripted.with(|s| {
                s.heartbeats
                    .iter()
                    .any(|h| h.worker_id == "w-2" && h.tasks.iter().any(|t| t.task_id == "doomed"))
            })
        },
    )
    .await;
    // Now the coordinator wants the task stopped.
    scripted.with(|s| s.stop.push("doomed".to_owned()));
    wait_until(Duration::from_secs(30), "the stopped task's report", || {
        scripted.with(|s| result_of(s, "doomed").is_some())
    })
    .await;
    scripted.with(|s| {
        let (reason, _) = failure(s, "doomed");
        assert!(reason.contains("coordinator"), "{reason}");
        let report = s.results.iter().find(|r| r.task_id == "doomed").unwrap();
        assert_eq!(report.worker_id, "w-2");
    });
    // And the worker goes on leasing under its new id.
    let leases_before = scripted.with(|s| s.leases.iter().filter(|l| l.worker_id == "w-2").count());
    wait_until(Duration::from_secs(30), "new lease polls", || {
        scripted.with(|s| s.leases.iter().filter(|l| l.worker_id == "w-2").count() > leases_before)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supernet_tasks_score_every_pair() {
    let scratch = tempfile::tempdir().unwrap();
    let beta = nat_arch::parse_any("darts-v2").unwrap();
    let mut alpha = beta.clone();
    alpha.normal.nodes[0].inputs[0].op = nat_arch::Op::Null;
    alpha.reduce.nodes[1].inputs[1].op = nat_arch::Op::SkipConnect;
    let settings = v1::SupernetSettings {
        init_channels: 4,
        layers: 3,
        batch_size: 32,
        train_steps_between_pairs: 2,
        learning_rate: 0.01,
        momentum: 0.9,
        weight_decay: 3e-4,
        grad_clip: 5.0,
        max_train_examples: 256,
        validation_fraction: 0.2,
        eval_batches: 1,
        max_wall_seconds: 0.0,
        op_set: "nat-fully-concat".to_owned(),
        num_nodes: 4,
        ..Default::default()
    };
    let pair = v1::GenotypePair {
        beta_json: beta.to_json(),
        alpha_json: alpha.to_json(),
    };
    let shard = |id: &str,
                 settings: v1::SupernetSettings,
                 pairs: Vec<v1::GenotypePair>,
                 base_version: u64| v1::Task {
        payload: Some(v1::task::Payload::Supernet(v1::SupernetTask {
            warmup: pairs.is_empty(),
            pairs,
            dataset: "digits".to_owned(),
            settings: Some(settings),
            seed: 3,
            supernet_key: "job-1".to_owned(),
            dataset_shape: builtin_shape("digits"),
            round: 0,
            shard: 0,
            shards: 1,
            base_version,
            train_steps: 3,
            shard_seed: 9,
            candidates: Vec::new(),
            eval_examples: 0,
        })),
        ..train_task(id, "", "digits", budget(1, 64))
    };
    let mut bad_set = settings.clone();
    bad_set.op_set = "nat-minus-minus".to_owned();
    let scripted = Scripted::default();
    scripted.with(|s| {
        // The warm-up (fresh weights, no pairs), then shards that start from its upload.
        s.tasks
            .push_back(shard("warmup", settings.clone(), vec![], 0));
        s.tasks.push_back(shard(
            "pairs",
            settings.clone(),
            vec![pair.clone(), pair.clone()],
            1,
        ));
        s.tasks
            .push_back(shard("bad-set", bad_set, vec![pair.clone()], 1));
        s.tasks
            .push_back(shard("again", settings.clone(), vec![pair.clone()], 1));
        // A derive screening: candidates scored on the fetched version, nothing uploaded.
        let mut screen = shard("screen", settings.clone(), vec![], 1);
        if let Some(v1::task::Payload::Supernet(p)) = screen.payload.as_mut() {
            p.warmup = false;
            p.train_steps = 0;
            p.candidates = vec![beta.to_json(), alpha.to_json()];
            p.eval_examples = 64;
        }
        s.tasks.push_back(screen);
    });
    let address = serve(scripted.clone()).await;
    let _worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "supernet",
        scratch.path(),
        &[],
    );
    wait_until(Duration::from_secs(120), "five supernet results", || {
        scripted.with(|s| s.results.len() >= 5)
    })
    .await;
    scripted.with(|s| {
        // Every successful shard uploaded its weights before reporting them by size and
        // digest; the shards of version 1 fetched the warm-up's upload (the worker's cache
        // answers a second fetch of the same version).
        let uploaded: Vec<&str> = s.uploads.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(uploaded, ["warmup", "pairs", "again"]);
        assert!(s.fetches.iter().any(|t| t == "pairs"), "{:?}", s.fetches);
        let warm = &s.uploads[0].1;
        let trained = &s.uploads[1].1;
        assert_ne!(warm, trained, "the shard trained the weights it fetched");
        let wsum = nat_weights::inspect(warm).unwrap();
        let tsum = nat_weights::inspect(trained).unwrap();
        assert_eq!(
            (wsum.tensors, wsum.parameters),
            (tsum.tensors, tsum.parameters)
        );
        for (id, pairs) in [("warmup", 0), ("pairs", 2), ("again", 1)] {
            match result_of(s, id) {
                Some(Outcome::Supernet(result)) => {
                    let (_, data) = s.uploads.iter().find(|(t, _)| t == id).unwrap();
                    assert_eq!(result.weights_bytes, data.len() as u64, "{id}");
                    use sha2::Digest;
                    assert_eq!(
                        result.weights_sha256,
                        hex::encode(sha2::Sha256::digest(data))
                    );
                    assert_eq!(result.train_steps, 3 + 2 * pairs as u64, "{id}");
                    assert_eq!(result.scores.len(), pairs, "{id}");
                    for score in &result.scores {
                        assert!((0.0..=1.0).contains(&score.acc_beta), "{score:?}");
                        assert!((0.0..=1.0).contains(&score.acc_alpha), "{score:?}");
                    }
                }
                other => panic!("{id}: expected a supernet result, got {other:?}"),
            }
        }
        match result_of(s, "screen") {
            Some(Outcome::Supernet(result)) => {
                assert_eq!(result.accuracies.len(), 2);
                assert!(result.accuracies.iter().all(|a| (0.0..=1.0).contains(a)));
                assert!(result.scores.is_empty() && result.weights_bytes == 0);
                assert_eq!(result.train_steps, 0);
            }
            other => panic!("screen: expected a supernet result, got {other:?}"),
        }
        assert!(
            s.uploads.iter().all(|(t, _)| t != "screen"),
            "a screening uploads nothing"
        );
        let (reason, retryable) = failure(s, "bad-set");
        assert!(reason.contains("supernet.settings.op_set"), "{reason}");
        assert!(!retryable);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_survive_a_rejected_report_and_are_removed_once_accepted() {
    let scratch = tempfile::tempdir().unwrap();
    let checkpointed = |id: &str, key: &str| {
        let mut task = train_task(id, &small_genotype_json(), "digits", budget(2, 128));
        if let Some(v1::task::Payload::TrainEval(payload)) = task.payload.as_mut() {
            payload.checkpointed = true;
            payload.checkpoint_key = key.to_owned();
        }
        task
    };
    let scripted = Scripted::default();
    scripted.with(|s| {
        s.reject.push("first".to_owned());
        s.tasks.push_back(checkpointed("first", "job-1.arch-0"));
    });
    let address = serve(scripted.clone()).await;
    let _worker = WorkerProcess::spawn(&format!("http://{address}"), "ckpt", scratch.path(), &[]);
    // The first lease's report is refused (as for a lease lost meanwhile): the checkpoints stay.
    wait_until(Duration::from_secs(120), "the rejected report", || {
        scripted.with(|s| !s.rejected.is_empty())
    })
    .await;
    let folder = scratch.path().join("ckpt-checkpoints").join("job-1.arch-0");
    let files = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .count();
    assert!(files > 0, "checkpoint files under {}", folder.display());
    // The task comes back (same key): it resumes from the finished checkpoint, is accepted, and
    // its checkpoints are removed.
    scripted.with(|s| {
        s.tasks.push_back(checkpointed("resumed", "job-1.arch-0"));
        s.tasks.push_back(checkpointed("escape", "../outside"));
    });
    wait_until(Duration::from_secs(120), "two results", || {
        scripted.with(|s| s.results.len() >= 2)
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "the checkpoints to be removed",
        || !folder.exists(),
    )
    .await;
    scripted.with(|s| {
        let first = match s.rejected[0].outcome.as_ref() {
            Some(Outcome::TrainEval(result)) => result.accuracy,
            other => panic!("first: expected a result, got {other:?}"),
        };
        match result_of(s, "resumed") {
            Some(Outcome::TrainEval(result)) => assert_eq!(result.accuracy, first),
            other => panic!("resumed: expected a result, got {other:?}"),
        }
        let (reason, retryable) = failure(s, "escape");
        assert!(reason.contains("checkpoint_key"), "{reason}");
        assert!(!retryable);
    });
    assert!(!scratch.path().join("outside").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_promptly_when_the_coordinator_was_never_reached() {
    let scratch = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let mut worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "lonely",
        scratch.path(),
        &["--log-format", "json"],
    );
    wait_until(Duration::from_secs(30), "the worker to retry", || {
        worker.log_text().contains("coordinator unreachable")
    })
    .await;
    // --log-format json: one JSON object per line, fields flattened next to the message.
    let log = worker.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let retry = lines
        .iter()
        .find(|line| line["message"] == "coordinator unreachable; retrying")
        .expect("the retry line");
    assert_eq!(retry["level"], "WARN");
    assert_eq!(retry["rpc"], "register");
    worker.signal("TERM");
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("exits without waiting for the drain timeout");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_hands_back_at_once() {
    let scratch = tempfile::tempdir().unwrap();
    let scripted = Scripted::default();
    scripted.with(|s| {
        s.tasks.push_back(train_task(
            "endless",
            &small_genotype_json(),
            "digits",
            budget(500, 0),
        ));
    });
    let address = serve(scripted.clone()).await;
    let mut worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "impatient",
        scratch.path(),
        &["--drain-timeout", "10m"],
    );
    wait_until(Duration::from_secs(60), "the task to be running", || {
        scripted.with(|s| s.heartbeats.iter().any(|h| !h.tasks.is_empty()))
    })
    .await;
    worker.signal("INT");
    wait_until(Duration::from_secs(10), "the drain to start", || {
        worker.log_text().contains("draining")
    })
    .await;
    assert!(worker.is_running(), "the first signal only drains");
    worker.signal("TERM");
    let status = worker
        .wait_exit(Duration::from_secs(60))
        .expect("the second signal ends the drain");
    assert!(status.success(), "{status:?}");
    scripted.with(|s| {
        let (reason, retryable) = failure(s, "endless");
        assert!(retryable && reason.contains("shutting down"), "{reason}");
    });
}

/// `GET path` over plain HTTP/1.1; (status code, body).
async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The value of the sample `name{labels…}` in Prometheus text, whatever the label order.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let pairs: Vec<String> = series_labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(str::to_owned)
            .collect();
        let matches = labels
            .iter()
            .all(|(key, value)| pairs.contains(&format!("{key}=\"{value}\"")));
        if matches && pairs.len() == labels.len() {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// Parses every line of a `--log-format json` log; panics naming the first line that is not a
/// JSON object.
fn json_lines(log: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(object)) => object,
            other => panic!("log line is not a JSON object ({other:?}): {line}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_real_task_and_json_logs_carry_the_task_ids() {
    let scratch = tempfile::tempdir().unwrap();
    let scripted = Scripted::default();
    scripted.with(|s| {
        // The first worker id is refused once: a LeaseTask error, then registration again.
        s.forgotten.push("w-1".to_owned());
        s.tasks.push_back(train_task(
            "trained",
            &small_genotype_json(),
            "digits",
            // 40 epochs: still training when /metrics is scraped, even on a fast machine.
            budget(40, 600),
        ));
        s.tasks.push_back(train_task(
            "broken",
            "{\"normal\": [",
            "digits",
            budget(1, 64),
        ));
    });
    let address = serve(scripted.clone()).await;
    let mut worker = WorkerProcess::spawn(
        &format!("http://{address}"),
        "observed",
        scratch.path(),
        &["--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
    );

    // The listener's address (port 0 picks a free one) is in its start-up line.
    let mut metrics_address = String::new();
    wait_until(Duration::from_secs(30), "the metrics listener", || {
        let found = worker.log_text().lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            (line["message"] == "serving /metrics and /healthz")
                .then(|| line["address"].as_str().map(str::to_owned))
                .flatten()
        });
        if let Some(found) = found {
            metrics_address = found;
        }
        !metrics_address.is_empty()
    })
    .await;
    let (status, body) = http_get(&metrics_address, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    // While the task trains, its slot is busy.
    wait_until(Duration::from_secs(120), "progress of the task", || {
        scripted.with(|s| s.progress.iter().any(|p| p.task_id == "trained"))
    })
    .await;
    let (status, during) = http_get(&metrics_address, "/metrics").await;
    assert!(
        scripted.with(|s| s.results.is_empty()),
        "the task must still be running when /metrics is scraped"
    );
    assert_eq!(status, 200, "{during}");
    assert_eq!(
        sample(&during, "nat_worker_slots", &[("state", "busy")]),
        Some(1.0),
        "{during}"
    );
    assert_eq!(
        sample(&during, "nat_worker_slots", &[("state", "idle")]),
        Some(0.0),
        "{during}"
    );
    assert!(
        sample(
            &during,
            "nat_worker_rpc_errors_total",
            &[("rpc", "lease_task")]
        )
        .is_some_and(|errors| errors >= 1.0),
        "the refused LeaseTask is counted: {during}"
    );
    let finished = |metrics: &str, outcome: &str| {
        sample(
            metrics,
            "nat_worker_task_duration_seconds_count",
            &[
                ("task_kind", "train_eval"),
                ("device_kind", "cpu"),
                ("outcome", outcome),
            ],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(finished(&during, "succeeded"), 0.0, "{during}");

    wait_until(Duration::from_secs(180), "both results", || {
        scripted.with(|s| s.results.len() >= 2)
    })
    .await;
    // The slot gauge is set right after the report; give it a moment.
    let mut after = String::new();
    for _ in 0..40 {
        after = http_get(&metrics_address, "/metrics").await.1;
        if sample(&after, "nat_worker_slots", &[("state", "busy")]) == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(finished(&after, "succeeded"), 1.0, "{after}");
    assert_eq!(finished(&after, "failed"), 1.0, "{after}");
    assert_eq!(
        sample(&after, "nat_worker_slots", &[("state", "busy")]),
        Some(0.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "nat_worker_slots", &[("state", "idle")]),
        Some(1.0),
        "{after}"
    );
    let trained_throughput = scripted.with(|s| match result_of(s, "trained") {
        Some(Outcome::TrainEval(result)) => result.images_per_second,
        other => panic!("trained: expected a train_eval result, got {other:?}"),
    });
    let images = sample(&after, "nat_worker_images_total", &[("device_kind", "cpu")])
        .expect("nat_worker_images_total");
    // max_train_examples 600 (batches of 32, none of one image) for 40 epochs.
    assert_eq!(images, 40.0 * 600.0, "{after}");
    assert_eq!(
        sample(
            &after,
            "nat_worker_throughput_images_per_second",
            &[("device_kind", "cpu")]
        ),
        Some(trained_throughput),
        "{after}"
    );
    assert!(
        !after.contains("nat_worker_gpu_memory_used_bytes{"),
        "no GPU memory series on a CPU worker: {after}"
    );

    worker.signal("TERM");
    let status = worker
        .wait_exit(Duration::from_secs(60))
        .expect("the worker exits");
    assert!(status.success(), "exit status {status:?}");

    let lines = json_lines(&worker.log_text());
    let of_task = |task_id: &str| -> Vec<&serde_json::Map<String, serde_json::Value>> {
        lines
            .iter()
            .filter(|line| line.get("task_id").and_then(|v| v.as_str()) == Some(task_id))
            .collect()
    };
    for (task_id, last_message) in [("trained", "task finished"), ("broken", "task failed")] {
        let task_lines = of_task(task_id);
        let messages: Vec<&str> = task_lines
            .iter()
            .filter_map(|line| line.get("message").and_then(|v| v.as_str()))
            .collect();
        assert!(
            messages.contains(&"task leased") && messages.contains(&last_message),
            "{task_id}: {messages:?}"
        );
        if task_id == "trained" {
            // Logged by the runner on the slot thread: the span crossed the thread boundary.
            assert!(messages.contains(&"dataset loaded"), "{messages:?}");
        }
        for line in task_lines {
            assert_eq!(line.get("job_id").and_then(|v| v.as_str()), Some("job-1"));
            assert_eq!(line.get("worker_id").and_then(|v| v.as_str()), Some("w-2"));
            assert_eq!(line.get("device").and_then(|v| v.as_str()), Some("cpu"));
            assert_eq!(line.get("span").and_then(|v| v.as_str()), Some("task"));
        }
    }
}
