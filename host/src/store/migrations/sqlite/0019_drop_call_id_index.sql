-- No query looks an invocation up by its call id any more (registration concurrency goes
-- through `reg_scope`, idempotency through `idempotency_key`): the index only cost every
-- routing a B-tree insert and every call 73 bytes of the database (a third of what the
-- invocation row itself takes). Keep in step with ../postgres/0019_drop_call_id_index.sql.
DROP INDEX IF EXISTS invocations_call_id_idx;
