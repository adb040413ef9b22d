//! Components and tasks for [`SqlStore`]: uploads (component row, its tasks, the options a user
//! patched kept), reads, deletion refused while calls are unfinished, task options. A child of
//! `engine.rs` (it shares its transaction macros); the SQL is in `sql_components.rs`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{Dialect, NameRow, Pools, SqlStore, bump_catalog, clamp_i64, corrupt, sql, to_json, to_u32, to_u64};
use crate::model::{ComponentInfo, ComponentVersion, Concurrency, KEPT_COMPONENT_VERSIONS, TaskDef, TaskPatch};
use crate::store::{StoreError, StoreResult};

use sql::components as q;

/// Which version of a component [`put`] makes current.
#[derive(Clone, Copy)]
pub(super) enum VersionSource<'a> {
    /// New code: stored as the next version, unless it is the current version's code (then
    /// nothing new is stored).
    Code {
        /// Digest of `bytes`.
        digest: &'a str,
        /// The component.
        bytes: &'a [u8],
    },
    /// A stored version (a rollback).
    Stored(u64),
}

/// What [`put`] stores: a component's name, the version to make current, and the tasks that
/// version describes.
pub(super) struct NewComponent<'a> {
    /// Unique name.
    pub name: &'a str,
    /// The version.
    pub version: VersionSource<'a>,
    /// Its tasks as described (options a user patched are applied on top).
    pub tasks: &'a [TaskDef],
}

/// A `tasks` row (`task_columns!` in `sql.rs`, shared with the workflow statements).
#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    name: String,
    component: String,
    description: Option<String>,
    max_attempts: i64,
    timeout_ms: i64,
    memory_limit_bytes: i64,
    registration_concurrency: String,
    running_concurrency: String,
    key_arguments: String,
    pins: String,
    paused: bool,
    user_patched: String,
    options: String,
}
#[derive(sqlx::FromRow)]
struct ComponentRow {
    name: String,
    digest: String,
    size_bytes: i64,
    uploaded_at: i64,
    version: i64,
}

/// `q::COMPONENT_CURRENT`.
#[derive(sqlx::FromRow)]
struct CurrentRow {
    version: i64,
    latest_version: i64,
    digest: String,
}

/// `q::VERSION_LIST`.
#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i64,
    digest: String,
    size_bytes: i64,
    uploaded_at: i64,
    current: i64,
    unfinished: i64,
}

#[derive(sqlx::FromRow)]
struct TaskNameRow {
    component: String,
    name: String,
}

#[derive(sqlx::FromRow)]
struct PutTaskRow {
    name: String,
    component: String,
    user_patched: String,
}

/// Unfinished invocations of one task (`q::COMPONENT_UNFINISHED`, `q::TASKS_STALE_UNFINISHED`).
#[derive(sqlx::FromRow)]
struct TaskCount {
    task: String,
    count: i64,
}

/// ` and N of `task`, …` for the tasks after the first of a refusal's message.
fn others(rest: &[TaskCount]) -> String {
    rest.iter().map(|t| format!(", and {} of task `{}`", t.count, t.task)).collect()
}

#[derive(sqlx::FromRow)]
struct BytesRow {
    bytes: Vec<u8>,
}

#[derive(Serialize)]
struct TaskJson<'a> {
    name: &'a str,
    component: &'a str,
    description: Option<&'a str>,
    max_attempts: i64,
    timeout_ms: i64,
    memory_limit_bytes: i64,
    registration_concurrency: &'static str,
    running_concurrency: &'static str,
    key_arguments: String,
    pins: String,
    paused: i64,
    user_patched: String,
    options: String,
    rate_limit: Option<&'a str>,
}

/// Refuses to store text that would not decode later (the store never holds rows it cannot
pub(super) fn parse_concurrency(s: &str) -> StoreResult<Concurrency> {
    s.parse().map_err(|e: String| StoreError::Corrupt(e))
}

fn parse_patch(s: &str) -> StoreResult<TaskPatch> {
    serde_json::from_str(s).map_err(|e| corrupt("task user patch", e))
}

