//! Every SQL statement of the store, as `&'static str`, in both dialects side by side.
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

/// Builds an [`Sql`] from a template macro that takes the dialect.
macro_rules! both {
    ($template:ident) => {
        Sql { sqlite: $template!(sqlite), postgres: $template!(postgres) }
    };
}

/// The columns of an [`InvocationRow`](super::engine::InvocationRow), in order.
macro_rules! invocation_columns {
    () => {
        "id, task, call_id, args, status, owner_node, attempts, result, error_kind, \
         error_message, parent, reg_scope, idempotency_key, workflow, max_attempts, created_at, updated_at"
    };
}

/// The columns of a [`TaskRow`](super::engine::TaskRow).
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

/// The statuses that are not final (a call still to run, running, or on its way back).
macro_rules! unfinished_statuses {
    () => {
        "('registered', 'pending', 'running', 'paused', 'resumed', 'retry', 'rerouted', 'killed', \
         'pending_recovery', 'running_recovery', 'concurrency_controlled')"
    };
}

// ---------------------------------------------------------------------------------------------
// Components.

macro_rules! component_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO components (name, digest, size_bytes, bytes, uploaded_at) \
             VALUES ($1, $2, $3, $4, ",
            now_ms!($d),
            ") ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, \
             size_bytes = excluded.size_bytes, bytes = excluded.bytes, \
             uploaded_at = excluded.uploaded_at \
             RETURNING name, digest, size_bytes, uploaded_at"
        )
    };
}
/// Inserts or replaces a component row: `$1` name, `$2` digest, `$3` size, `$4` bytes.
/// An update (not a delete + insert), so its tasks are not cascaded away.
pub(super) const COMPONENT_UPSERT: Sql = both!(component_upsert);

/// All components (no bytes), by name.
pub(super) const COMPONENT_LIST: Sql =
    Sql::same("SELECT name, digest, size_bytes, uploaded_at FROM components ORDER BY name");

/// One component (no bytes): `$1` name.
pub(super) const COMPONENT_GET: Sql =
    Sql::same("SELECT name, digest, size_bytes, uploaded_at FROM components WHERE name = $1");

/// The bytes of a component: `$1` name.
pub(super) const COMPONENT_BYTES: Sql = Sql::same("SELECT bytes FROM components WHERE name = $1");

/// Removes a component; its tasks go with it (`ON DELETE CASCADE`), invocations stay.
pub(super) const COMPONENT_DELETE: Sql = Sql::same("DELETE FROM components WHERE name = $1");

/// Unfinished invocations per task of component `$1` (what deleting it would strand), by task.
/// Index probes per (task, status): finished invocations are not read.
pub(super) const COMPONENT_UNFINISHED: Sql = Sql::same(concat!(
    "SELECT i.task AS task, COUNT(*) AS count FROM tasks t JOIN invocations i ON i.task = t.name \
     WHERE t.component = $1 AND i.status IN ",
    unfinished_statuses!(),
    " GROUP BY i.task ORDER BY i.task"
));

macro_rules! tasks_stale_unfinished {
    ($d:ident) => {
        concat!(
            "SELECT i.task AS task, COUNT(*) AS count FROM tasks t JOIN invocations i ON i.task = t.name \
             WHERE t.component = $2 AND t.name NOT IN (SELECT j.value FROM ",
            json_texts!($d),
            ") AND i.status IN ",
            unfinished_statuses!(),
            " GROUP BY i.task ORDER BY i.task"
        )
    };
}
/// Unfinished invocations per task of component `$2` that the upload of a version without
/// them (`$1` JSON array of its task names) would remove.
pub(super) const TASKS_STALE_UNFINISHED: Sql = both!(tasks_stale_unfinished);

/// `(component, name)` of every task, for component listings.
pub(super) const COMPONENT_TASK_NAMES: Sql = Sql::same("SELECT component, name FROM tasks ORDER BY component, name");

/// `(component, name)` of the tasks of component `$1`.
pub(super) const COMPONENT_TASK_NAMES_OF: Sql =
    Sql::same("SELECT component, name FROM tasks WHERE component = $1 ORDER BY name");

