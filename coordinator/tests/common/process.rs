//! Real `nat-coordinator` processes for the tests that start the binary, and simulated workers
//! that survive coordinator restarts and fail over between coordinators.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nat_proto::v1;
use nat_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;
use tonic::Code;

pub const BIN: &str = env!("CARGO_BIN_EXE_nat-coordinator");

/// A running coordinator process and the addresses it printed.
pub struct Proc {
    pub child: Child,
    pub grpc: String,
    pub http: String,
}

impl Drop for Proc {
    /// A test that fails leaves no coordinator behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn spawn(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for key in [
        "NAT_LISTEN",
        "NAT_HTTP_LISTEN",
        "NAT_DATABASE_URL",
        "NAT_COORDINATOR_DATA_DIR",
        "NAT_LEASE_SECONDS",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn nat-coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    // "listening grpc=ADDR http=ADDR"
    let mut grpc = String::new();
    let mut http = String::new();
    for part in line.split_whitespace() {
        if let Some(a) = part.strip_prefix("grpc=") {
            grpc = a.to_string();
        }
        if let Some(a) = part.strip_prefix("http=") {
            http = a.to_string();
        }
    }
    assert!(
        !grpc.is_empty() && !http.is_empty(),
        "unexpected line {line:?}"
    );
    Proc { child, grpc, http }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < within, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// A simulated worker that survives coordinator restarts and fails over between coordinators:
/// retries every call (on the next of `urls` after a transport error), re-registers on
/// NOT_FOUND, drops a result only on FAILED_PRECONDITION. Worker ids live in the shared
/// database, so any coordinator of it accepts them.
pub async fn sim_worker(
    urls: Vec<String>,
    name: String,
    hold: Duration,
    stop: Arc<AtomicBool>,
) -> u32 {
    let clients: Vec<WorkerServiceClient<Channel>> = urls
        .into_iter()
        .map(|url| {
            let channel = Channel::from_shared(url)
                .expect("url")
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(5))
                .connect_lazy();
            WorkerServiceClient::new(channel)
        })
        .collect();
    let mut at = 0;
    let mut reported = 0;
    let mut worker_id: Option<String> = None;
    // Moves to the next coordinator after a failure that is not an answer of the API.
    let fail_over = |at: &mut usize, s: &tonic::Status| {
        if matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        ) {
            *at = (*at + 1) % clients.len();
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let mut w = clients[at].clone();
        let id = match &worker_id {
            Some(id) => id.clone(),
            None => match w
                .register_worker(v1::RegisterWorkerRequest {
                    name: name.clone(),
                    capabilities: Some(super::cpu_capabilities()),
                })
                .await
            {
                Ok(r) => {
                    let id = r.into_inner().worker_id;
                    worker_id = Some(id.clone());
                    id
                }
                Err(s) => {
                    fail_over(&mut at, &s);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let task = match w
            .lease_task(v1::LeaseTaskRequest {
                worker_id: id.clone(),
                wait_ms: 300,
                device: None,
                slot: 0,
            })
            .await
        {
            Ok(r) => match r.into_inner().task {
                Some(t) => t,
                None => continue,
            },
            Err(s) if s.code() == Code::NotFound => {
                worker_id = None;
                continue;
            }
            Err(s) => {
                fail_over(&mut at, &s);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::time::sleep(hold).await;
        loop {
            let mut w = clients[at].clone();
            match w.report_result(super::report_ok(&id, &task)).await {
                Ok(_) => {
                    reported += 1;
                    break;
                }
                Err(s) if s.code() == Code::FailedPrecondition => break,
                Err(_) if stop.load(Ordering::SeqCst) => break,
                Err(s) => {
                    fail_over(&mut at, &s);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    reported
}

/// `n` [`sim_worker`]s (`sim-0`, `sim-1`, ...), each holding a task `hold` before its report,
/// until [`SimWorkers::stop`].
pub struct SimWorkers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<u32>>,
}

impl SimWorkers {
    /// Workers of the coordinator at `url`.
    pub fn start(url: &str, n: usize, hold: Duration) -> SimWorkers {
        SimWorkers::start_on(&[url.to_owned()], n, hold)
    }

    /// Workers that start on the first of `urls` and fail over to the next.
    pub fn start_on(urls: &[String], n: usize, hold: Duration) -> SimWorkers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|i| {
                // Spread the workers: each starts on another coordinator.
                let mut mine = urls.to_vec();
                mine.rotate_left(i % urls.len().max(1));
                tokio::spawn(sim_worker(mine, format!("sim-{i}"), hold, stop.clone()))
            })
            .collect();
        SimWorkers { stop, handles }
    }

    /// Stops the workers; returns how many reports they made in all.
    pub async fn stop(self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        let mut reports = 0;
        for handle in self.handles {
            reports += handle.await.expect("worker");
        }
        reports
    }
}
