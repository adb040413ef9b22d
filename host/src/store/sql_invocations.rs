//! SQL of invocations (`invocations.rs`): routing, claims, reads and purge, both dialects side
//! by side; on SQLite routing and claims are one-trip scripts (see `engine.rs`).

use super::Sql;

// ---------------------------------------------------------------------------------------------
// Invocations: batched writes.

macro_rules! invocation_insert {
    ($d:ident) => {
        invocation_insert!($d, "JOIN")
    };
    ($d:ident, $join:literal) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now) \
             INSERT INTO invocations (id, task, call_id, args, status, owner_node, attempts, \
             result, error_kind, error_message, parent, reg_scope, idempotency_key, run_scope, \
             workflow, max_attempts, token, trace_parent, available_at, created_at, updated_at, priority) \
             SELECT j.value ->> 'id', t.name, j.value ->> 'call_id', \
             j.value ->> 'args', 'registered', NULL, 0, NULL, NULL, NULL, j.value ->> 'parent', \
             j.value ->> 'scope', j.value ->> 'idempotency_key', j.value ->> 'run_scope', \
             j.value ->> 'workflow', CAST(j.value ->> 'max_attempts' AS BIGINT), \
             CAST(j.value ->> 'token' AS BIGINT), j.value ->> 'trace_parent', \
             COALESCE(CAST(j.value ->> 'not_before' AS BIGINT), \
             c.now + COALESCE(CAST(j.value ->> 'delay_ms' AS BIGINT), 0)), c.now, c.now, \
             COALESCE(CAST(j.value ->> 'priority' AS INTEGER), 5) \
             FROM ",
            json_rows!($d),
            " ",
            $join,
            " tasks t ON t.name = j.value ->> 'task' CROSS JOIN c \
             ORDER BY j.key RETURNING ",
            invocation_columns!()
        )
    };
}
/// Inserts the JSON array `$1` of `{id, task, call_id, args, parent, scope, idempotency_key,
/// run_scope, workflow, max_attempts, token}` (`engine::insert_json`) as `registered`
/// invocations. Calls of unknown tasks are skipped (the join), which the caller detects by the
/// returned count and turns into `NotFound` (rolling the transaction back); see
/// `invocations::insert_registered`. Routing uses [`INVOCATION_INSERT_ONE_TRIP`] (SQLite) and
/// [`INVOCATION_ROUTE_ONE_STATEMENT`] (PostgreSQL) instead.
pub(in crate::store) const INVOCATION_INSERT: Sql = both!(invocation_insert);

macro_rules! invocation_insert_unknown_task {
    ($d:ident) => {
        concat!(
            "SELECT j.value ->> 'task' AS name FROM ",
            json_rows!($d),
            " WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.name = j.value ->> 'task') \
             ORDER BY j.key LIMIT 1"
        )
    };
}
/// The first task of the JSON array `$1` of calls (as for [`INVOCATION_INSERT`]) that
/// does not exist, as `name`: explains a failed [`INVOCATION_INSERT_ONE_TRIP`] (SQLite) or
/// [`INVOCATION_ROUTE_ONE_STATEMENT`] (PostgreSQL).
pub(in crate::store) const INVOCATION_INSERT_UNKNOWN_TASK: Sql = both!(invocation_insert_unknown_task);

macro_rules! history_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
             SELECT j.value ->> 'id', j.value ->> 'status', j.value ->> 'node', \
             CAST(j.value ->> 'attempt' AS BIGINT), CAST(j.value ->> 'at' AS BIGINT) FROM ",
            json_rows!($d),
            " ORDER BY j.key"
        )
    };
}
/// Appends the JSON array `$1` of `{id, status, node, attempt, at}` to the history, in array
/// order (so `seq` follows it).
pub(in crate::store) const HISTORY_INSERT: Sql = both!(history_insert);

