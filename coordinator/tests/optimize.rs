//! The `optimize` job kind end to end: a coordinator on port 0, real gRPC, SQLite and
//! PostgreSQL (fresh database each), simulated workers that answer `train_eval` tasks with a
//! synthetic accuracy computed from the genotype (fewer parameters, higher accuracy).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{job, job_result, submit, test_config, TestDb, TestServer};
use nat_proto::v1;
use tonic::transport::Channel;
use v1::worker_service_client::WorkerServiceClient;

/// Synthetic accuracy in (0, 1): decreasing in the parameter count of the trained network.
fn synthetic(te: &v1::TrainEvalTask) -> v1::TrainEvalResult {
    let g = nat_arch::Genotype::from_json_str(&te.genotype_json).expect("canonical genotype");
    let b = te.budget.as_ref().expect("budget");
    let d = nat_arch::Dataset::from_name(&te.dataset).expect("dataset");
    let spec = nat_arch::NetworkSpec {
        channels: u64::from(b.init_channels),
        layers: u64::from(b.layers),
        in_channels: d.channels() as u64,
        image_size: d.image_size() as u64,
        num_classes: d.num_classes() as u64,
    };
    let cost = nat_arch::network_cost(&g, &spec).expect("cost");
    let params = cost.params();
    v1::TrainEvalResult {
        accuracy: 0.2 + 0.75 / (1.0 + params as f64 / 2000.0),
        loss: 0.5,
        params,
        madds: cost.madds(),
        wall_seconds: 0.01,
        images_per_second: 1000.0,
    }
}

/// Trained (canonical hash, budget, seed, split) keys, with how often each was leased on a
/// first attempt.
type Trained = HashMap<(String, String, u64, i32), u32>;

/// Leases and answers tasks until `job_id` is final, or `stop_after` tasks were answered.
async fn work(
    w: WorkerServiceClient<Channel>,
    worker: String,
    jobs: v1::job_service_client::JobServiceClient<Channel>,
    job_id: String,
    stop_after: Option<usize>,
) -> Trained {
    work_with(w, worker, jobs, job_id, stop_after, synthetic).await
}

/// [`work`] with the worker's answers computed by `answer`.
async fn work_with(
    mut w: WorkerServiceClient<Channel>,
    worker: String,
    mut jobs: v1::job_service_client::JobServiceClient<Channel>,
    job_id: String,
    stop_after: Option<usize>,
    answer: fn(&v1::TrainEvalTask) -> v1::TrainEvalResult,
) -> Trained {
    let mut trained = Trained::new();
    let mut answered = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while stop_after.is_none_or(|n| answered < n) {
        let Some(task) = common::next_task(&mut w, &worker, &mut jobs, &job_id, deadline).await
        else {
            break;
        };
        let Some(v1::task::Payload::TrainEval(te)) = &task.payload else {
            panic!("a train_eval task expected");
        };
        let g = nat_arch::Genotype::from_json_str(&te.genotype_json).expect("genotype");
        let budget = format!("{:?}", te.budget);
        *trained
            .entry((g.canonical_hash(), budget, te.seed, te.split))
            .or_default() += 1;
        let outcome = v1::report_result_request::Outcome::TrainEval(answer(te));
        let r = w
            .report_result(common::report(&worker, &task, outcome))
            .await
            .expect("report")
            .into_inner();
        assert!(!r.duplicate);
        answered += 1;
    }
    trained
}

fn optimize_request(iterations: u32, samples: u32) -> v1::SubmitJobRequest {
    common::optimize_request("optimize test", iterations, samples, 6)
}

fn assert_no_repeats(trained: &Trained) {
    for (key, n) in trained {
        assert_eq!(*n, 1, "{key:?} trained {n} times");
    }
}

