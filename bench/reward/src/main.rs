//! `nat-reward-bench`: what one reward costs the coordinator, and how long it takes to reach the
//! policy, as an optimize job grows (issue #12, item 4: flat from 1k to 50k rewards).
//!
//! For each N of `--rewards` it:
//! 1. creates a fresh PostgreSQL database and starts the `nat-coordinator` binary on it as a
//!    separate process (port 0), so that the coordinator's CPU time is that process's own,
//!    read from /proc;
//! 2. submits one `optimize` job with proxy rewards (`--arch`, dataset `digits`, budget
//!    `smoke`, `samples_per_iteration` = M, `iterations` = ⌈N / M⌉) and watches it (WatchJob);
//! 3. runs `--workers` simulated workers over gRPC that lease `train_eval` tasks and report at
//!    once an accuracy derived from the architecture's canonical JSON (FNV-1a), so the same
//!    architecture always gets the same accuracy;
//! 4. stops when N rewards reached the policy (the `rewards` of the job's `PolicyUpdated`
//!    events) or after `--max-seconds`, cancels the job, stops the coordinator, drops the
//!    database;
//! 5. prints, over the whole run and over the last `--window` rewards: rewards/s, coordinator
//!    CPU µs per reward, PostgreSQL backend CPU µs per reward, and the driver latency (time from
//!    the last report of a learning round to the policy update that used the round's rewards).
//!
//! The definitions are in docs/BENCHMARKS.md ("Reward path").
//!
//! With TLS and token auth: `--coordinator-arg=--tls-cert=… --coordinator-arg=--tls-key=…
//! --coordinator-arg=--auth=token` for the coordinator, `--ca-cert` (and `--tls-server-name` when
//! its certificate does not name 127.0.0.1) for the bench's https:// calls, and
//! `--bootstrap-token` to create an admin token in each fresh database.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use nat_client::{Auth, Channel, ConnectOptions};
use nat_proto::v1;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;

/// Linux's USER_HZ (the unit of utime/stime in /proc/PID/stat) on every mainstream target.
const CLOCK_TICK_NS: u64 = 10_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "nat-reward-bench",
    about = "Coordinator CPU and driver latency per reward of one optimize job, by job size"
)]
struct Cli {
    /// Rewards per job; one run (fresh database, fresh coordinator) per value, in order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    rewards: Vec<u64>,
    /// Rewards per learning round (the job's optimize.samples_per_iteration, M; at most 1024).
    #[arg(long, default_value_t = 100)]
    samples_per_iteration: u32,
    /// Rewards of the window at the end of a run (its own line of figures).
    #[arg(long, default_value_t = 1000)]
    window: u64,
    /// Simulated workers (each one slot, reporting at once).
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// HTTP/2 connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Input architecture of the job (a preset name). darts-v2 has 28 edges, so nearly every
    /// sampled α is new (one `train_eval` task per reward, as the cost model assumes).
    #[arg(long, default_value = "darts-v2")]
    arch: String,
    /// Seed of the job.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest run per N, in seconds: a run that has not reached N by then stops and reports
    /// what it reached.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// The coordinator binary. Default: `nat-coordinator` beside this binary. Copy it elsewhere
    /// first when the target directory is shared with another tree.
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// The coordinator's log (stderr); RUST_LOG defaults to `warn` for it.
    #[arg(long, default_value = "/dev/null")]
    coordinator_log: PathBuf,
    /// PostgreSQL server (admin database) on which a fresh database is created and dropped.
    #[arg(
        long,
        env = "NAT_BENCH_PG_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
    /// An extra argument for the started coordinator, repeatable, e.g.
    /// `--coordinator-arg=--tls-cert=server.pem --coordinator-arg=--tls-key=server.key`: to
    /// measure it with TLS or token auth.
    #[arg(
        long = "coordinator-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    coordinator_args: Vec<String>,
    /// Reach the started coordinator over TLS, at https://127.0.0.1:PORT (give it its
    /// certificate with --coordinator-arg; --tls-server-name when the certificate does not name
    /// 127.0.0.1). Implied by --ca-cert, --cert and --tls-server-name.
    #[arg(long)]
    tls: bool,
    /// Create an admin token in each fresh database (`nat-coordinator token create`) and send
    /// it with every call: to measure the coordinator with `--coordinator-arg=--auth=token`.
    #[arg(long, conflicts_with_all = ["token", "token_file"])]
    bootstrap_token: bool,
    /// TLS and the bearer token of the bench's calls (a token must be valid at the started
    /// coordinator: see --bootstrap-token).
    #[command(flatten)]
    connect: nat_client::ConnectArgs,
    /// `connect`, checked and with its files read (set in `main`).
    #[arg(skip)]
    options: ConnectOptions,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    cli.options = cli.connect.resolve()?;
    for warning in cli.options.warnings() {
        eprintln!("warning: {warning}");
    }
    if cli.rewards.is_empty() || cli.rewards.contains(&0) {
        bail!("--rewards must list positive numbers");
    }
    if !(1..=1024).contains(&cli.samples_per_iteration) {
        bail!("--samples-per-iteration must be in 1..=1024");
    }
    if cli.workers == 0 || cli.connections == 0 || cli.window == 0 {
        bail!("--workers, --connections and --window must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(run_all(cli))
}

async fn run_all(cli: Cli) -> anyhow::Result<()> {
    let bin = match &cli.coordinator_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("current exe")?
            .parent()
            .ok_or_else(|| anyhow!("the bench binary has no directory"))?
            .join("nat-coordinator"),
    };
    if !bin.is_file() {
        bail!(
            "no coordinator binary at {} (cargo build --release -p nat-coordinator, or --coordinator-bin)",
            bin.display()
        );
    }
    let cpu = cpu_model();
    println!(
        "cpu: {cpu} ({} logical CPUs); coordinator: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display()
    );
    let mut reports = Vec::new();
    for &n in &cli.rewards {
        let report = run_one(&cli, &bin, n).await?;
        report.print(&cli);
        reports.push(report);
    }
    print_table(&cli, &cpu, &reports);
    Ok(())
}

/// One sample of the job's progress, taken when a policy update arrives.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Rewards that reached the policy so far.
    rewards: u64,
    /// The update's commit time (the coordinator's clock), unix ms; 0 for the baseline.
    at_ms: i64,
    /// When the bench saw it.
    seen: Instant,
    /// CPU time so far: the coordinator process, the job database's PostgreSQL backends, this
    /// bench process.
    coordinator_ns: u64,
    postgres_ns: u64,
    bench_ns: u64,
    /// `train_eval` tasks of the job so far (from the watch's progress events).
    tasks: u32,
}

