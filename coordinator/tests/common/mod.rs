//! Shared test support: a fresh database per test (SQLite file or PostgreSQL database), an
//! in-process coordinator on port 0, gRPC clients and a simulated worker.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use nat_coordinator::{Clock, Config, Coordinator, ManualClock, SystemClock};
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database; dropped (Postgres) or deleted (SQLite) by [`TestDb::cleanup`].
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("nat.db").display());
                TestDb {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("nat_test_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let _ = conn.close().await;
                TestDb {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut conn) = sqlx::PgConnection::connect(PG_ADMIN_URL).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }
}

/// A coordinator served in-process on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub coordinator: Arc<Coordinator>,
    pub clock: Option<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), nat_coordinator::ServeError>>>,
}

pub fn test_config() -> Config {
    Config {
        lease_duration: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(5),
        max_attempts: 3,
        max_lease_wait: Duration::from_secs(5),
        // Long: tests that expire leases call `collect_expired` themselves.
        expiry_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

impl TestServer {
    /// Starts a coordinator; with `manual_clock` time only moves when the test says so.
    pub async fn start(db: &TestDb, config: Config, manual_clock: bool) -> TestServer {
        let store = nat_store::connect(&db.url).await.expect("store opens");
        let clock = manual_clock.then(|| ManualClock::new(Utc::now()));
        let clock_dyn: Arc<dyn Clock> = match &clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let coordinator = Coordinator::new(store, clock_dyn, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(nat_coordinator::serve(
            coordinator.clone(),
            listener,
            None,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            coordinator,
            clock,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.url()).await
    }

    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    pub async fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel().await)
    }

    pub fn advance(&self, by: Duration) {
        self.clock.as_ref().expect("manual clock").advance(by);
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("graceful shutdown within 10 s")
                .expect("server task")
                .expect("server ok");
        }
    }
}

/// Connects, retrying for a few seconds while the server starts.
pub async fn connect(url: &str) -> Channel {
    let endpoint = Channel::from_shared(url.to_string()).expect("url");
    for _ in 0..100 {
        if let Ok(ch) = endpoint.connect().await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}");
}

pub fn evaluate_request(archs: &[&str], dataset: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        kind: v1::JobKind::Evaluate as i32,
        architectures: archs.iter().map(|s| s.to_string()).collect(),
        dataset: dataset.into(),
        budget: Some(v1::BudgetSpec {
            preset: "smoke".into(),
            overrides: None,
        }),
        seed: 1,
        priority: 0,
        name: "test".into(),
        optimize: None,
        requirements: None,
        dataset_shape: None,
    }
}

pub fn cpu_capabilities() -> v1::WorkerCapabilities {
    v1::WorkerCapabilities {
        devices: vec![v1::Device {
            kind: v1::DeviceKind::Cpu as i32,
            index: 0,
            model: "test cpu".into(),
            memory_bytes: 0,
            name: "cpu".into(),
        }],
        cpu_cores: 2,
        slots: 1,
        version: "test".into(),
        hostname: "localhost".into(),
        datasets: vec![],
        dataset_infos: vec![],
    }
}

pub async fn register(w: &mut WorkerServiceClient<Channel>, name: &str) -> String {
    w.register_worker(v1::RegisterWorkerRequest {
        name: name.into(),
        capabilities: Some(cpu_capabilities()),
    })
    .await
    .expect("register")
    .into_inner()
    .worker_id
}

/// A worker client of `server` and the id it registered under as `name`.
pub async fn registered(server: &TestServer, name: &str) -> (WorkerServiceClient<Channel>, String) {
    let mut w = server.workers().await;
    let worker = register(&mut w, name).await;
    (w, worker)
}

pub async fn lease(
    w: &mut WorkerServiceClient<Channel>,
    worker_id: &str,
    wait_ms: u32,
) -> Option<v1::Task> {
    w.lease_task(v1::LeaseTaskRequest {
        worker_id: worker_id.into(),
        wait_ms,
        device: None,
        slot: 0,
    })
    .await
    .expect("lease")
    .into_inner()
    .task
}

/// A deterministic fake measurement: accuracy derived from the genotype text, so different
/// architectures get different accuracies.
pub fn fake_result(task: &v1::Task) -> v1::TrainEvalResult {
    let json = match &task.payload {
        Some(v1::task::Payload::TrainEval(t)) => t.genotype_json.clone(),
        _ => String::new(),
    };
    let h = json
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    v1::TrainEvalResult {
        accuracy: 0.5 + (h % 400) as f64 / 1000.0,
        loss: 0.7,
        params: 1000 + h % 1000,
        madds: 50_000,
        wall_seconds: 0.01,
        images_per_second: 1000.0,
    }
}

/// The report of `outcome` for `task`, leased by `worker_id`.
pub fn report(
    worker_id: &str,
    task: &v1::Task,
    outcome: v1::report_result_request::Outcome,
) -> v1::ReportResultRequest {
    v1::ReportResultRequest {
        worker_id: worker_id.into(),
        task_id: task.task_id.clone(),
        lease_token: task.lease_token,
        outcome: Some(outcome),
    }
}

/// The report of [`fake_result`] for `task`.
pub fn report_ok(worker_id: &str, task: &v1::Task) -> v1::ReportResultRequest {
    report(
        worker_id,
        task,
        v1::report_result_request::Outcome::TrainEval(fake_result(task)),
    )
}

pub async fn job(j: &mut JobServiceClient<Channel>, id: &str) -> v1::Job {
    j.get_job(v1::GetJobRequest { job_id: id.into() })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job")
}

