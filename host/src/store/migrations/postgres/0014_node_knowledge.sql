-- What a node last reported of each attempt it holds; see ../sqlite/0014_node_knowledge.sql.
ALTER TABLE task_instances ADD COLUMN memory_limit_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE task_instances ADD COLUMN timeout_at BIGINT;
ALTER TABLE task_instances ADD COLUMN exit_status TEXT;
ALTER TABLE task_instances ADD COLUMN exit_kind TEXT;
ALTER TABLE task_instances ADD COLUMN exit_message TEXT;
