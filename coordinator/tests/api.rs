//! API tests: a coordinator on port 0, real gRPC, SQLite and PostgreSQL (fresh database each),
//! a simulated worker in the test.

mod common;

use std::time::{Duration, Instant};

use common::{evaluate_request, job, lease, register, report_ok, test_config, TestDb, TestServer};
use futures::StreamExt;
use nat_proto::v1;
use tonic::Code;

const ARCHS: [&str; 3] = ["darts-v2", "enas", "resnet-block"];

async fn evaluate_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let worker = register(&mut w, "sim-1").await;

    // A DARTS string and a JSON genotype are accepted too, and normalised to canonical JSON.
    let darts = nat_arch::parse_any("darts-v2")
        .expect("preset")
        .to_darts_string();
    let json = nat_arch::parse_any("enas").expect("preset").to_json();
    let mut req = evaluate_request(&ARCHS, "digits");
    req.architectures.push(darts);
    req.architectures.push(json);
    let submitted = jobs
        .submit_job(req)
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(submitted.tasks_total, 5);
    assert_eq!(submitted.state, v1::JobState::Queued as i32);
    assert_eq!(submitted.architectures[3], submitted.architectures[0]);
    let budget = submitted.budget.expect("resolved budget");
    assert_eq!(
        (budget.epochs, budget.init_channels, budget.layers),
        (1, 4, 3)
    );

    // Watch from the start in parallel.
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: submitted.job_id.clone(),
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();

    let mut accuracies = Vec::new();
    for _ in 0..5 {
        let task = lease(&mut w, &worker, 0).await.expect("a task");
        assert_eq!(task.job_id, submitted.job_id);
        assert_eq!(task.attempt, 1);
        let Some(v1::task::Payload::TrainEval(te)) = &task.payload else {
            panic!("train_eval payload expected");
        };
        assert_eq!(te.dataset, "digits");
        assert_eq!(te.budget.as_ref().map(|b| b.epochs), Some(1));
        nat_arch::Genotype::from_json_str(&te.genotype_json).expect("canonical genotype JSON");
        let r = w
            .report_result(report_ok(&worker, &task))
            .await
            .expect("report");
        assert!(!r.into_inner().duplicate);
        accuracies.push(common::fake_result(&task).accuracy);
    }
    assert!(lease(&mut w, &worker, 0).await.is_none(), "no task left");

    let done = job(&mut jobs, &submitted.job_id).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32);
    assert_eq!(done.tasks_succeeded, 5);
    assert_eq!(done.tasks_pending, 0);

    let result = jobs
        .get_job_result(v1::GetJobResultRequest {
            job_id: submitted.job_id.clone(),
        })
        .await
        .expect("result")
        .into_inner();
    assert_eq!(result.state, v1::JobState::Succeeded as i32);
    assert_eq!(result.architectures.len(), 5);
    for (i, a) in result.architectures.iter().enumerate() {
        assert_eq!(a.index as usize, i);
        assert_eq!(a.state, v1::TaskState::Succeeded as i32);
        assert!(
            a.genotype_darts.starts_with("Genotype(normal=["),
            "{}",
            a.genotype_darts
        );
        let r = a.result.as_ref().expect("measurement");
        assert!(r.accuracy > 0.0 && r.params > 0);
    }
    // Same architecture, same budget, same dataset: one reward key with two observations.
    let key = nat_store::RewardKey {
        arch_hash: result.architectures[0].canonical_hash.clone(),
        dataset: "digits".into(),
        budget: nat_schema::budget::Budget::preset("smoke")
            .expect("smoke")
            .key(),
    };
    let estimate = server
        .coordinator
        .store
        .reward_estimate(&key)
        .await
        .expect("read")
        .expect("estimate exists");
    assert_eq!(estimate.count, 2);

    // The stream replays everything and ends after the final state.
    let mut completed = 0;
    let mut bests = Vec::new();
    let mut last_state = None;
    let mut last_seq = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("stream makes progress")
    {
        let ev = ev.expect("event");
        assert!(ev.sequence >= last_seq, "sequence never goes back");
        last_seq = ev.sequence;
        match ev.event {
            Some(v1::job_event::Event::TaskCompleted(_)) => completed += 1,
            Some(v1::job_event::Event::NewBest(b)) => bests.push(b.accuracy),
            Some(v1::job_event::Event::StateChanged(s)) => last_state = Some(s.state),
            _ => {}
        }
    }
    assert_eq!(completed, 5);
    assert_eq!(last_state, Some(v1::JobState::Succeeded as i32));
    assert!(
        bests.windows(2).all(|w| w[0] < w[1]),
        "bests strictly improve"
    );
    let max = accuracies.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(bests.last().copied(), Some(max));
    server.stop().await;
}
both_backends!(evaluate_job_end_to_end, evaluate_flow);

