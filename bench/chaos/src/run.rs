//! One chaos run: set the fleet up, submit the work, play the attack timeline, wait for the
//! jobs, stop the fleet, check the invariants, print the figures.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nat_proto::v1;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::fleet::{self, Coord, CoordSettings};
use crate::netns::Netns;
use crate::procs::{free_port, Proc};
use crate::report::{Event, Figures, FloodFigures, Percentiles, SideStats};
use crate::sim::{CallKind, SimConfig, SimFleet};
use crate::{Attack, RunArgs};

/// With leader election, the wait for the jobs stops (a violation) after this long without a
/// live leader: nothing would finish them.
const LEADERLESS_LIMIT: Duration = Duration::from_secs(60);

/// What PostgreSQL logs when a coordinator hands out a pooled connection that is still inside
/// a transaction of an earlier caller (its BEGIN was cancelled), and what every later statement
/// on such a connection gets once that transaction failed.
const PG_LEAKED_TRANSACTION: [&str; 2] = [
    "there is already a transaction in progress",
    "current transaction is aborted",
];

/// The run's sizes, resolved from the flags (full or `--quick` defaults).
#[derive(Debug, Clone)]
struct Plan {
    sim_workers: usize,
    real_workers: usize,
    real_note: String,
    tasks: usize,
    hold_ms: u64,
    iterations: u32,
    leader_kills: usize,
    deadline: Duration,
    flood_concurrency: usize,
    flood_seconds: u64,
    /// The coordinators' leader lease (their --leader-lease-seconds).
    leader_lease_seconds: f64,
    coordinator_bin: PathBuf,
    worker_bin: Option<PathBuf>,
    data_dir: PathBuf,
    faketime_lib: Option<PathBuf>,
}

fn default_target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    let cache = std::env::var_os("NAT_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nat-orchestrator"))
        })
        .unwrap_or_else(|| PathBuf::from("."));
    cache.join("target")
}

impl Plan {
    fn resolve(a: &RunArgs) -> anyhow::Result<Plan> {
        let q = a.quick;
        let target = default_target_dir();
        let coordinator_bin = match &a.coordinator_bin {
            Some(p) => p.clone(),
            None => ["release", "debug"]
                .iter()
                .map(|p| target.join(p).join("nat-coordinator"))
                .find(|p| p.is_file())
                .with_context(|| {
                    format!(
                        "--coordinator-bin: no nat-coordinator in {}/{{release,debug}}: build it \
                         (cargo build --release -p nat-coordinator) or name it",
                        target.display()
                    )
                })?,
        };
        if !coordinator_bin.is_file() {
            bail!(
                "--coordinator-bin: {} does not exist",
                coordinator_bin.display()
            );
        }
        let worker_bin = a.worker_bin.clone().or_else(|| {
            coordinator_bin
                .parent()
                .map(|d| d.join("nat-worker"))
                .filter(|p| p.is_file())
        });
        let data_dir = a.data_dir.clone().unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/nat-orchestrator/data"))
                .unwrap_or_else(|| PathBuf::from("data"))
        });
        let wanted_real = a.real_workers.unwrap_or(2);
        let mut real_note = String::new();
        let real_workers = if wanted_real == 0 {
            // scripts/chaos.sh says why it asked for none.
            real_note = match std::env::var("NAT_CHAOS_REAL_WORKERS_NOTE") {
                Ok(why) if !why.trim().is_empty() => format!("--real-workers 0: {}", why.trim()),
                _ => "none asked for (--real-workers 0)".into(),
            };
            0
        } else if worker_bin.as_ref().is_none_or(|p| !p.is_file()) {
            if a.real_workers.is_some() {
                bail!("--real-workers {wanted_real}: no nat-worker binary (build it after scripts/setup-libtorch.sh, or pass --worker-bin)");
            }
            real_note =
                "nat-worker not built (libtorch missing): 0 real workers, simulated ones stand in"
                    .into();
            eprintln!("nat-chaos: {real_note}");
            0
        } else if !data_dir.join("digits").is_dir() {
            if a.real_workers.is_some() {
                bail!(
                    "--real-workers {wanted_real}: no digits dataset in {} (scripts/fetch-data.sh --only digits)",
                    data_dir.display()
                );
            }
            real_note = format!(
                "no digits dataset in {}: 0 real workers",
                data_dir.display()
            );
            eprintln!("nat-chaos: {real_note}");
            0
        } else {
            wanted_real
        };
        let faketime_lib = fleet::libfaketime();
        if faketime_lib.is_none() && !a.skip.contains(&Attack::ClockJump) {
            bail!("libfaketime is missing: install the `faketime` package (scripts/chaos.sh does) or pass --skip clock-jump");
        }
        if a.coordinators == 0 {
            bail!("--coordinators must be at least 1");
        }
        if let Some(s) = a.leader_lease_seconds {
            if !(1.0..=300.0).contains(&s) {
                bail!(
                    "--leader-lease-seconds {s}: must be within 1..=300 (the coordinator's bounds)"
                );
            }
        }
        Ok(Plan {
            sim_workers: a.sim_workers.unwrap_or(if q { 40 } else { 200 }),
            real_workers,
            real_note,
            tasks: a.tasks.unwrap_or(if q { 1536 } else { 10_240 }),
            hold_ms: a.hold_ms.unwrap_or(if q { 2000 } else { 3500 }),
            iterations: a.optimize_iterations.unwrap_or(if q { 16 } else { 40 }),
            leader_kills: a.leader_kills.unwrap_or(if q { 1 } else { 3 }),
            deadline: Duration::from_secs(a.deadline.unwrap_or(if q { 400 } else { 1500 })),
            flood_concurrency: a.flood_concurrency.unwrap_or(2000),
            flood_seconds: a.flood_seconds.unwrap_or(if q { 6 } else { 10 }),
            leader_lease_seconds: a.leader_lease_seconds.unwrap_or(if q { 2.0 } else { 5.0 }),
            coordinator_bin,
            worker_bin,
            data_dir,
            faketime_lib,
        })
    }
}

