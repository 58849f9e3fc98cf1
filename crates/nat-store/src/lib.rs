//! Durable storage of nat-orchestrator: jobs, tasks and their leases, workers, reward
//! estimates, policy checkpoints and samples, and the per-job event log.
//!
//! # Layout
//! - [`types`]: the domain types (re-exported at the root); `types/policy.rs` holds the reward
//!   and policy types. [`error`]: [`StoreError`].
//! - [`store`]: the traits, one per concern, each in its own file: [`JobStore`] (jobs and
//!   tasks), [`LeaseStore`] (workers, heartbeats, leases, reservations, reports), [`EventStore`]
//!   (the event log), [`PolicyStore`] (reward estimates, checkpoints, samples, policy updates),
//!   [`SupernetStore`] (the versions of a job's supernet weights, cancelling single tasks),
//!   [`TokenStore`] (API tokens), [`LeaderStore`] (leader election among coordinators), and
//!   [`Store`], all of them plus `backend()`: the one object-safe trait the coordinator holds
//!   as `Arc<dyn Store>`. [`prelude`] re-exports the traits (`use nat_store::prelude::*;`).
//! - `logic/`: backend-independent rules. `validate.rs` (input checks, shared by both
//!   backends), `account.rs` (a job's counters, `all_tasks` completion, events and their
//!   sequence numbers, the end of a job, expiry accounting), `report.rs` (the one decision of a
//!   report: lease check, duplicate, transition; see below), `fencing.rs` (a new lease's token).
//! - [`PgStore`] (PostgreSQL, for clusters) in `pg/`: `mod.rs` (connection, pool size),
//!   `rows.rs` (row decoders and column lists), `sql.rs` (the claim and report statements and
//!   the fragments they share: the Welford upsert, the job accounting, the `job_finished`
//!   event), `jobs.rs`, `leases.rs`, `reports.rs`, `events.rs`, `policy.rs` (one trait each;
//!   `leader.rs`, `tokens.rs`; `reports.rs` holds the report paths of [`LeaseStore`]).
//! - [`SqliteStore`] (the embedded default) in `sqlite/`, the same files but `sql.rs` (its
//!   statements sit with their one user).
//! - [`connect`]: opens either from one URL and runs the embedded migrations
//!   (`migrations/postgres`, `migrations/sqlite` at the workspace root).
//! - [`blob`]: [`BlobStore`], where supernet weights live: [`DbBlobs`] (the store's database,
//!   [`Store::database_blobs`]) or [`ObjectBlobs`] (a directory or an object-store URL);
//!   [`connect_blobs`] picks one from a setting.
//!
//! # Decisions
//! - **Time is a parameter.** Nothing reads the clock; every method that depends on time takes
//!   `now`, so lease expiry is tested with a paused clock and no sleeping. The one exception is
//!   [`LeaderStore`]: terms are timed by the database's clock, shared by every coordinator.
//!   ([`DbBlobs`] stamps a blob's `created_at` with the clock; nothing decides on it.)
//! - **One transaction per transition.** A report updates the task, the job counters, the reward
//!   estimates, the sample rewards, the event log and (for `all_tasks` jobs) the job's final
//!   state atomically, so a crash at any point loses nothing and counts nothing twice.
//! - **Leases with fencing tokens.** Each lease raises the task's `lease_token` by 1 plus a
//!   random 40-bit amount drawn by the database from a cryptographically strong source
//!   (PostgreSQL `gen_random_uuid()`, SQLite's ChaCha20 `random()`), so tokens are positive and
//!   strictly increasing per task but the next one cannot be guessed from the current one (a
//!   reservation's token is a capability). Past 2^62 (at least 4 million leases of one task)
//!   the random part is dropped, so a token never overflows (`logic/fencing.rs`). A report
//!   must carry the current token and come from the lease's worker. The token of an accepted
//!   report is remembered (`reported_token`) so that the same report again is answered
//!   `Duplicate` without counting it twice, while a late report of an *expired* lease (never
//!   accepted) is rejected as stale.
//! - **Claiming in one statement.** A task is claimable when `next_claim_at <= now`:
//!   `next_claim_at` is the time a `ready` task became ready, or the lease expiry of a `leased`
//!   task that has attempts left, and NULL otherwise. One partial index
//!   `(job_id, next_claim_at, seq) WHERE next_claim_at IS NOT NULL` therefore serves both ready
//!   tasks and expired leases; the claim walks active jobs by (priority desc, last served asc)
//!   and takes the first claimable matching task of the first job that has one. On PostgreSQL
//!   this is one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` statement; on SQLite, whose
//!   writers are serialized, one `UPDATE … WHERE id = (SELECT …) RETURNING`.
//! - **Hot path on PostgreSQL.** A lease is one statement. It marks the job served with
//!   `SKIP LOCKED`, so it never waits on a busy job row (round robin is exact when uncontended,
//!   approximate under contention). A report is one read plus ONE statement that checks the
//!   token, updates the task, upserts the reward estimates, updates the job counters, finishes
//!   an `all_tasks` job and appends the events. The job row is never held across a client
//!   round trip. Reports carrying sample rewards use an explicit transaction.
//!   [`LeaseStore::lease_tasks`] / [`LeaseStore::report_results`] batch many slots into one transaction
//!   (one WAL flush; the coordinator gathers concurrent LeaseTask / ReportResult calls into
//!   them). A batched lease is ONE statement per group of slots with equal capabilities: jobs in
//!   scheduling order, each job's claimable tasks scanned with `FOR UPDATE SKIP LOCKED` inside
//!   the scan (a row locked by a concurrent claim is skipped and the scan goes on, so a claim
//!   never comes back empty while unlocked claimable rows exist), the n-th task to the n-th
//!   slot. A batched report is one read (decisions in Rust) plus ONE statement: task updates
//!   guarded by (state, token, worker), reward observations folded per key then merged with
//!   Chan's parallel Welford update, one counters/completion update per job (job rows locked in
//!   id order, after the task rows), events numbered per job in batch order; items that raced
//!   (task changed since the read) and reports with sample rewards go through the single path.
//!   Pool size: `?max_connections=N` in the URL (default 32).
//! - **One decision per report.** Every report path (PostgreSQL's one-statement path, its
//!   in-transaction path and its batch path; SQLite's) reads the task's lease state, calls the
//!   same pure function (`logic::report::decide_report`: stale or foreign lease, duplicate via
//!   `reported_token`, cancelled job, done / failed / requeued) and writes what it decided. The
//!   Welford update of reward estimates is written once per backend (on PostgreSQL one
//!   `ON CONFLICT` fragment, Chan's merge, which for one observation is bit for bit the
//!   sequential update), and so is the SQL job accounting of the report statements.
//! - **Reservations.** A [`LeaseRequest`] without a worker claims a task like any lease (attempt,
//!   token, expiry) with `leased_by` NULL: the coordinator hands it out later from memory and
//!   records the worker with [`LeaseStore::assign_leases`] (one statement for many, `SKIP LOCKED`, so it
//!   never waits for or deadlocks with a report of the same row). Until then a report, progress or
//!   heartbeat carrying the token is accepted from any worker and records it (the token is the
//!   capability). [`LeaseStore::release_leases`] / [`LeaseStore::release_unassigned_leases`] give unused
//!   ones back with their attempt (the token stays spent); cancelling or finishing a job withdraws
//!   them with its ready tasks. The `tasks_leased_by` index leaves NULL out (migration 0003), so
//!   statements that pick reservations by id and token use the primary key.
//! - **Dataset matching.** `tasks.dataset` is generated from the payload's top-level `"dataset"`
//!   (migration 0002); a [`LeaseRequest`] listing datasets gets only tasks on one of them or on
//!   none (an empty list means unknown: no filtering). [`LeaseStore::lease_task`] does not filter.
//! - **Lock order** on PostgreSQL is tasks, then the job row, then samples. The one exception,
//!   cancelling/finishing a job, takes the job row first and then withdraws ready tasks with
//!   `SKIP LOCKED`, so it never waits for a task lock. Transitions therefore cannot deadlock.
//! - **Event sequence numbers** are allocated from a counter on the job row inside the
//!   transition's transaction, so per-job `seq` is gap-free and in commit order: a reader that
//!   saw `seq = n` never later finds an event `< n` appear.
//! - **SQLite** runs in WAL mode with `busy_timeout`, foreign keys on and `synchronous=NORMAL`
//!   (durable across process crashes, which is what `kill -9` tests). Writes go through one
//!   connection (SQLite has one writer anyway), reads through a small pool. Timestamps are
//!   stored as integer microseconds since the epoch so that comparisons are numeric.
//! - **Supernet versions** ([`SupernetStore`]) are a per-job sequence 1, 2, 3, … committed in one
//!   transaction with the rewards of the round's samples (first reward wins, as everywhere), at
//!   most one version per round (a round committed again answers the stored version and changes
//!   nothing), fenced by the leadership term like policy updates. The weights are a blob named
//!   by the version row, stored by the caller before it commits the row, so a committed version
//!   never names a missing blob (a blob whose commit failed is garbage, deleted by prefix).
//! - **Errors** never carry database text: see [`StoreError`].