/// Whether a job in `state` is still queued or running.
pub fn in_progress(state: i32) -> bool {
    state == v1::JobState::Queued as i32 || state == v1::JobState::Running as i32
}

/// Submits `request`, which must be accepted.
pub async fn submit(j: &mut JobServiceClient<Channel>, request: v1::SubmitJobRequest) -> v1::Job {
    j.submit_job(request)
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
}

/// Cancels `id`, which must succeed; returns the cancelled job.
pub async fn cancel(j: &mut JobServiceClient<Channel>, id: &str) -> v1::Job {
    j.cancel_job(v1::CancelJobRequest {
        job_id: id.into(),
        reason: "test".into(),
    })
    .await
    .expect("cancel")
    .into_inner()
    .job
    .expect("job")
}

pub async fn job_result(j: &mut JobServiceClient<Channel>, id: &str) -> v1::GetJobResultResponse {
    j.get_job_result(v1::GetJobResultRequest { job_id: id.into() })
        .await
        .expect("result")
        .into_inner()
}

/// Polls `id` every 100 ms until it is final; panics with `what` and the job once `deadline`
/// passes.
pub async fn wait_for_end(
    j: &mut JobServiceClient<Channel>,
    id: &str,
    deadline: Instant,
    what: &str,
) -> v1::Job {
    loop {
        let current = job(j, id).await;
        if !in_progress(current.state) {
            return current;
        }
        assert!(Instant::now() < deadline, "{what}: {current:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An optimize job of `darts-v2` on digits (smoke budget, proxy reward).
pub fn optimize_request(
    name: &str,
    iterations: u32,
    samples: u32,
    derive_samples: u32,
) -> v1::SubmitJobRequest {
    let mut r = evaluate_request(&["darts-v2"], "digits");
    r.kind = v1::JobKind::Optimize as i32;
    r.name = name.into();
    r.optimize = Some(v1::OptimizeSpec {
        iterations,
        samples_per_iteration: samples,
        derive_samples,
        ..Default::default()
    });
    r
}

/// The next task for `worker` of a scripted worker loop: leases (waiting 200 ms at a time) until
/// a task comes, or returns `None` once `job_id` is final. Panics once `deadline` passes.
pub async fn next_task(
    w: &mut WorkerServiceClient<Channel>,
    worker: &str,
    jobs: &mut JobServiceClient<Channel>,
    job_id: &str,
    deadline: Instant,
) -> Option<v1::Task> {
    loop {
        assert!(
            Instant::now() < deadline,
            "the optimize job finishes in time"
        );
        if let Some(task) = lease(w, worker, 200).await {
            return Some(task);
        }
        if !in_progress(job(jobs, job_id).await.state) {
            return None;
        }
    }
}

/// Checks that `job_id` is still in progress, stops `server` in the middle of it and starts a new
/// coordinator on the same database.
pub async fn restart_mid_job(server: TestServer, db: &TestDb, job_id: &str) -> TestServer {
    let mid = job(&mut server.jobs().await, job_id).await;
    assert!(
        in_progress(mid.state),
        "stopped in the middle of the job: {mid:?}"
    );
    server.stop().await;
    TestServer::start(db, test_config(), false).await
}

/// What every finished optimize job of one input (`darts-v2`) must show: it succeeded, its
/// policy (`job-<id>`, listed with that source job, over the NAT space) was updated and consumed
/// exactly `rewards` rewards, and the result has the input as original and a best. Returns the
/// result for the checks particular to the reward mode.
pub async fn check_optimize_result(
    server: &TestServer,
    job_id: &str,
    rewards: u64,
) -> v1::GetJobResultResponse {
    let mut jobs = server.jobs().await;
    let done = job(&mut jobs, job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    let result = job_result(&mut jobs, job_id).await;
    assert_eq!(result.kind, v1::JobKind::Optimize as i32);
    assert_eq!(result.optimize.len(), 1);
    let o = &result.optimize[0];
    let original = o.original.as_ref().expect("original");
    assert!(o.best.is_some(), "a best");
    let input = nat_arch::parse_any("darts-v2").expect("preset");
    assert_eq!(original.canonical_hash, input.canonical_hash());
    let policy = result.policy.as_ref().expect("policy");
    // A fresh policy is stored as version 1; each committed update adds one.
    assert!(policy.version > 1, "the policy was updated: {policy:?}");
    assert_eq!(policy.id, format!("job-{job_id}"));
    assert_eq!(result.rewards, rewards);
    let mut policies = v1::policy_service_client::PolicyServiceClient::new(server.channel().await);
    let listed = policies
        .list_policies(v1::ListPoliciesRequest {})
        .await
        .expect("list")
        .into_inner()
        .policies;
    let p = listed
        .iter()
        .find(|p| p.id == policy.id)
        .expect("policy listed");
    assert_eq!(p.source_job, job_id);
    assert_eq!(p.space, "nat");
    assert_eq!(p.version, policy.version);
    assert_eq!(p.rewards_consumed, rewards);
    result
}

/// The listing of the policy `policy_id` (its latest version and the rewards it consumed).
pub async fn policy_summary(
    store: &dyn nat_store::Store,
    policy_id: &str,
) -> nat_store::PolicySummary {
    store
        .list_policies()
        .await
        .expect("policies")
        .into_iter()
        .find(|p| p.policy_id == policy_id)
        .expect("the policy is listed")
}

/// Runs an async test body against both backends.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = common::TestDb::new(common::Backend::Sqlite).await;
                $body(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = common::TestDb::new(common::Backend::Postgres).await;
                $body(&db).await;
                db.cleanup().await;
            }
        }
    };
}