/// A real worker and what it stands for.
struct RealWorker {
    proc: Proc,
    partitioned: bool,
    clock: bool,
}

/// A `sim-workers` subprocess.
struct SideGroup {
    proc: Proc,
    stats_file: PathBuf,
}

/// Everything a run holds. Field order is drop order: children first, then the namespace,
/// then PostgreSQL.
struct Run {
    coords: Vec<Coord>,
    reals: Vec<RealWorker>,
    side: Vec<SideGroup>,
    sims: SimFleet,
    netns: Option<Netns>,
    pool: PgPool,
    pg: crate::pg::PgServer,
    args: RunArgs,
    plan: Plan,
    dir: PathBuf,
    ha: bool,
    faketime_file: PathBuf,
    figures: Figures,
    t0: Instant,
    killed_sims: Vec<usize>,
    killed_reals: Vec<usize>,
}

pub async fn main(args: RunArgs) -> anyhow::Result<bool> {
    let plan = Plan::resolve(&args)?;
    crate::pg::check_prerequisites(&args.pg_bin)?;
    let tmp = tempfile::Builder::new()
        .prefix("nat-chaos.")
        .tempdir()
        .context("create the run directory")?;
    // PostgreSQL runs as `postgres` under it: let it through.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
        .context("chmod the run directory")?;
    let dir = tmp.path().to_path_buf();
    println!("nat-chaos: run directory {}", dir.display());
    let outcome = {
        let setup = tokio::select! {
            r = Run::setup(args.clone(), plan, &dir) => r,
            () = interrupted() => Err(anyhow::anyhow!("interrupted during setup")),
        };
        match setup {
            Err(e) => Err(e),
            Ok(mut run) => {
                let r = tokio::select! {
                    r = run.execute() => r,
                    () = interrupted() => Err(anyhow::anyhow!("interrupted")),
                };
                run.stop_fleet().await;
                match r {
                    Ok(()) => run.finish().await,
                    Err(e) => {
                        eprintln!("nat-chaos: the run stopped: {e:#}");
                        run.print_logs_hint();
                        Err(e)
                    }
                }
            }
        }
        // `run` dropped here: children killed, namespace deleted, PostgreSQL stopped.
    };
    if args.keep {
        let kept = tmp.keep();
        println!("nat-chaos: kept {}", kept.display());
    }
    outcome
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

impl Run {
    async fn setup(args: RunArgs, plan: Plan, dir: &Path) -> anyhow::Result<Run> {
        let features = fleet::coordinator_features(&plan.coordinator_bin)?;
        let ha = features.leader_election;
        if args.coordinators > 1 && !ha {
            bail!(
                "--coordinators {}: {} has no leader election (--instance-id, --leader-lease-seconds); \
                 run with --coordinators 1",
                args.coordinators,
                plan.coordinator_bin.display()
            );
        }
        let pg_port = free_port()?;
        let pg =
            tokio::task::block_in_place(|| crate::pg::PgServer::start(&args.pg_bin, dir, pg_port))?;
        println!("nat-chaos: private PostgreSQL on 127.0.0.1:{pg_port}");
        let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .context("connect to the private PostgreSQL")?;
        sqlx::query("CREATE DATABASE nat_chaos")
            .execute(&mut admin)
            .await
            .context("create the database")?;
        let _ = admin.close().await;
        let database_url = pg.url("nat_chaos");
        let settings = CoordSettings {
            bin: plan.coordinator_bin.clone(),
            database_url: database_url.clone(),
            lease_seconds: args.lease_seconds,
            heartbeat_seconds: args.heartbeat_seconds,
            max_attempts: args.max_attempts,
            leader_lease_seconds: ha.then_some(plan.leader_lease_seconds),
            max_streams_per_connection: features
                .max_streams
                .then_some(args.max_streams_per_connection),
        };
        let mut coords = Vec::new();
        for i in 0..args.coordinators {
            let mut c = Coord::new(i, &settings, dir)?;
            // The first one runs the migrations; the others start after it.
            c.start(Duration::from_secs(60)).await?;
            println!(
                "nat-chaos: {} ready (gRPC :{}, HTTP :{})",
                c.instance_id, c.grpc_port, c.http_port
            );
            coords.push(c);
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&database_url)
            .await
            .context("connect the harness's pool")?;
        let figures = Figures {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            quick: args.quick,
            leader_election: ha,
            coordinators: args.coordinators,
            leader_lease_seconds: ha.then_some(plan.leader_lease_seconds),
            max_streams_per_connection: features
                .max_streams
                .then_some(args.max_streams_per_connection),
            sim_workers: plan.sim_workers,
            real_workers: plan.real_workers,
            real_workers_note: plan.real_note.clone(),
            ..Figures::default()
        };
        let faketime_file = dir.join("faketime");
        std::fs::write(&faketime_file, "+0\n").context("write the faketime file")?;
        let urls = |host: &str, rotate: usize| {
            let mut v: Vec<String> = coords.iter().map(|c| c.url(host)).collect();
            v.rotate_left(rotate % coords.len());
            v
        };
        let sims = SimFleet::new(SimConfig {
            urls: urls("127.0.0.1", 0),
            hold: Duration::from_millis(plan.hold_ms),
            duplicate_probe_rate: 0.02,
            stale_probe_rate: 0.02,
            report_give_up: Duration::from_secs(120),
        });
        let mut run = Run {
            coords: Vec::new(),
            reals: Vec::new(),
            side: Vec::new(),
            sims,
            netns: None,
            pool,
            pg,
            args,
            plan,
            dir: dir.to_path_buf(),
            ha,
            faketime_file,
            figures,
            t0: Instant::now(),
            killed_sims: Vec::new(),
            killed_reals: Vec::new(),
        };
        let root_urls: Vec<Vec<String>> = (0..8).map(|r| urls("127.0.0.1", r)).collect();
        run.coords = coords;
        if ha {
            run.wait_for_leader(Duration::from_secs(30)).await?;
        }
        if !run.skipped(Attack::Partition) {
            run.netns = Some(Netns::create()?);
        }
        let ns_urls: Option<Vec<String>> = run
            .netns
            .as_ref()
            .map(|ns| run.coords.iter().map(|c| c.url(&ns.root_addr)).collect());
        run.start_workers(&root_urls, ns_urls.as_deref())?;
        Ok(run)
    }

    fn skipped(&self, a: Attack) -> bool {
        self.args.skip.contains(&a)
    }

    fn start_workers(
        &mut self,
        root_urls: &[Vec<String>],
        ns_urls: Option<&[String]>,
    ) -> anyhow::Result<()> {
        self.sims.spawn("sim", self.plan.sim_workers);
        let self_bin = std::env::current_exe().context("find the nat-chaos binary")?;
        let clock = !self.skipped(Attack::ClockJump);
        let side_n = self.args.side_sim_workers;
        if let (Some(ns), Some(urls)) = (&self.netns, ns_urls) {
            if side_n > 0 {
                let stats_file = self.dir.join("part-sim.json");
                let mut spec = fleet::sim_process_spec(
                    &self_bin,
                    "part-sim",
                    &urls.join(","),
                    side_n,
                    self.plan.hold_ms,
                    &stats_file,
                    &self.dir,
                );
                spec.argv = ns.wrap(spec.argv);
                let mut proc = Proc::new(spec);
                proc.start()?;
                self.side.push(SideGroup { proc, stats_file });
                self.figures.side_sim_workers += side_n;
            }
        }
        if clock && side_n > 0 {
            if let Some(lib) = &self.plan.faketime_lib {
                let stats_file = self.dir.join("clock-sim.json");
                let mut spec = fleet::sim_process_spec(
                    &self_bin,
                    "clock-sim",
                    &root_urls[1].join(","),
                    side_n,
                    self.plan.hold_ms,
                    &stats_file,
                    &self.dir,
                );
                fleet::under_faketime(&mut spec, lib, &self.faketime_file);
                let mut proc = Proc::new(spec);
                proc.start()?;
                self.side.push(SideGroup { proc, stats_file });
                self.figures.side_sim_workers += side_n;
            }
        }
        if let Some(bin) = self.plan.worker_bin.clone() {
            for i in 0..self.plan.real_workers {
                // real 0: in the partition (and under the clock when it is the only one);
                // real 1: under the clock; the others plain.
                let partitioned = i == 0 && self.netns.is_some();
                let on_clock = clock && (i == 1 || (i == 0 && self.plan.real_workers == 1));
                let mut name = String::new();
                if partitioned {
                    name.push_str("part-");
                }
                if on_clock {
                    name.push_str("clock-");
                }
                name.push_str(&format!("real-{i}"));
                let urls = match (partitioned, ns_urls) {
                    (true, Some(u)) => u.join(","),
                    _ => root_urls[i % root_urls.len()].join(","),
                };
                let mut spec =
                    fleet::real_worker_spec(&bin, &name, &urls, &self.plan.data_dir, &self.dir);
                if partitioned {
                    if let Some(ns) = &self.netns {
                        spec.argv = ns.wrap(spec.argv);
                    }
                }
                if on_clock {
                    if let Some(lib) = &self.plan.faketime_lib {
                        fleet::under_faketime(&mut spec, lib, &self.faketime_file);
                    }
                }
                let mut proc = Proc::new(spec);
                proc.start()?;
                self.reals.push(RealWorker {
                    proc,
                    partitioned,
                    clock: on_clock,
                });
            }
        }
        Ok(())
    }

    /// Records a timeline entry (and prints it).
    fn event(&mut self, what: impl Into<String>) {
        let e = Event {
            t: self.t0.elapsed().as_secs_f64(),
            wall: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            what: what.into(),
        };
        println!("[{:>7.2} s] {}  {}", e.t, e.wall, e.what);
        self.figures.timeline.push(e);
    }

    async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<fleet::Leader> {
        let t = Instant::now();
        loop {
            if let Ok(Some(l)) = fleet::leader(&self.pool).await {
                if l.live && self.coords.iter().any(|c| c.instance_id == l.holder) {
                    return Ok(l);
                }
            }
            if t.elapsed() > timeout {
                bail!("no live leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The live leader, waiting up to 30 s; none is a violation (recorded, and the attack
    /// `what` is left out).
    async fn leader_or_violation(&mut self, what: &str) -> Option<fleet::Leader> {
        match self.wait_for_leader(Duration::from_secs(30)).await {
            Ok(l) => Some(l),
            Err(e) => {
                self.figures
                    .harness_violations
                    .push(format!("{what}: {e:#} (the attack was left out)"));
                self.event(format!("{what}: {e:#}; left out"));
                None
            }
        }
    }

    /// [`Run::leader_or_violation`] and the leader's index in `coords`.
    async fn leader_to_attack(
        &mut self,
        what: &str,
    ) -> anyhow::Result<Option<(fleet::Leader, usize)>> {
        let Some(l) = self.leader_or_violation(what).await else {
            return Ok(None);
        };
        let idx = self
            .coords
            .iter()
            .position(|c| c.instance_id == l.holder)
            .with_context(|| format!("leader {} is none of ours", l.holder))?;
        Ok(Some((l, idx)))
    }

    /// Submits the optimize job and the evaluate jobs through a coordinator.
    async fn submit(&mut self) -> anyhow::Result<()> {
        let channel = tonic::transport::Endpoint::from_shared(self.coords[0].url("127.0.0.1"))?
            .connect()
            .await
            .context("connect to submit")?;
        let mut jobs = v1::job_service_client::JobServiceClient::new(channel);
        let budget = Some(v1::BudgetSpec {
            preset: "smoke".into(),
            overrides: None,
        });
        let optimize = jobs
            .submit_job(v1::SubmitJobRequest {
                kind: v1::JobKind::Optimize as i32,
                architectures: vec!["darts-v2".into()],
                dataset: "digits".into(),
                budget: budget.clone(),
                seed: 11,
                priority: 5,
                name: "chaos-optimize".into(),
                optimize: Some(v1::OptimizeSpec {
                    space: v1::SearchSpace::Nat as i32,
                    reward: v1::RewardMode::Proxy as i32,
                    iterations: self.plan.iterations,
                    samples_per_iteration: 8,
                    final_seeds: 2,
                    ..Default::default()
                }),
                requirements: None,
                dataset_shape: None,
            })
            .await
            .context("submit the optimize job")?
            .into_inner();
        let id = optimize.job.map(|j| j.job_id).unwrap_or_default();
        self.event(format!(
            "submitted optimize job {id} ({} learning rounds of 8 samples)",
            self.plan.iterations
        ));
        let mut left = self.plan.tasks;
        let mut j = 0u64;
        while left > 0 {
            let n = left.min(1024);
            let architectures = (0..n as u64)
                .map(|i| {
                    nat_arch::sampler::sample_genotype_seeded(
                        nat_arch::OpSet::NatFullyConcat,
                        4,
                        j * 100_000 + i,
                    )
                    .to_json()
                })
                .collect();
            jobs.submit_job(v1::SubmitJobRequest {
                kind: v1::JobKind::Evaluate as i32,
                architectures,
                dataset: "digits".into(),
                budget: budget.clone(),
                seed: j,
                priority: 0,
                name: format!("chaos-evaluate-{j}"),
                optimize: None,
                requirements: None,
                dataset_shape: None,
            })
            .await
            .with_context(|| format!("submit evaluate job {j}"))?;
            left -= n;
            j += 1;
        }
        self.event(format!(
            "submitted {j} evaluate jobs, {} tasks",
            self.plan.tasks
        ));
        Ok(())
    }

    async fn execute(&mut self) -> anyhow::Result<()> {
        self.t0 = Instant::now();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let watch = self.ha.then(|| {
            tokio::spawn(fleet::watch_awareness(
                self.pool.clone(),
                self.coords
                    .iter()
                    .map(|c| (c.instance_id.clone(), c.http_port))
                    .collect(),
                self.t0,
                stop_rx,
            ))
        });
        let r = async {
            self.submit().await?;
            self.timeline().await?;
            self.wait_for_jobs().await
        }
        .await;
        let _ = stop_tx.send(true);
        if let Some(h) = watch {
            if let Ok(a) = h.await {
                let bound = self.plan.leader_lease_seconds;
                if a.longest_unaware_s > bound {
                    self.figures.harness_violations.push(format!(
                        "the leadership row named a live holder that did not know it leads for {:.1} s (over the leader lease, {bound} s): {}",
                        a.longest_unaware_s,
                        a.examples.join("; ")
                    ));
                }
                if a.longest_stale_leader_s > bound {
                    self.figures.harness_violations.push(format!(
                        "a coordinator said it leads without holding the live term for {:.1} s (over the leader lease, {bound} s): {}",
                        a.longest_stale_leader_s,
                        a.examples.join("; ")
                    ));
                }
                self.figures.leader_awareness = Some(a);
            }
        }
        r
    }

    async fn pause(&mut self, seconds: f64) {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        self.progress().await;
    }

    async fn progress(&mut self) {
        let row: Result<(i64, i64, i64, i64), _> = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state IN ('done', 'failed', 'cancelled')), \
             count(*) FILTER (WHERE state = 'leased'), \
             (SELECT coalesce(max(version), 0) FROM policy_checkpoints) FROM tasks",
        )
        .fetch_one(&self.pool)
        .await;
        let leader = if self.ha {
            match fleet::leader(&self.pool).await {
                Ok(Some(l)) => format!(
                    "; leader {} epoch {}{}",
                    l.holder,
                    l.epoch,
                    if l.live { "" } else { " (expired)" }
                ),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        match row {
            Ok((total, done, leased, version)) => println!(
                "[{:>7.2} s] progress: {done}/{total} tasks final, {leased} leased; policy version {version}{leader}",
                self.t0.elapsed().as_secs_f64()
            ),
            Err(e) => println!(
                "[{:>7.2} s] progress: database unavailable ({e})",
                self.t0.elapsed().as_secs_f64()
            ),
        }
    }

    /// The attacks, in order.
    async fn timeline(&mut self) -> anyhow::Result<()> {
        let lease = self.args.lease_seconds;
        self.pause(4.0).await;
        if !self.skipped(Attack::ClockJump) {
            self.clock("+1h")?;
        }
        self.pause(2.0).await;
        if !self.skipped(Attack::WorkerKill) {
            self.kill_workers().await?;
        }
        self.pause(4.0).await;
        let kills = if self.skipped(Attack::LeaderKill) {
            0
        } else {
            self.plan.leader_kills
        };
        if kills > 0 {
            self.kill_leader(1).await?;
        }
        self.pause(3.0).await;
        if !self.skipped(Attack::WorkerKill) {
            self.restart_workers()?;
        }
        self.pause(2.0).await;
        if !self.skipped(Attack::PgRestart) {
            self.restart_pg()?;
        }
        self.pause(4.0).await;
        if self.netns.is_some() {
            self.partition(lease + 3.0).await?;
        }
        self.pause(3.0).await;
        if !self.skipped(Attack::ClockJump) {
            self.clock("-30m")?;
        }
        if !self.skipped(Attack::Sigstop) {
            self.sigstop_leader().await?;
        }
        // A quiet window as long as the flood before it: the "before" latency.
        self.pause((self.plan.flood_seconds as f64).max(3.0)).await;
        if !self.skipped(Attack::Flood) {
            self.flood().await?;
        }
        for k in 2..=kills {
            self.pause(6.0).await;
            self.kill_leader(k).await?;
        }
        self.pause(2.0).await;
        if !self.skipped(Attack::ClockJump) {
            self.clock("+0")?;
        }
        self.event("timeline done");
        Ok(())
    }

    fn clock(&mut self, offset: &str) -> anyhow::Result<()> {
        std::fs::write(&self.faketime_file, format!("{offset}\n"))
            .context("write the faketime file")?;
        self.figures.clock_jumps.push(offset.to_string());
        self.event(format!(
            "clock jump: the clock-jumped workers' wall clock is now {offset}"
        ));
        Ok(())
    }

    /// kill -9 of 20 % of the workers (simulated and real).
    async fn kill_workers(&mut self) -> anyhow::Result<()> {
        let total = self.sims.len() + self.reals.len();
        let n = (total as f64 * 0.2).round().max(1.0) as usize;
        // Real ones: the last real worker (never the partitioned one) when there are two or more.
        let mut real_killed = Vec::new();
        if self.reals.len() >= 2 {
            let i = self.reals.len() - 1;
            self.reals[i].proc.kill9().await?;
            real_killed.push(i);
        }
        let sim_n = n.saturating_sub(real_killed.len()).min(self.sims.len());
        // Every 5th simulated worker: spread over both coordinators.
        let step = (self.sims.len() / sim_n.max(1)).max(1);
        let mut sims = Vec::new();
        for i in (0..self.sims.len()).step_by(step).take(sim_n) {
            if self.sims.kill(i) {
                sims.push(i);
            }
        }
        self.figures.sim_workers_killed += sims.len();
        self.figures.real_workers_killed += real_killed.len();
        self.event(format!(
            "worker kill -9: {} simulated and {} real of {total} workers (20 %)",
            sims.len(),
            real_killed.len()
        ));
        self.killed_sims = sims;
        self.killed_reals = real_killed;
        Ok(())
    }

    /// Restarts the killed real workers and half of the killed simulated ones.
    fn restart_workers(&mut self) -> anyhow::Result<()> {
        let mut n = 0;
        for &i in &self.killed_reals {
            self.reals[i].proc.start()?;
            n += 1;
        }
        let half: Vec<usize> = self.killed_sims.iter().step_by(2).copied().collect();
        for i in half {
            if self.sims.restart(i) {
                n += 1;
            }
        }
        self.figures.workers_restarted += n;
        self.event(format!(
            "restarted {n} killed workers (the real ones and half of the simulated ones)"
        ));
        Ok(())
    }

    async fn optimize_state(&self) -> String {
        let row: Result<Option<(String, i64)>, _> = sqlx::query_as(
            "SELECT j.state, (SELECT coalesce(max(version), 0) FROM policy_checkpoints) FROM jobs j WHERE j.kind = 'optimize' LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await;
        match row {
            Ok(Some((state, version))) => format!("optimize job {state}, policy version {version}"),
            _ => "optimize job state unknown".into(),
        }
    }

    /// kill -9 of the leader; the takeover time; restart.
    async fn kill_leader(&mut self, k: usize) -> anyhow::Result<()> {
        let job = self.optimize_state().await;
        if !self.ha {
            let c = &mut self.coords[0];
            c.proc.kill9().await?;
            let took = c.start(Duration::from_secs(60)).await?.as_secs_f64();
            self.figures.leader_kill_takeover_s.push(took);
            self.event(format!(
                "coordinator kill -9 #{k} (single coordinator, {job}): restarted and ready after {took:.2} s"
            ));
            return Ok(());
        }
        let Some((l, idx)) = self.leader_to_attack(&format!("leader kill #{k}")).await? else {
            return Ok(());
        };
        self.coords[idx].proc.kill9().await?;
        let t = Instant::now();
        self.event(format!(
            "leader kill -9 #{k}: {} (epoch {}; {job})",
            l.holder, l.epoch
        ));
        let took = self.await_takeover(&l, t, Duration::from_secs(60)).await;
        match took {
            Some((s, new)) => {
                self.figures.leader_kill_takeover_s.push(s);
                self.event(format!(
                    "takeover: {} holds epoch {} after {s:.2} s",
                    new.holder, new.epoch
                ));
                self.check_takeover(s, "leader kill");
            }
            None => {
                self.figures
                    .harness_violations
                    .push(format!("leader kill #{k}: no new leader within 60 s"));
                self.event("no takeover within 60 s");
            }
        }
        let ready = self.coords[idx]
            .start(Duration::from_secs(60))
            .await?
            .as_secs_f64();
        let name = self.coords[idx].instance_id.clone();
        self.event(format!("restarted {name} (ready after {ready:.2} s)"));
        Ok(())
    }

    fn check_takeover(&mut self, s: f64, what: &str) {
        if s > self.args.max_takeover_seconds {
            self.figures.harness_violations.push(format!(
                "{what}: takeover took {s:.2} s (over {} s)",
                self.args.max_takeover_seconds
            ));
        }
    }

    /// Polls the leadership row until a live coordinator other than `old` holds a later epoch.
    async fn await_takeover(
        &self,
        old: &fleet::Leader,
        since: Instant,
        timeout: Duration,
    ) -> Option<(f64, fleet::Leader)> {
        while since.elapsed() < timeout {
            if let Ok(Some(l)) = fleet::leader(&self.pool).await {
                if l.epoch > old.epoch && l.live && l.holder != old.holder {
                    // The new holder must know it leads (a term nobody acts on is no takeover).
                    let port = self
                        .coords
                        .iter()
                        .find(|c| c.instance_id == l.holder)
                        .map(|c| c.http_port);
                    if let Some(p) = port {
                        if let Some(fleet::ReadyRole::Leader { epoch }) = fleet::ready_role(p).await
                        {
                            if epoch >= l.epoch {
                                return Some((since.elapsed().as_secs_f64(), l));
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn restart_pg(&mut self) -> anyhow::Result<()> {
        self.event("PostgreSQL fast shutdown + start");
        let down = tokio::task::block_in_place(|| self.pg.restart_fast())?.as_secs_f64();
        self.figures.pg_restarts += 1;
        self.figures.pg_restart_downtime_s.push(down);
        self.event(format!("PostgreSQL back after {down:.2} s"));
        Ok(())
    }

    async fn partition(&mut self, seconds: f64) -> anyhow::Result<()> {
        let Some(ns) = &self.netns else {
            return Ok(());
        };
        ns.cut()?;
        let what = format!(
            "partition: link {} down ({} cut off from the coordinators for {seconds:.1} s, lease {} s)",
            ns.veth_root, ns.inside_addr, self.args.lease_seconds
        );
        self.event(what);
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        if let Some(ns) = &self.netns {
            ns.heal()?;
        }
        self.figures.partitions += 1;
        self.figures.partition_seconds += seconds;
        self.event("partition healed: link up");
        Ok(())
    }

    /// SIGSTOP of the leader for longer than its leader lease, then SIGCONT. Checked: a
    /// follower takes over within the bound while it is stopped, and the resumed one says it
    /// is a follower of the new term (`/readyz`) within a leader lease + 2 s of the SIGCONT.
    async fn sigstop_leader(&mut self) -> anyhow::Result<()> {
        let job = self.optimize_state().await;
        let lease = self.plan.leader_lease_seconds;
        let stop_for = Duration::from_secs_f64(lease + 3.0)
            .max(Duration::from_secs_f64(self.args.lease_seconds + 1.0));
        if !self.ha {
            self.coords[0].proc.sigstop()?;
            self.event(format!(
                "SIGSTOP of the only coordinator for {:.1} s ({job})",
                stop_for.as_secs_f64()
            ));
            tokio::time::sleep(stop_for).await;
            self.coords[0].proc.sigcont()?;
            self.event("SIGCONT");
            return Ok(());
        }
        let Some((l, idx)) = self.leader_to_attack("leader SIGSTOP").await? else {
            return Ok(());
        };
        self.coords[idx].proc.sigstop()?;
        let t = Instant::now();
        self.event(format!(
            "SIGSTOP of the leader {} (epoch {}; {job}) for {:.1} s (leader lease {lease} s)",
            l.holder,
            l.epoch,
            stop_for.as_secs_f64()
        ));
        let took = self.await_takeover(&l, t, stop_for).await;
        tokio::time::sleep(stop_for.saturating_sub(t.elapsed())).await;
        self.coords[idx].proc.sigcont()?;
        let resumed = Instant::now();
        match &took {
            Some((s, new)) => {
                self.figures.sigstop_takeover_s.push(*s);
                self.event(format!(
                    "takeover while stopped: {} holds epoch {} after {s:.2} s; SIGCONT {}",
                    new.holder, new.epoch, l.holder
                ));
                self.check_takeover(*s, "leader SIGSTOP");
            }
            None => {
                self.figures.harness_violations.push(format!(
                    "leader SIGSTOP: no new leader while {} was stopped ({:.1} s)",
                    l.holder,
                    stop_for.as_secs_f64()
                ));
                self.event("no takeover while the leader was stopped; SIGCONT");
            }
        }
        // The resumed one must find out that it was deposed: /readyz says `follower (leader
        // NEW, epoch N)` with N above its old term, within a leader lease + 2 s (its first
        // round after the SIGCONT runs at once; its own term ran out long ago).
        let port = self.coords[idx].http_port;
        let bound = Duration::from_secs_f64(lease + 2.0);
        let mut last = String::from("no answer");
        let mut stale_leader_answers = 0usize;
        let mut stepped_down = None;
        while resumed.elapsed() < bound {
            match fleet::http_get(port, "/readyz").await {
                Ok((status, body)) => {
                    last = format!("{status} {}", body.trim());
                    match fleet::parse_ready_role(&body) {
                        Some(fleet::ReadyRole::Follower { leader, epoch })
                            if epoch > l.epoch && leader != l.holder =>
                        {
                            stepped_down = Some(resumed.elapsed().as_secs_f64());
                            break;
                        }
                        Some(fleet::ReadyRole::Leader { epoch }) if epoch == l.epoch => {
                            stale_leader_answers += 1;
                        }
                        _ => {}
                    }
                }
                Err(e) => last = format!("no answer ({e})"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.figures.sigstop_readyz.push(last.clone());
        match stepped_down {
            Some(s) => {
                self.figures.sigstop_step_down_s.push(s);
                self.event(format!(
                    "{} /readyz {s:.2} s after SIGCONT: {last} ({stale_leader_answers} earlier answers still said leader of epoch {})",
                    l.holder, l.epoch
                ));
            }
            None => {
                self.figures.harness_violations.push(format!(
                    "leader SIGSTOP: {} did not say it is a follower of a later term within {:.1} s of SIGCONT; /readyz: {last}",
                    l.holder,
                    bound.as_secs_f64()
                ));
                self.event(format!(
                    "{} still not a follower {:.1} s after SIGCONT: {last}",
                    l.holder,
                    bound.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// The flood (in its own process, see [`crate::flood`]) against the leader, with the
    /// workers' latency before (a window as long as the flood, just before it) and during it.
    async fn flood(&mut self) -> anyhow::Result<()> {
        let leader = if self.ha {
            fleet::leader(&self.pool).await.ok().flatten()
        } else {
            None
        };
        let idx = leader
            .as_ref()
            .and_then(|l| self.coords.iter().position(|c| c.instance_id == l.holder))
            .unwrap_or(0);
        let target_role = match fleet::http_get(self.coords[idx].http_port, "/readyz").await {
            Ok((_, body)) => body
                .trim()
                .rsplit("; ")
                .next()
                .unwrap_or_default()
                .to_string(),
            Err(e) => format!("/readyz: no answer ({e})"),
        };
        let target = self.coords[idx].url("127.0.0.1");
        let name = self.coords[idx].instance_id.clone();
        let out = self.dir.join("flood.json");
        let self_bin = std::env::current_exe().context("find the nat-chaos binary")?;
        let mut proc = Proc::new(crate::procs::Spec {
            name: "flood".into(),
            argv: vec![
                self_bin.to_string_lossy().into_owned(),
                "flood".into(),
                "--coordinator".into(),
                target.clone(),
                "--concurrency".into(),
                self.plan.flood_concurrency.to_string(),
                "--seconds".into(),
                self.plan.flood_seconds.to_string(),
                "--out".into(),
                out.to_string_lossy().into_owned(),
            ],
            env: vec![],
            log: self.dir.join("flood.log"),
        });
        self.event(format!(
            "flood: a separate process, {} concurrent calls on one connection to {name} ({target_role}; max {} streams per connection) for {} s (+ oversized messages)",
            self.plan.flood_concurrency,
            self.args.max_streams_per_connection,
            self.plan.flood_seconds
        ));
        proc.start()?;
        // It stops its loops after --seconds and waits up to 30 s for the calls in flight.
        // Then a reset burst (bounded by its 20 s timeouts).
        let limit = Duration::from_secs(self.plan.flood_seconds + 120);
        let t = Instant::now();
        while proc.is_running() && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if proc.is_running() {
            proc.terminate(Duration::from_secs(2)).await;
            self.figures.harness_violations.push(format!(
                "flood: the flood process did not finish within {} s (log {})",
                limit.as_secs(),
                proc.spec.log.display()
            ));
            self.event("flood process killed: it did not finish");
            return Ok(());
        }
        let result: crate::flood::FloodResult = match std::fs::read(&out)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(r) => r,
            None => {
                self.figures.harness_violations.push(format!(
                    "flood: the flood process wrote no result; its log ends with:\n{}",
                    proc.log_tail(10)
                ));
                self.event("flood: no result");
                return Ok(());
            }
        };
        // "Before": the quiet pause just before the flood (as long as --flood-seconds);
        // "during": from the first call to the end of the last one in flight.
        let (start, end) = (result.started_at_ms, result.ended_at_ms);
        let span = i64::try_from(self.plan.flood_seconds.max(3) * 1000).unwrap_or(i64::MAX);
        let st = &self.sims.stats;
        let w = |call, from, to, coord| Percentiles::of(&st.window(call, from, to, coord));
        let f = FloodFigures {
            lease_before: w(CallKind::Lease, start - span, start, None),
            lease_during: w(CallKind::Lease, start, end, None),
            report_before: w(CallKind::Report, start - span, start, None),
            report_during: w(CallKind::Report, start, end, None),
            target_lease_before: w(CallKind::Lease, start - span, start, Some(idx)),
            target_lease_during: w(CallKind::Lease, start, end, Some(idx)),
            target_report_before: w(CallKind::Report, start - span, start, Some(idx)),
            target_report_during: w(CallKind::Report, start, end, Some(idx)),
            target: name,
            target_role,
            result,
        };
        if f.result.bogus_reports_accepted > 0 {
            self.figures.harness_violations.push(format!(
                "flood: {} reports for leases the client did not hold were accepted",
                f.result.bogus_reports_accepted
            ));
        }
        if f.result.oversized_accepted > 0 {
            self.figures.harness_violations.push(format!(
                "flood: {} oversized messages were accepted",
                f.result.oversized_accepted
            ));
        }
        self.event(format!(
            "flood done: {} calls in {:.1} s; workers' ReportResult p50/p99 {:.1}/{:.1} ms before, {:.1}/{:.1} ms during",
            f.result.calls,
            f.result.seconds,
            f.report_before.p50,
            f.report_before.p99,
            f.report_during.p50,
            f.report_during.p99
        ));
        self.figures.flood = Some(f);
        Ok(())
    }

    async fn wait_for_jobs(&mut self) -> anyhow::Result<()> {
        let mut last_print = Instant::now();
        let mut leaderless_since: Option<Instant> = None;
        loop {
            if self.ha {
                let live = matches!(fleet::leader(&self.pool).await, Ok(Some(l)) if l.live);
                match (live, leaderless_since) {
                    (true, _) => leaderless_since = None,
                    (false, None) => leaderless_since = Some(Instant::now()),
                    (false, Some(since)) if since.elapsed() > LEADERLESS_LIMIT => {
                        let s = self.t0.elapsed().as_secs_f64();
                        self.figures.time_to_completion_s = s;
                        self.figures.harness_violations.push(format!(
                            "no live leader for {} s (until {s:.0} s): the jobs cannot finish; the wait was stopped",
                            LEADERLESS_LIMIT.as_secs()
                        ));
                        self.event(format!(
                            "no live leader for {} s: stopped waiting for the jobs",
                            LEADERLESS_LIMIT.as_secs()
                        ));
                        return Ok(());
                    }
                    (false, Some(_)) => {}
                }
            }
            let open: Result<i64, _> = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
            )
            .fetch_one(&self.pool)
            .await;
            if let Ok(0) = open {
                let s = self.t0.elapsed().as_secs_f64();
                self.figures.time_to_completion_s = s;
                self.event(format!("every job final after {s:.1} s"));
                return Ok(());
            }
            if self.t0.elapsed() > self.plan.deadline {
                let s = self.t0.elapsed().as_secs_f64();
                self.figures.time_to_completion_s = s;
                self.figures.harness_violations.push(format!(
                    "deadline: {} jobs not final after {:.0} s (--deadline)",
                    open.unwrap_or(-1),
                    self.plan.deadline.as_secs_f64()
                ));
                self.event("deadline passed");
                return Ok(());
            }
            for c in &mut self.coords {
                if !c.proc.is_running() {
                    println!("nat-chaos: {} exited; restarting it", c.instance_id);
                    c.start(Duration::from_secs(60)).await?;
                }
            }
            if last_print.elapsed() > Duration::from_secs(5) {
                self.progress().await;
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops the workers (the jobs are final or the run failed).
    async fn stop_fleet(&mut self) {
        self.sims.stop().await;
        for g in &mut self.side {
            g.proc.terminate(Duration::from_secs(8)).await;
        }
        for r in &mut self.reals {
            r.proc.terminate(Duration::from_secs(5)).await;
        }
    }

    fn print_logs_hint(&self) {
        for c in &self.coords {
            eprintln!(
                "--- {} log tail ({}):\n{}",
                c.instance_id,
                c.proc.spec.log.display(),
                c.proc.log_tail(10)
            );
        }
    }

    /// Figures from the store, the invariants, the table.
    async fn finish(&mut self) -> anyhow::Result<bool> {
        let mut sim = self.sims.stats.counts();
        let mut partition_stale = 0;
        for g in &self.side {
            let side: SideStats = std::fs::read(&g.stats_file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if g.proc.spec.name.starts_with("part-") {
                partition_stale += side.counts.stale_rejected;
            }
            sim.add(&side.counts);
        }
        let real_rejected: usize = self
            .reals
            .iter()
            .map(|r| {
                r.proc
                    .log_text()
                    .matches("result rejected by the coordinator")
                    .count()
            })
            .sum();
        for r in &self.reals {
            if r.partitioned || r.clock {
                println!(
                    "nat-chaos: {} (partitioned {}, clock {}) log: {}",
                    r.proc.spec.name,
                    r.partitioned,
                    r.clock,
                    r.proc.spec.log.display()
                );
            }
        }
        if sim.duplicate_accepted > 0 {
            self.figures.harness_violations.push(format!(
                "{} duplicate reports were answered as new (duplicate = false)",
                sim.duplicate_accepted
            ));
        }
        if sim.stale_probe_accepted > 0 {
            self.figures.harness_violations.push(format!(
                "{} reports with an old lease token were accepted",
                sim.stale_probe_accepted
            ));
        }
        self.figures.sim = sim;
        let pg_log = std::fs::read_to_string(self.pg.log_path()).unwrap_or_default();
        for needle in PG_LEAKED_TRANSACTION {
            let n = pg_log.matches(needle).count();
            self.figures
                .pg_log_leaked_transaction
                .push((needle.to_string(), n));
            if n > 0 {
                self.figures.harness_violations.push(format!(
                    "PostgreSQL logged \"{needle}\" {n} times: a pooled connection was handed out inside another caller's transaction (see {})",
                    self.pg.log_path().display()
                ));
            }
        }
        self.figures.partition_stale_reports_refused = partition_stale;
        self.figures.real_reports_rejected = real_rejected;
        self.store_figures().await?;
        let takeovers = self
            .figures
            .leader_kill_takeover_s
            .iter()
            .chain(&self.figures.sigstop_takeover_s)
            .copied()
            .fold(0.0, f64::max);
        self.figures.takeover_max_s = takeovers;
        println!("\n== invariants (each query counts violations; 0 = holds)");
        let checks = crate::invariants::check_all(&self.pool, self.ha).await?;
        for c in &checks {
            println!(
                "  [{}] {}: {}\n      {}",
                if c.holds() { " ok " } else { "FAIL" },
                c.name,
                c.violations,
                c.sql
            );
            for e in &c.examples {
                println!("      e.g. {e}");
            }
        }
        self.figures.checks = checks;
        self.figures.print();
        let violations = self.figures.violations();
        if let Some(path) = &self.args.json {
            let doc = serde_json::to_vec_pretty(&self.figures)?;
            std::fs::write(path, doc).with_context(|| format!("write {}", path.display()))?;
            println!("\nnat-chaos: figures written to {}", path.display());
        }
        if violations.is_empty() {
            println!("\nnat-chaos: PASS — every invariant holds");
            Ok(true)
        } else {
            println!("\nnat-chaos: FAIL — {} violation(s):", violations.len());
            for v in &violations {
                println!("  - {v}");
            }
            self.print_logs_hint();
            Ok(false)
        }
    }

    async fn store_figures(&mut self) -> anyhow::Result<()> {
        let (jobs, tasks, done, failed, cancelled, rerun): (i64, i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM jobs), count(*), count(*) FILTER (WHERE state = 'done'), \
                 count(*) FILTER (WHERE state = 'failed'), count(*) FILTER (WHERE state = 'cancelled'), \
                 count(*) FILTER (WHERE attempt > 1) FROM tasks",
            )
            .fetch_one(&self.pool)
            .await
            .context("count tasks")?;
        let f = &mut self.figures;
        f.jobs = jobs;
        f.tasks = tasks;
        f.tasks_done = done;
        f.tasks_failed = failed;
        f.tasks_cancelled = cancelled;
        f.tasks_rerun = rerun;
        let (versions, consumed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM policy_checkpoints), \
             (SELECT count(*) FROM policy_samples WHERE consumed_in_version IS NOT NULL AND NOT dropped)",
        )
        .fetch_one(&self.pool)
        .await
        .context("count policy versions")?;
        f.policy_versions = versions;
        f.rewards_consumed = consumed;
        f.partition_tasks_rerun_elsewhere = sqlx::query_scalar(
            "WITH side AS (SELECT id::text AS id FROM workers WHERE name LIKE 'part-%') \
             SELECT count(*) FROM tasks t WHERE t.state = 'done' \
             AND EXISTS (SELECT 1 FROM jsonb_array_elements(t.failures) f WHERE f->>'worker' IN (SELECT id FROM side)) \
             AND coalesce(t.result->>'worker_id', '') NOT IN (SELECT id FROM side)",
        )
        .fetch_one(&self.pool)
        .await
        .context("count the partition's re-run tasks")?;
        f.clock_jumped_worker_tasks_done = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE state = 'done' AND result->>'worker_id' IN \
             (SELECT id::text FROM workers WHERE name LIKE '%clock-%')",
        )
        .fetch_one(&self.pool)
        .await
        .context("count the clock-jumped workers' tasks")?;
        Ok(())
    }
}
