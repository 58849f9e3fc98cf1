//! End to end, `reward = supernet`: the real `nat-coordinator` binary on a temporary SQLite
//! database and one real `nat-worker` run an optimize job on the 8×8 digits to the end. The
//! worker trains its weight-sharing supernet across the job's `supernet` tasks and scores the
//! (β, α) pairs; derive and the final check train from scratch (`train_eval`).
//!
//! As in `end_to_end.rs`, the coordinator binary is built and found as
//! `common::coordinator_binary` says (or taken from `NAT_COORDINATOR_BIN`).
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use nat_proto::v1;

use common::{
    assert_measured, job_result, jobs_client, submit, wait_for_job_end, CoordinatorProcess,
    WorkerProcess,
};

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
        "127.0.0.1:0",
        &scratch.path().join("coordinator.db"),
        "20",
        &scratch.path().join("coordinator.log"),
    );
    let mut client = jobs_client(&coordinator.url()).await;
    let started = Instant::now();
    let job_id = submit(&mut client, supernet_job()).await;
    // The worker prints its log if the wait below panics.
    let worker = WorkerProcess::spawn(&coordinator.url(), "e2e-supernet", scratch.path(), &[]);

    let finished = wait_for_job_end(&mut client, &job_id, Duration::from_secs(240)).await;
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

    let result = job_result(&mut client, &job_id).await;
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
    assert_measured([original.result.as_ref(), best.result.as_ref()]);
    // The worker scored the pairs: one supernet task of 2 pairs per round.
    let log = worker.log_text();
    let scored = log
        .lines()
        .filter(|l| l.contains("task finished pairs=2"))
        .count();
    assert_eq!(scored, 2, "two supernet tasks of two pairs ran:\n{log}");
}
