-- Blocked calls say why; see ../sqlite/0013_held_back.sql.
ALTER TABLE invocations ADD COLUMN held_back_at BIGINT;
CREATE INDEX invocations_unheld_scope_idx ON invocations (run_scope, id)
    WHERE run_scope IS NOT NULL AND held_back_at IS NULL AND status IN ('registered', 'retry', 'rerouted');
