-- Registration concurrency and idempotency keys. `reg_scope` is the registration scope of a
-- call (see orchestrator/policy.rs): at most one invocation per scope may wait in
-- `registered`; later calls of the same scope reuse it. `idempotency_key` is the client's key:
-- one invocation per key, for ever. The unique indexes make both hold across nodes.
-- Keep in step with ../postgres/0003_call_scopes.sql.
ALTER TABLE invocations ADD COLUMN reg_scope TEXT;
ALTER TABLE invocations ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX invocations_reg_scope_idx ON invocations (reg_scope)
    WHERE status = 'registered' AND reg_scope IS NOT NULL;
CREATE UNIQUE INDEX invocations_idempotency_key_idx ON invocations (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
