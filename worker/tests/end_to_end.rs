//! End to end: the real `nat-coordinator` binary on a temporary SQLite database and real
//! `nat-worker` processes training on the digits dataset over loopback gRPC.
//!
//! The coordinator binary is built and found as `common::coordinator_binary` says (set
//! `NAT_COORDINATOR_BIN=/path/to/nat-coordinator` to use another build).
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use common::{
    assert_measured, get_job, in_progress, job_result, jobs_client, submit, wait_for_job_end,
    wait_until, CoordinatorProcess, WorkerProcess,
};

/// An `evaluate` job on digits with the smoke budget, `epochs` overridden so tasks last long
/// enough to be interrupted.
fn evaluate(architectures: &[&str], epochs: u32) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        kind: v1::JobKind::Evaluate as i32,
        architectures: architectures.iter().map(|a| (*a).to_owned()).collect(),
        dataset: "digits".to_owned(),
        budget: Some(v1::BudgetSpec {
            preset: "smoke".to_owned(),
            overrides: Some(v1::BudgetOverrides {
                epochs: Some(epochs),
                ..v1::BudgetOverrides::default()
            }),
        }),
        seed: 11,
        name: "worker e2e".to_owned(),
        ..v1::SubmitJobRequest::default()
    }
}

/// Every `TaskCompleted` event of the job, from the start of its event log.
async fn completions(
    client: &mut JobServiceClient<Channel>,
    job_id: &str,
) -> Vec<v1::TaskCompleted> {
    let mut stream = client
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.to_owned(),
            after_sequence: 0,
        })
        .await
        .expect("WatchJob")
        .into_inner();
    let mut completed = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .map(|item| item.transpose().expect("event"))
    {
        if let Some(v1::job_event::Event::TaskCompleted(done)) = event.event {
            completed.push(done);
        }
    }
    completed
}

/// Task ids a worker leased and has not reported yet, from its log.
fn tasks_in_progress(worker: &WorkerProcess) -> Vec<String> {
    let log = worker.log_text();
    let task_of = |line: &str| {
        line.split("task_id=")
            .nth(1)
            .and_then(|rest| rest.split([' ', '}', ':']).next())
            .map(|id| id.trim_matches('"').to_owned())
    };
    let mut open: Vec<String> = Vec::new();
    for line in log.lines() {
        if line.contains("task leased") {
            open.extend(task_of(line));
        } else if line.contains("result reported") || line.contains("result rejected") {
            if let Some(id) = task_of(line) {
                open.retain(|t| t != &id);
            }
        }
    }
    open
}