/// Claim (`$1` node, `$2` limit, `$3` transaction marker), SQLite: one writer, so no row
/// locks are needed. Part of [`INVOCATION_CLAIM_ONE_TRIP`]. The limit goes through a `CAST`:
/// SQLite plans a bare `LIMIT $2` with the bound value and marks the statement to be
/// prepared again whenever `$2` is bound, which sqlx does on every run (≈ 50 µs each time).
/// The ids a claim takes (`$2` limit; `c` is the CTE with `now`): runnable invocations of
/// unpaused tasks, higher priority first and oldest first within one, skipping any whose
/// running scope already has an owned invocation, and taking at most one per running scope.
/// Aging: a call claimable for longer than `$aging` ms ranks as priority 9, so a low
/// priority waits at most that long plus the priority-9 calls older than it. The candidates
/// are the oldest `4 × $2` (through `invocations_claim_idx`) and the first `4 × $2` whose
/// priority is not the default 5, highest first (through `invocations_claim_priority_idx`,
/// which holds only those: empty, and so free to read and to keep, while no call has a
/// priority of its own); a long backlog costs what a short one does. A call in both sets is
/// one partition of the window (by its id, or its running scope), so it is taken once.
/// Calls of rate-limited tasks are left to [`RATE_CLAIM_CANDIDATES`].
/// `$lock` is PostgreSQL's row lock of the candidates (empty on SQLite, which has one
/// writer). A candidate's token owner is looked up by the token (its primary key): as an
/// `EXISTS`, PostgreSQL without statistics chose to hash all of the node's tokens (10,000) on
/// every claim (1.5 ms).
macro_rules! claim_candidates {
    ($lock:literal, $excluded:expr, $pinned_here:expr, $node:literal, $aging:literal) => {
        concat!(
            "SELECT w.id FROM (SELECT k.id, k.eff, ROW_NUMBER() OVER \
             (PARTITION BY COALESCE(k.run_scope, k.id) ORDER BY k.eff DESC, k.id) AS rn FROM \
             (SELECT u.id, u.run_scope, CASE WHEN (SELECT now FROM c) - u.available_at > CAST(",
            $aging,
            " AS BIGINT) THEN 9 ELSE u.priority END AS eff FROM (SELECT * FROM (",
            claimable!(" AND t.rate_limit IS NULL", "i.id", $lock, $excluded, $pinned_here, $node),
            ") AS oldest UNION ALL SELECT * FROM (",
            claimable!(
                " AND i.priority <> 5 AND t.rate_limit IS NULL",
                "i.priority DESC, i.id",
                $lock,
                $excluded,
                $pinned_here,
                $node
            ),
            ") AS prioritized) AS u) AS k) AS w WHERE w.rn = 1 ORDER BY w.eff DESC, w.id LIMIT CAST($2 AS INTEGER)"
        )
    };
}

/// The first `4 × $2` claimable invocations in `$order`, among those matching `$only` too
/// (see [`claim_candidates!`]).
macro_rules! claimable {
    ($only:literal, $order:literal, $lock:literal, $excluded:expr, $pinned_here:expr, $node:literal) => {
        concat!(
            "SELECT i.id, i.run_scope, i.priority, i.available_at FROM invocations i \
             JOIN tasks t ON t.name = i.task WHERE i.status IN ",
            runnable_statuses!(),
            $only,
            " AND i.available_at <= (SELECT now FROM c) AND NOT t.paused \
             AND i.task NOT IN (SELECT x.value FROM ",
            $excluded,
            ") AND (i.token IS NULL OR (SELECT o.node FROM token_owners o WHERE o.token = i.token) = ",
            $node,
            " OR i.task IN (SELECT y.value FROM ",
            $pinned_here,
            ")) \
             AND (i.run_scope IS NULL OR NOT EXISTS (SELECT 1 FROM invocations o \
             WHERE o.run_scope = i.run_scope AND o.status IN ",
            owned_statuses!(),
            ")) ORDER BY ",
            $order,
            " LIMIT 4 * CAST($2 AS INTEGER)",
            $lock
        )
    };
}

/// The claim's binding of an invocation to its component's version: the one it is bound to
/// already (a retry, a re-run after a crash), else the version current now (its first claim).
macro_rules! bind_version {
    () => {
        "component_version = COALESCE(invocations.component_version, (SELECT c.version FROM tasks t \
         JOIN components c ON c.name = t.component WHERE t.name = invocations.task))"
    };
}

