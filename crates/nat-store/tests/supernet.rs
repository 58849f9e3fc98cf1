//! The durable, versioned supernet (issue #14), on both backends: versions commit one per
//! round with the round's sample rewards, in one transaction; a round committed again changes
//! nothing; a deposed leader cannot commit; `cancel_tasks` cancels single tasks and fences their
//! leases. And the blob stores that hold the weights: the database's (both backends) and a
//! directory / in-memory object store.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use common::TestDb;
use nat_store::blob::{sha256_hex, CHUNK_SIZE};
use nat_store::*;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sqlx::Connection;

const LEASE: Duration = Duration::from_secs(30);

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

fn task(n: usize) -> NewTask {
    NewTask {
        kind: "supernet_shard".into(),
        payload: json!({ "shard": n }),
        requirements: Requirements::default(),
        max_attempts: 3,
    }
}

async fn job(store: &Arc<dyn Store>, tasks: usize, completion: Completion) -> Job {
    store
        .create_job(
            NewJob {
                kind: "optimize".into(),
                spec: json!({ "dataset": "digits", "budget": "smoke" }),
                priority: 0,
                completion,
                owner: None,
            },
            (0..tasks).map(task).collect(),
            at(0),
        )
        .await
        .unwrap()
}

async fn samples(store: &Arc<dyn Store>, job: JobId, n: usize) -> Vec<SampleId> {
    let new = (0..n)
        .map(|i| NewPolicySample {
            job_id: job,
            policy_id: "pol".into(),
            policy_version: 1,
            log_prob: -1.0,
            entropy: 1.0,
            input: json!({ "g": i }),
            output: json!({ "g": i + 100 }),
            task_id: None,
        })
        .collect();
    store.insert_samples(new, at(1)).await.unwrap()
}

/// Version `version` of `job`'s supernet, from round `round`.
fn version(job: JobId, version: i64, round: i64) -> NewSupernetVersion {
    let content = format!("weights {version}");
    NewSupernetVersion {
        job_id: job,
        version,
        round,
        blob_key: format!("supernet/job-{job}/v{version}.safetensors"),
        bytes: content.len() as i64,
        sha256: sha256_hex(content.as_bytes()),
        shards: 2,
        workers: vec!["w-a".into(), "w-b".into()],
        leader_epoch: None,
    }
}

fn committed(c: SupernetCommit) -> SupernetVersion {
    match c {
        SupernetCommit::Committed(v) => v,
        other @ SupernetCommit::AlreadyCommitted(_) => {
            panic!("expected a new version, got {other:?}")
        }
    }
}

async fn reward(store: &Arc<dyn Store>, sample: SampleId) -> Option<f64> {
    store.get_sample(sample).await.unwrap().reward
}

// ------------------------------------------------------------------------------------------------

