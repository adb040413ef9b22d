-- Priorities (issue 17): 0-9, higher first among runnable invocations (default 5). The claim
-- reads the runnable ones by priority through this index, and the oldest ones through
-- `invocations_claim_idx` (a call waiting past the aging time ranks as 9).
ALTER TABLE invocations ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
CREATE INDEX invocations_claim_priority_idx ON invocations (priority DESC, id)
    WHERE status IN ('registered', 'retry', 'rerouted');