macro_rules! invocation_claim_sqlite {
    () => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!(sqlite),
            " AS now) \
             UPDATE invocations SET status = 'pending', owner_node = $1, attempts = attempts + 1, \
             updated_at = (SELECT now FROM c), last_tx = $3, ",
            bind_version!(),
            " WHERE id IN (",
            claim_candidates!("", json_texts!(sqlite, "$5", "x"), json_texts!(sqlite, "$6", "y"), "$1", "$7"),
            ") RETURNING id, task, args, attempts, unstarted, parent, workflow, max_attempts, trace_parent, updated_at, \
             priority, component_version"
        )
    };
}

/// The columns a claim fills in `task_instances` (a `queued` instance per claimed attempt).
macro_rules! queued_instance_columns {
    () => {
        "invocation_id, attempt, node, status, wall_ms, peak_memory_bytes, stdout, stderr, logs, \
         output_truncated, ended_at, report_by, started_at, component_version"
    };
}

/// The runnable invocations held back by running concurrency that no claim has recorded yet
/// (`held_back_at` null): another invocation owns their running scope. Found from the owned
/// invocations of scopes (their unique index) through `invocations_unheld_scope_idx`, at most
/// 1,000 a claim, by id. `$now` is the statement's clock, `$lock` PostgreSQL's row lock.
macro_rules! held_back {
    ($now:expr, $lock:literal) => {
        concat!(
            "SELECT i.id FROM invocations o JOIN invocations i ON i.run_scope = o.run_scope \
             WHERE o.run_scope IS NOT NULL AND o.status IN ",
            owned_statuses!(),
            " AND i.run_scope IS NOT NULL AND i.held_back_at IS NULL AND i.status IN ",
            runnable_statuses!(),
            " AND i.available_at <= ",
            $now,
            " ORDER BY i.id LIMIT 1000",
            $lock
        )
    };
}

/// Claim (`$1` node, `$2` limit, `$3` JSON array of tasks not to claim, `$4` of tasks pinned
/// here, `$5` the report window in ms, `$6` the aging of priorities in ms), PostgreSQL:
/// concurrent claimers skip each other's rows. Moves up to `$2` runnable invocations, in
/// [`claim_candidates!`]'s order, to `pending` for node `$1`, growing
/// `attempts`, and in the same statement writes their `pending` history and a `queued` task
/// instance for each (due to report by claim time + `$5`), both in id order, and records the
/// calls held back by running concurrency for the first time ([`held_back!`], locked with
/// `SKIP LOCKED`: a row another transaction holds is recorded by a later claim): their
/// `held_back_at` and a `concurrency_controlled` history row by node `$1` (they stay runnable).
/// The scopes this claim takes count as owned (the statement's own snapshot does not show
/// them `pending` yet) and the claimed rows are left out (one statement may not change a row
/// twice); returns what a worker needs (unordered: the caller sorts). One statement, its own
/// transaction, one round trip: it was a transaction of the claim and the held-back record
/// (`BEGIN`, two statements, `COMMIT`), and before that three statements for the claim alone.
/// SQLite claims with [`INVOCATION_CLAIM_ONE_TRIP`].
pub(in crate::store) const INVOCATION_CLAIM_POSTGRES: &str = concat!(
    "WITH c AS MATERIALIZED (SELECT ",
    now_ms!(postgres),
    " AS now), \
     picked AS (",
    claim_candidates!(
        " FOR UPDATE OF i SKIP LOCKED",
        json_texts!(postgres, "$3", "x"),
        json_texts!(postgres, "$4", "y"),
        "$1",
        "$6"
    ),
    "), \
     claimed AS (UPDATE invocations SET status = 'pending', owner_node = $1, \
     attempts = invocations.attempts + 1, updated_at = (SELECT now FROM c), ",
    bind_version!(),
    " FROM picked WHERE invocations.id = picked.id \
     RETURNING invocations.id, invocations.task, invocations.args, invocations.attempts, \
     invocations.unstarted, invocations.parent, invocations.workflow, invocations.max_attempts, \
     invocations.trace_parent, invocations.updated_at, invocations.run_scope, invocations.priority, \
     invocations.component_version), \
     history AS (INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT id, 'pending', $1, attempts, updated_at FROM claimed ORDER BY id), \
     queued AS (INSERT INTO task_instances (",
    queued_instance_columns!(),
    ") SELECT id, attempts, $1, 'queued', 0, 0, '', '', '[]', 0, 0, updated_at + $5, updated_at, component_version \
     FROM claimed ORDER BY id ON CONFLICT DO NOTHING), \
     held AS MATERIALIZED (SELECT i.id FROM invocations i WHERE i.id IN (SELECT h.id FROM (",
    held_back!("(SELECT now FROM c)", ""),
    ") AS h UNION ALL SELECT n.id FROM claimed k JOIN invocations n ON n.run_scope = k.run_scope \
     WHERE k.run_scope IS NOT NULL AND n.held_back_at IS NULL AND n.status IN ",
    runnable_statuses!(),
    " AND n.available_at <= (SELECT now FROM c)) AND i.id NOT IN (SELECT id FROM picked) \
     ORDER BY i.id LIMIT 1000 FOR UPDATE OF i SKIP LOCKED), \
     marked AS (UPDATE invocations SET held_back_at = (SELECT now FROM c) FROM held \
     WHERE invocations.id = held.id RETURNING invocations.id, invocations.attempts), \
     held_history AS (INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT m.id, 'concurrency_controlled', $1, m.attempts, (SELECT now FROM c) FROM marked m ORDER BY m.id) \
     SELECT * FROM claimed"
);

