//! Task instances for [`SqlStore`]: the live record of each attempt, its heartbeat (ONE
//! statement per tick whatever the number of instances), the triage of overdue ones, reads.
//! A child of `engine.rs` (it shares its transaction macros); the SQL is in `sql_instances.rs`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::transitions::{LostCause, MovableRow, apply_moves, instance_writes, lost_moves};
use super::{
    Dialect, Pools, Retry, SqlStore, check_fence, corrupt, error_kind_name, parse_status, sql, stored_failure, to_json,
    to_u32, to_u64,
};
use crate::model::instance::{AttemptExit, HeldAttempt, LastReport, Overdue, Triage};
use crate::model::{ErrorKind, InvocationStatus, Millis, TaskInstance};
use crate::store::write_gate::Lane;
use crate::store::{Fence, HeldInstance, StoreError, StoreResult};

use sql::instances as q;

#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    invocation_id: String,
    attempt: i64,
    node: String,
    status: String,
    error_kind: Option<String>,
    error_message: Option<String>,
    wall_ms: i64,
    peak_memory_bytes: i64,
    stdout: String,
    stderr: String,
    logs: String,
    output_truncated: i64,
    ended_at: i64,
    report_by: Option<i64>,
    started_at: i64,
    component_version: Option<i64>,
}

impl InstanceRow {
    fn decode(self) -> StoreResult<TaskInstance> {
        let error = stored_failure(self.error_kind, self.error_message)?;
        Ok(TaskInstance {
            attempt: to_u32("attempt", self.attempt)?,
            wall_ms: to_u64("wall_ms", self.wall_ms)?,
            peak_memory_bytes: to_u64("peak_memory_bytes", self.peak_memory_bytes)?,
            logs: serde_json::from_str(&self.logs).map_err(|e| corrupt("instance logs", e))?,
            output_truncated: self.output_truncated != 0,
            component_version: self.component_version.and_then(|v| u64::try_from(v).ok()),
            error,
            invocation_id: self.invocation_id,
            node: self.node,
            status: self.status.parse().map_err(|e| corrupt("instance status", e))?,
            stdout: self.stdout,
            stderr: self.stderr,
            ended_at: self.ended_at,
            started_at: self.started_at,
            report_by: self.report_by,
            report_window_ms: None,
        })
    }
}

/// A row [`q::INSTANCE_HEARTBEAT`] refreshed.
#[derive(sqlx::FromRow)]
struct HeldRow {
    invocation_id: String,
    attempt: i64,
    status: String,
    signal: Option<String>,
}

/// An overdue instance ([`q::INSTANCE_OVERDUE`]).
#[derive(sqlx::FromRow)]
struct OverdueRow {
    invocation_id: String,
    attempt: i64,
    node: String,
    status: String,
    report_by: i64,
    started_at: i64,
    peak_memory_bytes: i64,
    memory_limit_bytes: i64,
    timeout_at: Option<i64>,
    exit_status: Option<String>,
    exit_kind: Option<String>,
    exit_message: Option<String>,
}

impl OverdueRow {
    fn decode(self) -> StoreResult<Overdue> {
        let exit = match self.exit_status {
            Some(status) => Some(AttemptExit {
                status: status.parse().map_err(|e| corrupt("instance exit status", e))?,
                error: stored_failure(self.exit_kind, self.exit_message)?,
            }),
            None => None,
        };
        Ok(Overdue {
            attempt: to_u32("attempt", self.attempt)?,
            status: self.status.parse().map_err(|e| corrupt("instance status", e))?,
            invocation_id: self.invocation_id,
            node: self.node,
            report_by: self.report_by,
            started_at: self.started_at,
            last: LastReport {
                peak_memory_bytes: to_u64("peak_memory_bytes", self.peak_memory_bytes)?,
                memory_limit_bytes: to_u64("memory_limit_bytes", self.memory_limit_bytes)?,
                timeout_at: self.timeout_at,
                exit,
            },
        })
    }
}

/// The key of an instance.
#[derive(sqlx::FromRow)]
struct KeyRow {
    invocation_id: String,
    attempt: i64,
}

/// The recorded attempts of an invocation ([`crate::store::Store::instance_list`]).
pub(super) async fn list(store: &SqlStore, invocation_id: &str) -> StoreResult<Vec<TaskInstance>> {
    let rows: Vec<InstanceRow> =
        on_read!(store, |db, d| sqlx::query_as(q::INSTANCE_LIST.get(d)).bind(invocation_id).fetch_all(db).await?);
    rows.into_iter().map(InstanceRow::decode).collect()
}

