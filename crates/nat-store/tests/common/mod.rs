//! Test databases for the contract suite: a SQLite file in a temp dir, or a fresh PostgreSQL
//! database per test (created on `NAT_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, and dropped at the end).

#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use nat_store::{connect, Store};
use sqlx::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database a test may open several times (to test reopening).
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Opens (connects and migrates) the store.
    pub async fn open(&self) -> Arc<dyn Store> {
        match connect(&self.url).await {
            Ok(store) => store,
            Err(err) => panic!("cannot open test store {}: {err:#?}", self.url),
        }
    }
}

fn pg_admin_url() -> String {
    std::env::var("NAT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// `base` with its database name replaced by `db`.
fn with_database(base: &str, db: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (base, None),
    };
    let scheme_end = main.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

async fn admin_connection(admin: &str) -> sqlx::PgConnection {
    match sqlx::PgConnection::connect(admin).await {
        Ok(c) => c,
        Err(err) => panic!(
            "PostgreSQL is not reachable at {admin} ({err}). The PostgreSQL contract tests need \
             a running server: start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` \
             or point NAT_TEST_PG_URL at one."
        ),
    }
}

/// Runs `test` against a fresh PostgreSQL database, dropping it afterwards (also on failure).
pub async fn with_pg<F, Fut>(test: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin = pg_admin_url();
    let name = format!("nat_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin_connection(&admin).await;
    let mut attempts = 0;
    loop {
        match sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => break,
            // Concurrent CREATE DATABASE from parallel tests can collide on template1.
            Err(err) if attempts < 20 => {
                attempts += 1;
                eprintln!("retrying CREATE DATABASE {name}: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(err) => panic!("cannot create test database {name}: {err}"),
        }
    }
    let db = Arc::new(TestDb {
        url: with_database(&admin, &name),
        _dir: None,
    });
    let outcome = AssertUnwindSafe(test(db.clone())).catch_unwind().await;
    // Every store opened by the test is dropped by now; FORCE closes lingering pool connections.
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err);
    }
    if let Err(err) = dropped {
        panic!("cannot drop test database {name}: {err}");
    }
}

/// Runs `test` against a SQLite file in a fresh temp dir (in a sub-directory that does not
/// exist yet, to exercise its creation).
pub async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data").join("nat.db");
    let db = Arc::new(TestDb {
        url: format!("sqlite:{}", path.display()),
        _dir: Some(dir),
    });
    test(db).await;
}

/// Declares one contract test run against both backends: `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::common::with_sqlite(|db| async move { super::$name(db).await }).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::with_pg(|db| async move { super::$name(db).await }).await;
            }
        }
    };
}

#[test]
fn database_name_is_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