macro_rules! rate_claim_candidates {
    ($d:ident, $lock:literal) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT CAST($5 AS BIGINT) AS now) \
             SELECT x.id, x.run_scope, i.args, t.rate_limit FROM (",
            claimable!(
                " AND t.rate_limit IS NOT NULL",
                "i.id",
                $lock,
                json_texts!($d, "$3", "x"),
                json_texts!($d, "$4", "y"),
                "$1"
            ),
            ") AS x JOIN invocations i ON i.id = x.id JOIN tasks t ON t.name = i.task ORDER BY x.id"
        )
    };
}
/// The candidates of a claim of rate-limited calls (`$1` node, `$2` a quarter of how many to
/// read, `$3` tasks not to claim, `$4` tasks pinned here, `$5` the claim's time): the oldest
/// runnable calls of tasks that name a rate limit, on this node's tokens or pins, whose
/// running scope is free, with their arguments (for the key) and the limit's name; locked
/// (`SKIP LOCKED`) on PostgreSQL. The caller has locked the limits first.
pub(in crate::store) const RATE_CLAIM_CANDIDATES: Sql = Sql {
    sqlite: rate_claim_candidates!(sqlite, ""),
    postgres: rate_claim_candidates!(postgres, " FOR UPDATE OF i SKIP LOCKED"),
};

/// The columns a claim returns (`ClaimedRow` in `invocations.rs`).
macro_rules! claimed_columns {
    ($t:literal) => {
        concat!(
            $t,
            "id, ",
            $t,
            "task, ",
            $t,
            "args, ",
            $t,
            "attempts, ",
            $t,
            "unstarted, ",
            $t,
            "parent, ",
            $t,
            "workflow, ",
            $t,
            "max_attempts, ",
            $t,
            "trace_parent, ",
            $t,
            "updated_at, ",
            $t,
            "priority, ",
            $t,
            "component_version"
        )
    };
}

/// Claims the runnable invocations whose ids are in the JSON array `$2` for node `$1` at time
/// `$3` (the claim's clock), due to report by `$3 + $4`, PostgreSQL: as
/// [`INVOCATION_CLAIM_POSTGRES`] does, in one statement: `pending`, its history and a
/// `queued` instance each. The rows are locked already ([`RATE_CLAIM_CANDIDATES`]).
pub(in crate::store) const CLAIM_IDS_POSTGRES: &str = concat!(
    "WITH claimed AS (UPDATE invocations SET status = 'pending', owner_node = $1, \
     attempts = invocations.attempts + 1, updated_at = CAST($3 AS BIGINT), ",
    bind_version!(),
    " WHERE invocations.id IN (SELECT j.value FROM ",
    json_texts!(postgres, "$2", "j"),
    ") AND invocations.status IN ",
    runnable_statuses!(),
    " RETURNING ",
    claimed_columns!("invocations."),
    "), history AS (INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT id, 'pending', $1, attempts, updated_at FROM claimed ORDER BY id), \
     queued AS (INSERT INTO task_instances (",
    queued_instance_columns!(),
    ") SELECT id, attempts, $1, 'queued', 0, 0, '', '', '[]', 0, 0, updated_at + $4, updated_at, component_version \
     FROM claimed ORDER BY id ON CONFLICT DO NOTHING) \
     SELECT * FROM claimed"
);

