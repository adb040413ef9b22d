-- How many of an invocation's claims were handed back before they started (the leader's
-- `max_pending` recovery of a claim its live node had not started, a node's hand-back of its
-- queue at shutdown). `attempts` counts every claim, because the attempt number is also the
-- ownership epoch; the attempt budget (`max_attempts`) counts `attempts - unstarted`, so a
-- call that waits in a busy node's queue is never failed for attempts that never ran.
-- Keep in step with ../postgres/0017_unstarted_claims.sql.
ALTER TABLE invocations ADD COLUMN unstarted INTEGER NOT NULL DEFAULT 0;
