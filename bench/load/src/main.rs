//! `nat-load`: drives a coordinator with simulated workers and reports completed lease+report
//! round trips per second and LeaseTask / ReportResult latency percentiles.
//!
//! Each simulated worker registers, then loops: LeaseTask (long-poll), hold the task for
//! `--hold-ms`, ReportResult. Workers share `--connections` HTTP/2 connections (as a fleet behind
//! a few proxies would; one TCP connection per worker also works with `--connections` = workers).
//!
//! Modes:
//! - `grpc` (default): the full path, client → gRPC → coordinator → store.
//! - `store`: the same transitions called directly on the store (no gRPC, no coordinator
//!   validation), to show how much of the time is the database.
//!
//! By default it creates a fresh PostgreSQL database, starts an in-process coordinator on it on
//! port 0, runs, prints a summary and drops the database. `--coordinator URL` targets a running
//! coordinator instead; with an `https://` URL and the connection flags of `nat_client`
//! (`--ca-cert`, `--cert`/`--key`, `--token`/`--token-file`) it measures one serving TLS and
//! token auth (the token needs the worker and user calls: an admin token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use nat_coordinator::{Config, Coordinator, SystemClock};
use nat_proto::v1;
use nat_store::{Capabilities, Completion, NewJob, NewTask, Outcome, Requirements, Store};
use sqlx::Connection;

const PRESETS: [&str; 11] = [
    "darts-v2",
    "enas",
    "naonet",
    "vgg-block",
    "resnet-block",
    "mobilenetv2-block",
    "r1",
    "r2",
    "r3",
    "r4",
    "r5",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Grpc,
    Store,
}

#[derive(Debug, Parser)]
#[command(
    name = "nat-load",
    about = "Load benchmark of the nat-orchestrator coordinator"
)]
struct Cli {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Tasks to complete.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Time a worker holds a task before reporting, in milliseconds.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Spread of the hold, as a fraction f in [0, 1]: each hold is drawn uniformly from
    /// [hold·(1−f), hold·(1+f)] and each worker starts after a uniform delay in [0, hold), so the
    /// workers are not synchronized (real trainings differ in length). 0 = every hold exactly
    /// `--hold-ms`, all workers starting together.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    hold_jitter: f64,
    /// HTTP/2 connections shared by the workers.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Tasks per submitted job (the coordinator accepts at most 1024).
    #[arg(long, default_value_t = 1000)]
    tasks_per_job: usize,
    /// grpc: the full path; store: direct store calls.
    #[arg(long, value_enum, default_value = "grpc")]
    mode: Mode,
    /// PostgreSQL server (admin database) on which a fresh database is created and dropped.
    #[arg(
        long,
        env = "NAT_BENCH_PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
    /// Use this database URL instead of a fresh PostgreSQL database (e.g. sqlite:/tmp/b.db).
    #[arg(long)]
    database_url: Option<String>,
    /// Target a running coordinator instead of starting one in-process (grpc mode). An
    /// https:// URL is reached over TLS; the connection flags below (--ca-cert, --cert/--key,
    /// --token, --token-file) apply to it.
    #[arg(long)]
    coordinator: Option<String>,
    /// TLS and the bearer token, for --coordinator (the in-process coordinator serves plaintext
    /// without auth, so TLS flags need --coordinator).
    #[command(flatten)]
    connect: nat_client::ConnectArgs,
    /// Before each real report, another simulated worker (the next one's id, same connection
    /// credential) reports the same task with the right lease token: every such report must be
    /// refused (FAILED_PRECONDITION / PERMISSION_DENIED). Prints the counts; exits non-zero if
    /// one was accepted. Shows that a worker cannot report another's lease, reserved or not.
    #[arg(long)]
    foreign_reports: bool,
    /// Lease reservations of the in-process coordinator, in ms of demand (its
    /// `--lease-reserve-ms`; 0 = off: every lease claimed on the request path).
    #[arg(long, default_value_t = 50)]
    lease_reserve_ms: u64,
    /// Start-up period left out of the steady-state line of the summary, in milliseconds: the
    /// fleet's first leases all arrive at once, before the coordinator has measured any rate
    /// (the full-run lines include them).
    #[arg(long, default_value_t = 2000)]
    warmup_ms: u64,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a number in [0, 1], got {text:?}")),
    }
}

