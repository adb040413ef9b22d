//! Triggers and events for [`SqlStore`]: triggers and their runs, events, the status changes
//! a trigger evaluation reads, and what an evaluation saves (states, runs, cursors) in one
//! fenced transaction. A child of `engine.rs` (it shares its transaction macros); the SQL is in
//! `sql_triggers.rs`.

use std::collections::HashMap;

use serde::Serialize;

use super::{Dialect, Pools, SqlStore, check_fence, corrupt, parse_status, sql, stored_failure, to_json};
use crate::model::{Event, StatusChange, Trigger, TriggerRun};
use crate::store::{Fence, StoreError, StoreResult};

use sql::triggers as q;

/// What one trigger evaluation leaves behind ([`trigger_evaluation_save`]), saved under the
/// leader's fence.
pub(super) struct Evaluation<'a> {
    /// The leader's credentials.
    pub fence: &'a Fence,
    /// New states of triggers, by id.
    pub states: &'a [(String, serde_json::Value)],
    /// The runs that fired.
    pub runs: &'a [TriggerRun],
    /// New cursor positions.
    pub cursors: &'a [(&'a str, i64)],
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    id: String,
    task: String,
    args: Option<String>,
    args_from: String,
    condition: String,
    state: String,
    created_at: i64,
}

impl TriggerRow {
    fn decode(self) -> StoreResult<Trigger> {
        Ok(Trigger {
            args: self.args.map(|a| serde_json::from_str(&a)).transpose().map_err(|e| corrupt("trigger args", e))?,
            args_from: self.args_from.parse().map_err(|e: String| StoreError::Corrupt(e))?,
            on: serde_json::from_str(&self.condition).map_err(|e| corrupt("trigger condition", e))?,
            state: serde_json::from_str(&self.state).map_err(|e| corrupt("trigger state", e))?,
            id: self.id,
            task: self.task,
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TriggerRunRow {
    trigger_id: String,
    run_key: String,
    invocation_id: Option<String>,
    at: i64,
}

#[derive(Serialize)]
struct TriggerRunJson<'a> {
    trigger_id: &'a str,
    run_key: &'a str,
    invocation_id: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    code: String,
    payload: String,
    at: i64,
}

impl EventRow {
    fn decode(self) -> StoreResult<Event> {
        Ok(Event {
            payload: serde_json::from_str(&self.payload).map_err(|e| corrupt("event payload", e))?,
            seq: self.seq,
            code: self.code,
            at: self.at,
        })
    }
}

/// A cursor of the trigger evaluation.
#[derive(sqlx::FromRow)]
struct CursorRow {
    name: String,
    position: i64,
}

/// A status change as a trigger evaluation reads it.
#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    invocation_id: String,
    task: String,
    status: String,
    result: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    at: i64,
}

pub(super) async fn trigger_insert(store: &SqlStore, t: &Trigger) -> StoreResult<Trigger> {
    let args = t.args.as_ref().map(to_json).transpose()?;
    let (condition, state) = (to_json(&t.on)?, to_json(&t.state)?);
    let row: TriggerRow = in_tx!(store, |tx, d| {
        let row = sqlx::query_as(q::TRIGGER_INSERT.get(d))
            .bind(&t.id)
            .bind(&t.task)
            .bind(&args)
            .bind(t.args_from.as_str())
            .bind(&condition)
            .bind(&state)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(q::CURSORS_START.get(d)).execute(&mut *tx).await?;
        row
    });
    row.decode()
}

pub(super) async fn trigger_list(store: &SqlStore) -> StoreResult<Vec<Trigger>> {
    let rows: Vec<TriggerRow> = on_read!(store, |db, d| sqlx::query_as(q::TRIGGER_LIST.get(d)).fetch_all(db).await?);
    rows.into_iter().map(TriggerRow::decode).collect()
}

pub(super) async fn trigger_get(store: &SqlStore, id: &str) -> StoreResult<Option<Trigger>> {
    let row: Option<TriggerRow> =
        on_read!(store, |db, d| sqlx::query_as(q::TRIGGER_GET.get(d)).bind(id).fetch_optional(db).await?);
    row.map(TriggerRow::decode).transpose()
}

pub(super) async fn trigger_delete(store: &SqlStore, id: &str) -> StoreResult<bool> {
    let n =
        in_tx!(store, |tx, d| sqlx::query(q::TRIGGER_DELETE.get(d)).bind(id).execute(&mut *tx).await?.rows_affected());
    Ok(n > 0)
}

/// Saves a trigger evaluation in one fenced transaction ([`crate::store::Coordination::trigger_evaluation_save`]).
pub(super) async fn trigger_evaluation_save(store: &SqlStore, evaluation: &Evaluation<'_>) -> StoreResult<()> {
    let Evaluation { fence, states, runs, cursors } = *evaluation;
    #[derive(Serialize)]
    struct StateJson<'a> {
        id: &'a str,
        state: String,
    }
    #[derive(Serialize)]
    struct CursorJson<'a> {
        name: &'a str,
        position: i64,
    }
    let states = states
        .iter()
        .map(|(id, state)| Ok(StateJson { id, state: to_json(state)? }))
        .collect::<StoreResult<Vec<_>>>()?;
    let runs: Vec<TriggerRunJson<'_>> = runs
        .iter()
        .map(|r| TriggerRunJson {
            trigger_id: &r.trigger_id,
            run_key: &r.run_key,
            invocation_id: r.invocation_id.as_deref(),
        })
        .collect();
    let cursors: Vec<CursorJson<'_>> = cursors.iter().map(|&(name, position)| CursorJson { name, position }).collect();
    if states.is_empty() && runs.is_empty() && cursors.is_empty() {
        return Ok(());
    }
    let (states_json, runs_json, cursors_json) = (to_json(&states)?, to_json(&runs)?, to_json(&cursors)?);
    in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        if !states.is_empty() {
            sqlx::query(q::TRIGGER_STATES_UPDATE.get(d)).bind(&states_json).execute(&mut *tx).await?;
        }
        if !runs.is_empty() {
            sqlx::query(q::TRIGGER_RUNS_INSERT.get(d)).bind(&runs_json).execute(&mut *tx).await?;
        }
        if !cursors.is_empty() {
            sqlx::query(q::CURSORS_UPSERT.get(d)).bind(&cursors_json).execute(&mut *tx).await?;
        }
    });
    Ok(())
}

