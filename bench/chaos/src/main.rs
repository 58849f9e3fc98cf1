//! `nat-chaos`: the fault-injection suite (issue #16). It runs a real fleet — a private
//! PostgreSQL, several `nat-coordinator` processes on it, real `nat-worker` processes and
//! simulated workers speaking the real gRPC protocol — gives it evaluate jobs and an optimize
//! job, attacks it on a timeline (worker kills, leader kills, a PostgreSQL restart, a network
//! partition, clock jumps, a stopped leader, a flood), then checks invariants from the
//! database, prints the figures and exits non-zero on any violation. docs/RELIABILITY.md
//! explains each attack and what it checks.
//!
//! # Layout
//! - [`run`]: the run (setup, work, timeline, completion, checks).
//! - [`fleet`]: coordinators, real workers, sim-worker subprocesses, the leader row.
//! - [`sim`]: simulated workers (also the hidden `sim-workers` subcommand).
//! - [`pg`], [`netns`], [`procs`]: the private PostgreSQL, the partition's namespace, children.
//! - [`flood`]: the overload attack. [`invariants`]: the SQL checks. [`report`]: the figures.

mod fleet;
mod flood;
mod invariants;
mod netns;
mod pg;
mod procs;
mod report;
mod run;
mod sim;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// Attacks that can be left out with `--skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Attack {
    WorkerKill,
    LeaderKill,
    PgRestart,
    Partition,
    ClockJump,
    Sigstop,
    Flood,
}

/// Fault-injection suite of nat-orchestrator: attacks a running fleet, then checks the store.
#[derive(Debug, Parser)]
#[command(name = "nat-chaos", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// (internal) Simulated workers in their own process: inside the partition's network
    /// namespace or under libfaketime. Writes its counters to --stats-file every second.
    #[command(hide = true)]
    SimWorkers(SimArgs),
    /// (internal) The flood in its own process (so that it does not starve the simulated
    /// workers of the harness): one HTTP/2 connection, --concurrency calls in flight for
    /// --seconds; writes what it saw as JSON to --out.
    #[command(hide = true)]
    Flood(FloodArgs),
}

#[derive(Debug, clap::Args)]
struct FloodArgs {
    #[arg(long)]
    coordinator: String,
    #[arg(long)]
    concurrency: usize,
    #[arg(long)]
    seconds: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    #[arg(long)]
    coordinator: String,
    #[arg(long)]
    count: usize,
    #[arg(long)]
    hold_ms: u64,
    #[arg(long)]
    name: String,
    #[arg(long)]
    stats_file: PathBuf,
}

