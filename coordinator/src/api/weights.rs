//! Supernet weights over gRPC: `FetchSupernet` streams the version a leased shard starts from,
//! `PutSupernet` receives the weights it trained. Both need the task's current lease, so a
//! worker needs neither database nor bucket credentials, and a shard that lost its lease can
//! neither read nor overwrite anything. Safetensors on the wire and at rest.
//!
//! An upload lands under a key of its own lease ([`SupernetPayload::upload_key`]): a re-leased
//! shard never overwrites what an earlier attempt sent, and the report names the upload by
//! size and SHA-256, which the coordinator checks against what it stored.
//!
//! **Memory and the store under a round's load** (every shard of a round fetches the same
//! version, then uploads at about the same time; see "One round through the coordinator" in
//! docs/BENCHMARKS.md):
//! - Concurrent fetches of one version share **one read** of it from the blob store (kept while
//!   any of them streams, dropped with the last), and chunks are cut as the stream is polled:
//!   64 shards fetching a 40 MB version hold 40 MB, not 64 × 80 MB, and make one 40 MB read
//!   instead of 64 (which, on SQLite, held every reader connection for seconds: the leader
//!   could not renew its term and stepped down).
//! - At most [`UPLOAD_PERMITS`] / [`permits_per_upload`] uploads are received and stored at
//!   once; the others wait after their first message (HTTP/2 flow control holds the rest on the
//!   worker), so the uploads a coordinator buffers are bounded whatever the shard count, and a
//!   database blob store's writer is not queued behind dozens of 40 MB transactions.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use nat_proto::v1;
use nat_schema::{SupernetPayload, TaskKind, UploadedWeights};
use nat_store::{StoreError, Task, TaskId, TaskState, WorkerId};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};
use tokio_stream::StreamExt;
use tonic::Status;

use crate::convert::decode;
use crate::error::ApiError;
use crate::state::{parse_id, Coordinator};

use super::validate::token;

/// Largest chunk sent or accepted (well under the server's 8 MiB message limit).
pub const CHUNK_BYTES: usize = 1 << 20;

/// The stream `FetchSupernet` answers with.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::SupernetChunk, Status>> + Send>>;

/// Permits of the uploads received and stored at once in this process (see
/// [`permits_per_upload`]).
pub const UPLOAD_PERMITS: u32 = 8;

static UPLOADS: Semaphore = Semaphore::const_new(UPLOAD_PERMITS as usize);

/// Permits one upload takes: half of them (two uploads at once) into the job's database, whose
/// writes go through one writer (SQLite) or compete with the job's transactions (PostgreSQL);
/// one (eight at once) into a directory or an object store, which take parallel writes.
pub fn permits_per_upload(blobs: &dyn nat_store::BlobStore) -> u32 {
    if blobs.describe() == nat_store::blob::DATABASE {
        UPLOAD_PERMITS / 2
    } else {
        1
    }
}

/// A version document read once for the fetches streaming it at the same time.
type Shared = Arc<OnceCell<Bytes>>;

/// The versions being streamed, by blob store, key and digest: an entry lives as long as a
/// fetch holds it.
static STREAMING: Mutex<Option<HashMap<String, Weak<OnceCell<Bytes>>>>> = Mutex::new(None);

/// The shared read of `key` (whose committed digest is `sha256`): the one concurrent fetches
/// already hold, or a new one.
fn shared_read(blobs: &dyn nat_store::BlobStore, key: &str, sha256: &str) -> Shared {
    let id = format!("{}\n{key}\n{sha256}", blobs.describe());
    let mut guard = STREAMING.lock().unwrap_or_else(PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(cell) = map.get(&id).and_then(Weak::upgrade) {
        return cell;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let cell: Shared = Arc::new(OnceCell::new());
    map.insert(id, Arc::downgrade(&cell));
    cell
}

/// The current lease of a supernet task: checks the worker holds it and returns the task and
/// its payload. A stale token, a foreign worker or a task that is not leased is
/// `FAILED_PRECONDITION`; a task of another kind too.
pub async fn leased_shard(
    c: &Coordinator,
    task_id: TaskId,
    lease_token: i64,
    worker: WorkerId,
) -> Result<(Task, SupernetPayload), ApiError> {
    if let Some(holder) = c.handouts.holder(task_id, lease_token) {
        if holder != worker {
            return Err(stale(task_id, lease_token));
        }
    }
    let task = c.store.get_task(task_id).await?;
    // An unassigned reservation (no worker yet) belongs to whoever holds its token.
    let holder_ok = task.leased_by.is_none_or(|w| w == worker);
    if task.state != TaskState::Leased || task.lease_token != lease_token || !holder_ok {
        return Err(stale(task_id, lease_token));
    }
    if task.kind != TaskKind::Supernet.as_str() {
        return Err(ApiError::FailedPrecondition(format!(
            "task {task_id} is a {} task; it has no supernet weights",
            task.kind
        )));
    }
    let payload: SupernetPayload = decode("supernet payload", &task.payload)?;
    Ok((task, payload))
}

fn stale(task: TaskId, token: i64) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "lease token {token} of task {task} is stale or held by another worker"
    ))
}