// ---------------------------------------------------------------------------------------------
// Tasks.

macro_rules! tasks_for_put {
    (sqlite) => {
        concat!(
            "SELECT name, component, user_patched FROM tasks \
             WHERE component = $2 OR name IN (SELECT j.value FROM ",
            json_texts!(sqlite),
            ")"
        )
    };
    (postgres) => {
        concat!(
            "SELECT name, component, user_patched FROM tasks \
             WHERE component = $2 OR name IN (SELECT j.value FROM ",
            json_texts!(postgres),
            ") ORDER BY name FOR UPDATE"
        )
    };
}
/// The tasks a component upload touches (`$1` JSON array of the uploaded task names, `$2` the
/// component): its current tasks and any task of those names. PostgreSQL locks them so a
/// concurrent `task_update` cannot be lost between reading and rewriting `user_patched`.
pub(super) const TASKS_FOR_PUT: Sql = both!(tasks_for_put);

macro_rules! tasks_delete_stale {
    ($d:ident) => {
        concat!("DELETE FROM tasks WHERE component = $2 AND name NOT IN (SELECT j.value FROM ", json_texts!($d), ")")
    };
}
/// Deletes the tasks of component `$2` that are not in the JSON array of names `$1`.
pub(super) const TASKS_DELETE_STALE: Sql = both!(tasks_delete_stale);

macro_rules! tasks_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO tasks (",
            task_columns!(),
            ", updated_at) \
             SELECT j.value ->> 'name', j.value ->> 'component', j.value ->> 'description', \
             CAST(j.value ->> 'max_attempts' AS BIGINT), CAST(j.value ->> 'timeout_ms' AS BIGINT), \
             CAST(j.value ->> 'memory_limit_bytes' AS BIGINT), \
             j.value ->> 'registration_concurrency', j.value ->> 'running_concurrency', \
             j.value ->> 'key_arguments', j.value ->> 'pins', \
             (CAST(j.value ->> 'paused' AS INTEGER) <> 0), j.value ->> 'user_patched', \
             j.value ->> 'options', ",
            now_ms!($d),
            " FROM ",
            json_rows!($d),
            " WHERE TRUE ORDER BY j.key \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
             max_attempts = excluded.max_attempts, timeout_ms = excluded.timeout_ms, \
             memory_limit_bytes = excluded.memory_limit_bytes, \
             registration_concurrency = excluded.registration_concurrency, \
             running_concurrency = excluded.running_concurrency, \
             key_arguments = excluded.key_arguments, pins = excluded.pins, \
             paused = excluded.paused, user_patched = excluded.user_patched, \
             options = excluded.options, \
             updated_at = excluded.updated_at \
             WHERE tasks.component = excluded.component \
             RETURNING name"
        )
    };
}
/// Inserts or updates the tasks in the JSON array `$1` (objects with every task column; the
/// effective values, user patches already applied). A task owned by another component is left
/// alone and not returned, which the caller turns into a conflict (race-proof check).
pub(super) const TASKS_UPSERT: Sql = both!(tasks_upsert);

/// All tasks by name.
pub(super) const TASK_LIST: Sql = Sql::same(concat!("SELECT ", task_columns!(), " FROM tasks ORDER BY name"));

/// One task: `$1` name.
pub(super) const TASK_GET: Sql = Sql::same(concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1"));

/// One task, locked for an update (PostgreSQL) — SQLite has one writer anyway.
pub(super) const TASK_GET_FOR_UPDATE: Sql = Sql {
    sqlite: concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1"),
    postgres: concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1 FOR UPDATE"),
};

macro_rules! task_update {
    ($d:ident) => {
        concat!(
            "UPDATE tasks SET max_attempts = $2, timeout_ms = $3, memory_limit_bytes = $4, \
             registration_concurrency = $5, running_concurrency = $6, key_arguments = $7, \
             pins = $8, paused = $9, user_patched = $10, options = $11, updated_at = ",
            now_ms!($d),
            " WHERE name = $1"
        )
    };
}
/// Rewrites a task's options (`$1` name, `$2`… every option, `$10` the merged user patch, `$11` the policy JSON).
pub(super) const TASK_UPDATE: Sql = both!(task_update);

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
             workflow, max_attempts, token, available_at, created_at, updated_at) \
             SELECT j.value ->> 'id', t.name, j.value ->> 'call_id', \
             j.value ->> 'args', 'registered', NULL, 0, NULL, NULL, NULL, j.value ->> 'parent', \
             j.value ->> 'scope', j.value ->> 'idempotency_key', j.value ->> 'run_scope', \
             j.value ->> 'workflow', CAST(j.value ->> 'max_attempts' AS BIGINT), \
             CAST(j.value ->> 'token' AS BIGINT), \
             c.now, c.now, c.now \
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
/// `insert_registered!`. Routing on SQLite uses [`INVOCATION_INSERT_ONE_TRIP`] instead.
pub(super) const INVOCATION_INSERT: Sql = both!(invocation_insert);

