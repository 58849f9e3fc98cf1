//! What the natctl integration tests share: an in-process coordinator (port 0, SQLite), the
//! natctl binary, and a scripted worker over real gRPC.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Command, Output};
use std::sync::Arc;

use nat_coordinator::{Config, Coordinator, SystemClock};
use nat_proto::v1;
use nat_proto::v1::worker_service_client::WorkerServiceClient;

pub const NATCTL: &str = env!("CARGO_BIN_EXE_natctl");

/// A running coordinator; stopped when dropped.
pub struct Server {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("nat.db").display());
    let store = nat_store::connect(&url).await.expect("store");
    let c = Coordinator::new(store, Arc::new(SystemClock), Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(nat_coordinator::serve(c, listener, None, async move {
        let _ = rx.await;
    }));
    Server {
        url: format!("http://{addr}"),
        stop: Some(tx),
        _dir: dir,
    }
}

/// Runs natctl against `url` with `args` (and `NAT_OUTPUT` unset unless `env` sets it).
pub async fn natctl_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        Command::new(NATCTL)
            .args(&args)
            .env("NAT_COORDINATOR", url)
            .env_remove("NAT_OUTPUT")
            .envs(env)
            .output()
            .expect("run natctl")
    })
    .await
    .expect("join")
}

pub async fn natctl(url: &str, args: &[&str]) -> Output {
    natctl_env(url, args, &[]).await
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs natctl, expects success, and parses its stdout as JSON.
pub async fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let out = natctl(url, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{}", stdout(&out)))
}

/// Runs natctl, expects success, and parses its stdout as YAML.
pub async fn yaml(url: &str, args: &[&str]) -> serde_json::Value {
    let out = natctl(url, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    yaml_serde::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not YAML ({e}):\n{}", stdout(&out)))
}

/// Registers a scripted worker with `capabilities`; returns the client and its id.
pub async fn register(
    url: &str,
    capabilities: v1::WorkerCapabilities,
) -> (WorkerServiceClient<tonic::transport::Channel>, String) {
    let mut w = WorkerServiceClient::connect(url.to_string())
        .await
        .expect("connect");
    let id = w
        .register_worker(v1::RegisterWorkerRequest {
            name: "sim".into(),
            capabilities: Some(capabilities),
        })
        .await
        .expect("register")
        .into_inner()
        .worker_id;
    (w, id)
}

/// One CPU slot, any dataset.
pub fn cpu_worker() -> v1::WorkerCapabilities {
    v1::WorkerCapabilities {
        cpu_cores: 1,
        slots: 1,
        version: "test".into(),
        hostname: "h".into(),
        ..Default::default()
    }
}

/// Leases `n` tasks and answers each with `outcome(i)`.
pub async fn answer_tasks(
    url: &str,
    n: usize,
    outcome: impl Fn(usize) -> v1::report_result_request::Outcome,
) {
    let (mut w, id) = register(url, cpu_worker()).await;
    for i in 0..n {
        let task = w
            .lease_task(v1::LeaseTaskRequest {
                worker_id: id.clone(),
                wait_ms: 2000,
                device: None,
                slot: 0,
            })
            .await
            .expect("lease")
            .into_inner()
            .task
            .expect("task");
        w.report_result(v1::ReportResultRequest {
            worker_id: id.clone(),
            task_id: task.task_id.clone(),
            lease_token: task.lease_token,
            outcome: Some(outcome(i)),
        })
        .await
        .expect("report");
    }
}

/// Leases and reports `n` tasks, with accuracy 0.5 + index/100.
pub async fn drain_tasks(url: &str, n: usize) {
    answer_tasks(url, n, |i| {
        v1::report_result_request::Outcome::TrainEval(v1::TrainEvalResult {
            accuracy: 0.5 + i as f64 / 100.0,
            loss: 1.0,
            params: 1000 + i as u64,
            madds: 20_000,
            wall_seconds: 0.1,
            images_per_second: 100.0,
        })
    })
    .await;
}
