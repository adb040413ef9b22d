-- The marker of the last transaction that changed an invocation's status. Only SQLite writes
-- it (see ../sqlite/0002_last_tx.sql); PostgreSQL keeps it NULL so both schemas stay the same.
ALTER TABLE invocations ADD COLUMN last_tx BIGINT;