/// The worker id a worker registered under, from its log.
fn worker_id(worker: &WorkerProcess) -> Option<String> {
    worker.log_text().lines().rev().find_map(|line| {
        line.contains("registered with the coordinator")
            .then(|| line.split("worker_id=").nth(1))
            .flatten()
            .and_then(|rest| rest.split_whitespace().next())
            .map(|id| id.trim_matches('"').to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_finish_an_evaluate_job_despite_kill_9_of_one_mid_task() {
    let scratch = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::spawn(
        "127.0.0.1:0",
        &scratch.path().join("coordinator.db"),
        "3",
        &scratch.path().join("coordinator.log"),
    );
    let mut client = jobs_client(&coordinator.url()).await;
    let architectures = ["darts-v2", "enas", "resnet-block", "vgg-block"];
    // 20 epochs: long enough (seconds per task even on a fast machine) for a worker to be caught
    // in the middle of one.
    let job_id = submit(&mut client, evaluate(&architectures, 20)).await;
    let mut workers = [
        WorkerProcess::spawn(&coordinator.url(), "e2e-a", scratch.path(), &[]),
        WorkerProcess::spawn(&coordinator.url(), "e2e-b", scratch.path(), &[]),
    ];

    // Kill -9 a worker while it trains: it leased a task and, still 700 ms later, has not reported
    // it (a task that ends within that window is skipped and the next one is tried).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (victim_index, victim_task) = loop {
        assert!(
            Instant::now() < deadline,
            "no worker was seen in the middle of a task"
        );
        assert!(
            in_progress(get_job(&mut client, &job_id).await.state),
            "the job ended before a worker could be caught in the middle of a task"
        );
        let candidate = workers.iter().enumerate().find_map(|(index, worker)| {
            tasks_in_progress(worker)
                .into_iter()
                .next()
                .map(|task| (index, task))
        });
        match candidate {
            Some((index, task)) => {
                tokio::time::sleep(Duration::from_millis(700)).await;
                if tasks_in_progress(&workers[index]).contains(&task) {
                    break (index, task);
                }
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let victim_id = worker_id(&workers[victim_index]).expect("victim registered");
    workers[victim_index].signal("KILL");
    let status = workers[victim_index]
        .wait_exit(Duration::from_secs(10))
        .expect("the killed worker exits");
    assert!(!status.success());
    let survivor = &mut workers[1 - victim_index];

    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(240)).await;
    eprintln!(
        "evaluate job of 4 architectures, one worker killed: {:.1} s from submission to the end",
        (finished.finished_at_unix_ms - finished.created_at_unix_ms) as f64 / 1000.0
    );
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}"
    );
    assert!(survivor.is_running(), "the surviving worker keeps serving");
    assert_eq!(finished.tasks_total, 4);
    assert_eq!(finished.tasks_succeeded, 4, "{finished:?}");
    assert_eq!(finished.tasks_failed + finished.tasks_cancelled, 0);

    let result = job_result(&mut client, &job_id).await;
    assert_eq!(result.architectures.len(), 4);
    for architecture in &result.architectures {
        assert_eq!(architecture.state, v1::TaskState::Succeeded as i32);
    }
    assert_measured(result.architectures.iter().map(|a| a.result.as_ref()));

    // Every task completed exactly once; the killed worker's task was re-leased and completed by
    // the survivor.
    let completed = completions(&mut client, &job_id).await;
    assert_eq!(completed.len(), 4, "one completion per task: {completed:?}");
    let task_ids: HashSet<&str> = completed.iter().map(|c| c.task_id.as_str()).collect();
    assert_eq!(task_ids.len(), 4, "no task completed twice");
    let indices: HashSet<u32> = completed.iter().map(|c| c.architecture_index).collect();
    assert_eq!(indices, HashSet::from([0, 1, 2, 3]));
    let redone = completed
        .iter()
        .find(|c| c.task_id == victim_task)
        .expect("the killed worker's task completed");
    assert!(redone.attempt >= 2, "re-leased after the kill: {redone:?}");
    assert_ne!(
        redone.worker_id, victim_id,
        "completed by the surviving worker"
    );
    let per_worker: HashMap<&str, usize> = completed.iter().fold(HashMap::new(), |mut acc, c| {
        *acc.entry(c.worker_id.as_str()).or_default() += 1;
        acc
    });
    assert!(per_worker
        .keys()
        .all(|w| *w != victim_id || per_worker[w] < 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconnects_after_a_coordinator_restart_and_reports_its_task() {
    let scratch = tempfile::tempdir().unwrap();
    let database = scratch.path().join("coordinator.db");
    let log = scratch.path().join("coordinator.log");
    let mut coordinator = CoordinatorProcess::spawn("127.0.0.1:0", &database, "20", &log);
    let address = coordinator.grpc.clone();
    let url = coordinator.url();
    let mut client = jobs_client(&url).await;
    // Long enough that the task in hand outlives the coordinator's outage on a fast machine.
    let job_id = submit(&mut client, evaluate(&["darts-v2", "resnet-block"], 15)).await;
    let mut worker = WorkerProcess::spawn(&url, "e2e-restart", scratch.path(), &[]);

    wait_until(
        Duration::from_secs(90),
        "the worker in the middle of a task",
        || !tasks_in_progress(&worker).is_empty(),
    )
    .await;
    let task_in_hand = tasks_in_progress(&worker)[0].clone();
    coordinator.kill9();
    // The coordinator is away for a while; the worker keeps training and retries.
    wait_until(
        Duration::from_secs(30),
        "the worker to notice the outage",
        || worker.log_text().contains("coordinator unreachable"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let coordinator = CoordinatorProcess::spawn(&address, &database, "20", &log);
    let mut client = jobs_client(&coordinator.url()).await;

    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(180)).await;
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}"
    );
    assert_eq!(finished.tasks_succeeded, 2, "{finished:?}");
    assert!(worker.is_running());
    let completed = completions(&mut client, &job_id).await;
    assert_eq!(completed.len(), 2, "{completed:?}");
    let in_hand = completed
        .iter()
        .find(|c| c.task_id == task_in_hand)
        .expect("the task in hand during the outage completed");
    assert_eq!(
        in_hand.attempt, 1,
        "finished by the same lease, reported after the coordinator returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_registers_again_with_a_coordinator_that_lost_its_database() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("coordinator.log");
    let mut first =
        CoordinatorProcess::spawn("127.0.0.1:0", &scratch.path().join("first.db"), "20", &log);
    let address = first.grpc.clone();
    let worker = WorkerProcess::spawn(&first.url(), "e2e-amnesia", scratch.path(), &[]);
    wait_until(Duration::from_secs(30), "the first registration", || {
        worker_id(&worker).is_some()
    })
    .await;
    let old_id = worker_id(&worker).unwrap();
    first.kill9();
    // A new coordinator on the same address but an empty database: it has never seen the worker.
    let second = CoordinatorProcess::spawn(&address, &scratch.path().join("second.db"), "20", &log);
    let mut client = jobs_client(&second.url()).await;
    let job_id = submit(&mut client, evaluate(&["resnet-block"], 1)).await;
    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(120)).await;
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}"
    );
    let new_id = worker_id(&worker).expect("registered");
    assert_ne!(new_id, old_id, "the worker registered again");
    assert!(worker
        .log_text()
        .contains("the coordinator does not know this worker"));
}

/// `--coordinator DEAD,LIVE`: the first URL refuses connections, so the worker moves on to the
/// second, registers there and finishes the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_a_dead_coordinator_first_fails_over_to_the_next() {
    let scratch = tempfile::tempdir().unwrap();
    let database = scratch.path().join("coordinator.db");
    let log = scratch.path().join("coordinator.log");
    let coordinator = CoordinatorProcess::spawn("127.0.0.1:0", &database, "20", &log);
    let url = coordinator.url();
    let mut client = jobs_client(&url).await;
    let job_id = submit(&mut client, evaluate(&["darts-v2"], 1)).await;
    // Port 1 on loopback refuses connections.
    let urls = format!("http://127.0.0.1:1,{url}");
    let worker = WorkerProcess::spawn(&urls, "e2e-failover", scratch.path(), &[]);

    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(120)).await;
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}\n{}",
        worker.log_text()
    );
    assert_eq!(finished.tasks_succeeded, 1, "{finished:?}");
    let text = worker.log_text();
    assert!(text.contains("moving on to the next one"), "{text}");
    assert!(text.contains("registered with the coordinator"), "{text}");
}