/// [`CLAIM_IDS_POSTGRES`] on SQLite, as three statements of one transaction: this one claims
/// (`$4` the transaction's marker), [`CLAIM_IDS_SQLITE_HISTORY`] and
/// [`CLAIM_IDS_SQLITE_QUEUED`] (`$1` node, `$2` marker, `$3` report window) find the claimed
/// rows by their marker.
pub(in crate::store) const CLAIM_IDS_SQLITE: &str = concat!(
    "UPDATE invocations SET status = 'pending', owner_node = $1, attempts = attempts + 1, \
     updated_at = CAST($3 AS BIGINT), last_tx = $4, ",
    bind_version!(),
    " WHERE id IN (SELECT j.value FROM ",
    json_texts!(sqlite, "$2", "j"),
    ") AND status IN ",
    runnable_statuses!(),
    " RETURNING ",
    claimed_columns!("")
);
/// The `pending` history of what [`CLAIM_IDS_SQLITE`] claimed.
pub(in crate::store) const CLAIM_IDS_SQLITE_HISTORY: &str = "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT id, 'pending', owner_node, attempts, updated_at FROM invocations \
     WHERE owner_node = $1 AND last_tx = $2 ORDER BY id";
/// The `queued` instances of what [`CLAIM_IDS_SQLITE`] claimed.
pub(in crate::store) const CLAIM_IDS_SQLITE_QUEUED: &str = concat!(
    "INSERT INTO task_instances (",
    queued_instance_columns!(),
    ") SELECT id, attempts, owner_node, 'queued', 0, 0, '', '', '[]', 0, 0, updated_at + $3, updated_at, component_version \
     FROM invocations WHERE owner_node = $1 AND last_tx = $2 ORDER BY id ON CONFLICT DO NOTHING"
);

/// Routing (durable): inserts the calls in `$1` as [`INVOCATION_INSERT`] does,
/// returning the rows, and writes their `registered` history. A call of an unknown task fails
/// the script instead of being skipped (`LEFT JOIN`: its NULL task breaks the NOT NULL
/// constraint), so the transaction cannot commit without it; the caller rolls back and names
/// the task with [`INVOCATION_INSERT_UNKNOWN_TASK`]. An id that exists fails it too (unique
/// violation). So when the history statement runs, every id of `$1` is a row this transaction
/// inserted.
pub(in crate::store) const INVOCATION_INSERT_ONE_TRIP: &str = one_trip!(
    durable,
    invocation_insert!(sqlite, "LEFT JOIN"),
    concat!(
        "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
         SELECT i.id, 'registered', NULL, i.attempts, i.created_at FROM ",
        json_rows!(sqlite),
        " JOIN invocations i ON i.id = j.value ->> 'id' ORDER BY j.key"
    ),
);

/// Routing on PostgreSQL (durable), ONE statement and so one round trip, its own transaction:
/// inserts the calls in `$1` as [`INVOCATION_INSERT`] does, returning the rows, and writes
/// their `registered` history in array order. As in [`INVOCATION_INSERT_ONE_TRIP`], a call of
/// an unknown task fails the statement (`LEFT JOIN`: its NULL task breaks the NOT NULL
/// constraint) and an id that exists fails it (unique violation), so nothing of a failed
/// routing is stored. (It was four round trips: `BEGIN`, the insert, the history, `COMMIT`;
/// on two busy cores each one may wait for a core, which made the tail of a routing while a
/// large workflow ran.)
pub(in crate::store) const INVOCATION_ROUTE_ONE_STATEMENT: &str = concat!(
    "WITH ins AS (",
    invocation_insert!(postgres, "LEFT JOIN"),
    "), h AS (INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT i.id, 'registered', NULL, i.attempts, i.created_at FROM ",
    json_rows!(postgres),
    " JOIN ins i ON i.id = j.value ->> 'id' ORDER BY j.key) SELECT * FROM ins"
);

