//! SQL of transitions (`transitions.rs`): the compare-and-swap pass with PostgreSQL's row locks
//! in the global order, its SQLite one-trip script, the instance records a transition writes,
//! and the rows recovery moves; both dialects side by side.

use super::Sql;

/// PostgreSQL's row locks of a multi-row write, taken up front in the one global order (see
/// "Lock order" in `engine.rs`): `lock_in_order!(postgres, "$1")` is a CTE `locked` that locks
/// the `invocations` rows whose ids the JSON array of objects `$1` names (field `id`), sorted
/// by id; the statement then changes only rows of `locked`. Without it the rows would be
/// locked in whatever order the plan meets them, and two batches (or a batch and the
/// leader's recovery) that share rows could each hold one the other waits for. Empty on
/// SQLite, whose single writer takes no row locks.
///
/// Both look the rows up by id through `= ANY(ARRAY(…))`, an index lookup per id whatever the
/// planner believes of the table: with `IN (subquery)` a planner without statistics (a fresh
/// database before autovacuum's first ANALYZE) hash-joined the ids with a scan of every
/// invocation, twice a transition (7 ms at 30,000 invocations, growing with the table).
macro_rules! lock_in_order {
    (sqlite, $param:literal) => {
        ""
    };
    (postgres, $param:literal) => {
        concat!(
            ", locked AS MATERIALIZED (SELECT id FROM invocations WHERE id = ANY(ARRAY(SELECT l.value ->> 'id' FROM ",
            json_rows!(postgres, $param, "l"),
            ")) ORDER BY id FOR UPDATE)"
        )
    };
}

/// The condition that keeps a write to the rows [`lock_in_order!`] locked (`$col` is the id
/// column as the statement names it).
macro_rules! only_locked {
    (sqlite, $col:literal) => {
        ""
    };
    (postgres, $col:literal) => {
        concat!(" AND ", $col, " = ANY(ARRAY(SELECT id FROM locked))")
    };
}

macro_rules! invocation_transition {
    ($d:ident) => {
        invocation_transition!($d, "")
    };
    ($d:ident, $also_set:literal) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now)",
            lock_in_order!($d, "$1"),
            " ",
            invocation_transition!(@update, $d, $also_set)
        )
    };
    // The UPDATE alone: it reads `now` from a CTE `c` and, on PostgreSQL, the rows of a CTE
    // `locked` (`lock_in_order!`) that the statement around it defines.
    (@update, $d:ident, $also_set:literal) => {
        concat!(
            "UPDATE invocations SET status = x.to_status, \
             owner_node = CASE x.owner_mode WHEN 'clear' THEN NULL WHEN 'set' THEN x.node \
             ELSE invocations.owner_node END, \
             attempts = invocations.attempts + x.attempt_inc, \
             unstarted = invocations.unstarted + x.unstarted_inc, \
             result = COALESCE(x.result, invocations.result), \
             error_kind = COALESCE(x.error_kind, invocations.error_kind), \
             error_message = CASE WHEN x.error_kind IS NULL THEN invocations.error_message \
             ELSE x.error_message END, \
             updated_at = (SELECT now FROM c), \
             available_at = (SELECT now FROM c) + x.delay_ms",
            $also_set,
            " FROM (SELECT j.value ->> 'id' AS id, j.value ->> 'from' AS from_status, \
             j.value ->> 'to' AS to_status, j.value ->> 'node' AS node, \
             j.value ->> 'owner_node' AS owner_node, \
             CAST(j.value ->> 'owner_attempt' AS BIGINT) AS owner_attempt, \
             j.value ->> 'owner_mode' AS owner_mode, \
             CAST(j.value ->> 'attempt_inc' AS BIGINT) AS attempt_inc, \
             CAST(j.value ->> 'unstarted_inc' AS BIGINT) AS unstarted_inc, \
             j.value ->> 'result' AS result, j.value ->> 'error_kind' AS error_kind, \
             j.value ->> 'error_message' AS error_message, \
             CAST(j.value ->> 'delay_ms' AS BIGINT) AS delay_ms FROM ",
            json_rows!($d),
            ") AS x \
             WHERE invocations.id = x.id AND invocations.status = x.from_status \
             AND (x.owner_node IS NULL OR (invocations.owner_node = x.owner_node \
             AND invocations.attempts = x.owner_attempt))",
            only_locked!($d, "invocations.id"),
            " RETURNING invocations.id, invocations.attempts, invocations.updated_at"
        )
    };
}
/// One pass of compare-and-swap transitions: the JSON array `$1` of `{id, from, to, node,
/// owner_node, owner_attempt, owner_mode: keep|clear|set, attempt_inc, unstarted_inc, result, error_kind,
/// error_message, delay_ms}` with distinct ids; `available_at` becomes now + `delay_ms`. Returns the rows that matched (and changed).
pub(in crate::store) const INVOCATION_TRANSITION: Sql = both!(invocation_transition);

