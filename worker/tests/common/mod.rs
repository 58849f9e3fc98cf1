//! Helpers shared by the worker's integration tests: spawning real `nat-worker` and
//! `nat-coordinator` processes, the data dir, job clients, waiting for conditions.
//!
//! The coordinator binary is not a target of this crate, so `CARGO_BIN_EXE_nat-coordinator` is
//! not available here. [`coordinator_binary`] runs `cargo build -p nat-coordinator` (cargo from
//! `$CARGO`, as set by `cargo test`; a no-op when it is up to date) and uses
//! `<target dir>/debug/nat-coordinator`, found next to this crate's own binary
//! (`CARGO_BIN_EXE_nat-worker`). Set `NAT_COORDINATOR_BIN=/path/to/nat-coordinator` to use another
//! build instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

/// The data dir the tests train on: `NAT_DATA_DIR`, else `~/.cache/nat-orchestrator/data`.
/// Digits must be there (`scripts/fetch-data.sh --only digits`).
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("NAT_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/nat-orchestrator/data")
        });
    assert!(
        dir.join("digits/digits.csv.gz").is_file(),
        "the digits dataset is missing under {}: run scripts/fetch-data.sh --only digits",
        dir.display()
    );
    dir
}

/// Canonical JSON of a small valid genotype (DARTS-like cells with cheap ops).
pub fn small_genotype_json() -> String {
    let cell = |reduce: bool| {
        let pool = if reduce {
            "max_pool_3x3"
        } else {
            "skip_connect"
        };
        serde_json::json!({
            "nodes": [
                {"inputs": [{"op": "sep_conv_3x3", "from": 0}, {"op": pool, "from": 1}]},
                {"inputs": [{"op": "skip_connect", "from": 0}, {"op": "conv_3x3", "from": 2}]}
            ],
            "concat": [2, 3]
        })
    };
    serde_json::json!({"normal": cell(false), "reduce": cell(true)}).to_string()
}