/// The first task of the JSON array `$1` of calls (as for [`INVOCATION_INSERT`]) that
/// does not exist, as `name` (SQLite: explains a failed [`INVOCATION_INSERT_ONE_TRIP`]).
pub(super) const INVOCATION_INSERT_UNKNOWN_TASK: &str = concat!(
    "SELECT j.value ->> 'task' AS name FROM ",
    json_rows!(sqlite),
    " WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.name = j.value ->> 'task') \
     ORDER BY j.key LIMIT 1"
);

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
pub(super) const HISTORY_INSERT: Sql = both!(history_insert);

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

/// Claim (`$1` node, `$2` limit, `$3` transaction marker), SQLite: one writer, so no row
/// locks are needed. Part of [`INVOCATION_CLAIM_ONE_TRIP`]. The limit goes through a `CAST`:
/// SQLite plans a bare `LIMIT $2` with the bound value and marks the statement to be
/// prepared again whenever `$2` is bound, which sqlx does on every run (≈ 50 µs each time).
/// The ids a claim takes (`$2` limit; `c` is the CTE with `now`): runnable invocations of
/// unpaused tasks, oldest first, skipping any whose running scope already has an owned
/// invocation, and taking at most one per running scope. The window runs over the oldest
/// `4 × $2` candidates only, so a long backlog costs what a short one does. `$lock` is
/// PostgreSQL's row lock of the candidates (empty on SQLite, which has one writer).
macro_rules! claim_candidates {
    ($lock:literal, $excluded:expr, $pinned_here:expr, $node:literal) => {
        concat!(
            "SELECT w.id FROM (SELECT k.id, ROW_NUMBER() OVER \
             (PARTITION BY COALESCE(k.run_scope, k.id) ORDER BY k.id) AS rn FROM \
             (SELECT i.id, i.run_scope FROM invocations i JOIN tasks t ON t.name = i.task \
             WHERE i.status IN ",
            runnable_statuses!(),
            " AND i.available_at <= (SELECT now FROM c) AND NOT t.paused \
             AND i.task NOT IN (SELECT x.value FROM ",
            $excluded,
            ") AND (i.token IS NULL OR EXISTS (SELECT 1 FROM token_owners o WHERE o.token = i.token \
             AND o.node = ",
            $node,
            ") OR i.task IN (SELECT y.value FROM ",
            $pinned_here,
            ")) \
             AND (i.run_scope IS NULL OR NOT EXISTS (SELECT 1 FROM invocations o \
             WHERE o.run_scope = i.run_scope AND o.status IN ",
            owned_statuses!(),
            ")) ORDER BY i.id LIMIT 4 * CAST($2 AS INTEGER)",
            $lock,
            ") AS k) AS w WHERE w.rn = 1 ORDER BY w.id LIMIT CAST($2 AS INTEGER)"
        )
    };
}

macro_rules! invocation_claim_sqlite {
    () => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!(sqlite),
            " AS now) \
             UPDATE invocations SET status = 'pending', owner_node = $1, attempts = attempts + 1, \
             updated_at = (SELECT now FROM c), last_tx = $3 \
             WHERE id IN (",
            claim_candidates!("", json_texts!(sqlite, "$5", "x"), json_texts!(sqlite, "$6", "y"), "$1"),
            ") RETURNING id, task, args, attempts, parent, workflow, max_attempts, updated_at"
        )
    };
}

