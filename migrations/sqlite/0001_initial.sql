-- nat-store schema, SQLite. Same shape as migrations/postgres; timestamps are INTEGER
-- microseconds since the Unix epoch, uuids TEXT, JSON TEXT, booleans INTEGER 0/1.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY NOT NULL,
    kind            TEXT    NOT NULL,
    spec            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority        INTEGER NOT NULL,
    completion      TEXT    NOT NULL CHECK (completion IN ('all_tasks', 'manual')),
    tasks_total     INTEGER NOT NULL DEFAULT 0,
    tasks_done      INTEGER NOT NULL DEFAULT 0,
    tasks_failed    INTEGER NOT NULL DEFAULT 0,
    tasks_cancelled INTEGER NOT NULL DEFAULT 0,
    result          TEXT,
    error           TEXT,
    event_seq       INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    -- -1 = never served (sorts first)
    last_served_at  INTEGER
);

CREATE INDEX jobs_schedule ON jobs (priority DESC, COALESCE(last_served_at, -1), created_at, id)
    WHERE state IN ('queued', 'running');
CREATE INDEX jobs_created ON jobs (created_at DESC, id);

CREATE TABLE tasks (
    id                TEXT PRIMARY KEY NOT NULL,
    job_id            TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq               INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    payload           TEXT    NOT NULL,
    requirements      TEXT    NOT NULL,
    needs_gpu         INTEGER NOT NULL,
    min_gpu_memory_mb INTEGER NOT NULL,
    min_cpu_cores     INTEGER NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('ready', 'leased', 'done', 'failed', 'cancelled')),
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_token       INTEGER NOT NULL DEFAULT 0,
    leased_by         TEXT,
    lease_expires_at  INTEGER,
    reported_token    INTEGER,
    next_claim_at     INTEGER,
    result            TEXT,
    progress          TEXT,
    failures          TEXT    NOT NULL DEFAULT '[]',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER
);

CREATE UNIQUE INDEX tasks_job_seq ON tasks (job_id, seq);
CREATE INDEX tasks_claimable ON tasks (job_id, next_claim_at, seq) WHERE next_claim_at IS NOT NULL;
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE state = 'leased';
CREATE INDEX tasks_leased_by ON tasks (leased_by) WHERE state = 'leased';

CREATE TABLE workers (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT    NOT NULL,
    capabilities      TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('active', 'lost')),
    last_heartbeat_at INTEGER NOT NULL,
    registered_at     INTEGER NOT NULL
);

CREATE TABLE reward_estimates (
    arch_hash  TEXT    NOT NULL,
    dataset    TEXT    NOT NULL,
    budget     TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    mean       REAL    NOT NULL,
    m2         REAL    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (arch_hash, dataset, budget)
);

CREATE TABLE policy_checkpoints (
    policy_id       TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    space           TEXT    NOT NULL,
    params          BLOB    NOT NULL,
    optimizer_state BLOB    NOT NULL,
    baseline        REAL    NOT NULL,
    source_job      TEXT,
    meta            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (policy_id, version)
);

CREATE TABLE policy_samples (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id              TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    policy_id           TEXT    NOT NULL,
    policy_version      INTEGER NOT NULL,
    log_prob            REAL    NOT NULL,
    entropy             REAL    NOT NULL,
    input_genotype      TEXT    NOT NULL,
    output_genotype     TEXT    NOT NULL,
    task_id             TEXT,
    reward              REAL,
    consumed_in_version INTEGER,
    dropped             INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL
);

CREATE INDEX policy_samples_pending ON policy_samples (policy_id, id)
    WHERE reward IS NOT NULL AND consumed_in_version IS NULL;
CREATE INDEX policy_samples_job ON policy_samples (job_id);

CREATE TABLE events (
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