pub mod blob;
pub mod error;
mod logic;
mod pg;
mod sqlite;
pub mod store;
pub mod types;

use std::path::Path;
use std::sync::Arc;

pub use blob::{connect_blobs, BlobStore, DbBlobs, ObjectBlobs};
pub use error::{Entity, Result, StoreError};
pub use pg::PgStore;
pub use sqlite::SqliteStore;
pub use store::{
    EventStore, JobStore, LeaderStore, LeaseStore, PolicyStore, Store, SupernetStore, TokenStore,
    POLICY_CHECKPOINTS_KEPT,
};
pub use types::*;

/// The store traits, for callers: `use nat_store::prelude::*;` makes every method callable on
/// `Arc<dyn Store>` (each method is declared by one of the traits [`Store`] combines) and on
/// `Arc<dyn BlobStore>`.
pub mod prelude {
    pub use crate::blob::BlobStore;
    pub use crate::store::{
        EventStore, JobStore, LeaderStore, LeaseStore, PolicyStore, Store, SupernetStore,
        TokenStore,
    };
}

/// Opens the store named by `url` and runs its migrations.
///
/// - `postgres://…` or `postgresql://…`: PostgreSQL, over TLS as its `sslmode`, `sslrootcert`,
///   `sslcert` and `sslkey` parameters say (see [`PgStore::connect`]).
/// - `sqlite:PATH`, `sqlite://PATH` or a bare path: SQLite; the file and its parent directory are
///   created if missing. `sqlite::memory:` is refused (a coordinator must be durable).
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    let url = url.trim();
    if url.is_empty() {
        return Err(StoreError::invalid("database_url", "must not be empty"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::connect(url).await?));
    }
    let path = sqlite_path(url)?;
    Ok(Arc::new(SqliteStore::open(Path::new(path)).await?))
}

