//! SQL of components and tasks (`components.rs`), both dialects side by side.

use super::Sql;

// ---------------------------------------------------------------------------------------------
// Components.

/// The current version of component `$1`, the highest number given and the current digest;
/// PostgreSQL locks the row (after the catalog version: one order for catalog writes).
pub(in crate::store) const COMPONENT_CURRENT: Sql = Sql {
    sqlite: "SELECT version, latest_version, digest FROM components WHERE name = $1",
    postgres: "SELECT version, latest_version, digest FROM components WHERE name = $1 FOR UPDATE",
};

macro_rules! component_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO components (name, digest, size_bytes, uploaded_at, version, latest_version) \
             VALUES ($1, $2, $3, ",
            now_ms!($d),
            ", $4, $4) ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, \
             size_bytes = excluded.size_bytes, uploaded_at = excluded.uploaded_at, \
             version = excluded.version, latest_version = excluded.latest_version \
             RETURNING name, digest, size_bytes, uploaded_at, version"
        )
    };
}
/// Makes new version `$4` of component `$1` current (`$2` digest, `$3` size), creating the
/// component row for its first. An update (not a delete + insert), so its tasks and versions
/// are not cascaded away.
pub(in crate::store) const COMPONENT_UPSERT: Sql = both!(component_upsert);

/// Stores the bytes `$2` of component `$1`'s current version (just made by [`COMPONENT_UPSERT`]).
pub(in crate::store) const VERSION_INSERT: Sql = Sql::same(
    "INSERT INTO component_versions (component, version, digest, size_bytes, bytes, uploaded_at) \
     SELECT name, version, digest, size_bytes, $2, uploaded_at FROM components WHERE name = $1",
);

/// Makes stored version `$2` of component `$1` current again (a rollback); no row if either
/// does not exist.
pub(in crate::store) const COMPONENT_ACTIVATE: Sql = Sql::same(
    "UPDATE components SET version = $2, \
     digest = (SELECT v.digest FROM component_versions v WHERE v.component = $1 AND v.version = $2), \
     size_bytes = (SELECT v.size_bytes FROM component_versions v WHERE v.component = $1 AND v.version = $2), \
     uploaded_at = (SELECT v.uploaded_at FROM component_versions v WHERE v.component = $1 AND v.version = $2) \
     WHERE name = $1 AND EXISTS (SELECT 1 FROM component_versions v WHERE v.component = $1 AND v.version = $2) \
     RETURNING name, digest, size_bytes, uploaded_at, version",
);

/// What unfinished invocations bound to version `v.version` of component `$1` count (`v` is
/// the version row of the statement around it): through the component's tasks and their
/// (task, status) index, finished calls are not read.
macro_rules! version_unfinished {
    () => {
        concat!(
            "(SELECT COUNT(*) FROM tasks t JOIN invocations i ON i.task = t.name \
             WHERE t.component = $1 AND i.component_version = v.version AND i.status IN ",
            unfinished_statuses!(),
            ")"
        )
    };
}

/// Every stored version of component `$1`, newest first, with whether it is current and how
/// many unfinished invocations are bound to it.
pub(in crate::store) const VERSION_LIST: Sql = Sql::same(concat!(
    "SELECT v.version, v.digest, v.size_bytes, v.uploaded_at, \
     CAST(CASE WHEN v.version = c.version THEN 1 ELSE 0 END AS BIGINT) AS current, ",
    version_unfinished!(),
    " AS unfinished FROM component_versions v JOIN components c ON c.name = v.component \
     WHERE v.component = $1 ORDER BY v.version DESC"
));

/// The bytes of version `$2` of component `$1`.
pub(in crate::store) const VERSION_BYTES: Sql =
    Sql::same("SELECT bytes FROM component_versions WHERE component = $1 AND version = $2");

/// How many unfinished invocations are bound to version `$2` of component `$1`; no row if
/// the version does not exist.
pub(in crate::store) const VERSION_UNFINISHED: Sql = Sql::same(concat!(
    "SELECT ",
    version_unfinished!(),
    " AS unfinished FROM component_versions v WHERE v.component = $1 AND v.version = $2"
));

/// Waits for the writes to `invocations` in flight and holds new ones back until the commit
/// (PostgreSQL's `SHARE` lock of the table), so that no claim that read an earlier current
/// version is still binding calls to it when a version's deletion counts what is bound to it.
/// A no-op on SQLite, whose one writer runs claims and deletions one after the other.
pub(in crate::store) const INVOCATIONS_QUIESCE: Sql =
    Sql { sqlite: "SELECT 1", postgres: "LOCK TABLE invocations IN SHARE MODE" };

/// Deletes version `$2` of component `$1` (the caller has checked that nothing needs it).
pub(in crate::store) const VERSION_DELETE: Sql =
    Sql::same("DELETE FROM component_versions WHERE component = $1 AND version = $2");

/// Deletes the versions of component `$1` numbered `$3` or lower, except the current one
/// (`$2`), the one current until this upload (`$4`: a claim that began before the upload may
/// still bind calls to it) and those unfinished invocations are bound to (the upload's
/// pruning).
pub(in crate::store) const VERSIONS_PRUNE: Sql = Sql::same(concat!(
    "DELETE FROM component_versions WHERE component = $1 AND version <> $2 AND version <= $3 AND version <> $4 \
     AND version NOT IN (SELECT v.version FROM component_versions v WHERE v.component = $1 AND ",
    version_unfinished!(),
    " > 0)"
));

/// All components (no bytes), by name.
pub(in crate::store) const COMPONENT_LIST: Sql =
    Sql::same("SELECT name, digest, size_bytes, uploaded_at, version FROM components ORDER BY name");

/// One component (no bytes): `$1` name.
pub(in crate::store) const COMPONENT_GET: Sql =
    Sql::same("SELECT name, digest, size_bytes, uploaded_at, version FROM components WHERE name = $1");

/// Removes a component; its tasks and versions go with it (`ON DELETE CASCADE`), invocations
/// stay.
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