/// The run's flags. Unset sizes take the full run's values, or the reduced run's with --quick.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The reduced run (about 2 minutes on 2 cores): ~1,500 tasks, 40 simulated workers, 2 real
    /// workers, one of each attack, a 2 s leader lease.
    #[arg(long)]
    pub quick: bool,
    /// Coordinator processes on the one database (2+ needs leader election in the binary).
    #[arg(long, default_value_t = 2)]
    pub coordinators: usize,
    /// The nat-coordinator binary. Default: $CARGO_TARGET_DIR/release/nat-coordinator, else
    /// …/debug/nat-coordinator.
    #[arg(long)]
    pub coordinator_bin: Option<PathBuf>,
    /// The nat-worker binary (default: next to the coordinator's).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Real nat-worker processes (default 2: one in the partition's namespace, one under the
    /// jumping clock). 0 when nat-worker is not built: then simulated workers stand in.
    #[arg(long)]
    pub real_workers: Option<usize>,
    /// Simulated workers in this process (default 200; 40 with --quick).
    #[arg(long)]
    pub sim_workers: Option<usize>,
    /// Simulated workers in the partitioned namespace and under the jumping clock (each group).
    #[arg(long, default_value_t = 4)]
    pub side_sim_workers: usize,
    /// Evaluate tasks (architectures) to run, in jobs of at most 1024 (default 10240; 1536 with
    /// --quick).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Mean time a simulated worker holds a task, in ms (default 3500; 2000 with --quick).
    #[arg(long)]
    pub hold_ms: Option<u64>,
    /// Learning rounds (policy updates) of the optimize job (default 40; 16 with --quick).
    #[arg(long)]
    pub optimize_iterations: Option<u32>,
    /// Leader kills (default 3; 1 with --quick).
    #[arg(long)]
    pub leader_kills: Option<usize>,
    /// The coordinators' task lease, in seconds (a dead worker's task comes back after this).
    #[arg(long, default_value_t = 5.0)]
    pub lease_seconds: f64,
    /// Heartbeat interval asked of workers, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat_seconds: f64,
    /// Leases a task gets before it fails for good.
    #[arg(long, default_value_t = 6)]
    pub max_attempts: u32,
    /// The coordinators' leader lease, in seconds (their --leader-lease-seconds; default 5,
    /// the coordinator's own default; 2 with --quick).
    #[arg(long)]
    pub leader_lease_seconds: Option<f64>,
    /// The coordinators' HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per client connection (their
    /// --max-streams-per-connection): well below the flood's concurrency on purpose.
    #[arg(long, default_value_t = 256)]
    pub max_streams_per_connection: u32,
    /// Longest a leader takeover may take (the issue asks for 10 s).
    #[arg(long, default_value_t = 10.0)]
    pub max_takeover_seconds: f64,
    /// Every job must be final this many seconds after submission (default 1500; 400 with
    /// --quick).
    #[arg(long)]
    pub deadline: Option<u64>,
    /// Concurrent calls of the flood on its one connection (default 2000, far above the
    /// coordinators' --max-streams-per-connection).
    #[arg(long)]
    pub flood_concurrency: Option<usize>,
    /// How long the flood lasts, in seconds (default 10; 6 with --quick).
    #[arg(long)]
    pub flood_seconds: Option<u64>,
    /// Datasets of the real workers (digits is used).
    #[arg(long, env = "NAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL 15 server binaries.
    #[arg(long, default_value = pg::DEFAULT_PG_BIN)]
    pub pg_bin: PathBuf,
    /// Write the figures and the checks as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Leave these attacks out (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Attack>,
    /// Keep the run directory (logs, PostgreSQL data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nat-chaos: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::SimWorkers(args)) => rt.block_on(sim_workers(args)).map(|()| true),
        Some(Command::Flood(args)) => rt.block_on(flood(args)).map(|()| true),
        None => rt.block_on(run::main(cli.run)),
    };
    // Children were killed on drop; do not wait for stray blocking tasks.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("nat-chaos: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The `sim-workers` subprocess: runs the workers until SIGTERM/SIGINT, writing its counters
/// every second (atomically: a temporary file renamed).
async fn sim_workers(args: SimArgs) -> anyhow::Result<()> {
    let urls: Vec<String> = args
        .coordinator
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    anyhow::ensure!(!urls.is_empty(), "--coordinator: no URL");
    let mut fleet = sim::SimFleet::new(sim::SimConfig {
        urls,
        hold: Duration::from_millis(args.hold_ms),
        duplicate_probe_rate: 0.02,
        stale_probe_rate: 0.02,
        report_give_up: Duration::from_secs(120),
    });
    fleet.spawn(&args.name, args.count);
    let stats = fleet.stats.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => write_stats(&stats, &args.stats_file)?,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    fleet.stop().await;
    write_stats(&stats, &args.stats_file)
}

/// The `flood` subprocess: floods, then writes the result (atomically) to --out.
async fn flood(args: FloodArgs) -> anyhow::Result<()> {
    let result = flood::flood(
        &args.coordinator,
        args.concurrency,
        Duration::from_secs(args.seconds),
    )
    .await?;
    let tmp = args.out.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("rename to {}", args.out.display()))
}

fn write_stats(stats: &Arc<sim::SimStats>, file: &std::path::Path) -> anyhow::Result<()> {
    let doc = report::SideStats {
        counts: stats.counts(),
        stale_task_ids: stats
            .stale_tasks
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    };
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&doc)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("rename to {}", file.display()))
}