async fn validation(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;

    let expect_invalid = |r: Result<tonic::Response<v1::SubmitJobResponse>, tonic::Status>,
                          field: &str| {
        let s = r.expect_err("must be rejected");
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s:?}");
        assert!(
            s.message().contains(field),
            "{field} not named in {:?}",
            s.message()
        );
    };
    let mut bad = evaluate_request(&["darts-v2", "not-an-arch"], "digits");
    expect_invalid(jobs.submit_job(bad.clone()).await, "architectures[1]");
    bad = evaluate_request(&["{\"normal\": "], "digits");
    expect_invalid(jobs.submit_job(bad).await, "architectures[0]");
    // Not built in and not a folder name (user datasets: tests/datasets.rs).
    expect_invalid(
        jobs.submit_job(evaluate_request(&["darts-v2"], "ImageNet/1k"))
            .await,
        "dataset",
    );
    expect_invalid(
        jobs.submit_job(evaluate_request(&[], "digits")).await,
        "architectures",
    );
    let mut req = evaluate_request(&["darts-v2"], "digits");
    req.budget = Some(v1::BudgetSpec {
        preset: "smoke".into(),
        overrides: Some(v1::BudgetOverrides {
            learning_rate: Some(f64::INFINITY),
            ..Default::default()
        }),
    });
    expect_invalid(jobs.submit_job(req).await, "budget.learning_rate");
    let mut req = evaluate_request(&["darts-v2"], "digits");
    req.priority = 5000;
    expect_invalid(jobs.submit_job(req).await, "priority");
    let mut req = evaluate_request(&["darts-v2"], "digits");
    req.kind = 0;
    expect_invalid(jobs.submit_job(req).await, "kind");

    // Ids.
    let s = jobs
        .get_job(v1::GetJobRequest {
            job_id: "nope".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("job_id"));
    let s = jobs
        .get_job(v1::GetJobRequest {
            job_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(s.code(), Code::NotFound);
    let s = w
        .lease_task(v1::LeaseTaskRequest {
            worker_id: uuid::Uuid::new_v4().to_string(),
            wait_ms: 0,
            device: None,
            slot: 0,
        })
        .await
        .expect_err("unknown worker");
    assert_eq!(
        s.code(),
        Code::NotFound,
        "the worker re-registers on NOT_FOUND"
    );

    // Results are validated.
    let worker = register(&mut w, "sim").await;
    let id = jobs
        .submit_job(evaluate_request(&["darts-v2"], "digits"))
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
        .job_id;
    let task = lease(&mut w, &worker, 0).await.expect("task");
    let mut r = report_ok(&worker, &task);
    if let Some(v1::report_result_request::Outcome::TrainEval(res)) = &mut r.outcome {
        res.accuracy = 1.5;
    }
    let s = w.report_result(r).await.expect_err("accuracy > 1");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("train_eval.accuracy"),
        "{}",
        s.message()
    );
    let mut r = report_ok(&worker, &task);
    if let Some(v1::report_result_request::Outcome::TrainEval(res)) = &mut r.outcome {
        res.loss = f64::NAN;
    }
    let s = w.report_result(r).await.expect_err("NaN loss");
    assert!(s.message().contains("train_eval.loss"), "{}", s.message());

    // Finish it; then cancelling is a wrong-state error.
    w.report_result(report_ok(&worker, &task))
        .await
        .expect("report");
    let s = jobs
        .cancel_job(v1::CancelJobRequest {
            job_id: id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("job already finished");
    assert_eq!(s.code(), Code::FailedPrecondition);

    // Optimize jobs (coordinator/tests/optimize.rs, supernet.rs): an unknown reward mode is
    // said plainly, naming the field.
    let mut req = evaluate_request(&["darts-v2"], "digits");
    req.kind = v1::JobKind::Optimize as i32;
    req.optimize = Some(v1::OptimizeSpec {
        reward: 42,
        ..Default::default()
    });
    let s = jobs.submit_job(req).await.expect_err("optimize");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("optimize.reward"), "{}", s.message());
    server.stop().await;
}
both_backends!(validation_errors, validation);

async fn lease_expiry(db: &TestDb) {
    let mut config = test_config();
    config.max_attempts = 2;
    let lease_duration = config.lease_duration;
    let server = TestServer::start(db, config, true).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let a = register(&mut w, "a").await;
    let b = register(&mut w, "b").await;
    let id = jobs
        .submit_job(evaluate_request(&["darts-v2", "enas"], "digits"))
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
        .job_id;

    let t1 = lease(&mut w, &a, 0).await.expect("first task");
    let t2 = lease(&mut w, &a, 0).await.expect("second task");

    // A heartbeat extends both leases.
    server.advance(lease_duration / 2);
    let hb = w
        .heartbeat(v1::HeartbeatRequest {
            worker_id: a.clone(),
            tasks: vec![
                v1::HeldTask {
                    task_id: t1.task_id.clone(),
                    lease_token: t1.lease_token,
                },
                v1::HeldTask {
                    task_id: t2.task_id.clone(),
                    lease_token: t2.lease_token,
                },
            ],
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(hb.extended.len(), 2);
    assert!(hb.stop_task_ids.is_empty());
    server.advance(lease_duration * 3 / 4);
    nat_coordinator::collect_expired(&server.coordinator).await;
    assert!(
        lease(&mut w, &b, 0).await.is_none(),
        "extended leases are still held"
    );

    // Worker a goes silent: its leases expire and the tasks go to b.
    server.advance(lease_duration);
    nat_coordinator::collect_expired(&server.coordinator).await;
    let r1 = lease(&mut w, &b, 0).await.expect("requeued task");
    assert_eq!(r1.attempt, 2);
    let stale = if r1.task_id == t1.task_id { &t1 } else { &t2 };
    // A new lease of a task has a larger token (by a random amount: not guessable).
    assert!(r1.lease_token > stale.lease_token);
    let other = if r1.task_id == t1.task_id { &t2 } else { &t1 };

    // a's late report with its stale token is rejected and changes nothing.
    let s = w
        .report_result(report_ok(&a, stale))
        .await
        .expect_err("stale token");
    assert_eq!(s.code(), Code::FailedPrecondition);
    // a's heartbeat now tells it to stop both.
    let hb = w
        .heartbeat(v1::HeartbeatRequest {
            worker_id: a.clone(),
            tasks: vec![v1::HeldTask {
                task_id: stale.task_id.clone(),
                lease_token: stale.lease_token,
            }],
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(hb.stop_task_ids, vec![stale.task_id.clone()]);

    // b reports; the same report again is OK and counted once.
    let first = w
        .report_result(report_ok(&b, &r1))
        .await
        .expect("report")
        .into_inner();
    assert!(!first.duplicate);
    let again = w
        .report_result(report_ok(&b, &r1))
        .await
        .expect("dup")
        .into_inner();
    assert!(again.duplicate);
    let j = job(&mut jobs, &id).await;
    assert_eq!(j.tasks_succeeded, 1);

    // The other task: lease 2 by b expires too -> max attempts (2) reached -> failed for good.
    let r2 = lease(&mut w, &b, 0).await.expect("second requeued task");
    assert_eq!(r2.task_id, other.task_id);
    assert_eq!(r2.attempt, 2);
    server.advance(lease_duration * 2);
    nat_coordinator::collect_expired(&server.coordinator).await;
    assert!(lease(&mut w, &b, 0).await.is_none(), "no third attempt");
    let j = job(&mut jobs, &id).await;
    assert_eq!(j.tasks_failed, 1);
    assert_eq!(j.tasks_succeeded, 1);
    assert_eq!(j.state, v1::JobState::Succeeded as i32);
    let result = jobs
        .get_job_result(v1::GetJobResultRequest { job_id: id.clone() })
        .await
        .expect("result")
        .into_inner();
    let failed = result
        .architectures
        .iter()
        .find(|a| a.state == v1::TaskState::Failed as i32)
        .expect("failed architecture");
    assert_eq!(failed.attempts, 2);
    assert!(failed.error.contains("lease expired"), "{}", failed.error);
    server.stop().await;
}
both_backends!(lease_expiry_requeue_and_fencing, lease_expiry);

async fn cancellation(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let worker = register(&mut w, "sim").await;
    let id = jobs
        .submit_job(evaluate_request(&ARCHS, "digits"))
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
        .job_id;
    let held = lease(&mut w, &worker, 0).await.expect("task");
    let cancelled = common::cancel(&mut jobs, &id).await;
    assert_eq!(cancelled.state, v1::JobState::Cancelled as i32);
    // Queued tasks are withdrawn; the running one is told to stop.
    assert!(lease(&mut w, &worker, 0).await.is_none());
    let hb = w
        .heartbeat(v1::HeartbeatRequest {
            worker_id: worker.clone(),
            tasks: vec![v1::HeldTask {
                task_id: held.task_id.clone(),
                lease_token: held.lease_token,
            }],
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(hb.stop_task_ids, vec![held.task_id.clone()]);
    // Its report is accepted and cancels it; nothing is counted as a success.
    w.report_result(report_ok(&worker, &held))
        .await
        .expect("report");
    let j = job(&mut jobs, &id).await;
    assert_eq!(j.state, v1::JobState::Cancelled as i32);
    assert_eq!(j.tasks_succeeded, 0);
    server.stop().await;
}
both_backends!(cancel_withdraws_and_stops, cancellation);

/// The genotype JSON of a leased train_eval task.
fn genotype_of(task: &v1::Task) -> &str {
    match &task.payload {
        Some(v1::task::Payload::TrainEval(te)) => &te.genotype_json,
        other => panic!("train_eval payload expected: {other:?}"),
    }
}

async fn late_report(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let worker = register(&mut w, "sim").await;
    let id = common::submit(&mut jobs, evaluate_request(&ARCHS, "digits"))
        .await
        .job_id;
    let first = lease(&mut w, &worker, 0).await.expect("task");
    let late = lease(&mut w, &worker, 0).await.expect("task");
    // An ordinary report is neither a duplicate nor discarded.
    let r = w
        .report_result(report_ok(&worker, &first))
        .await
        .expect("report")
        .into_inner();
    assert!(!r.duplicate && !r.discarded, "{r:?}");
    common::cancel(&mut jobs, &id).await;

    // The late success is accepted, but the worker is told that it was discarded; its
    // retry (a lost answer) is a duplicate, still discarded.
    for duplicate in [false, true] {
        let r = w
            .report_result(report_ok(&worker, &late))
            .await
            .expect("report")
            .into_inner();
        assert_eq!((r.duplicate, r.discarded), (duplicate, true), "{r:?}");
    }
    let j = job(&mut jobs, &id).await;
    assert_eq!(j.state, v1::JobState::Cancelled as i32);
    assert_eq!(
        (j.tasks_succeeded, j.tasks_failed, j.tasks_cancelled),
        (1, 0, 2),
        "the late task counted once, as cancelled"
    );
    // GetJobResult shows a result only for the succeeded task.
    let result = common::job_result(&mut jobs, &id).await;
    assert_eq!(result.architectures.len(), 3);
    for a in &result.architectures {
        if a.genotype_json == genotype_of(&first) {
            assert_eq!(a.state, v1::TaskState::Succeeded as i32);
            assert!(a.result.is_some(), "{a:?}");
        } else {
            assert_eq!(a.state, v1::TaskState::Cancelled as i32, "{a:?}");
            assert!(a.result.is_none(), "no result on a cancelled task: {a:?}");
            assert!(a.error.is_empty(), "{a:?}");
        }
    }
    // The discarded measurement fed no reward estimate.
    let late_arch = result
        .architectures
        .iter()
        .find(|a| a.genotype_json == genotype_of(&late))
        .expect("the late task's architecture");
    let estimate = server
        .coordinator
        .store
        .reward_estimate(&nat_store::RewardKey {
            arch_hash: late_arch.canonical_hash.clone(),
            dataset: "digits".into(),
            budget: nat_schema::budget::Budget::preset("smoke")
                .expect("smoke")
                .key(),
        })
        .await
        .expect("read");
    assert!(estimate.is_none(), "{estimate:?}");

    // A late failure is discarded too: cancelled, no error recorded.
    let id2 = common::submit(&mut jobs, evaluate_request(&["enas"], "digits"))
        .await
        .job_id;
    let held = lease(&mut w, &worker, 0).await.expect("task");
    common::cancel(&mut jobs, &id2).await;
    let r = w
        .report_result(common::report(
            &worker,
            &held,
            v1::report_result_request::Outcome::Failure(v1::TaskFailure {
                reason: "oom".into(),
                retryable: false,
            }),
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!((r.duplicate, r.discarded), (false, true), "{r:?}");
    let result = common::job_result(&mut jobs, &id2).await;
    let a = &result.architectures[0];
    assert_eq!(a.state, v1::TaskState::Cancelled as i32);
    assert!(a.result.is_none() && a.error.is_empty(), "{a:?}");
    let j2 = job(&mut jobs, &id2).await;
    assert_eq!((j2.tasks_failed, j2.tasks_cancelled), (0, 1));
    server.stop().await;
}
both_backends!(late_report_on_a_cancelled_job_is_discarded, late_report);

async fn fairness(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let worker = register(&mut w, "sim").await;
    let archs = ["darts-v2", "enas", "naonet", "resnet-block"];
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            jobs.submit_job(evaluate_request(&archs, "digits"))
                .await
                .expect("submit")
                .into_inner()
                .job
                .expect("job")
                .job_id,
        );
    }
    let mut urgent = evaluate_request(&["vgg-block"], "digits");
    urgent.priority = 10;
    let urgent_id = jobs
        .submit_job(urgent)
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
        .job_id;
    // Priority first.
    let first = lease(&mut w, &worker, 0).await.expect("task");
    assert_eq!(first.job_id, urgent_id);
    // Then round robin between the equal-priority jobs.
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(lease(&mut w, &worker, 0).await.expect("task").job_id);
    }
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "jobs alternate: {order:?}");
    }
    let from_first = order.iter().filter(|j| **j == ids[0]).count();
    assert_eq!(from_first, 3);
    server.stop().await;
}
both_backends!(fair_share_between_jobs, fairness);

async fn long_poll(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let worker = register(&mut w, "sim").await;
    let started = Instant::now();
    let waiter = {
        let mut w = w.clone();
        let worker = worker.clone();
        tokio::spawn(async move { lease(&mut w, &worker, 4000).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    jobs.submit_job(evaluate_request(&["darts-v2"], "digits"))
        .await
        .expect("submit");
    let task = waiter.await.expect("join");
    assert!(task.is_some(), "the waiting lease got the new task");
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "woken by the submission, not by the timeout"
    );
    // With nothing to do, the long-poll returns empty after its wait.
    let t = Instant::now();
    assert!(lease(&mut w, &worker, 300).await.is_none());
    assert!(t.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}
both_backends!(lease_long_polls, long_poll);

/// Many concurrent LeaseTask and ReportResult calls go through the group-commit path (batched
/// store calls): every caller gets its own answer. Leases: each worker a distinct task, none
/// empty while tasks are queued. Reports: the right one accepted, a concurrent copy of it
/// answered duplicate (exactly one of the two counts), a stale token and a foreign worker
/// FAILED_PRECONDITION, an unknown task NOT_FOUND; the job counts each task once.
async fn batched_hot_path(db: &TestDb) {
    const N: usize = 40;
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let archs: Vec<&str> = ARCHS.iter().cycle().take(N).copied().collect();
    let id = jobs
        .submit_job(evaluate_request(&archs, "digits"))
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
        .job_id;
    let mut workers = Vec::new();
    for i in 0..N {
        workers.push(register(&mut w, &format!("w{i}")).await);
    }
    let outsider = register(&mut w, "outsider").await;

    // N concurrent leases for N queued tasks.
    let mut handles = Vec::new();
    for worker in &workers {
        let mut w = w.clone();
        let worker = worker.clone();
        handles.push(tokio::spawn(async move {
            let t = lease(&mut w, &worker, 2000).await;
            (worker, t)
        }));
    }
    let mut held = Vec::new();
    for h in handles {
        let (worker, t) = h.await.expect("join");
        held.push((
            worker,
            t.expect("every worker gets a task while tasks are queued"),
        ));
    }
    let distinct: std::collections::HashSet<_> =
        held.iter().map(|(_, t)| t.task_id.clone()).collect();
    assert_eq!(distinct.len(), N, "a task was leased twice");

    // Concurrent reports: the real one, for every third task a concurrent copy, a stale token,
    // a foreign worker, and an unknown task.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Real(usize),
        Copy(usize),
        Stale,
        Foreign,
        Unknown,
    }
    let mut calls: Vec<(Kind, v1::ReportResultRequest)> = Vec::new();
    for (i, (worker, t)) in held.iter().enumerate() {
        calls.push((Kind::Real(i), report_ok(worker, t)));
        if i % 3 == 0 {
            calls.push((Kind::Copy(i), report_ok(worker, t)));
        }
        if i % 5 == 1 {
            let mut stale = report_ok(worker, t);
            stale.lease_token += 1;
            calls.push((Kind::Stale, stale));
            calls.push((Kind::Foreign, report_ok(&outsider, t)));
        }
    }
    let mut unknown = report_ok(&held[0].0, &held[0].1);
    unknown.task_id = uuid::Uuid::new_v4().to_string();
    calls.push((Kind::Unknown, unknown));
    let mut handles = Vec::new();
    for (kind, req) in calls {
        let mut w = w.clone();
        handles.push(tokio::spawn(async move {
            (kind, w.report_result(req).await.map(|r| r.into_inner()))
        }));
    }
    let mut fresh = vec![0usize; N];
    let mut dups = vec![0usize; N];
    for h in handles {
        let (kind, r) = h.await.expect("join");
        match kind {
            Kind::Real(i) | Kind::Copy(i) => {
                let r = r.unwrap_or_else(|s| panic!("{kind:?}: {s:?}"));
                if r.duplicate {
                    dups[i] += 1;
                } else {
                    fresh[i] += 1;
                }
            }
            Kind::Stale | Kind::Foreign => {
                assert_eq!(
                    r.expect_err("rejected").code(),
                    Code::FailedPrecondition,
                    "{kind:?}"
                );
            }
            Kind::Unknown => assert_eq!(r.expect_err("unknown").code(), Code::NotFound),
        }
    }
    for i in 0..N {
        assert_eq!(fresh[i], 1, "task {i} accepted exactly once");
        assert_eq!(dups[i], usize::from(i % 3 == 0), "task {i} duplicates");
    }
    let j = job(&mut jobs, &id).await;
    assert_eq!(j.tasks_succeeded, N as u32);
    assert_eq!(j.state, v1::JobState::Succeeded as i32);
    server.stop().await;
}
both_backends!(
    concurrent_leases_and_reports_get_their_own_answers,
    batched_hot_path
);

/// A worker that declares its datasets only gets tasks on those; one that declares none gets
/// any; a bad declaration is INVALID_ARGUMENT naming the field.
async fn dataset_matching(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let register_with = |datasets: &[&str]| v1::RegisterWorkerRequest {
        name: "d".into(),
        capabilities: Some(v1::WorkerCapabilities {
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
            ..common::cpu_capabilities()
        }),
    };
    let digits_only = w
        .register_worker(register_with(&["digits"]))
        .await
        .expect("register")
        .into_inner()
        .worker_id;
    let has_mnist = w
        .register_worker(register_with(&["digits", "mnist"]))
        .await
        .expect("register")
        .into_inner()
        .worker_id;
    let s = w
        .register_worker(register_with(&["digits", " "]))
        .await
        .expect_err("empty dataset name");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("capabilities.datasets[1]"),
        "{}",
        s.message()
    );

    jobs.submit_job(evaluate_request(&["darts-v2"], "mnist"))
        .await
        .expect("submit");
    assert!(
        lease(&mut w, &digits_only, 0).await.is_none(),
        "an mnist task is not given to a worker without mnist"
    );
    let t = lease(&mut w, &has_mnist, 0)
        .await
        .expect("the mnist worker gets it");
    match &t.payload {
        Some(v1::task::Payload::TrainEval(p)) => assert_eq!(p.dataset, "mnist"),
        other => panic!("{other:?}"),
    }
    // digits tasks go to the digits-only worker, and to a worker that declares nothing.
    jobs.submit_job(evaluate_request(&["darts-v2", "enas"], "digits"))
        .await
        .expect("submit");
    assert!(lease(&mut w, &digits_only, 0).await.is_some());
    let anyone = register(&mut w, "anyone").await;
    assert!(lease(&mut w, &anyone, 0).await.is_some());
    server.stop().await;

    // The declarations are stored with the workers: after a coordinator restart on the same
    // database the matching holds without registering again, and ListWorkers shows them.
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let mut w = server.workers().await;
    let listed = jobs
        .list_workers(v1::ListWorkersRequest::default())
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    let declared = listed
        .iter()
        .find(|x| x.worker_id == has_mnist)
        .and_then(|x| x.capabilities.as_ref())
        .map(|c| c.datasets.clone());
    assert_eq!(
        declared,
        Some(vec!["digits".to_string(), "mnist".to_string()])
    );
    jobs.submit_job(evaluate_request(&["resnet-block"], "mnist"))
        .await
        .expect("submit");
    assert!(
        lease(&mut w, &digits_only, 0).await.is_none(),
        "after a restart, still no mnist task for the digits-only worker"
    );
    assert!(lease(&mut w, &has_mnist, 0).await.is_some());
    server.stop().await;
}
both_backends!(leases_match_worker_datasets, dataset_matching);
