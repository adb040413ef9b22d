-- Running concurrency: `run_scope` is the running scope of an invocation (see
-- orchestrator/policy.rs). At most one invocation of a scope may be owned (pending, running,
-- paused or resumed) at a time: claims skip the others, and this unique index makes it hold
-- even against a concurrent claimer. Keep in step with ../postgres/0004_running_scopes.sql.
ALTER TABLE invocations ADD COLUMN run_scope TEXT;
CREATE UNIQUE INDEX invocations_run_scope_idx ON invocations (run_scope)
    WHERE run_scope IS NOT NULL AND status IN ('pending', 'running', 'paused', 'resumed');
