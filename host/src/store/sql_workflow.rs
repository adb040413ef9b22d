//! SQL of the workflow tables (`workflows`, `workflow_nodes`, `workflow_edges`); a child of
//! `sql.rs` so that it shares its dialect macros. Every statement touches one workflow (`$1`)
//! and reads or writes only the nodes it needs through the indexes of migration 0008: a step
//! costs what its changes cost, not what the graph weighs.

use super::Sql;

/// The columns of a `WorkflowRow` (store/workflow.rs), in order.
macro_rules! workflow_columns {
    () => {
        "id, name, kind, status, max_concurrently_running, fail_fast, max_attempts, task_limits, \
         paused, version, created_at, updated_at, counts, trace_parent"
    };
}

// ---------------------------------------------------------------------------------------------
// Creation.

macro_rules! workflow_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO workflows (id, name, kind, status, max_concurrently_running, fail_fast, \
             max_attempts, task_limits, counts, paused, version, created_at, updated_at, trace_parent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, 0, ",
            now_ms!($d),
            ", ",
            now_ms!($d),
            ", $10) RETURNING ",
            workflow_columns!()
        )
    };
}
/// A new workflow: `$1` id, `$2` name, `$3` kind, `$4` status, `$5` max running, `$6` fail
/// fast, `$7` max attempts, `$8` task limits JSON, `$9` its nodes per status (JSON), `$10` its
/// trace context (or NULL).
pub(in crate::store) const WORKFLOW_INSERT: Sql = both!(workflow_insert);

macro_rules! nodes_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO workflow_nodes (workflow, node, seq, task, args, status, invocation, updated_at) \
             SELECT $2, j.value ->> 'node', CAST(j.value ->> 'seq' AS BIGINT), j.value ->> 'task', \
             j.value ->> 'args', j.value ->> 'status', NULL, CAST($3 AS BIGINT) FROM ",
            json_rows!($d),
            " ORDER BY j.key"
        )
    };
}
/// The nodes of workflow `$2` from the JSON array `$1` of `{node, seq, task, args, status}`,
/// stamped `$3` (the workflow's creation time).
pub(in crate::store) const NODES_INSERT: Sql = both!(nodes_insert);

macro_rules! edges_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO workflow_edges (workflow, node, upstream) \
             SELECT $2, j.value ->> 'node', j.value ->> 'upstream' FROM ",
            json_rows!($d),
            " ORDER BY j.key"
        )
    };
}
/// The edges of workflow `$2` from the JSON array `$1` of `{node, upstream}`.
pub(in crate::store) const EDGES_INSERT: Sql = both!(edges_insert);

/// Refreshes PostgreSQL's statistics of the graph tables (after a large workflow arrived).
pub(in crate::store) const ANALYZE_POSTGRES: &str = "ANALYZE workflow_nodes, workflow_edges";

// ---------------------------------------------------------------------------------------------
// Reads.

