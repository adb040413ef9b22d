-- Running concurrency; see ../sqlite/0004_running_scopes.sql.
ALTER TABLE invocations ADD COLUMN run_scope TEXT;
CREATE UNIQUE INDEX invocations_run_scope_idx ON invocations (run_scope)
    WHERE run_scope IS NOT NULL AND status IN ('pending', 'running', 'paused', 'resumed');
