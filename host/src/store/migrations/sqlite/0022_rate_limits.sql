-- Rate limits (issue 17): at most `limit_n` attempts of the tasks naming a limit start per
-- window of `per_ms` (database clock, aligned on multiples of `per_ms`), per value of the
-- arguments at `key_path` when it is set. `tasks.rate_limit` names a task's limit (a copy of
-- the task's options, so that the ordinary claim can leave its calls out). A claim of
-- rate-limited calls locks the limits it reads first (one global order: limits by name, then
-- invocations by id), then counts what started in the current window in `rate_limit_usage`
-- (one row per limit, key and window; rows of past windows are deleted by the next claim).
CREATE TABLE rate_limits (
    name       TEXT   NOT NULL PRIMARY KEY,
    limit_n    BIGINT NOT NULL,
    per_ms     BIGINT NOT NULL,
    key_path   TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE rate_limit_usage (
    name         TEXT   NOT NULL,
    rkey         TEXT   NOT NULL,
    window_start BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (name, rkey, window_start)
);
ALTER TABLE tasks ADD COLUMN rate_limit TEXT;