/// One workflow: `$1` id.
pub(in crate::store) const WORKFLOW_GET: Sql =
    Sql::same(concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE id = $1"));

/// One workflow, locked until the end of the transaction on PostgreSQL (SQLite's `BEGIN
/// IMMEDIATE` already serialises writers): every step and control change of a workflow
/// takes this first, so they apply one after the other.
pub(in crate::store) const WORKFLOW_LOCK: Sql = Sql {
    sqlite: concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE id = $1"),
    postgres: concat!("SELECT ", workflow_columns!(), " FROM workflows WHERE id = $1 FOR UPDATE"),
};

/// The newest `$1` workflows.
pub(in crate::store) const WORKFLOW_LIST: Sql =
    Sql::same(concat!("SELECT ", workflow_columns!(), " FROM workflows ORDER BY id DESC LIMIT CAST($1 AS BIGINT)"));

/// Ids of the workflows that may still move (queued, running, halted: a halted one still
/// syncs its running nodes), oldest first, at most `$1`.
pub(in crate::store) const WORKFLOW_ACTIVE: Sql = Sql::same(
    "SELECT id FROM workflows WHERE status IN ('queued', 'running', 'halted') ORDER BY id \
     LIMIT CAST($1 AS BIGINT)",
);

/// Every node of workflow `$1`, in `seq` order.
pub(in crate::store) const NODES_ALL: Sql =
    Sql::same("SELECT node, task, status, invocation, updated_at FROM workflow_nodes WHERE workflow = $1 ORDER BY seq");

/// Every edge of workflow `$1`.
pub(in crate::store) const EDGES_ALL: Sql =
    Sql::same("SELECT node, upstream FROM workflow_edges WHERE workflow = $1 ORDER BY node, upstream");

/// The nodes of workflow `$1` changed after `$2` (database ms), oldest change first.
pub(in crate::store) const NODES_SINCE: Sql = Sql::same(
    "SELECT node, task, status, invocation, updated_at FROM workflow_nodes \
     WHERE workflow = $1 AND updated_at > $2 ORDER BY updated_at, seq",
);

/// Running nodes per task of workflow `$1` (also inside the step, after the sync), and one
/// row `('failed', '', 1)` when some node failed (fail fast): whether, not how many, so the
/// cost is that of the running nodes, however many failed.
pub(in crate::store) const RUNNING_AND_FAILED: Sql = Sql::same(
    "SELECT CAST('running' AS TEXT) AS status, task, COUNT(*) AS count FROM workflow_nodes \
     WHERE workflow = $1 AND status = 'running' GROUP BY task \
     UNION ALL SELECT CAST('failed' AS TEXT), CAST('' AS TEXT), CAST(1 AS BIGINT) WHERE EXISTS \
     (SELECT 1 FROM workflow_nodes WHERE workflow = $1 AND status = 'failed')",
);

/// Running nodes of workflow `$1` whose invocation is final: what a step would sync.
pub(in crate::store) const SYNCABLE: Sql = Sql::same(concat!(
    "SELECT COUNT(*) AS count FROM workflow_nodes n JOIN invocations i ON i.id = n.invocation \
     WHERE n.workflow = $1 AND n.status = 'running' AND i.status IN ",
    final_statuses!()
));

/// The distinct tasks of the ready nodes of workflow `$1`, as a CTE `tasks(task)` whose last
/// row is NULL: a loose index scan of `(workflow, status, task, seq)` (one probe per task, not
/// a read of every ready node).
macro_rules! ready_tasks {
    () => {
        "tasks(task) AS (SELECT (SELECT m.task FROM workflow_nodes m WHERE m.workflow = $1 \
         AND m.status = 'ready' ORDER BY m.task LIMIT 1) \
         UNION ALL SELECT (SELECT m.task FROM workflow_nodes m WHERE m.workflow = $1 \
         AND m.status = 'ready' AND m.task > tasks.task ORDER BY m.task LIMIT 1) \
         FROM tasks WHERE tasks.task IS NOT NULL)"
    };
}

/// The ready nodes that could start, as a CTE `caps(task, cap)`: each task of a ready node
/// with the most of its nodes a step may start, from the JSON array `$2` of `{task, cap}`
/// (tasks with a limit) or `$3` (the others).
macro_rules! candidate_caps {
    ($d:ident) => {
        concat!(
            "caps(task, cap) AS (SELECT t.task, COALESCE((SELECT CAST(c.value ->> 'cap' AS BIGINT) FROM ",
            json_rows!($d, "$2", "c"),
            " WHERE c.value ->> 'task' = t.task), CAST($3 AS BIGINT)) FROM tasks t WHERE t.task IS NOT NULL)"
        )
    };
}

macro_rules! candidates {
    (sqlite) => {
        concat!(
            "WITH RECURSIVE ",
            ready_tasks!(),
            ", ",
            candidate_caps!(sqlite),
            ", walk(task, seq, k, cap) AS (SELECT caps.task, (SELECT m.seq FROM workflow_nodes m \
             WHERE m.workflow = $1 AND m.status = 'ready' AND m.task = caps.task ORDER BY m.seq LIMIT 1), \
             1, caps.cap FROM caps WHERE caps.cap > 0 \
             UNION ALL SELECT walk.task, (SELECT m.seq FROM workflow_nodes m WHERE m.workflow = $1 \
             AND m.status = 'ready' AND m.task = walk.task AND m.seq > walk.seq ORDER BY m.seq LIMIT 1), \
             walk.k + 1, walk.cap FROM walk WHERE walk.k < walk.cap AND walk.seq IS NOT NULL), \
             upto AS MATERIALIZED (SELECT task, MAX(seq) AS last FROM walk GROUP BY task) \
             SELECT n.node, n.task, n.args FROM upto CROSS JOIN workflow_nodes n WHERE n.workflow = $1 \
             AND n.status = 'ready' AND n.task = upto.task AND n.seq <= upto.last ORDER BY n.seq"
        )
    };
    (postgres) => {
        concat!(
            "WITH RECURSIVE ",
            ready_tasks!(),
            ", ",
            candidate_caps!(postgres),
            " SELECT x.node, x.task, x.args FROM caps CROSS JOIN LATERAL (SELECT n.node, n.task, n.args, n.seq \
             FROM workflow_nodes n WHERE n.workflow = $1 AND n.status = 'ready' AND n.task = caps.task \
             ORDER BY n.seq LIMIT caps.cap) AS x ORDER BY x.seq"
        )
    };
}
/// The ready nodes of workflow `$1` that could start, in `seq` order: per task of a ready
/// node, its first `cap` ready nodes (`$2` JSON array of `{task, cap}` for tasks with a limit,
/// `$3` for the others). The greedy selection (`workflows::select_ready`) over these picks
/// what it would pick over every ready node: a node it picks is among the first `cap` of its
/// task, since picks never exceed the free places nor a task's room. The cost is one index
/// probe per ready task plus the rows returned, whatever the number of ready nodes: SQLite
/// (no `LATERAL`, and no correlated `LIMIT`) walks each task's index range row by row to its
/// last allowed `seq` and reads that range; PostgreSQL takes `LIMIT cap` of each task.
pub(in crate::store) const CANDIDATES: Sql = both!(candidates);

// ---------------------------------------------------------------------------------------------
// The step (one transaction, after WORKFLOW_LOCK).

macro_rules! step_sync {
    ($d:ident) => {
        concat!(
            "UPDATE workflow_nodes SET status = CASE WHEN i.status = 'success' THEN 'done' ELSE 'failed' END, \
             updated_at = ",
            now_ms!($d),
            " FROM invocations i WHERE workflow_nodes.workflow = $1 AND workflow_nodes.status = 'running' \
             AND i.id = workflow_nodes.invocation AND i.status IN ",
            final_statuses!(),
            " RETURNING workflow_nodes.node, workflow_nodes.status"
        )
    };
}
/// b. Running nodes of workflow `$1` whose invocation is final: `success` → `done`, any other
/// final status → `failed`. Returns `(node, status)`.
pub(in crate::store) const STEP_SYNC: Sql = both!(step_sync);

/// The nodes of `$1` downstream of the JSON array `$2` whose upstreams are all done, as a
/// CTE `ok(node)`: driven from the edges of the just-done nodes, never from the (possibly
/// huge) set of waiting nodes. On PostgreSQL the `LATERAL … OFFSET 0` subqueries make each
/// step an index lookup per row whatever the planner believes about the tables (with the
/// estimates of a freshly inserted graph it hashed whole tables: 100 ms a step at 10,000
/// nodes); SQLite (no `LATERAL`) runs correlated subqueries row by row anyway, and its
/// `CROSS JOIN` fixes the join order (the just-done nodes outside, the edges' index inside).
macro_rules! downstream_ready {
    (sqlite) => {
        concat!(
            "WITH dn AS MATERIALIZED (SELECT DISTINCT e.node FROM ",
            json_texts!(sqlite, "$2", "j"),
            " CROSS JOIN workflow_edges e WHERE e.workflow = $1 AND e.upstream = j.value), \
             ok AS MATERIALIZED (SELECT dn.node FROM dn WHERE NOT EXISTS (SELECT 1 FROM workflow_edges e2 \
             JOIN workflow_nodes u ON u.workflow = e2.workflow AND u.node = e2.upstream \
             WHERE e2.workflow = $1 AND e2.node = dn.node AND u.status <> 'done')) "
        )
    };
    (postgres) => {
        concat!(
            "WITH dn AS MATERIALIZED (SELECT DISTINCT e.node FROM ",
            json_texts!(postgres, "$2", "j"),
            " CROSS JOIN LATERAL (SELECT e.node FROM workflow_edges e WHERE e.workflow = $1 \
             AND e.upstream = j.value OFFSET 0) AS e), \
             ok AS MATERIALIZED (SELECT dn.node FROM dn CROSS JOIN LATERAL (SELECT COUNT(*) AS pending \
             FROM workflow_edges e2 CROSS JOIN LATERAL (SELECT u.status FROM workflow_nodes u \
             WHERE u.workflow = $1 AND u.node = e2.upstream OFFSET 0) AS u \
             WHERE e2.workflow = $1 AND e2.node = dn.node AND u.status <> 'done') AS p WHERE p.pending = 0) "
        )
    };
}
/// The update of [`STEP_READY`]; SQLite's `+status` keeps the planner on the primary key
/// (`+` turns the column into an expression no index serves), and `node IN (SELECT …)`
/// rather than `FROM ok` keeps `ok` outside: with `FROM ok`, SQLite 3.51 walked every node
/// of the workflow through the status index and probed `ok` for each (76 ms a step at
/// 100,000 nodes, holding the one writer: unrelated routings waited behind it).
macro_rules! step_ready {
    (sqlite) => {
        concat!(
            downstream_ready!(sqlite),
            "UPDATE workflow_nodes SET status = 'ready', updated_at = ",
            now_ms!(sqlite),
            " WHERE workflow_nodes.workflow = $1 AND workflow_nodes.node IN (SELECT ok.node FROM ok) \
             AND +workflow_nodes.status = 'waiting' RETURNING workflow_nodes.node"
        )
    };
    (postgres) => {
        concat!(
            downstream_ready!(postgres),
            "UPDATE workflow_nodes SET status = 'ready', updated_at = ",
            now_ms!(postgres),
            " FROM ok WHERE workflow_nodes.workflow = $1 AND workflow_nodes.node = ok.node \
             AND workflow_nodes.status = 'waiting' RETURNING workflow_nodes.node"
        )
    };
}
/// c. The direct downstream of the nodes in the JSON array `$2` (just done) of workflow `$1`:
/// `waiting` → `ready` when every upstream is done.
pub(in crate::store) const STEP_READY: Sql = both!(step_ready);

/// The update of [`STEP_START`]. The offered nodes are a MATERIALIZED CTE read first, each
/// found by primary key: flattened into the join, SQLite's planner preferred walking every
/// ready node of the workflow through the status index with the JSON rows inside (3 s a step
/// with 20,000 ready nodes); SQLite's `+status` keeps the status index out of it.
macro_rules! step_start {
    ($d:ident, $status:literal) => {
        concat!(
            "WITH x AS MATERIALIZED (SELECT j.value ->> 'node' AS node, j.value ->> 'invocation' AS invocation FROM ",
            json_rows!($d, "$2", "j"),
            ") UPDATE workflow_nodes SET status = CASE WHEN x.invocation IS NULL THEN 'failed' ELSE 'running' END, \
             invocation = COALESCE(x.invocation, workflow_nodes.invocation), updated_at = ",
            now_ms!($d),
            " FROM x WHERE workflow_nodes.workflow = $1 AND workflow_nodes.node = x.node \
             AND ",
            $status,
            " = 'ready' RETURNING workflow_nodes.node, workflow_nodes.status"
        )
    };
    (sqlite) => {
        step_start!(sqlite, "+workflow_nodes.status")
    };
    (postgres) => {
        step_start!(postgres, "workflow_nodes.status")
    };
}
/// e. Starts the nodes of workflow `$1` in the JSON array `$2` of `{node, invocation}` that
/// are still `ready` (compare-and-swap): `running` with that invocation, or `failed` when
/// the invocation is null (it could not be built: its task is gone). Returns `(node, status)`.
pub(in crate::store) const STEP_START: Sql = both!(step_start);

// e. The invocations of started nodes go through the routing insert (`sql::INVOCATION_INSERT`
// with `insert_registered!` of engine.rs).

/// Everything downstream (transitively) of the nodes in the JSON array `$2` of workflow `$1`,
/// as a CTE `down(node)`.
macro_rules! downstream_all {
    ($d:ident) => {
        concat!(
            "WITH RECURSIVE down(node) AS (SELECT e.node FROM ",
            json_texts!($d, "$2", "j"),
            " CROSS JOIN workflow_edges e WHERE e.workflow = $1 AND e.upstream = j.value \
             UNION SELECT e.node FROM down CROSS JOIN workflow_edges e \
             WHERE e.workflow = $1 AND e.upstream = down.node) "
        )
    };
}

/// The update of [`STEP_BLOCK`]; SQLite's `+status` keeps its planner on the primary key
/// (the nodes downstream), not on every waiting and ready node of the workflow.
macro_rules! step_block {
    ($d:ident, $status:literal) => {
        concat!(
            downstream_all!($d),
            "UPDATE workflow_nodes SET status = 'blocked', updated_at = ",
            now_ms!($d),
            " WHERE workflow = $1 AND ",
            $status,
            " IN ('waiting', 'ready') AND node IN (SELECT node FROM down) RETURNING node"
        )
    };
    (sqlite) => {
        step_block!(sqlite, "+status")
    };
    (postgres) => {
        step_block!(postgres, "status")
    };
}
/// d. Everything downstream (transitively) of the nodes in the JSON array `$2` (just failed)
/// of workflow `$1` that has not run: → `blocked`.
pub(in crate::store) const STEP_BLOCK: Sql = both!(step_block);

macro_rules! step_block_from {
    ($d:ident, $status:literal) => {
        concat!(
            downstream_all!($d),
            "SELECT status, COUNT(*) AS count FROM workflow_nodes WHERE workflow = $1 AND ",
            $status,
            " IN ('waiting', 'ready') AND node IN (SELECT node FROM down) GROUP BY status"
        )
    };
    (sqlite) => {
        step_block_from!(sqlite, "+status")
    };
    (postgres) => {
        step_block_from!(postgres, "status")
    };
}
/// What [`STEP_BLOCK`] will block, per status it leaves (the workflow's counts follow it; an
/// UPDATE's `RETURNING` sees only the new status). Blocking is rare (a node failed) and the
/// workflow row is locked, so reading the set twice is cheap and consistent.
pub(in crate::store) const STEP_BLOCK_FROM: Sql = both!(step_block_from);

macro_rules! step_status {
    ($d:ident) => {
        concat!(
            "UPDATE workflows SET status = $2, counts = $3, version = version + 1, updated_at = ",
            now_ms!($d),
            " WHERE id = $1 RETURNING ",
            workflow_columns!()
        )
    };
}
/// f. Sets the status (`$2`, from `workflow::status_of` over the counts) and the nodes per
/// status (`$3`, JSON) of workflow `$1`, bumps `version` and `updated_at`.
pub(in crate::store) const STEP_STATUS: Sql = both!(step_status);

// ---------------------------------------------------------------------------------------------
// Control (each after WORKFLOW_LOCK).

macro_rules! workflow_set_paused {
    ($d:ident) => {
        concat!(
            "UPDATE workflows SET paused = $2, status = CASE WHEN $2 THEN 'halted' \
             WHEN EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow = $1 \
             AND n.status IN ('running', 'done', 'failed', 'blocked')) THEN 'running' ELSE 'queued' END, \
             counts = $3, version = version + 1, updated_at = ",
            now_ms!($d),
            " WHERE id = $1 RETURNING ",
            workflow_columns!()
        )
    };
}
/// Pauses (`$2` true: `halted`) or resumes (`$2` false: `running` or `queued`) workflow `$1`,
/// with its nodes per status `$3` (JSON; a cold resume moved some).
pub(in crate::store) const WORKFLOW_SET_PAUSED: Sql = both!(workflow_set_paused);

macro_rules! nodes_restart {
    ($d:ident) => {
        concat!(
            "UPDATE workflow_nodes SET status = 'ready', updated_at = ",
            now_ms!($d),
            " FROM invocations i WHERE workflow_nodes.workflow = $1 AND workflow_nodes.status = 'running' \
             AND i.id = workflow_nodes.invocation AND i.status NOT IN ",
            final_statuses!(),
            " RETURNING workflow_nodes.invocation"
        )
    };
}
/// Cold resume: the running nodes of workflow `$1` whose invocation is not final go back to
/// `ready` (keeping the old invocation id until a step starts a new one). Returns the old
/// invocations, for the caller to cancel. A node whose invocation is final already is left
/// to the next step's sync, so a done node is never rerun.
pub(in crate::store) const NODES_RESTART: Sql = both!(nodes_restart);

macro_rules! nodes_cancel {
    ($d:ident) => {
        concat!(
            "UPDATE workflow_nodes SET status = 'cancelled', updated_at = ",
            now_ms!($d),
            " WHERE workflow = $1 AND status IN ('waiting', 'ready', 'running') RETURNING invocation"
        )
    };
}
/// Cancel: every unfinished node of workflow `$1` → `cancelled`; returns their invocations
/// (null for those never started), for the caller to cancel.
pub(in crate::store) const NODES_CANCEL: Sql = both!(nodes_cancel);

macro_rules! workflow_cancel {
    ($d:ident) => {
        concat!(
            "UPDATE workflows SET status = 'cancelled', counts = $2, version = version + 1, updated_at = ",
            now_ms!($d),
            " WHERE id = $1 RETURNING ",
            workflow_columns!()
        )
    };
}
/// Marks workflow `$1` cancelled, with its nodes per status `$2` (JSON).
pub(in crate::store) const WORKFLOW_CANCEL: Sql = both!(workflow_cancel);
