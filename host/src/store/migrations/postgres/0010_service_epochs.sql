-- The atomic services run on the leader under its lease (issue 5). Keep in step with
-- ../sqlite/0010_service_epochs.sql.

-- The lease epoch an execution ran under: a new term abandons the running record of an
-- earlier one at once, and the records show which leader term did what.
ALTER TABLE service_runs ADD COLUMN epoch BIGINT;
