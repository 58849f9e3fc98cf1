//! The `optimize` job kind with `reward = supernet`: a coordinator on port 0, real gRPC, SQLite
//! and PostgreSQL (fresh database each), and a scripted worker that answers `supernet` tasks with
//! per-pair accuracies computed from the genotypes and `train_eval` tasks (derive, final check)
//! with a synthetic accuracy.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{submit, test_config, TestDb, TestServer};
use nat_proto::v1;
use nat_schema::budget::{Budget, SupernetBudget};
use tonic::transport::Channel;
use v1::worker_service_client::WorkerServiceClient;

/// Synthetic supernet accuracy of an architecture in (0, 1): more skip connections, higher.
fn supernet_accuracy(genotype_json: &str) -> f64 {
    let g = nat_arch::Genotype::from_json_str(genotype_json).expect("canonical genotype");
    let skips = [&g.normal, &g.reduce]
        .iter()
        .flat_map(|c| c.nodes.iter().flat_map(|n| n.inputs.iter()))
        .filter(|e| e.op == nat_arch::Op::SkipConnect)
        .count();
    0.3 + 0.5 * skips as f64 / 16.0
}

/// Synthetic from-scratch accuracy of a `train_eval` task.
fn train_eval_result(te: &v1::TrainEvalTask) -> v1::TrainEvalResult {
    v1::TrainEvalResult {
        accuracy: supernet_accuracy(&te.genotype_json),
        loss: 0.5,
        params: 1000,
        madds: 50_000,
        wall_seconds: 0.01,
        images_per_second: 1000.0,
    }
}

/// What the scripted worker saw.
#[derive(Debug, Default)]
struct Seen {
    /// Supernet tasks answered, in order: (task id, supernet key, pairs, the rewards the
    /// reported scores imply, per pair).
    supernet: Vec<(String, String, Vec<v1::GenotypePair>, Vec<f64>)>,
    /// `train_eval` tasks answered.
    train_eval: usize,
}

/// What the test expects of every supernet task.
struct Expect {
    job_id: String,
    pairs: usize,
    settings: v1::SupernetSettings,
    input_hash: String,
}

impl Expect {
    /// `pairs` pairs per task of `job_id` on the input `darts-v2`, with [`expected_settings`].
    fn new(job_id: &str, pairs: usize) -> Expect {
        Expect {
            job_id: job_id.to_owned(),
            pairs,
            settings: expected_settings(),
            input_hash: nat_arch::parse_any("darts-v2")
                .expect("preset")
                .canonical_hash(),
        }
    }
}

fn check_supernet_task(task: &v1::Task, sn: &v1::SupernetTask, e: &Expect) {
    assert_eq!(task.job_id, e.job_id);
    assert_eq!(sn.pairs.len(), e.pairs, "one pair per sample of the round");
    assert_eq!(sn.dataset, "digits");
    assert_eq!(sn.seed, 1);
    assert_eq!(sn.supernet_key, format!("job-{}", e.job_id), "a stable key");
    assert_eq!(sn.settings.as_ref(), Some(&e.settings), "settings resolved");
    let space = nat_policy::ActionSpace::Nat(nat_arch::OpSet::NatFullyConcat);
    for (i, p) in sn.pairs.iter().enumerate() {
        let beta = nat_arch::Genotype::from_json_str(&p.beta_json).expect("beta");
        let alpha = nat_arch::Genotype::from_json_str(&p.alpha_json).expect("alpha");
        assert_eq!(beta.canonical_hash(), e.input_hash, "β is the job's input");
        nat_policy::input::validate_input(space, &alpha, &format!("pairs[{i}].alpha"))
            .expect("α is in the space");
        assert_eq!(alpha.num_nodes(), beta.num_nodes());
        // NAT only replaces ops (null / same / skip); the node structure is β's.
        for (cb, ca) in [(&beta.normal, &alpha.normal), (&beta.reduce, &alpha.reduce)] {
            for (nb, na) in cb.nodes.iter().zip(&ca.nodes) {
                for (eb, ea) in nb.inputs.iter().zip(&na.inputs) {
                    assert_eq!(eb.from, ea.from, "pair {i}: sources kept");
                    assert!(
                        ea.op == eb.op
                            || ea.op == nat_arch::Op::SkipConnect
                            || ea.op == nat_arch::Op::Null,
                        "pair {i}: {} → {} is not a NAT action",
                        eb.op,
                        ea.op
                    );
                }
            }
        }
    }
}