macro_rules! invocation_debounce {
    ($d:ident) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now)",
            lock_in_order!($d, "$1"),
            " UPDATE invocations SET args = x.args, call_id = x.call_id, run_scope = x.run_scope, \
             available_at = (SELECT now FROM c) + x.delay_ms \
             FROM (SELECT j.value ->> 'id' AS id, j.value ->> 'scope' AS scope, j.value ->> 'args' AS args, \
             j.value ->> 'call_id' AS call_id, j.value ->> 'run_scope' AS run_scope, \
             CAST(j.value ->> 'delay_ms' AS BIGINT) AS delay_ms FROM ",
            json_rows!($d),
            ") AS x WHERE invocations.id = x.id AND invocations.status = 'registered' \
             AND invocations.reg_scope = x.scope",
            only_locked!($d, "invocations.id"),
            " RETURNING invocations.id"
        )
    };
}
/// Debounced calls: the JSON array `$1` of `{id, scope, args, call_id, run_scope, delay_ms}`
/// (`store::Debounce`); each invocation still `registered` under its scope takes the arguments
/// and is claimable `delay_ms` from now. Returns the ids changed. PostgreSQL locks the rows in
/// id order first, as every multi-row write does.
pub(in crate::store) const INVOCATION_DEBOUNCE: Sql = both!(invocation_debounce);

/// The columns of an invocation recovery may move (`transitions::MovableRow`): its status
/// and owner, its claims handed back unstarted, its attempt limit (its own, else its task's) and how many of its earlier
/// attempts were lost with their node (instances of error kind `lost`), so that the recovery
/// of a lost last attempt fails it instead of rerouting it.
macro_rules! movable_columns {
    () => {
        "id, status, attempts, unstarted, owner_node, COALESCE(invocations.max_attempts, \
         (SELECT t.max_attempts FROM tasks t WHERE t.name = invocations.task), 1) AS max_attempts, \
         (SELECT COUNT(*) FROM task_instances l WHERE l.invocation_id = invocations.id \
         AND l.attempt <> invocations.attempts AND l.error_kind = 'lost') AS lost_before"
    };
}

/// The invocations node `$1` owns in an owned status (recovery), locked on PostgreSQL.
pub(in crate::store) const INVOCATION_OWNED_BY: Sql = Sql {
    sqlite: concat!(
        "SELECT ",
        movable_columns!(),
        " FROM invocations WHERE owner_node = $1 AND status IN ",
        owned_statuses!(),
        " ORDER BY id"
    ),
    postgres: concat!(
        "SELECT ",
        movable_columns!(),
        " FROM invocations WHERE owner_node = $1 AND status IN ",
        owned_statuses!(),
        " ORDER BY id FOR UPDATE"
    ),
};