async fn check_result(server: &TestServer, job_id: &str, rewards: u64) {
    let result = common::check_optimize_result(server, job_id, rewards).await;
    let o = &result.optimize[0];
    let original = o.original.as_ref().expect("original");
    let best = o.best.as_ref().expect("best");
    for a in [original, best] {
        let m = a.result.as_ref().expect("measurement");
        assert!(m.accuracy > 0.2 && m.accuracy < 1.0, "{m:?}");
        assert!(m.params > 0 && m.madds > 0, "{m:?}");
        assert!(a.genotype_darts.starts_with("Genotype(normal=["));
        // The reported numbers are the synthetic worker's for that genotype.
        let te = v1::TrainEvalTask {
            genotype_json: a.genotype_json.clone(),
            dataset: "digits".into(),
            budget: Some(
                nat_schema::budget::Budget::preset("smoke")
                    .expect("smoke")
                    .to_proto(),
            ),
            ..Default::default()
        };
        let expected = synthetic(&te);
        assert!((m.accuracy - expected.accuracy).abs() < 1e-9);
        assert_eq!(m.params, expected.params);
    }
    let policy = result.policy.as_ref().expect("policy");
    // The best was chosen among derived candidates and the original, and the edges it changed
    // are listed. The synthetic accuracy does not depend on the seed and rewards fewer
    // params: a different best is cheaper, so strictly better on every seed (a zero-width
    // interval above 0): improved; the original itself is no difference.
    let fin = o.r#final.as_ref().expect("final evaluation");
    assert_eq!(fin.seeds.len(), 3);
    let recommended = o.recommended.as_ref().expect("recommendation");
    if best.canonical_hash != original.canonical_hash {
        assert!(!o.changed_edges.is_empty());
        assert_eq!(o.verdict, "improved", "{o:?}");
        assert_eq!(recommended.from, "best");
        assert_eq!(recommended.genotype_json, best.genotype_json);
    } else {
        assert_eq!(o.verdict, "no_difference", "{o:?}");
        assert_eq!(recommended.from, "original");
    }
    let b = best.result.as_ref().expect("best");
    let m = original.result.as_ref().expect("original");
    assert!(b.params <= m.params && b.madds <= m.madds, "no extra cost");
    let learning = result.learning.as_ref().expect("learning");
    assert_eq!(learning.rewards, rewards);
    assert_eq!(learning.curve.len() as u64, learning.policy_versions);
    assert!(learning.policy_versions >= 1);
    assert_eq!(learning.inputs.len(), 1);
    let view = &learning.inputs[0];
    for p in [
        view.identity_probability_first,
        view.identity_probability_last,
        view.argmax_probability_first,
        view.argmax_probability_last,
    ] {
        assert!(p > 0.0 && p <= 1.0, "{view:?}");
    }
    assert!(view.argmax_probability_last >= view.identity_probability_last - 1e-12);
    // The stored policy (listed, checked above) can transform an architecture at once.
    let mut policies = v1::policy_service_client::PolicyServiceClient::new(server.channel().await);
    let t = policies
        .transform_architecture(v1::TransformArchitectureRequest {
            policy_id: policy.id.clone(),
            architecture: "darts-v2".into(),
            sample: false,
            seed: 0,
        })
        .await
        .expect("transform")
        .into_inner();
    let alpha = nat_arch::parse_any(&t.genotype_darts).expect("DARTS string parses");
    assert_eq!(
        alpha.canonical_hash(),
        nat_arch::Genotype::from_json_str(&t.genotype_json)
            .expect("json")
            .canonical_hash()
    );
    let err = policies
        .transform_architecture(v1::TransformArchitectureRequest {
            policy_id: "no-such-policy".into(),
            architecture: "darts-v2".into(),
            sample: false,
            seed: 0,
        })
        .await
        .expect_err("unknown policy");
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The dashboard's documents: policy updates and the new best were logged.
    let id: nat_store::JobId = job_id.parse().expect("uuid");
    let events = server
        .coordinator
        .store
        .events_after(id, 0, 1000)
        .await
        .expect("events");
    let updates = events.iter().filter(|e| e.kind == "policy_update").count();
    assert!(
        updates as u64 >= policy.version.min(1),
        "policy_update events"
    );
    assert!(events.iter().any(|e| e.kind == "new_best"));
}

