//! The SQL of the store, as `&'static str`, in both dialects side by side: here the shared
//! templates (clock, JSON expansion, column and status lists, the one-trip wrapper), and one
//! child file per subject beside its Rust (`sql_<subject>.rs` next to `<subject>.rs`).
//!
//! Most statements are written once as a template (a `macro_rules!` that takes the dialect)
//! and differ only in two fragments: the database clock ([`now_ms!`]) and the expansion of a
//! JSON array parameter into rows ([`json_rows!`], [`json_texts!`]). The rest is SQL that both
//! SQLite (3.35+: `RETURNING`, `UPDATE … FROM`, `->>`) and PostgreSQL accept: `$n` parameters,
//! `ON CONFLICT`, `CAST(… AS BIGINT)`, `WITH … AS MATERIALIZED`. Statements that really differ
//! (`FOR UPDATE [SKIP LOCKED]` on PostgreSQL) are written out per dialect.
//!
//! Batches travel as ONE JSON text parameter (`$1`) that the statement expands into rows, so
//! the SQL stays static, a batch of any size costs one statement, and no dialect's parameter
//! limit is hit. JSON objects are read field by field with `value ->> 'field'`, which both
//! dialects understand; numbers go through `CAST(… AS BIGINT)`, so PostgreSQL (where `->>`
//! yields text) and SQLite (where it yields the JSON type) read the same thing.
//!
//! On SQLite the hot writes (routing, claim, one pass of transitions) are whole transactions in
//! one string each, the `*_ONE_TRIP` scripts, built with `one_trip!` from the same templates
//! (see "SQLite: one round trip per hot write" in `engine.rs`).

/// One statement in both dialects.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sql {
    /// SQLite text.
    pub sqlite: &'static str,
    /// PostgreSQL text.
    pub postgres: &'static str,
}

impl Sql {
    /// A statement both dialects accept verbatim.
    const fn same(text: &'static str) -> Self {
        Self { sqlite: text, postgres: text }
    }
}

