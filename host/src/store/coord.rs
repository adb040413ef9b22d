//! [`Coordination`] for [`SqlStore`]: node membership, the atomic services' gate and records,
//! the leader lease and the token ring; its trigger and event methods are in `triggers.rs`, the
//! leader's recovery of pending invocations and concurrency drops in `transitions.rs`. A child
//! of `engine.rs` (it shares its transaction macros and row helpers); the SQL is in
//! `sql_coord.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::Serialize;

use super::{Dialect, Pools, SqlStore, check_fence, corrupt, sql, to_json, to_u32};
use super::{transitions, triggers};
use crate::model::{
    Due, Event, Lease, Millis, NodeInfo, ServiceRun, ServiceRunStatus, StatusChange, TickAsk, TickView, TokenAudit,
    TokenRing, Trigger, TriggerRun,
};
use crate::model::{NodeLoad, TokenLoad};
use crate::store::{Coordination, Fence, ServiceGate, Store, StoreError, StoreResult};

use sql::coord as q;

/// One row of [`q::OWNED_PER_NODE`].
#[derive(sqlx::FromRow)]
struct OwnedRow {
    owner_node: String,
    owned: i64,
    running: i64,
}

/// One row of [`q::TOKEN_LOADS`].
#[derive(sqlx::FromRow)]
struct TokenLoadRow {
    node: String,
    count: i64,
}

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

/// One row of [`q::TICK_PROBE`].
#[derive(sqlx::FromRow)]
struct TickProbeRow {
    ring_version: i64,
    total_tokens: i64,
    tasks_version: i64,
    keys_version: i64,
    overdue_instances: bool,
    stale_pending: bool,
    triggers: bool,
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

/// The leader lease as it is now ([`q::LEASE_GET`]).
#[derive(sqlx::FromRow)]
struct LeaseRow {
    holder: Option<String>,
    epoch: i64,
    expires_at: i64,
    now: i64,
}

/// The ring's header ([`q::RING_GET`]).
#[derive(sqlx::FromRow)]
struct RingRow {
    version: i64,
    total_tokens: i64,
    updated_at: i64,
}

/// One token's owner ([`q::TOKEN_OWNERS`]).
#[derive(sqlx::FromRow)]
struct TokenOwnerRow {
    token: i64,
    node: String,
}

/// One ring swap on record ([`q::TOKEN_AUDIT_LIST`]).
#[derive(sqlx::FromRow)]
struct AuditRow {
    version: i64,
    leader: String,
    epoch: i64,
    nodes_before: String,
    nodes_after: String,
    moved: i64,
    compute_us: i64,
    at: i64,
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
        let at: Option<i64> = in_tx!(self, |tx, d| sqlx::query_scalar(q::NODE_HEARTBEAT.get(d))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?);
        Ok(at)
    }

