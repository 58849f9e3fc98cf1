-- The durable, versioned supernet and the database's blobs. Same shape as
-- migrations/postgres/0006_supernet.sql (read its comments); timestamps are microseconds since
-- the Unix epoch, uuids and JSON TEXT.
CREATE TABLE supernet_versions (
    job_id       TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL CHECK (version >= 1),
    round        INTEGER NOT NULL CHECK (round >= -1),
    blob_key     TEXT    NOT NULL,
    bytes        INTEGER NOT NULL CHECK (bytes >= 0),
    sha256       TEXT    NOT NULL,
    shards       INTEGER NOT NULL CHECK (shards >= 0),
    workers      TEXT    NOT NULL,
    leader_epoch INTEGER,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (job_id, version),
    UNIQUE (job_id, round)
);

CREATE TABLE blobs (
    key        TEXT    PRIMARY KEY NOT NULL,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    sha256     TEXT    NOT NULL,
    chunks     INTEGER NOT NULL CHECK (chunks >= 0),
    created_at INTEGER NOT NULL
);

-- A rowid table (not WITHOUT ROWID): its rows are up to 1 MiB, far over the size for which
-- WITHOUT ROWID pays.
CREATE TABLE blob_chunks (
    key  TEXT    NOT NULL REFERENCES blobs (key) ON DELETE CASCADE,
    idx  INTEGER NOT NULL CHECK (idx >= 0),
    data BLOB    NOT NULL,
    PRIMARY KEY (key, idx)
);