/// Leases and answers tasks until the job is final, or until `stop_after_supernet` supernet
/// tasks were answered. With `abandon_first`, the first supernet task leased is dropped without
/// an answer (its worker "dies") and the clock is moved past the lease so that it is re-leased.
async fn work(
    server: &TestServer,
    mut w: WorkerServiceClient<Channel>,
    worker: String,
    e: &Expect,
    stop_after_supernet: Option<usize>,
    mut abandon_first: bool,
    seen: &mut Seen,
) {
    let mut jobs = server.jobs().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answered = 0usize;
    while stop_after_supernet.is_none_or(|n| answered < n) {
        let Some(mut task) =
            common::next_task(&mut w, &worker, &mut jobs, &e.job_id, deadline).await
        else {
            return;
        };
        if abandon_first && matches!(task.payload, Some(v1::task::Payload::Supernet(_))) {
            abandon_first = false;
            // The worker dies: its lease runs out and the task goes back to the queue.
            server.advance(test_config().lease_duration * 2);
            nat_coordinator::collect_expired(&server.coordinator).await;
            let again = common::lease(&mut w, &worker, 5000)
                .await
                .expect("the abandoned supernet task is leased again");
            assert_eq!(again.task_id, task.task_id);
            assert_eq!(again.attempt, 2);
            assert_eq!(again.payload, task.payload, "same pairs, key, settings");
            task = again;
        }
        let outcome = match &task.payload {
            Some(v1::task::Payload::Supernet(sn)) => {
                check_supernet_task(&task, sn, e);
                let scores: Vec<v1::PairScore> = sn
                    .pairs
                    .iter()
                    .map(|p| v1::PairScore {
                        acc_beta: supernet_accuracy(&p.beta_json),
                        acc_alpha: supernet_accuracy(&p.alpha_json),
                    })
                    .collect();
                seen.supernet.push((
                    task.task_id.clone(),
                    sn.supernet_key.clone(),
                    sn.pairs.clone(),
                    scores.iter().map(|s| s.acc_alpha - s.acc_beta).collect(),
                ));
                answered += 1;
                v1::report_result_request::Outcome::Supernet(v1::SupernetResult {
                    scores,
                    wall_seconds: 0.01,
                })
            }
            Some(v1::task::Payload::TrainEval(te)) => {
                seen.train_eval += 1;
                v1::report_result_request::Outcome::TrainEval(train_eval_result(te))
            }
            None => panic!("a task without payload"),
        };
        let r = w
            .report_result(common::report(&worker, &task, outcome))
            .await
            .expect("report")
            .into_inner();
        assert!(!r.duplicate);
    }
}

fn supernet_request(iterations: u32, samples: u32) -> v1::SubmitJobRequest {
    let mut r = common::optimize_request("supernet test", iterations, samples, 3);
    let o = r.optimize.as_mut().expect("spec");
    o.reward = v1::RewardMode::Supernet as i32;
    o.supernet = Some(v1::SupernetSettings {
        batch_size: 16,
        train_steps_between_pairs: 3,
        ..Default::default()
    });
    r
}

/// The settings every task must carry: smoke's supernet preset with the request's overrides.
fn expected_settings() -> v1::SupernetSettings {
    let s = SupernetBudget::preset("smoke");
    v1::SupernetSettings {
        init_channels: s.init_channels,
        layers: s.layers,
        batch_size: 16,
        train_steps_between_pairs: 3,
        learning_rate: s.learning_rate,
        momentum: s.momentum,
        weight_decay: s.weight_decay,
        grad_clip: s.grad_clip,
        max_train_examples: s.max_train_examples,
        validation_fraction: s.validation_fraction,
        eval_batches: s.eval_batches,
        max_wall_seconds: s.max_wall_seconds,
        op_set: "nat-fully-concat".into(),
        num_nodes: 4,
    }
}

