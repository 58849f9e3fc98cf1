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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

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
    let summary = common::policy_summary(store, policy_id).await;
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

/// A TCP forwarder to PostgreSQL that can black-hole its traffic: while cut, nothing is
/// forwarded either way and new connections hang (packets dropped, no reset), as in a network
/// partition; healed, the held bytes flow again.
struct Blackhole {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Blackhole {
    async fn start(upstream: &'static str) -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = watch::channel(false);
        let rx = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    if rx.wait_for(|c| !*c).await.is_err() {
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, rx.clone()));
                    tokio::spawn(pump(sr, cw, rx));
                });
            }
        });
        Blackhole { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Cut meanwhile: the bytes wait for the heal.
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The leader loses the network to the database (black-holed, not refused) in the middle of an
/// optimize job: it steps down on its own and reports not ready, the other coordinator takes over
/// within 10 s, and after the heal the cut-off coordinator's late statements change nothing: the
/// job finishes with every reward consumed once and terms that never decrease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = Blackhole::start("127.0.0.1:5432").await;
    let name = db
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_string();
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port);
    // "cut-a" starts first and leads; "cut-b" reaches the database directly.
    let a = coordinator(&via_proxy, "cut-a", dir.path());
    let store = nat_store::connect(&db.url).await.expect("store");
    let term = live_term(&*store, Duration::from_secs(10)).await;
    assert_eq!(term.holder, "cut-a");
    let b = coordinator(&db.url, "cut-b", dir.path());
    let urls = [&a, &b].map(|p| format!("http://{}", p.grpc));
    let mut jobs = JobServiceClient::new(common::connect(&urls[1]).await);
    let request = common::optimize_request("optimize, partition", ITERATIONS, SAMPLES, 3);
    let job_id = common::submit(&mut jobs, request).await.job_id;
    let workers = SimWorkers::start_on(&urls, 3, Duration::from_millis(100));
    let (policy_id, version) = policy_at(&*store, &job_id, 2).await;
    assert!(version < 1 + i64::from(ITERATIONS), "cut mid-learning");

    proxy.set_cut(true);
    let cut = Instant::now();
    let (new_term, took) = takeover(&*store, "cut-a", term.epoch, cut).await;
    eprintln!("takeover after a partition from the database in {took:?}: {new_term:?}");
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    assert_eq!(new_term.holder, "cut-b");
    // The cut-off coordinator knows: not ready, and no longer the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http_get(&a.http, "/readyz").await;
        if ready.starts_with("HTTP/1.1 503") && ready.contains("follower") {
            break;
        }
        assert!(Instant::now() < deadline, "still ready or leading: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new leader moves the policy while the old one is cut off; then the network heals.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cp = store.latest_checkpoint(&policy_id).await.expect("latest");
        if cp.leader_epoch == Some(new_term.epoch) || cp.version == 1 + i64::from(ITERATIONS) {
            break;
        }
        assert!(Instant::now() < deadline, "the new leader made no update");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_cut(false);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = common::wait_for_end(&mut jobs, &job_id, deadline, "job after the partition").await;
    workers.stop().await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32, "{done:?}");
    let epochs = check_policy(&*store, &policy_id).await;
    eprintln!("terms by version: {epochs:?}");
    let ready = http_get(&a.http, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("follower (leader cut-b"),
        "healed, the old leader serves as a follower: {ready}"
    );
    drop(a);
    drop(b);
    drop(store);
    db.cleanup().await;
}
