//! The store's traits, split by concern: [`JobStore`] (jobs and tasks), [`LeaseStore`]
//! (workers, leases, reports), [`EventStore`] (the event log), [`PolicyStore`] (reward
//! estimates and policies), [`SupernetStore`] (supernet versions, cancelling single tasks),
//! [`TokenStore`] (API tokens) and [`LeaderStore`] (leader election). [`Store`] is all of them: the one object-safe trait the coordinator
//! holds as `Arc<dyn Store>`. Calling a method on it needs the trait that declares it in scope:
//! `use nat_store::prelude::*;`.

mod events;
mod jobs;
mod leader;
mod leases;
mod policy;
mod supernet;
mod tokens;

pub use events::EventStore;
pub use jobs::JobStore;
pub(crate) use leader::validate_claim;
pub use leader::{LeaderStore, WorkListener, WORK_CHANNEL};
pub use leases::LeaseStore;
pub use policy::{PolicyStore, POLICY_CHECKPOINTS_KEPT};
pub use supernet::SupernetStore;
pub(crate) use tokens::validate_new_token;
pub use tokens::TokenStore;

use std::sync::Arc;

use crate::blob::BlobStore;
#[cfg(doc)]
use crate::error::StoreError;

/// Durable state of the orchestrator. Object safe: the coordinator holds `Arc<dyn Store>`.
///
/// Conventions shared by every method:
/// - Time is never read from the clock: methods that depend on it take `now`, so tests drive a
///   paused clock.
/// - Every state transition is one database transaction: either all its effects (task and job
///   state, counters, reward estimates, sample rewards, events) are durable or none is.
/// - Errors: [`StoreError::NotFound`] for unknown ids,
///   [`StoreError::FailedPrecondition`] for wrong states
///   and stale/foreign lease tokens, [`StoreError::InvalidArgument`]
///   naming the field, [`StoreError::Conflict`] for lost optimistic
///   races. In all these cases nothing was changed.
///
/// Every method of the seven traits is callable on `dyn Store` (with the traits in scope).
#[async_trait::async_trait]
pub trait Store:
    JobStore
    + LeaseStore
    + EventStore
    + PolicyStore
    + SupernetStore
    + TokenStore
    + LeaderStore
    + Send
    + Sync
    + 'static
{
    /// Which backend this is: `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// The blob store kept in this database (the `blobs` and `blob_chunks` tables, through this
    /// store's connections): the default home of a job's supernet weights. See
    /// [`connect_blobs`](crate::connect_blobs) for choosing between it and an object store.
    fn database_blobs(&self) -> Arc<dyn BlobStore>;

    /// One round trip to the database (`SELECT 1`): `Ok` when it answers. Readiness checks
    /// call it; bound it with a timeout (a pool waiting for a connection can take long).
    async fn ping(&self) -> crate::error::Result<()>;
}