/// What one run measured.
struct Report {
    target: u64,
    marks: Vec<Mark>,
    /// Driver latency of each round with reports: (rewards after the round, latency µs).
    latencies: Vec<(u64, f64)>,
    loadavg_start: String,
    loadavg_end: String,
    stopped_by_time: bool,
}

impl Report {
    fn last(&self) -> Mark {
        // `marks` always holds the baseline.
        self.marks[self.marks.len() - 1]
    }

    /// The mark that opens the window of the last `window` rewards.
    fn window_start(&self, window: u64) -> Mark {
        let end = self.last().rewards;
        self.marks
            .iter()
            .rev()
            .find(|m| m.rewards + window <= end)
            .copied()
            .unwrap_or(self.marks[0])
    }

    fn figures(&self, from: Mark) -> Figures {
        let to = self.last();
        let r = to.rewards.saturating_sub(from.rewards);
        let per = |ns: u64| {
            if r == 0 {
                f64::NAN
            } else {
                ns as f64 / 1000.0 / r as f64
            }
        };
        let secs = to.seen.duration_since(from.seen).as_secs_f64();
        let lat: Vec<f64> = self
            .latencies
            .iter()
            .filter(|(after, _)| *after > from.rewards && *after <= to.rewards)
            .map(|(_, l)| *l)
            .collect();
        Figures {
            rewards: r,
            seconds: secs,
            rewards_per_s: if secs > 0.0 {
                r as f64 / secs
            } else {
                f64::NAN
            },
            coordinator_us: per(to.coordinator_ns.saturating_sub(from.coordinator_ns)),
            postgres_us: per(to.postgres_ns.saturating_sub(from.postgres_ns)),
            bench_us: per(to.bench_ns.saturating_sub(from.bench_ns)),
            latency_ms_p50: percentile(&lat, 0.5) / 1000.0,
            latency_ms_max: percentile(&lat, 1.0) / 1000.0,
            rounds: lat.len(),
            tasks: to.tasks.saturating_sub(from.tasks),
        }
    }