async fn optimize_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, optimize_request(3, 4)).await;
    assert_eq!(submitted.kind, v1::JobKind::Optimize as i32);
    // Two simulated workers in parallel.
    let mut handles = Vec::new();
    for name in ["sim-1", "sim-2"] {
        let (w, worker) = common::registered(&server, name).await;
        handles.push(tokio::spawn(work(
            w,
            worker,
            server.jobs().await,
            submitted.job_id.clone(),
            None,
        )));
    }
    let mut trained = Trained::new();
    for h in handles {
        for (k, n) in h.await.expect("worker") {
            *trained.entry(k).or_default() += n;
        }
    }
    assert_no_repeats(&trained);
    assert!(
        trained.len() >= 2,
        "original and transformations were trained"
    );
    check_result(&server, &submitted.job_id, 12).await;
    server.stop().await;
}
both_backends!(optimize_job_learns_derives_and_checks, optimize_flow);

async fn restart_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = submit(&mut jobs, optimize_request(2, 3)).await;
    let (w, worker) = common::registered(&server, "sim").await;
    // Answer a few tasks, then stop the coordinator in the middle of learning.
    let before = work(
        w,
        worker.clone(),
        server.jobs().await,
        submitted.job_id.clone(),
        Some(3),
    )
    .await;
    let server = common::restart_mid_job(server, db, &submitted.job_id).await;
    let w = server.workers().await;
    let after = work(
        w,
        worker,
        server.jobs().await,
        submitted.job_id.clone(),
        None,
    )
    .await;
    let mut trained = before;
    for (k, n) in after {
        *trained.entry(k).or_default() += n;
    }
    assert_no_repeats(&trained);
    check_result(&server, &submitted.job_id, 6).await;
    server.stop().await;
}
both_backends!(optimize_job_resumes_after_restart, restart_flow);

async fn bad_input(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut r = optimize_request(1, 1);
    r.optimize.as_mut().expect("spec").reward = 42;
    let err = jobs.submit_job(r).await.expect_err("unknown reward mode");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("optimize.reward"),
        "{}",
        err.message()
    );
    let mut r = optimize_request(1, 1);
    r.optimize.as_mut().expect("spec").policy_id = "missing".into();
    let err = jobs.submit_job(r).await.expect_err("unknown policy");
    assert!(
        err.message().contains("optimize.policy_id"),
        "{}",
        err.message()
    );
    let mut r = optimize_request(1, 1);
    r.optimize.as_mut().expect("spec").iterations = 1_000_000;
    let err = jobs.submit_job(r).await.expect_err("too many");
    assert!(
        err.message().contains("optimize.iterations"),
        "{}",
        err.message()
    );
    type Edit = fn(&mut v1::OptimizeSpec);
    let cases: [(Edit, &str); 4] = [
        (|o| o.final_seeds = 33, "optimize.final_seeds"),
        (|o| o.max_cost_ratio = 0.5, "optimize.max_cost_ratio"),
        (|o| o.max_cost_ratio = f64::NAN, "optimize.max_cost_ratio"),
        (|o| o.control = "bogus".into(), "optimize.control"),
    ];
    for (edit, field) in cases {
        let mut r = optimize_request(1, 1);
        edit(r.optimize.as_mut().expect("spec"));
        let err = jobs.submit_job(r).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    server.stop().await;
}
both_backends!(optimize_rejects_bad_input, bad_input);

