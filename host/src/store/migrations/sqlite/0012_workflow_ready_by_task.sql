-- A workflow step reads, per task, the first ready nodes in request order, as many as it may
-- start (LIMIT per task), instead of ranking every ready node: an index on
-- (workflow, status, task, seq) serves those reads, the scan of distinct ready tasks, the
-- counts of running nodes per task and every status probe, so it replaces
-- (workflow, status, seq). Keep in step with ../postgres/0012_workflow_ready_by_task.sql.
DROP INDEX workflow_nodes_status_idx;
CREATE INDEX workflow_nodes_task_idx ON workflow_nodes (workflow, status, task, seq);
