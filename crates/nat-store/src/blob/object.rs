//! [`ObjectBlobs`]: blobs in a directory or an object store, through the `object_store` crate.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutOptions, PutPayload,
};
use url::Url;

use super::{meta, sha256_hex, BlobStore};
use crate::error::{Entity, Result, StoreError};
use crate::logic::{validate_blob_key, validate_blob_prefix, validate_sha256};
use crate::types::BlobMeta;

/// The object metadata key under which a blob's SHA-256 is stored, where the backend keeps
/// user metadata (S3 `x-amz-meta-sha256`, GCS and Azure metadata, the in-memory store).
const SHA256_METADATA: &str = "sha256";

/// Prefixes of the environment variables passed to the cloud backends as options
/// (`AWS_ACCESS_KEY_ID` becomes the option `aws_access_key_id`, and so on: the names each
/// backend's builder documents for its `from_env`).
const ENV_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// Blobs in a directory or an object store.
///
/// - A plain path or a `file://` URL is a local directory (created if missing), through
///   `LocalFileSystem::new_with_prefix`: a put writes a staged file and renames it into place,
///   so a reader never sees half a blob.
/// - Any other URL goes to `object_store::parse_url_opts` (`s3://bucket/prefix`,
///   `gs://bucket/prefix`, `https://ACCOUNT.blob.core.windows.net/container/prefix` or
///   `az://container/prefix` with `AZURE_STORAGE_ACCOUNT_NAME`, `memory:///`, …), with options
///   from the `AWS_*`, `GOOGLE_*` and `AZURE_*` environment variables (credentials, region,
///   endpoint: see the `object_store` builders).
///
/// **SHA-256.** `put` computes the blob's digest and, where the backend keeps user metadata,
/// stores it with the object (metadata key `sha256`); `head` then answers from the metadata
/// without reading the object. The local filesystem keeps no metadata (`object_store` refuses
/// attributes there), so on it — and for an object written without the metadata — `head`
/// reads the whole object and computes the digest, unless this store wrote the object itself:
/// it remembers the digest of each object it put by the object's ETag (on a directory: inode,
/// modification time and size), and a `head` whose object still has that ETag answers from
/// it after a metadata-only look-up. (Each shard a supernet round averages is checked by `head`
/// when its worker reports: 64 whole reads and digests of 40 MB per round without this.)
#[derive(Debug)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// The path inside `store` under which the keys live (the URL's path; empty for a
    /// directory, which is the store's root).
    root: Path,
    /// The URL (or path) as given.
    url: String,
    /// Whether puts store the digest as metadata (cleared when the backend refuses attributes).
    metadata: AtomicBool,
    /// The digests of the objects this store put without metadata: location → (ETag, SHA-256).
    written: Mutex<HashMap<String, (String, String)>>,
}

/// Most digests [`ObjectBlobs`] remembers (a few MB); past it the memory starts afresh (a
/// forgotten digest only costs a read).
const REMEMBERED_DIGESTS: usize = 4096;

impl ObjectBlobs {
    /// Opens the blob store at `url`: a directory (a plain path or a `file://` URL, created if
    /// missing) or an object-store URL. A URL that cannot be used is `InvalidArgument` naming
    /// `blob_url`; a directory that cannot be created is `Backend`.
    pub fn from_url(url: &str) -> Result<ObjectBlobs> {
        let given = url.trim();
        if given.is_empty() {
            return Err(StoreError::invalid("blob_url", "must not be empty"));
        }
        if given.starts_with("file:") {
            let parsed = Url::parse(given)
                .map_err(|e| StoreError::invalid("blob_url", format!("not a valid URL: {e}")))?;
            let dir = parsed.to_file_path().map_err(|()| {
                StoreError::invalid("blob_url", "a file:// URL needs an absolute local path")
            })?;
            return Self::local(given, &dir);
        }
        if !given.contains("://") {
            return Self::local(given, FsPath::new(given));
        }
        let parsed = Url::parse(given)
            .map_err(|e| StoreError::invalid("blob_url", format!("not a valid URL: {e}")))?;
        let options = std::env::vars().filter_map(|(k, v)| {
            ENV_PREFIXES
                .iter()
                .any(|p| k.starts_with(p))
                .then(|| (k.to_ascii_lowercase(), v))
        });
        let (store, root) = object_store::parse_url_opts(&parsed, options)
            .map_err(|e| StoreError::invalid("blob_url", e.to_string()))?;
        Ok(ObjectBlobs {
            store: Arc::from(store),
            root,
            url: given.to_string(),
            metadata: AtomicBool::new(true),
            written: Mutex::default(),
        })
    }

