-- Task instances become live rows (Jobmon): written `queued` by the claim, `running` with a
-- `report_by` deadline the node's heartbeat pushes forward, final with the outcome.
-- `report_by` is NULL once the instance is final; `signal` carries a control signal
-- (`cancel`, `kill`) to the node that runs it, delivered by its next heartbeat.
-- Invocations learn the workflow that routed them and an optional attempt limit of their own.
-- Keep in step with ../postgres/0007_instances_live.sql.
ALTER TABLE task_instances ADD COLUMN report_by INTEGER;
ALTER TABLE task_instances ADD COLUMN signal TEXT;
ALTER TABLE task_instances ADD COLUMN started_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX task_instances_live ON task_instances (report_by) WHERE report_by IS NOT NULL;
CREATE INDEX task_instances_node_live ON task_instances (node) WHERE report_by IS NOT NULL;
ALTER TABLE invocations ADD COLUMN workflow TEXT;
ALTER TABLE invocations ADD COLUMN max_attempts INTEGER;
