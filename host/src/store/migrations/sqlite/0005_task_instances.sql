-- Task instances (Jobmon): one row per attempt of an invocation, written when the attempt
-- ends, with what it used and the tail of what it printed. Keep in step with
-- ../postgres/0005_task_instances.sql.
CREATE TABLE task_instances (
    invocation_id     TEXT    NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    attempt           INTEGER NOT NULL,
    node              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    error_kind        TEXT,
    error_message     TEXT,
    wall_ms           INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    stdout            TEXT    NOT NULL,
    stderr            TEXT    NOT NULL,
    logs              TEXT    NOT NULL,
    output_truncated  INTEGER NOT NULL,
    ended_at          INTEGER NOT NULL,
    PRIMARY KEY (invocation_id, attempt)
);
