//! Leader election among the coordinators of one database (re-exported by [`types`](super)).

use chrono::{DateTime, Utc};

/// The leadership the coordinators elect under: its holder runs the job drivers, the policy
/// updates and the lease sweep.
pub const COORDINATOR_LEADERSHIP: &str = "coordinator";

/// A leadership row: who holds the term, which term it is, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The leadership's name, e.g. [`COORDINATOR_LEADERSHIP`].
    pub name: String,
    /// The instance id of the holder.
    pub holder: String,
    /// The term: one more with every new holder or new term of the same holder. Writes that
    /// must not come from a deposed leader carry it (see
    /// [`NewCheckpoint::leader_epoch`](crate::NewCheckpoint::leader_epoch)).
    pub epoch: i64,
    /// When this term began.
    pub acquired_at: DateTime<Utc>,
    /// The holder's last renewal.
    pub renewed_at: DateTime<Utc>,
    /// The term ends then unless renewed; after it anyone may take a new term.
    pub expires_at: DateTime<Utc>,
    /// Whether the term had not expired when the row was read (by the database's clock).
    pub live: bool,
}

impl Leadership {
    /// Whether `holder` holds a live term.
    pub fn held_by(&self, holder: &str) -> bool {
        self.live && self.holder == holder
    }
}
