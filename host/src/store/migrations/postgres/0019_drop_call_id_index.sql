-- The unused call-id index; see ../sqlite/0019_drop_call_id_index.sql.
DROP INDEX IF EXISTS invocations_call_id_idx;
