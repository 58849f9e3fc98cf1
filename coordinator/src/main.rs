//! `nat-coordinator`: the control-plane server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use nat_coordinator::{Config, Coordinator, SystemClock};
use tokio::net::TcpListener;

/// The nat-orchestrator coordinator: serves jobs to users and tasks to workers over gRPC.
#[derive(Debug, Parser)]
#[command(name = "nat-coordinator", version)]
struct Cli {
    /// gRPC listen address (JobService, WorkerService, health, reflection). Port 0 picks one.
    #[arg(long, env = "NAT_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// HTTP listen address (/healthz).
    #[arg(long, env = "NAT_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Database URL: postgres://… or sqlite:PATH. Default: a SQLite file in --data-dir. A SQLite
    /// database serves one coordinator: a second one on the same file exits at start.
    #[arg(long, env = "NAT_DATABASE_URL")]
    database_url: Option<String>,
    /// PostgreSQL connection pool size (1..=1000; default 32). Ignored for SQLite.
    #[arg(long, env = "NAT_DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    database_max_connections: Option<u32>,
    /// Directory of the default SQLite database.
    #[arg(long, env = "NAT_COORDINATOR_DATA_DIR", default_value = "./.nat")]
    data_dir: PathBuf,
    /// Lease duration in seconds (a task returns to the queue this long after its worker's last
    /// heartbeat).
    #[arg(long, env = "NAT_LEASE_SECONDS", default_value_t = 60.0)]
    lease_seconds: f64,
    /// Heartbeat interval asked of workers, in seconds.
    #[arg(long, env = "NAT_HEARTBEAT_SECONDS", default_value_t = 10.0)]
    heartbeat_seconds: f64,
    /// Leases granted to a task before it fails for good.
    #[arg(long, env = "NAT_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Longest LeaseTask long-poll honoured, in milliseconds.
    #[arg(long, env = "NAT_MAX_LEASE_WAIT_MS", default_value_t = 5000)]
    max_lease_wait_ms: u64,
    /// How often expired leases are collected, in milliseconds.
    #[arg(long, env = "NAT_EXPIRY_INTERVAL_MS", default_value_t = 1000)]
    expiry_interval_ms: u64,
    /// Lease reservations, in milliseconds of demand: under load (over 100 leases/s for one
    /// kind of slot) the coordinator keeps about this much of the recent lease rate claimed
    /// ahead, so that LeaseTask is answered from memory. 0 turns reservations off.
    #[arg(long, env = "NAT_LEASE_RESERVE_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
    lease_reserve_ms: u64,
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, env = "NAT_LOG_FORMAT", value_enum, default_value_t)]
    log_format: nat_telemetry::LogFormat,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of seconds, got {v}"))
}

/// mimalloc instead of the system allocator: the gRPC and database paths allocate per request,
/// and glibc's malloc cost ~10 % of the process's CPU under load (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    nat_telemetry::init_logging(cli.log_format, "info").context("cannot set up logging")?;

    let config = Config {
        lease_duration: seconds("lease-seconds", cli.lease_seconds)?,
        heartbeat_interval: seconds("heartbeat-seconds", cli.heartbeat_seconds)?,
        max_attempts: cli.max_attempts,
        max_lease_wait: Duration::from_millis(cli.max_lease_wait_ms),
        expiry_interval: Duration::from_millis(cli.expiry_interval_ms),
        lease_reserve: Duration::from_millis(cli.lease_reserve_ms),
        ..Config::default()
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let database_url = match cli.database_url {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(&cli.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    cli.data_dir.display()
                )
            })?;
            format!("sqlite:{}", cli.data_dir.join("coordinator.db").display())
        }
    };
    let database_url = match cli.database_max_connections {
        Some(n) => nat_coordinator::with_max_connections(&database_url, n),
        None => database_url,
    };
    // Held until the process exits: a second coordinator on the same SQLite file is refused.
    let _sqlite_lock = lock_sqlite(&database_url)?;
    // Open the store (and run its migrations) before listening, so that the listening line
    // means "ready".
    let store = nat_store::connect(&database_url)
        .await
        .context("cannot open the database")?;
    tracing::info!(backend = store.backend(), "store open");
    let coordinator = Coordinator::new(store, Arc::new(SystemClock), config);
    let grpc = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let http = TcpListener::bind(cli.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.http_listen))?;
    // One machine-readable line on stdout, so scripts and tests can use port 0.
    println!(
        "listening grpc={} http={}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    nat_coordinator::serve(coordinator, grpc, Some(http), shutdown_signal())
        .await
        .context("coordinator failed")?;
    Ok(())
}

/// Takes an exclusive OS lock (`flock`) on the SQLite database file of `database_url`, so that
/// exactly one coordinator uses it; the lock goes with the returned file, i.e. when the process
/// exits, however it exits. `None` for PostgreSQL, where several coordinators may share a
/// database.
fn lock_sqlite(database_url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = nat_store::sqlite_file(database_url) else {
        return Ok(None);
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    }
    // An empty file is a valid new SQLite database, so creating it here is harmless.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(file)),
        Err(fs4::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "the SQLite database {} is held by another coordinator; SQLite allows one \
             coordinator per database (to run several, use PostgreSQL, once leader election lands)",
            path.display()
        )),
        Err(fs4::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock the SQLite database {}", path.display()))
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