/// How long a simulated worker holds each task.
#[derive(Debug, Clone, Copy)]
struct Hold {
    mean: Duration,
    jitter: f64,
}

impl Hold {
    fn of(cli: &Cli) -> Hold {
        Hold {
            mean: Duration::from_millis(cli.hold_ms),
            jitter: cli.hold_jitter,
        }
    }

    /// Delay before a worker's first lease: uniform in [0, mean) when jittered, else none.
    fn start_offset(&self) -> Duration {
        if self.jitter > 0.0 && !self.mean.is_zero() {
            self.mean.mul_f64(rand::random::<f64>())
        } else {
            Duration::ZERO
        }
    }

    /// Holds one task.
    async fn hold(&self) {
        if self.mean.is_zero() {
            return;
        }
        let factor = 1.0 + self.jitter * (2.0 * rand::random::<f64>() - 1.0);
        tokio::time::sleep(self.mean.mul_f64(factor)).await;
    }
}

/// Latencies in microseconds: of the whole run, and of the steady state (calls started after
/// the warm-up).
#[derive(Default)]
struct Samples {
    lease_us: Vec<u32>,
    report_us: Vec<u32>,
    steady_lease_us: Vec<u32>,
    steady_report_us: Vec<u32>,
    /// Round trips completed after the warm-up.
    steady_done: u64,
    /// When the last round trip completed, from the start of the run.
    last_done: Duration,
    empty_leases: u64,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.lease_us.extend(other.lease_us);
        self.report_us.extend(other.report_us);
        self.steady_lease_us.extend(other.steady_lease_us);
        self.steady_report_us.extend(other.steady_report_us);
        self.steady_done += other.steady_done;
        self.last_done = self.last_done.max(other.last_done);
        self.empty_leases += other.empty_leases;
    }

    /// Records a lease that took `latency` and was asked for `started` after the start of the
    /// run; returns whether it counts for the steady state.
    fn lease(&mut self, started: Duration, latency: Duration, warmup: Duration) -> bool {
        let latency = us(latency);
        self.lease_us.push(latency);
        let steady = started >= warmup;
        if steady {
            self.steady_lease_us.push(latency);
        }
        steady
    }

    /// Records a report that took `latency` and completed a round trip at `done_at` from the
    /// start of the run.
    fn report(&mut self, steady: bool, latency: Duration, done_at: Duration, warmup: Duration) {
        let latency = us(latency);
        self.report_us.push(latency);
        if steady {
            self.steady_report_us.push(latency);
        }
        self.last_done = self.last_done.max(done_at);
        if done_at >= warmup {
            self.steady_done += 1;
        }
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The coordinator binary's allocator (see coordinator/src/main.rs), so that the in-process
/// coordinator is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.workers == 0 || cli.tasks == 0 || cli.connections == 0 {
        bail!("--workers, --tasks and --connections must be positive");
    }
    if !(1..=1024).contains(&cli.tasks_per_job) {
        bail!("--tasks-per-job must be in 1..=1024");
    }
    let mut fresh_pg: Option<String> = None;
    let database_url = match (&cli.database_url, &cli.coordinator) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(_)) => None,
        (None, None) => {
            let name = format!("nat_bench_{:016x}", rand::random::<u64>());
            let mut conn = sqlx::PgConnection::connect(&cli.pg_admin_url)
                .await
                .context("connect to the PostgreSQL admin database")?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .context("create the bench database")?;
            let _ = conn.close().await;
            let base = cli
                .pg_admin_url
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .unwrap_or_else(|| cli.pg_admin_url.clone());
            fresh_pg = Some(name.clone());
            Some(format!("{base}/{name}"))
        }
    };
    let result = match cli.mode {
        Mode::Grpc => run_grpc(&cli, database_url.as_deref()).await,
        Mode::Store => match &database_url {
            Some(url) => run_store(&cli, url).await,
            None => Err(anyhow::anyhow!(
                "--mode store needs a database, not --coordinator"
            )),
        },
    };
    if let Some(name) = fresh_pg {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&cli.pg_admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    result
}

