-- The dataset a task needs (its payload's top-level "dataset"), matched against the datasets a
-- worker slot declares when leasing (crates/nat-store/src/sqlite.rs, the claim).
ALTER TABLE tasks ADD COLUMN dataset TEXT GENERATED ALWAYS AS (json_extract(payload, '$.dataset')) VIRTUAL;
