-- The marker of the last transaction that changed an invocation's status (a random 64-bit
-- value chosen per transaction). SQLite runs each hot write as one script in one round trip
-- (see engine.rs): the history statement of the script finds the rows the status change hit
-- by this marker, since it cannot see what the change returned. Keep in step with
-- ../postgres/0002_last_tx.sql.
ALTER TABLE invocations ADD COLUMN last_tx INTEGER;
