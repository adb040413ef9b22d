-- Each workflow keeps its nodes per status; see ../sqlite/0016_workflow_counts.sql.
ALTER TABLE workflows ADD COLUMN counts TEXT NOT NULL DEFAULT '{}';
UPDATE workflows SET counts = COALESCE((SELECT CAST(json_object_agg(c.status, c.n) AS TEXT) FROM
    (SELECT status, COUNT(*) AS n FROM workflow_nodes WHERE workflow = workflows.id GROUP BY status) AS c), '{}');
