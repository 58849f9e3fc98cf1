-- Leader election (coordinator/src/leader.rs). Same shape as migrations/postgres/0005_leadership.sql;
-- with SQLite there is one coordinator per database file (it holds an OS lock on it), which is
-- always the leader. Times are microseconds since the Unix epoch.
CREATE TABLE leadership (
    name        TEXT    PRIMARY KEY NOT NULL,
    holder      TEXT    NOT NULL,
    epoch       INTEGER NOT NULL CHECK (epoch >= 1),
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

ALTER TABLE policy_checkpoints ADD COLUMN leader_epoch INTEGER;