/// GetJob shows an optimize job's resolved settings, and submitting them again gives a job with
/// the same settings.
async fn settings_round_trip(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut r = optimize_request(2, 3);
    {
        let o = r.optimize.as_mut().expect("spec");
        o.final_seeds = 4;
        o.max_cost_ratio = 1.5;
        o.control = "random".into();
        o.reward = v1::RewardMode::Supernet as i32;
        o.final_budget = Some(v1::BudgetSpec {
            preset: "smoke".into(),
            overrides: Some(v1::BudgetOverrides {
                epochs: Some(3),
                ..Default::default()
            }),
        });
    }
    let first = submit(&mut jobs, r.clone()).await;
    let shown = job(&mut jobs, &first.job_id)
        .await
        .optimize
        .expect("GetJob fills optimize");
    assert_eq!(shown.iterations, 2);
    assert_eq!(shown.samples_per_iteration, 3);
    assert_eq!(shown.derive_samples, 6);
    assert_eq!(shown.final_seeds, 4);
    assert_eq!(shown.max_cost_ratio, 1.5);
    assert_eq!(shown.control, "random");
    assert_eq!(shown.reward, v1::RewardMode::Supernet as i32);
    assert_eq!(shown.space, v1::SearchSpace::Nat as i32);
    assert_eq!(shown.policy_profile, "default");
    assert!(shown.supernet.is_some(), "supernet settings resolved");
    let final_budget = shown.final_budget.clone().expect("final budget");
    assert_eq!(final_budget.preset, "smoke");
    assert_eq!(
        final_budget.overrides.as_ref().and_then(|o| o.epochs),
        Some(3)
    );
    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("ListJobs")
        .into_inner();
    assert!(listed
        .jobs
        .iter()
        .any(|j| j.job_id == first.job_id && j.optimize.as_ref() == Some(&shown)));
    r.optimize = Some(shown.clone());
    let second = submit(&mut jobs, r).await;
    let again = job(&mut jobs, &second.job_id)
        .await
        .optimize
        .expect("optimize");
    assert_eq!(again, shown);
    let evaluate = submit(&mut jobs, common::evaluate_request(&["darts-v2"], "digits")).await;
    assert_eq!(job(&mut jobs, &evaluate.job_id).await.optimize, None);
    server.stop().await;
}
both_backends!(optimize_job_shows_its_settings, settings_round_trip);

async fn stored_policy_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let (w, worker) = common::registered(&server, "sim").await;
    let first = submit(&mut jobs, optimize_request(1, 2)).await;
    work(
        w.clone(),
        worker.clone(),
        server.jobs().await,
        first.job_id.clone(),
        None,
    )
    .await;
    let first_result = job_result(&mut jobs, &first.job_id).await;
    let policy = first_result.policy.expect("policy");
    assert!(policy.version > 1, "updated: {policy:?}");

    // A second job continues the stored policy, learning on random architectures of the space.
    let mut r = optimize_request(1, 3);
    r.architectures.clear();
    if let Some(o) = r.optimize.as_mut() {
        o.policy_id = policy.id.clone();
        o.random_inputs = true;
    }
    let second = submit(&mut jobs, r).await;
    let trained = work(w, worker, server.jobs().await, second.job_id.clone(), None).await;
    assert_no_repeats(&trained);
    assert!(
        !trained.is_empty(),
        "random inputs and their transformations were trained"
    );
    let done = job(&mut jobs, &second.job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    let result = job_result(&mut jobs, &second.job_id).await;
    assert!(
        result.optimize.is_empty(),
        "nothing to derive without inputs"
    );
    let continued = result.policy.expect("policy");
    assert_eq!(continued.id, policy.id);
    assert!(
        continued.version > policy.version,
        "{continued:?} continues {policy:?}"
    );
    assert_eq!(result.rewards, 3);
    server.stop().await;
}
both_backends!(
    optimize_continues_a_stored_policy_on_random_inputs,
    stored_policy_flow
);