/// `FetchSupernet`: the weights of the shard's base version, in chunks.
pub async fn fetch(
    c: Arc<Coordinator>,
    r: v1::FetchSupernetRequest,
    worker: WorkerId,
) -> Result<ChunkStream, ApiError> {
    let task_id: TaskId = parse_id("task_id", &r.task_id)?;
    let lease_token = token("lease_token", r.lease_token)?;
    let (task, payload) = leased_shard(&c, task_id, lease_token, worker).await?;
    if payload.base_version == 0 {
        return Err(ApiError::FailedPrecondition(format!(
            "task {task_id} starts from fresh weights (base_version 0): there is nothing to fetch"
        )));
    }
    let version = i64::try_from(payload.base_version)
        .map_err(|_| ApiError::invalid("base_version", "out of range"))?;
    let row = c
        .store
        .supernet_version(task.job_id, version)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::FailedPrecondition(format!(
                "weight version {version} of job {} is not stored",
                task.job_id
            )),
            other => other.into(),
        })?;
    // Every shard of a round fetches this version at about the same time: one read for all.
    let shared = shared_read(&*c.blobs, &row.blob_key, &row.sha256);
    let data = shared
        .get_or_try_init(|| c.blobs.get(&row.blob_key))
        .await?
        .clone();
    let sha256 = row.sha256;
    let total = data.len() as u64;
    nat_telemetry::record::supernet_bytes(nat_telemetry::record::Direction::Sent, total);
    let version = payload.base_version;
    // Chunks are cut (and copied into their message) as the stream is polled; the stream holds
    // the shared read until it ends.
    let chunks = (0..data.len()).step_by(CHUNK_BYTES).map(move |offset| {
        let _reading = &shared;
        let end = (offset + CHUNK_BYTES).min(data.len());
        Ok(v1::SupernetChunk {
            version,
            offset: offset as u64,
            total_bytes: total,
            sha256: sha256.clone(),
            data: data.slice(offset..end).to_vec(),
        })
    });
    Ok(Box::pin(tokio_stream::iter(chunks)))
}

