//! What the coordinator examples (`scale_job`, `supernet_round`) share: the database they run on,
//! the process's CPU seconds split from the fake workers' thread, and a fake worker's connection
//! and capabilities. Included by each with `#[path = "support/mod.rs"] mod support;`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nat_proto::v1;
use tonic::transport::Channel;

/// The admin database of the local PostgreSQL (user `postgres`, trust auth).
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Name of the thread the fake workers run on.
pub const CLIENT_THREAD: &str = "fake-workers";

/// The database behind the run, and how to measure and drop it.
pub struct Database {
    pub url: String,
    pg_name: Option<String>,
    sqlite_path: Option<std::path::PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    /// `database`: a URL to use as is; else `postgres`: a fresh database `{prefix}_<random>` on
    /// 127.0.0.1:5432 (dropped by [`Database::drop_it`]); else a SQLite file in a temp dir.
    pub async fn open(database: Option<&str>, postgres: bool, prefix: &str) -> Result<Database> {
        use sqlx::Connection;
        if let Some(url) = database {
            return Ok(Database {
                url: url.to_string(),
                pg_name: None,
                sqlite_path: url.strip_prefix("sqlite:").map(Into::into),
                _dir: None,
            });
        }
        if postgres {
            let name = format!("{prefix}_{:016x}", rand::random::<u64>());
            let mut conn = sqlx::PgConnection::connect(PG_ADMIN_URL)
                .await
                .context("PostgreSQL on 127.0.0.1:5432 (user postgres)")?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let _ = conn.close().await;
            return Ok(Database {
                url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                pg_name: Some(name),
                sqlite_path: None,
                _dir: None,
            });
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("nat.db");
        Ok(Database {
            url: format!("sqlite:{}", path.display()),
            pg_name: None,
            sqlite_path: Some(path),
            _dir: Some(dir),
        })
    }

    /// Bytes on disk (SQLite: the file and its WAL) or `pg_database_size`.
    pub async fn size(&self) -> Option<u64> {
        use sqlx::Connection;
        if let Some(path) = &self.sqlite_path {
            let mut total = 0;
            for suffix in ["", "-wal", "-shm"] {
                let p = format!("{}{suffix}", path.display());
                total += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            }
            return Some(total);
        }
        let mut conn = sqlx::PgConnection::connect(&self.url).await.ok()?;
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await
            .ok()?;
        let _ = conn.close().await;
        u64::try_from(size).ok()
    }

    pub async fn drop_it(self) {
        use sqlx::Connection;
        if let Some(name) = &self.pg_name {
            if let Ok(mut conn) = sqlx::PgConnection::connect(PG_ADMIN_URL).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }
}

/// CPU seconds of the whole process and of the fake workers' threads.
pub fn cpu_seconds() -> Result<(f64, f64)> {
    // USER_HZ: 100 ticks per second on every supported Linux platform.
    const TICKS: f64 = 100.0;
    let fields = |text: &str| -> Result<f64> {
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("stat without ')'"))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11).ok_or_else(|| anyhow!("utime"))?.parse()?;
        let stime: f64 = f.get(12).ok_or_else(|| anyhow!("stime"))?.parse()?;
        Ok((utime + stime) / TICKS)
    };
    let process = fields(&std::fs::read_to_string("/proc/self/stat")?)?;
    let mut client = 0.0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let dir = entry?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == CLIENT_THREAD {
            // A thread that just ended has no stat any more: it counts nothing.
            if let Ok(stat) = std::fs::read_to_string(dir.join("stat")) {
                client += fields(&stat)?;
            }
        }
    }
    Ok((process, client))
}

pub async fn connect(url: &str) -> Result<Channel> {
    let endpoint = Channel::from_shared(url.to_string())?;
    for _ in 0..100 {
        if let Ok(ch) = endpoint.connect().await {
            return Ok(ch);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("cannot connect to {url}")
}

pub fn capabilities(version: &str) -> v1::WorkerCapabilities {
    v1::WorkerCapabilities {
        devices: vec![v1::Device {
            kind: v1::DeviceKind::Cpu as i32,
            index: 0,
            model: "fake cpu".into(),
            memory_bytes: 0,
            name: "cpu".into(),
        }],
        cpu_cores: 1,
        slots: 1,
        version: version.into(),
        hostname: "localhost".into(),
        datasets: vec![],
        dataset_infos: vec![],
    }
}