/// The job succeeded, every reward reached the policy exactly once, and the rewards it learned
/// from are the ones the worker's scores imply.
async fn check_learned(server: &TestServer, job_id: &str, seen: &Seen, rounds: usize, m: usize) {
    // The policy consumed exactly the reported rewards, each once. Derive and final check work
    // as in proxy mode: original and best, measured from scratch.
    let result = common::check_optimize_result(server, job_id, (rounds * m) as u64).await;
    let o = &result.optimize[0];
    let original = o.original.as_ref().expect("original");
    let best = o.best.as_ref().expect("best");
    for a in [original, best] {
        let m = a.result.as_ref().expect("measurement");
        assert!(
            (m.accuracy - supernet_accuracy(&a.genotype_json)).abs() < 1e-9,
            "{m:?}"
        );
    }

    // One supernet task per round, all on the same supernet key.
    assert_eq!(seen.supernet.len(), rounds);
    let keys: Vec<&String> = seen.supernet.iter().map(|(_, k, _, _)| k).collect();
    assert!(keys.iter().all(|k| **k == format!("job-{job_id}")));
    let tasks: Vec<&String> = seen.supernet.iter().map(|(t, _, _, _)| t).collect();
    let mut distinct = tasks.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), rounds, "no round's task was created twice");

    // Each pair's sample holds the reward the worker's scores imply, consumed by exactly one
    // policy version (none dropped: nothing is stale here).
    let store = &server.coordinator.store;
    for (task_id, _, pairs, rewards) in &seen.supernet {
        let task = store
            .get_task(task_id.parse().expect("task uuid"))
            .await
            .expect("task");
        let ids = task.payload["sample_ids"].as_array().expect("sample ids");
        assert_eq!(ids.len(), pairs.len());
        for ((id, pair), reward) in ids.iter().zip(pairs).zip(rewards) {
            let sample = store
                .get_sample(id.as_i64().expect("sample id").into())
                .await
                .expect("sample");
            assert_eq!(sample.job_id.to_string(), job_id);
            let alpha =
                nat_arch::Genotype::from_json_str(&sample.output.to_string()).expect("stored α");
            let sent = nat_arch::Genotype::from_json_str(&pair.alpha_json).expect("sent α");
            assert_eq!(alpha.canonical_hash(), sent.canonical_hash());
            let stored = sample.reward.expect("reward recorded");
            assert!((stored - reward).abs() < 1e-12, "{stored} vs {reward}");
            assert!(sample.consumed_in_version.is_some() && !sample.dropped);
        }
    }
    let id: nat_store::JobId = job_id.parse().expect("uuid");
    let events = store.events_after(id, 0, 10_000).await.expect("events");
    let rounds_logged: BTreeMap<u64, usize> =
        events
            .iter()
            .filter(|e| e.kind == "rewards")
            .fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e.payload["iteration"].as_u64().expect("iteration"))
                    .or_default() += 1;
                m
            });
    assert_eq!(rounds_logged.len(), rounds);
    assert!(events.iter().any(|e| e.kind == "policy_update"));
}

async fn supernet_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), true).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, supernet_request(3, 4)).await;
    assert_eq!(submitted.kind, v1::JobKind::Optimize as i32);
    let e = Expect::new(&submitted.job_id, 4);
    let (w, worker) = common::registered(&server, "sim").await;
    let mut seen = Seen::default();
    work(&server, w, worker, &e, None, true, &mut seen).await;
    assert!(seen.train_eval >= 2, "derive and final check trained");
    check_learned(&server, &submitted.job_id, &seen, 3, 4).await;
    server.stop().await;
}
both_backends!(supernet_job_learns_from_pair_scores, supernet_flow);

async fn restart_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, supernet_request(3, 2)).await;
    let e = Expect::new(&submitted.job_id, 2);
    let (w, worker) = common::registered(&server, "sim").await;
    let mut seen = Seen::default();
    // One round's task answered, then the coordinator stops (possibly between the report and
    // the policy update).
    work(&server, w, worker.clone(), &e, Some(1), false, &mut seen).await;
    let server = common::restart_mid_job(server, db, &submitted.job_id).await;
    let w = server.workers().await;
    work(&server, w, worker, &e, None, false, &mut seen).await;
    check_learned(&server, &submitted.job_id, &seen, 3, 2).await;
    server.stop().await;
}
both_backends!(supernet_job_resumes_after_restart, restart_flow);