/// `PutSupernet`: receives a shard's weights, checks offsets, size, digest and the document
/// (safetensors, finite values), and stores them under the lease's upload key.
pub async fn put(
    c: Arc<Coordinator>,
    mut stream: tonic::Streaming<v1::PutSupernetRequest>,
    authorize: impl AsyncFnOnce(WorkerId) -> Result<(), ApiError>,
) -> Result<v1::PutSupernetResponse, ApiError> {
    let first = stream
        .next()
        .await
        .ok_or_else(|| ApiError::invalid("PutSupernetRequest", "the stream is empty"))?
        .map_err(|s| ApiError::invalid("PutSupernetRequest", s.message().to_string()))?;
    let worker: WorkerId = parse_id("worker_id", &first.worker_id)?;
    authorize(worker).await?;
    let task_id: TaskId = parse_id("task_id", &first.task_id)?;
    let lease_token = token("lease_token", first.lease_token)?;
    let (task, payload) = leased_shard(&c, task_id, lease_token, worker).await?;
    if payload.is_screening() {
        return Err(ApiError::FailedPrecondition(format!(
            "task {task_id} is a derive screening: it trains nothing and uploads nothing"
        )));
    }
    let limit = c.config.max_supernet_bytes;
    if first.total_bytes == 0 || first.total_bytes > limit {
        return Err(ApiError::invalid(
            "total_bytes",
            format!("must be in 1..={limit}, got {}", first.total_bytes),
        ));
    }
    let declared = first.sha256.to_ascii_lowercase();
    if declared.len() != 64 || !declared.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(
            "sha256",
            "must be 64 hexadecimal digits (SHA-256 of the whole document)",
        ));
    }
    let total = usize::try_from(first.total_bytes)
        .map_err(|_| ApiError::invalid("total_bytes", "does not fit this machine"))?;
    // Held until the upload is stored: bounds the uploads in memory (see the module docs).
    let _permit = UPLOADS
        .acquire_many(permits_per_upload(&*c.blobs))
        .await
        .map_err(|e| ApiError::Internal(StoreError::backend(e)))?;
    // The wait may have been long: the lease must still be current.
    leased_shard(&c, task_id, lease_token, worker).await?;
    let mut data = BytesMut::with_capacity(total);
    let mut message = Some(first);
    let mut index = 0usize;
    loop {
        let m = match message.take() {
            Some(m) => m,
            None => match stream.next().await {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(s)) => {
                    return Err(ApiError::invalid(
                        format!("PutSupernetRequest[{index}]"),
                        s.message().to_string(),
                    ))
                }
            },
        };
        if m.data.len() > CHUNK_BYTES * 4 {
            return Err(ApiError::invalid(
                format!("PutSupernetRequest[{index}].data"),
                format!("chunks are at most {} bytes", CHUNK_BYTES * 4),
            ));
        }
        if m.offset != data.len() as u64 {
            return Err(ApiError::invalid(
                format!("PutSupernetRequest[{index}].offset"),
                format!(
                    "expected {}, got {} (chunks in order)",
                    data.len(),
                    m.offset
                ),
            ));
        }
        if data.len() + m.data.len() > total {
            return Err(ApiError::invalid(
                format!("PutSupernetRequest[{index}].data"),
                format!("more bytes than total_bytes {total}"),
            ));
        }
        data.extend_from_slice(&m.data);
        index += 1;
    }
    if data.len() != total {
        return Err(ApiError::invalid(
            "total_bytes",
            format!("declared {total}, received {}", data.len()),
        ));
    }
    let data: Bytes = data.freeze();
    let checked = data.clone();
    let digest = tokio::task::spawn_blocking(move || {
        let summary = nat_weights::inspect(&checked);
        (hex::encode(Sha256::digest(&checked)), summary)
    })
    .await
    .map_err(|e| ApiError::Internal(StoreError::backend(e)))?;
    let (sha256, summary) = digest;
    if sha256 != declared {
        return Err(ApiError::invalid(
            "sha256",
            format!("declared {declared}, the bytes received hash to {sha256}"),
        ));
    }
    summary
        .map_err(|e| ApiError::invalid("data", format!("not a usable weights document: {e}")))?;
    let key = payload.upload_key(
        &task.job_id.to_string(),
        &task_id.to_string(),
        u64::try_from(lease_token).unwrap_or(0),
    );
    let meta = c.blobs.put(&key, data).await?;
    nat_telemetry::record::supernet_bytes(nat_telemetry::record::Direction::Received, meta.bytes);
    tracing::debug!(task = %task_id, bytes = meta.bytes, "supernet weights uploaded");
    Ok(v1::PutSupernetResponse {
        bytes: meta.bytes,
        sha256: meta.sha256,
    })
}

/// The upload a supernet report names: stored under its lease's key with the size and digest
/// the report gives; else `FAILED_PRECONDITION` (upload first) or `INVALID_ARGUMENT`.
pub async fn reported_upload(
    c: &Coordinator,
    task: &Task,
    payload: &SupernetPayload,
    lease_token: i64,
    r: &v1::SupernetResult,
) -> Result<UploadedWeights, ApiError> {
    let key = payload.upload_key(
        &task.job_id.to_string(),
        &task.id.to_string(),
        u64::try_from(lease_token).unwrap_or(0),
    );
    let meta = c.blobs.head(&key).await?.ok_or_else(|| {
        ApiError::FailedPrecondition(format!(
            "task {}: no weights uploaded for lease {lease_token}; send them with PutSupernet before reporting",
            task.id
        ))
    })?;
    if meta.bytes != r.weights_bytes || !meta.sha256.eq_ignore_ascii_case(&r.weights_sha256) {
        return Err(ApiError::invalid(
            "supernet.weights_sha256",
            format!(
                "the report names {} bytes with SHA-256 {}, the upload of this lease is {} bytes with {}",
                r.weights_bytes, r.weights_sha256, meta.bytes, meta.sha256
            ),
        ));
    }
    Ok(UploadedWeights {
        key,
        bytes: meta.bytes,
        sha256: meta.sha256,
    })
}