    fn print(&self, cli: &Cli) {
        let last = self.last();
        println!(
            "N={} reached={} tasks={} stopped_by={} load_start=[{}] load_end=[{}]",
            self.target,
            last.rewards,
            last.tasks,
            if self.stopped_by_time {
                "max-seconds"
            } else {
                "target"
            },
            self.loadavg_start,
            self.loadavg_end
        );
        for (name, f) in [
            ("overall", self.figures(self.marks[0])),
            (
                &format!("last {}", cli.window) as &str,
                self.figures(self.window_start(cli.window)),
            ),
        ] {
            println!(
                "  {name:>12}: rewards={} tasks={} s={:.2} rewards/s={:.1} coordinator_cpu_us/reward={:.1} postgres_cpu_us/reward={:.1} bench_cpu_us/reward={:.1} driver_latency_ms p50={:.2} max={:.2} (rounds={}) driver_latency_us/reward p50={:.1}",
                f.rewards,
                f.tasks,
                f.seconds,
                f.rewards_per_s,
                f.coordinator_us,
                f.postgres_us,
                f.bench_us,
                f.latency_ms_p50,
                f.latency_ms_max,
                f.rounds,
                f.latency_ms_p50 * 1000.0 / f64::from(cli.samples_per_iteration),
            );
        }
    }
}

struct Figures {
    rewards: u64,
    seconds: f64,
    rewards_per_s: f64,
    coordinator_us: f64,
    postgres_us: f64,
    bench_us: f64,
    latency_ms_p50: f64,
    latency_ms_max: f64,
    rounds: usize,
    tasks: u32,
}