/// Claim (`$1` node, `$2` limit, `$3` JSON array of tasks not to claim, `$4` of tasks pinned
/// here), PostgreSQL: concurrent claimers skip each other's rows.
/// Moves up to `$2` runnable invocations, oldest first, to `pending` for node `$1`, growing
/// `attempts`; returns what a worker needs (unordered: the caller sorts). SQLite claims with
/// [`INVOCATION_CLAIM_ONE_TRIP`].
pub(super) const INVOCATION_CLAIM_POSTGRES: &str = concat!(
    "WITH c AS MATERIALIZED (SELECT ",
    now_ms!(postgres),
    " AS now), \
     picked AS (",
    claim_candidates!(
        " FOR UPDATE OF i SKIP LOCKED",
        json_texts!(postgres, "$3", "x"),
        json_texts!(postgres, "$4", "y"),
        "$1"
    ),
    ") \
     UPDATE invocations SET status = 'pending', owner_node = $1, \
     attempts = invocations.attempts + 1, updated_at = (SELECT now FROM c) \
     FROM picked WHERE invocations.id = picked.id \
     RETURNING invocations.id, invocations.task, invocations.args, invocations.attempts, \
     invocations.parent, invocations.workflow, invocations.max_attempts, invocations.updated_at"
);

/// PostgreSQL's row locks of a multi-row write, taken up front in the one global order (see
/// "Lock order" in `engine.rs`): `lock_in_order!(postgres, "$1")` is a CTE `locked` that locks
/// the `invocations` rows whose ids the JSON array of objects `$1` names (field `id`), sorted
/// by id; the statement then changes only rows of `locked`. Without it the rows would be
/// locked in whatever order the plan meets them, and two batches (or a batch and the
/// leader's recovery) that share rows could each hold one the other waits for. Empty on
/// SQLite, whose single writer takes no row locks.
macro_rules! lock_in_order {
    (sqlite, $param:literal) => {
        ""
    };
    (postgres, $param:literal) => {
        concat!(
            ", locked AS MATERIALIZED (SELECT id FROM invocations WHERE id IN (SELECT l.value ->> 'id' FROM ",
            json_rows!(postgres, $param, "l"),
            ") ORDER BY id FOR UPDATE)"
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
        concat!(" AND ", $col, " IN (SELECT id FROM locked)")
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
            " UPDATE invocations SET status = x.to_status, \
             owner_node = CASE x.owner_mode WHEN 'clear' THEN NULL WHEN 'set' THEN x.node \
             ELSE invocations.owner_node END, \
             attempts = invocations.attempts + x.attempt_inc, \
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
/// owner_node, owner_attempt, owner_mode: keep|clear|set, attempt_inc, result, error_kind,
/// error_message, delay_ms}` with distinct ids; `available_at` becomes now + `delay_ms`. Returns the rows that matched (and changed).
pub(super) const INVOCATION_TRANSITION: Sql = both!(invocation_transition);

/// The invocations node `$1` owns in an owned status (recovery), locked on PostgreSQL.
pub(super) const INVOCATION_OWNED_BY: Sql = Sql {
    sqlite: concat!(
        "SELECT id, status, attempts, owner_node FROM invocations WHERE owner_node = $1 AND status IN ",
        owned_statuses!(),
        " ORDER BY id"
    ),
    postgres: concat!(
        "SELECT id, status, attempts, owner_node FROM invocations WHERE owner_node = $1 AND status IN ",
        owned_statuses!(),
        " ORDER BY id FOR UPDATE"
    ),
};

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

/// Routing (durable): inserts the calls in `$1` as [`INVOCATION_INSERT`] does,
/// returning the rows, and writes their `registered` history. A call of an unknown task fails
/// the script instead of being skipped (`LEFT JOIN`: its NULL task breaks the NOT NULL
/// constraint), so the transaction cannot commit without it; the caller rolls back and names
/// the task with [`INVOCATION_INSERT_UNKNOWN_TASK`]. An id that exists fails it too (unique
/// violation). So when the history statement runs, every id of `$1` is a row this transaction
/// inserted.
pub(super) const INVOCATION_INSERT_ONE_TRIP: &str = one_trip!(
    durable,
    invocation_insert!(sqlite, "LEFT JOIN"),
    concat!(
        "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
         SELECT i.id, 'registered', NULL, i.attempts, i.created_at FROM ",
        json_rows!(sqlite),
        " JOIN invocations i ON i.id = j.value ->> 'id' ORDER BY j.key"
    ),
);

/// The columns a claim fills in `task_instances` (a `queued` instance per claimed attempt).
macro_rules! queued_instance_columns {
    () => {
        "invocation_id, attempt, node, status, wall_ms, peak_memory_bytes, stdout, stderr, logs, \
         output_truncated, ended_at, report_by, started_at"
    };
}

/// Claim (relaxed): `$1` node, `$2` limit, `$3` marker, `$4` report window (ms), `$5` the JSON
/// array of tasks the node must not claim (pinned elsewhere), `$6` the JSON array of tasks
/// pinned to it (claimed whatever their token). Otherwise only invocations on the node's
/// tokens (or without a token) are claimed. Claims as
/// [`INVOCATION_CLAIM_POSTGRES`] does (returning the claimed rows), then writes the `pending`
/// history of the rows of node `$1` (found through its owner index) that carry the marker:
/// exactly the claimed ones, and a `queued` task instance for each, due to report by claim
/// time + `$4`.
pub(super) const INVOCATION_CLAIM_ONE_TRIP: &str = one_trip!(
    relaxed,
    invocation_claim_sqlite!(),
    "INSERT INTO invocation_history (invocation_id, status, node, attempt, at) \
     SELECT id, 'pending', owner_node, attempts, updated_at FROM invocations \
     WHERE owner_node = $1 AND last_tx = $3 ORDER BY id",
    concat!(
        "INSERT INTO task_instances (",
        queued_instance_columns!(),
        ") SELECT id, attempts, owner_node, 'queued', 0, 0, '', '', '[]', 0, 0, updated_at + $4, updated_at \
         FROM invocations WHERE owner_node = $1 AND last_tx = $3 ORDER BY id ON CONFLICT DO NOTHING"
    ),
);

/// The `queued` instances of a PostgreSQL claim: `$1` the JSON array of `{id, node, attempt, at}`
/// of the claimed attempts (the history rows of the claim), `$2` the report window in ms.
pub(super) const INSTANCE_QUEUE_POSTGRES: &str = concat!(
    "INSERT INTO task_instances (",
    queued_instance_columns!(),
    ") SELECT j.value ->> 'id', CAST(j.value ->> 'attempt' AS BIGINT), j.value ->> 'node', 'queued', \
     0, 0, '', '', '[]', 0, 0, CAST(j.value ->> 'at' AS BIGINT) + $2, CAST(j.value ->> 'at' AS BIGINT) FROM ",
    json_rows!(postgres),
    " ORDER BY j.key ON CONFLICT DO NOTHING"
);

/// Inserts task instances from the JSON array `$param` (rows `j`) that pass `$filter` (a
/// condition on `i`, the invocation joined by id); a second record of an attempt is ignored.
macro_rules! instance_insert {
    ($d:ident, $param:literal, $filter:literal) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now) \
             INSERT INTO task_instances (invocation_id, attempt, node, status, error_kind, \
             error_message, wall_ms, peak_memory_bytes, stdout, stderr, logs, output_truncated, \
             ended_at, report_by, started_at) SELECT i.id, CAST(j.value ->> 'attempt' AS BIGINT), \
             j.value ->> 'node', j.value ->> 'status', j.value ->> 'error_kind', \
             j.value ->> 'error_message', CAST(j.value ->> 'wall_ms' AS BIGINT), \
             CAST(j.value ->> 'peak_memory_bytes' AS BIGINT), j.value ->> 'stdout', \
             j.value ->> 'stderr', j.value ->> 'logs', CAST(j.value ->> 'output_truncated' AS BIGINT), \
             CASE WHEN j.value ->> 'report_window_ms' IS NULL THEN c.now ELSE 0 END, \
             c.now + CAST(j.value ->> 'report_window_ms' AS BIGINT), c.now FROM ",
            json_rows!($d, $param, "j"),
            " JOIN invocations i ON i.id = j.value ->> 'invocation_id' CROSS JOIN c WHERE ",
            $filter,
            " ORDER BY i.id, CAST(j.value ->> 'attempt' AS BIGINT) ON CONFLICT (invocation_id, attempt) DO UPDATE SET status = excluded.status, \
             node = excluded.node, error_kind = excluded.error_kind, error_message = excluded.error_message, \
             wall_ms = excluded.wall_ms, peak_memory_bytes = excluded.peak_memory_bytes, \
             stdout = excluded.stdout, stderr = excluded.stderr, logs = excluded.logs, \
             output_truncated = excluded.output_truncated, ended_at = excluded.ended_at, \
             report_by = excluded.report_by, signal = CASE WHEN excluded.report_by IS NULL THEN NULL \
             ELSE task_instances.signal END \
             WHERE task_instances.report_by IS NOT NULL"
        )
    };
    ($d:ident) => {
        instance_insert!($d, "$1", "TRUE")
    };
}
/// One pass of transitions: `$1` as for [`INVOCATION_TRANSITION`] (returning the applied
/// rows), `$2` marker, `$3` the JSON array of `{id, status, node}` of every status of every
/// path of the pass, in pass order then path order. History keeps the `$3` rows whose
/// invocation carries the marker, with its new attempt and time.
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
            instance_insert!(sqlite, "$4", "i.last_tx = $2"),
        )
    };
}
/// `invocation_transition_one_trip!` committed durably.
pub(super) const INVOCATION_TRANSITION_ONE_TRIP: &str = invocation_transition_one_trip!(durable);
/// `invocation_transition_one_trip!` committed without waiting for the disk.
pub(super) const INVOCATION_TRANSITION_ONE_TRIP_RELAXED: &str = invocation_transition_one_trip!(relaxed);