fn summary(cli: &Cli, backend: &str, elapsed: Duration, done: u64, mut s: Samples) {
    s.lease_us.sort_unstable();
    s.report_us.sort_unstable();
    s.steady_lease_us.sort_unstable();
    s.steady_report_us.sort_unstable();
    let rate = done as f64 / elapsed.as_secs_f64();
    println!(
        "mode={:?} backend={backend} workers={} connections={} hold_ms={} hold_jitter={} tasks={done} elapsed_s={:.2}",
        cli.mode,
        cli.workers,
        cli.connections,
        cli.hold_ms,
        cli.hold_jitter,
        elapsed.as_secs_f64()
    );
    println!("round_trips_per_s={rate:.0}");
    println!(
        "lease_ms p50={:.2} p90={:.2} p99={:.2} max={:.2} (n={}, empty={})",
        pct(&s.lease_us, 0.5),
        pct(&s.lease_us, 0.9),
        pct(&s.lease_us, 0.99),
        pct(&s.lease_us, 1.0),
        s.lease_us.len(),
        s.empty_leases
    );
    println!(
        "report_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        pct(&s.report_us, 0.5),
        pct(&s.report_us, 0.9),
        pct(&s.report_us, 0.99),
        pct(&s.report_us, 1.0)
    );
    let warmup = Duration::from_millis(cli.warmup_ms);
    let window = s.last_done.saturating_sub(warmup);
    if s.steady_done == 0 || window.is_zero() {
        println!(
            "steady: none (the run ended within the {} ms warm-up)",
            cli.warmup_ms
        );
        return;
    }
    println!(
        "steady (after {} ms warm-up, {:.2} s): round_trips_per_s={:.0} lease_ms p50={:.2} p90={:.2} p99={:.2} max={:.2} (n={}) report_ms p50={:.2} p99={:.2}",
        cli.warmup_ms,
        window.as_secs_f64(),
        s.steady_done as f64 / window.as_secs_f64(),
        pct(&s.steady_lease_us, 0.5),
        pct(&s.steady_lease_us, 0.9),
        pct(&s.steady_lease_us, 0.99),
        pct(&s.steady_lease_us, 1.0),
        s.steady_lease_us.len(),
        pct(&s.steady_report_us, 0.5),
        pct(&s.steady_report_us, 0.99),
    );
}