/// The database file named by a SQLite `url` (as [`connect`] reads it); `None` for PostgreSQL
/// and for a URL that [`connect`] refuses.
pub fn sqlite_file(url: &str) -> Option<&Path> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    sqlite_path(url).ok().map(Path::new)
}

/// Extracts the file path of a SQLite URL (or bare path).
fn sqlite_path(url: &str) -> Result<&str> {
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains("://") {
        return Err(StoreError::invalid(
            "database_url",
            "unsupported scheme (use postgres://, postgresql://, sqlite: or a file path)",
        ));
    } else {
        url
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::invalid(
            "database_url",
            "a SQLite database needs a file path",
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite:/tmp/a.db").ok(), Some("/tmp/a.db"));
        assert_eq!(sqlite_path("sqlite:///tmp/a.db").ok(), Some("/tmp/a.db"));
        assert_eq!(
            sqlite_path("sqlite://data/a.db?mode=rwc").ok(),
            Some("data/a.db")
        );
        assert_eq!(sqlite_path("data/nat.db").ok(), Some("data/nat.db"));
        assert!(matches!(
            sqlite_path("sqlite::memory:"),
            Err(StoreError::InvalidArgument { field, .. }) if field == "database_url"
        ));
        assert!(matches!(
            sqlite_path("mysql://x"),
            Err(StoreError::InvalidArgument { field, .. }) if field == "database_url"
        ));
    }
}
