//! PostgreSQL backend: [`PgStore`]. One file per concern: [`rows`] (row decoders), [`sql`]
//! (the shared and hot-path statements), `jobs`, `leases`, `reports`, `events`, `policy` (the
//! trait implementations and their helpers).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use sqlx::Connection;

use crate::error::{Result, StoreError};
use crate::store::Store;

mod events;
mod jobs;
mod leader;
mod leases;
mod policy;
mod reports;
mod rows;
mod sql;
mod supernet;
mod tokens;

const NAME: &str = "postgres";

/// How long opening a connection may take (the pool's acquire timeout, the `allow` probe).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server ends a session that sits this long inside a transaction without sending the next
/// statement (`idle_in_transaction_session_timeout`). Our transactions send their statements
/// back to back; a session idle that long belongs to a stalled process (SIGSTOP, a frozen VM, a
/// partition), whose row locks would otherwise block every coordinator sharing the database
/// until it wakes. A URL that sets the parameter itself (`options=-c …`) keeps its value.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Leader election's own connections ([`LeaderStore`](crate::LeaderStore)): a term is
    /// renewed even while the main pool is saturated by workers' calls, so load does not depose
    /// a healthy leader.
    control: PgPool,
}

/// Connections of the leader-election pool: one for the rounds, one kept by the `LISTEN` of
/// work announcements, one spare.
const CONTROL_CONNECTIONS: u32 = 3;

impl PgStore {
    /// Connects to `url` (`postgres://…`) and runs the migrations. The pool size defaults to
    /// [`PgStore::DEFAULT_MAX_CONNECTIONS`] and can be set with a `max_connections=N` URL query
    /// parameter (removed before the URL reaches the driver).
    ///
    /// TLS follows libpq's URL parameters: `sslmode` (`disable`, `allow`, `prefer` (the
    /// default), `require`, `verify-ca`, `verify-full`), `sslrootcert` (PEM file of the CA(s) to
    /// trust besides the bundled web PKI roots), and `sslcert` + `sslkey` (PEM client certificate
    /// and key, for `cert` authentication); also the `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`
    /// and `PGSSLKEY` environment variables. Only `verify-ca` and `verify-full` check the server's
    /// certificate (`verify-full` also its name); use `verify-full` across untrusted networks.
    /// `allow` is decided once here: without TLS if the server accepts that, else with TLS.
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, max) = split_max_connections(url)?;
        Self::connect_with_pool_size(&url, max.unwrap_or(Self::DEFAULT_MAX_CONNECTIONS)).await
    }

    /// Default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;

    /// Connects with a pool of at most `max_connections` connections (1..=1000).
    pub async fn connect_with_pool_size(url: &str, max_connections: u32) -> Result<Self> {
        if !(1..=1000).contains(&max_connections) {
            return Err(StoreError::invalid(
                "max_connections",
                "must be in 1..=1000",
            ));
        }
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::invalid("database_url", "not a valid PostgreSQL URL"))?;
        let options = if url.contains("idle_in_transaction_session_timeout") {
            options
        } else {
            options.options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            )])
        };
        let options = resolve_allow(options).await;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let control = PgPoolOptions::new()
            .max_connections(CONTROL_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool, control })
    }

    /// Uses an existing pool (for leader election too) and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            control: pool.clone(),
            pool,
        })
    }

    /// The underlying pool (for tests and benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `BEGIN` in a task of its own. sqlx 0.8.6 returns a connection to the pool *inside* a
    /// server-side transaction when a `begin()` future is dropped while its BEGIN is in flight
    /// (launchbadge/sqlx#2805): a cancelled gRPC call or a timeout around a store call then leaves
    /// a connection whose every later statement runs in one transaction nobody commits, holding
    /// its locks (seen by the chaos suite: deadlocks, no leader). Spawned, BEGIN always
    /// completes; a transaction whose caller is gone is dropped by the task, i.e. rolled back.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let pool = self.pool.clone();
        Ok(tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(StoreError::backend)??)
    }
}

/// Removes a `max_connections=N` query parameter from a PostgreSQL URL.
fn split_max_connections(url: &str) -> Result<(String, Option<u32>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut max = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("max_connections", v)) => {
                max = Some(v.parse::<u32>().map_err(|_| {
                    StoreError::invalid("max_connections", "must be a positive integer")
                })?);
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, max))
}

/// libpq's `sslmode=allow` (try without TLS, then with TLS), which sqlx treats as `disable`:
/// one connection without TLS is tried, and if it fails (e.g. `pg_hba.conf` accepts only
/// `hostssl`, or it takes over [`CONNECT_TIMEOUT`]) the pool uses `require`. Decided once, when
/// the store opens. Other modes are returned unchanged.
async fn resolve_allow(options: PgConnectOptions) -> PgConnectOptions {
    if !matches!(options.get_ssl_mode(), PgSslMode::Allow) {
        return options;
    }
    let plain = options.clone().ssl_mode(PgSslMode::Disable);
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&plain)).await;
    match probe {
        Ok(Ok(conn)) => {
            if let Err(err) = conn.close().await {
                tracing::debug!(error = %err, "closing the sslmode=allow probe connection");
            }
            plain
        }
        Ok(Err(err)) => {
            tracing::info!(
                error = %err,
                "sslmode=allow: connecting without TLS failed; using TLS (sslmode=require)"
            );
            options.ssl_mode(PgSslMode::Require)
        }
        Err(_) => {
            tracing::info!(
                "sslmode=allow: connecting without TLS timed out; using TLS (sslmode=require)"
            );
            options.ssl_mode(PgSslMode::Require)
        }
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    fn database_blobs(&self) -> std::sync::Arc<dyn crate::blob::BlobStore> {
        std::sync::Arc::new(crate::blob::DbBlobs::postgres(self.pool.clone()))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_is_taken_out_of_the_url() {
        let (url, max) = split_max_connections("postgres://h/db?max_connections=8&sslmode=disable")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (url.as_str(), max),
            ("postgres://h/db?sslmode=disable", Some(8))
        );
        let (url, max) = split_max_connections("postgres://h/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((url.as_str(), max), ("postgres://h/db", None));
    }

    #[test]
    fn tls_parameters_survive_the_pool_size_parameter() {
        let given = "postgres://u:p%3Fw@h:5433/db?sslmode=verify-full&max_connections=4\
                     &sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&sslcert=/c/client.pem&sslkey=/c/client.key";
        let (url, max) = split_max_connections(given).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(max, Some(4));
        assert_eq!(
            url,
            "postgres://u:p%3Fw@h:5433/db?sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&sslcert=/c/client.pem&sslkey=/c/client.key"
        );
        let options: PgConnectOptions = url.parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(options.get_host(), "h");
        assert_eq!(options.get_port(), 5433);
        // The certificate paths are honoured (the driver's options keep them, as its URL).
        let debug = format!("{options:?}");
        for path in ["/etc/ca dir/ca.pem", "/c/client.pem", "/c/client.key"] {
            assert!(debug.contains(path), "{path} missing from {debug}");
        }
    }
}
