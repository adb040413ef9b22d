-- Registration concurrency and idempotency keys; see ../sqlite/0003_call_scopes.sql.
ALTER TABLE invocations ADD COLUMN reg_scope TEXT;
ALTER TABLE invocations ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX invocations_reg_scope_idx ON invocations (reg_scope)
    WHERE status = 'registered' AND reg_scope IS NOT NULL;
CREATE UNIQUE INDEX invocations_idempotency_key_idx ON invocations (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