fn print_table(cli: &Cli, cpu: &str, reports: &[Report]) {
    println!();
    println!(
        "window = last {} rewards (M = {} rewards per round, {} workers, arch {}); CPU: {cpu}",
        cli.window, cli.samples_per_iteration, cli.workers, cli.arch
    );
    println!(
        "| N | reached | tasks | rewards/s (window) | coord CPU µs/reward window | overall | PG CPU µs/reward window | overall | driver latency ms/round p50 (window) | µs/reward | load avg (end) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for r in reports {
        let w = r.figures(r.window_start(cli.window));
        let o = r.figures(r.marks[0]);
        println!(
            "| {} | {}{} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
            r.target,
            r.last().rewards,
            if r.stopped_by_time {
                format!(" (after {} s)", cli.max_seconds)
            } else {
                String::new()
            },
            r.last().tasks,
            w.rewards_per_s,
            w.coordinator_us,
            o.coordinator_us,
            w.postgres_us,
            o.postgres_us,
            w.latency_ms_p50,
            w.latency_ms_p50 * 1000.0 / f64::from(cli.samples_per_iteration),
            r.loadavg_end
        );
        rows.push(w);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        if rows.len() > 1 {
            println!(
                "ratio last/first (window): coordinator CPU per reward {:.2}x, PostgreSQL CPU per reward {:.2}x, driver latency {:.2}x, rewards/s {:.2}x",
                last.coordinator_us / first.coordinator_us,
                last.postgres_us / first.postgres_us,
                last.latency_ms_p50 / first.latency_ms_p50,
                last.rewards_per_s / first.rewards_per_s,
            );
        }
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn run_one(cli: &Cli, bin: &Path, target: u64) -> anyhow::Result<Report> {
    let name = format!("nat_reward_bench_{:016x}", random_u64());
    let mut admin = sqlx::PgConnection::connect(&cli.pg_admin_url)
        .await
        .context("connect to the PostgreSQL admin database")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .context("create the bench database")?;
    let _ = admin.close().await;
    let base = cli
        .pg_admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or_else(|| cli.pg_admin_url.clone());
    let url = format!("{base}/{name}");
    let result = run_on(cli, bin, target, &url).await;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&cli.pg_admin_url).await {
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
        {
            eprintln!("cannot drop the bench database {name}: {e}");
        }
    }
    result
}

/// Creates an admin token in the database at `url` with the coordinator binary's `token create`
/// and returns it as the bench's credentials.
async fn bootstrap_token(bin: &Path, url: &str) -> anyhow::Result<Auth> {
    let output = tokio::process::Command::new(bin)
        .args(["--database-url", url, "token", "create"])
        .args(["--role", "admin", "--name", "reward-bench"])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {} token create", bin.display()))?;
    if !output.status.success() {
        bail!(
            "{} token create failed: {}",
            bin.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let secret = stdout
        .lines()
        .last()
        .map(str::trim)
        .ok_or_else(|| anyhow!("{} token create printed no token", bin.display()))?;
    Ok(Auth::bearer("--bootstrap-token", secret)?)
}

async fn run_on(cli: &Cli, bin: &Path, target: u64, url: &str) -> anyhow::Result<Report> {
    let auth = if cli.bootstrap_token {
        bootstrap_token(bin, url).await?
    } else {
        cli.options.auth()
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cli.coordinator_log)
        .with_context(|| format!("open {}", cli.coordinator_log.display()))?;
    let mut child = tokio::process::Command::new(bin)
        .args([
            "--database-url",
            url,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--lease-seconds",
            "300",
            "--heartbeat-seconds",
            "60",
        ])
        .args(&cli.coordinator_args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the coordinator exited at once"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no coordinator stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .context("the coordinator did not listen within 120 s")??
        .ok_or_else(|| anyhow!("the coordinator exited before listening"))?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .ok_or_else(|| anyhow!("unexpected coordinator line {line:?}"))?
        .to_string();
    // Keep reading its stdout so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let scheme = if cli.tls || !cli.options.tls_flags().is_empty() {
        "https"
    } else {
        "http"
    };
    let result = drive(cli, &auth, target, &format!("{scheme}://{addr}"), url, pid).await;

    // Stop the coordinator: SIGTERM (graceful), then kill.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    result
}

async fn connect(url: &str, options: &ConnectOptions) -> anyhow::Result<Channel> {
    let endpoint = nat_client::endpoint(url, options)?.tcp_nodelay(true);
    let mut last = None;
    for _ in 0..50 {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let why = last
        .as_ref()
        .map_or_else(String::new, |e| nat_client::error_chain(e));
    Err(anyhow!("cannot connect to {url}: {why}"))
}

/// Runs the job against a started coordinator.
async fn drive(
    cli: &Cli,
    auth: &Auth,
    target: u64,
    grpc: &str,
    db_url: &str,
    coordinator_pid: u32,
) -> anyhow::Result<Report> {
    let loadavg_start = loadavg();
    let mut channels = Vec::with_capacity(cli.connections);
    for _ in 0..cli.connections {
        channels.push(connect(grpc, &cli.options).await?);
    }
    let mut ids = Vec::with_capacity(cli.workers);
    for i in 0..cli.workers {
        let mut w = nat_client::worker_client(channels[i % channels.len()].clone(), auth);
        let id = w
            .register_worker(v1::RegisterWorkerRequest {
                name: format!("reward-bench-{i}"),
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

    // The job database's backends other than the probe's own: the coordinator's pool.
    let mut pg = PgCpu::new(db_url).await?;
    let me = std::process::id();
    let sample = |pg_ns: u64, rewards: u64, at_ms: i64, tasks: u32| Mark {
        rewards,
        at_ms,
        seen: Instant::now(),
        coordinator_ns: process_cpu_ns(coordinator_pid).unwrap_or(0),
        postgres_ns: pg_ns,
        bench_ns: process_cpu_ns(me).unwrap_or(0),
        tasks,
    };

    let m = cli.samples_per_iteration;
    let iterations = u32::try_from(target.div_ceil(u64::from(m)))
        .context("too many rounds")?
        .max(1);
    let mut jobs = nat_client::job_client(channels[0].clone(), auth);
    let job = jobs
        .submit_job(v1::SubmitJobRequest {
            kind: v1::JobKind::Optimize as i32,
            architectures: vec![cli.arch.clone()],
            dataset: "digits".into(),
            budget: Some(v1::BudgetSpec {
                preset: "smoke".into(),
                overrides: None,
            }),
            seed: cli.seed,
            priority: 0,
            name: format!("reward-bench-{target}"),
            optimize: Some(v1::OptimizeSpec {
                reward: v1::RewardMode::Proxy as i32,
                iterations,
                samples_per_iteration: m,
                derive_samples: 1,
                ..Default::default()
            }),
            requirements: None,
            dataset_shape: None,
        })
        .await
        .context("submit the optimize job")?
        .into_inner()
        .job
        .ok_or_else(|| anyhow!("SubmitJob answered no job"))?;
    let job_id = job.job_id;
    let baseline = sample(pg.total_ns().await, 0, 0, 0);
    let start = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: job_id.clone(),
            after_sequence: 0,
        })
        .await
        .context("watch the job")?
        .into_inner();

    // The fleet.
    let mut handles = Vec::with_capacity(cli.workers);
    for (i, id) in ids.into_iter().enumerate() {
        let mut w = nat_client::worker_client(channels[i % channels.len()].clone(), auth);
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            // Send times (unix µs) of this worker's reports.
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
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
                let Some(task) = task else { continue };
                let genotype = match &task.payload {
                    Some(v1::task::Payload::TrainEval(t)) => t.genotype_json.as_str(),
                    _ => "",
                };
                let accuracy = accuracy_of(genotype);
                sent.push(unix_us());
                w.report_result(v1::ReportResultRequest {
                    worker_id: id.clone(),
                    task_id: task.task_id,
                    lease_token: task.lease_token,
                    outcome: Some(v1::report_result_request::Outcome::TrainEval(
                        v1::TrainEvalResult {
                            accuracy,
                            loss: 1.0 - accuracy,
                            params: 1000,
                            madds: 1000,
                            wall_seconds: 0.0,
                            images_per_second: 0.0,
                        },
                    )),
                })
                .await?;
            }
            Ok::<Vec<i64>, tonic::Status>(sent)
        }));
    }

    // Watch the policy updates until N rewards reached the policy, the job ended, or time ran
    // out.
    let marks = Arc::new(Mutex::new(vec![baseline]));
    let deadline = start + Duration::from_secs(cli.max_seconds);
    let mut seen_rounds = HashSet::new();
    let mut rewards = 0u64;
    let mut tasks = 0u32;
    let mut last_print = Instant::now();
    let mut stopped_by_time = false;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), stream.message()).await;
        let event = match next {
            Err(_) => {
                stopped_by_time = true;
                break;
            }
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                stop.store(true, Ordering::Relaxed);
                bail!("watch stream failed: {status}");
            }
        };
        match event.event {
            Some(v1::job_event::Event::Progress(p)) => tasks = tasks.max(p.tasks_total),
            Some(v1::job_event::Event::StateChanged(s))
                if s.state != v1::JobState::Queued as i32
                    && s.state != v1::JobState::Running as i32 =>
            {
                eprintln!("job ended early: state {} {}", s.state, s.reason);
                break;
            }
            Some(v1::job_event::Event::PolicyUpdated(u)) => {
                if !seen_rounds.insert(u.iteration) {
                    continue;
                }
                rewards += u.rewards.len() as u64;
                let mark = sample(pg.total_ns().await, rewards, event.at_unix_ms, tasks);
                marks.lock().await.push(mark);
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    eprintln!(
                        "N={target}: {rewards} rewards, {tasks} tasks, {:.0} s",
                        start.elapsed().as_secs_f64()
                    );
                }
                if rewards >= target {
                    break;
                }
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let loadavg_end = loadavg();
    drop(stream);
    let _ = jobs
        .cancel_job(v1::CancelJobRequest {
            job_id,
            reason: "reward bench done".into(),
        })
        .await;
    let mut sent = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(s)) => sent.extend(s),
            Ok(Err(status)) => eprintln!("a worker stopped on an error: {status}"),
            Err(e) => eprintln!("a worker panicked: {e}"),
        }
    }
    sent.sort_unstable();
    let marks = marks.lock().await.clone();
    let latencies = latencies(&marks, &sent);
    Ok(Report {
        target,
        marks,
        latencies,
        loadavg_start,
        loadavg_end,
        stopped_by_time,
    })
}

