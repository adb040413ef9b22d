//! Rate limits for [`SqlStore`]: the limits (create or replace, list, delete while no task
//! names them) and when a key's window is used up. A child of `engine.rs` (it shares its
//! transaction macros); the SQL is in `sql_rate_limits.rs`. The claim of rate-limited calls
//! is in `invocations.rs`, beside the other claims.

use std::collections::BTreeMap;

use super::{Dialect, Pools, SqlStore, bump_catalog, clamp_i64, to_u64};
use crate::model::Millis;
use crate::model::rate_limit::RateLimit;
use crate::store::{StoreError, StoreResult};

use super::sql::rate_limits as q;

/// A `rate_limits` row.
#[derive(sqlx::FromRow)]
pub(super) struct LimitRow {
    pub(super) name: String,
    pub(super) limit_n: i64,
    pub(super) per_ms: i64,
    pub(super) key_path: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl LimitRow {
    fn decode(self, tasks: Vec<String>) -> StoreResult<RateLimit> {
        Ok(RateLimit {
            limit: to_u64("limit_n", self.limit_n)?,
            per_ms: to_u64("per_ms", self.per_ms)?,
            name: self.name,
            key: self.key_path,
            tasks,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A task that names a limit.
#[derive(sqlx::FromRow)]
struct LimitedTask {
    name: String,
    rate_limit: String,
}

/// The tasks naming each limit.
async fn tasks_by_limit(store: &SqlStore) -> StoreResult<BTreeMap<String, Vec<String>>> {
    let rows: Vec<LimitedTask> = on_read!(store, |db, d| sqlx::query_as(q::LIMITED_TASKS.get(d)).fetch_all(db).await?);
    let mut by = BTreeMap::<String, Vec<String>>::new();
    for r in rows {
        by.entry(r.rate_limit).or_default().push(r.name);
    }
    Ok(by)
}

/// Creates or replaces limit `name`; true if it is new. A new window length or key forgets
/// what started in the current window (it was counted in other windows or per other keys).
pub(super) async fn put(
    store: &SqlStore,
    name: &str,
    limit: u64,
    per_ms: u64,
    key: Option<&str>,
) -> StoreResult<(RateLimit, bool)> {
    let (row, created) = in_tx!(store, |tx, d| {
        // Rate limits are part of what every node caches with its task definitions.
        bump_catalog(&mut *tx, "tasks").await?;
        let before: Option<LimitRow> =
            sqlx::query_as(q::LIMIT_GET_FOR_UPDATE.get(d)).bind(name).fetch_optional(&mut *tx).await?;
        let row: LimitRow = sqlx::query_as(q::LIMIT_UPSERT.get(d))
            .bind(name)
            .bind(clamp_i64(limit))
            .bind(clamp_i64(per_ms))
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        if before.as_ref().is_some_and(|b| b.per_ms != row.per_ms || b.key_path != row.key_path) {
            sqlx::query(q::USAGE_FORGET.get(d)).bind(name).execute(&mut *tx).await?;
        }
        (row, before.is_none())
    });
    let tasks = tasks_by_limit(store).await?.remove(name).unwrap_or_default();
    Ok((row.decode(tasks)?, created))
}

/// Every limit with the tasks naming it.
pub(super) async fn list(store: &SqlStore) -> StoreResult<Vec<RateLimit>> {
    let rows: Vec<LimitRow> = on_read!(store, |db, d| sqlx::query_as(q::LIMIT_LIST.get(d)).fetch_all(db).await?);
    let mut tasks = tasks_by_limit(store).await?;
    rows.into_iter()
        .map(|r| {
            let t = tasks.remove(&r.name).unwrap_or_default();
            r.decode(t)
        })
        .collect()
}

/// Limit `name` with the tasks naming it.
pub(super) async fn get(store: &SqlStore, name: &str) -> StoreResult<Option<RateLimit>> {
    let row: Option<LimitRow> =
        on_read!(store, |db, d| sqlx::query_as(q::LIMIT_GET.get(d)).bind(name).fetch_optional(db).await?);
    let Some(row) = row else { return Ok(None) };
    let tasks = tasks_by_limit(store).await?.remove(name).unwrap_or_default();
    Ok(Some(row.decode(tasks)?))
}

/// Deletes limit `name`, refused while a task names it; false if there is none.
pub(super) async fn delete(store: &SqlStore, name: &str) -> StoreResult<bool> {
    let deleted = in_tx!(store, |tx, d| {
        bump_catalog(&mut *tx, "tasks").await?;
        let found: Option<LimitRow> =
            sqlx::query_as(q::LIMIT_GET_FOR_UPDATE.get(d)).bind(name).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Ok(false);
        }
        let users: Vec<LimitedTask> = sqlx::query_as(q::LIMITED_TASKS.get(d)).fetch_all(&mut *tx).await?;
        let users: Vec<String> =
            users.into_iter().filter(|t| t.rate_limit == name).map(|t| format!("`{}`", t.name)).collect();
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "rate limit `{name}` is named by task(s) {}; remove it from them first \
                 (PATCH /v1/tasks/{{task}} {{\"rate_limit\": \"\"}})",
                users.join(", ")
            )));
        }
        sqlx::query(q::USAGE_FORGET.get(d)).bind(name).execute(&mut *tx).await?;
        sqlx::query(q::LIMIT_DELETE.get(d)).bind(name).execute(&mut *tx).await?;
        true
    });
    Ok(deleted)
}

/// When the current window of limit `limit` for `key` ends, if that key used it up.
pub(super) async fn limited_until(store: &SqlStore, limit: &str, key: &str) -> StoreResult<Option<Millis>> {
    let row: Option<(i64,)> = on_read!(store, |db, d| sqlx::query_as(q::LIMITED_UNTIL.get(d))
        .bind(limit)
        .bind(key)
        .fetch_optional(db)
        .await?);
    Ok(row.map(|r| r.0))
}
