//! Fencing tokens, on both backends: every new lease of a task (a lease, a batched lease, a
//! reservation) gets a token larger than the last by 1 plus a random amount, so tokens
//! increase but cannot be guessed; an older or a guessed token is refused; and near the top of
//! `i64` the random part is dropped so a token never overflows.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::TestDb;
use nat_store::*;
use serde_json::json;
use sqlx::Connection;

const LEASE: Duration = Duration::from_secs(30);
/// The random part of an increment is below 2^40.
const MAX_INCREMENT: i64 = 1 << 40;
/// From this token on the increment is exactly 1 (`logic::fencing::RANDOM_BELOW`).
const RANDOM_BELOW: i64 = 1 << 62;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time")
        + chrono::Duration::seconds(secs)
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

/// A job of one task that may be leased `limits::MAX_ATTEMPTS` times.
async fn one_task(store: &Arc<dyn Store>) -> TaskId {
    let job = store
        .create_job(
            NewJob {
                kind: "evaluate".into(),
                spec: json!({ "dataset": "digits", "budget": "smoke" }),
                priority: 0,
                completion: Completion::AllTasks,
                owner: None,
            },
            vec![NewTask {
                kind: "train_eval".into(),
                payload: json!({ "arch": "a" }),
                requirements: Requirements::default(),
                max_attempts: limits::MAX_ATTEMPTS,
            }],
            at(0),
        )
        .await
        .unwrap();
    let tasks = store.list_tasks(job.id, None, 0, 0).await.unwrap();
    assert_eq!(tasks.len(), 1);
    tasks[0].id
}

fn ok() -> Outcome {
    Outcome::Succeeded {
        result: json!({}),
        rewards: vec![],
        sample_rewards: vec![],
    }
}

fn request(worker: Option<WorkerId>) -> LeaseRequest {
    LeaseRequest {
        worker,
        capabilities: cpu(),
        datasets: vec![],
    }
}

async fn lease_one(store: &Arc<dyn Store>, w: WorkerId, now: DateTime<Utc>) -> Lease {
    store
        .lease_task(w, &cpu(), now, LEASE)
        .await
        .unwrap()
        .expect("the task is claimable")
}

async fn lease_batched(
    store: &Arc<dyn Store>,
    worker: Option<WorkerId>,
    now: DateTime<Utc>,
) -> Lease {
    let mut got = store
        .lease_tasks(&[request(worker)], now, LEASE)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    got.remove(0).expect("the task is claimable")
}

contract!(tokens_increase_by_random_amounts_and_old_ones_are_refused);
async fn tokens_increase_by_random_amounts_and_old_ones_are_refused(db: Arc<TestDb>) {
    let store = db.open().await;
    let task = one_task(&store).await;
    let workers = [
        store.register_worker("w1", cpu(), at(0)).await.unwrap().id,
        store.register_worker("w2", cpu(), at(0)).await.unwrap().id,
    ];
    // Every claim path, in turn: a lease, a batched lease, a reservation given back unused.
    // A lease is left to expire, and the next claim takes the expired lease over.
    let mut tokens = Vec::new();
    let mut now = 0;
    for i in 0..15 {
        let w = workers[i % 2];
        match i % 3 {
            0 => {
                let l = lease_one(&store, w, at(now)).await;
                tokens.push(l.token);
                now += LEASE.as_secs() as i64 + 1;
            }
            1 => {
                let l = lease_batched(&store, Some(w), at(now)).await;
                tokens.push(l.token);
                now += LEASE.as_secs() as i64 + 1;
            }
            _ => {
                let l = lease_batched(&store, None, at(now)).await;
                tokens.push(l.token);
                let held = HeldLease {
                    task_id: task,
                    token: l.token,
                };
                assert_eq!(store.release_leases(&[held], at(now)).await.unwrap(), 1);
                now += 1;
            }
        }
    }

    assert!(tokens[0] > 0, "tokens are positive: {tokens:?}");
    let steps: Vec<i64> = tokens.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        steps.iter().all(|&d| (1..=MAX_INCREMENT).contains(&d)),
        "each token is larger than the last by 1..=2^40: {tokens:?}"
    );
    assert!(
        steps.iter().any(|&d| d != 1),
        "tokens are not consecutive: {tokens:?}"
    );
    // 14 draws of 40 random bits: all under 2^20 has probability 2^-280.
    assert!(
        steps.iter().any(|&d| d > 1 << 20),
        "the increments are random: {tokens:?}"
    );

    // The last lease expired: take it over once more; that is the current lease.
    let w = workers[0];
    let current = lease_one(&store, w, at(now)).await;
    let stored = store.get_task(task).await.unwrap();
    assert_eq!(stored.lease_token, current.token);
    assert!(current.token > *tokens.last().unwrap());
    tokens.push(current.token);
    let before = store.get_task(task).await.unwrap();

    // Every earlier token, and the neighbours of the current one, are refused and change
    // nothing, for reports, progress and heartbeats.
    let mut refused: Vec<i64> = tokens[..tokens.len() - 1].to_vec();
    refused.extend([current.token - 1, current.token + 1]);
    for &token in &refused {
        let err = store
            .report_result(task, token, w, ok(), at(now + 1))
            .await
            .expect_err("stale or guessed token");
        assert!(
            matches!(err, StoreError::FailedPrecondition(_)),
            "token {token}: {err:?}"
        );
        let err = store
            .report_progress(task, token, w, json!({ "epoch": 1 }), at(now + 1))
            .await
            .expect_err("stale or guessed token");
        assert!(
            matches!(err, StoreError::FailedPrecondition(_)),
            "token {token}: {err:?}"
        );
        let ack = store
            .heartbeat(
                w,
                &[HeldLease {
                    task_id: task,
                    token,
                }],
                at(now + 1),
                LEASE,
            )
            .await
            .unwrap();
        assert!(ack.extended.is_empty(), "token {token} extended a lease");
    }
    assert_eq!(store.get_task(task).await.unwrap(), before);

    // The current token is accepted.
    let ack = store
        .report_result(task, current.token, w, ok(), at(now + 2))
        .await
        .unwrap();
    assert!(
        matches!(
            ack,
            ReportAck::Accepted {
                task_state: TaskState::Done,
                ..
            }
        ),
        "{ack:?}"
    );
}

