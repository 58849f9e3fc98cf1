//! `nat-coordinator`: the control-plane server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nat_coordinator::auth::{AuthMode, AuthSettings};
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
    /// PostgreSQL over TLS: `sslmode=require` (or `verify-full&sslrootcert=CA.pem`) in the URL.
    #[arg(long, env = "NAT_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// PostgreSQL connection pool size (1..=1000; default 32). Ignored for SQLite.
    #[arg(long, env = "NAT_DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    database_max_connections: Option<u32>,
    /// Directory of the default SQLite database.
    #[arg(
        long,
        env = "NAT_COORDINATOR_DATA_DIR",
        default_value = "./.nat",
        global = true
    )]
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
    /// Most concurrent calls one client connection may have open (HTTP/2 streams): bounds what
    /// one flooding client takes; compliant clients queue the rest. A fleet behind one proxy
    /// connection needs it above its number of worker slots.
    #[arg(long, env = "NAT_MAX_STREAMS_PER_CONNECTION", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_streams_per_connection: u32,
    /// This coordinator's name in the leader election among the coordinators of one
    /// PostgreSQL database; must be unique among them (default `<hostname>-<pid>`).
    #[arg(long, env = "NAT_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Leadership term in seconds: the leader renews it every fifth; when it stops (crash,
    /// partition, stall) another coordinator takes over this long after its last renewal.
    #[arg(long, env = "NAT_LEADER_LEASE_SECONDS", default_value_t = 5.0)]
    leader_lease_seconds: f64,
    /// Where supernet weights (one versioned document per optimize job in supernet mode, and
    /// the shards' uploads) are kept: empty or `database` = in the job database (works wherever the
    /// coordinator does); a directory path or `file://` URL; or an object-store URL
    /// (`s3://bucket/prefix`, `gs://…`, `az://…`; credentials from the usual AWS_/GOOGLE_/AZURE_
    /// variables).
    #[arg(long, env = "NAT_BLOB_URL", default_value = "")]
    blob_url: String,
    /// Largest supernet weights document a worker may upload, in MiB.
    #[arg(long, env = "NAT_MAX_SUPERNET_MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_supernet_mb: u64,
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, env = "NAT_LOG_FORMAT", value_enum, default_value_t)]
    log_format: nat_telemetry::LogFormat,
    #[command(flatten)]
    tls: nat_coordinator::tls::TlsArgs,
    /// How callers are authenticated: `none` (every call allowed; the coordinator then listens
    /// on loopback only unless --insecure) or `token` (bearer tokens with roles: create the
    /// first with `nat-coordinator token create --role admin`).
    #[arg(long, env = "NAT_AUTH", value_enum, default_value_t)]
    auth: AuthMode,
    /// With --auth none, listen on non-loopback addresses anyway: anyone who can reach the
    /// ports can submit and cancel jobs and report results. Logged as a warning on every start.
    #[arg(long, env = "NAT_INSECURE")]
    insecure: bool,
    /// Let `user` tokens read (not cancel) every job, not only their own; also opens the
    /// dashboard to them.
    #[arg(long, env = "NAT_USERS_READ_ALL")]
    users_read_all: bool,
    /// Serve /metrics without a token (for Prometheus scrapes on a trusted network).
    #[arg(long, env = "NAT_METRICS_PUBLIC")]
    metrics_public: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage API tokens directly in the database (bootstrap the first admin token; break-glass).
    /// Once an admin token exists, `natctl token …` does the same over gRPC.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret (shown once; only its hash is stored).
    Create {
        /// admin, user, viewer or worker.
        #[arg(long)]
        role: String,
        /// The identity behind the token (owner of the jobs it submits). Default: the role.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30d, 12h, 90m (default: never expires).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List tokens (newest first).
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id (effective at once).
    Revoke {
        /// Token id (from `token list`).
        id: String,
    },
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
    if let Some(Command::Token(cmd)) = cli.command {
        let database_url = database_url(cli.database_url, &cli.data_dir)?;
        return token_command(cmd, &database_url).await;
    }
    let tls = cli.tls.server_tls()?.map(Arc::new);
    check_exposure(cli.auth, cli.insecure, &[cli.listen, cli.http_listen])?;

    let database_url = database_url(cli.database_url, &cli.data_dir)?;
    let config = Config {
        lease_duration: seconds("lease-seconds", cli.lease_seconds)?,
        heartbeat_interval: seconds("heartbeat-seconds", cli.heartbeat_seconds)?,
        max_attempts: cli.max_attempts,
        max_lease_wait: Duration::from_millis(cli.max_lease_wait_ms),
        expiry_interval: Duration::from_millis(cli.expiry_interval_ms),
        lease_reserve: Duration::from_millis(cli.lease_reserve_ms),
        auth: AuthSettings {
            mode: cli.auth,
            users_read_all: cli.users_read_all,
            metrics_public: cli.metrics_public,
            worker_certs_required: cli.tls.tls_client_ca.is_some(),
        },
        leader_lease: seconds("leader-lease-seconds", cli.leader_lease_seconds)?,
        max_streams_per_connection: cli.max_streams_per_connection,
        max_supernet_bytes: cli.max_supernet_mb << 20,
        instance_id: match cli.instance_id {
            Some(id) => id,
            // With SQLite the coordinator is alone (it locks the file): a fixed name lets a
            // restart after a crash lead at once instead of waiting out the old term.
            None if !is_postgres(&database_url) => "sqlite".to_string(),
            None => nat_coordinator::config::default_instance_id(),
        },
        ..Config::default()
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
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
    let blobs = nat_store::connect_blobs(&*store, Some(&cli.blob_url))
        .with_context(|| format!("cannot open the blob store {:?}", cli.blob_url))?;
    tracing::info!(blobs = %blobs.describe(), "supernet weights store");
    let coordinator = Coordinator::new_with_blobs(store, Arc::new(SystemClock), config, blobs);
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
    let options = nat_coordinator::ServeOptions { tls };
    nat_coordinator::serve_with(coordinator, grpc, Some(http), options, shutdown_signal())
        .await
        .context("coordinator failed")?;
    Ok(())
}

/// The database URL: the given one, or a SQLite file in `data_dir` (created).
/// Whether `url` names a PostgreSQL database (else SQLite).
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn database_url(given: Option<String>, data_dir: &std::path::Path) -> anyhow::Result<String> {
    match given {
        Some(url) => Ok(url),
        None => {
            std::fs::create_dir_all(data_dir).with_context(|| {
                format!("cannot create the data directory {}", data_dir.display())
            })?;
            Ok(format!(
                "sqlite:{}",
                data_dir.join("coordinator.db").display()
            ))
        }
    }
}

/// Safe by default: without authentication the coordinator listens on loopback addresses only,
/// unless `--insecure` says otherwise (then it warns, on every start).
fn check_exposure(auth: AuthMode, insecure: bool, addrs: &[SocketAddr]) -> anyhow::Result<()> {
    if auth != AuthMode::None {
        tracing::info!(auth = ?auth, "authentication on");
        return Ok(());
    }
    let exposed: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    if exposed.is_empty() {
        tracing::info!(
            "no authentication (--auth none): listening on loopback only; use --auth token to \
             serve other hosts"
        );
        return Ok(());
    }
    if !insecure {
        anyhow::bail!(
            "refusing to listen on {} without authentication: anyone who reaches it could submit \
             and cancel jobs and report results. Use --auth token (see `nat-coordinator token \
             create`), or --insecure on a network you trust",
            exposed.join(", ")
        );
    }
    tracing::warn!(
        addresses = %exposed.join(", "),
        "INSECURE: no authentication on non-loopback addresses (--insecure): anyone who reaches \
         them can submit and cancel jobs and report results"
    );
    Ok(())
}

/// `nat-coordinator token …`: straight to the database (no server needed).
async fn token_command(cmd: TokenCommand, database_url: &str) -> anyhow::Result<()> {
    let store = nat_store::connect(database_url)
        .await
        .context("cannot open the database")?;
    let now = chrono::Utc::now();
    match cmd {
        TokenCommand::Create {
            role,
            name,
            expires,
        } => {
            let role: nat_store::Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let name = name.unwrap_or_else(|| role.as_str().to_string());
            let seconds = expires.map(|d| d.as_secs().max(1)).unwrap_or(0);
            let (token, secret) =
                nat_coordinator::auth::tokens::create(&*store, role, &name, seconds, None, now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created {} token {} ({}){}; store the secret now, it is not shown again:",
                token.role,
                token.id,
                token.name,
                token
                    .expires_at
                    .map(|t| format!(", expires {}", t.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{secret}");
        }
        TokenCommand::List { all } => {
            let tokens = store.list_tokens(all).await?;
            println!(
                "{:<36}  {:<20}  {:<6}  {:<25}  {:<25}  REVOKED",
                "ID", "NAME", "ROLE", "CREATED", "EXPIRES"
            );
            for t in tokens {
                let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<25}  {:<25}  {}",
                    t.id,
                    t.name,
                    t.role,
                    ts(Some(t.created_at)),
                    ts(t.expires_at),
                    ts(t.revoked_at)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let id: uuid::Uuid = id
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{id:?} is not a token id"))?;
            let token = store.revoke_token(id, now).await?;
            eprintln!("revoked token {} ({})", token.id, token.name);
        }
    }
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
             coordinator per database (to run several, with a leader elected among them, use PostgreSQL)",
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