    /// A local directory, created if missing.
    fn local(given: &str, dir: &FsPath) -> Result<ObjectBlobs> {
        std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(StoreError::backend)?;
        Ok(ObjectBlobs {
            store: Arc::new(store),
            root: Path::default(),
            url: given.to_string(),
            metadata: AtomicBool::new(false),
            written: Mutex::default(),
        })
    }

    /// The object path of `key` (checked against the key rules; `field` names it).
    fn location(&self, field: &str, key: &str) -> Result<Path> {
        validate_blob_key(field, key)?;
        let full = if self.root.as_ref().is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.root.as_ref())
        };
        Path::parse(&full).map_err(|e| StoreError::invalid(field, e.to_string()))
    }

    /// Forgets the digest remembered for `location` (deleted).
    fn forget(&self, location: &Path) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(location.as_ref());
    }

    /// The key of an object listed under the root.
    fn key_of<'a>(&self, location: &'a Path) -> Option<&'a str> {
        let full = location.as_ref();
        if self.root.as_ref().is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.root.as_ref())?.strip_prefix('/')
        }
    }
}

/// `NotFound` of `key` for an object that is not there, `Backend` otherwise.
fn object_error(key: &str, err: object_store::Error) -> StoreError {
    match err {
        object_store::Error::NotFound { .. } => StoreError::not_found(Entity::Blob, key),
        other => StoreError::backend(other),
    }
}

