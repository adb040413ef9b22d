-- Warden schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_init.sql (same sequence
-- numbers, same tables and columns; only types and dialect details differ).
-- Timestamps are BIGINT milliseconds since the Unix epoch from the database clock; JSON is
-- TEXT; statuses are lower snake case TEXT. Invocation ids use the "C" collation so that they
-- sort bytewise (UUIDv7 strings sort by creation time) whatever the database's locale.

-- Uploaded components. The bytes live here so that every node of a cluster can load them.
CREATE TABLE components (
    name        TEXT   NOT NULL PRIMARY KEY,
    digest      TEXT   NOT NULL,
    size_bytes  BIGINT NOT NULL,
    bytes       BYTEA  NOT NULL,
    uploaded_at BIGINT NOT NULL
);

-- Tasks registered by components, with their effective options. `user_patched` is the JSON
-- of the options a user changed (PATCH); they win over what a re-uploaded component describes.
CREATE TABLE tasks (
    name                     TEXT    NOT NULL PRIMARY KEY,
    component                TEXT    NOT NULL REFERENCES components (name) ON DELETE CASCADE,
    description              TEXT,
    max_attempts             BIGINT  NOT NULL,
    timeout_ms               BIGINT  NOT NULL,
    memory_limit_bytes       BIGINT  NOT NULL,
    registration_concurrency TEXT    NOT NULL,
    running_concurrency      TEXT    NOT NULL,
    key_arguments            TEXT    NOT NULL DEFAULT '[]',
    pins                     TEXT    NOT NULL DEFAULT '[]',
    paused                   BOOLEAN NOT NULL DEFAULT FALSE,
    user_patched             TEXT    NOT NULL DEFAULT '{}',
    updated_at               BIGINT  NOT NULL
);

CREATE INDEX tasks_component_idx ON tasks (component);

-- Invocations. `task` is deliberately not a foreign key: removing a component removes its
-- tasks but keeps their invocations (history, results). `owner_node` + `attempts` are the
-- ownership epoch checked by every owned write.
CREATE TABLE invocations (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    task          TEXT   NOT NULL,
    call_id       TEXT   NOT NULL,
    args          TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    owner_node    TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    result        TEXT,
    error_kind    TEXT,
    error_message TEXT,
    parent        TEXT COLLATE "C",
    available_at  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Claim: runnable rows in id (= age) order. A partial index over exactly the claim query's
-- status list lets `ORDER BY id LIMIT n` stop after n rows instead of sorting the backlog.
CREATE INDEX invocations_claim_idx ON invocations (id)
    WHERE status IN ('registered', 'retry', 'rerouted');
-- Listing one task's invocations newest first, and with a status filter too (counting).
CREATE INDEX invocations_task_idx ON invocations (task, id);
CREATE INDEX invocations_task_status_idx ON invocations (task, status, id);
-- Registration concurrency looks calls up by identity.
CREATE INDEX invocations_call_id_idx ON invocations (call_id);
-- Children of an invocation (blocking control).
CREATE INDEX invocations_parent_idx ON invocations (parent) WHERE parent IS NOT NULL;
-- Recovery of a node's owned invocations.
CREATE INDEX invocations_owner_idx ON invocations (owner_node) WHERE owner_node IS NOT NULL;

-- Every status an invocation entered, in order; `seq` only grows, so readers can sync
-- incrementally ("history after seq N").
CREATE TABLE invocation_history (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invocation_id TEXT COLLATE "C" NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    status        TEXT   NOT NULL,
    node          TEXT,
    attempt       BIGINT NOT NULL,
    at            BIGINT NOT NULL
);

CREATE INDEX invocation_history_invocation_idx ON invocation_history (invocation_id, seq);
