-- The dataset a task needs (its payload's top-level "dataset"), matched against the datasets a
-- worker slot declares when leasing (crates/nat-store/src/pg.rs, the batched claim).
ALTER TABLE tasks ADD COLUMN dataset text GENERATED ALWAYS AS (payload ->> 'dataset') STORED;