contract!(versions_commit_one_per_round_with_their_rewards);
async fn versions_commit_one_per_round_with_their_rewards(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = job(&store, 0, Completion::Manual).await.id;
    let s = samples(&store, j, 4).await;
    assert_eq!(store.latest_supernet_version(j).await.unwrap(), None);
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 0);

    // The warm-up version (round -1), then rounds 0 and 1 with their rewards.
    let v1 = committed(
        store
            .commit_supernet_version(version(j, 1, -1), &[], at(2))
            .await
            .unwrap(),
    );
    assert_eq!(
        v1,
        SupernetVersion {
            job_id: j,
            version: 1,
            round: -1,
            blob_key: version(j, 1, -1).blob_key,
            bytes: 9,
            sha256: sha256_hex(b"weights 1"),
            shards: 2,
            workers: vec!["w-a".into(), "w-b".into()],
            leader_epoch: None,
            created_at: at(2),
        }
    );
    // A sample that already has a reward keeps it.
    assert!(store.set_sample_reward(s[1], 0.5).await.unwrap());
    let v2 = committed(
        store
            .commit_supernet_version(version(j, 2, 0), &[(s[0], 0.25), (s[1], -0.75)], at(3))
            .await
            .unwrap(),
    );
    assert_eq!((v2.version, v2.round), (2, 0));
    assert_eq!(reward(&store, s[0]).await, Some(0.25));
    assert_eq!(reward(&store, s[1]).await, Some(0.5));
    let v3 = committed(
        store
            .commit_supernet_version(version(j, 3, 1), &[(s[2], 0.125)], at(4))
            .await
            .unwrap(),
    );
    assert_eq!(
        store.latest_supernet_version(j).await.unwrap(),
        Some(v3.clone())
    );
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 3);
    assert_eq!(store.supernet_version(j, 2).await.unwrap(), v2);
    assert_eq!(store.supernet_round(j, -1).await.unwrap(), Some(v1));
    assert_eq!(store.supernet_round(j, 1).await.unwrap(), Some(v3.clone()));
    assert_eq!(store.supernet_round(j, 7).await.unwrap(), None);
    assert!(matches!(
        store.supernet_version(j, 9).await,
        Err(StoreError::NotFound {
            what: Entity::SupernetVersion,
            ..
        })
    ));

    // The rewards reach the policy update path.
    let pending = store.take_unconsumed_rewards("pol", 0).await.unwrap();
    let got: Vec<(SampleId, Option<f64>)> = pending.iter().map(|p| (p.id, p.reward)).collect();
    assert_eq!(
        got,
        vec![(s[0], Some(0.25)), (s[1], Some(0.5)), (s[2], Some(0.125))]
    );

    // A gap, or a version that is not the next one, is a conflict; nothing changes.
    for (v, round) in [(5, 2), (3, 2), (1, 2)] {
        assert!(
            matches!(
                store
                    .commit_supernet_version(version(j, v, round), &[(s[3], 1.0)], at(5))
                    .await,
                Err(StoreError::Conflict(_))
            ),
            "version {v}"
        );
    }
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 3);
    assert_eq!(reward(&store, s[3]).await, None);

    // Round 0 committed again (a restarted coordinator): the stored version, nothing applied.
    let again = store
        .commit_supernet_version(
            NewSupernetVersion {
                blob_key: "elsewhere".into(),
                ..version(j, 4, 0)
            },
            &[(s[0], 9.0), (s[3], 9.0)],
            at(6),
        )
        .await
        .unwrap();
    assert_eq!(again, SupernetCommit::AlreadyCommitted(v2.clone()));
    assert_eq!(again.version(), &v2);
    assert_eq!(reward(&store, s[0]).await, Some(0.25));
    assert_eq!(reward(&store, s[3]).await, None);
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 3);

    // The sequence goes on; another job's supernet is its own sequence.
    committed(
        store
            .commit_supernet_version(version(j, 4, 2), &[(s[3], 1.0)], at(7))
            .await
            .unwrap(),
    );
    assert_eq!(reward(&store, s[3]).await, Some(1.0));
    let other = job(&store, 0, Completion::Manual).await.id;
    assert_eq!(store.latest_supernet_version(other).await.unwrap(), None);
    committed(
        store
            .commit_supernet_version(version(other, 1, 0), &[], at(8))
            .await
            .unwrap(),
    );
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 4);
    assert_eq!(store.count_supernet_versions(other).await.unwrap(), 1);

    // Durable: a reopened store sees the same versions.
    drop(store);
    let store = db.open().await;
    assert_eq!(
        store
            .latest_supernet_version(j)
            .await
            .unwrap()
            .map(|v| v.version),
        Some(4)
    );
    assert_eq!(store.supernet_version(j, 3).await.unwrap(), v3);
}

