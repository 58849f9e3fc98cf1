//! The store contract: every test runs against SQLite (a temp file) and PostgreSQL (a fresh
//! database). Time is a parameter, so lease expiry is tested with a fixed clock, no sleeping.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::TestDb;
use nat_store::*;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn ms(millis: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(millis)
}

fn task(n: usize) -> NewTask {
    NewTask {
        kind: "train_eval".into(),
        payload: json!({ "arch": format!("arch-{n}") }),
        requirements: Requirements::default(),
        max_attempts: 3,
    }
}

fn tasks(n: usize) -> Vec<NewTask> {
    (0..n).map(task).collect()
}

fn job(priority: i32) -> NewJob {
    NewJob {
        kind: "evaluate".into(),
        spec: json!({ "dataset": "digits", "budget": "smoke" }),
        priority,
        completion: Completion::AllTasks,
        owner: None,
    }
}

fn cpu() -> Capabilities {
    Capabilities {
        cpu_cores: 2,
        slots: 1,
        devices: vec!["cpu".into()],
        version: "test".into(),
        ..Capabilities::default()
    }
}

fn gpu(mem: u64) -> Capabilities {
    Capabilities {
        gpus: 1,
        gpu_memory_mb: mem,
        gpu_model: Some("test gpu".into()),
        cpu_cores: 8,
        slots: 1,
        devices: vec!["cpu".into(), "cuda:0".into()],
        version: "test".into(),
        datasets: vec!["cifar10".into(), "my-cats".into()],
        dataset_infos: vec![nat_schema::DatasetInfo {
            name: "my-cats".into(),
            shape: nat_schema::DatasetShape {
                channels: 3,
                image_size: 64,
                classes: 2,
            },
            train_examples: 120,
            test_examples: 0,
            format: "image-folder".into(),
        }],
    }
}

fn ok(result: serde_json::Value) -> Outcome {
    Outcome::Succeeded {
        result,
        rewards: vec![],
        sample_rewards: vec![],
    }
}

fn key(arch: &str) -> RewardKey {
    RewardKey {
        arch_hash: arch.into(),
        dataset: "digits".into(),
        budget: "smoke".into(),
    }
}

async fn worker(store: &Arc<dyn Store>, name: &str) -> WorkerId {
    store
        .register_worker(name, cpu(), t0())
        .await
        .expect("register")
        .id
}

async fn lease(store: &Arc<dyn Store>, w: WorkerId, now: DateTime<Utc>) -> Lease {
    store
        .lease_task(w, &cpu(), now, LEASE)
        .await
        .expect("lease_task")
        .expect("a task is available")
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

// ------------------------------------------------------------------------------------------------

contract!(job_and_task_lifecycle);
async fn job_and_task_lifecycle(db: Arc<TestDb>) {
    let store = db.open().await;
    let created = store.create_job(job(0), tasks(3), t0()).await.unwrap();
    assert_eq!(created.state, JobState::Queued);
    assert_eq!(created.tasks_total, 3);
    assert_eq!(created.created_at, t0());
    let got = store.get_job(created.id).await.unwrap();
    assert_eq!(got, created);

    let listed = store.list_tasks(created.id, None, 0, 0).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .all(|t| t.state == TaskState::Ready && t.attempt == 0));
    assert_eq!(listed[1].payload, json!({ "arch": "arch-1" }));

    let w = worker(&store, "w1").await;
    let mut seen = Vec::new();
    for i in 0..3 {
        let l = lease(&store, w, at(i)).await;
        assert_eq!(l.attempt, 1);
        // A first lease's token is 1 plus a random amount (unguessable), so only positive.
        assert!(l.token > 0);
        assert_eq!(l.task.lease_token, l.token);
        assert_eq!(l.expires_at, at(i) + chrono::Duration::seconds(30));
        assert_eq!(l.task.state, TaskState::Leased);
        assert_eq!(l.task.leased_by, Some(w));
        seen.push(l);
    }
    // Creation order inside a job.
    assert_eq!(
        seen.iter().map(|l| l.task.id).collect::<Vec<_>>(),
        listed.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    assert!(store
        .lease_task(w, &cpu(), at(3), LEASE)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.get_job(created.id).await.unwrap().state,
        JobState::Running
    );

    for (i, l) in seen.iter().enumerate() {
        let ack = store
            .report_result(
                l.task.id,
                l.token,
                w,
                Outcome::Succeeded {
                    result: json!({ "accuracy": 0.9 }),
                    rewards: vec![RewardObservation {
                        key: key(&format!("arch-{i}")),
                        value: 0.9,
                    }],
                    sample_rewards: vec![],
                },
                at(10 + i as i64),
            )
            .await
            .unwrap();
        let expected_job = if i == 2 {
            JobState::Succeeded
        } else {
            JobState::Running
        };
        assert_eq!(
            ack,
            ReportAck::Accepted {
                job_id: created.id,
                task_state: TaskState::Done,
                job_state: expected_job
            }
        );
    }
    let done = store.get_job(created.id).await.unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!((done.tasks_done, done.tasks_failed), (3, 0));
    assert_eq!(done.finished_at, Some(at(12)));
    let t = store.get_task(seen[0].task.id).await.unwrap();
    assert_eq!(t.state, TaskState::Done);
    assert_eq!(t.result, Some(json!({ "accuracy": 0.9 })));
    assert_eq!(t.finished_at, Some(at(10)));

    let events = store.events_after(created.id, 0, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "job_created",
            "task_succeeded",
            "task_succeeded",
            "task_succeeded",
            "job_finished"
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(events[4].payload["state"], "succeeded");

    let running = store
        .list_jobs(JobFilter {
            state: Some(JobState::Running),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(running.is_empty());
    let all = store.list_jobs(JobFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(matches!(
        store.get_job(JobId::new()).await,
        Err(StoreError::NotFound {
            what: Entity::Job,
            ..
        })
    ));
}

contract!(expired_lease_is_requeued);
async fn expired_lease_is_requeued(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    let w1 = worker(&store, "w1").await;
    let w2 = worker(&store, "w2").await;
    let first = lease(&store, w1, t0()).await;

    // Not expired yet: nothing to claim, nothing to expire.
    assert!(store
        .lease_task(w2, &cpu(), at(29), LEASE)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.expire_leases(at(29)).await.unwrap(),
        ExpiryReport::default()
    );

    // Expired: the scan requeues it with the reason recorded.
    let report = store.expire_leases(at(31)).await.unwrap();
    assert_eq!(report.requeued, vec![first.task.id]);
    let t = store.get_task(first.task.id).await.unwrap();
    assert_eq!(t.state, TaskState::Ready);
    assert_eq!(t.failures.len(), 1);
    assert_eq!(t.failures[0].reason, "lease expired");
    assert_eq!(t.failures[0].worker, Some(w1));
    assert_eq!(t.failures[0].attempt, 1);
    assert_eq!(t.failures[0].at, at(30));
    assert!(t.failures[0].to_string().contains(&w1.to_string()));

    let second = lease(&store, w2, at(32)).await;
    assert_eq!(second.task.id, first.task.id);
    assert_eq!(second.attempt, 2);
    assert!(second.token > first.token, "a new lease has a larger token");

    // An expired lease is also claimed directly by lease_task, without the scan.
    let third = lease(&store, w1, at(63)).await;
    assert_eq!(third.task.id, first.task.id);
    assert_eq!(third.attempt, 3);
    assert!(third.token > second.token, "a new lease has a larger token");
    let t = store.get_task(first.task.id).await.unwrap();
    assert_eq!(t.failures.len(), 2);
    assert_eq!(t.failures[1].worker, Some(w2));
    assert_eq!(t.failures[1].at, at(62));
    let job_now = store.get_job(j.id).await.unwrap();
    assert_eq!((job_now.tasks_done, job_now.tasks_failed), (0, 0));
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    assert_eq!(kinds(&events), ["job_created", "task_retry"]);
}

contract!(stale_and_foreign_tokens_change_nothing);
async fn stale_and_foreign_tokens_change_nothing(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    let w1 = worker(&store, "w1").await;
    let w2 = worker(&store, "w2").await;
    let old = lease(&store, w1, t0()).await;
    let new = lease(&store, w2, at(31)).await; // w1's lease expired and was taken over
    assert!(new.token > old.token, "the new lease has a larger token");

    let task_before = store.get_task(old.task.id).await.unwrap();
    let job_before = store.get_job(j.id).await.unwrap();
    let events_before = store.events_after(j.id, 0, 100).await.unwrap();

    // Stale token from the previous holder.
    let err = store
        .report_result(old.task.id, old.token, w1, ok(json!({})), at(40))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
    // Current token, wrong worker.
    let err = store
        .report_result(new.task.id, new.token, w1, ok(json!({})), at(40))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
    // Made-up token.
    let err = store
        .report_result(new.task.id, new.token + 7, w2, ok(json!({})), at(40))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
    // Progress with a stale token is rejected too.
    let err = store
        .report_progress(old.task.id, old.token, w1, json!({ "epoch": 1 }), at(40))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
    // Unknown task.
    let err = store
        .report_result(TaskId::new(), 1, w1, ok(json!({})), at(40))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: Entity::Task,
                ..
            }
        ),
        "{err:?}"
    );

    assert_eq!(store.get_task(old.task.id).await.unwrap(), task_before);
    assert_eq!(store.get_job(j.id).await.unwrap(), job_before);
    assert_eq!(
        store.events_after(j.id, 0, 100).await.unwrap(),
        events_before
    );

    // The current holder still reports fine.
    let ack = store
        .report_result(new.task.id, new.token, w2, ok(json!({ "a": 1 })), at(41))
        .await
        .unwrap();
    assert!(matches!(
        ack,
        ReportAck::Accepted {
            task_state: TaskState::Done,
            ..
        }
    ));
    // After an accepted report, the stale token is still stale (not a "duplicate").
    let err = store
        .report_result(old.task.id, old.token, w1, ok(json!({})), at(42))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FailedPrecondition(_)), "{err:?}");
}

contract!(duplicate_report_counts_once);
async fn duplicate_report_counts_once(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(2), t0()).await.unwrap();
    let w = worker(&store, "w").await;
    let l = lease(&store, w, t0()).await;
    let outcome = Outcome::Succeeded {
        result: json!({ "accuracy": 0.5 }),
        rewards: vec![RewardObservation {
            key: key("dup"),
            value: 0.5,
        }],
        sample_rewards: vec![],
    };
    let first = store
        .report_result(l.task.id, l.token, w, outcome.clone(), at(1))
        .await
        .unwrap();
    assert!(matches!(first, ReportAck::Accepted { .. }));
    let job_after_first = store.get_job(j.id).await.unwrap();
    for i in 0..2 {
        let again = store
            .report_result(l.task.id, l.token, w, outcome.clone(), at(2 + i))
            .await
            .unwrap();
        assert_eq!(again, ReportAck::Duplicate);
    }
    let job_now = store.get_job(j.id).await.unwrap();
    assert_eq!(job_now, job_after_first);
    assert_eq!(job_now.tasks_done, 1);
    let est = store.reward_estimate(&key("dup")).await.unwrap().unwrap();
    assert_eq!(est.count, 1);
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    assert_eq!(kinds(&events), ["job_created", "task_succeeded"]);

    // A duplicate of a retryable failure is also counted once.
    let l2 = lease(&store, w, at(5)).await;
    let fail = Outcome::Failed {
        reason: "CUDA out of memory".into(),
        retryable: true,
    };
    let a = store
        .report_result(l2.task.id, l2.token, w, fail.clone(), at(6))
        .await
        .unwrap();
    assert!(matches!(
        a,
        ReportAck::Accepted {
            task_state: TaskState::Ready,
            ..
        }
    ));
    let b = store
        .report_result(l2.task.id, l2.token, w, fail, at(7))
        .await
        .unwrap();
    assert_eq!(b, ReportAck::Duplicate);
    let t = store.get_task(l2.task.id).await.unwrap();
    assert_eq!(t.failures.len(), 1);
    assert_eq!(t.state, TaskState::Ready);
}

