//! SQL of components and tasks (`components.rs`), both dialects side by side.

use super::Sql;

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
pub(in crate::store) const COMPONENT_UPSERT: Sql = both!(component_upsert);

/// All components (no bytes), by name.
pub(in crate::store) const COMPONENT_LIST: Sql =
    Sql::same("SELECT name, digest, size_bytes, uploaded_at FROM components ORDER BY name");

/// One component (no bytes): `$1` name.
pub(in crate::store) const COMPONENT_GET: Sql =
    Sql::same("SELECT name, digest, size_bytes, uploaded_at FROM components WHERE name = $1");

/// The bytes of a component: `$1` name.
pub(in crate::store) const COMPONENT_BYTES: Sql = Sql::same("SELECT bytes FROM components WHERE name = $1");

/// Removes a component; its tasks go with it (`ON DELETE CASCADE`), invocations stay.
pub(in crate::store) const COMPONENT_DELETE: Sql = Sql::same("DELETE FROM components WHERE name = $1");

/// Unfinished invocations per task of component `$1` (what deleting it would strand), by task.
/// Index probes per (task, status): finished invocations are not read.
pub(in crate::store) const COMPONENT_UNFINISHED: Sql = Sql::same(concat!(
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
pub(in crate::store) const TASKS_STALE_UNFINISHED: Sql = both!(tasks_stale_unfinished);

/// `(component, name)` of every task, for component listings.
pub(in crate::store) const COMPONENT_TASK_NAMES: Sql =
    Sql::same("SELECT component, name FROM tasks ORDER BY component, name");

/// `(component, name)` of the tasks of component `$1`.
pub(in crate::store) const COMPONENT_TASK_NAMES_OF: Sql =
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
pub(in crate::store) const TASKS_FOR_PUT: Sql = both!(tasks_for_put);

macro_rules! tasks_delete_stale {
    ($d:ident) => {
        concat!("DELETE FROM tasks WHERE component = $2 AND name NOT IN (SELECT j.value FROM ", json_texts!($d), ")")
    };
}
/// Deletes the tasks of component `$2` that are not in the JSON array of names `$1`.
pub(in crate::store) const TASKS_DELETE_STALE: Sql = both!(tasks_delete_stale);

macro_rules! tasks_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO tasks (",
            task_columns!(),
            ", rate_limit, updated_at) \
             SELECT j.value ->> 'name', j.value ->> 'component', j.value ->> 'description', \
             CAST(j.value ->> 'max_attempts' AS BIGINT), CAST(j.value ->> 'timeout_ms' AS BIGINT), \
             CAST(j.value ->> 'memory_limit_bytes' AS BIGINT), \
             j.value ->> 'registration_concurrency', j.value ->> 'running_concurrency', \
             j.value ->> 'key_arguments', j.value ->> 'pins', \
             (CAST(j.value ->> 'paused' AS INTEGER) <> 0), j.value ->> 'user_patched', \
             j.value ->> 'options', j.value ->> 'rate_limit', ",
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
             options = excluded.options, rate_limit = excluded.rate_limit, \
             updated_at = excluded.updated_at \
             WHERE tasks.component = excluded.component \
             RETURNING name"
        )
    };
}
/// Inserts or updates the tasks in the JSON array `$1` (objects with every task column; the
/// effective values, user patches already applied). A task owned by another component is left
/// alone and not returned, which the caller turns into a conflict (race-proof check).
pub(in crate::store) const TASKS_UPSERT: Sql = both!(tasks_upsert);

/// All tasks by name.
pub(in crate::store) const TASK_LIST: Sql = Sql::same(concat!("SELECT ", task_columns!(), " FROM tasks ORDER BY name"));

/// One task: `$1` name.
pub(in crate::store) const TASK_GET: Sql =
    Sql::same(concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1"));

/// One task, locked for an update (PostgreSQL) — SQLite has one writer anyway.
pub(in crate::store) const TASK_GET_FOR_UPDATE: Sql = Sql {
    sqlite: concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1"),
    postgres: concat!("SELECT ", task_columns!(), " FROM tasks WHERE name = $1 FOR UPDATE"),
};

macro_rules! task_update {
    ($d:ident) => {
        concat!(
            "UPDATE tasks SET max_attempts = $2, timeout_ms = $3, memory_limit_bytes = $4, \
             registration_concurrency = $5, running_concurrency = $6, key_arguments = $7, \
             pins = $8, paused = $9, user_patched = $10, options = $11, rate_limit = $12, updated_at = ",
            now_ms!($d),
            " WHERE name = $1"
        )
    };
}
/// Rewrites a task's options (`$1` name, `$2`… every option, `$10` the merged user patch, `$11` the policy JSON,
/// `$12` the rate limit it names, a copy of the policy's).
pub(in crate::store) const TASK_UPDATE: Sql = both!(task_update);

/// Rate limit `$1`'s name if it exists, share-locked on PostgreSQL (a task patch naming it:
/// a delete of the limit waits for the patch and then sees the task).
pub(in crate::store) const RATE_LIMIT_SHARE: Sql = Sql {
    sqlite: "SELECT name FROM rate_limits WHERE name = $1",
    postgres: "SELECT name FROM rate_limits WHERE name = $1 FOR SHARE",
};
