-- API keys with roles (issue 11). Keep in step with ../sqlite/0011_api_keys.sql.

-- One row per key: the secret itself is never stored, only its SHA-256 (hex); keys are 256
-- random bits, so a plain hash is enough. `last_used_at` is written in batches, at most once
-- per key per heartbeat interval.
CREATE TABLE api_keys (
    name         TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
