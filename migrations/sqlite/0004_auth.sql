-- Authentication (coordinator --auth token): API tokens with roles, job owners, and the
-- credential each worker registered with. Same shape as migrations/postgres/0004_auth.sql.

-- Tokens are stored only as the SHA-256 of their secret. A name is the identity behind a token:
-- several tokens may share one (rotation), and jobs are owned by the name.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'user', 'viewer', 'worker')),
    secret_sha256 TEXT    NOT NULL UNIQUE,
    created_by    TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);
CREATE INDEX api_tokens_created ON api_tokens (created_at DESC, id);

-- The name of the token that submitted the job (NULL without auth): "my jobs" is an index scan.
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, id) WHERE owner IS NOT NULL;

-- "token:<id>" or "cert:<sha256 of the client certificate>"; NULL when registered without auth.
ALTER TABLE workers ADD COLUMN principal TEXT;
