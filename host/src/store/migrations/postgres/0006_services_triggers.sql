-- Node membership, atomic-service executions, triggers and events (issue 3; membership is the
-- base the cluster builds on). Keep in step with ../sqlite/0006_services_triggers.sql.

-- Options of a task beyond the columns of 0001 (concurrency policies, ...), as JSON of
-- `model::TaskPolicy`; absent keys take their defaults.
ALTER TABLE tasks ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

-- Nodes of the cluster (one row on a single-node daemon). `joined_at` is the first
-- registration and never changes (seniority survives a restart); `heartbeat_at` is refreshed
-- every heartbeat interval on the database clock; `left_at` is set by a clean leave.
CREATE TABLE nodes (
    name         TEXT    NOT NULL PRIMARY KEY,
    labels       TEXT    NOT NULL DEFAULT '[]',
    capacity     BIGINT NOT NULL,
    joined_at    BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    left_at      BIGINT
);

-- Executions of the atomic services (recovery, triggers, purge). The partial unique index is
-- the storage gate: at most one execution is `running` cluster-wide.
CREATE TABLE service_runs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX service_runs_gate_idx ON service_runs (status) WHERE status = 'running';
CREATE INDEX service_runs_started_idx ON service_runs (started_at);

-- Triggers: route `task` when `condition` (JSON of `model::TriggerCondition`) holds.
-- `state` keeps what an `all` composite has seen so far and the cron position.
CREATE TABLE triggers (
    id         TEXT    NOT NULL PRIMARY KEY,
    task       TEXT    NOT NULL,
    args       TEXT,
    args_from  TEXT    NOT NULL,
    condition  TEXT    NOT NULL,
    state      TEXT    NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);

-- One row per firing: the primary key is the claim (a run fires once, whoever evaluates it).
CREATE TABLE trigger_runs (
    trigger_id    TEXT    NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    run_key       TEXT    NOT NULL,
    invocation_id TEXT,
    at            BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, run_key)
);

-- Events (`POST /v1/events`), read by the trigger evaluation in `seq` order.
CREATE TABLE events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code    TEXT    NOT NULL,
    payload TEXT    NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX events_at_idx ON events (at);

-- How far the trigger evaluation has read: `history` (invocation_history.seq), `events`
-- (events.seq) and `cron` (a database time in ms).
CREATE TABLE trigger_cursors (
    name     TEXT    NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
);