#[async_trait]
impl BlobStore for ObjectBlobs {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<BlobMeta> {
        let location = self.location("key", key)?;
        let sha256 = sha256_hex(&data);
        let size = data.len();
        let payload = PutPayload::from(data);
        if self.metadata.load(Ordering::Relaxed) {
            let mut attributes = Attributes::new();
            attributes.insert(
                Attribute::Metadata(SHA256_METADATA.into()),
                AttributeValue::from(sha256.clone()),
            );
            let options = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(&location, payload.clone(), options)
                .await
            {
                Ok(_) => return Ok(meta(key, size, sha256)),
                // This backend keeps no metadata: from now on `head` reads objects.
                Err(object_store::Error::NotImplemented) => {
                    self.metadata.store(false, Ordering::Relaxed);
                }
                Err(err) => return Err(object_error(key, err)),
            }
        }
        let put = self
            .store
            .put(&location, payload)
            .await
            .map_err(|e| object_error(key, e))?;
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match put.e_tag {
            Some(e_tag) => {
                if written.len() >= REMEMBERED_DIGESTS {
                    written.clear();
                }
                written.insert(location.to_string(), (e_tag, sha256.clone()));
            }
            None => {
                written.remove(location.as_ref());
            }
        }
        Ok(meta(key, size, sha256))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let location = self.location("key", key)?;
        let found = self
            .store
            .get(&location)
            .await
            .map_err(|e| object_error(key, e))?;
        found.bytes().await.map_err(|e| object_error(key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        let location = self.location("key", key)?;
        if self.metadata.load(Ordering::Relaxed) {
            let options = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            let found = match self.store.get_opts(&location, options).await {
                Ok(found) => found,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(err) => return Err(StoreError::backend(err)),
            };
            let stored = found
                .attributes
                .get(&Attribute::Metadata(SHA256_METADATA.into()))
                .map(|v| v.as_ref().to_string());
            if let Some(sha256) = stored.filter(|s| validate_sha256("sha256", s).is_ok()) {
                let size = usize::try_from(found.meta.size)
                    .map_err(|_| StoreError::corrupt(format!("size of blob {key}")))?;
                return Ok(Some(meta(key, size, sha256)));
            }
        }
        // No metadata: the digest this store computed when it put the object, if the object is
        // still that one (same ETag)…
        let remembered = self
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(location.as_ref())
            .cloned();
        if let Some((e_tag, sha256)) = remembered {
            let found = match self.store.head(&location).await {
                Ok(found) => found,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(err) => return Err(StoreError::backend(err)),
            };
            if found.e_tag.as_deref() == Some(e_tag.as_str()) {
                let size = usize::try_from(found.size)
                    .map_err(|_| StoreError::corrupt(format!("size of blob {key}")))?;
                return Ok(Some(meta(key, size, sha256)));
            }
        }
        // … else read the object and compute its digest.
        match self.get(key).await {
            Ok(data) => Ok(Some(meta(key, data.len(), sha256_hex(&data)))),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let location = self.location("key", key)?;
        self.forget(&location);
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(StoreError::backend(err)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        validate_blob_prefix("prefix", prefix)?;
        // Object stores list by whole path segments: list the folder the prefix is in, keep the
        // keys that start with the prefix as text.
        let folder = match prefix.rfind('/') {
            Some(i) => Some(self.location("prefix", &prefix[..i])?),
            None if self.root.as_ref().is_empty() => None,
            None => Some(self.root.clone()),
        };
        let listed: Vec<Path> = self
            .store
            .list(folder.as_ref())
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(StoreError::backend)?;
        let mut deleted = 0u64;
        for location in listed {
            if !self
                .key_of(&location)
                .is_some_and(|k| k.starts_with(prefix))
            {
                continue;
            }
            self.forget(&location);
            match self.store.delete(&location).await {
                Ok(()) => deleted += 1,
                // Deleted meanwhile by someone else: not ours to count.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(StoreError::backend(err)),
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_build_without_touching_the_network() {
        for url in [
            "s3://bucket/nat/blobs",
            "gs://bucket/nat",
            "https://account.blob.core.windows.net/container/nat",
        ] {
            match ObjectBlobs::from_url(url) {
                Ok(blobs) => assert_eq!(blobs.describe(), url),
                Err(err) => panic!("{url}: {err}"),
            }
        }
    }

    #[tokio::test]
    async fn the_digest_is_metadata_where_the_backend_keeps_it() {
        let memory = ObjectBlobs::from_url("memory:///").unwrap_or_else(|e| panic!("{e}"));
        let meta = memory
            .put("k", Bytes::from_static(b"abc"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(memory.metadata.load(Ordering::Relaxed));
        let location = memory
            .location("key", "k")
            .unwrap_or_else(|e| panic!("{e}"));
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let found = memory
            .store
            .get_opts(&location, options)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            found
                .attributes
                .get(&Attribute::Metadata(SHA256_METADATA.into()))
                .map(|v| v.as_ref().to_string()),
            Some(meta.sha256)
        );
        // A local directory keeps none: `head` reads the file.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let local = ObjectBlobs::from_url(&dir.path().display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!local.metadata.load(Ordering::Relaxed));
        local
            .put("k", Bytes::from_static(b"abc"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            local.head("k").await.unwrap_or_else(|e| panic!("{e}")),
            Some(meta_of("k", b"abc"))
        );
    }

    #[tokio::test]
    async fn a_directory_remembers_the_digests_it_wrote_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let local = ObjectBlobs::from_url(&dir.path().display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        local
            .put("a/k", Bytes::from_static(b"abc"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.written.lock().map(|w| w.len()).ok(), Some(1));
        assert_eq!(
            local.head("a/k").await.unwrap_or_else(|e| panic!("{e}")),
            Some(meta_of("a/k", b"abc"))
        );
        // Replaced behind the store's back: another ETag, so the digest is computed again.
        std::fs::write(dir.path().join("a/k"), b"other").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            local.head("a/k").await.unwrap_or_else(|e| panic!("{e}")),
            Some(meta_of("a/k", b"other"))
        );
        // Deleted: forgotten, and not found.
        local.delete("a/k").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.written.lock().map(|w| w.len()).ok(), Some(0));
        assert_eq!(
            local.head("a/k").await.unwrap_or_else(|e| panic!("{e}")),
            None
        );
        local
            .put("a/k2", Bytes::from_static(b"x"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.delete_prefix("a/").await.ok(), Some(1));
        assert_eq!(local.written.lock().map(|w| w.len()).ok(), Some(0));
    }

    fn meta_of(key: &str, data: &[u8]) -> BlobMeta {
        meta(key, data.len(), sha256_hex(data))
    }

    #[test]
    fn bad_urls_name_the_setting() {
        for url in ["", "   ", "file://remote-host/x", "nope://x/y"] {
            assert!(
                matches!(
                    ObjectBlobs::from_url(url),
                    Err(StoreError::InvalidArgument { field, .. }) if field == "blob_url"
                ),
                "{url:?} accepted"
            );
        }
    }
}