/// `base` with every field `patch` sets overridden, as a JSON object without nulls (so new
/// patch fields need no code here).
fn merge_patch(base: &str, patch: &TaskPatch) -> StoreResult<String> {
    let mut merged: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(base).map_err(|e| corrupt("task user patch", e))?;
    match serde_json::to_value(patch) {
        Ok(serde_json::Value::Object(fields)) => {
            for (k, v) in fields {
                if !v.is_null() {
                    merged.insert(k, v);
                }
            }
        }
        other => return Err(corrupt("task patch", format!("{other:?}"))),
    }
    to_json(&merged)
}

impl TaskRow {
    fn decode(self) -> StoreResult<TaskDef> {
        Ok(TaskDef {
            max_attempts: to_u32("max_attempts", self.max_attempts)?,
            timeout_ms: to_u64("timeout_ms", self.timeout_ms)?,
            memory_limit_bytes: to_u64("memory_limit_bytes", self.memory_limit_bytes)?,
            registration_concurrency: parse_concurrency(&self.registration_concurrency)?,
            running_concurrency: parse_concurrency(&self.running_concurrency)?,
            key_arguments: serde_json::from_str(&self.key_arguments).map_err(|e| corrupt("key_arguments", e))?,
            pins: serde_json::from_str(&self.pins).map_err(|e| corrupt("pins", e))?,
            paused: self.paused,
            policy: serde_json::from_str(&self.options).map_err(|e| corrupt("options", e))?,
            name: self.name,
            component: self.component,
            description: self.description,
        })
    }
}

fn component_info(row: ComponentRow, tasks: Vec<String>) -> ComponentInfo {
    ComponentInfo {
        name: row.name,
        digest: row.digest,
        size_bytes: row.size_bytes,
        uploaded_at: row.uploaded_at,
        tasks,
        version: u64::try_from(row.version).unwrap_or_default(),
    }
}

fn task_json<'a>(task: &'a TaskDef, component: &'a str, user_patched: String) -> StoreResult<TaskJson<'a>> {
    Ok(TaskJson {
        name: &task.name,
        component,
        description: task.description.as_deref(),
        max_attempts: i64::from(task.max_attempts),
        timeout_ms: clamp_i64(task.timeout_ms),
        memory_limit_bytes: clamp_i64(task.memory_limit_bytes),
        registration_concurrency: task.registration_concurrency.as_str(),
        running_concurrency: task.running_concurrency.as_str(),
        key_arguments: to_json(&task.key_arguments)?,
        pins: to_json(&task.pins)?,
        paused: i64::from(task.paused),
        user_patched,
        options: to_json(&task.policy)?,
        rate_limit: task.policy.rate_limit.as_deref(),
    })
}

