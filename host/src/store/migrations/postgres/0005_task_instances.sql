-- Task instances; see ../sqlite/0005_task_instances.sql.
CREATE TABLE task_instances (
    invocation_id     TEXT COLLATE "C" NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt           BIGINT  NOT NULL,
    node              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    error_kind        TEXT,
    error_message     TEXT,
    wall_ms           BIGINT  NOT NULL,
    peak_memory_bytes BIGINT  NOT NULL,
    stdout            TEXT    NOT NULL,
    stderr            TEXT    NOT NULL,
    logs              TEXT    NOT NULL,
    output_truncated  BIGINT  NOT NULL,
    ended_at          BIGINT  NOT NULL,
    PRIMARY KEY (invocation_id, attempt)
);
