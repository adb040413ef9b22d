//! SQL of triggers and events (`triggers.rs`): triggers, their runs, events, the status changes
//! an evaluation reads and its cursors; both dialects side by side.

use super::Sql;

/// The columns of a trigger row.
macro_rules! trigger_columns {
    () => {
        "id, task, args, args_from, condition, state, created_at"
    };
}

macro_rules! trigger_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO triggers (id, task, args, args_from, condition, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, ",
            now_ms!($d),
            ") RETURNING ",
            trigger_columns!()
        )
    };
}
/// Stores a trigger.
pub(in crate::store) const TRIGGER_INSERT: Sql = both!(trigger_insert);
/// When the trigger just stored is the only one, the evaluation's cursors start at the heads of
/// the history and of the events: the evaluation reads nothing while no trigger exists, and a
/// first trigger answers to what happens after it is made, not to what piled up before.
pub(in crate::store) const CURSORS_START: Sql = Sql::same(
    "INSERT INTO trigger_cursors (name, position) \
     SELECT 'history', COALESCE((SELECT MAX(seq) FROM invocation_history), 0) WHERE (SELECT COUNT(*) FROM triggers) = 1 \
     UNION ALL \
     SELECT 'events', COALESCE((SELECT MAX(seq) FROM events), 0) WHERE (SELECT COUNT(*) FROM triggers) = 1 \
     ON CONFLICT (name) DO UPDATE SET position = excluded.position",
);
/// Every trigger, oldest first.
pub(in crate::store) const TRIGGER_LIST: Sql =
    Sql::same(concat!("SELECT ", trigger_columns!(), " FROM triggers ORDER BY created_at, id"));
/// One trigger.
pub(in crate::store) const TRIGGER_GET: Sql =
    Sql::same(concat!("SELECT ", trigger_columns!(), " FROM triggers WHERE id = $1"));
/// Removes a trigger (its runs go with it).
pub(in crate::store) const TRIGGER_DELETE: Sql = Sql::same("DELETE FROM triggers WHERE id = $1");
macro_rules! trigger_states_update {
    ($d:ident) => {
        concat!(
            "UPDATE triggers SET state = x.state FROM (SELECT j.value ->> 'id' AS id, \
             j.value ->> 'state' AS state FROM ",
            json_rows!($d),
            ") AS x WHERE triggers.id = x.id"
        )
    };
}
/// Saves the evaluation states of the JSON array `$1` (`{id, state}`, `state` as JSON text).
pub(in crate::store) const TRIGGER_STATES_UPDATE: Sql = both!(trigger_states_update);

macro_rules! trigger_runs_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO trigger_runs (trigger_id, run_key, invocation_id, at) \
             SELECT j.value ->> 'trigger_id', j.value ->> 'run_key', j.value ->> 'invocation_id', ",
            now_ms!($d),
            " FROM ",
            json_rows!($d),
            " WHERE EXISTS (SELECT 1 FROM triggers t WHERE t.id = j.value ->> 'trigger_id') \
             ON CONFLICT DO NOTHING"
        )
    };
}
/// Records the firings in the JSON array `$1` (`{trigger_id, run_key, invocation_id}`); a run
/// recorded before, or of a trigger deleted meanwhile, is skipped.
pub(in crate::store) const TRIGGER_RUNS_INSERT: Sql = both!(trigger_runs_insert);

/// The latest `$2` runs of trigger `$1`, newest first.
pub(in crate::store) const TRIGGER_RUNS_LIST: Sql = Sql::same(
    "SELECT trigger_id, run_key, invocation_id, at FROM trigger_runs WHERE trigger_id = $1 \
     ORDER BY at DESC, run_key DESC LIMIT CAST($2 AS BIGINT)",
);

macro_rules! event_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO events (code, payload, at) VALUES ($1, $2, ",
            now_ms!($d),
            ") RETURNING seq, code, payload, at"
        )
    };
}
/// Stores event `$1` with payload JSON `$2`.
pub(in crate::store) const EVENT_INSERT: Sql = both!(event_insert);

/// The highest sequence number a reader may take from `$table` after `$1`: of at most `$3`
/// rows, those older than `$2` ms (so that a transaction that drew a lower number but
/// commits later is not skipped on PostgreSQL; SQLite has one writer and passes 0).
macro_rules! settled_upto {
    ($d:ident, $table:literal) => {
        concat!(
            "SELECT MAX(seq) AS hi FROM (SELECT seq FROM ",
            $table,
            " WHERE seq > $1 AND at <= ",
            now_ms!($d),
            " - $2 ORDER BY seq LIMIT CAST($3 AS BIGINT)) AS s"
        )
    };
}
macro_rules! events_settled {
    ($d:ident) => {
        settled_upto!($d, "events")
    };
}
macro_rules! history_settled {
    ($d:ident) => {
        settled_upto!($d, "invocation_history")
    };
}
/// See `settled_upto!`, for events.
pub(in crate::store) const EVENTS_SETTLED: Sql = both!(events_settled);
/// See `settled_upto!`, for the invocation history.
pub(in crate::store) const HISTORY_SETTLED: Sql = both!(history_settled);

/// Events with `$1 < seq <= $2`, in order.
pub(in crate::store) const EVENTS_RANGE: Sql =
    Sql::same("SELECT seq, code, payload, at FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq");

macro_rules! status_changes {
    ($d:ident) => {
        concat!(
            "SELECT h.seq, h.invocation_id, i.task, h.status, i.result, i.error_kind, i.error_message, h.at \
             FROM invocation_history h JOIN invocations i ON i.id = h.invocation_id \
             WHERE h.seq > $1 AND h.seq <= $2 AND i.task IN (SELECT j.value FROM ",
            json_texts!($d, "$3", "j"),
            ") ORDER BY h.seq"
        )
    };
}
/// Status changes with `$1 < seq <= $2` of the tasks in the JSON array `$3`, in order, with
/// each invocation's current result and error.
pub(in crate::store) const STATUS_CHANGES: Sql = both!(status_changes);

macro_rules! events_purge {
    ($d:ident) => {
        concat!("DELETE FROM events WHERE at < ", now_ms!($d), " - $1")
    };
}
/// Deletes events older than `$1` ms.
pub(in crate::store) const EVENTS_PURGE: Sql = both!(events_purge);

/// Every cursor of the trigger evaluation.
pub(in crate::store) const CURSOR_LIST: Sql = Sql::same("SELECT name, position FROM trigger_cursors");

macro_rules! cursors_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO trigger_cursors (name, position) \
             SELECT j.value ->> 'name', CAST(j.value ->> 'position' AS BIGINT) FROM ",
            json_rows!($d),
            " WHERE TRUE ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        )
    };
}
/// Sets the cursors of the JSON array `$1` (`{name, position}`).
pub(in crate::store) const CURSORS_UPSERT: Sql = both!(cursors_upsert);