/// Makes a version of a component current and registers its tasks in one transaction
/// ([`crate::store::Store::component_put`], [`crate::store::Store::component_activate`]): new
/// code becomes the next version (and versions beyond [`KEPT_COMPONENT_VERSIONS`] that nothing
/// needs are deleted), a stored one becomes current again.
pub(super) async fn put(store: &SqlStore, component: &NewComponent<'_>) -> StoreResult<ComponentInfo> {
    let NewComponent { name, version, tasks } = *component;
    let mut names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(StoreError::Conflict(format!("task `{}` is described twice by component `{name}`", w[0])));
    }
    let names_json = to_json(&names)?;
    let (row, upserted) = in_tx!(store, |tx, d| {
        bump_catalog(&mut *tx, "tasks").await?;
        let current: Option<CurrentRow> =
            sqlx::query_as(q::COMPONENT_CURRENT.get(d)).bind(name).fetch_optional(&mut *tx).await?;
        if current.is_none() && matches!(version, VersionSource::Stored(_)) {
            return Err(StoreError::NotFound(format!("component `{name}`")));
        }
        let existing: Vec<PutTaskRow> =
            sqlx::query_as(q::TASKS_FOR_PUT.get(d)).bind(&names_json).bind(name).fetch_all(&mut *tx).await?;
        let mut patches = HashMap::new();
        for r in existing {
            if r.component != name {
                return Err(StoreError::Conflict(format!("task `{}` belongs to component `{}`", r.name, r.component)));
            }
            patches.insert(r.name, r.user_patched);
        }
        let row: ComponentRow = match (version, &current) {
            (VersionSource::Code { digest, .. }, Some(c)) if c.digest == digest => {
                sqlx::query_as(q::COMPONENT_GET.get(d)).bind(name).fetch_one(&mut *tx).await?
            }
            (VersionSource::Code { digest, bytes }, _) => {
                let number = current.as_ref().map_or(1, |c| c.latest_version + 1);
                let row: ComponentRow = sqlx::query_as(q::COMPONENT_UPSERT.get(d))
                    .bind(name)
                    .bind(digest)
                    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
                    .bind(number)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(q::VERSION_INSERT.get(d)).bind(name).bind(bytes).execute(&mut *tx).await?;
                let kept = i64::try_from(KEPT_COMPONENT_VERSIONS).unwrap_or(i64::MAX);
                sqlx::query(q::VERSIONS_PRUNE.get(d))
                    .bind(name)
                    .bind(number)
                    .bind(number.saturating_sub(kept))
                    .bind(current.as_ref().map_or(0, |c| c.version))
                    .execute(&mut *tx)
                    .await?;
                row
            }
            (VersionSource::Stored(v), _) => {
                let found: Option<ComponentRow> = sqlx::query_as(q::COMPONENT_ACTIVATE.get(d))
                    .bind(name)
                    .bind(clamp_i64(v))
                    .fetch_optional(&mut *tx)
                    .await?;
                found.ok_or_else(|| StoreError::NotFound(format!("version {v} of component `{name}`")))?
            }
        };
        // A task the new version drops must not strand calls that still wait for it.
        let stranded: Vec<TaskCount> =
            sqlx::query_as(q::TASKS_STALE_UNFINISHED.get(d)).bind(&names_json).bind(name).fetch_all(&mut *tx).await?;
        if let Some(first) = stranded.first() {
            return Err(StoreError::Conflict(format!(
                "this version of component `{name}` has no task `{}`, which has {} unfinished call(s){}; \
                 cancel them (POST /v1/invocations/{{id}}/cancel, found with GET /v1/invocations?task={}) \
                 or let them finish, then upload it again",
                first.task,
                first.count,
                others(&stranded[1..]),
                first.task
            )));
        }
        sqlx::query(q::TASKS_DELETE_STALE.get(d)).bind(&names_json).bind(name).execute(&mut *tx).await?;
        let mut effective = Vec::with_capacity(tasks.len());
        for t in tasks {
            let mut def = t.clone();
            def.component = name.to_owned();
            let patched = patches.remove(&t.name).unwrap_or_else(|| "{}".to_owned());
            def.apply(&parse_patch(&patched)?);
            effective.push((def, patched));
        }
        let rows = effective
            .iter()
            .map(|(def, patched)| task_json(def, name, patched.clone()))
            .collect::<StoreResult<Vec<_>>>()?;
        let upserted: Vec<NameRow> = if rows.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(q::TASKS_UPSERT.get(d)).bind(to_json(&rows)?).fetch_all(&mut *tx).await?
        };
        if upserted.len() != tasks.len() {
            // A concurrent upload took a name between our read and the upsert.
            let done: HashSet<&str> = upserted.iter().map(|r| r.name.as_str()).collect();
            let lost = names.iter().find(|n| !done.contains(*n)).copied().unwrap_or_default();
            return Err(StoreError::Conflict(format!("task `{lost}` belongs to another component")));
        }
        (row, upserted)
    });
    let mut task_names: Vec<String> = upserted.into_iter().map(|r| r.name).collect();
    task_names.sort_unstable();
    Ok(component_info(row, task_names))
}

pub(super) async fn list(store: &SqlStore) -> StoreResult<Vec<ComponentInfo>> {
    let (rows, names): (Vec<ComponentRow>, Vec<TaskNameRow>) = on_read!(store, |db, d| {
        let rows = sqlx::query_as(q::COMPONENT_LIST.get(d)).fetch_all(db).await?;
        let names = sqlx::query_as(q::COMPONENT_TASK_NAMES.get(d)).fetch_all(db).await?;
        (rows, names)
    });
    let mut by_component: HashMap<String, Vec<String>> = HashMap::new();
    for n in names {
        by_component.entry(n.component).or_default().push(n.name);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let tasks = by_component.remove(&row.name).unwrap_or_default();
            component_info(row, tasks)
        })
        .collect())
}

