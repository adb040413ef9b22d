//! SQL of task instances (`instances.rs`): heartbeats, signals, triage, reads; both dialects
//! side by side.

use super::Sql;

macro_rules! instance_heartbeat {
    ($d:ident) => {
        concat!(
            "/* instance_heartbeat */ WITH h AS ",
            instance_heartbeat!(@held, $d),
            " UPDATE task_instances SET report_by = ",
            now_ms!($d),
            " + $3, status = CASE WHEN status = 'triaging' THEN 'running' ELSE status END, \
             peak_memory_bytes = CASE WHEN h.peak > task_instances.peak_memory_bytes THEN h.peak \
             ELSE task_instances.peak_memory_bytes END, \
             memory_limit_bytes = CASE WHEN h.mem_limit > 0 THEN h.mem_limit ELSE task_instances.memory_limit_bytes END, \
             timeout_at = CASE WHEN h.left_ms IS NULL THEN NULL ELSE ",
            now_ms!($d),
            " + h.left_ms END, exit_status = h.exit_status, exit_kind = h.exit_kind, exit_message = h.exit_message \
             FROM h WHERE task_instances.invocation_id = h.invocation_id AND task_instances.attempt = h.attempt \
             AND task_instances.node = $1 AND task_instances.report_by IS NOT NULL \
             AND task_instances.status <> 'no_heartbeat' \
             RETURNING task_instances.invocation_id, task_instances.attempt, task_instances.status, task_instances.signal"
        )
    };
    // One held attempt of the JSON array with what the node knows of it.
    (@fields) => {
        "h.value ->> 'id' AS invocation_id, CAST(h.value ->> 'attempt' AS BIGINT) AS attempt, \
         COALESCE(CAST(h.value ->> 'peak' AS BIGINT), 0) AS peak, \
         COALESCE(CAST(h.value ->> 'limit' AS BIGINT), 0) AS mem_limit, \
         CAST(h.value ->> 'left' AS BIGINT) AS left_ms, h.value ->> 'exit_status' AS exit_status, \
         h.value ->> 'exit_kind' AS exit_kind, h.value ->> 'exit_message' AS exit_message"
    };
    // The live instances of the held list: on PostgreSQL locked up front in (invocation,
    // attempt) order, the order every write of instances follows.
    (@held, sqlite) => {
        concat!("(SELECT ", instance_heartbeat!(@fields), " FROM ", json_rows!(sqlite, "$2", "h"), ")")
    };
    (@held, postgres) => {
        concat!(
            "MATERIALIZED (SELECT t.invocation_id, t.attempt, j.peak, j.mem_limit, j.left_ms, j.exit_status, \
             j.exit_kind, j.exit_message FROM task_instances t JOIN (SELECT ",
            instance_heartbeat!(@fields),
            " FROM ",
            json_rows!(postgres, "$2", "h"),
            ") AS j ON t.invocation_id = j.invocation_id AND t.attempt = j.attempt \
             WHERE t.node = $1 AND t.report_by IS NOT NULL AND t.status <> 'no_heartbeat' \
             ORDER BY t.invocation_id, t.attempt FOR UPDATE OF t)"
        )
    };
}
/// The heartbeat of node `$1` for the live instances it holds, the JSON array `$2` of
/// `{id, attempt, peak, limit, left, exit_status, exit_kind, exit_message}` (what the node
/// knows of each: `model::instance::NodeKnowledge`): `report_by` = now + `$3` ms for all of
/// them in ONE statement, `triaging` back to `running`, and the node's knowledge kept (the
/// time left as `timeout_at` on the database clock); returns the refreshed rows with their
/// control signal. An instance the node holds that is not returned was taken away (triaged,
/// no longer live).
pub(in crate::store) const INSTANCE_HEARTBEAT: Sql = both!(instance_heartbeat);

/// Sets control signal `$2` on the live instance of invocation `$1` (delivered to its node by
/// the next heartbeat); returns the node.
/// A signal is a kill request: the instance moves to `kill_self` where the table allows it
/// (`$3`, the allowed writes), and its attempt's real end follows.
macro_rules! instance_signal {
    ($d:ident) => {
        concat!(
            "UPDATE task_instances SET signal = $2, status = CASE WHEN ",
            instance_may_write!($d, "status", "'kill_self'", "$3"),
            " THEN 'kill_self' ELSE status END \
             WHERE invocation_id = $1 AND report_by IS NOT NULL RETURNING node AS name"
        )
    };
}
pub(in crate::store) const INSTANCE_SIGNAL: Sql = both!(instance_signal);