/// Driver latency per learning round: from the send time of the round's last report to the
/// commit time of the policy update that used the round (µs; the update's time has ms
/// resolution, taken as the middle of its millisecond). The next round's tasks are created only
/// after the update, so the round's reports are those sent before it (and after the previous
/// round's); rounds answered entirely from the reward cache (no report) are left out.
fn latencies(marks: &[Mark], sent: &[i64]) -> Vec<(u64, f64)> {
    let mut out = Vec::new();
    let mut previous_last: Option<i64> = None;
    for m in marks.iter().filter(|m| m.at_ms > 0) {
        let end_us = (m.at_ms + 1) * 1000;
        let n = sent.partition_point(|&s| s < end_us);
        let Some(&last) = n.checked_sub(1).and_then(|i| sent.get(i)) else {
            continue;
        };
        if previous_last == Some(last) {
            continue;
        }
        previous_last = Some(last);
        let latency = (m.at_ms * 1000 + 500 - last).max(0);
        out.push((m.rewards, latency as f64));
    }
    out
}

/// CPU time of the PostgreSQL backends of one database (those other than this probe's own),
/// from /proc/PID/schedstat; a backend that exits keeps the last value read.
struct PgCpu {
    conn: sqlx::PgConnection,
    seen: HashMap<i32, u64>,
    warned: bool,
}

