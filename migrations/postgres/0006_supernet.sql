-- The durable, versioned supernet of an optimize job in `supernet` reward mode (issue #14) and
-- the blobs its weights are stored in when the job's database is the blob store.
--
-- A job's supernet is a sequence of versions 1, 2, 3, … without gaps: the coordinator averages
-- the weights its shard tasks return into version v+1 and commits that version together with the
-- rewards of the round's policy samples (nat_store::SupernetStore::commit_supernet_version).
-- `round` is the learning round (iteration) a version came from, -1 for the warm-up version; a
-- round yields at most one version, so a restarted coordinator that commits a round again finds
-- it. `blob_key` names the weights (safetensors) in the job's blob store, which is this database
-- (the `blobs` tables below) or an object store; `bytes` and `sha256` describe that blob.
-- `workers` is a JSON array of the ids (text) of the workers whose shards went into the version,
-- `shards` how many shards were averaged. `leader_epoch` is the leadership term the version was
-- committed in (NULL: outside any term).
CREATE TABLE supernet_versions (
    job_id       uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version      bigint      NOT NULL CHECK (version >= 1),
    round        bigint      NOT NULL CHECK (round >= -1),
    blob_key     text        NOT NULL,
    bytes        bigint      NOT NULL CHECK (bytes >= 0),
    sha256       text        NOT NULL,
    shards       bigint      NOT NULL CHECK (shards >= 0),
    workers      jsonb       NOT NULL,
    leader_epoch bigint,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (job_id, version),
    UNIQUE (job_id, round)
);

-- Blobs kept in the database (nat_store::DbBlobs): one row per blob, its content in chunks of
-- at most 1 MiB, numbered 0, 1, 2, … (`chunks` of them). A put replaces a blob's chunks in one
-- transaction, so a reader sees the old content or the new one, never a mix.
CREATE TABLE blobs (
    key        text        PRIMARY KEY,
    bytes      bigint      NOT NULL CHECK (bytes >= 0),
    sha256     text        NOT NULL,
    chunks     integer     NOT NULL CHECK (chunks >= 0),
    created_at timestamptz NOT NULL
);

CREATE TABLE blob_chunks (
    key  text    NOT NULL REFERENCES blobs (key) ON DELETE CASCADE,
    idx  integer NOT NULL CHECK (idx >= 0),
    data bytea   NOT NULL,
    PRIMARY KEY (key, idx)
);
-- Weights do not compress: store the chunks out of line without trying.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
