//! High availability on one PostgreSQL database: two real `nat-coordinator` processes, one
//! leader. `kill -9` of the leader in the middle of an optimize job, and a leader stalled by
//! SIGSTOP past its term: the other coordinator takes over within 10 s, the job finishes, every
//! reward moves the policy exactly once, the versions are contiguous and a deposed leader writes
//! no policy update (the terms of the versions never decrease).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{http_get, sigterm, spawn, wait_exit, Proc, SimWorkers};
use common::{Backend, TestDb};
use nat_proto::v1;
use nat_proto::v1::job_service_client::JobServiceClient;
use nat_store::{Leadership, Store, COORDINATOR_LEADERSHIP};

const ITERATIONS: u32 = 8;
const SAMPLES: u32 = 4;

/// A coordinator named `id` on `database_url` with a 1 s leadership term and short leases.
fn coordinator(database_url: &str, id: &str, cwd: &Path) -> Proc {
    spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--instance-id",
            id,
            "--leader-lease-seconds",
            "1",
            "--lease-seconds",
            "2",
            "--heartbeat-seconds",
            "0.5",
            "--expiry-interval-ms",
            "200",
        ],
        &[],
        cwd,
    )
}

/// The live leadership term, waiting for one until `within` passes.
async fn live_term(store: &dyn Store, within: Duration) -> Leadership {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = store
            .leadership(COORDINATOR_LEADERSHIP)
            .await
            .expect("read leadership")
            .filter(|l| l.live)
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no live leader within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a coordinator other than `old_holder` holds a live term newer than `old_epoch`;
/// returns it and how long it took from `since`.
async fn takeover(
    store: &dyn Store,
    old_holder: &str,
    old_epoch: i64,
    since: Instant,
) -> (Leadership, Duration) {
    loop {
        let l = live_term(store, Duration::from_secs(30)).await;
        if l.epoch > old_epoch && l.holder != old_holder {
            return (l, since.elapsed());
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no takeover: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job's policy id and its latest version, once it has at least `version`.
async fn policy_at(store: &dyn Store, job_id: &str, version: i64) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let policy = store
            .list_policies()
            .await
            .expect("policies")
            .into_iter()
            .find(|p| p.source_job.is_some_and(|j| j.to_string() == job_id));
        if let Some(p) = policy.filter(|p| p.version >= version) {
            return (p.policy_id, p.version);
        }
        assert!(
            Instant::now() < deadline,
            "the policy did not reach version {version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every version 1..=latest stored once, terms never decreasing with the version, every reward
/// consumed exactly once, one update per learning round. Returns the term of every version.
async fn check_policy(store: &dyn Store, policy_id: &str) -> Vec<Option<i64>> {
    let latest = store.latest_checkpoint(policy_id).await.expect("latest");
    assert_eq!(
        latest.version,
        1 + i64::from(ITERATIONS),
        "one version per learning round: {:?}",
        latest.meta
    );
    let mut epochs = Vec::new();
    for v in 1..=latest.version {
        let cp = store
            .checkpoint(policy_id, v)
            .await
            .unwrap_or_else(|e| panic!("version {v} is missing: {e}"));
        epochs.push(cp.leader_epoch);
    }
    let terms: Vec<i64> = epochs
        .iter()
        .map(|e| e.expect("every version written in a term"))
        .collect();
    assert!(
        terms.windows(2).all(|w| w[0] <= w[1]),
        "a deposed leader wrote a policy update: terms by version {terms:?}"
    );
    assert!(store
        .take_unconsumed_rewards(policy_id, 1000)
        .await
        .expect("unconsumed")
        .is_empty());
    let summary = store
        .list_policies()
        .await
        .expect("policies")
        .into_iter()
        .find(|p| p.policy_id == policy_id)
        .expect("listed");
    assert_eq!(summary.rewards_consumed, u64::from(ITERATIONS * SAMPLES));
    let applied = latest.meta["rewards_applied"].as_u64().expect("applied")
        + latest.meta["stale_dropped"].as_u64().expect("dropped");
    assert_eq!(applied, summary.rewards_consumed, "{:?}", latest.meta);
    epochs
}

/// Two coordinators "ha-a" and "ha-b" on a fresh database, the leader first; the job is
/// submitted to the follower (the leader finds it by its scan) and three workers fail over
/// between both.
struct Fleet {
    db: TestDb,
    store: std::sync::Arc<dyn Store>,
    leader: Proc,
    follower: Proc,
    term: Leadership,
    job_id: String,
    workers: SimWorkers,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::new(Backend::Postgres).await;
        let a = coordinator(&db.url, "ha-a", dir.path());
        let b = coordinator(&db.url, "ha-b", dir.path());
        let store = nat_store::connect(&db.url).await.expect("store");
        let term = live_term(&*store, Duration::from_secs(10)).await;
        let (leader, follower) = if term.holder == "ha-a" {
            (a, b)
        } else {
            (b, a)
        };
        let ready = http_get(&follower.http, "/readyz").await;
        assert!(
            ready.contains(&format!(
                "follower (leader {}, epoch {})",
                term.holder, term.epoch
            )),
            "{ready}"
        );
        let ready = http_get(&leader.http, "/readyz").await;
        assert!(
            ready.contains(&format!("leader (epoch {})", term.epoch)),
            "{ready}"
        );
        let urls = [&leader, &follower].map(|p| format!("http://{}", p.grpc));
        let mut jobs = JobServiceClient::new(common::connect(&urls[1]).await);
        let request = common::optimize_request("optimize, HA", ITERATIONS, SAMPLES, 3);
        let job_id = common::submit(&mut jobs, request).await.job_id;
        let workers = SimWorkers::start_on(&urls, 3, Duration::from_millis(100));
        Fleet {
            db,
            store,
            leader,
            follower,
            term,
            job_id,
            workers,
            _dir: dir,
        }
    }

    /// Waits for the job to finish through the follower; it must succeed.
    async fn finish(self) -> (String, std::sync::Arc<dyn Store>, Proc, TestDb) {
        let url = format!("http://{}", self.follower.grpc);
        let mut jobs = JobServiceClient::new(common::connect(&url).await);
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = common::wait_for_end(&mut jobs, &self.job_id, deadline, "HA job").await;
        self.workers.stop().await;
        assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
        let (policy_id, _) = policy_at(&*self.store, &self.job_id, 1).await;
        // The first leader, if it still runs (it was only stalled), goes now.
        let mut first = self.leader;
        let _ = first.child.kill();
        let _ = first.child.wait();
        (policy_id, self.store, self.follower, self.db)
    }
}

fn signal(p: &Proc, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_the_leader_mid_optimize_job() {
    let mut fleet = Fleet::start().await;
    // Mid-learning: a few updates committed by the first leader.
    let (_, version) = policy_at(&*fleet.store, &fleet.job_id, 3).await;
    assert!(version < 1 + i64::from(ITERATIONS), "killed mid-learning");
    fleet.leader.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    let _ = fleet.leader.child.wait();
    let (new_term, took) =
        takeover(&*fleet.store, &fleet.term.holder, fleet.term.epoch, killed).await;
    eprintln!("takeover after kill -9 in {took:?}: {new_term:?}");
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    let old_epoch = fleet.term.epoch;
    let (policy_id, store, mut survivor, db) = fleet.finish().await;
    let epochs = check_policy(&*store, &policy_id).await;
    assert!(
        epochs.contains(&Some(old_epoch)) && epochs.contains(&Some(new_term.epoch)),
        "both leaders updated the policy: {epochs:?}"
    );
    let ready = http_get(&survivor.http, "/readyz").await;
    assert!(
        ready.contains(&format!("leader (epoch {})", new_term.epoch)),
        "{ready}"
    );
    sigterm(&survivor.child);
    let status = wait_exit(&mut survivor.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    // A clean stop resigns the term.
    assert!(
        !store
            .leadership(COORDINATOR_LEADERSHIP)
            .await
            .expect("read")
            .expect("row")
            .live
    );
    drop(store);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_is_deposed_and_writes_no_policy_update() {
    let fleet = Fleet::start().await;
    policy_at(&*fleet.store, &fleet.job_id, 2).await;
    signal(&fleet.leader, "-STOP");
    let stopped = Instant::now();
    let (new_term, took) =
        takeover(&*fleet.store, &fleet.term.holder, fleet.term.epoch, stopped).await;
    eprintln!("takeover of a stalled leader in {took:?}: {new_term:?}");
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    // Let the new leader update the policy, then wake the old one up: it must find itself
    // deposed and stop, without writing an update of its old term in between.
    let (policy_id, v) = policy_at(&*fleet.store, &fleet.job_id, 1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cp = fleet
            .store
            .latest_checkpoint(&policy_id)
            .await
            .expect("latest");
        if cp.leader_epoch == Some(new_term.epoch) || cp.version == 1 + i64::from(ITERATIONS) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader made no update after v{v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&fleet.leader, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http_get(&fleet.leader.http, "/readyz").await;
        if ready.contains(&format!("follower (leader {}", new_term.holder)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken leader did not step down: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = fleet.term.epoch;
    let (policy_id, store, mut survivor, db) = fleet.finish().await;
    let epochs = check_policy(&*store, &policy_id).await;
    eprintln!(
        "terms by version: {epochs:?} (old term {old}, new {})",
        new_term.epoch
    );
    sigterm(&survivor.child);
    let status = wait_exit(&mut survivor.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    drop(store);
    db.cleanup().await;
}

/// A worker long-polling one coordinator gets the task submitted to another at once: the
/// coordinators announce new work to each other through the database (`peers`). Without the
/// announcement the poll would end empty at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_for_work_submitted_to_another_coordinator() {
    let db = TestDb::new(Backend::Postgres).await;
    let config = |id: &str| nat_coordinator::Config {
        instance_id: id.into(),
        ..common::test_config()
    };
    let a = common::TestServer::start(&db, config("peer-a"), false).await;
    let b = common::TestServer::start(&db, config("peer-b"), false).await;
    let (mut w, worker) = common::registered(&b, "polls-b").await;
    // The listener of b is up once an announcement of a reaches it; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let poll = tokio::spawn(async move { common::lease(&mut w, &worker, 4000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    common::submit(
        &mut a.jobs().await,
        common::evaluate_request(&["darts-v2"], "digits"),
    )
    .await;
    let task = poll.await.expect("poll");
    assert!(
        task.is_some(),
        "the poll on b ended empty after {:?}: no announcement reached it",
        started.elapsed()
    );
    eprintln!(
        "task handed out by b {:?} after the submission to a",
        started.elapsed()
    );
    b.stop().await;
    a.stop().await;
    db.cleanup().await;
}