impl PgCpu {
    async fn new(url: &str) -> anyhow::Result<PgCpu> {
        let conn = sqlx::PgConnection::connect(url)
            .await
            .context("connect the PostgreSQL CPU probe")?;
        Ok(PgCpu {
            conn,
            seen: HashMap::new(),
            warned: false,
        })
    }

    async fn total_ns(&mut self) -> u64 {
        let pids: Result<Vec<(i32,)>, _> = sqlx::query_as(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut self.conn)
        .await;
        match pids {
            Ok(pids) => {
                for (pid,) in pids {
                    match u32::try_from(pid).ok().and_then(schedstat_ns) {
                        Some(ns) => {
                            self.seen.insert(pid, ns);
                        }
                        None if !self.warned => {
                            self.warned = true;
                            eprintln!("cannot read /proc/{pid}/schedstat: PostgreSQL CPU is not measured (server not local?)");
                        }
                        None => {}
                    }
                }
            }
            Err(e) if !self.warned => {
                self.warned = true;
                eprintln!("cannot list the PostgreSQL backends: {e}");
            }
            Err(_) => {}
        }
        self.seen.values().sum()
    }
}

/// First field of /proc/PID[/task/TID]/schedstat: time on a CPU, ns.
fn schedstat_ns_at(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    schedstat_ns_at(&PathBuf::from(format!("/proc/{pid}/schedstat")))
}

/// utime + stime (clock ticks) of a /proc stat file.
fn stat_ticks(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): field 3 (state) is index 0, so
    // utime (14) and stime (15) are indexes 11 and 12.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of a whole process, ns: the live threads' schedstat (ns resolution) plus, at clock
/// tick resolution, what exited threads left in the process's utime + stime.
fn process_cpu_ns(pid: u32) -> Option<u64> {
    let total_ticks = stat_ticks(&PathBuf::from(format!("/proc/{pid}/stat")))?;
    let mut live_ns = 0u64;
    let mut live_ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let p = entry.path();
            if let (Some(ns), Some(ticks)) = (
                schedstat_ns_at(&p.join("schedstat")),
                stat_ticks(&p.join("stat")),
            ) {
                live_ns += ns;
                live_ticks += ticks;
            }
        }
    }
    if live_ns == 0 {
        return Some(total_ticks * CLOCK_TICK_NS);
    }
    Some(live_ns + total_ticks.saturating_sub(live_ticks) * CLOCK_TICK_NS)
}

/// A deterministic accuracy in [0.5, 0.9) from the architecture's canonical JSON (FNV-1a).
fn accuracy_of(genotype_json: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in genotype_json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    0.5 + 0.4 * ((h >> 11) as f64 / (1u64 << 53) as f64)
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn random_u64() -> u64 {
    // Database names only need to differ between runs: the clock and the pid suffice.
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(rewards: u64, at_ms: i64) -> Mark {
        Mark {
            rewards,
            at_ms,
            seen: Instant::now(),
            coordinator_ns: 0,
            postgres_ns: 0,
            bench_ns: 0,
            tasks: 0,
        }
    }

    #[test]
    fn latency_runs_from_the_last_report_before_each_update() {
        let marks = [mark(0, 0), mark(100, 10), mark(200, 20), mark(300, 30)];
        // Round 1: last report at 8.0 ms; round 2: none (cache); round 3: last at 27.5 ms.
        let sent = [1_000, 8_000, 25_000, 27_500];
        let l = latencies(&marks, &sent);
        assert_eq!(l, vec![(100, 2_500.0), (300, 3_000.0)]);
    }

    #[test]
    fn accuracy_is_deterministic_and_in_range() {
        let a = accuracy_of("{\"normal\":1}");
        assert_eq!(a, accuracy_of("{\"normal\":1}"));
        assert!((0.5..0.9).contains(&a));
        assert_ne!(a, accuracy_of("{\"normal\":2}"));
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(process_cpu_ns(std::process::id()).is_some_and(|ns| ns > 0));
    }
}