contract!(max_attempts_fail_with_reasons);
async fn max_attempts_fail_with_reasons(db: Arc<TestDb>) {
    let store = db.open().await;
    let mut only = task(0);
    only.max_attempts = 3;
    let j = store.create_job(job(0), vec![only], t0()).await.unwrap();
    let w1 = worker(&store, "w1").await;
    let w2 = worker(&store, "w2").await;

    // Attempt 1: retryable failure -> requeued.
    let l1 = lease(&store, w1, t0()).await;
    let ack = store
        .report_result(
            l1.task.id,
            l1.token,
            w1,
            Outcome::Failed {
                reason: "worker crashed".into(),
                retryable: true,
            },
            at(1),
        )
        .await
        .unwrap();
    assert!(matches!(
        ack,
        ReportAck::Accepted {
            task_state: TaskState::Ready,
            job_state: JobState::Running,
            ..
        }
    ));
    // Attempt 2: lease expires -> requeued by the scan.
    let _l2 = lease(&store, w2, at(2)).await;
    let exp = store.expire_leases(at(40)).await.unwrap();
    assert_eq!(exp.requeued.len(), 1);
    // Attempt 3 (the last): lease expires -> no claim possible, the scan fails the task.
    let l3 = lease(&store, w1, at(41)).await;
    assert_eq!(l3.attempt, 3);
    assert!(store
        .lease_task(w2, &cpu(), at(100), LEASE)
        .await
        .unwrap()
        .is_none());
    let exp = store.expire_leases(at(100)).await.unwrap();
    assert_eq!(exp.failed, vec![l3.task.id]);
    assert_eq!(exp.finished_jobs, vec![j.id]);

    let t = store.get_task(l3.task.id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    let reasons: Vec<_> = t
        .failures
        .iter()
        .map(|f| (f.attempt, f.reason.as_str(), f.worker))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "worker crashed", Some(w1)),
            (2, "lease expired", Some(w2)),
            (3, "lease expired", Some(w1))
        ]
    );
    let job_now = store.get_job(j.id).await.unwrap();
    assert_eq!(job_now.state, JobState::Failed);
    assert_eq!((job_now.tasks_done, job_now.tasks_failed), (0, 1));
    assert!(job_now.error.is_some());
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "job_created",
            "task_retry",
            "task_retry",
            "task_failed",
            "job_finished"
        ]
    );
    assert_eq!(
        events[3].payload["reasons"].as_array().map(Vec::len),
        Some(3)
    );

    // A non-retryable failure fails at once; with one success the job still succeeds.
    let j2 = store.create_job(job(0), tasks(2), at(200)).await.unwrap();
    let a = lease(&store, w1, at(201)).await;
    let b = lease(&store, w2, at(201)).await;
    let ack = store
        .report_result(
            a.task.id,
            a.token,
            w1,
            Outcome::Failed {
                reason: "invalid genotype".into(),
                retryable: false,
            },
            at(202),
        )
        .await
        .unwrap();
    assert!(matches!(
        ack,
        ReportAck::Accepted {
            task_state: TaskState::Failed,
            ..
        }
    ));
    store
        .report_result(b.task.id, b.token, w2, ok(json!({})), at(203))
        .await
        .unwrap();
    let j2 = store.get_job(j2.id).await.unwrap();
    assert_eq!(j2.state, JobState::Succeeded);
    assert_eq!((j2.tasks_done, j2.tasks_failed), (1, 1));
}

contract!(requirements_match_capabilities);
async fn requirements_match_capabilities(db: Arc<TestDb>) {
    let store = db.open().await;
    let mut big = task(0);
    big.requirements = Requirements {
        needs_gpu: true,
        min_gpu_memory_mb: 16_000,
        min_cpu_cores: 4,
    };
    let j = store.create_job(job(0), vec![big], t0()).await.unwrap();
    let w = worker(&store, "w").await;
    assert!(store
        .lease_task(w, &cpu(), at(1), LEASE)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .lease_task(w, &gpu(8_000), at(1), LEASE)
        .await
        .unwrap()
        .is_none());
    let mut few_cores = gpu(24_000);
    few_cores.cpu_cores = 2;
    assert!(store
        .lease_task(w, &few_cores, at(1), LEASE)
        .await
        .unwrap()
        .is_none());
    let l = store
        .lease_task(w, &gpu(24_000), at(1), LEASE)
        .await
        .unwrap()
        .expect("the 24 GB GPU worker qualifies");
    assert_eq!(l.task.job_id, j.id);
    assert!(l.task.requirements.needs_gpu);
    assert!(gpu(24_000).satisfies(&l.task.requirements));

    // A CPU task is served to a GPU worker too, and a CPU worker skips GPU tasks to find it.
    let mut gpu_task = task(1);
    gpu_task.requirements.needs_gpu = true;
    store
        .create_job(job(0), vec![gpu_task, task(2)], at(2))
        .await
        .unwrap();
    let l = lease(&store, w, at(3)).await;
    assert_eq!(l.task.payload, json!({ "arch": "arch-2" }));
}

contract!(fair_across_jobs);
async fn fair_across_jobs(db: Arc<TestDb>) {
    let store = db.open().await;
    let a = store.create_job(job(0), tasks(3), ms(0)).await.unwrap();
    let b = store.create_job(job(0), tasks(3), ms(1)).await.unwrap();
    let c = store.create_job(job(5), tasks(2), ms(2)).await.unwrap();
    let w = worker(&store, "w").await;
    let mut order = Vec::new();
    for i in 0..8 {
        order.push(lease(&store, w, ms(10 + i)).await.task.job_id);
    }
    // Higher priority first, then round robin between equal priorities.
    assert_eq!(order, [c.id, c.id, a.id, b.id, a.id, b.id, a.id, b.id]);

    // A job that was just served waits for the others.
    let d = store.create_job(job(0), tasks(2), ms(20)).await.unwrap();
    let e = store.create_job(job(0), tasks(2), ms(21)).await.unwrap();
    let mut order = Vec::new();
    for i in 0..4 {
        order.push(lease(&store, w, ms(30 + i)).await.task.job_id);
    }
    assert_eq!(order, [d.id, e.id, d.id, e.id]);
}

contract!(cancel_withdraws_and_stops);
async fn cancel_withdraws_and_stops(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(3), t0()).await.unwrap();
    let w = worker(&store, "w").await;
    let held = lease(&store, w, at(1)).await;
    let cancelled = store.cancel_job(j.id, at(2)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.tasks_cancelled, 2);
    assert_eq!(cancelled.finished_at, Some(at(2)));
    let ready = store
        .list_tasks(j.id, Some(TaskState::Cancelled), 0, 0)
        .await
        .unwrap();
    assert_eq!(ready.len(), 2);
    assert_eq!(
        store.get_task(held.task.id).await.unwrap().state,
        TaskState::Leased
    );
    // Nothing left to lease.
    assert!(store
        .lease_task(w, &cpu(), at(3), LEASE)
        .await
        .unwrap()
        .is_none());
    // The heartbeat tells the worker to stop, and does not extend the lease.
    let hb = store
        .heartbeat(
            w,
            &[HeldLease {
                task_id: held.task.id,
                token: held.token,
            }],
            at(4),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(hb.stop, vec![held.task.id]);
    assert!(hb.extended.is_empty());
    // Cancelling again is a precondition failure.
    assert!(matches!(
        store.cancel_job(j.id, at(5)).await,
        Err(StoreError::FailedPrecondition(_))
    ));
    // The worker's late report is accepted and cancels the task.
    let ack = store
        .report_result(held.task.id, held.token, w, ok(json!({})), at(6))
        .await
        .unwrap();
    assert_eq!(
        ack,
        ReportAck::Accepted {
            job_id: j.id,
            task_state: TaskState::Cancelled,
            job_state: JobState::Cancelled
        }
    );
    let j_now = store.get_job(j.id).await.unwrap();
    assert_eq!((j_now.tasks_done, j_now.tasks_cancelled), (0, 3));

    // A leased task of a cancelled job whose worker vanished is cancelled by the expiry scan.
    let j2 = store.create_job(job(0), tasks(1), at(10)).await.unwrap();
    let gone = lease(&store, w, at(11)).await;
    store.cancel_job(j2.id, at(12)).await.unwrap();
    let exp = store.expire_leases(at(100)).await.unwrap();
    assert_eq!(exp.cancelled, vec![gone.task.id]);
    assert_eq!(store.get_job(j2.id).await.unwrap().tasks_cancelled, 1);
    assert!(matches!(
        store.cancel_job(JobId::new(), at(13)).await,
        Err(StoreError::NotFound { .. })
    ));
}

contract!(late_reports_on_an_ended_job_are_discarded);
/// A report on a task whose job has ended is accepted and cancels the task, but its outcome is
/// discarded: no result, no failure, no reward estimate, no event; the task is counted once
/// (cancelled); its duplicate changes nothing. Alike on the single and the batch report paths.
async fn late_reports_on_an_ended_job_are_discarded(db: Arc<TestDb>) {
    let store = db.open().await;
    let w = worker(&store, "w").await;
    for batch in [false, true] {
        let base = if batch { 100 } else { 0 };
        let j = store.create_job(job(0), tasks(3), at(base)).await.unwrap();
        let (a, b) = (
            lease(&store, w, at(base + 1)).await,
            lease(&store, w, at(base + 1)).await,
        );
        store.cancel_job(j.id, at(base + 2)).await.unwrap();
        let rkey = key(&format!("late-{batch}"));
        let success = Outcome::Succeeded {
            result: json!({ "acc": 0.9 }),
            rewards: vec![RewardObservation {
                key: rkey.clone(),
                value: 0.9,
            }],
            sample_rewards: vec![],
        };
        let items = vec![
            ReportItem {
                task: a.task.id,
                token: a.token,
                worker: w,
                outcome: success.clone(),
            },
            ReportItem {
                task: b.task.id,
                token: b.token,
                worker: w,
                outcome: fail(false),
            },
        ];
        let now = at(base + 3);
        let answers: Vec<Result<ReportAck>> = if batch {
            store.report_results(items.clone(), now).await.unwrap()
        } else {
            let mut out = Vec::new();
            for i in items.clone() {
                out.push(
                    store
                        .report_result(i.task, i.token, i.worker, i.outcome, now)
                        .await,
                );
            }
            out
        };
        let answers: Vec<String> = answers.iter().map(answer).collect();
        assert_eq!(
            answers,
            [
                "accepted cancelled cancelled",
                "accepted cancelled cancelled"
            ],
            "batch: {batch}"
        );
        for l in [&a, &b] {
            let t = store.get_task(l.task.id).await.unwrap();
            assert_eq!(t.state, TaskState::Cancelled);
            assert_eq!(t.result, None, "a discarded success keeps no result");
            assert!(t.failures.is_empty(), "a discarded failure is not recorded");
        }
        let jn = store.get_job(j.id).await.unwrap();
        assert_eq!(
            (jn.tasks_done, jn.tasks_failed, jn.tasks_cancelled),
            (0, 0, 3),
            "each task counted once, as cancelled"
        );
        assert_eq!(store.reward_estimate(&rkey).await.unwrap(), None);
        let events = store.events_after(j.id, 0, 100).await.unwrap();
        // The same reports again are duplicates and change nothing.
        for i in items {
            let again = store
                .report_result(i.task, i.token, i.worker, i.outcome, at(base + 4))
                .await
                .unwrap();
            assert_eq!(again, ReportAck::Duplicate);
        }
        let jn2 = store.get_job(j.id).await.unwrap();
        assert_eq!(
            (jn2.tasks_done, jn2.tasks_failed, jn2.tasks_cancelled),
            (0, 0, 3)
        );
        assert_eq!(store.events_after(j.id, 0, 100).await.unwrap(), events);
        assert_eq!(store.reward_estimate(&rkey).await.unwrap(), None);
    }
}

