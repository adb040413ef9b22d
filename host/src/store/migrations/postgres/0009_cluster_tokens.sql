-- The JobSync token ring and the leader lease (issue 5). Keep in step with
-- ../sqlite/0009_cluster_tokens.sql.

-- Each invocation's token: double SHA-256 of its id, first 8 bytes big-endian, modulo the
-- ring's token count (computed by the router). NULL for invocations routed before the ring.
ALTER TABLE invocations ADD COLUMN token BIGINT;

-- Who owns each token (one row per token once the leader first assigned the ring). A node
-- claims only invocations whose token it owns (pinned tasks aside).
CREATE TABLE token_owners (
    token BIGINT NOT NULL PRIMARY KEY,
    node  TEXT NOT NULL
);
CREATE INDEX token_owners_node ON token_owners (node, token);

-- The ring's version (bumped by every swap) and size.
CREATE TABLE token_ring (
    id           BIGINT NOT NULL PRIMARY KEY,
    version      BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
INSERT INTO token_ring (id, version, total_tokens, updated_at) VALUES (1, 0, 0, 0);

-- One row per swap: nodes before and after, tokens moved, how long the computation took.
CREATE TABLE token_audit (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version      BIGINT NOT NULL,
    leader       TEXT NOT NULL,
    epoch        BIGINT NOT NULL,
    nodes_before TEXT NOT NULL,
    nodes_after  TEXT NOT NULL,
    moved        BIGINT NOT NULL,
    compute_us   BIGINT NOT NULL,
    at           BIGINT NOT NULL
);

-- The leader lease: the oldest live node holds it and renews it every heartbeat; a new holder
-- bumps the epoch, and every write of the leader checks it.
CREATE TABLE cluster_lease (
    id         BIGINT NOT NULL PRIMARY KEY,
    holder     TEXT,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
INSERT INTO cluster_lease (id, holder, epoch, expires_at) VALUES (1, NULL, 0, 0);
