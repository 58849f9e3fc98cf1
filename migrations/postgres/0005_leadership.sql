-- Leader election among coordinators that share this database (coordinator/src/leader.rs).
-- Every coordinator serves the whole API; the one holding the row `name = 'coordinator'` with an
-- unexpired lease is the leader and alone runs the job drivers, the policy updates and the lease
-- sweep. Times are the database's clock, so a coordinator's clock jumping cannot extend a term.
-- `epoch` grows by one with every new term: it is the fencing value a leader's writes carry.
CREATE TABLE leadership (
    name        text        PRIMARY KEY,
    holder      text        NOT NULL,
    epoch       bigint      NOT NULL CHECK (epoch >= 1),
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- The leadership term a policy update was written in (NULL: written outside any term, e.g. a
-- policy's first version or a manual save). Within a policy it never decreases with the version.
ALTER TABLE policy_checkpoints ADD COLUMN leader_epoch bigint;