pub(super) async fn get(store: &SqlStore, name: &str) -> StoreResult<Option<ComponentInfo>> {
    let found: Option<(ComponentRow, Vec<TaskNameRow>)> = on_read!(store, |db, d| {
        match sqlx::query_as(q::COMPONENT_GET.get(d)).bind(name).fetch_optional(db).await? {
            Some(row) => {
                let names = sqlx::query_as(q::COMPONENT_TASK_NAMES_OF.get(d)).bind(name).fetch_all(db).await?;
                Some((row, names))
            }
            None => None,
        }
    });
    Ok(found.map(|(row, names)| component_info(row, names.into_iter().map(|n| n.name).collect())))
}

pub(super) async fn version_bytes(store: &SqlStore, name: &str, version: u64) -> StoreResult<Option<Vec<u8>>> {
    let row: Option<BytesRow> = on_read!(store, |db, d| sqlx::query_as(q::VERSION_BYTES.get(d))
        .bind(name)
        .bind(clamp_i64(version))
        .fetch_optional(db)
        .await?);
    Ok(row.map(|r| r.bytes))
}

/// The stored versions of a component, newest first; `None` if there is no such component
/// (a component always has its current version).
pub(super) async fn versions(store: &SqlStore, name: &str) -> StoreResult<Option<Vec<ComponentVersion>>> {
    let rows: Vec<VersionRow> =
        on_read!(store, |db, d| sqlx::query_as(q::VERSION_LIST.get(d)).bind(name).fetch_all(db).await?);
    if rows.is_empty() {
        return Ok(None);
    }
    rows.into_iter()
        .map(|r| {
            Ok(ComponentVersion {
                version: to_u64("version", r.version)?,
                digest: r.digest,
                size_bytes: r.size_bytes,
                uploaded_at: r.uploaded_at,
                current: r.current != 0,
                unfinished: to_u64("unfinished", r.unfinished)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()
        .map(Some)
}

/// Deletes a version that is not current and that no unfinished invocation is bound to
/// (`Conflict` otherwise, `NotFound` for an unknown component or version).
pub(super) async fn version_delete(store: &SqlStore, name: &str, version: u64) -> StoreResult<()> {
    let number = clamp_i64(version);
    in_tx!(store, |tx, d| {
        // The catalog's order: the catalog version, then the component (a rollback to this
        // version waits, or this waits for it), then the invocations table.
        bump_catalog(&mut *tx, "tasks").await?;
        let current: Option<CurrentRow> =
            sqlx::query_as(q::COMPONENT_CURRENT.get(d)).bind(name).fetch_optional(&mut *tx).await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("component `{name}`")));
        };
        if current.version == number {
            return Err(StoreError::Conflict(format!(
                "version {version} is the current version of component `{name}`: new calls run it; \
                 upload another version or roll back (POST /v1/components/{name}/rollback) first"
            )));
        }
        // A claim binds calls to the version it read as current: wait for those in flight (a
        // claim that began before a rollback away from this version may bind to it yet).
        sqlx::query(q::INVOCATIONS_QUIESCE.get(d)).execute(&mut *tx).await?;
        let unfinished: Option<(i64,)> =
            sqlx::query_as(q::VERSION_UNFINISHED.get(d)).bind(name).bind(number).fetch_optional(&mut *tx).await?;
        match unfinished {
            None => return Err(StoreError::NotFound(format!("version {version} of component `{name}`"))),
            Some((n,)) if n > 0 => {
                return Err(StoreError::Conflict(format!(
                    "version {version} of component `{name}` still has {n} unfinished call(s) bound to it \
                     (they and their retries run it); let them finish or cancel them, then delete it"
                )));
            }
            Some(_) => {}
        }
        sqlx::query(q::VERSION_DELETE.get(d)).bind(name).bind(number).execute(&mut *tx).await?;
    });
    Ok(())
}

pub(super) async fn delete(store: &SqlStore, name: &str) -> StoreResult<bool> {
    let deleted = in_tx!(store, |tx, d| {
        bump_catalog(&mut *tx, "tasks").await?;
        let stranded: Vec<TaskCount> =
            sqlx::query_as(q::COMPONENT_UNFINISHED.get(d)).bind(name).fetch_all(&mut *tx).await?;
        if !stranded.is_empty() {
            let total: i64 = stranded.iter().map(|t| t.count).sum();
            let per_task: Vec<String> = stranded.iter().map(|t| format!("{} of `{}`", t.count, t.task)).collect();
            let task = stranded.first().map(|t| t.task.as_str()).unwrap_or_default();
            return Err(StoreError::Conflict(format!(
                "component `{name}` has {total} unfinished call(s) of its tasks ({}); cancel them \
                 (POST /v1/invocations/{{id}}/cancel, found with GET /v1/invocations?task={task}) \
                 or let them finish, then delete it",
                per_task.join(", ")
            )));
        }
        sqlx::query(q::COMPONENT_DELETE.get(d)).bind(name).execute(&mut *tx).await?.rows_affected()
    });
    Ok(deleted > 0)
}

pub(super) async fn task_list(store: &SqlStore) -> StoreResult<Vec<TaskDef>> {
    let rows: Vec<TaskRow> = on_read!(store, |db, d| sqlx::query_as(q::TASK_LIST.get(d)).fetch_all(db).await?);
    rows.into_iter().map(TaskRow::decode).collect()
}

pub(super) async fn task_get(store: &SqlStore, name: &str) -> StoreResult<Option<TaskDef>> {
    let row: Option<TaskRow> =
        on_read!(store, |db, d| sqlx::query_as(q::TASK_GET.get(d)).bind(name).fetch_optional(db).await?);
    row.map(TaskRow::decode).transpose()
}

pub(super) async fn task_update(store: &SqlStore, name: &str, patch: &TaskPatch) -> StoreResult<Option<TaskDef>> {
    let updated = in_tx!(store, |tx, d| {
        bump_catalog(&mut *tx, "tasks").await?;
        let row: Option<TaskRow> =
            sqlx::query_as(q::TASK_GET_FOR_UPDATE.get(d)).bind(name).fetch_optional(&mut *tx).await?;
        match row {
            None => None,
            Some(row) => {
                let user_patched = merge_patch(&row.user_patched, patch)?;
                let mut def = row.decode()?;
                def.apply(patch);
                // The limit it names must exist; on PostgreSQL its row is share-locked until
                // the commit, so a concurrent delete of the limit waits and then sees the task.
                if let Some(limit) = def.policy.rate_limit.as_deref().filter(|_| patch.rate_limit.is_some()) {
                    let found: Option<(String,)> =
                        sqlx::query_as(q::RATE_LIMIT_SHARE.get(d)).bind(limit).fetch_optional(&mut *tx).await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound(format!("rate limit `{limit}`")));
                    }
                }
                sqlx::query(q::TASK_UPDATE.get(d))
                    .bind(name)
                    .bind(i64::from(def.max_attempts))
                    .bind(clamp_i64(def.timeout_ms))
                    .bind(clamp_i64(def.memory_limit_bytes))
                    .bind(def.registration_concurrency.as_str())
                    .bind(def.running_concurrency.as_str())
                    .bind(to_json(&def.key_arguments)?)
                    .bind(to_json(&def.pins)?)
                    .bind(def.paused)
                    .bind(user_patched)
                    .bind(to_json(&def.policy)?)
                    .bind(def.policy.rate_limit.as_deref())
                    .execute(&mut *tx)
                    .await?;
                Some(def)
            }
        }
    });
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_overrides_only_given_fields() {
        let first = TaskPatch { max_attempts: Some(5), paused: Some(true), ..TaskPatch::default() };
        let merged = merge_patch("{}", &first).unwrap();
        let second = TaskPatch { max_attempts: Some(7), ..TaskPatch::default() };
        let merged = parse_patch(&merge_patch(&merged, &second).unwrap()).unwrap();
        assert_eq!(merged, TaskPatch { max_attempts: Some(7), paused: Some(true), ..TaskPatch::default() });
    }
}