pub(super) async fn heartbeat(
    store: &SqlStore,
    node: &str,
    held: &[HeldAttempt],
    report_window_ms: i64,
) -> StoreResult<Vec<HeldInstance>> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    /// One held attempt and what the node knows of it (`q::INSTANCE_HEARTBEAT`).
    #[derive(Serialize)]
    struct HeldJson<'a> {
        id: &'a str,
        attempt: u32,
        peak: u64,
        limit: u64,
        left: Option<u64>,
        exit_status: Option<&'static str>,
        exit_kind: Option<String>,
        exit_message: Option<&'a str>,
    }
    let rows = held
        .iter()
        .map(|h| {
            let k = &h.known;
            let error = k.exit.as_ref().and_then(|e| e.error.as_ref());
            Ok(HeldJson {
                id: &h.invocation_id,
                attempt: h.attempt,
                peak: k.peak_memory_bytes,
                limit: k.memory_limit_bytes,
                left: k.timeout_left_ms,
                exit_status: k.exit.as_ref().map(|e| e.status.as_str()),
                exit_kind: error.map(|e| error_kind_name(e.kind)).transpose()?,
                exit_message: error.map(|e| e.message.as_str()),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let json = to_json(&rows)?;
    // One statement, autocommit: the cost of a tick does not grow with the instances.
    let rows: Vec<HeldRow> = match &store.pools {
        Pools::Sqlite { writer, .. } => {
            let mut held = writer.enter(Lane::Background, "instance heartbeat").await?;
            let rows = sqlx::query_as(q::INSTANCE_HEARTBEAT.sqlite)
                .bind(node)
                .bind(&json)
                .bind(report_window_ms)
                .fetch_all(held.conn())
                .await;
            // One statement in autocommit: whatever its outcome, nothing is left open.
            held.settle();
            rows?
        }
        Pools::Postgres(pool) => {
            let mut retry = Retry::new();
            loop {
                let beat = sqlx::query_as(q::INSTANCE_HEARTBEAT.postgres)
                    .bind(node)
                    .bind(json.as_str())
                    .bind(report_window_ms)
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::from);
                match beat {
                    Err(e) if retry.again(&e, "instance heartbeat").await => continue,
                    other => break other?,
                }
            }
        }
    };
    rows.into_iter()
        .map(|r| {
            Ok(HeldInstance {
                attempt: to_u32("attempt", r.attempt)?,
                invocation_id: r.invocation_id,
                status: r.status,
                signal: r.signal,
            })
        })
        .collect()
}

pub(super) async fn overdue(store: &SqlStore, now: Millis, limit: u32) -> StoreResult<Vec<Overdue>> {
    let rows: Vec<OverdueRow> = on_read!(store, |db, d| sqlx::query_as(q::INSTANCE_OVERDUE.get(d))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?);
    rows.into_iter().map(OverdueRow::decode).collect()
}

pub(super) async fn triage_apply(
    store: &SqlStore,
    decisions: &[Triage],
    fence: &Fence,
) -> StoreResult<(usize, Vec<String>)> {
    if decisions.is_empty() {
        return Ok((0, Vec::new()));
    }
    #[derive(Serialize)]
    struct TriageJson<'a> {
        id: &'a str,
        attempt: u32,
        from: &'static str,
        to: &'static str,
        report_by: i64,
        next_report_by: Option<i64>,
        error_kind: Option<String>,
        error_message: Option<String>,
    }
    let rows = decisions
        .iter()
        .map(|t| {
            let o = &t.instance;
            // A given-up or taken-back attempt was lost with its node (it counts toward
            // `max_attempts`), unless the node's last report said why it ended; `triaging` is
            // only a warning.
            let failed = t.to.is_final() || t.reroute;
            let (error_kind, error_message) = match (&t.cause, failed) {
                (Some(why), _) => (Some(error_kind_name(why.kind)?), Some(why.message.clone())),
                (None, true) => (
                    Some("lost".to_string()),
                    Some(format!("node `{}` stopped reporting for this attempt (due by {} ms)", o.node, o.report_by)),
                ),
                (None, false) => (None, None),
            };
            Ok(TriageJson {
                id: &o.invocation_id,
                attempt: o.attempt,
                from: o.status.as_str(),
                to: t.to.as_str(),
                report_by: o.report_by,
                next_report_by: t.report_by,
                error_kind,
                error_message,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let json = to_json(&rows)?;
    // The invocations that may be rerouted, locked (PostgreSQL) before any instance: the
    // global lock order is invocations, then instances.
    let mut reroute_ids: Vec<&str> =
        decisions.iter().filter(|t| t.reroute).map(|t| t.instance.invocation_id.as_str()).collect();
    reroute_ids.sort_unstable();
    reroute_ids.dedup();
    let reroute_ids = to_json(&reroute_ids)?;
    let (changed, rerouted) = in_tx!(store, |tx, d| {
        check_fence(&mut *tx, fence).await?;
        let movable: Vec<MovableRow> = if decisions.iter().any(|t| t.reroute) {
            sqlx::query_as(sql::transitions::INVOCATION_MOVABLE.get(d))
                .bind(reroute_ids.as_str())
                .fetch_all(&mut *tx)
                .await?
        } else {
            Vec::new()
        };
        let applied: Vec<KeyRow> = sqlx::query_as(q::INSTANCE_TRIAGE.get(d))
            .bind(json.as_str())
            .bind(instance_writes())
            .fetch_all(&mut *tx)
            .await?;
        let applied: HashSet<(String, i64)> = applied.into_iter().map(|r| (r.invocation_id, r.attempt)).collect();
        // The invocations to take back: those of changed instances marked `reroute` whose
        // node still owns them with the instance's attempt.
        let owners: HashMap<&str, &Triage> = decisions
            .iter()
            .filter(|t| {
                t.reroute && applied.contains(&(t.instance.invocation_id.clone(), i64::from(t.instance.attempt)))
            })
            .map(|t| (t.instance.invocation_id.as_str(), t))
            .collect();
        let rows: Vec<MovableRow> = movable
            .into_iter()
            .filter(|r| {
                let owned = parse_status(&r.status).is_ok_and(InvocationStatus::is_owned);
                owned
                    && owners.get(r.id.as_str()).is_some_and(|t| {
                        r.owner_node.as_deref() == Some(t.instance.node.as_str())
                            && r.attempts == i64::from(t.instance.attempt)
                    })
            })
            .collect();
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(t) = owners.get(r.id.as_str()) else { continue };
            let what = format!(
                "node `{}` stopped reporting for the attempt (triage by the leader `{}`)",
                r.owner_node.as_deref().unwrap_or("?"),
                fence.node
            );
            let mut moved = lost_moves(vec![r], &LostCause { what: &what, by: &fence.node, unstarted: false })?;
            // Known why: a fatal end fails the invocation now; any other known end that was
            // the last attempt fails it with that cause rather than as lost.
            if let Some(why) = &t.cause {
                for m in &mut moved {
                    if t.fails() && m.to() != InvocationStatus::Failed {
                        // Through the recovery status, as a lost last attempt fails.
                        m.path.pop();
                        m.path.push(InvocationStatus::Failed);
                    }
                    if m.to() == InvocationStatus::Failed && why.kind != ErrorKind::Lost {
                        m.error = Some(why.clone());
                    }
                }
            }
            changes.extend(moved);
        }
        let positions = apply_moves(&mut *tx, &changes).await?;
        let rerouted: Vec<String> =
            positions.into_iter().filter_map(|i| changes.get(i).map(|c| c.id.clone())).collect();
        (applied.len(), rerouted)
    });
    Ok((changed, rerouted))
}

/// One row of [`q::INSTANCE_USAGE`].
#[derive(sqlx::FromRow)]
struct UsageRow {
    status: String,
    wall_ms: i64,
    peak_memory_bytes: i64,
}

pub(super) async fn usage(
    store: &SqlStore,
    task: &str,
    limit: u32,
) -> StoreResult<Vec<crate::model::instance::AttemptUsage>> {
    let rows: Vec<UsageRow> = on_read!(store, |db, d| sqlx::query_as(q::INSTANCE_USAGE.get(d))
        .bind(task)
        .bind(i64::from(limit))
        .fetch_all(db)
        .await?);
    rows.into_iter()
        .map(|r| {
            Ok(crate::model::instance::AttemptUsage {
                status: r.status.parse().map_err(|e| corrupt("instance status", e))?,
                wall_ms: r.wall_ms,
                peak_memory_bytes: r.peak_memory_bytes,
            })
        })
        .collect()
}