contract!(heartbeat_extends_leases);
async fn heartbeat_extends_leases(db: Arc<TestDb>) {
    let store = db.open().await;
    store.create_job(job(0), tasks(3), t0()).await.unwrap();
    let w1 = worker(&store, "w1").await;
    let w2 = worker(&store, "w2").await;
    let l = lease(&store, w1, t0()).await;
    let other = lease(&store, w2, t0()).await;
    // A lease of w1's that w1 never learnt of (its LeaseTask response was lost): w1 does not
    // list it, so its heartbeats do not keep it alive.
    let orphan = lease(&store, w1, t0()).await;
    let hb = store
        .heartbeat(
            w1,
            &[
                HeldLease {
                    task_id: l.task.id,
                    token: l.token,
                },
                HeldLease {
                    task_id: other.task.id,
                    token: other.token,
                },
            ],
            at(20),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(hb.extended, vec![l.task.id]);
    assert_eq!(hb.lease_expires_at, at(50));
    // w1 claims to hold w2's task: it must stop it.
    assert_eq!(hb.stop, vec![other.task.id]);
    assert_eq!(
        store.get_task(l.task.id).await.unwrap().lease_expires_at,
        Some(at(50))
    );
    let w = store.get_worker(w1).await.unwrap();
    assert_eq!(w.last_heartbeat_at, at(20));
    assert_eq!(w.state, WorkerState::Active);

    // At t+40, w1's lease is alive (extended) while w2's and the orphan expired.
    let exp = store.expire_leases(at(40)).await.unwrap();
    let mut requeued = exp.requeued.clone();
    requeued.sort();
    let mut expected = vec![other.task.id, orphan.task.id];
    expected.sort();
    assert_eq!(requeued, expected);
    assert_eq!(
        store.get_task(l.task.id).await.unwrap().state,
        TaskState::Leased
    );
    // w2 learns it lost its task.
    let hb2 = store
        .heartbeat(
            w2,
            &[HeldLease {
                task_id: other.task.id,
                token: other.token,
            }],
            at(41),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(hb2.stop, vec![other.task.id]);
    assert!(hb2.extended.is_empty());
    // Workers silent since before the cutoff are marked lost.
    let lost = store.mark_lost_workers(at(20)).await.unwrap();
    assert!(lost.is_empty());
    let lost = store.mark_lost_workers(at(21)).await.unwrap();
    assert_eq!(lost, vec![w1]);
    assert_eq!(store.get_worker(w1).await.unwrap().state, WorkerState::Lost);
    assert!(matches!(
        store.heartbeat(WorkerId::new(), &[], at(46), LEASE).await,
        Err(StoreError::NotFound {
            what: Entity::Worker,
            ..
        })
    ));
    assert_eq!(store.list_workers().await.unwrap().len(), 2);
}

contract!(concurrent_leases_never_double_lease);
async fn concurrent_leases_never_double_lease(db: Arc<TestDb>) {
    let store = db.open().await;
    let j1 = store.create_job(job(0), tasks(20), t0()).await.unwrap();
    let j2 = store.create_job(job(1), tasks(20), t0()).await.unwrap();
    let mut workers = Vec::new();
    for i in 0..50 {
        workers.push(worker(&store, &format!("w{i}")).await);
    }
    let mut handles = Vec::new();
    for w in workers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.lease_task(w, &cpu(), at(1), LEASE).await
        }));
    }
    let mut leased = Vec::new();
    let mut empty = 0;
    for h in handles {
        match h.await.expect("join").expect("lease_task") {
            Some(l) => leased.push(l),
            None => empty += 1,
        }
    }
    assert_eq!(leased.len(), 40);
    assert_eq!(empty, 10);
    let ids: HashSet<_> = leased.iter().map(|l| l.task.id).collect();
    assert_eq!(ids.len(), 40, "a task was leased twice");
    assert!(leased.iter().all(|l| l.token > 0 && l.attempt == 1));
    for j in [j1.id, j2.id] {
        let ts = store
            .list_tasks(j, Some(TaskState::Leased), 0, 0)
            .await
            .unwrap();
        assert_eq!(ts.len(), 20);
    }
}