/// The database clock in integer milliseconds since the Unix epoch.
macro_rules! now_ms {
    (sqlite) => {
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    };
    (postgres) => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// The JSON array of objects in `$1` as rows `j(key, value)`, `key` being the array index
/// (order) and `value` one object; `json_rows!(dialect, "$n", "alias")` reads parameter `$n`
/// as rows `alias(key, value)`. Binary JSON on both sides, so that reading each field with
/// `->>` does not parse the object again (SQLite's `jsonb_each` needs 3.45+; the bundled
/// library is newer, and cut the batched writes by a quarter).
macro_rules! json_rows {
    (sqlite) => {
        json_rows!(sqlite, "$1", "j")
    };
    (postgres) => {
        json_rows!(postgres, "$1", "j")
    };
    (sqlite, $param:literal, $alias:literal) => {
        concat!("jsonb_each(", $param, ") AS ", $alias)
    };
    (postgres, $param:literal, $alias:literal) => {
        concat!("jsonb_array_elements(", $param, "::jsonb) WITH ORDINALITY AS ", $alias, "(value, key)")
    };
}

/// `id_in_texts!(d, "col")`: `col` is one of the ids of the JSON array of strings `$1`. On
/// PostgreSQL through `= ANY(ARRAY(…))`, an index lookup per id whatever the planner believes
/// of the table: `IN (subquery)` let a planner without statistics (a fresh database before
/// autovacuum's first ANALYZE) hash-join the ids with a scan of every row.
macro_rules! id_in_texts {
    (sqlite, $col:literal) => {
        concat!($col, " IN (SELECT j.value FROM ", json_texts!(sqlite), ")")
    };
    (postgres, $col:literal) => {
        concat!($col, " = ANY(ARRAY(SELECT j.value FROM ", json_texts!(postgres), "))")
    };
}

/// `join_invocation!(d, expr)`: joins `invocations i` on `i.id = expr` (a column of the rows
/// before it). On PostgreSQL a `LATERAL` lookup by primary key for each row, for the reason
/// given at [`id_in_texts!`] (its `LIMIT 1` keeps the planner from pulling the lookup up into
/// a plain join, which it may plan as a hash join over every row again).
macro_rules! join_invocation {
    (sqlite, $expr:literal) => {
        concat!(" JOIN invocations i ON i.id = ", $expr)
    };
    (postgres, $expr:literal) => {
        concat!(" CROSS JOIN LATERAL (SELECT id FROM invocations WHERE id = ", $expr, " LIMIT 1) i")
    };
}

/// The JSON array of strings in `$1` as rows `j(value)` of text.
macro_rules! json_texts {
    (sqlite) => {
        "json_each($1) AS j"
    };
    (postgres) => {
        "jsonb_array_elements_text($1::jsonb) AS j(value)"
    };
    (sqlite, $param:literal, $alias:literal) => {
        concat!("json_each(", $param, ") AS ", $alias)
    };
    (postgres, $param:literal, $alias:literal) => {
        concat!("jsonb_array_elements_text(", $param, "::jsonb) AS ", $alias, "(value)")
    };
}

/// Whether an instance write from status `$from` to status `$to` (SQL expressions) is one the
/// instance table allows: `$param` is the text parameter of the allowed writes
/// (`InstanceStatus::writes_text`, `,from>to,` for each pair), so the rule is the model's,
/// passed in, never copied into SQL.
macro_rules! instance_may_write {
    (sqlite, $from:literal, $to:literal, $param:literal) => {
        concat!("instr(", $param, ", ',' || ", $from, " || '>' || ", $to, " || ',') > 0")
    };
    (postgres, $from:literal, $to:literal, $param:literal) => {
        concat!("strpos(CAST(", $param, " AS TEXT), ',' || ", $from, " || '>' || ", $to, " || ',') > 0")
    };
}

/// Builds an [`Sql`] from a template macro that takes the dialect.
macro_rules! both {
    ($template:ident) => {
        Sql { sqlite: $template!(sqlite), postgres: $template!(postgres) }
    };
}

/// The columns of an `InvocationRow` (`invocations.rs`), in order.
macro_rules! invocation_columns {
    () => {
        "id, task, call_id, args, status, owner_node, attempts, result, error_kind, \
         error_message, parent, reg_scope, idempotency_key, workflow, max_attempts, created_at, updated_at, \
         available_at, trace_parent, priority, component_version"
    };
}

/// The columns of a `TaskRow` (`components.rs`).
macro_rules! task_columns {
    () => {
        "name, component, description, max_attempts, timeout_ms, memory_limit_bytes, \
         registration_concurrency, running_concurrency, key_arguments, pins, paused, user_patched, \
         options"
    };
}

// ---------------------------------------------------------------------------------------------
// Health and clock.

/// Readiness probe.
pub(super) const PING: Sql = Sql::same("SELECT 1");

macro_rules! now {
    ($d:ident) => {
        concat!("SELECT ", now_ms!($d), " AS now")
    };
}
/// The database clock (`now`).
pub(super) const NOW: Sql = both!(now);

/// The database's size in bytes and, on PostgreSQL, the transactions it has ended
/// (`warden bench`).
pub(super) const USAGE: Sql = Sql {
    sqlite: "SELECT p.page_count * s.page_size AS bytes, CAST(NULL AS INTEGER) AS transactions \
             FROM pragma_page_count() AS p, pragma_page_size() AS s",
    postgres: "SELECT pg_database_size(current_database()) AS bytes, \
               (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()) \
               AS transactions",
};

/// The statuses that are not final (a call still to run, running, or on its way back).
macro_rules! unfinished_statuses {
    () => {
        "('registered', 'pending', 'running', 'paused', 'resumed', 'retry', 'rerouted', 'killed', \
         'pending_recovery', 'running_recovery', 'concurrency_controlled')"
    };
}

/// The statuses a claim takes (`invocation_claim_sqlite!`, [`INVOCATION_CLAIM_POSTGRES`]);
/// must equal `InvocationStatus::runnable()` (a unit test checks) and the predicate of
/// `invocations_claim_idx` in the migrations.
macro_rules! runnable_statuses {
    () => {
        "('registered', 'retry', 'rerouted')"
    };
}
/// The statuses an owner holds (`InvocationStatus::is_owned`); a unit test checks.
macro_rules! owned_statuses {
    () => {
        "('pending', 'running', 'paused', 'resumed')"
    };
}

/// The final statuses (`InvocationStatus::is_final`); a unit test checks.
macro_rules! final_statuses {
    () => {
        "('concurrency_controlled_final', 'success', 'failed', 'cancelled')"
    };
}

#[cfg(test)]
pub(super) const FINAL_STATUSES: &str = final_statuses!();
#[cfg(test)]
pub(super) const UNFINISHED_STATUSES: &str = unfinished_statuses!();
#[cfg(test)]
pub(super) const RUNNABLE_STATUSES: &str = runnable_statuses!();
#[cfg(test)]
pub(super) const OWNED_STATUSES: &str = owned_statuses!();

// ---------------------------------------------------------------------------------------------
// SQLite: each hot write as one script, run in one round trip (see `engine.rs`).
//
// The history statement of a script cannot see what the statement before it returned, so it
// reads `invocations` again and must pick exactly the rows that statement changed: the insert
// fails as a whole unless every call was inserted; claims and transitions stamp the rows they
// change with `last_tx` = `$n`, a random marker bound for this transaction only, and the
// history statement keeps the rows carrying it. A row the compare-and-swap did not match keeps
// its old marker, even if it happens to be in the target status already.

/// A SQLite transaction as one script: `one_trip!(durable, statement, …)` wraps the statements
/// in `BEGIN IMMEDIATE … COMMIT`; `one_trip!(relaxed, …)` commits with `synchronous = NORMAL`
/// and puts back `FULL`, the setting of the store's connections, at the end.
macro_rules! one_trip {
    (durable, $($statement:expr),+ $(,)?) => {
        concat!("BEGIN IMMEDIATE; ", $($statement, "; ",)+ "COMMIT")
    };
    (relaxed, $($statement:expr),+ $(,)?) => {
        concat!("PRAGMA synchronous = NORMAL; ", one_trip!(durable, $($statement),+), "; PRAGMA synchronous = FULL")
    };
}
/// Puts a SQLite writer back in shape after a script failed (the failing statement may have
/// left its transaction open, or `synchronous` relaxed): run after a `ROLLBACK` whose own
/// error is ignored (there may be no transaction left to roll back). It fails if a transaction
/// is still open: SQLite refuses both the `PRAGMA` and the `BEGIN` inside one.
pub(super) const ONE_TRIP_RESET: &str = "PRAGMA synchronous = FULL; BEGIN; ROLLBACK";

// ---------------------------------------------------------------------------------------------
// The statements per subject, each in a file of its own beside its Rust (`<subject>.rs` and
// `sql_<subject>.rs`); declared after the templates above so that they share them.

// Components and tasks.
#[path = "sql_components.rs"]
pub(super) mod components;

// Invocations: routing, claims, reads, purge.
#[path = "sql_invocations.rs"]
pub(super) mod invocations;

// Transitions of invocations, recovery, and the instance records they write.
#[path = "sql_transitions.rs"]
pub(super) mod transitions;

// Task instances: heartbeats, signals, triage.
#[path = "sql_instances.rs"]
pub(super) mod instances;

// Membership, atomic services, the leader lease and the token ring.
#[path = "sql_coord.rs"]
pub(super) mod coord;

// Triggers and events.
#[path = "sql_triggers.rs"]
pub(super) mod triggers;

// Workflows and arrays: see `workflow.rs`.
#[path = "sql_workflow.rs"]
pub(super) mod workflow;

// Housekeeping: see `tidy.rs`.
#[path = "sql_tidy.rs"]
pub(super) mod tidy;

// API keys: see `keys.rs`.
#[path = "sql_keys.rs"]
pub(super) mod keys;

// The change feed: see `changes.rs`.
#[path = "sql_changes.rs"]
pub(super) mod changes;

// Rate limits: see `rate_limits.rs`.
#[path = "sql_rate_limits.rs"]
pub(super) mod rate_limits;
