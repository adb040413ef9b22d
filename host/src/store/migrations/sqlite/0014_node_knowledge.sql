-- What a node last reported of each attempt it holds, written by its heartbeat with the
-- deadline (one statement per tick, as before): the guest's memory limit (its peak goes to
-- `peak_memory_bytes`), when its time runs out (database clock; NULL while its clock is
-- stopped or unknown), and, once the attempt ended and while its outcome is not recorded,
-- how it ended. Triage reads these when the node goes silent (model::instance::verdict).
-- Keep in step with ../postgres/0014_node_knowledge.sql.
ALTER TABLE task_instances ADD COLUMN memory_limit_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_instances ADD COLUMN timeout_at INTEGER;
ALTER TABLE task_instances ADD COLUMN exit_status TEXT;
ALTER TABLE task_instances ADD COLUMN exit_kind TEXT;
ALTER TABLE task_instances ADD COLUMN exit_message TEXT;
