//! The durable, versioned supernet of an optimize job and the blobs that hold its weights
//! (re-exported by [`types`](super)).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::JobId;

/// A supernet version to commit with
/// [`SupernetStore::commit_supernet_version`](crate::SupernetStore::commit_supernet_version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSupernetVersion {
    /// The job whose supernet this is.
    pub job_id: JobId,
    /// Version: the job's latest version + 1 (1 for the first), else `Conflict`.
    pub version: i64,
    /// The learning round (iteration) the version came from; -1 for the warm-up version. A
    /// round yields at most one version.
    pub round: i64,
    /// Where the weights are in the job's blob store (a [`BlobStore`](crate::BlobStore) key:
    /// `[A-Za-z0-9._/-]`, at most [`limits::MAX_BLOB_KEY_LEN`](super::limits::MAX_BLOB_KEY_LEN)
    /// bytes, no `..`).
    pub blob_key: String,
    /// Size of the blob in bytes (>= 0).
    pub bytes: i64,
    /// SHA-256 of the blob: 64 lowercase hex digits.
    pub sha256: String,
    /// How many shards were averaged into it.
    pub shards: u32,
    /// The ids (text) of the workers whose shards went into it.
    pub workers: Vec<String>,
    /// The coordinator leadership term ([`crate::Leadership::epoch`]) the version is committed
    /// in: when set, the commit is refused with `FailedPrecondition` unless that term is still
    /// the current one, so a deposed leader cannot move the supernet. `None` outside any term.
    pub leader_epoch: Option<i64>,
}

/// A committed supernet version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupernetVersion {
    /// The job.
    pub job_id: JobId,
    /// Version (1, 2, 3, … without gaps).
    pub version: i64,
    /// The learning round it came from (-1: warm-up).
    pub round: i64,
    /// Key of its weights in the job's blob store.
    pub blob_key: String,
    /// Size of the blob in bytes.
    pub bytes: i64,
    /// SHA-256 of the blob (64 lowercase hex digits).
    pub sha256: String,
    /// Shards averaged into it.
    pub shards: u32,
    /// Workers whose shards went into it.
    pub workers: Vec<String>,
    /// The leadership term it was committed in.
    pub leader_epoch: Option<i64>,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
}

/// The answer of
/// [`SupernetStore::commit_supernet_version`](crate::SupernetStore::commit_supernet_version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SupernetCommit {
    /// The version was stored and the round's rewards set, in one transaction.
    Committed(SupernetVersion),
    /// The round already had a version (a restarted coordinator committing a round again): this
    /// is the stored one; nothing was changed (no reward was set).
    AlreadyCommitted(SupernetVersion),
}

impl SupernetCommit {
    /// The stored version, whichever way it got there.
    pub fn version(&self) -> &SupernetVersion {
        match self {
            SupernetCommit::Committed(v) | SupernetCommit::AlreadyCommitted(v) => v,
        }
    }

    /// Takes the stored version, whichever way it got there.
    pub fn into_version(self) -> SupernetVersion {
        match self {
            SupernetCommit::Committed(v) | SupernetCommit::AlreadyCommitted(v) => v,
        }
    }
}

/// What a [`BlobStore`](crate::BlobStore) knows of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BlobMeta {
    /// The blob's key.
    pub key: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its content: 64 lowercase hex digits.
    pub sha256: String,
}