    async fn node_tick(&self, ask: &TickAsk<'_>) -> StoreResult<TickView> {
        let (beat, lease, rows, probe) = in_tx!(self, |tx, d| {
            let beat: Option<i64> =
                sqlx::query_scalar(q::NODE_HEARTBEAT.get(d)).bind(ask.node).fetch_optional(&mut *tx).await?;
            // A node the cluster retired renews nothing: it registers again first.
            let lease: Option<i64> = match (beat, ask.renew) {
                (Some(_), Some((epoch, ttl_ms))) => {
                    sqlx::query_scalar(q::LEASE_CLAIM.get(d))
                        .bind(ask.node)
                        .bind(ttl_ms)
                        .bind(epoch)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                _ => None,
            };
            let rows: Vec<NodeListRow> = sqlx::query_as(q::NODE_LIST.get(d)).fetch_all(&mut *tx).await?;
            let probe: TickProbeRow = sqlx::query_as(q::TICK_PROBE.get(d))
                .bind(ask.max_pending_ms)
                .bind(ask.renew.is_some())
                .fetch_one(&mut *tx)
                .await?;
            (beat, lease, rows, probe)
        });
        let now = match (rows.first(), beat) {
            (Some(r), _) => r.now,
            (None, Some(at)) => at,
            (None, None) => self.now().await?,
        };
        let nodes = rows.into_iter().map(|r| r.node.decode()).collect::<StoreResult<_>>()?;
        Ok(TickView {
            beat,
            lease,
            now,
            nodes,
            ring_version: probe.ring_version,
            total_tokens: to_u32("total_tokens", probe.total_tokens)?,
            tasks_version: probe.tasks_version,
            keys_version: probe.keys_version,
            due: Due {
                overdue_instances: probe.overdue_instances,
                stale_pending: probe.stale_pending,
                triggers: probe.triggers,
            },
        })
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
            let id: Option<i64> = sqlx::query_scalar(q::SERVICE_INSERT.get(d))
                .bind(&fence.node)
                .bind(ServiceRunStatus::Running.as_str())
                .bind(fence.epoch)
                .fetch_optional(&mut *tx)
                .await?;
            match id {
                Some(id) => ServiceGate::Acquired(id),
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
        transitions::recover_pending(self, fence, older_than_ms, limit).await
    }

    async fn invocation_drop_blocked(&self, fence: &Fence, tasks: &[String], limit: u32) -> StoreResult<Vec<String>> {
        transitions::drop_blocked(self, fence, tasks, limit).await
    }

    async fn trigger_insert(&self, trigger: &Trigger) -> StoreResult<Trigger> {
        triggers::trigger_insert(self, trigger).await
    }

    async fn trigger_list(&self) -> StoreResult<Vec<Trigger>> {
        triggers::trigger_list(self).await
    }

    async fn trigger_get(&self, id: &str) -> StoreResult<Option<Trigger>> {
        triggers::trigger_get(self, id).await
    }

    async fn trigger_delete(&self, id: &str) -> StoreResult<bool> {
        triggers::trigger_delete(self, id).await
    }

    async fn trigger_evaluation_save(
        &self,
        fence: &Fence,
        states: &[(String, serde_json::Value)],
        runs: &[TriggerRun],
        cursors: &[(&str, i64)],
    ) -> StoreResult<()> {
        triggers::trigger_evaluation_save(self, &triggers::Evaluation { fence, states, runs, cursors }).await
    }

    async fn trigger_runs(&self, trigger_id: &str, limit: u32) -> StoreResult<Vec<TriggerRun>> {
        triggers::trigger_runs(self, trigger_id, limit).await
    }

    async fn event_insert(&self, code: &str, payload: &serde_json::Value) -> StoreResult<Event> {
        triggers::event_insert(self, code, payload).await
    }

    async fn events_after(&self, after: i64, settle_ms: i64, limit: u32) -> StoreResult<(Vec<Event>, i64)> {
        triggers::events_after(self, after, settle_ms, limit).await
    }

    async fn status_changes_after(
        &self,
        after: i64,
        tasks: &[String],
        settle_ms: i64,
        limit: u32,
    ) -> StoreResult<(Vec<StatusChange>, i64)> {
        triggers::status_changes_after(self, after, tasks, settle_ms, limit).await
    }

    async fn events_purge(&self, fence: &Fence, older_than_ms: i64) -> StoreResult<u64> {
        triggers::events_purge(self, fence, older_than_ms).await
    }

    async fn trigger_cursors(&self) -> StoreResult<HashMap<String, i64>> {
        triggers::trigger_cursors(self).await
    }

    async fn lease_claim(&self, node: &str, ttl_ms: i64, held: Option<i64>) -> StoreResult<Option<i64>> {
        let epoch: Option<i64> = in_tx!(self, |tx, d| sqlx::query_scalar(q::LEASE_CLAIM.get(d))
            .bind(node)
            .bind(ttl_ms)
            .bind(held)
            .fetch_optional(&mut *tx)
            .await?);
        Ok(epoch)
    }

    async fn lease_get(&self) -> StoreResult<Lease> {
        let row: LeaseRow = on_read!(self, |db, d| sqlx::query_as(q::LEASE_GET.get(d)).fetch_one(db).await?);
        Ok(Lease { holder: row.holder, epoch: row.epoch, expires_at: row.expires_at, now: row.now })
    }

    async fn ring_get(&self, owners: bool) -> StoreResult<TokenRing> {
        let (ring, rows): (RingRow, Vec<TokenOwnerRow>) = on_read!(self, |db, d| {
            let ring = sqlx::query_as(q::RING_GET.get(d)).fetch_one(db).await?;
            let rows = if owners { sqlx::query_as(q::TOKEN_OWNERS.get(d)).fetch_all(db).await? } else { Vec::new() };
            (ring, rows)
        });
        let RingRow { version, total_tokens: total, updated_at } = ring;
        let total_tokens = to_u32("total_tokens", total)?;
        let mut owned = Vec::new();
        if owners {
            owned = vec![None; total_tokens as usize];
            for TokenOwnerRow { token, node } in rows {
                if let Some(slot) = usize::try_from(token).ok().and_then(|t| owned.get_mut(t)) {
                    *slot = Some(node);
                }
            }
        }
        Ok(TokenRing { version, total_tokens, updated_at, owners: owned })
    }

    async fn token_loads(&self) -> StoreResult<Vec<TokenLoad>> {
        let rows: Vec<TokenLoadRow> =
            on_read!(self, |db, d| sqlx::query_as(q::TOKEN_LOADS.get(d)).fetch_all(db).await?);
        Ok(rows.into_iter().map(|r| TokenLoad { node: r.node, tokens: r.count }).collect())
    }

    async fn owned_per_node(&self) -> StoreResult<Vec<NodeLoad>> {
        let rows: Vec<OwnedRow> =
            on_read!(self, |db, d| sqlx::query_as(q::OWNED_PER_NODE.get(d)).fetch_all(db).await?);
        Ok(rows.into_iter().map(|r| NodeLoad { node: r.owner_node, owned: r.owned, running: r.running }).collect())
    }

    async fn token_owns_any(&self, node: &str) -> StoreResult<bool> {
        let row: Option<i64> =
            on_read!(self, |db, d| sqlx::query_scalar(q::TOKEN_OWNS_ANY.get(d)).bind(node).fetch_optional(db).await?);
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
            let bumped: Option<i64> = sqlx::query_scalar(q::RING_BUMP.get(d))
                .bind(seen_version)
                .bind(i64::from(total_tokens))
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(version) = bumped {
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
            bumped
        });
        Ok(version)
    }

    async fn token_audits(&self, limit: u32) -> StoreResult<Vec<TokenAudit>> {
        let rows: Vec<AuditRow> = on_read!(self, |db, d| sqlx::query_as(q::TOKEN_AUDIT_LIST.get(d))
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(TokenAudit {
                    nodes_before: serde_json::from_str(&r.nodes_before).map_err(|e| corrupt("token audit", e))?,
                    nodes_after: serde_json::from_str(&r.nodes_after).map_err(|e| corrupt("token audit", e))?,
                    moved: to_u32("moved", r.moved)?,
                    version: r.version,
                    leader: r.leader,
                    epoch: r.epoch,
                    compute_us: r.compute_us,
                    at: r.at,
                })
            })
            .collect()
    }
}