/// Inserts task instances from the JSON array `$param` (rows `j`) that pass `$filter` (a
/// condition on `i`, the invocation joined by id), or moves a live one to the record's status
/// if the instance table allows that write (`$writes`, see [`instance_may_write!`]); an
/// untimely write is ignored. Returns the rows written as `(id, attempts, updated_at)` with
/// `updated_at` = -1, so that SQLite's one-trip script can return them beside the applied
/// transitions' rows (whose times are real) and the caller can tell which writes were ignored.
macro_rules! instance_insert {
    ($d:ident, $param:literal, $filter:literal, $writes:literal) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now) ",
            instance_insert!(@insert, $d, $param, join_invocation!($d, "j.value ->> 'invocation_id'"), $filter, $writes)
        )
    };
    // The INSERT alone, its records joined to the invocations as `i` by `$join`; it reads
    // `now` from a CTE `c` that the statement around it defines.
    (@insert, $d:ident, $param:literal, $join:expr, $filter:literal, $writes:literal) => {
        concat!(
            "INSERT INTO task_instances (invocation_id, attempt, node, status, error_kind, \
             error_message, wall_ms, peak_memory_bytes, stdout, stderr, logs, output_truncated, \
             ended_at, report_by, started_at) SELECT i.id, CAST(j.value ->> 'attempt' AS BIGINT), \
             j.value ->> 'node', j.value ->> 'status', j.value ->> 'error_kind', \
             j.value ->> 'error_message', CAST(j.value ->> 'wall_ms' AS BIGINT), \
             CAST(j.value ->> 'peak_memory_bytes' AS BIGINT), j.value ->> 'stdout', \
             j.value ->> 'stderr', j.value ->> 'logs', CAST(j.value ->> 'output_truncated' AS BIGINT), \
             CASE WHEN j.value ->> 'report_window_ms' IS NULL THEN c.now ELSE 0 END, \
             c.now + CAST(j.value ->> 'report_window_ms' AS BIGINT), c.now FROM ",
            json_rows!($d, $param, "j"),
            $join,
            " CROSS JOIN c WHERE ",
            $filter,
            " ORDER BY i.id, CAST(j.value ->> 'attempt' AS BIGINT) ON CONFLICT (invocation_id, attempt) DO UPDATE SET status = excluded.status, \
             node = excluded.node, error_kind = excluded.error_kind, error_message = excluded.error_message, \
             wall_ms = excluded.wall_ms, peak_memory_bytes = excluded.peak_memory_bytes, \
             stdout = excluded.stdout, stderr = excluded.stderr, logs = excluded.logs, \
             output_truncated = excluded.output_truncated, ended_at = excluded.ended_at, \
             report_by = excluded.report_by, signal = CASE WHEN excluded.report_by IS NULL THEN NULL \
             ELSE task_instances.signal END \
             WHERE task_instances.report_by IS NOT NULL AND ",
            instance_may_write!($d, "task_instances.status", "excluded.status", $writes),
            " RETURNING invocation_id AS id, attempt AS attempts, CAST(-1 AS BIGINT) AS updated_at"
        )
    };
    ($d:ident) => {
        instance_insert!($d, "$1", "TRUE", "$2")
    };
}
/// One pass of transitions: `$1` as for [`INVOCATION_TRANSITION`] (returning the applied
/// rows), `$2` marker, `$3` the JSON array of `{id, status, node}` of every status of every
/// path of the pass, in pass order then path order. History keeps the `$3` rows whose
/// invocation carries the marker, with its new attempt and time. `$4` the instance records
/// (those of applied transitions are kept), `$5` the allowed instance writes; the rows it
/// returns are the applied transitions' and, with `updated_at` -1, the instances written.
macro_rules! invocation_transition_one_trip {
    ($sync:ident) => {
        one_trip!(
            $sync,
            invocation_transition!(sqlite, ", last_tx = $2"),
            concat!(
                "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
                 SELECT i.id, h.value ->> 'status', h.value ->> 'node', i.attempts, i.updated_at FROM ",
                json_rows!(sqlite, "$3", "h"),
                " JOIN invocations i ON i.id = h.value ->> 'id' WHERE i.last_tx = $2 ORDER BY h.key"
            ),
            instance_insert!(sqlite, "$4", "i.last_tx = $2", "$5"),
        )
    };
}
/// One pass of transitions on PostgreSQL in ONE statement, so one round trip and its own
/// transaction (it was five: `BEGIN`, the UPDATE, the history, the instances, `COMMIT`): `$1`
/// as for [`INVOCATION_TRANSITION`], locked first in id order (`lock_in_order!`); `$2` the
/// JSON array of `{id, status, node}` of every status of every path of the pass, in pass order
/// then path order, of which the history keeps those of the rows the UPDATE changed, with
/// their new attempt and time; `$3` the instance records, of which those of applied
/// transitions are written as [`INSTANCE_INSERT`] writes them (in (invocation, attempt)
/// order, after every invocation lock: the instance insert reads the UPDATE's rows, which
/// read the locks first); `$4` the allowed instance writes. Returns the applied transitions'
/// rows and, with `updated_at` -1, the instances written, as the SQLite script does.
/// `$sync` adds what the commit needs: a relaxed one sets `synchronous_commit` off for this
/// statement's own transaction (`set_config(…, true)`, undone at its end).
macro_rules! invocation_transition_one_statement {
    ($sync:literal) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!(postgres),
            " AS now",
            $sync,
            ")",
            lock_in_order!(postgres, "$1"),
            ", u AS (",
            invocation_transition!(@update, postgres, ""),
            "), h AS (INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
             SELECT u.id, p.value ->> 'status', p.value ->> 'node', u.attempts, u.updated_at FROM ",
            json_rows!(postgres, "$2", "p"),
            " JOIN u ON u.id = p.value ->> 'id' ORDER BY p.key), ins AS (",
            instance_insert!(@insert, postgres, "$3", " JOIN u i ON i.id = j.value ->> 'invocation_id'", "TRUE", "$4"),
            ") SELECT id, attempts, updated_at FROM u UNION ALL SELECT id, attempts, updated_at FROM ins"
        )
    };
}
/// `invocation_transition_one_statement!` committed durably.
pub(in crate::store) const INVOCATION_TRANSITION_ONE_STATEMENT: &str = invocation_transition_one_statement!("");
/// `invocation_transition_one_statement!` committed without waiting for the disk.
pub(in crate::store) const INVOCATION_TRANSITION_ONE_STATEMENT_RELAXED: &str =
    invocation_transition_one_statement!(", set_config('synchronous_commit', 'off', true) AS relaxed");

