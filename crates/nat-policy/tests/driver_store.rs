//! The learning loop through the real store (SQLite file and a fresh PostgreSQL database):
//! convergence with concurrent, out-of-order and stale rewards, and exactly-once consumption of
//! rewards across a crash between a reward's arrival and the policy update.
//!
//! PostgreSQL: `NAT_TEST_PG_URL` or `postgres://postgres@127.0.0.1:5432/postgres`; the tests
//! fail (not skip) when it is unreachable.
#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{darts_v2, small_config};
use nat_arch::{Genotype, Op};
use nat_policy::driver::{PolicyDriver, StepOutcome};
use nat_policy::{ActionSpace, Profile};
use nat_store::{Completion, NewJob, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::Connection;

const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store backend for one test; dropping the PG variant drops its database.
struct TestStore {
    store: Arc<dyn Store>,
    url: String,
    pg_admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nat.db").display());
        let store = nat_store::connect(&url).await.unwrap();
        TestStore {
            store,
            url,
            pg_admin: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> TestStore {
        let admin = std::env::var("NAT_TEST_PG_URL").unwrap_or_else(|_| PG_DEFAULT.to_string());
        let name = format!("nat_policy_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {admin} ({e}); start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` or set NAT_TEST_PG_URL")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let root = admin
            .rsplit_once('/')
            .map(|(r, _)| r.to_string())
            .unwrap_or(admin.clone());
        let url = format!("{root}/{name}");
        let store = nat_store::connect(&url).await.unwrap();
        TestStore {
            store,
            url,
            pg_admin: Some((admin, name)),
            _dir: None,
        }
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        nat_store::connect(&self.url).await.unwrap()
    }

    async fn cleanup(self) {
        let TestStore {
            store, pg_admin, ..
        } = self;
        drop(store);
        if let Some((admin, name)) = pg_admin {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            // Connections of dropped pools may linger for a moment.
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

async fn new_job(store: &Arc<dyn Store>) -> nat_store::JobId {
    let job = NewJob {
        kind: "optimize".into(),
        spec: serde_json::json!({"test": "nat-policy driver"}),
        priority: 0,
        completion: Completion::Manual,
        owner: None,
    };
    store
        .create_job(job, Vec::new(), Utc::now())
        .await
        .unwrap()
        .id
}

fn all_null(input: &Genotype) -> Genotype {
    let mut target = input.clone();
    for cell in [&mut target.normal, &mut target.reduce] {
        for node in cell.nodes.iter_mut() {
            for edge in node.inputs.iter_mut() {
                edge.op = Op::Null;
            }
        }
    }
    target
}

fn reward(alpha: &Genotype, target: &Genotype) -> f64 {
    let pairs = alpha.normal.edges().chain(alpha.reduce.edges());
    let targets = target.normal.edges().chain(target.reduce.edges());
    let hits = pairs.zip(targets).filter(|(a, t)| a.0 == t.0).count();
    hits as f64 / 16.0
}

const MAX_VERSIONS: i64 = 400;

async fn converges(backend: TestStore) {
    let store = Arc::clone(&backend.store);
    let job = new_job(&store).await;
    let mut config = small_config(ActionSpace::NatPlusPlus, Profile::Default);
    config.learn.learning_rate = 3e-3;
    let driver = Arc::new(
        PolicyDriver::open(
            Arc::clone(&store),
            "p-converge",
            config,
            42,
            Some(job),
            Utc::now(),
        )
        .await
        .unwrap(),
    );
    let input = darts_v2();
    let target = all_null(&input);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let (driver, input, target, done) = (
            Arc::clone(&driver),
            input.clone(),
            target.clone(),
            Arc::clone(&done),
        );
        producers.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + p);
            let mut held = Vec::new();
            let mut k = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                let drawn = driver
                    .sample(job, vec![input.clone()], 1, p * 1_000_000 + k, Utc::now())
                    .await
                    .unwrap();
                let version = driver.version().unwrap();
                for (id, sample) in drawn {
                    let r = reward(&sample.alpha, &target);
                    if rng.gen_ratio(1, 8) {
                        held.push((version + rng.gen_range(6..=12), id, r));
                    } else {
                        tokio::time::sleep(Duration::from_micros(rng.gen_range(0..500))).await;
                        assert!(driver.record_reward(id, r).await.unwrap());
                    }
                }
                let (ready, waiting): (Vec<_>, Vec<_>) =
                    held.drain(..).partition(|(at, _, _)| *at <= version);
                held = waiting;
                for (_, id, r) in ready {
                    assert!(driver.record_reward(id, r).await.unwrap());
                }
            }
        }));
    }
    let mut probability = 0.0;
    let mut dropped = 0;
    let mut version = 1;
    while version < MAX_VERSIONS {
        match driver.step(16, Utc::now()).await.unwrap() {
            StepOutcome::Idle => tokio::time::sleep(Duration::from_millis(2)).await,
            StepOutcome::Committed { version: v, stats } => {
                version = v;
                dropped += stats.dropped_stale.len();
            }
            StepOutcome::DroppedOnly {
                version: v,
                dropped: d,
            } => {
                version = v;
                dropped += d;
            }
        }
        probability = driver
            .with_learner(|l| l.log_prob(&input, &target))
            .unwrap()
            .unwrap()
            .exp();
        if probability > 0.9 {
            break;
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    assert!(
        probability > 0.9,
        "{}: P(optimum) = {probability} at version {version}",
        store.backend()
    );
    assert!(dropped > 0, "stale samples must have been dropped");
    // The stored checkpoint is the converged policy: a restart sees the same probability.
    let reopened = PolicyDriver::open(
        backend.reopen().await,
        "p-converge",
        config,
        0,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(reopened.version().unwrap(), version);
    let p2 = reopened
        .with_learner(|l| l.log_prob(&input, &target))
        .unwrap()
        .unwrap()
        .exp();
    assert!((p2 - probability).abs() < 1e-9);
    let summary = store.list_policies().await.unwrap();
    assert!(summary
        .iter()
        .any(|s| s.policy_id == "p-converge" && s.version == version));
    eprintln!(
        "{}: P(optimum) = {probability:.3} at version {version}, {dropped} stale dropped",
        store.backend()
    );
    backend.cleanup().await;
}

async fn crash_between_reward_and_update(backend: TestStore) {
    let store = Arc::clone(&backend.store);
    let job = new_job(&store).await;
    let config = small_config(ActionSpace::NatPlusPlus, Profile::Reference);
    let first = PolicyDriver::open(
        Arc::clone(&store),
        "p-crash",
        config,
        7,
        Some(job),
        Utc::now(),
    )
    .await
    .unwrap();
    let drawn = first
        .sample(job, vec![darts_v2()], 8, 1, Utc::now())
        .await
        .unwrap();
    for (i, (id, _)) in drawn.iter().enumerate() {
        assert!(first.record_reward(*id, 0.1 * i as f64).await.unwrap());
        assert!(
            !first.record_reward(*id, 5.0).await.unwrap(),
            "a second reward is ignored"
        );
    }
    // The coordinator computes the update, then dies before committing it.
    let orphan = first.prepare(100).await.unwrap().unwrap();
    assert_eq!(orphan.consumed().len(), 8);
    drop(first);
    let waiting = store.take_unconsumed_rewards("p-crash", 100).await.unwrap();
    assert_eq!(waiting.len(), 8, "no reward may be lost by the crash");
    assert_eq!(store.latest_checkpoint("p-crash").await.unwrap().version, 1);

    // Restart: a new coordinator opens the same database and learns from the rewards once.
    let restarted = PolicyDriver::open(
        backend.reopen().await,
        "p-crash",
        config,
        0,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(restarted.version().unwrap(), 1);
    match restarted.step(100, Utc::now()).await.unwrap() {
        StepOutcome::Committed { version, stats } => {
            assert_eq!(version, 2);
            assert_eq!(stats.used, 8);
        }
        other => panic!("expected a committed update, got {other:?}"),
    }
    assert_eq!(
        restarted.step(100, Utc::now()).await.unwrap(),
        StepOutcome::Idle
    );
    for (id, _) in &drawn {
        assert_eq!(
            store.get_sample(*id).await.unwrap().consumed_in_version,
            Some(2)
        );
    }
    // The dead coordinator's update, if it were replayed, is refused: applied once only.
    assert!(restarted.commit(orphan, Utc::now()).await.is_err());
    assert_eq!(restarted.version().unwrap(), 2);
    let cp = store.latest_checkpoint("p-crash").await.unwrap();
    assert_eq!(cp.version, 2);
    assert_eq!(cp.meta["rewards_applied"], 8);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_sqlite() {
    converges(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_postgres() {
    converges(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_reward_and_update_sqlite() {
    crash_between_reward_and_update(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_reward_and_update_postgres() {
    crash_between_reward_and_update(TestStore::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_samples_are_dropped_not_stuck() {
    let backend = TestStore::sqlite().await;
    let store = Arc::clone(&backend.store);
    let job = new_job(&store).await;
    let config = small_config(ActionSpace::NatPlusPlus, Profile::Default);
    let driver = PolicyDriver::open(
        Arc::clone(&store),
        "p-bad",
        config,
        1,
        Some(job),
        Utc::now(),
    )
    .await
    .unwrap();
    let input = darts_v2();
    let mut outside = input.clone();
    outside.normal.nodes[3].inputs[0].op = Op::SepConv3x3; // skip -> sep: not a NAT++ move
    let bad = nat_store::NewPolicySample {
        job_id: job,
        policy_id: "p-bad".into(),
        policy_version: 1,
        log_prob: -3.0,
        entropy: 1.0,
        input: serde_json::to_value(&input).unwrap(),
        output: serde_json::to_value(&outside).unwrap(),
        task_id: None,
    };
    let ids = store.insert_samples(vec![bad], Utc::now()).await.unwrap();
    let good = driver
        .sample(job, vec![input], 2, 5, Utc::now())
        .await
        .unwrap();
    for id in ids.iter().chain(good.iter().map(|(id, _)| id)) {
        assert!(driver.record_reward(*id, 0.5).await.unwrap());
    }
    match driver.step(10, Utc::now()).await.unwrap() {
        StepOutcome::Committed { stats, .. } => assert_eq!(stats.used, 2),
        other => panic!("expected an update, got {other:?}"),
    }
    let row = store.get_sample(ids[0]).await.unwrap();
    assert!(row.dropped && row.consumed_in_version == Some(2), "{row:?}");
    assert_eq!(
        driver.step(10, Utc::now()).await.unwrap(),
        StepOutcome::Idle
    );
    backend.cleanup().await;
}