/// Live instances whose `report_by` is before `$1` (the triage's now), oldest deadline
/// first, at most `$2`.
pub(in crate::store) const INSTANCE_OVERDUE: Sql = Sql::same(
    "SELECT invocation_id, attempt, node, status, report_by, started_at, peak_memory_bytes, memory_limit_bytes, \
     timeout_at, exit_status, exit_kind, exit_message FROM task_instances \
     WHERE report_by IS NOT NULL AND report_by < $1 ORDER BY report_by LIMIT CAST($2 AS BIGINT)",
);

macro_rules! instance_triage {
    ($d:ident) => {
        concat!(
            "WITH x AS ",
            instance_triage!(@decided, $d),
            " UPDATE task_instances SET status = x.to_status, report_by = x.next_report_by, \
             ended_at = CASE WHEN x.next_report_by IS NULL THEN ",
            now_ms!($d),
            " ELSE task_instances.ended_at END, \
             error_kind = COALESCE(x.error_kind, task_instances.error_kind), \
             error_message = COALESCE(x.error_message, task_instances.error_message) \
             FROM x WHERE task_instances.invocation_id = x.id AND task_instances.attempt = x.attempt \
             AND task_instances.status = x.from_status AND task_instances.report_by = x.seen_report_by AND ",
            instance_may_write!($d, "x.from_status", "x.to_status", "$2"),
            " RETURNING task_instances.invocation_id, task_instances.attempt"
        )
    };
    (@fields) => {
        "t.value ->> 'id' AS id, CAST(t.value ->> 'attempt' AS BIGINT) AS attempt, \
         t.value ->> 'from' AS from_status, t.value ->> 'to' AS to_status, \
         CAST(t.value ->> 'report_by' AS BIGINT) AS seen_report_by, \
         CAST(t.value ->> 'next_report_by' AS BIGINT) AS next_report_by, \
         t.value ->> 'error_kind' AS error_kind, t.value ->> 'error_message' AS error_message"
    };
    (@decided, sqlite) => {
        concat!("(SELECT ", instance_triage!(@fields), " FROM ", json_rows!(sqlite, "$1", "t"), ")")
    };
    // On PostgreSQL the decided instances are locked first, in (invocation, attempt) order.
    (@decided, postgres) => {
        concat!(
            "MATERIALIZED (SELECT d.* FROM (SELECT ",
            instance_triage!(@fields),
            " FROM ",
            json_rows!(postgres, "$1", "t"),
            ") AS d JOIN task_instances l ON l.invocation_id = d.id AND l.attempt = d.attempt \
             ORDER BY d.id, d.attempt FOR UPDATE OF l)"
        )
    };
}
/// Triage's compare-and-swap: the JSON array `$1` of `{id, attempt, from, to, report_by (as
/// read), next_report_by, error_kind, error_message}`, `$2` the allowed instance writes; a row
/// whose status or deadline moved since it was read (a heartbeat came in) is left alone. Returns the rows it changed.
pub(in crate::store) const INSTANCE_TRIAGE: Sql = both!(instance_triage);

/// The attempts of invocation `$1`, in order.
pub(in crate::store) const INSTANCE_LIST: Sql = Sql::same(
    "SELECT invocation_id, attempt, node, status, error_kind, error_message, wall_ms, \
     peak_memory_bytes, stdout, stderr, logs, output_truncated, ended_at, report_by, started_at, component_version FROM task_instances \
     WHERE invocation_id = $1 ORDER BY attempt",
);

/// Status, wall time and peak memory of the latest `$2` attempts of task `$1`.
pub(in crate::store) const INSTANCE_USAGE: Sql = Sql::same(
    "SELECT ti.status, ti.wall_ms, ti.peak_memory_bytes FROM task_instances ti \
     JOIN invocations i ON i.id = ti.invocation_id WHERE i.task = $1 AND ti.report_by IS NULL \
     ORDER BY ti.ended_at DESC LIMIT CAST($2 AS BIGINT)",
);