/// `invocation_transition_one_trip!` committed durably.
pub(in crate::store) const INVOCATION_TRANSITION_ONE_TRIP: &str = invocation_transition_one_trip!(durable);
/// `invocation_transition_one_trip!` committed without waiting for the disk.
pub(in crate::store) const INVOCATION_TRANSITION_ONE_TRIP_RELAXED: &str = invocation_transition_one_trip!(relaxed);

/// Records the task instances of the JSON array `$1` (the caller passes those of applied
/// transitions only): a new row, or the next status of a live one (`report_by` set) when the
/// instance table allows it (`$2`, the allowed writes); a final instance never changes again,
/// and an untimely write is ignored (the caller logs it: the rows written are returned). `report_window_ms` null means
/// final (`report_by` cleared, `ended_at` now); otherwise `report_by` = now + the window.
pub(in crate::store) const INSTANCE_INSERT: Sql = both!(instance_insert);

/// The invocations rows of the JSON array `$1` of ids, as rows a recovery can move.
macro_rules! invocation_movable {
    ($d:ident, $lock:literal) => {
        concat!(
            "SELECT ",
            movable_columns!(),
            " FROM invocations WHERE ",
            id_in_texts!($d, "id"),
            " ORDER BY id",
            $lock
        )
    };
}
/// The invocations whose ids are in the JSON array `$1`, as movable rows.
/// Locked on PostgreSQL (by id), so that a transaction that then changes their instances
/// keeps the global lock order (invocations before instances).
pub(in crate::store) const INVOCATION_MOVABLE: Sql =
    Sql { sqlite: invocation_movable!(sqlite, ""), postgres: invocation_movable!(postgres, " FOR UPDATE") };