contract!(events_are_ordered);
async fn events_are_ordered(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    let other = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    for i in 0..25 {
        let e = store
            .append_event(j.id, "note", json!({ "i": i }), at(i))
            .await
            .unwrap();
        assert_eq!(e.seq, i + 2);
        assert_eq!(e.created_at, at(i));
    }
    store
        .append_event(other.id, "note", json!({}), at(1))
        .await
        .unwrap();
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = store.events_after(j.id, after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.seq).unwrap_or(after);
        all.extend(page);
    }
    assert_eq!(all.len(), 26);
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(all.iter().all(|e| e.job_id == j.id));
    assert_eq!(all[5].payload, json!({ "i": 4 }));
    assert_eq!(store.events_after(other.id, 0, 10).await.unwrap().len(), 2);
    assert!(matches!(
        store.events_after(JobId::new(), 0, 10).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .append_event(JobId::new(), "note", json!({}), at(1))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // Progress reports are events too.
    let w = worker(&store, "w").await;
    let l = lease(&store, w, at(30)).await;
    store
        .report_progress(l.task.id, l.token, w, json!({ "epoch": 3 }), at(31))
        .await
        .unwrap();
    assert_eq!(
        store.get_task(l.task.id).await.unwrap().progress,
        Some(json!({ "epoch": 3 }))
    );
    let last = store.events_after(l.task.job_id, 0, 100).await.unwrap();
    let last = last.last().expect("events");
    assert_eq!(last.kind, "task_progress");
    assert_eq!(last.payload["progress"], json!({ "epoch": 3 }));
}

contract!(reward_estimates_use_welford);
async fn reward_estimates_use_welford(db: Arc<TestDb>) {
    let store = db.open().await;
    let xs = [0.91, 0.87, 0.95, 0.89, 0.93, 0.90];
    let mut last = None;
    for (i, x) in xs.iter().enumerate() {
        last = Some(
            store
                .record_reward(
                    RewardObservation {
                        key: key("welford"),
                        value: *x,
                    },
                    at(i as i64),
                )
                .await
                .unwrap(),
        );
    }
    let est = store
        .reward_estimate(&key("welford"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(&est), last.as_ref());
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert_eq!(est.count, 6);
    assert!((est.mean - mean).abs() < 1e-12, "{} vs {mean}", est.mean);
    let got_var = est.sample_variance().unwrap();
    assert!((got_var - var).abs() < 1e-12, "{got_var} vs {var}");
    assert_eq!(est.updated_at, at(5));
    // Keys are independent.
    assert!(store
        .reward_estimate(&key("other"))
        .await
        .unwrap()
        .is_none());
    let mut k = key("welford");
    k.budget = "small".into();
    assert!(store.reward_estimate(&k).await.unwrap().is_none());
    // Non-finite values are refused, naming the field.
    let err = store
        .record_reward(
            RewardObservation {
                key: key("welford"),
                value: f64::NAN,
            },
            at(9),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidArgument { ref field, .. } if field == "rewards[0].value"),
        "{err:?}"
    );
}

fn checkpoint(version: i64, baseline: f64) -> NewCheckpoint {
    NewCheckpoint {
        policy_id: "pol".into(),
        version,
        space: "nat".into(),
        params: vec![version as u8; 64],
        optimizer_state: vec![7; 16],
        baseline,
        source_job: None,
        meta: json!({ "profile": "default" }),
        leader_epoch: None,
    }
}

contract!(policy_updates_consume_rewards_exactly_once);
async fn policy_updates_consume_rewards_exactly_once(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    assert!(matches!(
        store.latest_checkpoint("pol").await,
        Err(StoreError::NotFound {
            what: Entity::Policy,
            ..
        })
    ));
    // Version 1 must come first.
    assert!(matches!(
        store.save_checkpoint(checkpoint(2, 0.0), t0()).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .save_checkpoint(checkpoint(1, 0.0), t0())
        .await
        .unwrap();

    let samples: Vec<_> = (0..5)
        .map(|i| NewPolicySample {
            job_id: j.id,
            policy_id: "pol".into(),
            policy_version: 1,
            log_prob: -1.5 - i as f64,
            entropy: 2.0,
            input: json!({ "g": i }),
            output: json!({ "g": i + 1 }),
            task_id: None,
        })
        .collect();
    let ids = store.insert_samples(samples, at(1)).await.unwrap();
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[1] > w[0]));
    for (i, id) in ids.iter().take(4).enumerate() {
        assert!(store.set_sample_reward(*id, 0.1 * i as f64).await.unwrap());
    }
    // Idempotent: the first reward stays.
    assert!(!store.set_sample_reward(ids[0], 0.99).await.unwrap());
    assert_eq!(store.get_sample(ids[0]).await.unwrap().reward, Some(0.0));
    assert!(matches!(
        store.set_sample_reward(SampleId::from(-5), 0.1).await,
        Err(StoreError::NotFound {
            what: Entity::PolicySample,
            ..
        })
    ));

    let pending = store.take_unconsumed_rewards("pol", 100).await.unwrap();
    assert_eq!(pending.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..4]);
    // Reading does not consume.
    assert_eq!(
        store.take_unconsumed_rewards("pol", 2).await.unwrap().len(),
        2
    );

    // A conflicting update (wrong version) changes nothing.
    assert!(matches!(
        store
            .commit_policy_update(checkpoint(3, 0.5), &ids[..3], &[ids[3]], at(2))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .take_unconsumed_rewards("pol", 100)
            .await
            .unwrap()
            .len(),
        4
    );

    store
        .commit_policy_update(checkpoint(2, 0.25), &ids[..3], &[ids[3]], at(3))
        .await
        .unwrap();
    assert!(store
        .take_unconsumed_rewards("pol", 100)
        .await
        .unwrap()
        .is_empty());
    let s0 = store.get_sample(ids[0]).await.unwrap();
    assert_eq!((s0.consumed_in_version, s0.dropped), (Some(2), false));
    let s3 = store.get_sample(ids[3]).await.unwrap();
    assert_eq!((s3.consumed_in_version, s3.dropped), (Some(2), true));

    // Replaying the same update (e.g. after a crash, from a stale updater) is a conflict.
    assert!(matches!(
        store
            .commit_policy_update(checkpoint(2, 0.25), &ids[..3], &[], at(4))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Consuming already consumed (or reward-less) samples is a conflict and stores nothing.
    assert!(matches!(
        store
            .commit_policy_update(checkpoint(3, 0.3), &[ids[0]], &[], at(5))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .commit_policy_update(checkpoint(3, 0.3), &[ids[4]], &[], at(5))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let latest = store.latest_checkpoint("pol").await.unwrap();
    assert_eq!(latest.version, 2);
    assert_eq!(latest.params, vec![2u8; 64]);
    assert_eq!(latest.optimizer_state, vec![7u8; 16]);
    assert_eq!(latest.baseline, 0.25);
    assert_eq!(latest.meta, json!({ "profile": "default" }));
    assert_eq!(latest.created_at, at(3));
    assert_eq!(
        store.checkpoint("pol", 1).await.unwrap().params,
        vec![1u8; 64]
    );

    let policies = store.list_policies().await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].version, 2);
    assert_eq!(policies[0].rewards_consumed, 3);

    // Rewards can also arrive inside a task report, in its transaction.
    let more = store
        .insert_samples(
            vec![NewPolicySample {
                job_id: j.id,
                policy_id: "pol".into(),
                policy_version: 2,
                log_prob: -0.5,
                entropy: 1.0,
                input: json!({}),
                output: json!({}),
                task_id: None,
            }],
            at(6),
        )
        .await
        .unwrap();
    let w = worker(&store, "w").await;
    let l = lease(&store, w, at(7)).await;
    store
        .report_result(
            l.task.id,
            l.token,
            w,
            Outcome::Succeeded {
                result: json!({}),
                rewards: vec![],
                sample_rewards: vec![SampleReward {
                    sample_id: more[0],
                    reward: 0.75,
                }],
            },
            at(8),
        )
        .await
        .unwrap();
    let pending = store.take_unconsumed_rewards("pol", 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].reward, Some(0.75));
}

contract!(concurrent_policy_updates_one_wins);
async fn concurrent_policy_updates_one_wins(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    store
        .save_checkpoint(checkpoint(1, 0.0), t0())
        .await
        .unwrap();
    let ids = store
        .insert_samples(
            (0..4)
                .map(|_| NewPolicySample {
                    job_id: j.id,
                    policy_id: "pol".into(),
                    policy_version: 1,
                    log_prob: -1.0,
                    entropy: 1.0,
                    input: json!({}),
                    output: json!({}),
                    task_id: None,
                })
                .collect(),
            t0(),
        )
        .await
        .unwrap();
    for id in &ids {
        store.set_sample_reward(*id, 1.0).await.unwrap();
    }
    let mut handles = Vec::new();
    for k in 0..4 {
        let store = store.clone();
        let ids = ids.clone();
        handles.push(tokio::spawn(async move {
            store
                .commit_policy_update(checkpoint(2, k as f64), &ids, &[], at(1))
                .await
        }));
    }
    let mut wins = 0;
    for h in handles {
        match h.await.expect("join") {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.latest_checkpoint("pol").await.unwrap().version, 2);
    for id in &ids {
        assert_eq!(
            store.get_sample(*id).await.unwrap().consumed_in_version,
            Some(2)
        );
    }
}

contract!(phased_job_with_manual_completion);
async fn phased_job_with_manual_completion(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store
        .create_job(
            NewJob {
                kind: "optimize".into(),
                spec: json!({}),
                priority: 0,
                completion: Completion::Manual,
                owner: None,
            },
            vec![],
            t0(),
        )
        .await
        .unwrap();
    let ids = store.add_tasks(j.id, tasks(2), at(1)).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(store.get_job(j.id).await.unwrap().tasks_total, 2);
    let w = worker(&store, "w").await;
    for i in 0..2 {
        let l = lease(&store, w, at(2 + i)).await;
        let ack = store
            .report_result(l.task.id, l.token, w, ok(json!({ "i": i })), at(3 + i))
            .await
            .unwrap();
        // Manual jobs are not finished by their tasks.
        assert!(matches!(
            ack,
            ReportAck::Accepted {
                job_state: JobState::Running,
                ..
            }
        ));
    }
    store
        .set_job_result(j.id, json!({ "phase": "derive" }), at(5))
        .await
        .unwrap();
    assert_eq!(
        store.get_job(j.id).await.unwrap().result,
        Some(json!({ "phase": "derive" }))
    );
    let more = store.add_tasks(j.id, tasks(1), at(6)).await.unwrap();
    let t = store.get_task(more[0]).await.unwrap();
    assert_eq!(t.state, TaskState::Ready);
    let finished = store
        .finish_job(
            j.id,
            JobOutcome::Succeeded {
                result: json!({ "best": "x" }),
            },
            at(7),
        )
        .await
        .unwrap();
    assert_eq!(finished.state, JobState::Succeeded);
    assert_eq!(finished.result, Some(json!({ "best": "x" })));
    assert_eq!(finished.tasks_cancelled, 1);
    assert!(matches!(
        store.add_tasks(j.id, tasks(1), at(8)).await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store.set_job_result(j.id, json!({}), at(8)).await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "job_created",
            "tasks_added",
            "task_succeeded",
            "task_succeeded",
            "tasks_added",
            "job_finished"
        ]
    );
}

contract!(bad_input_names_the_field);
async fn bad_input_names_the_field(db: Arc<TestDb>) {
    let store = db.open().await;
    let field_of = |r: Result<Job>| match r {
        Err(StoreError::InvalidArgument { field, .. }) => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(
        field_of(store.create_job(job(5000), tasks(1), t0()).await),
        "priority"
    );
    let mut bad = tasks(2);
    bad[1].max_attempts = 0;
    assert_eq!(
        field_of(store.create_job(job(0), bad, t0()).await),
        "tasks[1].max_attempts"
    );
    let mut bad = tasks(1);
    bad[0].kind = " ".into();
    assert_eq!(
        field_of(store.create_job(job(0), bad, t0()).await),
        "tasks[0].kind"
    );
    assert_eq!(
        field_of(store.create_job(job(0), vec![], t0()).await),
        "tasks"
    );
    let mut nameless = job(0);
    nameless.kind = String::new();
    assert_eq!(
        field_of(store.create_job(nameless, tasks(1), t0()).await),
        "kind"
    );
    assert!(store
        .list_jobs(JobFilter::default())
        .await
        .unwrap()
        .is_empty());

    let w = worker(&store, "w").await;
    assert!(matches!(
        store.lease_task(w, &cpu(), t0(), Duration::ZERO).await,
        Err(StoreError::InvalidArgument { ref field, .. }) if field == "lease_duration"
    ));
    assert!(matches!(
        store.register_worker("", cpu(), t0()).await,
        Err(StoreError::InvalidArgument { ref field, .. }) if field == "name"
    ));
    assert!(matches!(
        store.list_jobs(JobFilter { limit: 1_000_000, ..JobFilter::default() }).await,
        Err(StoreError::InvalidArgument { ref field, .. }) if field == "limit"
    ));
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    let l = lease(&store, w, t0()).await;
    let err = store
        .report_result(
            l.task.id,
            l.token,
            w,
            Outcome::Succeeded {
                result: json!({}),
                rewards: vec![RewardObservation {
                    key: key("x"),
                    value: f64::INFINITY,
                }],
                sample_rewards: vec![],
            },
            at(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidArgument { ref field, .. } if field == "rewards[0].value")
    );
    // A reward for an unknown sample rolls the whole report back.
    let err = store
        .report_result(
            l.task.id,
            l.token,
            w,
            Outcome::Succeeded {
                result: json!({}),
                rewards: vec![RewardObservation {
                    key: key("x"),
                    value: 0.5,
                }],
                sample_rewards: vec![SampleReward {
                    sample_id: SampleId::from(424_242),
                    reward: 0.5,
                }],
            },
            at(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: Entity::PolicySample,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.get_task(l.task.id).await.unwrap().state,
        TaskState::Leased
    );
    assert_eq!(store.get_job(j.id).await.unwrap().tasks_done, 0);
    assert!(store.reward_estimate(&key("x")).await.unwrap().is_none());
}

contract!(reopen_keeps_state);
async fn reopen_keeps_state(db: Arc<TestDb>) {
    let (job_id, task_id, w, token) = {
        let store = db.open().await;
        let j = store.create_job(job(3), tasks(2), t0()).await.unwrap();
        let w = worker(&store, "w").await;
        let l1 = lease(&store, w, at(1)).await;
        store
            .report_result(l1.task.id, l1.token, w, ok(json!({ "acc": 1 })), at(2))
            .await
            .unwrap();
        let l2 = lease(&store, w, at(3)).await;
        store
            .record_reward(
                RewardObservation {
                    key: key("kept"),
                    value: 0.5,
                },
                at(4),
            )
            .await
            .unwrap();
        store
            .save_checkpoint(checkpoint(1, 0.0), at(4))
            .await
            .unwrap();
        (j.id, l2.task.id, w, l2.token)
    };
    // A new process on the same database.
    let store = db.open().await;
    let j = store.get_job(job_id).await.unwrap();
    assert_eq!(j.state, JobState::Running);
    assert_eq!((j.tasks_total, j.tasks_done, j.priority), (2, 1, 3));
    let t = store.get_task(task_id).await.unwrap();
    assert_eq!(
        (t.state, t.lease_token, t.leased_by),
        (TaskState::Leased, token, Some(w))
    );
    assert_eq!(
        store
            .reward_estimate(&key("kept"))
            .await
            .unwrap()
            .unwrap()
            .count,
        1
    );
    assert_eq!(store.latest_checkpoint("pol").await.unwrap().version, 1);
    // The lease survives the restart: the worker reports to the new process.
    store
        .report_result(task_id, token, w, ok(json!({})), at(5))
        .await
        .unwrap();
    let j = store.get_job(job_id).await.unwrap();
    assert_eq!((j.state, j.tasks_done), (JobState::Succeeded, 2));
    assert_eq!(store.events_after(job_id, 0, 100).await.unwrap().len(), 4);
}

contract!(batched_leases_and_reports);
async fn batched_leases_and_reports(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(5), t0()).await.unwrap();
    let mut gpu_only = task(9);
    gpu_only.requirements.needs_gpu = true;
    store
        .create_job(job(0), vec![gpu_only], t0())
        .await
        .unwrap();
    let w1 = worker(&store, "w1").await;
    let w2 = worker(&store, "w2").await;
    let requests: Vec<LeaseRequest> = (0..7)
        .map(|i| LeaseRequest {
            worker: Some(if i % 2 == 0 { w1 } else { w2 }),
            capabilities: cpu(),
            datasets: vec![],
        })
        .collect();
    let leases = store.lease_tasks(&requests, at(1), LEASE).await.unwrap();
    assert_eq!(leases.len(), 7);
    let got: Vec<&Lease> = leases.iter().flatten().collect();
    assert_eq!(got.len(), 5, "the GPU task is not given to CPU slots");
    let ids: HashSet<_> = got.iter().map(|l| l.task.id).collect();
    assert_eq!(ids.len(), 5);
    assert!(leases[5].is_none() && leases[6].is_none());
    for (i, l) in leases.iter().enumerate().take(5) {
        let l = l.as_ref().unwrap();
        assert_eq!(l.task.leased_by, requests[i].worker);
        assert_eq!(l.task.job_id, j.id);
    }

    let item = |l: &Lease, token: i64| ReportItem {
        task: l.task.id,
        token,
        worker: l.task.leased_by.unwrap(),
        outcome: ok(json!({ "n": 1 })),
    };
    let items = vec![
        item(got[0], got[0].token),
        item(got[1], got[1].token),
        item(got[2], got[2].token + 5), // stale
        item(got[0], got[0].token),     // same report again
        ReportItem {
            task: got[3].task.id,
            token: got[3].token,
            worker: got[3].task.leased_by.unwrap(),
            outcome: Outcome::Succeeded {
                result: json!({}),
                rewards: vec![RewardObservation {
                    key: key("batch"),
                    value: f64::NAN,
                }],
                sample_rewards: vec![],
            },
        }, // invalid
    ];
    let results = store.report_results(items, at(2)).await.unwrap();
    assert_eq!(results.len(), 5);
    assert!(matches!(
        results[0],
        Ok(ReportAck::Accepted {
            task_state: TaskState::Done,
            ..
        })
    ));
    assert!(matches!(
        results[1],
        Ok(ReportAck::Accepted {
            task_state: TaskState::Done,
            ..
        })
    ));
    assert!(
        matches!(results[2], Err(StoreError::FailedPrecondition(_))),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Ok(ReportAck::Duplicate)),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Err(StoreError::InvalidArgument { .. })),
        "{:?}",
        results[4]
    );
    let j_now = store.get_job(j.id).await.unwrap();
    assert_eq!(j_now.tasks_done, 2);
    assert_eq!(
        store.get_task(got[2].task.id).await.unwrap().state,
        TaskState::Leased
    );
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        ["job_created", "task_succeeded", "task_succeeded"]
    );
}

contract!(concurrent_batched_leases_take_every_task);
async fn concurrent_batched_leases_take_every_task(db: Arc<TestDb>) {
    // Concurrent batches (as the coordinator's group commit issues them) never hand a task out
    // twice and never come back short while claimable tasks remain: a batch skips rows a
    // concurrent batch has locked and goes on to the next ones.
    let store = db.open().await;
    let low = store.create_job(job(0), tasks(30), t0()).await.unwrap();
    let high = store.create_job(job(5), tasks(30), t0()).await.unwrap();
    let mut workers = Vec::new();
    for i in 0..10 {
        workers.push(worker(&store, &format!("w{i}")).await);
    }
    let mut handles = Vec::new();
    for b in 0..6 {
        let store = store.clone();
        let requests: Vec<LeaseRequest> = workers
            .iter()
            .map(|&w| LeaseRequest {
                worker: Some(w),
                capabilities: cpu(),
                datasets: vec![],
            })
            .collect();
        handles.push(tokio::spawn(async move {
            (b, store.lease_tasks(&requests, at(1), LEASE).await)
        }));
    }
    let mut leased = Vec::new();
    for h in handles {
        let (_, r) = h.await.expect("join");
        let batch = r.expect("lease_tasks");
        assert_eq!(batch.len(), 10);
        for (i, l) in batch.into_iter().enumerate() {
            let l = l.expect("60 requests, 60 claimable tasks: every request gets one");
            assert_eq!(l.task.leased_by, Some(workers[i]));
            assert!(l.token > 0 && l.attempt == 1, "{} {}", l.token, l.attempt);
            leased.push(l);
        }
    }
    let ids: HashSet<_> = leased.iter().map(|l| l.task.id).collect();
    assert_eq!(ids.len(), 60, "a task was leased twice");
    for j in [low.id, high.id] {
        assert_eq!(
            store
                .list_tasks(j, Some(TaskState::Leased), 0, 0)
                .await
                .unwrap()
                .len(),
            30
        );
    }
    // Nothing left: a further batch is empty, and the expired leases come back in order.
    let again = store
        .lease_tasks(
            &[LeaseRequest {
                worker: Some(workers[0]),
                capabilities: cpu(),
                datasets: vec![],
            }],
            at(2),
            LEASE,
        )
        .await
        .unwrap();
    assert!(again[0].is_none());

    // Within one batch: the higher priority first, then the other job, then nothing.
    let a = store.create_job(job(0), tasks(2), at(3)).await.unwrap();
    let b = store.create_job(job(9), tasks(2), at(3)).await.unwrap();
    let requests: Vec<LeaseRequest> = (0..5)
        .map(|_| LeaseRequest {
            worker: Some(workers[1]),
            capabilities: cpu(),
            datasets: vec![],
        })
        .collect();
    let got = store.lease_tasks(&requests, at(4), LEASE).await.unwrap();
    let jobs: Vec<Option<JobId>> = got
        .iter()
        .map(|l| l.as_ref().map(|l| l.task.job_id))
        .collect();
    assert_eq!(jobs, [Some(b.id), Some(b.id), Some(a.id), Some(a.id), None]);

    // A mixed batch: a GPU task only to the GPU slot, a CPU slot gets the CPU task.
    let c = store.create_job(job(0), tasks(1), at(5)).await.unwrap();
    let mut g = task(7);
    g.requirements.needs_gpu = true;
    let gj = store.create_job(job(5), vec![g], at(5)).await.unwrap();
    let gw = store
        .register_worker("gpu", gpu(16_000), at(5))
        .await
        .unwrap()
        .id;
    // Capabilities, the declared datasets and their shapes included, are stored with the
    // worker.
    assert_eq!(
        store.get_worker(gw).await.unwrap().capabilities,
        gpu(16_000)
    );
    let listed = store.list_workers().await.unwrap();
    let listed = listed.iter().find(|w| w.id == gw).unwrap();
    assert_eq!(listed.capabilities.dataset_infos, gpu(16_000).dataset_infos);
    let cpu_slot = LeaseRequest {
        worker: Some(workers[2]),
        capabilities: cpu(),
        datasets: vec![],
    };
    let requests = vec![
        cpu_slot.clone(),
        LeaseRequest {
            worker: Some(gw),
            capabilities: gpu(16_000),
            datasets: vec![],
        },
        cpu_slot,
    ];
    let got = store.lease_tasks(&requests, at(6), LEASE).await.unwrap();
    let jobs: Vec<Option<JobId>> = got
        .iter()
        .map(|l| l.as_ref().map(|l| l.task.job_id))
        .collect();
    assert_eq!(jobs, [Some(c.id), Some(gj.id), None]);
    assert_eq!(
        got[1].as_ref().and_then(|l| l.task.leased_by),
        Some(gw),
        "the GPU task went to the GPU slot"
    );
}

contract!(batched_reports_each_get_their_answer);
async fn batched_reports_each_get_their_answer(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(7), t0()).await.unwrap();
    let w = worker(&store, "w").await;
    let other = worker(&store, "other").await;
    let mut ls = Vec::new();
    for i in 0..7 {
        ls.push(lease(&store, w, ms(10 + i)).await);
    }
    let obs = |x: f64| RewardObservation {
        key: key("k"),
        value: x,
    };
    // One observation before the batch, so the batch merges into a stored estimate.
    let first = store
        .report_result(
            ls[0].task.id,
            ls[0].token,
            w,
            Outcome::Succeeded {
                result: json!({ "i": 0 }),
                rewards: vec![obs(0.5)],
                sample_rewards: vec![],
            },
            at(1),
        )
        .await
        .unwrap();
    assert!(matches!(first, ReportAck::Accepted { .. }));
    let done = |l: &Lease, xs: Vec<f64>| ReportItem {
        task: l.task.id,
        token: l.token,
        worker: w,
        outcome: Outcome::Succeeded {
            result: json!({ "task": l.task.id }),
            rewards: xs.into_iter().map(obs).collect(),
            sample_rewards: vec![],
        },
    };
    let failed = |l: &Lease, retryable: bool| ReportItem {
        task: l.task.id,
        token: l.token,
        worker: w,
        outcome: Outcome::Failed {
            reason: format!("boom {retryable}"),
            retryable,
        },
    };
    let missing = TaskId::new();
    let items = vec![
        done(&ls[0], vec![0.1]),      // 0: already reported: duplicate, counted once
        done(&ls[1], vec![0.7, 0.9]), // 1: two observations of one key in one report
        failed(&ls[2], true),         // 2: retryable failure: back to ready
        ReportItem {
            token: ls[3].token + 1,
            ..done(&ls[3], vec![0.2])
        }, // 3: stale token
        ReportItem {
            worker: other,
            ..done(&ls[3], vec![0.2])
        }, // 4: foreign worker
        ReportItem {
            task: missing,
            ..done(&ls[3], vec![0.2])
        }, // 5: unknown task
        done(&ls[4], vec![0.6]),      // 6
        done(&ls[4], vec![0.6]),      // 7: the same report twice in the batch
        failed(&ls[5], false),        // 8: final failure
        done(&ls[6], vec![0.8]),      // 9
    ];
    let r = store.report_results(items, at(2)).await.unwrap();
    assert_eq!(r.len(), 10);
    let accepted = |i: usize, want: TaskState| match &r[i] {
        Ok(ReportAck::Accepted {
            job_id, task_state, ..
        }) => {
            assert_eq!(*job_id, j.id);
            assert_eq!(*task_state, want, "item {i}");
        }
        other => panic!("item {i}: {other:?}"),
    };
    assert!(matches!(r[0], Ok(ReportAck::Duplicate)), "{:?}", r[0]);
    accepted(1, TaskState::Done);
    accepted(2, TaskState::Ready);
    assert!(
        matches!(r[3], Err(StoreError::FailedPrecondition(_))),
        "{:?}",
        r[3]
    );
    assert!(
        matches!(r[4], Err(StoreError::FailedPrecondition(_))),
        "{:?}",
        r[4]
    );
    assert!(
        matches!(r[5], Err(StoreError::NotFound { .. })),
        "{:?}",
        r[5]
    );
    accepted(6, TaskState::Done);
    assert!(matches!(r[7], Ok(ReportAck::Duplicate)), "{:?}", r[7]);
    accepted(8, TaskState::Failed);
    accepted(9, TaskState::Done);

    // Counters: tasks 0 (before), 1, 4, 6 done; 5 failed; 2 ready; 3 still leased.
    let jn = store.get_job(j.id).await.unwrap();
    assert_eq!((jn.tasks_done, jn.tasks_failed), (4, 1));
    assert_eq!(jn.state, JobState::Running);
    assert_eq!(
        store.get_task(ls[2].task.id).await.unwrap().state,
        TaskState::Ready
    );
    let t3 = store.get_task(ls[3].task.id).await.unwrap();
    assert_eq!((t3.state, t3.result), (TaskState::Leased, None));
    let t5 = store.get_task(ls[5].task.id).await.unwrap();
    assert_eq!(t5.failures.len(), 1);
    assert_eq!(t5.failures[0].reason, "boom false");

    // The estimate equals the sequential Welford fold of 0.5 (before), 0.7, 0.9, 0.6, 0.8.
    let xs = [0.5, 0.7, 0.9, 0.6, 0.8];
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let est = store.reward_estimate(&key("k")).await.unwrap().unwrap();
    assert_eq!(est.count, 5);
    assert!((est.mean - mean).abs() < 1e-12, "{} vs {mean}", est.mean);
    let got_var = est.sample_variance().unwrap();
    assert!((got_var - var).abs() < 1e-12, "{got_var} vs {var}");

    // Events: gapless, in batch order.
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        kinds(&events),
        [
            "job_created",
            "task_succeeded",
            "task_succeeded",
            "task_retry",
            "task_succeeded",
            "task_failed",
            "task_succeeded",
        ]
    );

    // A batch that ends the last tasks finishes the job, with its job_finished event last.
    let again = lease(&store, w, at(3)).await;
    assert_eq!(again.task.id, ls[2].task.id);
    let r = store
        .report_results(
            vec![done(&again, vec![0.9]), done(&ls[3], vec![0.9])],
            at(4),
        )
        .await
        .unwrap();
    assert!(
        r.iter()
            .all(|x| matches!(x, Ok(ReportAck::Accepted { .. }))),
        "{r:?}"
    );
    // The item that ended the job (the last one) sees it succeeded.
    assert!(
        matches!(
            r[1],
            Ok(ReportAck::Accepted {
                job_state: JobState::Succeeded,
                ..
            })
        ),
        "{r:?}"
    );
    let jn = store.get_job(j.id).await.unwrap();
    assert_eq!(
        (jn.state, jn.tasks_done, jn.tasks_failed),
        (JobState::Succeeded, 6, 1)
    );
    let events = store.events_after(j.id, 0, 100).await.unwrap();
    assert_eq!(events.last().map(|e| e.kind.as_str()), Some("job_finished"));
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
}