/// Claim (relaxed): `$1` node, `$2` limit, `$3` marker, `$4` report window (ms), `$5` the JSON
/// array of tasks the node must not claim (pinned elsewhere), `$6` the JSON array of tasks
/// pinned to it (claimed whatever their token), `$7` the aging of priorities (ms). Otherwise only invocations on the node's
/// tokens (or without a token) are claimed. Claims as
/// [`INVOCATION_CLAIM_POSTGRES`] does (returning the claimed rows), then writes the `pending`
/// history of the rows of node `$1` (found through its owner index) that carry the marker:
/// exactly the claimed ones, and a `queued` task instance for each, due to report by claim
/// time + `$4`. Then it records the calls held back by running concurrency for the first
/// time ([`held_back!`]): a `concurrency_controlled` history row by node `$1` (the invocation
/// stays runnable), and `held_back_at`, so that no later claim records them again. Both
/// statements pick the same rows (same condition, order and limit, one writer).
pub(in crate::store) const INVOCATION_CLAIM_ONE_TRIP: &str = one_trip!(
    relaxed,
    invocation_claim_sqlite!(),
    "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT id, 'pending', owner_node, attempts, updated_at FROM invocations \
     WHERE owner_node = $1 AND last_tx = $3 ORDER BY id",
    concat!(
        "INSERT INTO task_instances (",
        queued_instance_columns!(),
        ") SELECT id, attempts, owner_node, 'queued', 0, 0, '', '', '[]', 0, 0, updated_at + $4, updated_at, component_version \
         FROM invocations WHERE owner_node = $1 AND last_tx = $3 ORDER BY id ON CONFLICT DO NOTHING"
    ),
    concat!(
        "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
         SELECT h.id, 'concurrency_controlled', $1, h.attempts, ",
        now_ms!(sqlite),
        " FROM invocations h WHERE h.id IN (",
        held_back!(now_ms!(sqlite), ""),
        ") ORDER BY h.id"
    ),
    concat!(
        "UPDATE invocations SET held_back_at = ",
        now_ms!(sqlite),
        " WHERE id IN (",
        held_back!(now_ms!(sqlite), ""),
        ")"
    ),
);

macro_rules! invocation_waiting {
    ($d:ident) => {
        concat!(
            "SELECT o.id AS held_by, t.running_concurrency AS policy, i.held_back_at AS since \
             FROM invocations i JOIN invocations o ON o.run_scope = i.run_scope AND o.status IN ",
            owned_statuses!(),
            " LEFT JOIN tasks t ON t.name = i.task WHERE i.id = $1 AND i.run_scope IS NOT NULL AND i.status IN ",
            runnable_statuses!(),
            " LIMIT 1"
        )
    };
}
/// Why invocation `$1` waits, if it is runnable and another invocation owns its running scope:
/// that one's id, the task's running concurrency and when a claim first held it back.
pub(in crate::store) const INVOCATION_WAITING: Sql = both!(invocation_waiting);

// ---------------------------------------------------------------------------------------------
// Invocations: reads.

/// One invocation: `$1` id.
pub(in crate::store) const INVOCATION_GET: Sql =
    Sql::same(concat!("SELECT ", invocation_columns!(), " FROM invocations WHERE id = $1"));

macro_rules! invocation_find_routed {
    ($d:ident) => {
        concat!(
            "SELECT ",
            invocation_columns!(),
            " FROM invocations WHERE (status = 'registered' AND reg_scope IN (SELECT j.value FROM ",
            json_texts!($d),
            ")) OR idempotency_key IN (SELECT k.value FROM ",
            json_texts!($d, "$2", "k"),
            ")"
        )
    };
}
/// Invocations that already answer calls: `registered` ones whose scope is in the JSON array
/// `$1`, and any whose idempotency key is in the JSON array `$2`.
pub(in crate::store) const INVOCATION_FIND_ROUTED: Sql = both!(invocation_find_routed);

