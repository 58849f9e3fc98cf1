//! The Python client (`clients/python`) end to end: a fresh venv, `pip install ./clients/python`,
//! its digits example against the real `nat-coordinator` binary (temporary SQLite database) and
//! one real `nat-worker`, checked over gRPC from here; then the client's own tests against the
//! same coordinator.
//!
//! Needs `python3` with the venv module (`PYTHON` overrides the interpreter) and PyPI. pip
//! caches its downloads in `$NAT_CACHE_DIR/pip` (default `~/.cache/nat-orchestrator/pip`), so a
//! rerun installs from the cache.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nat_proto::v1;

use common::{
    assert_measured, get_job, job_result, jobs_client, CoordinatorProcess, WorkerProcess,
};

/// The repository root (the parent of this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// pip's cache: `$NAT_CACHE_DIR/pip`, else `~/.cache/nat-orchestrator/pip`.
fn pip_cache_dir() -> PathBuf {
    let cache = std::env::var_os("NAT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/nat-orchestrator")
        });
    cache.join("pip")
}

/// What a finished command printed (stdout and stderr together, in one log file).
struct Finished {
    success: bool,
    output: String,
}

/// Runs `command` with its output in `log`; kills it after `limit`. Off the async runtime.
async fn run(mut command: Command, log: PathBuf, limit: Duration) -> Finished {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&log).unwrap();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut output = std::fs::read_to_string(&log).unwrap_or_default();
        if status.is_none() {
            output.push_str(&format!("\n[killed after {limit:?}]"));
        }
        Finished {
            success: status.is_some_and(|s| s.success()),
            output,
        }
    })
    .await
    .unwrap()
}

/// `python -m pip install ARGS` in the venv, with the shared cache; panics with pip's output.
async fn pip_install(python: &Path, args: &[OsString], log: PathBuf) {
    let mut command = Command::new(python);
    command
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .arg("--cache-dir")
        .arg(pip_cache_dir())
        .args(args);
    let what = format!("{command:?}");
    let finished = run(command, log, Duration::from_secs(600)).await;
    assert!(finished.success, "{what} failed:\n{}", finished.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_runs_the_digits_example_and_its_tests_against_a_live_coordinator() {
    let repo = repo_root();
    let scratch = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::spawn(
        "127.0.0.1:0",
        &scratch.path().join("coordinator.db"),
        "20",
        &scratch.path().join("coordinator.log"),
    );
    let mut client = jobs_client(&coordinator.url()).await;
    let _worker = WorkerProcess::spawn(&coordinator.url(), "py-client", scratch.path(), &[]);

    // A fresh venv and the client from the working tree, as a user installs it.
    let venv = scratch.path().join("venv");
    let interpreter = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let mut create = Command::new(&interpreter);
    create.args(["-m", "venv"]).arg(&venv);
    let created = run(
        create,
        scratch.path().join("venv.log"),
        Duration::from_secs(120),
    )
    .await;
    assert!(
        created.success,
        "{interpreter:?} -m venv failed (Debian: apt-get install python3-venv):\n{}",
        created.output
    );
    let python = venv.join("bin/python");
    pip_install(
        &python,
        &[repo.join("clients/python").into()],
        scratch.path().join("pip-client.log"),
    )
    .await;

    // The example, as the README runs it: submits, follows, prints the accuracies.
    let mut example = Command::new(&python);
    example
        .arg(repo.join("clients/python/examples/digits.py"))
        .args(["--coordinator", &coordinator.grpc])
        .current_dir(scratch.path());
    let ran = run(
        example,
        scratch.path().join("example.log"),
        Duration::from_secs(300),
    )
    .await;
    assert!(ran.success, "the digits example failed:\n{}", ran.output);
    let job_id = ran
        .output
        .lines()
        .find_map(|line| line.strip_prefix("job_id="))
        .unwrap_or_else(|| panic!("the example printed no job_id= line:\n{}", ran.output))
        .trim()
        .to_owned();

    // What the coordinator says about the example's job.
    let job = get_job(&mut client, &job_id).await;
    assert_eq!(job.state, v1::JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.kind, v1::JobKind::Evaluate as i32);
    assert_eq!(job.dataset, "digits");
    assert_eq!(job.tasks_succeeded, 2, "{job:?}");
    let result = job_result(&mut client, &job_id).await;
    assert_eq!(result.architectures.len(), 2);
    assert_measured(result.architectures.iter().map(|a| a.result.as_ref()));
    for architecture in &result.architectures {
        let accuracy = architecture.result.as_ref().unwrap().accuracy;
        let printed = format!("[{}] accuracy {accuracy:.4}", architecture.index);
        assert!(
            ran.output.contains(&printed),
            "the example printed {printed:?}:\n{}",
            ran.output
        );
    }
    assert!(
        ran.output.contains(&format!("job {job_id}: succeeded")),
        "the progress display and the final line:\n{}",
        ran.output
    );

    // The client's own tests, on the installed package (run from outside the source tree).
    pip_install(
        &python,
        &[
            "-r".into(),
            repo.join("clients/python/tests/requirements.txt").into(),
        ],
        scratch.path().join("pip-tests.log"),
    )
    .await;
    let tests = repo.join("clients/python/tests");
    let mut unittest = Command::new(&python);
    unittest
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(&tests)
        .arg("-t")
        .arg(&tests)
        .env("NAT_COORDINATOR", &coordinator.grpc)
        .env("NAT_REPO_ROOT", &repo)
        .current_dir(scratch.path());
    let tested = run(
        unittest,
        scratch.path().join("unittest.log"),
        Duration::from_secs(300),
    )
    .await;
    eprintln!("{}", tested.output);
    assert!(tested.success, "the Python client's tests failed");
    let ran_tests = tested.output.lines().find_map(|line| {
        line.strip_prefix("Ran ")?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    });
    assert!(
        ran_tests.is_some_and(|n| n >= 7),
        "unittest ran fewer tests than there are: {ran_tests:?}"
    );
}
