-- Priorities (issue 17): 0-9, higher first among runnable invocations (default 5). The claim
-- reads the oldest runnable invocations through `invocations_claim_idx`, and through this
-- index the runnable ones whose priority is not the default, highest first (a call waiting
-- past the aging time ranks as 9). It holds only calls with a priority of their own, so a
-- node whose calls have none writes no entry to it and reads an empty index.
ALTER TABLE invocations ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
CREATE INDEX invocations_claim_priority_idx ON invocations (priority DESC, id)
    WHERE status IN ('registered', 'retry', 'rerouted') AND priority <> 5;
