-- Each workflow keeps its nodes per status (a JSON object, e.g. {"done":3,"waiting":7}),
-- written by the transaction that changes them: `GET /v1/workflows/{id}` and the step's
-- status read one row instead of counting every node (30 ms a read at 100,000 nodes, several
-- reads a second while a dashboard or a client watches). Existing workflows are counted once
-- here. Keep in step with ../postgres/0016_workflow_counts.sql.
ALTER TABLE workflows ADD COLUMN counts TEXT NOT NULL DEFAULT '{}';
UPDATE workflows SET counts = COALESCE((SELECT json_group_object(c.status, c.n) FROM
    (SELECT status, COUNT(*) AS n FROM workflow_nodes WHERE workflow = workflows.id GROUP BY status) AS c), '{}');
