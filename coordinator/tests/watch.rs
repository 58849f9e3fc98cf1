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

    // Sequence numbers never go back (a progress event repeats the sequence it follows).
    for pair in events.windows(2) {
        assert!(pair[0].sequence <= pair[1].sequence, "{pair:?}");
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
    server.stop().await;
}
both_backends!(
    optimize_watch_streams_phases_policy_updates_and_the_best,
    watch_flow
);
