-- Blocked calls say why: `held_back_at` is when a claim first found the invocation runnable
-- but held back by running concurrency (another invocation owns its `run_scope`); that claim
-- also wrote its `concurrency_controlled` history row, once. The partial index holds exactly
-- the rows a claim still has to look at (scoped, runnable, never held back), found from the
-- owned invocation of their scope. Keep in step with ../postgres/0013_held_back.sql.
ALTER TABLE invocations ADD COLUMN held_back_at INTEGER;
CREATE INDEX invocations_unheld_scope_idx ON invocations (run_scope, id)
    WHERE run_scope IS NOT NULL AND held_back_at IS NULL AND status IN ('registered', 'retry', 'rerouted');