/// Puts a SQLite writer back in shape after a script failed (the failing statement may have
/// left its transaction open, or `synchronous` relaxed): run after a `ROLLBACK` whose own
/// error is ignored (there may be no transaction left to roll back). It fails if a transaction
/// is still open: SQLite refuses both the `PRAGMA` and the `BEGIN` inside one.
pub(super) const ONE_TRIP_RESET: &str = "PRAGMA synchronous = FULL; BEGIN; ROLLBACK";

// ---------------------------------------------------------------------------------------------
// Invocations: reads.

/// One invocation: `$1` id.
pub(super) const INVOCATION_GET: Sql =
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
pub(super) const INVOCATION_FIND_ROUTED: Sql = both!(invocation_find_routed);

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
pub(super) const PURGE_HISTORY: Sql = both!(purge_history);
/// Deletes the invocations the purge selects.
pub(super) const PURGE_INVOCATIONS: Sql = both!(purge_invocations);

/// Records the task instances of the JSON array `$1` (the caller passes those of applied
/// transitions only): a new row, or the next status of a live one (`report_by` set); a final
/// instance never changes again (an untimely write is ignored). `report_window_ms` null means
/// final (`report_by` cleared, `ended_at` now); otherwise `report_by` = now + the window.
pub(super) const INSTANCE_INSERT: Sql = both!(instance_insert);