/// An ENAS cell (loose-end, its ops from the official code's second NAT list) is optimized over
/// that list: the job runs to the end, every transformation stays in it, and a policy learned
/// over one list cannot seed a job over the other.
async fn loose_end_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut request = optimize_request(2, 3);
    request.architectures = vec!["enas".into()];
    let submitted = jobs
        .submit_job(request)
        .await
        .expect("an ENAS cell is a valid NAT input")
        .into_inner()
        .job
        .expect("job");
    let (w, worker) = common::registered(&server, "sim").await;
    let trained = work(
        w,
        worker,
        server.jobs().await,
        submitted.job_id.clone(),
        None,
    )
    .await;
    assert_no_repeats(&trained);
    let done = job(&mut jobs, &submitted.job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    let result = job_result(&mut jobs, &submitted.job_id).await;
    let o = &result.optimize[0];
    let enas = nat_arch::parse_any("enas").expect("preset");
    let best = o.best.as_ref().expect("best");
    let alpha = nat_arch::Genotype::from_json_str(&best.genotype_json).expect("best genotype");
    let space = nat_policy::ActionSpace::Nat(nat_arch::OpSet::NatLooseEnd);
    nat_policy::input::validate_output(space, &enas, &alpha, "best")
        .expect("the best is one NAT move per edge of the ENAS cell, in the loose-end list");
    let policy = result.policy.expect("policy");
    let checkpoint = server
        .coordinator
        .store
        .latest_checkpoint(&policy.id)
        .await
        .expect("checkpoint");
    assert_eq!(checkpoint.meta["op_set"], "nat-loose-end");

    let mut other = optimize_request(1, 1);
    other.optimize.as_mut().expect("spec").policy_id = policy.id.clone();
    let err = jobs
        .submit_job(other)
        .await
        .expect_err("a loose-end policy cannot optimize a fully concatenated cell");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("optimize.policy_id") && err.message().contains("nat-loose-end"),
        "{}",
        err.message()
    );
    server.stop().await;
}
both_backends!(
    optimize_job_on_an_enas_cell_uses_the_loose_end_list,
    loose_end_flow
);

/// Selection is misled: on the validation split every transformation of DARTS_V2 looks better
/// than the original (and the costlier, the better), but on the test split each is 10 points
/// worse, with seed-dependent noise. The honest answer is `worse`, recommending the original.
fn misleading(te: &v1::TrainEvalTask) -> v1::TrainEvalResult {
    let mut r = synthetic(te);
    let g = nat_arch::Genotype::from_json_str(&te.genotype_json).expect("genotype");
    let original = g.canonical_hash()
        == nat_arch::parse_any("darts-v2")
            .expect("preset")
            .canonical_hash();
    let noise = (te.seed % 7) as f64 * 0.002;
    r.accuracy = match (te.split == v1::EvalSplit::Test as i32, original) {
        (false, true) => 0.90,
        (false, false) => 0.95 + r.params as f64 / 1e8,
        (true, true) => 0.90 + noise,
        (true, false) => 0.80 + 2.0 * noise,
    };
    r
}