contract!(leases_match_declared_datasets);
async fn leases_match_declared_datasets(db: Arc<TestDb>) {
    // A task whose payload names a dataset goes only to slots that list it, or that list none
    // (unknown); a task without a dataset goes to anyone.
    let store = db.open().await;
    let on = |dataset: Option<&str>| NewTask {
        payload: match dataset {
            Some(d) => json!({ "dataset": d }),
            None => json!({ "arch": "x" }),
        },
        ..task(0)
    };
    let j = store
        .create_job(
            job(0),
            vec![on(Some("mnist")), on(Some("digits")), on(None)],
            t0(),
        )
        .await
        .unwrap();
    let w = worker(&store, "w").await;
    let slot = |datasets: &[&str]| LeaseRequest {
        worker: Some(w),
        capabilities: cpu(),
        datasets: datasets.iter().map(|d| d.to_string()).collect(),
    };
    let all = store.list_tasks(j.id, None, 0, 0).await.unwrap();
    let (mnist, digits, none) = (all[0].id, all[1].id, all[2].id);
    let got = store
        .lease_tasks(
            &[
                slot(&["digits", "cifar10"]),
                slot(&["digits"]),
                slot(&["cifar10"]),
            ],
            at(1),
            LEASE,
        )
        .await
        .unwrap();
    let ids: Vec<Option<TaskId>> = got.iter().map(|l| l.as_ref().map(|l| l.task.id)).collect();
    assert_eq!(
        ids,
        [Some(digits), Some(none), None],
        "mnist is never given to these slots"
    );
    // A slot that lists mnist, or lists nothing, gets it.
    let got = store
        .lease_tasks(&[slot(&["mnist"])], at(2), LEASE)
        .await
        .unwrap();
    assert_eq!(got[0].as_ref().map(|l| l.task.id), Some(mnist));
    let j2 = store
        .create_job(job(0), vec![on(Some("mnist"))], at(3))
        .await
        .unwrap();
    let got = store.lease_tasks(&[slot(&[])], at(4), LEASE).await.unwrap();
    assert_eq!(
        got[0].as_ref().map(|l| l.task.job_id),
        Some(j2.id),
        "an empty list means unknown: no filtering"
    );
}

/// Reserves `n` tasks (leases without a worker) for CPU slots.
async fn reserve(store: &Arc<dyn Store>, n: usize, now: DateTime<Utc>) -> Vec<Lease> {
    let requests: Vec<LeaseRequest> = (0..n)
        .map(|_| LeaseRequest {
            worker: None,
            capabilities: cpu(),
            datasets: vec![],
        })
        .collect();
    store
        .lease_tasks(&requests, now, LEASE)
        .await
        .expect("reserve")
        .into_iter()
        .map(|l| l.expect("a task to reserve"))
        .collect()
}

