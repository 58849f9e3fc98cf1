//! Blob stores: where a job's supernet weights (safetensors, tens of MiB) are kept.
//!
//! One interface, [`BlobStore`], with two backends:
//! - [`DbBlobs`]: the store's own database (tables `blobs` and `blob_chunks`, migration 0006),
//!   the default, which works wherever the coordinator does. A blob is cut into chunks of
//!   [`CHUNK_SIZE`] (1 MiB); a put replaces the blob's row and all its chunks in one
//!   transaction, so a reader sees the old or the new content, never a mix, and no stale chunk
//!   survives an overwrite with a smaller blob. [`Store::database_blobs`] gives it for a store
//!   opened with [`connect`](crate::connect).
//! - [`ObjectBlobs`]: a directory or an object-store URL (`s3://`, `gs://`, Azure, …) through
//!   the `object_store` crate, for clusters that keep large artifacts in object storage.
//!
//! [`connect_blobs`] picks one from a setting: no URL (or `database`) is the database, anything
//! else an [`ObjectBlobs`] URL. That is the choice this crate makes for "where do blobs go": the
//! [`Store`] trait gives its database's blob store ([`Store::database_blobs`]), and
//! [`connect_blobs`] wraps the choice, so a caller holding `Arc<dyn Store>` from
//! [`connect`](crate::connect) needs nothing else.
//!
//! Keys are `[A-Za-z0-9._/-]`, at most [`limits::MAX_BLOB_KEY_LEN`](crate::limits::MAX_BLOB_KEY_LEN)
//! bytes, of non-empty `/`-separated segments, without `..` and without `.` segments
//! ([`check_key`]); any other key is `InvalidArgument` naming `key`. Every backend computes the
//! SHA-256 of a blob at `put` and reports it in [`BlobMeta`].

mod db;
mod object;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use db::DbBlobs;
pub use object::ObjectBlobs;

use crate::error::Result;
use crate::store::Store;
use crate::types::BlobMeta;

/// Size of the chunks [`DbBlobs`] cuts a blob into: 1 MiB.
pub const CHUNK_SIZE: usize = 1 << 20;

/// What [`connect_blobs`] reads as "the database's blob store".
pub const DATABASE: &str = "database";

/// A store of immutable-by-key blobs (a put replaces the whole blob). Object safe: callers hold
/// `Arc<dyn BlobStore>`.
///
/// Errors: `InvalidArgument` naming `key` (or `prefix`) for a key that breaks the key rules,
/// `NotFound` (of [`Entity::Blob`](crate::Entity::Blob), naming the key) for a blob that is not
/// there, `Backend` when the database or the object store fails.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static + std::fmt::Debug {
    /// Where the blobs are: `"database"` for [`DbBlobs`], the URL for [`ObjectBlobs`].
    fn describe(&self) -> String;

    /// Stores `data` under `key`, replacing any blob of that key; returns its size and SHA-256.
    async fn put(&self, key: &str, data: Bytes) -> Result<BlobMeta>;

    /// The blob's content; `NotFound` naming the key when there is none.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// The blob's size and SHA-256, `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<BlobMeta>>;

    /// Deletes the blob; a key with no blob is fine (`Ok`).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Deletes every blob whose key starts with `prefix` (as text: `job-1/v` covers `job-1/v1`
    /// and `job-1/v2/x`; `job-1/` covers what is under `job-1`); returns how many. `prefix`
    /// follows the key rules but may end with `/`.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64>;
}

/// Checks a blob key against the key rules (see the [module](self) documentation);
/// `InvalidArgument` naming `key` otherwise.
pub fn check_key(key: &str) -> Result<()> {
    crate::logic::validate_blob_key("key", key)
}

/// The SHA-256 of `data` as 64 lowercase hex digits (the form [`BlobMeta::sha256`] and
/// [`NewSupernetVersion::sha256`](crate::NewSupernetVersion::sha256) use).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The blob store a setting names: `None`, an empty string or [`DATABASE`] (`"database"`) is
/// `store`'s own database ([`Store::database_blobs`]); anything else is an [`ObjectBlobs`] URL
/// or directory ([`ObjectBlobs::from_url`]).
pub fn connect_blobs(store: &dyn Store, url: Option<&str>) -> Result<Arc<dyn BlobStore>> {
    match url.map(str::trim) {
        None | Some("" | DATABASE) => Ok(store.database_blobs()),
        Some(url) => Ok(Arc::new(ObjectBlobs::from_url(url)?)),
    }
}

/// The [`BlobMeta`] of a blob of `bytes` bytes with digest `sha256`.
pub(crate) fn meta(key: &str, bytes: usize, sha256: String) -> BlobMeta {
    BlobMeta {
        key: key.to_string(),
        bytes: bytes as u64,
        sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[test]
    fn keys_follow_the_rules() {
        for good in ["a", "job-1/v2.safetensors", "A_b/c-d/e.f", "x/y/z"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        let long = "a".repeat(513);
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "..", "a..b", "./a", "a/./b", "a b", "a\\b", "é",
            "a?b", &long,
        ] {
            assert!(
                matches!(check_key(bad), Err(StoreError::InvalidArgument { field, .. }) if field == "key"),
                "{bad:?} accepted"
            );
        }
        assert!(check_key(&"a".repeat(512)).is_ok());
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
