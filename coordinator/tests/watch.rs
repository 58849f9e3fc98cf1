//! `WatchJob` of an `optimize` job over real gRPC (SQLite and PostgreSQL, a fresh database each):
//! a scripted fake worker leases and reports every task, and the watchers see the phases, the
//! policy updates (versions increasing) and the new best with its genotype.

mod common;

use std::time::{Duration, Instant};

use common::{job, test_config, TestDb, TestServer};
use nat_proto::v1;
use tonic::transport::Channel;
use v1::job_event::Event as E;
use v1::job_service_client::JobServiceClient;

/// The payloads of the `$kind` events among `$events`, in order: `of!(events, NewBest)`.
macro_rules! of {
    ($events:expr, $kind:ident) => {
        $events
            .iter()
            .filter_map(|e| match &e.event {
                Some(E::$kind(payload)) => Some(payload),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

fn optimize_request() -> v1::SubmitJobRequest {
    common::optimize_request("watch test", 3, 3, 4)
}

/// Every event of `job_id` after `after`, until the stream ends (it ends after the final state).
async fn collect(
    mut jobs: JobServiceClient<Channel>,
    job_id: String,
    after: u64,
) -> Vec<v1::JobEvent> {
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id,
            after_sequence: after,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.message())
            .await
            .expect("the stream ends within 180 s");
        match next.expect("stream ok") {
            Some(ev) => out.push(ev),
            None => return out,
        }
    }
}

/// Leases and reports tasks (a deterministic fake accuracy per genotype) until the job is final.
async fn fake_worker(server: &TestServer, job_id: &str) -> usize {
    let (mut w, worker) = common::registered(server, "scripted").await;
    let mut jobs = server.jobs().await;
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while let Some(task) = common::next_task(&mut w, &worker, &mut jobs, job_id, deadline).await {
        w.report_result(common::report_ok(&worker, &task))
            .await
            .expect("report");
        answered += 1;
    }
    answered
}

async fn watch_flow(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let submitted = common::submit(&mut jobs, optimize_request()).await;
    let id = submitted.job_id.clone();
    // A live watcher from the start, while the worker runs the job.
    let live = tokio::spawn(collect(server.jobs().await, id.clone(), 0));
    let answered = fake_worker(&server, &id).await;
    assert!(answered >= 2, "tasks were trained: {answered}");
    let events = live.await.expect("watcher");
    assert_eq!(
        job(&mut jobs, &id).await.state,
        v1::JobState::Succeeded as i32
    );

    // Sequence numbers strictly increase, derived events (progress) included.
    for pair in events.windows(2) {
        assert!(pair[0].sequence < pair[1].sequence, "{pair:?}");
    }
    let phases: Vec<&str> = of!(events, PhaseChanged)
        .iter()
        .map(|p| p.phase.as_str())
        .collect();
    assert_eq!(phases, ["learn", "derive", "final"]);

    let updates: Vec<&v1::PolicyUpdated> = of!(events, PolicyUpdated);
    assert!(!updates.is_empty(), "policy updates streamed");
    // A fresh policy is version 1; every committed update adds one.
    assert!(updates[0].version >= 2, "{:?}", updates[0]);
    for pair in updates.windows(2) {
        assert!(pair[1].version > pair[0].version, "{pair:?}");
        assert!(pair[1].iteration >= pair[0].iteration, "{pair:?}");
    }
    for u in &updates {
        assert_eq!(u.iterations, 3, "{u:?}");
        assert!(u.iteration < 3, "{u:?}");
        assert!(u.rewards_used >= 1, "{u:?}");
        assert!(u.mean_reward.is_finite() && u.baseline.is_finite() && u.entropy > 0.0);
        assert!(
            u.loss.is_some_and(f64::is_finite),
            "the update's loss: {u:?}"
        );
    }
    assert_eq!(
        updates.last().map(|u| u.iteration),
        Some(2),
        "the last round"
    );

    let bests: Vec<&v1::NewBest> = of!(events, NewBest);
    assert_eq!(
        bests.len(),
        1,
        "one best per input, from the derive phase: {bests:?}"
    );
    let best = bests[0];
    assert_eq!(best.input_index, 0);
    let g = nat_arch::Genotype::from_json_str(&best.genotype_json).expect("canonical genotype");
    assert_eq!(g.to_darts_string(), best.genotype_darts);
    assert!(best.accuracy >= 0.5 && best.accuracy < 1.0, "{best:?}");
    // Its reward is acc(best) − acc(input) on the learn budget (the input was trained as β).
    let input = nat_arch::parse_any("darts-v2").expect("preset");
    let estimate = server
        .coordinator
        .store
        .reward_estimate(&nat_store::RewardKey {
            arch_hash: input.canonical_hash(),
            dataset: "digits".into(),
            budget: nat_schema::budget::Budget::preset("smoke")
                .expect("smoke")
                .key(),
        })
        .await
        .expect("read")
        .expect("the input's accuracy on the learn budget");
    assert!(
        (best.reward - (best.accuracy - estimate.mean)).abs() < 1e-9,
        "{best:?} vs input accuracy {}",
        estimate.mean
    );
    // The best is the one the result reports.
    let result = common::job_result(&mut jobs, &id).await;
    let reported = result.optimize[0].best.as_ref().expect("best");
    assert_eq!(reported.canonical_hash, g.canonical_hash());

    // Every completed task names the genotype it trained (not the job's inputs by index).
    let completed: Vec<&v1::TaskCompleted> = of!(events, TaskCompleted);
    assert_eq!(completed.len(), answered);
    for t in &completed {
        nat_arch::Genotype::from_json_str(&t.genotype_json).expect("the task's genotype");
        assert!(t.result.is_some());
    }
    let last = events.last().expect("events");
    assert!(
        matches!(&last.event, Some(E::StateChanged(s)) if s.state == v1::JobState::Succeeded as i32),
        "{last:?}"
    );

    // A watcher that resumes after an update gets exactly the rest of the log.
    let cut = events
        .iter()
        .find(|e| matches!(e.event, Some(E::PolicyUpdated(_))))
        .map(|e| e.sequence)
        .expect("an update");
    let rest = collect(server.jobs().await, id.clone(), cut).await;
    assert!(rest
        .iter()
        .all(|e| e.sequence > cut || matches!(e.event, Some(E::Progress(_)))));
    let count = |evs: &[v1::JobEvent]| {
        evs.iter()
            .filter(|e| e.sequence > cut && !matches!(e.event, Some(E::Progress(_))))
            .count()
    };
    assert_eq!(count(&rest), count(&events));
    // The live stream is the stream replayed from the log, and a watcher resuming at any
    // position gets exactly the rest of it.
    assert_resumes_exactly(&server, &id, &events).await;
    server.stop().await;
}
both_backends!(
    optimize_watch_streams_phases_policy_updates_and_the_best,
    watch_flow
);

/// `full` (the whole stream of the ended job `job_id`) is what a watcher from the start gets,
/// its numbers strictly increase, and a watcher resuming after any of its events, or between
/// two of their numbers, gets exactly the events after that position.
async fn assert_resumes_exactly(server: &TestServer, job_id: &str, full: &[v1::JobEvent]) {
    for pair in full.windows(2) {
        assert!(pair[0].sequence < pair[1].sequence, "{pair:?}");
    }
    assert_eq!(
        collect(server.jobs().await, job_id.to_string(), 0).await,
        full,
        "the replayed stream is the live one"
    );
    for (k, e) in full.iter().enumerate() {
        let rest = collect(server.jobs().await, job_id.to_string(), e.sequence).await;
        assert_eq!(rest, &full[k + 1..], "resumed after #{k} {e:?}");
    }
    // Positions that no event has (between two numbers) resume after the last event below.
    for (k, e) in full.iter().enumerate() {
        let after = e.sequence + 1;
        if full.get(k + 1).is_some_and(|n| n.sequence == after) {
            continue;
        }
        let rest = collect(server.jobs().await, job_id.to_string(), after).await;
        assert_eq!(rest, &full[k + 1..], "resumed at {after}");
    }
}

/// Leases the next task of the only job and reports `outcome` for it.
async fn report_next(
    w: &mut v1::worker_service_client::WorkerServiceClient<Channel>,
    worker: &str,
    outcome: impl FnOnce(&v1::Task) -> v1::report_result_request::Outcome,
) -> v1::Task {
    let task = common::lease(w, worker, 0).await.expect("a task");
    let o = outcome(&task);
    let r = w
        .report_result(common::report(worker, &task, o))
        .await
        .expect("report")
        .into_inner();
    assert!(!r.duplicate && !r.discarded, "{r:?}");
    task
}

async fn evaluate_resume(db: &TestDb) {
    let server = TestServer::start(db, test_config(), false).await;
    let mut jobs = server.jobs().await;
    let (mut w, worker) = common::registered(&server, "scripted").await;
    let request = common::evaluate_request(
        &["darts-v2", "enas", "resnet-block", "darts-v2.nat"],
        "digits",
    );
    let id = common::submit(&mut jobs, request).await.job_id;
    let live = tokio::spawn(collect(server.jobs().await, id.clone(), 0));
    let ok = |t: &v1::Task| v1::report_result_request::Outcome::TrainEval(common::fake_result(t));
    let failure = |retryable: bool| {
        move |_: &v1::Task| {
            v1::report_result_request::Outcome::Failure(v1::TaskFailure {
                reason: "boom".into(),
                retryable,
            })
        }
    };
    // A success, a retry then its success, a failure for good, a success.
    report_next(&mut w, &worker, ok).await;
    let retried = report_next(&mut w, &worker, failure(true)).await;
    let mut failed_for_good = false;
    for _ in 0..3 {
        let t = report_next(&mut w, &worker, |t| {
            if t.task_id == retried.task_id || failed_for_good {
                ok(t)
            } else {
                failure(false)(t)
            }
        })
        .await;
        failed_for_good |= t.task_id != retried.task_id;
    }
    assert!(
        common::lease(&mut w, &worker, 0).await.is_none(),
        "no task left"
    );
    let full = tokio::time::timeout(Duration::from_secs(60), live)
        .await
        .expect("the live stream ends")
        .expect("watcher");
    assert!(!common::in_progress(job(&mut jobs, &id).await.state));

    // A stored event becomes several numbered events: the first completion, its new best and
    // the progress; a watcher that saw the completion still gets the new best.
    let k = full
        .iter()
        .position(|e| matches!(e.event, Some(E::TaskCompleted(_))))
        .expect("a completion");
    assert!(
        matches!(full[k + 1].event, Some(E::NewBest(_))),
        "{:?}",
        &full[k..]
    );
    assert!(
        matches!(full[k + 2].event, Some(E::Progress(_))),
        "{:?}",
        &full[k..]
    );
    assert_eq!(
        full[k].sequence / 256,
        full[k + 1].sequence / 256,
        "one stored event"
    );
    let rest = collect(server.jobs().await, id.clone(), full[k].sequence).await;
    assert!(matches!(rest[0].event, Some(E::NewBest(_))), "{rest:?}");
    // Progress follows every task that ended, counted from the log.
    let progress: Vec<(u32, u32)> = of!(full, Progress)
        .iter()
        .map(|p| (p.tasks_done, p.tasks_total))
        .collect();
    assert_eq!(progress, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    assert_eq!(of!(full, TaskFailed).len(), 2, "a retry and a failure");
    assert_resumes_exactly(&server, &id, &full).await;
    server.stop().await;
}
both_backends!(
    evaluate_watch_resumes_at_every_position_without_loss_or_repeat,
    evaluate_resume
);