macro_rules! instance_end_lost {
    ($d:ident) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now), x AS ",
            instance_end_lost!(@lost, $d),
            " UPDATE task_instances SET status = CASE WHEN task_instances.status IN ('running', 'triaging', 'kill_self') \
             THEN 'unknown_error' ELSE 'error' END, report_by = NULL, ended_at = (SELECT now FROM c), \
             error_kind = 'lost', error_message = x.message, signal = NULL \
             FROM x WHERE task_instances.invocation_id = x.id AND task_instances.attempt = x.attempt \
             AND task_instances.report_by IS NOT NULL AND ",
            instance_may_write!(
                $d,
                "task_instances.status",
                "(CASE WHEN task_instances.status IN ('running', 'triaging', 'kill_self') THEN 'unknown_error' ELSE 'error' END)",
                "$2"
            )
        )
    };
    (@lost, sqlite) => {
        concat!(
            "(SELECT j.value ->> 'id' AS id, CAST(j.value ->> 'attempt' AS BIGINT) AS attempt, \
             j.value ->> 'message' AS message FROM ",
            json_rows!(sqlite),
            ")"
        )
    };
    (@lost, postgres) => {
        concat!(
            "MATERIALIZED (SELECT l.invocation_id AS id, l.attempt, j.value ->> 'message' AS message \
             FROM task_instances l JOIN ",
            json_rows!(postgres),
            " ON l.invocation_id = j.value ->> 'id' AND l.attempt = CAST(j.value ->> 'attempt' AS BIGINT) \
             WHERE l.report_by IS NOT NULL ORDER BY l.invocation_id, l.attempt FOR UPDATE OF l)"
        )
    };
}
/// Ends the live instances of attempts lost with their node (the JSON array `$1` of `{id,
/// attempt, message}`), with error kind `lost` and their message: a running one (or one a
/// kill was requested of) `unknown_error`, one that never started `error`, as far as the
/// instance table allows (`$2`, the allowed writes). Run in the transaction that reroutes their invocations, so that every attempt the
/// history shows has an instance with its true end.
pub(in crate::store) const INSTANCE_END_LOST: Sql = both!(instance_end_lost);

/// Invocations pending since before `$1` ms ago (database clock), at most `$2`, locked on
/// PostgreSQL: pynenc's `max_pending` recovery.
pub(in crate::store) const INVOCATION_PENDING_SINCE: Sql = Sql {
    sqlite: concat!(
        "SELECT ",
        movable_columns!(),
        " FROM invocations WHERE status = 'pending' AND updated_at < ",
        now_ms!(sqlite),
        " - $1 ORDER BY id LIMIT CAST($2 AS BIGINT)"
    ),
    postgres: concat!(
        "SELECT ",
        movable_columns!(),
        " FROM invocations WHERE status = 'pending' AND updated_at < ",
        now_ms!(postgres),
        " - $1 ORDER BY id LIMIT CAST($2 AS BIGINT) FOR UPDATE SKIP LOCKED"
    ),
};

macro_rules! invocation_blocked {
    ($d:ident, $drops:literal, $lock:literal) => {
        concat!(
            "SELECT i.id, i.status, i.attempts, i.owner_node FROM invocations i \
             WHERE i.status IN ('registered', 'rerouted') AND i.run_scope IS NOT NULL \
             AND i.task IN (SELECT j.value FROM ",
            json_texts!($d, "$1", "j"),
            ") AND EXISTS (SELECT 1 FROM tasks t WHERE t.name = i.task AND ",
            $drops,
            ") AND EXISTS (SELECT 1 FROM invocations o WHERE o.run_scope = i.run_scope AND o.status IN ",
            owned_statuses!(),
            ") ORDER BY i.id LIMIT CAST($2 AS BIGINT)",
            $lock
        )
    };
}
/// Runnable invocations of the tasks in the JSON array `$1` whose running scope is held by
/// another (owned) invocation, at most `$2`: those that concurrency control drops. The task's
/// policy is checked again in the statement (`reroute_on_concurrency_control` false), so a
/// policy patched after the caller listed the tasks is seen.
pub(in crate::store) const INVOCATION_BLOCKED: Sql = Sql {
    sqlite: invocation_blocked!(sqlite, "json_extract(t.options, '$.reroute_on_concurrency_control') = 0", ""),
    postgres: invocation_blocked!(
        postgres,
        "(CAST(t.options AS jsonb) ->> 'reroute_on_concurrency_control') = 'false'",
        " FOR UPDATE OF i SKIP LOCKED"
    ),
};