async fn failed_round(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, supernet_request(2, 2)).await;
    let (mut w, worker) = common::registered(&server, "sim").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = loop {
        assert!(
            Instant::now() < deadline,
            "the first round's task is queued"
        );
        if let Some(t) = common::lease(&mut w, &worker, 500).await {
            break t;
        }
    };
    assert!(matches!(task.payload, Some(v1::task::Payload::Supernet(_))));
    let failure = v1::report_result_request::Outcome::Failure(v1::TaskFailure {
        reason: "supernet.settings: batch_size too large for this device".into(),
        retryable: false,
    });
    w.report_result(common::report(&worker, &task, failure))
        .await
        .expect("report");
    let failed = common::wait_for_end(
        &mut jobs,
        &submitted.job_id,
        deadline,
        "the job fails in time",
    )
    .await;
    assert_eq!(failed.state, v1::JobState::Failed as i32, "{failed:?}");
    assert!(
        failed.error.contains("learning round 0") && failed.error.contains("batch_size too large"),
        "the job's error names the round and the worker's reason: {}",
        failed.error
    );
    server.stop().await;
}
both_backends!(a_failed_supernet_round_fails_the_job, failed_round);

async fn submit_err(
    jobs: &mut v1::job_service_client::JobServiceClient<Channel>,
    r: v1::SubmitJobRequest,
) -> String {
    let err = jobs.submit_job(r).await.expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    err.message().to_string()
}

async fn bad_settings(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let with = |f: &dyn Fn(&mut v1::SupernetSettings)| {
        let mut r = supernet_request(1, 1);
        let o = r.optimize.as_mut().expect("spec");
        let mut s = v1::SupernetSettings::default();
        f(&mut s);
        o.supernet = Some(s);
        r
    };
    let cases: Vec<(v1::SubmitJobRequest, &str)> = vec![
        (with(&|s| s.batch_size = 1), "optimize.supernet.batch_size"),
        (
            with(&|s| s.init_channels = 3),
            "optimize.supernet.init_channels",
        ),
        (with(&|s| s.layers = 1000), "optimize.supernet.layers"),
        (
            with(&|s| s.learning_rate = -1.0),
            "optimize.supernet.learning_rate",
        ),
        (with(&|s| s.momentum = 1.0), "optimize.supernet.momentum"),
        (
            with(&|s| s.weight_decay = 2.0),
            "optimize.supernet.weight_decay",
        ),
        (
            with(&|s| s.grad_clip = f64::NAN),
            "optimize.supernet.grad_clip",
        ),
        (
            with(&|s| s.validation_fraction = 0.99),
            "optimize.supernet.validation_fraction",
        ),
        (
            with(&|s| s.eval_batches = 5000),
            "optimize.supernet.eval_batches",
        ),
        (
            with(&|s| s.max_wall_seconds = -3.0),
            "optimize.supernet.max_wall_seconds",
        ),
        (
            with(&|s| s.train_steps_between_pairs = 1_000_000),
            "optimize.supernet.train_steps_between_pairs",
        ),
        (
            with(&|s| s.op_set = "nat-plus-plus".into()),
            "optimize.supernet.op_set",
        ),
        (with(&|s| s.num_nodes = 5), "optimize.supernet.num_nodes"),
    ];
    for (r, field) in cases {
        let message = submit_err(&mut jobs, r).await;
        assert!(message.contains(field), "{field}: {message}");
    }
    // Inputs of different sizes cannot share one supernet.
    let five = nat_arch::sampler::sample_genotype_seeded(nat_arch::OpSet::NatFullyConcat, 5, 3);
    let mut r = supernet_request(1, 1);
    r.architectures.push(five.to_json());
    let message = submit_err(&mut jobs, r).await;
    assert!(message.contains("architectures[1]"), "{message}");
    // Valid overrides (and the matching op set and node count) are accepted.
    let ok = with(&|s| {
        s.op_set = "nat-fully-concat".into();
        s.num_nodes = 4;
        s.eval_batches = 2;
    });
    let submitted = jobs
        .submit_job(ok)
        .await
        .expect("valid")
        .into_inner()
        .job
        .expect("job");
    jobs.cancel_job(v1::CancelJobRequest {
        job_id: submitted.job_id,
        reason: String::new(),
    })
    .await
    .expect("cancel");
    server.stop().await;
}
both_backends!(supernet_settings_are_validated_at_submit, bad_settings);

/// The resolved settings are the budget preset's supernet defaults (no overrides).
#[test]
fn presets_give_supernet_defaults() {
    for preset in nat_schema::budget::PRESETS {
        assert!(Budget::preset(preset).is_some());
        let s = SupernetBudget::resolve(preset, None, "optimize.supernet").expect("valid");
        assert_eq!(s, SupernetBudget::preset(preset));
    }
}