macro_rules! instance_heartbeat {
    ($d:ident) => {
        concat!(
            "/* instance_heartbeat */ WITH h AS ",
            instance_heartbeat!(@held, $d),
            " UPDATE task_instances SET report_by = ",
            now_ms!($d),
            " + $3, status = CASE WHEN status = 'triaging' THEN 'running' ELSE status END \
             FROM h WHERE task_instances.invocation_id = h.invocation_id AND task_instances.attempt = h.attempt \
             AND task_instances.node = $1 AND task_instances.report_by IS NOT NULL \
             AND task_instances.status <> 'no_heartbeat' \
             RETURNING task_instances.invocation_id, task_instances.attempt, task_instances.status, task_instances.signal"
        )
    };
    // The live instances of the held list: on PostgreSQL locked up front in (invocation,
    // attempt) order, the order every write of instances follows.
    (@held, sqlite) => {
        concat!(
            "(SELECT h.value ->> 'id' AS invocation_id, CAST(h.value ->> 'attempt' AS BIGINT) AS attempt FROM ",
            json_rows!(sqlite, "$2", "h"),
            ")"
        )
    };
    (@held, postgres) => {
        concat!(
            "MATERIALIZED (SELECT t.invocation_id, t.attempt FROM task_instances t \
             WHERE t.node = $1 AND t.report_by IS NOT NULL AND t.status <> 'no_heartbeat' \
             AND (t.invocation_id, t.attempt) IN (SELECT h.value ->> 'id', CAST(h.value ->> 'attempt' AS BIGINT) FROM ",
            json_rows!(postgres, "$2", "h"),
            ") ORDER BY t.invocation_id, t.attempt FOR UPDATE)"
        )
    };
}
/// The heartbeat of node `$1` for the live instances it holds, the JSON array `$2` of
/// `{id, attempt}`: `report_by` = now + `$3` ms for all of them in ONE statement, `triaging`
/// back to `running`; returns the refreshed rows with their control signal. An instance the
/// node holds that is not returned was taken away (triaged, no longer live).
pub(super) const INSTANCE_HEARTBEAT: Sql = both!(instance_heartbeat);

