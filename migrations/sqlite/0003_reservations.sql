-- Lease reservations (coordinator/src/reserve.rs): a task the coordinator claimed ahead of demand
-- is `leased` with no worker yet (leased_by NULL) until it is handed out. The index of leases by
-- worker leaves those out: statements that pick reservations by id and token must use the
-- primary key, never a scan of every unassigned lease row (dead index entries included).
DROP INDEX IF EXISTS tasks_leased_by;
CREATE INDEX tasks_leased_by ON tasks (leased_by) WHERE state = 'leased' AND leased_by IS NOT NULL;
