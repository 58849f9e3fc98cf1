-- nat-store schema, PostgreSQL. See crates/nat-store/src/lib.rs for the design.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    kind            text        NOT NULL,
    spec            jsonb       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority        integer     NOT NULL,
    completion      text        NOT NULL CHECK (completion IN ('all_tasks', 'manual')),
    tasks_total     bigint      NOT NULL DEFAULT 0,
    tasks_done      bigint      NOT NULL DEFAULT 0,
    tasks_failed    bigint      NOT NULL DEFAULT 0,
    tasks_cancelled bigint      NOT NULL DEFAULT 0,
    result          jsonb,
    error           text,
    -- last allocated event seq of this job (events are numbered 1, 2, ... without gaps)
    event_seq       bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    last_served_at  timestamptz
);

-- Scheduling walk: active jobs by priority, then least recently served (round robin).
CREATE INDEX jobs_schedule ON jobs (priority DESC, last_served_at ASC NULLS FIRST, created_at, id)
    WHERE state IN ('queued', 'running');
CREATE INDEX jobs_created ON jobs (created_at DESC, id);

CREATE TABLE tasks (
    id                uuid PRIMARY KEY,
    job_id            uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- creation order inside the job
    seq               bigint      NOT NULL,
    kind              text        NOT NULL,
    payload           jsonb       NOT NULL,
    requirements      jsonb       NOT NULL,
    needs_gpu         boolean     NOT NULL,
    min_gpu_memory_mb bigint      NOT NULL,
    min_cpu_cores     integer     NOT NULL,
    state             text        NOT NULL CHECK (state IN ('ready', 'leased', 'done', 'failed', 'cancelled')),
    attempt           integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL CHECK (max_attempts >= 1),
    lease_token       bigint      NOT NULL DEFAULT 0,
    leased_by         uuid,
    lease_expires_at  timestamptz,
    -- token of the last accepted report (duplicate detection)
    reported_token    bigint,
    -- when the task can be claimed: ready since, or lease expiry with attempts left; else NULL
    next_claim_at     timestamptz,
    result            jsonb,
    progress          jsonb,
    failures          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz
);

CREATE UNIQUE INDEX tasks_job_seq ON tasks (job_id, seq);
-- Claim path: claimable tasks of a job in order.
CREATE INDEX tasks_claimable ON tasks (job_id, next_claim_at, seq) WHERE next_claim_at IS NOT NULL;
-- Expiry scan.
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE state = 'leased';
-- Heartbeat: leases of a worker.
CREATE INDEX tasks_leased_by ON tasks (leased_by) WHERE state = 'leased';

CREATE TABLE workers (
    id                uuid PRIMARY KEY,
    name              text        NOT NULL,
    capabilities      jsonb       NOT NULL,
    state             text        NOT NULL CHECK (state IN ('active', 'lost')),
    last_heartbeat_at timestamptz NOT NULL,
    registered_at     timestamptz NOT NULL
);

CREATE TABLE reward_estimates (
    arch_hash  text             NOT NULL,
    dataset    text             NOT NULL,
    budget     text             NOT NULL,
    count      bigint           NOT NULL,
    mean       double precision NOT NULL,
    m2         double precision NOT NULL,
    updated_at timestamptz      NOT NULL,
    PRIMARY KEY (arch_hash, dataset, budget)
);

CREATE TABLE policy_checkpoints (
    policy_id       text             NOT NULL,
    version         bigint           NOT NULL CHECK (version >= 1),
    space           text             NOT NULL,
    params          bytea            NOT NULL,
    optimizer_state bytea            NOT NULL,
    baseline        double precision NOT NULL,
    source_job      uuid,
    meta            jsonb            NOT NULL,
    created_at      timestamptz      NOT NULL,
    PRIMARY KEY (policy_id, version)
);

CREATE TABLE policy_samples (
    id                  bigserial PRIMARY KEY,
    job_id              uuid             NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    policy_id           text             NOT NULL,
    policy_version      bigint           NOT NULL,
    log_prob            double precision NOT NULL,
    entropy             double precision NOT NULL,
    input_genotype      jsonb            NOT NULL,
    output_genotype     jsonb            NOT NULL,
    task_id             uuid,
    reward              double precision,
    consumed_in_version bigint,
    dropped             boolean          NOT NULL DEFAULT false,
    created_at          timestamptz      NOT NULL
);

-- Rewards waiting for a policy update, oldest first.
CREATE INDEX policy_samples_pending ON policy_samples (policy_id, id)
    WHERE reward IS NOT NULL AND consumed_in_version IS NULL;
CREATE INDEX policy_samples_job ON policy_samples (job_id);

CREATE TABLE events (
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, seq)
);
