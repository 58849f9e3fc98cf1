//! Supernet weights over gRPC: `FetchSupernet` streams the version a leased shard starts from,
//! `PutSupernet` receives the weights it trained. Both need the task's current lease, so a
//! worker needs neither database nor bucket credentials, and a shard that lost its lease can
//! neither read nor overwrite anything. Safetensors on the wire and at rest.
//!
//! An upload lands under a key of its own lease ([`SupernetPayload::upload_key`]): a re-leased
//! shard never overwrites what an earlier attempt sent, and the report names the upload by
//! size and SHA-256, which the coordinator checks against what it stored.

use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use nat_proto::v1;
use nat_schema::{SupernetPayload, TaskKind, UploadedWeights};
use nat_store::{StoreError, Task, TaskId, TaskState, WorkerId};
use sha2::{Digest, Sha256};
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
    let data = c.blobs.get(&row.blob_key).await?;
    let sha256 = row.sha256.clone();
    let total = data.len() as u64;
    nat_telemetry::record::supernet_bytes(nat_telemetry::record::Direction::Sent, total);
    let chunks: Vec<Result<v1::SupernetChunk, Status>> = (0..data.len())
        .step_by(CHUNK_BYTES)
        .map(|offset| {
            let end = (offset + CHUNK_BYTES).min(data.len());
            Ok(v1::SupernetChunk {
                version: payload.base_version,
                offset: offset as u64,
                total_bytes: total,
                sha256: sha256.clone(),
                data: data.slice(offset..end).to_vec(),
            })
        })
        .collect();
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
