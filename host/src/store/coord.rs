//! [`Coordination`] for [`SqlStore`]: node membership, the atomic services' gate and records,
//! triggers, events and the trigger evaluation's cursors. A child of `engine.rs` (it shares its
//! transaction macros and row helpers); the SQL is in `sql_coord.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::Serialize;

use super::transitions::{MovableRow, apply_moves, end_lost, moves, recovery_path};
use super::{Dialect, Pools, SqlStore, check_fence, corrupt, parse_status, sql, stored_failure, to_json, to_u32};
use crate::model::{
    Event, InvocationStatus, Lease, Millis, NodeInfo, ServiceRun, ServiceRunStatus, StatusChange, TokenAudit,
    TokenRing, Trigger, TriggerRun,
};
use crate::store::{Coordination, Fence, ServiceGate, Store, StoreError, StoreResult};

use sql::coord as q;

#[derive(sqlx::FromRow)]
struct NodeRow {
    name: String,
    labels: String,
    capacity: i64,
    joined_at: i64,
    started_at: i64,
    heartbeat_at: i64,
    left_at: Option<i64>,
}

impl NodeRow {
    fn decode(self) -> StoreResult<NodeInfo> {
        Ok(NodeInfo {
            labels: serde_json::from_str(&self.labels).map_err(|e| corrupt("node labels", e))?,
            capacity: to_u32("capacity", self.capacity)?,
            name: self.name,
            joined_at: self.joined_at,
            started_at: self.started_at,
            heartbeat_at: self.heartbeat_at,
            left_at: self.left_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct NodeListRow {
    #[sqlx(flatten)]
    node: NodeRow,
    now: i64,
}

#[derive(sqlx::FromRow)]
struct ServiceRow {
    id: i64,
    node: String,
    epoch: Option<i64>,
    status: String,
    started_at: i64,
    ended_at: Option<i64>,
    detail: String,
}

impl ServiceRow {
    fn decode(self) -> StoreResult<ServiceRun> {
        Ok(ServiceRun {
            id: self.id,
            status: self.status.parse().map_err(|e: String| StoreError::Corrupt(e))?,
            detail: serde_json::from_str(&self.detail).map_err(|e| corrupt("service run detail", e))?,
            node: self.node,
            epoch: self.epoch,
            started_at: self.started_at,
            ended_at: self.ended_at,
        })
    }
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

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl Coordination for SqlStore {
    async fn node_register(&self, name: &str, labels: &[String], capacity: u32) -> StoreResult<NodeInfo> {
        let labels = to_json(labels)?;
        let row: NodeRow = in_tx!(self, |tx, d| sqlx::query_as(q::NODE_REGISTER.get(d))
            .bind(name)
            .bind(&labels)
            .bind(i64::from(capacity))
            .fetch_one(&mut *tx)
            .await?);
        row.decode()
    }

    async fn node_heartbeat(&self, name: &str) -> StoreResult<Option<Millis>> {
        let at: Option<(i64,)> =
            in_tx!(self, |tx, d| sqlx::query_as(q::NODE_HEARTBEAT.get(d)).bind(name).fetch_optional(&mut *tx).await?);
        Ok(at.map(|(t,)| t))
    }

    async fn node_leave(&self, name: &str) -> StoreResult<()> {
        in_tx!(self, |tx, d| {
            sqlx::query(q::NODE_LEAVE.get(d)).bind(name).execute(&mut *tx).await?;
        });
        Ok(())
    }

    async fn node_list(&self) -> StoreResult<(Millis, Vec<NodeInfo>)> {
        let rows: Vec<NodeListRow> = on_read!(self, |db, d| sqlx::query_as(q::NODE_LIST.get(d)).fetch_all(db).await?);
        let now = match rows.first() {
            Some(r) => r.now,
            None => self.now().await?,
        };
        let nodes = rows.into_iter().map(|r| r.node.decode()).collect::<StoreResult<_>>()?;
        Ok((now, nodes))
    }

    async fn service_begin(&self, fence: &Fence, stale_after_ms: i64) -> StoreResult<ServiceGate> {
        let gate = in_tx!(self, |tx, d| {
            check_fence(&mut *tx, fence).await?;
            sqlx::query(q::SERVICE_ABANDON.get(d)).bind(stale_after_ms).bind(fence.epoch).execute(&mut *tx).await?;
            let id: Option<(i64,)> = sqlx::query_as(q::SERVICE_INSERT.get(d))
                .bind(&fence.node)
                .bind(ServiceRunStatus::Running.as_str())
                .bind(fence.epoch)
                .fetch_optional(&mut *tx)
                .await?;
            match id {
                Some((id,)) => ServiceGate::Acquired(id),
                None => {
                    sqlx::query(q::SERVICE_INSERT.get(d))
                        .bind(&fence.node)
                        .bind(ServiceRunStatus::Blocked.as_str())
                        .bind(fence.epoch)
                        .execute(&mut *tx)
                        .await?;
                    let holder: Option<ServiceRow> =
                        sqlx::query_as(q::SERVICE_RUNNING.get(d)).fetch_optional(&mut *tx).await?;
                    ServiceGate::Busy(holder.map(ServiceRow::decode).transpose()?)
                }
            }
        });
        Ok(gate)
    }

    async fn service_finish(&self, id: i64, status: ServiceRunStatus, detail: &serde_json::Value) -> StoreResult<()> {
        let detail = to_json(detail)?;
        in_tx!(self, |tx, d| {
            sqlx::query(q::SERVICE_FINISH.get(d))
                .bind(id)
                .bind(status.as_str())
                .bind(&detail)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    async fn service_list(&self, limit: u32) -> StoreResult<Vec<ServiceRun>> {
        let rows: Vec<ServiceRow> =
            on_read!(self, |db, d| sqlx::query_as(q::SERVICE_LIST.get(d)).bind(i64::from(limit)).fetch_all(db).await?);
        rows.into_iter().map(ServiceRow::decode).collect()
    }

    async fn service_prune(&self, fence: &Fence, older_than_ms: i64) -> StoreResult<u64> {
        Ok(in_tx!(self, |tx, d| {
            check_fence(&mut *tx, fence).await?;
            sqlx::query(q::SERVICE_PRUNE.get(d)).bind(older_than_ms).execute(&mut *tx).await?.rows_affected()
        }))
    }

    async fn invocation_recover_pending(&self, fence: &Fence, older_than_ms: i64, limit: u32) -> StoreResult<u64> {
        let why = format!(
            "attempt lost: claimed but not started within max_pending ({older_than_ms} ms); the leader `{}` rerouted the invocation",
            fence.node
        );
        let moved = in_tx!(self, |tx, d| {
            check_fence(&mut *tx, fence).await?;
            let rows: Vec<MovableRow> = sqlx::query_as(q::INVOCATION_PENDING_SINCE.get(d))
                .bind(older_than_ms)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let changes = moves(rows, &fence.node, recovery_path)?;
            let applied = apply_moves(&mut *tx, &changes).await?;
            end_lost(&mut *tx, &changes, &applied, &why).await?;
            applied.len()
        });
        Ok(count(moved))
    }

    async fn invocation_drop_blocked(&self, fence: &Fence, tasks: &[String], limit: u32) -> StoreResult<Vec<String>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let names = to_json(tasks)?;
        let dropped = in_tx!(self, |tx, d| {
            check_fence(&mut *tx, fence).await?;
            let rows: Vec<MovableRow> = sqlx::query_as(q::INVOCATION_BLOCKED.get(d))
                .bind(&names)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let changes = moves(rows, &fence.node, |_| vec![InvocationStatus::ConcurrencyControlledFinal])?;
            let applied = apply_moves(&mut *tx, &changes).await?;
            applied.into_iter().filter_map(|i| changes.get(i).map(|c| c.id.clone())).collect::<Vec<_>>()
        });
        Ok(dropped)
    }

    async fn trigger_insert(&self, t: &Trigger) -> StoreResult<Trigger> {
        let args = t.args.as_ref().map(to_json).transpose()?;
        let (condition, state) = (to_json(&t.on)?, to_json(&t.state)?);
        let row: TriggerRow = in_tx!(self, |tx, d| sqlx::query_as(q::TRIGGER_INSERT.get(d))
            .bind(&t.id)
            .bind(&t.task)
            .bind(&args)
            .bind(t.args_from.as_str())
            .bind(&condition)
            .bind(&state)
            .fetch_one(&mut *tx)
            .await?);
        row.decode()
    }

    async fn trigger_list(&self) -> StoreResult<Vec<Trigger>> {
        let rows: Vec<TriggerRow> =
            on_read!(self, |db, d| sqlx::query_as(q::TRIGGER_LIST.get(d)).fetch_all(db).await?);
        rows.into_iter().map(TriggerRow::decode).collect()
    }

    async fn trigger_get(&self, id: &str) -> StoreResult<Option<Trigger>> {
        let row: Option<TriggerRow> =
            on_read!(self, |db, d| sqlx::query_as(q::TRIGGER_GET.get(d)).bind(id).fetch_optional(db).await?);
        row.map(TriggerRow::decode).transpose()
    }

    async fn trigger_delete(&self, id: &str) -> StoreResult<bool> {
        let n = in_tx!(self, |tx, d| sqlx::query(q::TRIGGER_DELETE.get(d))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    async fn trigger_evaluation_save(
        &self,
        fence: &Fence,
        states: &[(String, serde_json::Value)],
        runs: &[TriggerRun],
        cursors: &[(&str, i64)],
    ) -> StoreResult<()> {
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
        let cursors: Vec<CursorJson<'_>> =
            cursors.iter().map(|&(name, position)| CursorJson { name, position }).collect();
        if states.is_empty() && runs.is_empty() && cursors.is_empty() {
            return Ok(());
        }
        let (states_json, runs_json, cursors_json) = (to_json(&states)?, to_json(&runs)?, to_json(&cursors)?);
        in_tx!(self, |tx, d| {
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

    async fn trigger_runs(&self, trigger_id: &str, limit: u32) -> StoreResult<Vec<TriggerRun>> {
        let rows: Vec<TriggerRunRow> = on_read!(self, |db, d| sqlx::query_as(q::TRIGGER_RUNS_LIST.get(d))
            .bind(trigger_id)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        Ok(rows
            .into_iter()
            .map(|r| TriggerRun {
                trigger_id: r.trigger_id,
                run_key: r.run_key,
                invocation_id: r.invocation_id,
                at: r.at,
            })
            .collect())
    }

    async fn event_insert(&self, code: &str, payload: &serde_json::Value) -> StoreResult<Event> {
        let payload = to_json(payload)?;
        let row: EventRow = in_tx!(self, |tx, d| sqlx::query_as(q::EVENT_INSERT.get(d))
            .bind(code)
            .bind(&payload)
            .fetch_one(&mut *tx)
            .await?);
        row.decode()
    }

    async fn events_after(&self, after: i64, settle_ms: i64, limit: u32) -> StoreResult<(Vec<Event>, i64)> {
        let rows: Vec<EventRow> = on_read!(self, |db, d| {
            let (hi,): (Option<i64>,) = sqlx::query_as(q::EVENTS_SETTLED.get(d))
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

    async fn status_changes_after(
        &self,
        after: i64,
        tasks: &[String],
        settle_ms: i64,
        limit: u32,
    ) -> StoreResult<(Vec<StatusChange>, i64)> {
        let names = to_json(tasks)?;
        let (rows, next): (Vec<ChangeRow>, i64) = on_read!(self, |db, d| {
            let (hi,): (Option<i64>,) = sqlx::query_as(q::HISTORY_SETTLED.get(d))
                .bind(after)
                .bind(settle_ms)
                .bind(i64::from(limit))
                .fetch_one(db)
                .await?;
            match hi {
                None => (Vec::new(), after),
                Some(hi) if tasks.is_empty() => (Vec::new(), hi),
                Some(hi) => (
                    sqlx::query_as(q::STATUS_CHANGES.get(d)).bind(after).bind(hi).bind(&names).fetch_all(db).await?,
                    hi,
                ),
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

    async fn events_purge(&self, fence: &Fence, older_than_ms: i64) -> StoreResult<u64> {
        Ok(in_tx!(self, |tx, d| {
            check_fence(&mut *tx, fence).await?;
            sqlx::query(q::EVENTS_PURGE.get(d)).bind(older_than_ms).execute(&mut *tx).await?.rows_affected()
        }))
    }

    async fn trigger_cursors(&self) -> StoreResult<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            on_read!(self, |db, d| sqlx::query_as(q::CURSOR_LIST.get(d)).fetch_all(db).await?);
        Ok(rows.into_iter().collect())
    }

    async fn lease_claim(&self, node: &str, ttl_ms: i64, held: Option<i64>) -> StoreResult<Option<i64>> {
        let epoch: Option<(i64,)> = in_tx!(self, |tx, d| sqlx::query_as(q::LEASE_CLAIM.get(d))
            .bind(node)
            .bind(ttl_ms)
            .bind(held)
            .fetch_optional(&mut *tx)
            .await?);
        Ok(epoch.map(|(e,)| e))
    }

    async fn lease_get(&self) -> StoreResult<Lease> {
        let (holder, epoch, expires_at, now): (Option<String>, i64, i64, i64) =
            on_read!(self, |db, d| sqlx::query_as(q::LEASE_GET.get(d)).fetch_one(db).await?);
        Ok(Lease { holder, epoch, expires_at, now })
    }

    async fn ring_get(&self, owners: bool) -> StoreResult<TokenRing> {
        let (version, total, updated_at, rows): (i64, i64, i64, Vec<(i64, String)>) = on_read!(self, |db, d| {
            let (v, t, u): (i64, i64, i64) = sqlx::query_as(q::RING_GET.get(d)).fetch_one(db).await?;
            let rows = if owners { sqlx::query_as(q::TOKEN_OWNERS.get(d)).fetch_all(db).await? } else { Vec::new() };
            (v, t, u, rows)
        });
        let total_tokens = to_u32("total_tokens", total)?;
        let mut owned = Vec::new();
        if owners {
            owned = vec![None; total_tokens as usize];
            for (token, node) in rows {
                if let Some(slot) = usize::try_from(token).ok().and_then(|t| owned.get_mut(t)) {
                    *slot = Some(node);
                }
            }
        }
        Ok(TokenRing { version, total_tokens, updated_at, owners: owned })
    }

    async fn token_loads(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(on_read!(self, |db, d| sqlx::query_as(q::TOKEN_LOADS.get(d)).fetch_all(db).await?))
    }

    async fn owned_per_node(&self) -> StoreResult<Vec<(String, i64, i64)>> {
        Ok(on_read!(self, |db, d| sqlx::query_as(q::OWNED_PER_NODE.get(d)).fetch_all(db).await?))
    }

    async fn token_owns_any(&self, node: &str) -> StoreResult<bool> {
        let row: Option<(i64,)> =
            on_read!(self, |db, d| sqlx::query_as(q::TOKEN_OWNS_ANY.get(d)).bind(node).fetch_optional(db).await?);
        Ok(row.is_some())
    }

    async fn ring_swap(
        &self,
        fence: &Fence,
        seen_version: i64,
        total_tokens: u32,
        moved: &[(u32, String)],
        audit: &TokenAudit,
    ) -> StoreResult<Option<i64>> {
        #[derive(Serialize)]
        struct Owner<'a> {
            token: u32,
            node: &'a str,
        }
        let owners = to_json(&moved.iter().map(|(token, node)| Owner { token: *token, node }).collect::<Vec<_>>())?;
        let (before, after) = (to_json(&audit.nodes_before)?, to_json(&audit.nodes_after)?);
        let version = in_tx!(self, |tx, d| {
            check_fence(&mut *tx, fence).await?;
            let bumped: Option<(i64,)> = sqlx::query_as(q::RING_BUMP.get(d))
                .bind(seen_version)
                .bind(i64::from(total_tokens))
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((version,)) = bumped {
                sqlx::query(q::TOKEN_OWNERS_TRIM.get(d)).bind(i64::from(total_tokens)).execute(&mut *tx).await?;
                sqlx::query(q::TOKEN_OWNERS_UPSERT.get(d)).bind(&owners).execute(&mut *tx).await?;
                sqlx::query(q::TOKEN_AUDIT_INSERT.get(d))
                    .bind(version)
                    .bind(&fence.node)
                    .bind(fence.epoch)
                    .bind(&before)
                    .bind(&after)
                    .bind(i64::from(audit.moved))
                    .bind(audit.compute_us)
                    .execute(&mut *tx)
                    .await?;
            }
            bumped.map(|(v,)| v)
        });
        Ok(version)
    }

    async fn token_audits(&self, limit: u32) -> StoreResult<Vec<TokenAudit>> {
        type Row = (i64, String, i64, String, String, i64, i64, i64);
        let rows: Vec<Row> = on_read!(self, |db, d| sqlx::query_as(q::TOKEN_AUDIT_LIST.get(d))
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        rows.into_iter()
            .map(|(version, leader, epoch, before, after, moved, compute_us, at)| {
                Ok(TokenAudit {
                    version,
                    leader,
                    epoch,
                    nodes_before: serde_json::from_str(&before).map_err(|e| corrupt("token audit", e))?,
                    nodes_after: serde_json::from_str(&after).map_err(|e| corrupt("token audit", e))?,
                    moved: to_u32("moved", moved)?,
                    compute_us,
                    at,
                })
            })
            .collect()
    }
}
