-- Workflows and arrays (Jobmon): a graph of nodes, each routed as an invocation when its
-- upstreams are done, within the workflow's running limits. Keep in step with
-- ../sqlite/0008_workflows.sql. See "Workflows (Jobmon)" in ARCHITECTURE.md.
CREATE TABLE workflows (
    id                       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                     TEXT    NOT NULL,
    kind                     TEXT    NOT NULL,
    status                   TEXT    NOT NULL,
    max_concurrently_running BIGINT  NOT NULL,
    fail_fast                BOOLEAN NOT NULL,
    max_attempts             BIGINT,
    task_limits              TEXT    NOT NULL DEFAULT '{}',
    paused                   BOOLEAN NOT NULL DEFAULT FALSE,
    version                  BIGINT  NOT NULL DEFAULT 0,
    created_at               BIGINT  NOT NULL,
    updated_at               BIGINT  NOT NULL
);
-- The scheduler lists the workflows that can still move.
CREATE INDEX workflows_status_idx ON workflows (status);

-- Nodes: `seq` is the order of the request (ready nodes start in that order); `args` the
-- canonical JSON of the arguments; `invocation` the node's current (or last) invocation.
CREATE TABLE workflow_nodes (
    workflow   TEXT COLLATE "C" NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    node       TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    task       TEXT   NOT NULL,
    args       TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    invocation TEXT COLLATE "C",
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workflow, node)
);
-- The step reads nodes of one status (running to sync, ready to start) in seq order.
CREATE INDEX workflow_nodes_status_idx ON workflow_nodes (workflow, status, seq);
-- Incremental sync of clients (`updated_since`).
CREATE INDEX workflow_nodes_updated_idx ON workflow_nodes (workflow, updated_at);

-- Dependencies: `node` runs after `upstream`. The primary key finds a node's upstreams, the
-- index (covering, so that SQLite's planner prefers it) the downstream of a node.
CREATE TABLE workflow_edges (
    workflow TEXT COLLATE "C" NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    node     TEXT NOT NULL,
    upstream TEXT NOT NULL,
    PRIMARY KEY (workflow, node, upstream)
);
CREATE INDEX workflow_edges_upstream_idx ON workflow_edges (workflow, upstream, node);