/// The policy proposes only cells that are worse where it counts: the final evaluation (fresh
/// seeds, test split, nothing reused from selection) says `worse` and recommends the original;
/// the random control is reported beside it; candidates costing more than the original never
/// win; the final tasks' seeds are none of the learning and derive tasks' seeds; test-split
/// accuracies never reach the reward-estimate cache.
async fn honest_verdict_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut request = optimize_request(2, 3);
    request.optimize.as_mut().expect("spec").control = "random".into();
    let submitted = submit(&mut jobs, request).await;
    let (w, worker) = common::registered(&server, "sim").await;
    let trained = work_with(
        w,
        worker,
        server.jobs().await,
        submitted.job_id.clone(),
        None,
        misleading,
    )
    .await;
    assert_no_repeats(&trained);
    let mut jobs = server.jobs().await;
    let done = job(&mut jobs, &submitted.job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    let result = job_result(&mut jobs, &submitted.job_id).await;
    let o = &result.optimize[0];
    let original = o.original.as_ref().expect("original");
    let best = o.best.as_ref().expect("best");
    assert_ne!(
        best.canonical_hash, original.canonical_hash,
        "a transformation won the (misleading) selection"
    );
    assert_eq!(o.verdict, "worse", "{o:?}");
    let recommended = o.recommended.as_ref().expect("recommended");
    assert_eq!(recommended.from, "original");
    assert_eq!(recommended.genotype_json, original.genotype_json);
    assert!(
        recommended.reason.contains("less accurate"),
        "{recommended:?}"
    );
    let fin = o.r#final.as_ref().expect("final");
    let diff = fin.paired_difference.as_ref().expect("difference");
    assert!(diff.ci_high < 0.0 && diff.mean < -0.05, "{diff:?}");
    assert_eq!(diff.method, "paired_t");
    let orig_acc = fin.original.as_ref().expect("original accuracies");
    assert_eq!(orig_acc.accuracies.len(), 3);
    assert!((orig_acc.mean - original.result.as_ref().expect("m").accuracy).abs() < 1e-12);
    // No extra cost: the costlier candidates (which looked best) were out of the running.
    let (b, m) = (
        best.result.as_ref().expect("best"),
        original.result.as_ref().expect("original"),
    );
    assert!(b.params <= m.params && b.madds <= m.madds, "{b:?} vs {m:?}");
    let control = o.control.as_ref().expect("the random control");
    assert_eq!(control.verdict, "worse", "{control:?}");
    assert_eq!(
        control
            .r#final
            .as_ref()
            .expect("control accuracies")
            .accuracies
            .len(),
        3
    );
    assert!(control.policy_vs_control.is_some());

    // Through the store: final tasks are new trainings, on the test split, with seeds that no
    // learning or derive task used; selection tasks all ran on the job's seed.
    let id: nat_store::JobId = submitted.job_id.parse().expect("uuid");
    let tasks = server
        .coordinator
        .store
        .list_tasks(id, None, 0, 0)
        .await
        .expect("tasks");
    let payloads: Vec<nat_schema::TrainEvalPayload> = tasks
        .iter()
        .map(|t| nat_schema::decode("train_eval payload", &t.payload).expect("payload"))
        .collect();
    let (finals, selection): (Vec<_>, Vec<_>) = payloads
        .iter()
        .partition(|p| p.split == nat_schema::EvalSplit::Test);
    let final_seeds: std::collections::HashSet<u64> = finals.iter().map(|p| p.seed).collect();
    let selection_seeds: std::collections::HashSet<u64> =
        selection.iter().map(|p| p.seed).collect();
    assert_eq!(
        final_seeds,
        fin.seeds.iter().copied().collect(),
        "final tasks use the reported seeds"
    );
    assert!(final_seeds.is_disjoint(&selection_seeds), "{final_seeds:?}");
    assert_eq!(selection_seeds.len(), 1, "selection trains on the job seed");
    let archs: std::collections::HashSet<&str> =
        finals.iter().map(|p| p.arch_hash.as_str()).collect();
    assert!(archs.contains(original.canonical_hash.as_str()));
    assert!(archs.contains(best.canonical_hash.as_str()));
    assert_eq!(finals.len(), archs.len() * 3, "each on every seed");
    assert!(finals.iter().all(|p| p.checkpointed));
    // Test-split accuracies never reached the reward-estimate cache.
    let budget = nat_schema::Budget::preset("smoke").expect("smoke").key();
    let estimate = |hash: &str| {
        let key = nat_store::RewardKey {
            arch_hash: hash.to_string(),
            dataset: "digits".into(),
            budget: budget.clone(),
        };
        let store = server.coordinator.store.clone();
        async move { store.reward_estimate(&key).await.expect("estimate") }
    };
    let e = estimate(&original.canonical_hash)
        .await
        .expect("original measured");
    assert_eq!(e.mean, 0.90, "only validation measurements: {e:?}");
    let e = estimate(&best.canonical_hash).await.expect("best measured");
    assert!(e.mean >= 0.95, "only validation measurements: {e:?}");
    server.stop().await;
}
both_backends!(
    a_policy_proposing_only_worse_cells_ends_worse_recommending_the_original,
    honest_verdict_flow
);