contract!(reservations_are_leases_without_a_worker);
async fn reservations_are_leases_without_a_worker(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(3), t0()).await.unwrap();
    let (w1, w2) = (worker(&store, "w1").await, worker(&store, "w2").await);
    let r = reserve(&store, 3, at(1)).await;
    for l in &r {
        assert_eq!(l.task.state, TaskState::Leased);
        assert_eq!(l.task.leased_by, None);
        assert_eq!((l.attempt, l.task.attempt), (1, 1));
    }
    // Nothing is left to lease, and nobody holds them yet.
    assert!(store
        .lease_task(w1, &cpu(), at(1), LEASE)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .list_workers()
        .await
        .unwrap()
        .iter()
        .all(|w| w.tasks_in_hand == 0));

    // Handed to w1: recorded once, with the expiry told to w1.
    let give = LeaseAssignment {
        task_id: r[0].task.id,
        token: r[0].token,
        worker: w1,
        expires_at: at(40),
    };
    assert_eq!(store.assign_leases(&[give], at(2)).await.unwrap(), 1);
    assert_eq!(store.assign_leases(&[give], at(2)).await.unwrap(), 0);
    let t = store.get_task(r[0].task.id).await.unwrap();
    assert_eq!((t.leased_by, t.lease_expires_at), (Some(w1), Some(at(40))));
    // A wrong token assigns nothing.
    let wrong = LeaseAssignment {
        task_id: r[1].task.id,
        token: r[1].token + 1,
        worker: w1,
        expires_at: at(40),
    };
    assert_eq!(store.assign_leases(&[wrong], at(2)).await.unwrap(), 0);
    // Once assigned, only w1 may report it.
    assert!(matches!(
        store
            .report_result(r[0].task.id, r[0].token, w2, ok(json!({})), at(3))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store
            .report_result(r[0].task.id, r[0].token, w1, ok(json!({})), at(3))
            .await,
        Ok(ReportAck::Accepted {
            task_state: TaskState::Done,
            ..
        })
    ));

    // Reported before its assignment landed: the token decides and the reporter is recorded;
    // the late assignment then changes nothing.
    assert!(matches!(
        store
            .report_result(r[1].task.id, r[1].token + 1, w2, ok(json!({})), at(4))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store
            .report_result(r[1].task.id, r[1].token, w2, ok(json!({})), at(4))
            .await,
        Ok(ReportAck::Accepted {
            task_state: TaskState::Done,
            ..
        })
    ));
    assert_eq!(
        store.get_task(r[1].task.id).await.unwrap().leased_by,
        Some(w2)
    );
    assert_eq!(
        store
            .report_result(r[1].task.id, r[1].token, w2, ok(json!({})), at(5))
            .await
            .unwrap(),
        ReportAck::Duplicate
    );
    assert!(matches!(
        store
            .report_result(r[1].task.id, r[1].token, w1, ok(json!({})), at(5))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let late = LeaseAssignment {
        task_id: r[1].task.id,
        token: r[1].token,
        worker: w1,
        expires_at: at(40),
    };
    assert_eq!(store.assign_leases(&[late], at(6)).await.unwrap(), 0);
    assert_eq!(
        store.get_task(r[1].task.id).await.unwrap().leased_by,
        Some(w2)
    );

    // The batched report path takes reservations the same way.
    let acks = store
        .report_results(
            vec![ReportItem {
                task: r[2].task.id,
                token: r[2].token,
                worker: w1,
                outcome: ok(json!({})),
            }],
            at(7),
        )
        .await
        .unwrap();
    assert!(matches!(acks[0], Ok(ReportAck::Accepted { .. })));
    let j = store.get_job(j.id).await.unwrap();
    assert_eq!((j.state, j.tasks_done), (JobState::Succeeded, 3));
}

contract!(released_reservations_return_to_the_queue);
async fn released_reservations_return_to_the_queue(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(3), t0()).await.unwrap();
    let w = worker(&store, "w").await;
    let r = reserve(&store, 3, at(1)).await;
    let held = |l: &Lease| HeldLease {
        task_id: l.task.id,
        token: l.token,
    };
    // A wrong token releases nothing; the right one gives the attempt back.
    let wrong = HeldLease {
        token: r[0].token + 1,
        ..held(&r[0])
    };
    assert_eq!(store.release_leases(&[wrong], at(2)).await.unwrap(), 0);
    assert_eq!(
        store.release_leases(&[held(&r[0])], at(2)).await.unwrap(),
        1
    );
    let t = store.get_task(r[0].task.id).await.unwrap();
    assert_eq!(
        (t.state, t.attempt, t.leased_by),
        (TaskState::Ready, 0, None)
    );
    // Leased again: attempt 1 again, a new token; the released token can never report.
    let again = lease(&store, w, at(3)).await;
    assert_eq!(again.task.id, r[0].task.id);
    assert_eq!(again.attempt, 1);
    assert!(again.token > r[0].token);
    assert!(matches!(
        store
            .report_result(r[0].task.id, r[0].token, w, ok(json!({})), at(4))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    // An assigned reservation is not released; the start-up sweep releases the rest.
    let give = LeaseAssignment {
        task_id: r[1].task.id,
        token: r[1].token,
        worker: w,
        expires_at: at(40),
    };
    assert_eq!(store.assign_leases(&[give], at(5)).await.unwrap(), 1);
    assert_eq!(
        store.release_leases(&[held(&r[1])], at(6)).await.unwrap(),
        0
    );
    // Only reservations claimed before the cutoff: r[2] was claimed at 1.
    assert_eq!(
        store.release_unassigned_leases(at(1), at(6)).await.unwrap(),
        0
    );
    assert_eq!(
        store.release_unassigned_leases(at(6), at(6)).await.unwrap(),
        1
    );
    assert_eq!(
        store.get_task(r[2].task.id).await.unwrap().state,
        TaskState::Ready
    );
    assert_eq!(
        store.get_task(r[1].task.id).await.unwrap().state,
        TaskState::Leased
    );
    // Released tasks finish normally, each counted once.
    let last = lease(&store, w, at(7)).await;
    assert_eq!(last.task.id, r[2].task.id);
    for (id, token) in [
        (again.task.id, again.token),
        (r[1].task.id, r[1].token),
        (last.task.id, last.token),
    ] {
        store
            .report_result(id, token, w, ok(json!({})), at(8))
            .await
            .unwrap();
    }
    let j = store.get_job(j.id).await.unwrap();
    assert_eq!(
        (j.state, j.tasks_done, j.tasks_failed),
        (JobState::Succeeded, 3, 0)
    );
}

contract!(reservations_in_heartbeats_cancel_and_expiry);
async fn reservations_in_heartbeats_cancel_and_expiry(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(4), t0()).await.unwrap();
    let (w1, w2) = (worker(&store, "w1").await, worker(&store, "w2").await);
    let r = reserve(&store, 3, at(1)).await;
    // A heartbeat listing a reservation's token takes it: extended, recorded as w1's.
    let hb = store
        .heartbeat(
            w1,
            &[HeldLease {
                task_id: r[0].task.id,
                token: r[0].token,
            }],
            at(2),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(
        (hb.extended.clone(), hb.stop.clone()),
        (vec![r[0].task.id], vec![])
    );
    let t = store.get_task(r[0].task.id).await.unwrap();
    assert_eq!(t.leased_by, Some(w1));
    assert_eq!(
        t.lease_expires_at,
        Some(at(2) + chrono::Duration::seconds(30))
    );
    // Then another worker listing it is told to stop.
    let hb = store
        .heartbeat(
            w2,
            &[HeldLease {
                task_id: r[0].task.id,
                token: r[0].token,
            }],
            at(3),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(hb.stop, vec![r[0].task.id]);

    // An unclaimed reservation expires like any lease and is requeued.
    let exp = store.expire_leases(at(31)).await.unwrap();
    let mut requeued = exp.requeued.clone();
    requeued.sort();
    let mut want = vec![r[1].task.id, r[2].task.id];
    want.sort();
    assert_eq!(requeued, want);
    let t = store.get_task(r[1].task.id).await.unwrap();
    assert_eq!((t.state, t.failures.len()), (TaskState::Ready, 1));
    assert_eq!(t.failures[0].worker, None);

    // Cancelling withdraws reservations with the ready tasks; w1's lease stays until it stops.
    let r2 = reserve(&store, 2, at(40)).await;
    let cancelled = store.cancel_job(j.id, at(41)).await.unwrap();
    assert_eq!(cancelled.tasks_cancelled, 3, "two reserved + one ready");
    for l in &r2 {
        assert_eq!(
            store.get_task(l.task.id).await.unwrap().state,
            TaskState::Cancelled
        );
        assert!(matches!(
            store
                .report_result(l.task.id, l.token, w2, ok(json!({})), at(42))
                .await,
            Err(StoreError::FailedPrecondition(_))
        ));
    }
    assert_eq!(
        store.get_task(r[0].task.id).await.unwrap().state,
        TaskState::Leased
    );
}

contract!(workers_count_tasks_in_hand);
async fn workers_count_tasks_in_hand(db: Arc<TestDb>) {
    let store = db.open().await;
    store.create_job(job(0), tasks(3), t0()).await.unwrap();
    let w1 = worker(&store, "w1").await;
    let w2 = worker(&store, "w2").await;
    let a = lease(&store, w1, at(1)).await;
    lease(&store, w1, at(1)).await;
    lease(&store, w2, at(1)).await;
    let in_hand = |ws: &[Worker], id: WorkerId| {
        ws.iter()
            .find(|w| w.id == id)
            .map(|w| w.tasks_in_hand)
            .expect("listed")
    };
    let ws = store.list_workers().await.unwrap();
    assert_eq!((in_hand(&ws, w1), in_hand(&ws, w2)), (2, 1));
    assert_eq!(store.get_worker(w1).await.unwrap().tasks_in_hand, 2);
    store
        .report_result(a.task.id, a.token, w1, ok(json!({})), at(2))
        .await
        .unwrap();
    assert_eq!(store.get_worker(w1).await.unwrap().tasks_in_hand, 1);
    // Expired and collected leases are no longer in hand.
    store.expire_leases(at(100)).await.unwrap();
    let ws = store.list_workers().await.unwrap();
    assert_eq!((in_hand(&ws, w1), in_hand(&ws, w2)), (0, 0));
}

#[tokio::test]
async fn postgres_pool_size_from_url() {
    common::with_pg(|db| async move {
        let url = format!("{}?max_connections=3", db.url);
        let store = connect(&url).await.expect("connect with max_connections");
        assert_eq!(store.backend(), "postgres");
        let bad = format!("{}?max_connections=lots", db.url);
        assert!(matches!(
            connect(&bad).await,
            Err(StoreError::InvalidArgument { ref field, .. }) if field == "max_connections"
        ));
    })
    .await;
}

// ----- the report paths agree ---------------------------------------------------------------------

fn fail(retryable: bool) -> Outcome {
    Outcome::Failed {
        reason: "boom".into(),
        retryable,
    }
}

/// A report answer without ids: what the paths must agree on.
fn answer(r: &Result<ReportAck>) -> String {
    match r {
        Ok(ReportAck::Accepted {
            task_state,
            job_state,
            ..
        }) => format!("accepted {task_state} {job_state}"),
        Ok(ReportAck::Duplicate) => "duplicate".into(),
        Err(StoreError::FailedPrecondition(_)) => "failed_precondition".into(),
        Err(StoreError::NotFound { .. }) => "not_found".into(),
        Err(e) => format!("other error {e}"),
    }
}

/// What a report path did: answers, task states, events, job counters, estimate count.
type PathSummary = (Vec<String>, Vec<String>, Vec<String>, (u64, u64, u64), u64);

contract!(report_paths_decide_alike);
/// The same reports are decided identically one by one through `report_result`, as one-item
/// batches and as one batch through `report_results`: success, retryable failure (requeued),
/// final failure, stale token, foreign worker, duplicate, unknown task, a task of a cancelled
/// job. Same answers, task states, failures, counters, events and reward estimates.
async fn report_paths_decide_alike(db: Arc<TestDb>) {
    let store = db.open().await;
    let w = worker(&store, "w").await;
    let other = worker(&store, "other").await;
    let mut seen: Vec<PathSummary> = Vec::new();
    for mode in 0..3 {
        let base = 100 * mode;
        let j = store.create_job(job(0), tasks(5), at(base)).await.unwrap();
        let mut ls = Vec::new();
        for _ in 0..5 {
            ls.push(lease(&store, w, at(base + 1)).await);
        }
        let k = store
            .create_job(job(0), tasks(1), at(base + 1))
            .await
            .unwrap();
        let in_k = lease(&store, w, at(base + 2)).await;
        assert_eq!(in_k.task.job_id, k.id);
        store.cancel_job(k.id, at(base + 3)).await.unwrap();
        let rkey = key(&format!("alike-{mode}"));
        let item = |l: &Lease, token: i64, worker: WorkerId, outcome: Outcome| ReportItem {
            task: l.task.id,
            token,
            worker,
            outcome,
        };
        let success = Outcome::Succeeded {
            result: json!({ "acc": 0.5 }),
            rewards: vec![RewardObservation {
                key: rkey.clone(),
                value: 0.5,
            }],
            sample_rewards: vec![],
        };
        let items = vec![
            item(&ls[0], ls[0].token, w, success.clone()),
            item(&ls[1], ls[1].token, w, fail(true)),
            item(&ls[2], ls[2].token, w, fail(false)),
            item(&ls[3], ls[3].token + 1, w, ok(json!({}))),
            item(&ls[4], ls[4].token, other, ok(json!({}))),
            item(&ls[0], ls[0].token, w, success.clone()),
            ReportItem {
                task: TaskId::new(),
                token: 1,
                worker: w,
                outcome: ok(json!({})),
            },
            item(&in_k, in_k.token, w, ok(json!({ "late": true }))),
        ];
        let now = at(base + 4);
        let answers: Vec<Result<ReportAck>> = match mode {
            0 => {
                let mut out = Vec::new();
                for i in items {
                    out.push(
                        store
                            .report_result(i.task, i.token, i.worker, i.outcome, now)
                            .await,
                    );
                }
                out
            }
            1 => {
                let mut out = Vec::new();
                for i in items {
                    let mut r = store.report_results(vec![i], now).await.unwrap();
                    assert_eq!(r.len(), 1);
                    out.push(r.remove(0));
                }
                out
            }
            _ => store.report_results(items, now).await.unwrap(),
        };
        let answers: Vec<String> = answers.iter().map(answer).collect();
        let mut states = Vec::new();
        for l in ls.iter().chain([&in_k]) {
            let t = store.get_task(l.task.id).await.unwrap();
            states.push(format!(
                "{} attempt {} failures {} result {:?}",
                t.state,
                t.attempt,
                t.failures.len(),
                t.result
            ));
        }
        let jn = store.get_job(j.id).await.unwrap();
        let mut events: Vec<String> = kinds(&store.events_after(j.id, 0, 100).await.unwrap())
            .into_iter()
            .map(String::from)
            .collect();
        events.extend(
            kinds(&store.events_after(k.id, 0, 100).await.unwrap())
                .into_iter()
                .map(String::from),
        );
        let estimate = store.reward_estimate(&rkey).await.unwrap().map(|e| e.count);
        seen.push((
            answers,
            states,
            events,
            (jn.tasks_done, jn.tasks_failed, jn.tasks_cancelled),
            estimate.unwrap_or(0),
        ));
        // Nothing of this job is claimable by the next round.
        store.cancel_job(j.id, at(base + 5)).await.unwrap();
    }
    assert_eq!(
        seen[0].0,
        vec![
            "accepted done running",
            "accepted ready running",
            "accepted failed running",
            "failed_precondition",
            "failed_precondition",
            "duplicate",
            "not_found",
            "accepted cancelled cancelled",
        ]
    );
    assert_eq!(seen[0].3, (1, 1, 0));
    assert_eq!(seen[0].4, 1);
    assert_eq!(
        seen[0].1.last().map(String::as_str),
        Some("cancelled attempt 1 failures 0 result None"),
        "the late report's result is discarded"
    );
    assert_eq!(
        seen[1], seen[0],
        "one-item batches differ from report_result"
    );
    assert_eq!(seen[2], seen[0], "one batch differs from report_result");
}

contract!(batch_reports_carry_sample_rewards);
/// `report_results` applies reports with sample rewards (which take the single path) alongside
/// batched ones: the rewards are set once, an unknown sample rejects only its own item.
async fn batch_reports_carry_sample_rewards(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(3), t0()).await.unwrap();
    let w = worker(&store, "w").await;
    let ls = [
        lease(&store, w, at(1)).await,
        lease(&store, w, at(1)).await,
        lease(&store, w, at(1)).await,
    ];
    let sample = |n: i64| NewPolicySample {
        job_id: j.id,
        policy_id: "p".into(),
        policy_version: 1,
        log_prob: -0.5,
        entropy: 0.1,
        input: json!({ "n": n }),
        output: json!({ "n": n + 1 }),
        task_id: None,
    };
    let ids = store
        .insert_samples(vec![sample(1), sample(2)], at(1))
        .await
        .unwrap();
    let with_samples = |rewards: Vec<SampleReward>| Outcome::Succeeded {
        result: json!({}),
        rewards: vec![RewardObservation {
            key: key("sampled"),
            value: 0.25,
        }],
        sample_rewards: rewards,
    };
    let items = vec![
        ReportItem {
            task: ls[0].task.id,
            token: ls[0].token,
            worker: w,
            outcome: with_samples(vec![
                SampleReward {
                    sample_id: ids[0],
                    reward: 0.75,
                },
                SampleReward {
                    sample_id: ids[1],
                    reward: 0.5,
                },
            ]),
        },
        ReportItem {
            task: ls[1].task.id,
            token: ls[1].token,
            worker: w,
            outcome: ok(json!({})),
        },
        ReportItem {
            task: ls[2].task.id,
            token: ls[2].token,
            worker: w,
            outcome: with_samples(vec![SampleReward {
                sample_id: SampleId::from(ids[1].get() + 1000),
                reward: 0.1,
            }]),
        },
    ];
    let r = store.report_results(items, at(2)).await.unwrap();
    assert!(matches!(r[0], Ok(ReportAck::Accepted { .. })), "{r:?}");
    assert!(matches!(r[1], Ok(ReportAck::Accepted { .. })), "{r:?}");
    assert!(
        matches!(r[2], Err(StoreError::NotFound { .. })),
        "an unknown sample rejects its item: {r:?}"
    );
    assert_eq!(store.get_sample(ids[0]).await.unwrap().reward, Some(0.75));
    assert_eq!(store.get_sample(ids[1]).await.unwrap().reward, Some(0.5));
    // The rejected item changed nothing: its task is still leased, its reward not counted.
    let t = store.get_task(ls[2].task.id).await.unwrap();
    assert_eq!(t.state, TaskState::Leased);
    let e = store.reward_estimate(&key("sampled")).await.unwrap();
    assert_eq!(e.map(|e| e.count), Some(1));
    let jn = store.get_job(j.id).await.unwrap();
    assert_eq!((jn.tasks_done, jn.state), (2, JobState::Running));
    // The same report again is a duplicate and sets nothing twice.
    let again = store
        .report_results(
            vec![ReportItem {
                task: ls[0].task.id,
                token: ls[0].token,
                worker: w,
                outcome: with_samples(vec![SampleReward {
                    sample_id: ids[0],
                    reward: 0.0,
                }]),
            }],
            at(3),
        )
        .await
        .unwrap();
    assert!(matches!(again[0], Ok(ReportAck::Duplicate)), "{again:?}");
    assert_eq!(store.get_sample(ids[0]).await.unwrap().reward, Some(0.75));
}

contract!(batched_welford_equals_sequential_updates);
/// Reward estimates folded by a batch of reports equal the sequential Welford updates of the
/// same observations (up to rounding), and a single report updates an estimate exactly as
/// `record_reward` does.
async fn batched_welford_equals_sequential_updates(db: Arc<TestDb>) {
    let store = db.open().await;
    let xs = [0.61, 0.12, 0.93, 0.12, 0.47, 0.88];
    let obs = |k: &str, value: f64| RewardObservation { key: key(k), value };
    // Both keys start from the same estimate.
    for k in ["seq", "batch"] {
        store.record_reward(obs(k, 0.3), at(0)).await.unwrap();
        store.record_reward(obs(k, 0.7), at(0)).await.unwrap();
    }
    for &x in &xs {
        store.record_reward(obs("seq", x), at(1)).await.unwrap();
    }
    let j = store
        .create_job(job(0), tasks(xs.len()), t0())
        .await
        .unwrap();
    let w = worker(&store, "w").await;
    let mut items = Vec::new();
    for &x in &xs {
        let l = lease(&store, w, at(1)).await;
        items.push(ReportItem {
            task: l.task.id,
            token: l.token,
            worker: w,
            outcome: Outcome::Succeeded {
                result: json!({}),
                rewards: vec![obs("batch", x)],
                sample_rewards: vec![],
            },
        });
    }
    let r = store.report_results(items, at(2)).await.unwrap();
    assert!(
        r.iter()
            .all(|a| matches!(a, Ok(ReportAck::Accepted { .. }))),
        "{r:?}"
    );
    assert_eq!(
        store.get_job(j.id).await.unwrap().state,
        JobState::Succeeded
    );
    let seq = store
        .reward_estimate(&key("seq"))
        .await
        .unwrap()
        .expect("seq");
    let bat = store
        .reward_estimate(&key("batch"))
        .await
        .unwrap()
        .expect("batch");
    assert_eq!(seq.count, 8);
    assert_eq!(bat.count, seq.count);
    assert!((bat.mean - seq.mean).abs() < 1e-12, "{bat:?} vs {seq:?}");
    assert!((bat.m2 - seq.m2).abs() < 1e-9, "{bat:?} vs {seq:?}");

    // One report through the single path: bit for bit what record_reward computes.
    let j2 = store.create_job(job(0), tasks(1), at(3)).await.unwrap();
    let l = lease(&store, w, at(3)).await;
    assert_eq!(l.task.job_id, j2.id);
    store
        .report_result(
            l.task.id,
            l.token,
            w,
            Outcome::Succeeded {
                result: json!({}),
                rewards: vec![obs("batch", 0.42)],
                sample_rewards: vec![],
            },
            at(4),
        )
        .await
        .unwrap();
    let by_report = store
        .reward_estimate(&key("batch"))
        .await
        .unwrap()
        .expect("batch");
    let by_record = store.record_reward(obs("seq", 0.42), at(4)).await.unwrap();
    let (a, b) = (&bat, &seq);
    // Each side applied the same sequential update to its own (nearly equal) starting estimate;
    // compare the update itself.
    assert_eq!(by_report.count, a.count + 1);
    assert_eq!(by_record.count, b.count + 1);
    let step = |n: u64, mean: f64, m2: f64, x: f64| {
        let n1 = (n + 1) as f64;
        let mean2 = mean + (x - mean) / n1;
        (mean2, m2 + (x - mean) * (x - mean2))
    };
    assert_eq!(
        step(a.count, a.mean, a.m2, 0.42),
        (by_report.mean, by_report.m2)
    );
    assert_eq!(
        step(b.count, b.mean, b.m2, 0.42),
        (by_record.mean, by_record.m2)
    );
}

// ----- every event the store writes is a nat-schema document --------------------------------------

contract!(store_events_decode_as_schema_documents);
async fn store_events_decode_as_schema_documents(db: Arc<TestDb>) {
    use nat_schema::event::JobEvent;
    let store = db.open().await;
    let w = worker(&store, "w").await;
    // job_created, task_succeeded (single and batched), task_retry, task_failed, task_progress,
    // tasks_added, and job_finished of an all_tasks job, of a cancel and of a driver's finish.
    let mut retrying = task(0);
    retrying.max_attempts = 2;
    let j = store
        .create_job(job(0), vec![task(1), retrying], t0())
        .await
        .unwrap();
    let a = lease(&store, w, at(1)).await;
    store
        .report_progress(
            a.task.id,
            a.token,
            w,
            json!({"fraction": 0.5, "epoch": 1}),
            at(1),
        )
        .await
        .unwrap();
    store
        .report_result(a.task.id, a.token, w, ok(json!({"index": 0})), at(2))
        .await
        .unwrap();
    let b = lease(&store, w, at(2)).await;
    store
        .report_result(b.task.id, b.token, w, fail(true), at(3))
        .await
        .unwrap();
    let b = lease(&store, w, at(3)).await;
    store
        .report_results(
            vec![ReportItem {
                task: b.task.id,
                token: b.token,
                worker: w,
                outcome: fail(true),
            }],
            at(4),
        )
        .await
        .unwrap();
    assert!(store.get_job(j.id).await.unwrap().state.is_final());
    let manual = NewJob {
        completion: Completion::Manual,
        ..job(0)
    };
    let m = store
        .create_job(manual.clone(), vec![], at(5))
        .await
        .unwrap();
    store.add_tasks(m.id, tasks(2), at(5)).await.unwrap();
    let c = lease(&store, w, at(6)).await;
    store
        .report_results(
            vec![ReportItem {
                task: c.task.id,
                token: c.token,
                worker: w,
                outcome: ok(json!({"index": 1})),
            }],
            at(7),
        )
        .await
        .unwrap();
    store
        .finish_job(m.id, JobOutcome::Succeeded { result: json!({}) }, at(8))
        .await
        .unwrap();
    let cancelled = store.create_job(job(0), tasks(1), at(9)).await.unwrap();
    store.cancel_job(cancelled.id, at(9)).await.unwrap();
    let mut seen = HashSet::new();
    for id in [j.id, m.id, cancelled.id] {
        for e in store.events_after(id, 0, 1000).await.unwrap() {
            match JobEvent::decode(&e.kind, &e.payload) {
                Ok(JobEvent::Other(kind)) => {
                    panic!("store event kind {kind} unknown to nat-schema")
                }
                Ok(_) => {
                    seen.insert(e.kind.clone());
                }
                Err(err) => panic!("{} event {}: {err}", db_name(&store), e.payload),
            }
        }
    }
    let mut seen: Vec<_> = seen.into_iter().collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            event_kind::JOB_CREATED,
            event_kind::JOB_FINISHED,
            event_kind::TASK_FAILED,
            event_kind::TASK_PROGRESS,
            event_kind::TASK_RETRY,
            event_kind::TASK_SUCCEEDED,
            event_kind::TASKS_ADDED,
        ]
    );
}