/// A real `nat-worker` process; killed when dropped. Its log is kept in a file.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl WorkerProcess {
    /// Start `nat-worker` against `coordinator` on the CPU with one thread (data dir: [`data_dir`]
    /// unless `extra` names one; no metrics listener unless `extra` names one).
    pub fn spawn(coordinator: &str, name: &str, scratch: &Path, extra: &[&str]) -> WorkerProcess {
        let log = scratch.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("create worker log");
        let checkpoints = scratch.join(format!("{name}-checkpoints"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_nat-worker"));
        command
            .args([
                "--coordinator",
                coordinator,
                "--devices",
                "cpu",
                "--threads",
                "1",
            ])
            .args(["--name", name, "--lease-wait", "1s", "--max-backoff", "1s"]);
        if !extra.contains(&"--data-dir") {
            command.arg("--data-dir").arg(data_dir());
        }
        // No metrics listener unless the test asks for one: the default port would clash
        // between workers running side by side.
        if !extra.contains(&"--metrics-listen") {
            command.args(["--metrics-listen", "off"]);
        }
        command
            .arg("--checkpoint-dir")
            .arg(&checkpoints)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command.spawn().expect("spawn nat-worker");
        WorkerProcess {
            child,
            log,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `KILL`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Wait for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

/// Poll `condition` every 50 ms until it holds or `limit` passes; panics with `what` on timeout.
pub async fn wait_until<F: FnMut() -> bool>(limit: Duration, what: &str, mut condition: F) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The coordinator binary, built once per test process.
pub fn coordinator_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("NAT_COORDINATOR_BIN") {
                return PathBuf::from(path);
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "nat-coordinator", "--bin", "nat-coordinator"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build -p nat-coordinator");
            assert!(status.success(), "cargo build -p nat-coordinator failed");
            let path =
                Path::new(env!("CARGO_BIN_EXE_nat-worker")).with_file_name("nat-coordinator");
            assert!(path.is_file(), "{} was not built", path.display());
            path
        })
        .clone()
}

/// A real coordinator process; killed when dropped (its log printed if the test panics).
pub struct CoordinatorProcess {
    pub child: Child,
    pub grpc: String,
    pub log: PathBuf,
}

impl CoordinatorProcess {
    /// Start `nat-coordinator` on `listen` (gRPC; HTTP on a free port) and the SQLite file
    /// `database`, with leases of `lease_seconds`; its log is appended to `log`.
    pub fn spawn(listen: &str, database: &Path, lease_seconds: &str, log: &Path) -> Self {
        Self::spawn_url(
            listen,
            &format!("sqlite:{}", database.display()),
            lease_seconds,
            log,
        )
    }

    /// The same on any database URL (SQLite or PostgreSQL).
    pub fn spawn_url(listen: &str, database_url: &str, lease_seconds: &str, log: &Path) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open coordinator log");
        let mut child = Command::new(coordinator_binary())
            .args(["--listen", listen, "--http-listen", "127.0.0.1:0"])
            .arg("--database-url")
            .arg(database_url)
            .args([
                "--lease-seconds",
                lease_seconds,
                "--heartbeat-seconds",
                "0.5",
            ])
            .args(["--expiry-interval-ms", "200", "--max-lease-wait-ms", "1000"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn nat-coordinator");
        let stdout = child.stdout.take().expect("coordinator stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the coordinator's listening line");
        // "listening grpc=ADDR http=ADDR"
        let grpc = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix("grpc="))
            .unwrap_or_else(|| panic!("unexpected first line from the coordinator: {line:?}"))
            .to_owned();
        CoordinatorProcess {
            child,
            grpc,
            log: log.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 the coordinator");
        self.child.wait().expect("reap the coordinator");
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- coordinator log -----\n{text}");
        }
    }
}

/// A `JobService` client of `url`, retrying the connection for up to 20 s.
pub async fn jobs_client(url: &str) -> JobServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match JobServiceClient::connect(url.to_owned()).await {
            Ok(client) => return client,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect to {url}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Submits `request`, which must be accepted; returns the job id.
pub async fn submit(
    client: &mut JobServiceClient<Channel>,
    request: v1::SubmitJobRequest,
) -> String {
    client
        .submit_job(request)
        .await
        .expect("SubmitJob")
        .into_inner()
        .job
        .expect("job")
        .job_id
}

pub async fn get_job(client: &mut JobServiceClient<Channel>, job_id: &str) -> v1::Job {
    client
        .get_job(v1::GetJobRequest {
            job_id: job_id.to_owned(),
        })
        .await
        .expect("GetJob")
        .into_inner()
        .job
        .expect("job")
}

pub async fn job_result(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
) -> v1::GetJobResultResponse {
    client
        .get_job_result(v1::GetJobResultRequest {
            job_id: job_id.to_owned(),
        })
        .await
        .expect("GetJobResult")
        .into_inner()
}

/// Whether a job in `state` is still queued or running.
pub fn in_progress(state: i32) -> bool {
    [v1::JobState::Queued as i32, v1::JobState::Running as i32].contains(&state)
}

/// Polls the job every 250 ms until it is final (GetJob errors, e.g. while the coordinator
/// restarts, are retried); panics if it is not final within `limit`.
pub async fn wait_for_job_end(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
    limit: Duration,
) -> v1::Job {
    let deadline = Instant::now() + limit;
    loop {
        let answer = client
            .get_job(v1::GetJobRequest {
                job_id: job_id.to_owned(),
            })
            .await;
        match answer {
            Ok(response) => {
                let job = response.into_inner().job.expect("job");
                if !in_progress(job.state) {
                    return job;
                }
                assert!(
                    Instant::now() < deadline,
                    "job {job_id} still unfinished after {limit:?}: {job:?}"
                );
            }
            Err(status) => assert!(
                Instant::now() < deadline,
                "job {job_id}: GetJob still failing after {limit:?}: {status}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// For each of `architectures`: its result is a measurement (accuracy in [0, 1], parameters and
/// multiply-adds counted).
pub fn assert_measured<'a>(
    architectures: impl IntoIterator<Item = Option<&'a v1::TrainEvalResult>>,
) {
    for result in architectures {
        let m = result.expect("a measurement");
        assert!((0.0..=1.0).contains(&m.accuracy), "{m:?}");
        assert!(m.params > 0 && m.madds > 0, "{m:?}");
    }
}