pub(super) async fn trigger_runs(store: &SqlStore, trigger_id: &str, limit: u32) -> StoreResult<Vec<TriggerRun>> {
    let rows: Vec<TriggerRunRow> = on_read!(store, |db, d| sqlx::query_as(q::TRIGGER_RUNS_LIST.get(d))
        .bind(trigger_id)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?);
    Ok(rows
        .into_iter()
        .map(|r| TriggerRun { trigger_id: r.trigger_id, run_key: r.run_key, invocation_id: r.invocation_id, at: r.at })
        .collect())
}

pub(super) async fn event_insert(store: &SqlStore, code: &str, payload: &serde_json::Value) -> StoreResult<Event> {
    let payload = to_json(payload)?;
    let row: EventRow = in_tx!(store, |tx, d| sqlx::query_as(q::EVENT_INSERT.get(d))
        .bind(code)
        .bind(&payload)
        .fetch_one(&mut *tx)
        .await?);
    row.decode()
}

pub(super) async fn events_after(
    store: &SqlStore,
    after: i64,
    settle_ms: i64,
    limit: u32,
) -> StoreResult<(Vec<Event>, i64)> {
    let rows: Vec<EventRow> = on_read!(store, |db, d| {
        let hi: Option<i64> = sqlx::query_scalar(q::EVENTS_SETTLED.get(d))
            .bind(after)
            .bind(settle_ms)
            .bind(i64::from(limit))
            .fetch_one(db)
            .await?;
        match hi {
            None => Vec::new(),
            Some(hi) => sqlx::query_as(q::EVENTS_RANGE.get(d)).bind(after).bind(hi).fetch_all(db).await?,
        }
    });
    let next = rows.last().map_or(after, |r| r.seq);
    Ok((rows.into_iter().map(EventRow::decode).collect::<StoreResult<_>>()?, next))
}

pub(super) async fn status_changes_after(
    store: &SqlStore,
    after: i64,
    tasks: &[String],
    settle_ms: i64,
    limit: u32,
) -> StoreResult<(Vec<StatusChange>, i64)> {
    let names = to_json(tasks)?;
    let (rows, next): (Vec<ChangeRow>, i64) = on_read!(store, |db, d| {
        let hi: Option<i64> = sqlx::query_scalar(q::HISTORY_SETTLED.get(d))
            .bind(after)
            .bind(settle_ms)
            .bind(i64::from(limit))
            .fetch_one(db)
            .await?;
        match hi {
            None => (Vec::new(), after),
            Some(hi) if tasks.is_empty() => (Vec::new(), hi),
            Some(hi) => {
                (sqlx::query_as(q::STATUS_CHANGES.get(d)).bind(after).bind(hi).bind(&names).fetch_all(db).await?, hi)
            }
        }
    });
    let changes = rows
        .into_iter()
        .map(|r| {
            Ok(StatusChange {
                seq: r.seq,
                status: parse_status(&r.status)?,
                result: r
                    .result
                    .map(|t| serde_json::from_str(&t))
                    .transpose()
                    .map_err(|e| corrupt("invocation result", e))?,
                error: stored_failure(r.error_kind, r.error_message)?,
                invocation: r.invocation_id,
                task: r.task,
                at: r.at,
            })
        })
        .collect::<StoreResult<_>>()?;
    Ok((changes, next))
}

pub(super) async fn events_purge(store: &SqlStore, fence: &Fence, older_than_ms: i64) -> StoreResult<u64> {
    Ok(in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        sqlx::query(q::EVENTS_PURGE.get(d)).bind(older_than_ms).execute(&mut *tx).await?.rows_affected()
    }))
}

pub(super) async fn trigger_cursors(store: &SqlStore) -> StoreResult<HashMap<String, i64>> {
    let rows: Vec<CursorRow> = on_read!(store, |db, d| sqlx::query_as(q::CURSOR_LIST.get(d)).fetch_all(db).await?);
    Ok(rows.into_iter().map(|r| (r.name, r.position)).collect())
}