/// The oldest final invocations last changed more than `$1` ms ago (database clock), at most
/// `$2` of them (the purge's selection; keep in step with the final statuses of status.rs).
macro_rules! purgeable {
    ($d:ident) => {
        concat!(
            "SELECT id FROM invocations WHERE status IN ",
            final_statuses!(),
            " AND updated_at < ",
            now_ms!($d),
            " - $1 ORDER BY id LIMIT CAST($2 AS BIGINT)"
        )
    };
}
macro_rules! purge_history {
    ($d:ident) => {
        concat!("DELETE FROM invocation_history WHERE invocation_id IN (", purgeable!($d), ")")
    };
}
macro_rules! purge_invocations {
    ($d:ident) => {
        concat!("DELETE FROM invocations WHERE id IN (", purgeable!($d), ")")
    };
}
/// Deletes the history of the invocations the purge selects (run first, same transaction).
pub(in crate::store) const PURGE_HISTORY: Sql = both!(purge_history);
/// Deletes the invocations the purge selects.
pub(in crate::store) const PURGE_INVOCATIONS: Sql = both!(purge_invocations);

/// The invocations called by `$1` (its children), in call order.
pub(in crate::store) const INVOCATION_CHILDREN: Sql =
    Sql::same(concat!("SELECT ", invocation_columns!(), " FROM invocations WHERE parent = $1 ORDER BY id"));

macro_rules! invocation_get_many {
    ($d:ident) => {
        concat!("SELECT ", invocation_columns!(), " FROM invocations WHERE ", id_in_texts!($d, "id"))
    };
}
/// Invocations whose ids are in the JSON array `$1`.
pub(in crate::store) const INVOCATION_GET_MANY: Sql = both!(invocation_get_many);

/// A page newest first. `$1` exclusive upper bound id (cursor) or NULL, `$2` limit; the
/// filtered variants add `$3` task and/or status (`$3` task, `$4` status when both). One
/// static statement per filter combination keeps each on its index.
macro_rules! invocation_list {
    ($filter:literal) => {
        Sql::same(concat!(
            "SELECT ",
            invocation_columns!(),
            " FROM invocations WHERE ($1 IS NULL OR id < $1)",
            $filter,
            " ORDER BY id DESC LIMIT CAST($2 AS BIGINT)"
        ))
    };
}
/// Page of all invocations.
pub(in crate::store) const INVOCATION_LIST: Sql = invocation_list!("");
/// Page of one task's invocations (`$3`).
pub(in crate::store) const INVOCATION_LIST_TASK: Sql = invocation_list!(" AND task = $3");
/// Page of invocations in one status (`$3`).
pub(in crate::store) const INVOCATION_LIST_STATUS: Sql = invocation_list!(" AND status = $3");
/// Page of one task's invocations (`$3`) in one status (`$4`).
pub(in crate::store) const INVOCATION_LIST_TASK_STATUS: Sql = invocation_list!(" AND task = $3 AND status = $4");

/// Counts per task and status; the filtered variants take `$1` task and/or status (`$1`
/// task, `$2` status when both).
macro_rules! invocation_count {
    ($filter:literal) => {
        Sql::same(concat!(
            "SELECT task, status, COUNT(*) AS count FROM invocations",
            $filter,
            " GROUP BY task, status ORDER BY task, status"
        ))
    };
}
/// Counts of every task and status.
pub(in crate::store) const INVOCATION_COUNT: Sql = invocation_count!("");
/// Counts of one task (`$1`).
pub(in crate::store) const INVOCATION_COUNT_TASK: Sql = invocation_count!(" WHERE task = $1");
/// Counts of one status (`$1`).
pub(in crate::store) const INVOCATION_COUNT_STATUS: Sql = invocation_count!(" WHERE status = $1");
/// Counts of one task (`$1`) and status (`$2`).
pub(in crate::store) const INVOCATION_COUNT_TASK_STATUS: Sql = invocation_count!(" WHERE task = $1 AND status = $2");

/// The history of invocation `$1`, oldest first.
pub(in crate::store) const INVOCATION_HISTORY: Sql = Sql::same(
    "SELECT status, node, attempt, at FROM invocation_history WHERE invocation_id = $1 \
     ORDER BY seq",
);
