//! Helpers shared by the worker's integration tests: spawning real `nat-worker` processes, the
//! data dir, waiting for conditions.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