/// Sets control signal `$2` on the live instance of invocation `$1` (delivered to its node by
/// the next heartbeat); returns the node.
pub(super) const INSTANCE_SIGNAL: Sql = Sql::same(
    "UPDATE task_instances SET signal = $2 WHERE invocation_id = $1 AND report_by IS NOT NULL RETURNING node AS name",
);

/// Live instances whose `report_by` is before `$1` (the triage's now), oldest deadline
/// first, at most `$2`.
pub(super) const INSTANCE_OVERDUE: Sql = Sql::same(
    "SELECT invocation_id, attempt, node, status, report_by FROM task_instances \
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
             AND task_instances.status = x.from_status AND task_instances.report_by = x.seen_report_by \
             RETURNING task_instances.invocation_id, task_instances.attempt"
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
/// read), next_report_by, error_kind, error_message}`; a row whose status or deadline moved
/// since it was read (a heartbeat came in) is left alone. Returns the rows it changed.
pub(super) const INSTANCE_TRIAGE: Sql = both!(instance_triage);

/// The invocations rows of the JSON array `$1` of ids, as rows a recovery can move.
macro_rules! invocation_movable {
    ($d:ident, $lock:literal) => {
        concat!(
            "SELECT id, status, attempts, owner_node FROM invocations WHERE id IN (SELECT j.value FROM ",
            json_texts!($d),
            ") ORDER BY id",
            $lock
        )
    };
}
/// The invocations whose ids are in the JSON array `$1`, as movable rows.
/// Locked on PostgreSQL (by id), so that a transaction that then changes their instances
/// keeps the global lock order (invocations before instances).
pub(super) const INVOCATION_MOVABLE: Sql =
    Sql { sqlite: invocation_movable!(sqlite, ""), postgres: invocation_movable!(postgres, " FOR UPDATE") };

macro_rules! instance_end_lost {
    ($d:ident) => {
        concat!(
            "WITH c AS MATERIALIZED (SELECT ",
            now_ms!($d),
            " AS now), x AS ",
            instance_end_lost!(@lost, $d),
            " UPDATE task_instances SET status = CASE WHEN task_instances.status IN ('running', 'triaging') \
             THEN 'unknown_error' ELSE 'error' END, report_by = NULL, ended_at = (SELECT now FROM c), \
             error_kind = 'host', error_message = $2, signal = NULL \
             FROM x WHERE task_instances.invocation_id = x.id AND task_instances.attempt = x.attempt \
             AND task_instances.report_by IS NOT NULL"
        )
    };
    (@lost, sqlite) => {
        concat!(
            "(SELECT j.value ->> 'id' AS id, CAST(j.value ->> 'attempt' AS BIGINT) AS attempt FROM ",
            json_rows!(sqlite),
            ")"
        )
    };
    (@lost, postgres) => {
        concat!(
            "MATERIALIZED (SELECT l.invocation_id AS id, l.attempt FROM task_instances l \
             WHERE l.report_by IS NOT NULL AND (l.invocation_id, l.attempt) IN \
             (SELECT j.value ->> 'id', CAST(j.value ->> 'attempt' AS BIGINT) FROM ",
            json_rows!(postgres),
            ") ORDER BY l.invocation_id, l.attempt FOR UPDATE)"
        )
    };
}
/// Ends the live instances of attempts lost with their node (the JSON array `$1` of `{id,
/// attempt}`), with the message `$2`: a running one `unknown_error`, one that never started
/// `error`. Run in the transaction that reroutes their invocations, so that every attempt the
/// history shows has an instance with its true end.
pub(super) const INSTANCE_END_LOST: Sql = both!(instance_end_lost);

/// The attempts of invocation `$1`, in order.
pub(super) const INSTANCE_LIST: Sql = Sql::same(
    "SELECT invocation_id, attempt, node, status, error_kind, error_message, wall_ms, \
     peak_memory_bytes, stdout, stderr, logs, output_truncated, ended_at, report_by, started_at FROM task_instances \
     WHERE invocation_id = $1 ORDER BY attempt",
);

/// Status, wall time and peak memory of the latest `$2` attempts of task `$1`.
pub(super) const INSTANCE_USAGE: Sql = Sql::same(
    "SELECT ti.status, ti.wall_ms, ti.peak_memory_bytes FROM task_instances ti \
     JOIN invocations i ON i.id = ti.invocation_id WHERE i.task = $1 AND ti.report_by IS NULL \
     ORDER BY ti.ended_at DESC LIMIT CAST($2 AS BIGINT)",
);

/// The invocations called by `$1` (its children), in call order.
pub(super) const INVOCATION_CHILDREN: Sql =
    Sql::same(concat!("SELECT ", invocation_columns!(), " FROM invocations WHERE parent = $1 ORDER BY id"));

macro_rules! invocation_get_many {
    ($d:ident) => {
        concat!(
            "SELECT ",
            invocation_columns!(),
            " FROM invocations WHERE id IN (SELECT j.value FROM ",
            json_texts!($d),
            ")"
        )
    };
}
/// Invocations whose ids are in the JSON array `$1`.
pub(super) const INVOCATION_GET_MANY: Sql = both!(invocation_get_many);

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
pub(super) const INVOCATION_LIST: Sql = invocation_list!("");
/// Page of one task's invocations (`$3`).
pub(super) const INVOCATION_LIST_TASK: Sql = invocation_list!(" AND task = $3");
/// Page of invocations in one status (`$3`).
pub(super) const INVOCATION_LIST_STATUS: Sql = invocation_list!(" AND status = $3");
/// Page of one task's invocations (`$3`) in one status (`$4`).
pub(super) const INVOCATION_LIST_TASK_STATUS: Sql = invocation_list!(" AND task = $3 AND status = $4");

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
pub(super) const INVOCATION_COUNT: Sql = invocation_count!("");
/// Counts of one task (`$1`).
pub(super) const INVOCATION_COUNT_TASK: Sql = invocation_count!(" WHERE task = $1");
/// Counts of one status (`$1`).
pub(super) const INVOCATION_COUNT_STATUS: Sql = invocation_count!(" WHERE status = $1");
/// Counts of one task (`$1`) and status (`$2`).
pub(super) const INVOCATION_COUNT_TASK_STATUS: Sql = invocation_count!(" WHERE task = $1 AND status = $2");

/// The history of invocation `$1`, oldest first.
pub(super) const INVOCATION_HISTORY: Sql = Sql::same(
    "SELECT status, node, attempt, at FROM invocation_history WHERE invocation_id = $1 \
     ORDER BY seq",
);

// ---------------------------------------------------------------------------------------------
// Membership, atomic services, triggers and events: see `coord.rs` beside this file.
#[path = "sql_coord.rs"]
pub(super) mod coord;

// Workflows and arrays: see `sql_workflow.rs` beside this file.
#[path = "sql_workflow.rs"]
pub(super) mod workflow;

// API keys: see `sql_keys.rs` beside this file.
#[path = "sql_keys.rs"]
pub(super) mod keys;
