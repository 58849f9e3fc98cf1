//! End to end, `reward = supernet`: the real `nat-coordinator` binary on a temporary SQLite
//! database and one real `nat-worker` run an optimize job on the 8×8 digits to the end. The
//! worker trains its weight-sharing supernet across the job's `supernet` tasks and scores the
//! (β, α) pairs; derive and the final check train from scratch (`train_eval`).
//!
//! As in `end_to_end.rs`, the coordinator binary is built with `cargo build -p nat-coordinator`
//! (a no-op when up to date) and found next to `CARGO_BIN_EXE_nat-worker`, or taken from
//! `NAT_COORDINATOR_BIN`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

use common::WorkerProcess;

fn coordinator_binary() -> PathBuf {
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
    let path = Path::new(env!("CARGO_BIN_EXE_nat-worker")).with_file_name("nat-coordinator");
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A real coordinator process; killed when dropped (its log printed if the test panics).
struct CoordinatorProcess {
    child: Child,
    grpc: String,
    log: PathBuf,
}

impl CoordinatorProcess {
    fn spawn(database: &Path, log: &Path) -> Self {
        let log_file = std::fs::File::create(log).expect("create coordinator log");
        let mut child = Command::new(coordinator_binary())
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .arg("--database-url")
            .arg(format!("sqlite:{}", database.display()))
            .args(["--lease-seconds", "20", "--heartbeat-seconds", "0.5"])
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

    fn url(&self) -> String {
        format!("http://{}", self.grpc)
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

async fn jobs_client(url: &str) -> JobServiceClient<Channel> {
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

/// An optimize job on DARTS_V2 and the digits with a tiny budget: 2 rounds of 2 pairs on a
/// C = 4, 3-cell supernet, then 2 derived candidates and the final check from scratch on 1 epoch
/// of 256 examples.
fn supernet_job() -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        kind: v1::JobKind::Optimize as i32,
        architectures: vec!["darts-v2".to_owned()],
        dataset: "digits".to_owned(),
        budget: Some(v1::BudgetSpec {
            preset: "smoke".to_owned(),
            overrides: Some(v1::BudgetOverrides {
                epochs: Some(1),
                max_train_examples: Some(256),
                max_eval_examples: Some(128),
                ..v1::BudgetOverrides::default()
            }),
        }),
        seed: 5,
        name: "supernet e2e".to_owned(),
        optimize: Some(v1::OptimizeSpec {
            reward: v1::RewardMode::Supernet as i32,
            iterations: 2,
            samples_per_iteration: 2,
            derive_samples: 2,
            supernet: Some(v1::SupernetSettings {
                batch_size: 16,
                train_steps_between_pairs: 1,
                max_train_examples: 256,
                ..v1::SupernetSettings::default()
            }),
            ..v1::OptimizeSpec::default()
        }),
        ..v1::SubmitJobRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_runs_a_supernet_optimize_job_to_the_end() {
    let scratch = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::spawn(
        &scratch.path().join("coordinator.db"),
        &scratch.path().join("coordinator.log"),
    );
    let mut client = jobs_client(&coordinator.url()).await;
    let started = Instant::now();
    let job_id = client
        .submit_job(supernet_job())
        .await
        .expect("SubmitJob")
        .into_inner()
        .job
        .expect("job")
        .job_id;
    let worker = WorkerProcess::spawn(&coordinator.url(), "e2e-supernet", scratch.path(), &[]);

    let limit = Duration::from_secs(240);
    let finished = loop {
        let job = client
            .get_job(v1::GetJobRequest {
                job_id: job_id.clone(),
            })
            .await
            .expect("GetJob")
            .into_inner()
            .job
            .expect("job");
        let running = [v1::JobState::Queued as i32, v1::JobState::Running as i32];
        if !running.contains(&job.state) {
            break job;
        }
        assert!(
            started.elapsed() < limit,
            "job still unfinished after {limit:?}: {job:?}\n----- worker log -----\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "supernet optimize job (2 rounds x 2 pairs, 2 candidates): {:.1} s from submission to the end",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}\n----- worker log -----\n{}",
        worker.log_text()
    );

    let result = client
        .get_job_result(v1::GetJobResultRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("GetJobResult")
        .into_inner();
    assert_eq!(result.kind, v1::JobKind::Optimize as i32);
    assert_eq!(
        result.rewards, 4,
        "2 rounds x 2 pairs scored on the supernet"
    );
    let policy = result.policy.as_ref().expect("policy");
    assert!(policy.version > 1, "the policy learned: {policy:?}");
    assert_eq!(result.optimize.len(), 1);
    let outcome = &result.optimize[0];
    let original = outcome.original.as_ref().expect("original");
    let best = outcome.best.as_ref().expect("best");
    assert_eq!(
        original.canonical_hash,
        nat_arch::parse_any("darts-v2")
            .expect("preset")
            .canonical_hash()
    );
    for a in [original, best] {
        let m = a.result.as_ref().expect("measurement");
        assert!((0.0..=1.0).contains(&m.accuracy), "{m:?}");
        assert!(m.params > 0 && m.madds > 0, "{m:?}");
    }
    // The worker scored the pairs: one supernet task of 2 pairs per round.
    let log = worker.log_text();
    let scored = log
        .lines()
        .filter(|l| l.contains("task finished pairs=2"))
        .count();
    assert_eq!(scored, 2, "two supernet tasks of two pairs ran:\n{log}");
}