fn db_name(store: &Arc<dyn Store>) -> &'static str {
    store.backend()
}

contract!(leadership_terms_are_taken_renewed_resigned_and_expire);
async fn leadership_terms_are_taken_renewed_resigned_and_expire(db: Arc<TestDb>) {
    use std::time::Duration;
    let store = db.open().await;
    let ttl = Duration::from_secs(30);
    let name = COORDINATOR_LEADERSHIP;
    assert_eq!(store.leadership(name).await.unwrap(), None);
    // The first claim takes term 1; a second coordinator sees it held.
    let a = store.claim_leadership(name, "a", None, ttl).await.unwrap();
    assert!(a.held_by("a"));
    assert_eq!(a.epoch, 1);
    let seen_by_b = store.claim_leadership(name, "b", None, ttl).await.unwrap();
    assert_eq!((seen_by_b.holder.as_str(), seen_by_b.epoch), ("a", 1));
    assert!(!seen_by_b.held_by("b"));
    // Renewal keeps the term; a renewal of a term one does not hold does nothing.
    let renewed = store
        .claim_leadership(name, "a", Some(1), ttl)
        .await
        .unwrap();
    assert!(renewed.held_by("a") && renewed.epoch == 1);
    assert!(renewed.expires_at >= a.expires_at);
    let not_b = store
        .claim_leadership(name, "b", Some(1), ttl)
        .await
        .unwrap();
    assert_eq!((not_b.holder.as_str(), not_b.epoch), ("a", 1));
    // A clean shutdown resigns: the next claim of another coordinator is a new term.
    assert!(!store.resign_leadership(name, "a", 7).await.unwrap());
    assert!(store.resign_leadership(name, "a", 1).await.unwrap());
    assert!(!store.leadership(name).await.unwrap().unwrap().live);
    let b = store.claim_leadership(name, "b", None, ttl).await.unwrap();
    assert!(b.held_by("b"));
    assert_eq!(b.epoch, 2);
    // The deposed holder's renewal fails and does not take the term back.
    let a_again = store
        .claim_leadership(name, "a", Some(1), ttl)
        .await
        .unwrap();
    assert_eq!((a_again.holder.as_str(), a_again.epoch), ("b", 2));
    // A term that is not renewed expires (by the database's clock), then anyone takes it.
    let short = Duration::from_millis(200);
    let b = store
        .claim_leadership(name, "b", Some(2), short)
        .await
        .unwrap();
    assert!(b.held_by("b"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = store.leadership(name).await.unwrap().unwrap();
    assert!(!expired.live);
    // An expired term cannot be renewed, only taken anew.
    let late = store
        .claim_leadership(name, "b", Some(2), ttl)
        .await
        .unwrap();
    assert!(!late.live && late.epoch == 2);
    let a = store.claim_leadership(name, "a", None, ttl).await.unwrap();
    assert!(a.held_by("a"));
    assert_eq!(a.epoch, 3);
    // A restarted process with the same id takes a new term at once.
    let restarted = store.claim_leadership(name, "a", None, ttl).await.unwrap();
    assert!(restarted.held_by("a"));
    assert_eq!(restarted.epoch, 4);
    // Bad input names the field and changes nothing.
    assert!(matches!(
        store.claim_leadership(name, "", None, ttl).await,
        Err(StoreError::InvalidArgument { field, .. }) if field == "holder"
    ));
    assert!(matches!(
        store.claim_leadership(name, "a", None, Duration::ZERO).await,
        Err(StoreError::InvalidArgument { field, .. }) if field == "ttl"
    ));
    assert_eq!(store.leadership(name).await.unwrap().unwrap().epoch, 4);
}

contract!(only_the_newest_checkpoints_keep_their_parameters);
async fn only_the_newest_checkpoints_keep_their_parameters(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    store
        .save_checkpoint(checkpoint(1, 0.0), t0())
        .await
        .unwrap();
    let last = POLICY_CHECKPOINTS_KEPT + 10;
    for v in 2..=last {
        let ids = store
            .insert_samples(
                vec![NewPolicySample {
                    job_id: j.id,
                    policy_id: "pol".into(),
                    policy_version: v - 1,
                    log_prob: -1.0,
                    entropy: 1.0,
                    input: json!({ "v": v }),
                    output: json!({ "v": v }),
                    task_id: None,
                }],
                at(v),
            )
            .await
            .unwrap();
        store.set_sample_reward(ids[0], 0.5).await.unwrap();
        store
            .commit_policy_update(checkpoint(v, 0.1 * v as f64), &ids, &[], at(v))
            .await
            .unwrap();
    }
    for v in 1..=last {
        let cp = store.checkpoint("pol", v).await.unwrap();
        // Every version keeps its row: number, baseline, meta, time.
        assert_eq!(cp.version, v);
        assert_eq!(cp.baseline, 0.1 * v as f64 * f64::from(u8::from(v > 1)));
        assert_eq!(cp.meta, json!({ "profile": "default" }));
        let full = v == 1 || v > last - POLICY_CHECKPOINTS_KEPT;
        if full {
            assert_eq!(cp.params, vec![v as u8; 64], "version {v} is kept in full");
            assert_eq!(cp.optimizer_state, vec![7u8; 16], "version {v}");
        } else {
            assert!(
                cp.params.is_empty() && cp.optimizer_state.is_empty(),
                "version {v} of {last} is emptied"
            );
        }
    }
    assert_eq!(
        store.latest_checkpoint("pol").await.unwrap().params,
        vec![last as u8; 64]
    );
    assert_eq!(store.list_policies().await.unwrap()[0].version, last);
}

contract!(a_deposed_leader_cannot_update_a_policy);
async fn a_deposed_leader_cannot_update_a_policy(db: Arc<TestDb>) {
    use std::time::Duration;
    let store = db.open().await;
    let ttl = Duration::from_secs(30);
    let name = COORDINATOR_LEADERSHIP;
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    store
        .save_checkpoint(checkpoint(1, 0.0), t0())
        .await
        .unwrap();
    let ids = store
        .insert_samples(
            vec![NewPolicySample {
                job_id: j.id,
                policy_id: "pol".into(),
                policy_version: 1,
                log_prob: -1.0,
                entropy: 1.0,
                input: json!({ "g": 0 }),
                output: json!({ "g": 1 }),
                task_id: None,
            }],
            at(1),
        )
        .await
        .unwrap();
    assert!(store.set_sample_reward(ids[0], 0.25).await.unwrap());
    let fenced = |version, epoch| NewCheckpoint {
        leader_epoch: Some(epoch),
        ..checkpoint(version, 0.5)
    };
    // Without any term, a fenced update is refused.
    assert!(matches!(
        store
            .commit_policy_update(fenced(2, 1), &ids, &[], at(2))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let a = store.claim_leadership(name, "a", None, ttl).await.unwrap();
    assert_eq!(a.epoch, 1);
    // "b" takes over (a's term ended); a's update of its old term is refused, nothing changes.
    assert!(store.resign_leadership(name, "a", 1).await.unwrap());
    let b = store.claim_leadership(name, "b", None, ttl).await.unwrap();
    assert_eq!(b.epoch, 2);
    assert!(matches!(
        store
            .commit_policy_update(fenced(2, 1), &ids, &[], at(2))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert_eq!(store.latest_checkpoint("pol").await.unwrap().version, 1);
    assert_eq!(
        store.get_sample(ids[0]).await.unwrap().consumed_in_version,
        None
    );
    // The current term's update goes through and records its term.
    store
        .commit_policy_update(fenced(2, 2), &ids, &[], at(3))
        .await
        .unwrap();
    let latest = store.latest_checkpoint("pol").await.unwrap();
    assert_eq!((latest.version, latest.leader_epoch), (2, Some(2)));
    assert_eq!(store.checkpoint("pol", 1).await.unwrap().leader_epoch, None);
    assert_eq!(
        store.get_sample(ids[0]).await.unwrap().consumed_in_version,
        Some(2)
    );
}

contract!(work_announcements_reach_every_coordinator);
async fn work_announcements_reach_every_coordinator(db: Arc<TestDb>) {
    let a = db.open().await;
    let b = db.open().await;
    let Some(mut heard_by_b) = b.work_announcements().await.unwrap() else {
        // SQLite: one coordinator, nobody else to tell; announcing is harmless.
        assert_eq!(db_name(&a), "sqlite");
        a.announce_work("a").await.unwrap();
        return;
    };
    a.announce_work("coordinator-a").await.unwrap();
    let from = tokio::time::timeout(Duration::from_secs(5), heard_by_b.next())
        .await
        .expect("heard within 5 s")
        .unwrap();
    assert_eq!(from.as_deref(), Some("coordinator-a"));
}

contract!(cancelled_calls_leave_no_transaction_open);
async fn cancelled_calls_leave_no_transaction_open(db: Arc<TestDb>) {
    // Store calls dropped at every point of their transaction (as a cancelled gRPC call or a
    // timeout drops them) commit whole or not at all, and never hand a connection back inside a
    // transaction (sqlx 0.8.6 does so for a `begin()` dropped mid-way, launchbadge/sqlx#2805).
    let store = db.open().await;
    // PostgreSQL: one connection, probed after every call: SAVEPOINT succeeds only inside a
    // transaction, i.e. one that a cancelled call left open.
    let pg = if db_name(&store) == "postgres" {
        Some(PgStore::connect_with_pool_size(&db.url, 1).await.unwrap())
    } else {
        None
    };
    let (mut cancelled, mut leaked) = (0, 0);
    for i in 0..1000u64 {
        let t = Duration::from_micros(10 + (i * 37) % 400);
        let call = async {
            match &pg {
                Some(pg) => pg.create_job(job(0), tasks(2), t0()).await,
                None => store.create_job(job(0), tasks(2), t0()).await,
            }
        };
        if tokio::time::timeout(t, call).await.is_err() {
            cancelled += 1;
        }
        if let Some(pg) = &pg {
            if sqlx::raw_sql("SAVEPOINT probe")
                .execute(pg.pool())
                .await
                .is_ok()
            {
                leaked += 1;
                sqlx::raw_sql("ROLLBACK").execute(pg.pool()).await.unwrap();
            }
        }
    }
    assert!(cancelled > 0, "some calls were cancelled mid-way");
    assert_eq!(leaked, 0, "connections handed back inside a transaction");
    let jobs = store
        .list_jobs(JobFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for j in &jobs {
        assert_eq!(
            j.tasks_total, 2,
            "a job is created with its tasks or not at all"
        );
    }
    let j = store.create_job(job(0), tasks(1), t0()).await.unwrap();
    assert_eq!(store.get_job(j.id).await.unwrap().tasks_total, 1);
}
