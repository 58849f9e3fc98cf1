//! End to end, `reward = supernet`: the real `nat-coordinator` binary and two real `nat-worker`
//! processes run an optimize job on the 8×8 digits, on SQLite and on PostgreSQL. Every learning
//! round is sharded across both workers (each fetches the round's weight version over gRPC,
//! trains its shard with libtorch, scores its pairs and uploads its weights; the coordinator
//! averages them into the next version). Mid-job, a worker is killed with SIGKILL in the middle
//! of a round, and later the coordinator too; the job still ends with every reward counted
//! exactly once and the version sequence unbroken.
//!
//! As in `end_to_end.rs`, the coordinator binary is built and found as
//! `common::coordinator_binary` says (or taken from `NAT_COORDINATOR_BIN`).
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nat_proto::v1;
use sqlx::Connection;

use common::{
    assert_measured, job_result, jobs_client, submit, wait_for_job_end, CoordinatorProcess,
    WorkerProcess,
};

const ROUNDS: u32 = 3;
const PAIRS: u32 = 4;

/// An optimize job on DARTS_V2 and the digits with a tiny budget: 3 rounds of 4 pairs on a
/// C = 4, 3-cell supernet (shards of 40 steps, so that a round lasts long enough to be
/// interrupted), then 2 derived candidates and the final check from scratch.
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
            iterations: ROUNDS,
            samples_per_iteration: PAIRS,
            derive_samples: 2,
            supernet: Some(v1::SupernetSettings {
                batch_size: 16,
                train_steps_between_pairs: 1,
                max_train_examples: 256,
                steps_per_shard: 40,
                warmup_steps: 20,
                ..v1::SupernetSettings::default()
            }),
            ..v1::OptimizeSpec::default()
        }),
        ..v1::SubmitJobRequest::default()
    }
}

/// Waits until `log` (re-read) has a line containing every part of `needles`.
async fn wait_for_line(path: &Path, needles: &[&str], limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no line with {needles:?} in {}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn registered_workers(
    client: &mut v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
) -> usize {
    client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
        .len()
}

async fn fleet_survives_kills(database_url: &str, scratch: &Path) {
    let log = scratch.join("coordinator.log");
    let mut coordinator = CoordinatorProcess::spawn_url("127.0.0.1:0", database_url, "3", &log);
    let url = coordinator.url();
    let mut client = jobs_client(&url).await;
    // Both workers are registered before the job: `shards: auto` gives one shard per slot.
    let mut a = WorkerProcess::spawn(&url, "worker-a", scratch, &[]);
    let b = WorkerProcess::spawn(&url, "worker-b", scratch, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while registered_workers(&mut client).await < 2 {
        assert!(Instant::now() < deadline, "both workers register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let job_id = submit(&mut client, supernet_job()).await;

    // Round 1 (base version 2): worker A dies in the middle of its shard.
    wait_for_line(
        &a.log,
        &["supernet weights fetched", "version=2"],
        Duration::from_secs(240),
        "worker A starts a shard of round 1",
    )
    .await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let a2 = WorkerProcess::spawn(&url, "worker-a2", scratch, &[]);
    // Round 2 (base version 3): the coordinator dies while a shard trains; a new one takes
    // over on the same address and database.
    wait_for_line(
        &b.log,
        &["supernet weights fetched", "version=3"],
        Duration::from_secs(240),
        "worker B starts a shard of round 2",
    )
    .await;
    let address = coordinator.grpc.clone();
    coordinator.kill9();
    let _coordinator = CoordinatorProcess::spawn_url(&address, database_url, "3", &log);
    let mut client = jobs_client(&url).await;

    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(420)).await;
    eprintln!(
        "supernet optimize job ({ROUNDS} rounds x {PAIRS} pairs on 2 workers, a worker and the coordinator killed): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        finished.state,
        v1::JobState::Succeeded as i32,
        "{finished:?}\n----- worker b log -----\n{}\n----- worker a2 log -----\n{}",
        b.log_text(),
        a2.log_text()
    );

    let result = job_result(&mut client, &job_id).await;
    assert_eq!(
        result.rewards,
        u64::from(ROUNDS * PAIRS),
        "every pair scored once, none lost to the kills"
    );
    let policy = result.policy.as_ref().expect("policy");
    assert!(policy.version > 1, "the policy learned: {policy:?}");
    let sn = result
        .learning
        .as_ref()
        .and_then(|l| l.supernet.as_ref())
        .expect("learning.supernet");
    assert_eq!((sn.version, sn.rounds), (u64::from(ROUNDS) + 1, ROUNDS));
    assert!(sn.workers_seen >= 2, "{sn:?}");
    let outcome = &result.optimize[0];
    assert_measured([
        outcome.original.as_ref().and_then(|o| o.result.as_ref()),
        outcome.best.as_ref().and_then(|o| o.result.as_ref()),
    ]);

    // The store: versions 1..=ROUNDS+1 from the warm-up and each round in order, every round
    // averaged from two shards (a killed worker's shard is leased again).
    let store = nat_store::connect(database_url).await.unwrap();
    let job: nat_store::JobId = job_id.parse().unwrap();
    assert_eq!(
        store.count_supernet_versions(job).await.unwrap(),
        u64::from(ROUNDS) + 1
    );
    for v in 1..=i64::from(ROUNDS) + 1 {
        let row = store.supernet_version(job, v).await.unwrap();
        assert_eq!(row.round, v - 2, "version {v}");
        if row.round >= 0 {
            assert_eq!(row.shards, 2, "version {v}: both shards averaged");
        }
        // Round 0 ran before any kill: each worker trained one of its shards. Later rounds
        // may see a survivor finish a killed worker's shard (or lease the other shard first
        // after the coordinator came back), so they are only required to have both shards.
        if row.round == 0 {
            let workers: BTreeSet<&String> = row.workers.iter().collect();
            assert_eq!(
                workers.len(),
                2,
                "version {v}: two workers: {:?}",
                row.workers
            );
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("supernet version committed"),
        "{log_text}"
    );
    assert!(
        log_text.contains("derive screened on the supernet"),
        "derive scored its candidates on the supernet (real workers):\n{log_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_workers_share_a_supernet_through_kills_on_sqlite() {
    let scratch = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", scratch.path().join("coordinator.db").display());
    fleet_survives_kills(&url, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_workers_share_a_supernet_through_kills_on_postgres() {
    let scratch = tempfile::tempdir().unwrap();
    let name = format!("nat_e2e_{:016x}", rand::random::<u64>());
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    fleet_survives_kills(&url, scratch.path()).await;
    let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}
