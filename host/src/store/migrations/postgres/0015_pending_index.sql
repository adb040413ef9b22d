-- The max_pending recovery (`INVOCATION_PENDING_SINCE`) reads the pending invocations in id
-- order. Without an index of its own its plan walked every invocation through the primary
-- key and filtered (40-90 ms a pass at 100,000 invocations on PostgreSQL, every service
-- tick); pending rows are few (claimed, not started yet), so this index stays small.
CREATE INDEX invocations_pending_idx ON invocations (id) WHERE status = 'pending';
