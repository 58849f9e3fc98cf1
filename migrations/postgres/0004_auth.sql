-- Authentication (coordinator --auth token): API tokens with roles, job owners, and the
-- credential each worker registered with.

-- Tokens are stored only as the SHA-256 of their secret. A name is the identity behind a token:
-- several tokens may share one (rotation: create the new one, then revoke the old), and jobs are
-- owned by the name, so a rotated token keeps its jobs.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    name          text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('admin', 'user', 'viewer', 'worker')),
    secret_sha256 text        NOT NULL UNIQUE,
    created_by    text,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_tokens_created ON api_tokens (created_at DESC, id);

-- The name of the token that submitted the job (NULL without auth): "my jobs" is an index scan.
ALTER TABLE jobs ADD COLUMN owner text;
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, id) WHERE owner IS NOT NULL;

-- "token:<id>" or "cert:<sha256 of the client certificate>"; NULL when registered without auth.
ALTER TABLE workers ADD COLUMN principal text;