async fn run_grpc(cli: &Cli, database_url: Option<&str>) -> anyhow::Result<()> {
    let options = cli.connect.resolve()?;
    for warning in options.warnings() {
        eprintln!("warning: {warning}");
    }
    if cli.coordinator.is_none() && !options.tls_flags().is_empty() {
        bail!(
            "{}: needs --coordinator (the in-process coordinator serves plaintext)",
            options.tls_flags().join(", ")
        );
    }
    let auth = options.auth();
    // The coordinator, in-process unless one is given.
    let mut stop_tx = None;
    let mut coordinator = None;
    let mut backend = "remote".to_string();
    let url = match (&cli.coordinator, database_url) {
        (Some(url), _) => url.clone(),
        (None, Some(db)) => {
            let store = nat_store::connect(db).await.context("open the store")?;
            backend = store.backend().to_string();
            let config = Config {
                lease_duration: Duration::from_secs(300),
                lease_reserve: Duration::from_millis(cli.lease_reserve_ms),
                ..Config::default()
            };
            let c = Coordinator::new(store, Arc::new(SystemClock), config);
            coordinator = Some(c.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(nat_coordinator::serve(c, listener, None, async move {
                let _ = rx.await;
            }));
            stop_tx = Some(tx);
            format!("http://{addr}")
        }
        (None, None) => bail!("no coordinator and no database"),
    };
    let mut channels = Vec::with_capacity(cli.connections);
    for _ in 0..cli.connections {
        let endpoint = nat_client::endpoint(&url, &options)?.tcp_nodelay(true);
        let mut last = None;
        let mut ch = None;
        for _ in 0..50 {
            match endpoint.connect().await {
                Ok(c) => {
                    ch = Some(c);
                    break;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        channels.push(ch.ok_or_else(|| {
            let why = last
                .as_ref()
                .map_or_else(String::new, |e| nat_client::error_chain(e));
            anyhow::anyhow!("cannot connect to {url}: {why}")
        })?);
    }

    // Register the fleet.
    let mut ids = Vec::with_capacity(cli.workers);
    for i in 0..cli.workers {
        let mut w = nat_client::worker_client(channels[i % channels.len()].clone(), &auth);
        let id = w
            .register_worker(v1::RegisterWorkerRequest {
                name: format!("load-{i}"),
                capabilities: Some(v1::WorkerCapabilities {
                    devices: vec![],
                    cpu_cores: 1,
                    slots: 1,
                    version: "bench".into(),
                    hostname: "bench".into(),
                    datasets: vec![],
                    dataset_infos: vec![],
                }),
            })
            .await
            .context("register")?
            .into_inner()
            .worker_id;
        ids.push(id);
    }
    // Submit the work.
    let mut jobs = nat_client::job_client(channels[0].clone(), &auth);
    let mut left = cli.tasks;
    while left > 0 {
        let n = left.min(cli.tasks_per_job);
        jobs.submit_job(v1::SubmitJobRequest {
            kind: v1::JobKind::Evaluate as i32,
            // The eleven input presets in turn: several reward-estimate keys, as a real
            // evaluate job has.
            architectures: PRESETS
                .iter()
                .cycle()
                .take(n)
                .map(|p| p.to_string())
                .collect(),
            dataset: "digits".into(),
            budget: Some(v1::BudgetSpec {
                preset: "smoke".into(),
                overrides: None,
            }),
            seed: 0,
            priority: 0,
            name: "load".into(),
            optimize: None,
            requirements: None,
            dataset_shape: None,
        })
        .await
        .context("submit")?;
        left -= n;
    }

    let done = Arc::new(AtomicU64::new(0));
    let total = cli.tasks as u64;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(cli.workers);
    let foreign = Arc::new(ForeignReports::default());
    let neighbours: Vec<String> = ids.iter().skip(1).chain(ids.first()).cloned().collect();
    for (i, id) in ids.into_iter().enumerate() {
        let mut w = nat_client::worker_client(channels[i % channels.len()].clone(), &auth);
        let neighbour = neighbours
            .get(i)
            .cloned()
            .filter(|n| *n != id && cli.foreign_reports);
        let foreign = foreign.clone();
        let done = done.clone();
        let hold = Hold::of(cli);
        let warmup = Duration::from_millis(cli.warmup_ms);
        handles.push(tokio::spawn(async move {
            let mut s = Samples::default();
            tokio::time::sleep(hold.start_offset()).await;
            while done.load(Ordering::Relaxed) < total {
                let t0 = Instant::now();
                let task = w
                    .lease_task(v1::LeaseTaskRequest {
                        worker_id: id.clone(),
                        wait_ms: 200,
                        device: None,
                        slot: 0,
                    })
                    .await?
                    .into_inner()
                    .task;
                let Some(task) = task else {
                    s.empty_leases += 1;
                    continue;
                };
                let steady = s.lease(t0.duration_since(start), t0.elapsed(), warmup);
                hold.hold().await;
                if let Some(other) = &neighbour {
                    foreign.send(&mut w, other, &task).await;
                }
                let t1 = Instant::now();
                w.report_result(v1::ReportResultRequest {
                    worker_id: id.clone(),
                    task_id: task.task_id,
                    lease_token: task.lease_token,
                    outcome: Some(v1::report_result_request::Outcome::TrainEval(
                        v1::TrainEvalResult {
                            accuracy: 0.9,
                            loss: 0.3,
                            params: 1000,
                            madds: 1000,
                            wall_seconds: 0.0,
                            images_per_second: 0.0,
                        },
                    )),
                })
                .await?;
                s.report(steady, t1.elapsed(), start.elapsed(), warmup);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<Samples, tonic::Status>(s)
        }));
    }
    let mut all = Samples::default();
    for h in handles {
        let s = h
            .await?
            .map_err(|s| anyhow::anyhow!("worker call failed: {s}"))?;
        all.extend(s);
    }
    let elapsed = start.elapsed();
    summary(cli, &backend, elapsed, done.load(Ordering::Relaxed), all);
    if cli.foreign_reports {
        let (sent, refused, accepted) = foreign.counts();
        println!("foreign_reports sent={sent} refused={refused} accepted={accepted}");
        if accepted > 0 {
            bail!("{accepted} reports for another worker's lease were accepted");
        }
    }
    if let Some(c) = &coordinator {
        let r = c.reservations.stats();
        println!(
            "reservations refills={} claimed={} handed_out={} returned={} (leases answered from memory: {:.1} %)",
            r.refills,
            r.claimed,
            r.handed_out,
            r.returned,
            100.0 * r.handed_out as f64 / done.load(Ordering::Relaxed).max(1) as f64
        );
    }
    if let Some(c) = &coordinator {
        let h = c.handouts.stats();
        println!(
            "hand-outs written_by_report={} written_in_background={} pending={}",
            h.skipped,
            h.written,
            c.handouts.len()
        );
    }
    if let Some(tx) = stop_tx {
        let _ = tx.send(());
    }
    Ok(())
}

/// Reports sent by a worker for a lease another worker holds (`--foreign-reports`).
#[derive(Debug, Default)]
struct ForeignReports {
    sent: AtomicU64,
    refused: AtomicU64,
    accepted: AtomicU64,
}

impl ForeignReports {
    /// `other` reports `task` (with its right lease token) through `w`'s connection.
    async fn send(
        &self,
        w: &mut v1::worker_service_client::WorkerServiceClient<nat_client::AuthChannel>,
        other: &str,
        task: &v1::Task,
    ) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let r = w
            .report_result(v1::ReportResultRequest {
                worker_id: other.to_string(),
                task_id: task.task_id.clone(),
                lease_token: task.lease_token,
                outcome: Some(v1::report_result_request::Outcome::TrainEval(
                    v1::TrainEvalResult {
                        accuracy: 0.1,
                        loss: 9.0,
                        params: 1000,
                        madds: 1000,
                        wall_seconds: 0.0,
                        images_per_second: 0.0,
                    },
                )),
            })
            .await;
        match r {
            Ok(_) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied
                ) =>
            {
                self.refused.fetch_add(1, Ordering::Relaxed)
            }
            // Anything else (the coordinator unreachable, …) is neither: counted as sent only.
            Err(_) => 0,
        };
    }

    fn counts(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
        )
    }
}

/// The same transitions straight on the store: lease (one statement), read the task (as the
/// coordinator does to build the reward key), report (one transaction).
async fn run_store(cli: &Cli, url: &str) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = nat_store::connect(url).await.context("open the store")?;
    let now = chrono::Utc::now;
    let caps = Capabilities {
        cpu_cores: 1,
        slots: 1,
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(cli.workers);
    for i in 0..cli.workers {
        ids.push(
            store
                .register_worker(&format!("load-{i}"), caps.clone(), now())
                .await?
                .id,
        );
    }
    let mut left = cli.tasks;
    while left > 0 {
        let n = left.min(cli.tasks_per_job);
        let tasks = (0..n)
            .map(|i| NewTask {
                kind: "train_eval".into(),
                payload: serde_json::json!({ "index": i }),
                requirements: Requirements::default(),
                max_attempts: 3,
            })
            .collect();
        store
            .create_job(
                NewJob {
                    kind: "evaluate".into(),
                    spec: serde_json::json!({}),
                    priority: 0,
                    completion: Completion::AllTasks,
                    owner: None,
                },
                tasks,
                now(),
            )
            .await?;
        left -= n;
    }
    let done = Arc::new(AtomicU64::new(0));
    let total = cli.tasks as u64;
    let start = Instant::now();
    let mut handles = Vec::new();
    for id in ids {
        let store = store.clone();
        let done = done.clone();
        let caps = caps.clone();
        let hold = Hold::of(cli);
        let warmup = Duration::from_millis(cli.warmup_ms);
        handles.push(tokio::spawn(async move {
            let mut s = Samples::default();
            tokio::time::sleep(hold.start_offset()).await;
            while done.load(Ordering::Relaxed) < total {
                let t0 = Instant::now();
                let Some(lease) = store
                    .lease_task(id, &caps, now(), Duration::from_secs(300))
                    .await?
                else {
                    s.empty_leases += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let steady = s.lease(t0.duration_since(start), t0.elapsed(), warmup);
                hold.hold().await;
                let t1 = Instant::now();
                store.get_task(lease.task.id).await?;
                store
                    .report_result(
                        lease.task.id,
                        lease.token,
                        id,
                        Outcome::Succeeded {
                            result: serde_json::json!({"accuracy": 0.9}),
                            rewards: vec![],
                            sample_rewards: vec![],
                        },
                        now(),
                    )
                    .await?;
                s.report(steady, t1.elapsed(), start.elapsed(), warmup);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<Samples, nat_store::StoreError>(s)
        }));
    }
    let mut all = Samples::default();
    for h in handles {
        let s = h.await??;
        all.extend(s);
    }
    summary(
        cli,
        store.backend(),
        start.elapsed(),
        done.load(Ordering::Relaxed),
        all,
    );
    Ok(())
}