contract!(an_unknown_sample_commits_nothing);
async fn an_unknown_sample_commits_nothing(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = job(&store, 0, Completion::Manual).await.id;
    let s = samples(&store, j, 2).await;
    let other = job(&store, 0, Completion::Manual).await.id;
    let foreign = samples(&store, other, 1).await;
    let unknown = SampleId::from(s[1].get() + 1_000_000);
    for bad in [unknown, foreign[0]] {
        match store
            .commit_supernet_version(version(j, 1, 0), &[(s[0], 0.5), (bad, 0.5)], at(2))
            .await
        {
            Err(StoreError::NotFound {
                what: Entity::PolicySample,
                id,
            }) => assert_eq!(id, bad.to_string()),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(store.count_supernet_versions(j).await.unwrap(), 0);
        assert_eq!(store.latest_supernet_version(j).await.unwrap(), None);
        assert_eq!(reward(&store, s[0]).await, None);
        assert_eq!(reward_if_any(&store, bad).await, None);
    }
    // An unknown job is NotFound too.
    assert!(matches!(
        store
            .commit_supernet_version(version(JobId::new(), 1, 0), &[], at(2))
            .await,
        Err(StoreError::NotFound {
            what: Entity::Job,
            ..
        })
    ));
    // The same commit without the bad sample goes through.
    committed(
        store
            .commit_supernet_version(version(j, 1, 0), &[(s[0], 0.5)], at(3))
            .await
            .unwrap(),
    );
    assert_eq!(reward(&store, s[0]).await, Some(0.5));
}

/// The reward of a sample, `None` also when there is no such sample.
async fn reward_if_any(store: &Arc<dyn Store>, sample: SampleId) -> Option<f64> {
    match store.get_sample(sample).await {
        Ok(s) => s.reward,
        Err(StoreError::NotFound { .. }) => None,
        Err(err) => panic!("{err}"),
    }
}

contract!(a_deposed_leader_cannot_commit_a_supernet_version);
async fn a_deposed_leader_cannot_commit_a_supernet_version(db: Arc<TestDb>) {
    let store = db.open().await;
    let ttl = Duration::from_secs(30);
    let name = COORDINATOR_LEADERSHIP;
    let j = job(&store, 0, Completion::Manual).await.id;
    let s = samples(&store, j, 1).await;
    let fenced = |epoch| NewSupernetVersion {
        leader_epoch: Some(epoch),
        ..version(j, 1, 0)
    };
    // Without any term, a fenced commit is refused.
    assert!(matches!(
        store
            .commit_supernet_version(fenced(1), &[(s[0], 0.5)], at(2))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let a = store.claim_leadership(name, "a", None, ttl).await.unwrap();
    assert_eq!(a.epoch, 1);
    assert!(store.resign_leadership(name, "a", 1).await.unwrap());
    let b = store.claim_leadership(name, "b", None, ttl).await.unwrap();
    assert_eq!(b.epoch, 2);
    // a's commit of its old term is refused: no version, no reward.
    match store
        .commit_supernet_version(fenced(1), &[(s[0], 0.5)], at(3))
        .await
    {
        Err(StoreError::FailedPrecondition(msg)) => assert!(msg.contains("term 1"), "{msg}"),
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 0);
    assert_eq!(reward(&store, s[0]).await, None);
    // The current term's commit goes through and records its term.
    let v = committed(
        store
            .commit_supernet_version(fenced(2), &[(s[0], 0.5)], at(4))
            .await
            .unwrap(),
    );
    assert_eq!((v.version, v.leader_epoch), (1, Some(2)));
    assert_eq!(reward(&store, s[0]).await, Some(0.5));
    // The deposed leader re-committing that round is refused too (not told AlreadyCommitted).
    assert!(matches!(
        store.commit_supernet_version(fenced(1), &[], at(5)).await,
        Err(StoreError::FailedPrecondition(_))
    ));
}

type Rewards = Vec<(SampleId, f64)>;

contract!(bad_supernet_input_names_the_field);
async fn bad_supernet_input_names_the_field(db: Arc<TestDb>) {
    let store = db.open().await;
    let j = job(&store, 0, Completion::Manual).await.id;
    let s = samples(&store, j, 1).await;
    let base = || version(j, 1, 0);
    let cases: Vec<(&str, NewSupernetVersion, Rewards)> = vec![
        (
            "version",
            NewSupernetVersion {
                version: 0,
                ..base()
            },
            vec![],
        ),
        (
            "round",
            NewSupernetVersion {
                round: -2,
                ..base()
            },
            vec![],
        ),
        (
            "bytes",
            NewSupernetVersion {
                bytes: -1,
                ..base()
            },
            vec![],
        ),
        (
            "sha256",
            NewSupernetVersion {
                sha256: "abc".into(),
                ..base()
            },
            vec![],
        ),
        (
            "sha256",
            NewSupernetVersion {
                sha256: "A".repeat(64),
                ..base()
            },
            vec![],
        ),
        (
            "blob_key",
            NewSupernetVersion {
                blob_key: String::new(),
                ..base()
            },
            vec![],
        ),
        (
            "blob_key",
            NewSupernetVersion {
                blob_key: "a/../b".into(),
                ..base()
            },
            vec![],
        ),
        (
            "blob_key",
            NewSupernetVersion {
                blob_key: "x".repeat(513),
                ..base()
            },
            vec![],
        ),
        (
            "workers[1]",
            NewSupernetVersion {
                workers: vec!["w".into(), " ".into()],
                ..base()
            },
            vec![],
        ),
        ("rewards[0].reward", base(), vec![(s[0], f64::NAN)]),
        ("rewards", base(), vec![(s[0], 0.5), (s[0], 0.25)]),
    ];
    for (field, v, rewards) in cases {
        match store.commit_supernet_version(v, &rewards, at(2)).await {
            Err(StoreError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(store.count_supernet_versions(j).await.unwrap(), 0);
    assert_eq!(reward(&store, s[0]).await, None);
}

contract!(cancelled_tasks_lose_their_leases);
async fn cancelled_tasks_lose_their_leases(db: Arc<TestDb>) {
    let store = db.open().await;
    let created = job(&store, 5, Completion::AllTasks).await;
    let j = created.id;
    let w = store.register_worker("w", cpu(), at(0)).await.unwrap().id;
    // Task 0 leased and done, task 1 leased, task 2 reserved (no worker yet), 3 and 4 ready.
    let done = store
        .lease_task(w, &cpu(), at(1), LEASE)
        .await
        .unwrap()
        .unwrap();
    store
        .report_result(
            done.task.id,
            done.token,
            w,
            Outcome::Succeeded {
                result: json!({}),
                rewards: vec![],
                sample_rewards: vec![],
            },
            at(2),
        )
        .await
        .unwrap();
    let leased = store
        .lease_task(w, &cpu(), at(3), LEASE)
        .await
        .unwrap()
        .unwrap();
    let reserved = store
        .lease_tasks(
            &[LeaseRequest {
                worker: None,
                capabilities: cpu(),
                datasets: vec![],
            }],
            at(3),
            LEASE,
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let all = store.list_tasks(j, None, 0, 0).await.unwrap();
    let ready: Vec<TaskId> = all
        .iter()
        .filter(|t| t.state == TaskState::Ready)
        .map(|t| t.id)
        .collect();
    assert_eq!(ready.len(), 2);

    // A task of another job: NotFound, nothing changes.
    let other = job(&store, 1, Completion::AllTasks).await;
    let foreign = store.list_tasks(other.id, None, 0, 0).await.unwrap()[0].id;
    assert!(matches!(
        store
            .cancel_tasks(j, &[leased.task.id, foreign], at(4))
            .await,
        Err(StoreError::NotFound {
            what: Entity::Task,
            ..
        })
    ));
    assert_eq!(
        store.get_task(leased.task.id).await.unwrap().state,
        TaskState::Leased
    );
    assert!(matches!(
        store.cancel_tasks(JobId::new(), &[], at(4)).await,
        Err(StoreError::NotFound {
            what: Entity::Job,
            ..
        })
    ));

    // Cancel the leased, the reserved, one ready task, and the done one (left alone); repeats
    // count once.
    let n = store
        .cancel_tasks(
            j,
            &[
                leased.task.id,
                reserved.task.id,
                ready[0],
                done.task.id,
                leased.task.id,
            ],
            at(5),
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    for id in [leased.task.id, reserved.task.id, ready[0]] {
        let t = store.get_task(id).await.unwrap();
        assert_eq!(t.state, TaskState::Cancelled, "{id}");
        assert_eq!(t.lease_expires_at, None);
        assert_eq!(t.finished_at, Some(at(5)));
    }
    assert_eq!(
        store.get_task(done.task.id).await.unwrap().state,
        TaskState::Done
    );
    let after = store.get_job(j).await.unwrap();
    assert_eq!(
        (
            after.state,
            after.tasks_total,
            after.tasks_done,
            after.tasks_cancelled
        ),
        (JobState::Running, 5, 1, 3)
    );

    // The old tokens are stale: report, progress, and a heartbeat says stop.
    let late = Outcome::Succeeded {
        result: json!({ "late": true }),
        rewards: vec![],
        sample_rewards: vec![],
    };
    assert!(matches!(
        store
            .report_result(leased.task.id, leased.token, w, late.clone(), at(6))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store
            .report_result(reserved.task.id, reserved.token, w, late.clone(), at(6))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let batch = store
        .report_results(
            vec![ReportItem {
                task: leased.task.id,
                token: leased.token,
                worker: w,
                outcome: late,
            }],
            at(6),
        )
        .await
        .unwrap();
    assert!(matches!(batch[0], Err(StoreError::FailedPrecondition(_))));
    assert!(matches!(
        store
            .report_progress(leased.task.id, leased.token, w, json!({ "step": 1 }), at(6))
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
    let ack = store
        .heartbeat(
            w,
            &[HeldLease {
                task_id: leased.task.id,
                token: leased.token,
            }],
            at(6),
            LEASE,
        )
        .await
        .unwrap();
    assert!(ack.extended.is_empty());
    assert_eq!(ack.stop, vec![leased.task.id]);
    // Nothing of that was counted; an expiry sweep leaves cancelled tasks alone; a cancelled
    // task is never leased again.
    let report = store.expire_leases(at(600)).await.unwrap();
    assert!(report.requeued.is_empty() && report.failed.is_empty() && report.cancelled.is_empty());
    let again = store
        .cancel_tasks(j, &[leased.task.id, done.task.id], at(7))
        .await
        .unwrap();
    assert_eq!(again, 0);
    let after = store.get_job(j).await.unwrap();
    assert_eq!((after.tasks_done, after.tasks_cancelled), (1, 3));
    store.cancel_job(other.id, at(8)).await.unwrap();
    let left = store
        .lease_task(w, &cpu(), at(8), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.task.id, ready[1]);
    assert!(store
        .lease_task(w, &cpu(), at(8), LEASE)
        .await
        .unwrap()
        .is_none());

    // Cancelling the last open task ends the all_tasks job (one task done: succeeded).
    assert_eq!(store.cancel_tasks(j, &[ready[1]], at(9)).await.unwrap(), 1);
    let end = store.get_job(j).await.unwrap();
    assert_eq!(
        (
            end.state,
            end.tasks_done,
            end.tasks_cancelled,
            end.finished_at
        ),
        (JobState::Succeeded, 1, 4, Some(at(9)))
    );
    let events = store.events_after(j, 0, 0).await.unwrap();
    assert_eq!(
        events.last().map(|e| e.kind.as_str()),
        Some(event_kind::JOB_FINISHED)
    );
    assert!(matches!(
        store
            .report_result(
                left.task.id,
                left.token,
                w,
                Outcome::Failed {
                    reason: "x".into(),
                    retryable: true
                },
                at(10)
            )
            .await,
        Err(StoreError::FailedPrecondition(_))
    ));
}

// ----- blobs ------------------------------------------------------------------------------------

fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    Bytes::from(data)
}

/// The behaviour every [`BlobStore`] shares.
async fn blob_round_trip(blobs: Arc<dyn BlobStore>) {
    // 3.5 MiB: four chunks in the database, the last one half full.
    let big = random_bytes(CHUNK_SIZE * 7 / 2, 1);
    let key = "supernet/job-1/v1.safetensors";
    assert_eq!(blobs.head(key).await.unwrap(), None);
    assert!(matches!(
        blobs.get(key).await,
        Err(StoreError::NotFound { what: Entity::Blob, id }) if id == key
    ));
    let meta = blobs.put(key, big.clone()).await.unwrap();
    let expected = BlobMeta {
        key: key.into(),
        bytes: big.len() as u64,
        sha256: sha256_hex(&big),
    };
    assert_eq!(meta, expected);
    assert_eq!(blobs.get(key).await.unwrap(), big);
    assert_eq!(blobs.head(key).await.unwrap(), Some(expected));

    // Overwrite with a smaller blob: only the new content is read back.
    let small = random_bytes(CHUNK_SIZE + 17, 2);
    let meta = blobs.put(key, small.clone()).await.unwrap();
    assert_eq!(
        (meta.bytes, meta.sha256.as_str()),
        (small.len() as u64, sha256_hex(&small).as_str())
    );
    assert_eq!(blobs.get(key).await.unwrap(), small);
    assert_eq!(blobs.head(key).await.unwrap(), Some(meta));

    // An empty blob is a blob.
    let empty = blobs.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(
        (empty.bytes, empty.sha256.as_str()),
        (0, sha256_hex(b"").as_str())
    );
    assert_eq!(blobs.get("empty").await.unwrap(), Bytes::new());
    assert_eq!(blobs.head("empty").await.unwrap(), Some(empty));

    // Delete: gone; deleting again is fine.
    blobs.delete(key).await.unwrap();
    assert_eq!(blobs.head(key).await.unwrap(), None);
    assert!(matches!(
        blobs.get(key).await,
        Err(StoreError::NotFound { .. })
    ));
    blobs.delete(key).await.unwrap();
    blobs.delete("never/there").await.unwrap();

    // Delete by prefix, as text.
    for k in [
        "job-1/v1",
        "job-1/v2",
        "job-1/sub/v3",
        "job-10/v1",
        "job-2/v1",
    ] {
        blobs
            .put(k, Bytes::from(k.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    assert_eq!(blobs.delete_prefix("job-1/").await.unwrap(), 3);
    assert_eq!(blobs.head("job-1/v1").await.unwrap(), None);
    assert_eq!(blobs.head("job-1/sub/v3").await.unwrap(), None);
    assert_eq!(
        blobs.get("job-10/v1").await.unwrap(),
        Bytes::from_static(b"job-10/v1")
    );
    assert_eq!(blobs.delete_prefix("job-1").await.unwrap(), 1);
    assert_eq!(blobs.delete_prefix("job-1").await.unwrap(), 0);
    assert_eq!(blobs.delete_prefix("nothing/here/").await.unwrap(), 0);
    assert_eq!(
        blobs.get("job-2/v1").await.unwrap(),
        Bytes::from_static(b"job-2/v1")
    );
    assert_eq!(blobs.get("empty").await.unwrap(), Bytes::new());

    // Bad keys name the field and change nothing.
    let long = "k".repeat(513);
    for bad in [
        "",
        "/abs",
        "a/../b",
        "..",
        "a//b",
        "a b",
        "trailing/",
        "./x",
        long.as_str(),
    ] {
        assert!(
            matches!(
                blobs.put(bad, Bytes::from_static(b"x")).await,
                Err(StoreError::InvalidArgument { field, .. }) if field == "key"
            ),
            "put {bad:?}"
        );
        assert!(
            matches!(blobs.get(bad).await, Err(StoreError::InvalidArgument { field, .. }) if field == "key"),
            "get {bad:?}"
        );
        assert!(matches!(
            blobs.head(bad).await,
            Err(StoreError::InvalidArgument { .. })
        ));
        assert!(matches!(
            blobs.delete(bad).await,
            Err(StoreError::InvalidArgument { .. })
        ));
    }
    for bad in ["", "/", "a/../", "x y/"] {
        assert!(
            matches!(
                blobs.delete_prefix(bad).await,
                Err(StoreError::InvalidArgument { field, .. }) if field == "prefix"
            ),
            "prefix {bad:?}"
        );
    }
    assert_eq!(
        blobs.get("job-2/v1").await.unwrap(),
        Bytes::from_static(b"job-2/v1")
    );
}

/// Rows of `blob_chunks` (and of `blobs`) for `key`, read behind the store's back.
async fn stored_chunks(db: &TestDb, key: &str) -> (i64, i64) {
    let q_chunks = "SELECT count(*) FROM blob_chunks WHERE key = $1";
    let q_blobs = "SELECT count(*) FROM blobs WHERE key = $1";
    if db.url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let c: i64 = sqlx::query_scalar(q_chunks)
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let b: i64 = sqlx::query_scalar(q_blobs)
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        (b, c)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let c: i64 = sqlx::query_scalar(&q_chunks.replace("$1", "?1"))
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let b: i64 = sqlx::query_scalar(&q_blobs.replace("$1", "?1"))
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        (b, c)
    }
}

contract!(database_blobs_round_trip);
async fn database_blobs_round_trip(db: Arc<TestDb>) {
    let store = db.open().await;
    let blobs = store.database_blobs();
    assert_eq!(blobs.describe(), "database");
    for setting in [None, Some(""), Some("database")] {
        assert_eq!(
            connect_blobs(store.as_ref(), setting).unwrap().describe(),
            "database"
        );
    }
    blob_round_trip(blobs.clone()).await;

    // Chunks: 3.5 MiB is 4 chunks; overwritten by 1 MiB + 1 byte it is 2, none left over.
    let key = "chunks/check";
    blobs
        .put(key, random_bytes(CHUNK_SIZE * 7 / 2, 3))
        .await
        .unwrap();
    assert_eq!(stored_chunks(&db, key).await, (1, 4));
    let smaller = random_bytes(CHUNK_SIZE + 1, 4);
    blobs.put(key, smaller.clone()).await.unwrap();
    assert_eq!(stored_chunks(&db, key).await, (1, 2));
    // Durable, and readable by another store on the same database.
    drop(blobs);
    drop(store);
    let store = db.open().await;
    let blobs = store.database_blobs();
    assert_eq!(blobs.get(key).await.unwrap(), smaller);
    assert_eq!(blobs.delete_prefix("chunks/").await.unwrap(), 1);
    assert_eq!(stored_chunks(&db, key).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_blobs_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A plain path, in a folder that does not exist yet.
    let path = dir.path().join("blobs").join("nested");
    let url = path.display().to_string();
    let blobs = ObjectBlobs::from_url(&url).unwrap();
    assert_eq!(blobs.describe(), url);
    assert!(path.is_dir());
    blob_round_trip(Arc::new(blobs)).await;

    // Files on disk, and another instance (a `file://` URL of the same folder) sees them; its
    // `head` reads the file to compute the digest.
    let blobs = ObjectBlobs::from_url(&url).unwrap();
    let data = random_bytes(CHUNK_SIZE * 3, 5);
    blobs
        .put("supernet/v7.safetensors", data.clone())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(path.join("supernet").join("v7.safetensors")).unwrap(),
        data.to_vec()
    );
    let file_url = format!("file://{}", path.display());
    let again = ObjectBlobs::from_url(&file_url).unwrap();
    assert_eq!(again.describe(), file_url);
    assert_eq!(again.get("supernet/v7.safetensors").await.unwrap(), data);
    assert_eq!(
        again.head("supernet/v7.safetensors").await.unwrap(),
        Some(BlobMeta {
            key: "supernet/v7.safetensors".into(),
            bytes: data.len() as u64,
            sha256: sha256_hex(&data),
        })
    );

    // connect_blobs: anything but "database" is an object store.
    let store = common_store(&dir).await;
    let chosen = connect_blobs(store.as_ref(), Some(&url)).unwrap();
    assert_eq!(chosen.describe(), url);
    assert_eq!(chosen.get("supernet/v7.safetensors").await.unwrap(), data);
    assert!(matches!(
        connect_blobs(store.as_ref(), Some("nope://x")),
        Err(StoreError::InvalidArgument { field, .. }) if field == "blob_url"
    ));
}

async fn common_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    connect(&format!(
        "sqlite:{}",
        dir.path().join("db").join("nat.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_blobs_in_memory_keep_the_digest_as_metadata() {
    // `memory:///` is an object store that keeps user metadata (as S3, GCS and Azure do).
    let blobs = ObjectBlobs::from_url("memory:///").unwrap();
    assert_eq!(blobs.describe(), "memory:///");
    blob_round_trip(Arc::new(blobs)).await;
    let under_a_prefix = ObjectBlobs::from_url("memory:///nat/blobs").unwrap();
    blob_round_trip(Arc::new(under_a_prefix)).await;
}
