//! [`LeaderStore`]: leader election among coordinators that share one database.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::types::*;

/// Leader election through a lease row per leadership name. The conventions of every method
/// are those of [`Store`](super::Store), with one exception: time is the **database's** clock
/// (PostgreSQL `clock_timestamp()`; SQLite, which serves one process, the process clock), so
/// that a coordinator whose clock jumps cannot stretch or shorten a term.
#[async_trait]
pub trait LeaderStore: Send + Sync {
    /// One election round for `holder` (an instance id, unique among live coordinators):
    /// - `held = Some(epoch)`: renews the term `epoch` for `ttl` if `holder` still holds it and
    ///   it has not expired. A term that was lost is **not** taken again in the same call: the
    ///   caller steps down first, then may claim a new term.
    /// - `held = None`: takes a new term (epoch + 1, or 1 for a new row) for `ttl` if the row is
    ///   absent, expired, or held by `holder` itself (a restarted process with the same id).
    ///
    /// Returns the row after the round; [`Leadership::held_by`] tells whether `holder` leads.
    async fn claim_leadership(
        &self,
        name: &str,
        holder: &str,
        held: Option<i64>,
        ttl: Duration,
    ) -> Result<Leadership>;

    /// The leadership row of `name`, `None` if nobody ever held it.
    async fn leadership(&self, name: &str) -> Result<Option<Leadership>>;

    /// Ends the term `epoch` of `holder` now (a clean shutdown), so another coordinator takes
    /// over at its next round instead of after the lease. Returns whether the term was ended.
    async fn resign_leadership(&self, name: &str, holder: &str, epoch: i64) -> Result<bool>;

    /// Tells the other coordinators of the database that tasks became claimable, so that their
    /// long-polling workers look now instead of at the end of their poll (PostgreSQL: `NOTIFY`
    /// on the channel [`WORK_CHANNEL`] with `from`, the announcer's instance id). SQLite, which
    /// has one coordinator: nothing.
    async fn announce_work(&self, from: &str) -> Result<()>;

    /// Listens to [`LeaderStore::announce_work`] of every coordinator (its own included);
    /// `None` where there is nobody else to hear (SQLite).
    async fn work_announcements(&self) -> Result<Option<Box<dyn WorkListener>>>;
}

/// The PostgreSQL notification channel of [`LeaderStore::announce_work`].
pub const WORK_CHANNEL: &str = "nat_work";

/// Announcements of work (see [`LeaderStore::work_announcements`]).
#[async_trait]
pub trait WorkListener: Send {
    /// The next announcement's sender, or `None` when the connection was lost (and is
    /// re-established on the next call): announcements may have been missed meanwhile.
    async fn next(&mut self) -> Result<Option<String>>;
}

/// Checks the arguments of [`LeaderStore::claim_leadership`].
pub(crate) fn validate_claim(name: &str, holder: &str, ttl: Duration) -> Result<()> {
    use crate::error::StoreError;
    if name.is_empty() || name.len() > limits::MAX_TEXT_LEN {
        return Err(StoreError::invalid("name", "must be 1 to 4096 bytes"));
    }
    if holder.is_empty() || holder.len() > limits::MAX_TEXT_LEN {
        return Err(StoreError::invalid("holder", "must be 1 to 4096 bytes"));
    }
    if ttl < Duration::from_millis(100) || ttl > Duration::from_secs(3600) {
        return Err(StoreError::invalid(
            "ttl",
            "must be between 100 ms and one hour",
        ));
    }
    Ok(())
}