/// Sets a task's token behind the store's back.
async fn set_token(db: &TestDb, task: TaskId, token: i64) {
    if db.url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE tasks SET lease_token = $1 WHERE id = $2")
            .bind(token)
            .bind(task)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE tasks SET lease_token = ?1 WHERE id = ?2")
            .bind(token)
            .bind(task.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

contract!(tokens_near_the_top_grow_by_one_and_never_overflow);
async fn tokens_near_the_top_grow_by_one_and_never_overflow(db: Arc<TestDb>) {
    let store = db.open().await;
    let task = one_task(&store).await;
    let w = store.register_worker("w", cpu(), at(0)).await.unwrap().id;

    // Just under the bound: the increment still has its random part.
    set_token(&db, task, RANDOM_BELOW - 1).await;
    let l = lease_one(&store, w, at(0)).await;
    assert!(
        (RANDOM_BELOW..RANDOM_BELOW + MAX_INCREMENT).contains(&l.token),
        "{}",
        l.token
    );
    // From the bound on, exactly 1 per lease, on every claim path.
    set_token(&db, task, RANDOM_BELOW).await;
    let mut now = 31;
    let l = lease_one(&store, w, at(now)).await;
    assert_eq!(l.token, RANDOM_BELOW + 1);
    now += 31;
    let l = lease_batched(&store, Some(w), at(now)).await;
    assert_eq!(l.token, RANDOM_BELOW + 2);
    // Up to the largest i64, which a task reaches only after about 2^62 more leases.
    set_token(&db, task, i64::MAX - 2).await;
    now += 31;
    let l = lease_batched(&store, None, at(now)).await;
    assert_eq!(l.token, i64::MAX - 1);
    let held = HeldLease {
        task_id: task,
        token: l.token,
    };
    assert_eq!(store.release_leases(&[held], at(now)).await.unwrap(), 1);
    let l = lease_one(&store, w, at(now + 1)).await;
    assert_eq!(l.token, i64::MAX);
    let ack = store
        .report_result(task, i64::MAX, w, ok(), at(now + 2))
        .await
        .unwrap();
    assert!(matches!(ack, ReportAck::Accepted { .. }), "{ack:?}");
}

contract!(each_claimed_row_draws_its_own_random_part);
async fn each_claimed_row_draws_its_own_random_part(db: Arc<TestDb>) {
    let store = db.open().await;
    let n = 20;
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask {
            kind: "train_eval".into(),
            payload: json!({ "arch": format!("arch-{i}") }),
            requirements: Requirements::default(),
            max_attempts: 3,
        })
        .collect();
    let job = NewJob {
        kind: "evaluate".into(),
        spec: json!({ "dataset": "digits", "budget": "smoke" }),
        priority: 0,
        completion: Completion::AllTasks,
        owner: None,
    };
    store.create_job(job, tasks, at(0)).await.unwrap();
    // One batched claim of all the tasks (one statement on PostgreSQL): first leases, whose
    // tokens are 1 + a random part each, so they all differ (a collision among 20 draws of
    // 40 bits has probability below 2^-31).
    let requests: Vec<LeaseRequest> = (0..n).map(|_| request(None)).collect();
    let leases = store.lease_tasks(&requests, at(0), LEASE).await.unwrap();
    let mut tokens: Vec<i64> = leases.iter().map(|l| l.as_ref().unwrap().token).collect();
    assert!(tokens.iter().all(|&t| (1..=MAX_INCREMENT).contains(&t)));
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), n, "tokens drawn once per statement");
}
