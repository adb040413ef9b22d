//! [`WorkflowStore`] for [`SqlStore`]: workflows and arrays (Jobmon). A child of `engine.rs`
//! (it shares its transaction macros and row helpers); the SQL is in `sql_workflow.rs`.
//!
//! # The step
//!
//! [`WorkflowStore::workflow_step`] is one transaction with a bounded number of statements,
//! whatever the size of the graph: lock the workflow row (PostgreSQL `FOR UPDATE`; SQLite's
//! `BEGIN IMMEDIATE` serialises writers anyway), sync running nodes from their final
//! invocations (one `UPDATE … FROM invocations`), ready the direct downstream of the nodes that
//! became done (one `UPDATE`, given their ids), count running and failed nodes again, start
//! the given nodes that are still `ready` and fit the limits (one `UPDATE` as compare-and-swap,
//! then the routing insert of their invocations and their `registered` history: two statements),
//! block everything downstream of failed nodes (one recursive count and one recursive
//! `UPDATE`), and write the workflow's nodes per status and its status (`workflow::status_of`
//! of those counts; one `UPDATE`). Statements with nothing to do are skipped, and a step
//! that changed nothing writes nothing.
//!
//! # Counts
//!
//! The workflow row keeps its nodes per status (`counts`, migration 0016), moved by every
//! transaction that moves nodes (from what its statements return), so that reading a
//! workflow's counts or deciding its status never counts its nodes. The conformance test
//! checks them against the nodes after every step.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde::Serialize;

use super::CountRow as TaskCountRow;
use super::{Dialect, Pools, SqlStore, corrupt, sql, to_json, to_u32};
use crate::model::workflow::{self, NewWorkflow, NodeStatus, WorkflowInfo, WorkflowKind, WorkflowNode, WorkflowStatus};
use crate::model::{Millis, NewInvocation};
use crate::store::{NodeStart, SYNC_MARGIN_MS, StepOutcome, StepPlan, Store, StoreError, StoreResult, WorkflowStore};

use sql::workflow as q;

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    id: String,
    name: String,
    kind: String,
    status: String,
    max_concurrently_running: i64,
    fail_fast: bool,
    max_attempts: Option<i64>,
    task_limits: String,
    paused: bool,
    version: i64,
    created_at: i64,
    updated_at: i64,
    /// Nodes per status, a JSON object.
    counts: String,
    trace_parent: Option<String>,
}

/// Nodes per status of one workflow, as its row keeps them.
type Counts = HashMap<NodeStatus, i64>;

impl WorkflowRow {
    /// The workflow's nodes per status.
    fn counts(&self) -> StoreResult<Counts> {
        serde_json::from_str(&self.counts).map_err(|e| corrupt("workflow counts", e))
    }

    fn decode(self) -> StoreResult<WorkflowInfo> {
        Ok(WorkflowInfo {
            kind: self.kind.parse::<WorkflowKind>().map_err(StoreError::Corrupt)?,
            status: self.status.parse::<WorkflowStatus>().map_err(StoreError::Corrupt)?,
            max_concurrently_running: to_u32("max_concurrently_running", self.max_concurrently_running)?,
            max_attempts: self.max_attempts.map(|m| to_u32("max_attempts", m)).transpose()?,
            task_limits: serde_json::from_str(&self.task_limits).map_err(|e| corrupt("workflow task_limits", e))?,
            id: self.id,
            name: self.name,
            fail_fast: self.fail_fast,
            paused: self.paused,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            traceparent: self.trace_parent,
        })
    }
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    node: String,
    task: String,
    status: String,
    invocation: Option<String>,
    updated_at: i64,
}

impl NodeRow {
    fn decode(self) -> StoreResult<WorkflowNode> {
        Ok(WorkflowNode {
            status: parse_node_status(&self.status)?,
            id: self.node,
            task: self.task,
            invocation: self.invocation,
            depends_on: Vec::new(),
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EdgeRow {
    node: String,
    upstream: String,
}

#[derive(sqlx::FromRow)]
struct StatusCountRow {
    status: String,
    count: i64,
}

#[derive(sqlx::FromRow)]
struct CountRow {
    count: i64,
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    node: String,
    task: String,
    args: String,
}

/// `(node, status)` returned by the step's updates.
#[derive(sqlx::FromRow)]
struct ChangedRow {
    node: String,
    status: String,
}

#[derive(sqlx::FromRow)]
struct NodeIdRow {
    #[allow(dead_code)]
    node: String,
}

#[derive(sqlx::FromRow)]
struct InvocationIdRow {
    invocation: Option<String>,
}

#[derive(sqlx::FromRow)]
struct IdRow {
    id: String,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    node: &'a str,
    seq: i64,
    task: &'a str,
    args: &'a str,
    status: &'static str,
}

#[derive(Serialize)]
struct EdgeJson<'a> {
    node: &'a str,
    upstream: &'a str,
}

/// How many ready nodes of a task a step may start (`q::CANDIDATES`).
#[derive(Serialize)]
struct CapJson<'a> {
    task: &'a str,
    cap: u32,
}

#[derive(Serialize)]
struct StartJson<'a> {
    node: &'a str,
    invocation: Option<&'a str>,
}

/// Most nodes one step starts: the step is one transaction, and a workflow allowed to run
/// 100,000 nodes at once starts them over several steps (the scheduler goes round again at
/// once while steps change something) instead of holding the writer for one huge insert.
const MAX_STARTS_PER_STEP: u32 = 500;

/// Times in a row a step may give SQLite's writer up to a waiting routing (see
/// [`SqlStore::step_once`]); then it goes through, so routings arriving without pause cannot
/// starve the workflows.
const STEP_YIELDS: u32 = 3;

/// From this many nodes, creating a workflow refreshes PostgreSQL's statistics of the graph
/// tables: with the estimates of a much smaller table it plans a step's statements as scans
/// of every waiting node (tens of ms a step at 10,000 nodes) instead of primary-key lookups.
const ANALYZE_FROM_NODES: usize = 1_000;

fn parse_node_status(s: &str) -> StoreResult<NodeStatus> {
    s.parse().map_err(StoreError::Corrupt)
}

fn count_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Running nodes per task and whether any failed, from [`q::RUNNING_AND_FAILED`].
fn running_and_failed(rows: Vec<TaskCountRow>) -> (HashMap<String, u32>, bool) {
    let mut running = HashMap::new();
    let mut failed = false;
    for r in rows {
        if r.status == NodeStatus::Running.as_str() {
            running.insert(r.task, count_u32(r.count));
        } else if r.count > 0 {
            failed = true;
        }
    }
    (running, failed)
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("workflow `{id}`"))
}

fn final_conflict(wf: &WorkflowInfo, what: &str) -> StoreError {
    StoreError::Conflict(format!("workflow `{}` is {} (final); it cannot be {what}", wf.id, wf.status.as_str()))
}

/// Runs a statement binding `$1` = workflow id and `$2` = a JSON text, returning rows of `R`.
macro_rules! with_json {
    ($tx:ident, $d:ident, $stmt:expr, $id:expr, $json:expr) => {
        sqlx::query_as($stmt.get($d)).bind($id).bind($json).fetch_all(&mut *$tx).await?
    };
}

#[async_trait]
impl WorkflowStore for SqlStore {
    async fn workflow_create(&self, wf: &NewWorkflow) -> StoreResult<WorkflowInfo> {
        let nodes: Vec<NodeJson<'_>> = wf
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeJson {
                node: &n.id,
                seq: i64::try_from(i).unwrap_or(i64::MAX),
                task: &n.task,
                args: &n.args,
                status: if n.has_upstreams { NodeStatus::Waiting.as_str() } else { NodeStatus::Ready.as_str() },
            })
            .collect();
        let waiting = wf.nodes.iter().filter(|n| n.has_upstreams).count();
        let counts: Counts = [(NodeStatus::Waiting, waiting), (NodeStatus::Ready, wf.nodes.len() - waiting)]
            .into_iter()
            .map(|(s, n)| (s, i64::try_from(n).unwrap_or(i64::MAX)))
            .collect();
        let counts = to_json(&counts)?;
        let nodes = to_json(&nodes)?;
        let edges: Vec<EdgeJson<'_>> = wf.edges.iter().map(|(n, u)| EdgeJson { node: n, upstream: u }).collect();
        let edges = to_json(&edges)?;
        let limits = to_json(&wf.task_limits)?;
        let row: WorkflowRow = in_tx!(self, |tx, d| {
            let row: WorkflowRow = sqlx::query_as(q::WORKFLOW_INSERT.get(d))
                .bind(&wf.id)
                .bind(&wf.name)
                .bind(wf.kind.as_str())
                .bind(WorkflowStatus::Queued.as_str())
                .bind(i64::from(wf.max_concurrently_running))
                .bind(wf.fail_fast)
                .bind(wf.max_attempts.map(i64::from))
                .bind(&limits)
                .bind(&counts)
                .bind(wf.trace_parent.as_deref())
                .fetch_one(&mut *tx)
                .await
                .map_err(super::conflict_on_unique("a workflow with this id exists"))?;
            sqlx::query(q::NODES_INSERT.get(d))
                .bind(&nodes)
                .bind(&wf.id)
                .bind(row.created_at)
                .execute(&mut *tx)
                .await?;
            if !wf.edges.is_empty() {
                sqlx::query(q::EDGES_INSERT.get(d)).bind(&edges).bind(&wf.id).execute(&mut *tx).await?;
            }
            row
        });
        if wf.nodes.len() >= ANALYZE_FROM_NODES
            && let Pools::Postgres(pool) = &self.pools
            && let Err(e) = sqlx::query(q::ANALYZE_POSTGRES).execute(pool).await
        {
            tracing::warn!(error = %e, "analyzing the workflow tables after a large workflow failed");
        }
        row.decode()
    }

    async fn workflow_get(&self, id: &str) -> StoreResult<Option<WorkflowInfo>> {
        let row: Option<WorkflowRow> =
            on_read!(self, |db, d| sqlx::query_as(q::WORKFLOW_GET.get(d)).bind(id).fetch_optional(db).await?);
        row.map(WorkflowRow::decode).transpose()
    }

    async fn workflow_list(&self, limit: u32) -> StoreResult<Vec<WorkflowInfo>> {
        let rows: Vec<WorkflowRow> = on_read!(self, |db, d| sqlx::query_as(q::WORKFLOW_LIST.get(d))
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        rows.into_iter().map(WorkflowRow::decode).collect()
    }

    async fn workflow_active(&self, limit: u32) -> StoreResult<Vec<String>> {
        let rows: Vec<IdRow> = on_read!(self, |db, d| sqlx::query_as(q::WORKFLOW_ACTIVE.get(d))
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    async fn workflow_counts(&self, id: &str) -> StoreResult<Vec<(NodeStatus, i64)>> {
        let row: Option<WorkflowRow> =
            on_read!(self, |db, d| sqlx::query_as(q::WORKFLOW_GET.get(d)).bind(id).fetch_optional(db).await?);
        let Some(row) = row else { return Ok(Vec::new()) };
        let mut out: Vec<(NodeStatus, i64)> = row.counts()?.into_iter().filter(|(_, n)| *n != 0).collect();
        out.sort();
        Ok(out)
    }

    async fn workflow_nodes(&self, id: &str) -> StoreResult<Vec<WorkflowNode>> {
        let (nodes, edges): (Vec<NodeRow>, Vec<EdgeRow>) = on_read!(self, |db, d| (
            sqlx::query_as(q::NODES_ALL.get(d)).bind(id).fetch_all(db).await?,
            sqlx::query_as(q::EDGES_ALL.get(d)).bind(id).fetch_all(db).await?
        ));
        let mut ups: HashMap<String, Vec<String>> = HashMap::new();
        for e in edges {
            ups.entry(e.node).or_default().push(e.upstream);
        }
        nodes
            .into_iter()
            .map(|r| {
                let mut n = r.decode()?;
                n.depends_on = ups.remove(&n.id).unwrap_or_default();
                Ok(n)
            })
            .collect()
    }

    async fn workflow_nodes_since(&self, id: &str, since: Millis) -> StoreResult<(Millis, Vec<WorkflowNode>)> {
        // The clock first: a row stamped before it and committed after the read is at most
        // SYNC_MARGIN_MS old, so it is after the returned time and comes next time.
        let now = self.now().await?;
        let rows: Vec<NodeRow> =
            on_read!(self, |db, d| sqlx::query_as(q::NODES_SINCE.get(d)).bind(id).bind(since).fetch_all(db).await?);
        let nodes = rows.into_iter().map(NodeRow::decode).collect::<StoreResult<Vec<_>>>()?;
        Ok((now - SYNC_MARGIN_MS, nodes))
    }

    async fn workflow_plan(&self, id: &str) -> StoreResult<Option<StepPlan>> {
        let Some(workflow) = self.workflow_get(id).await? else { return Ok(None) };
        if workflow.status.is_final() {
            return Ok(Some(StepPlan {
                workflow,
                running: HashMap::new(),
                any_failed: false,
                syncable: 0,
                candidates: Vec::new(),
            }));
        }
        let (counts, syncable): (Vec<TaskCountRow>, CountRow) = on_read!(self, |db, d| (
            sqlx::query_as(q::RUNNING_AND_FAILED.get(d)).bind(id).fetch_all(db).await?,
            sqlx::query_as(q::SYNCABLE.get(d)).bind(id).fetch_one(db).await?
        ));
        let (running, any_failed) = running_and_failed(counts);
        // Free places, at most MAX_STARTS_PER_STEP; each task may start at most that many,
        // and a task with a limit at most its room.
        let busy: u32 = running.values().copied().fold(0, u32::saturating_add);
        let free = workflow.max_concurrently_running.saturating_sub(busy).min(MAX_STARTS_PER_STEP);
        let failed_fast = workflow.fail_fast && any_failed;
        let may_start = !workflow.paused && !failed_fast && free > 0;
        let candidates: Vec<CandidateRow> = if may_start {
            let caps: Vec<CapJson<'_>> = workflow
                .task_limits
                .iter()
                .map(|(task, limit)| {
                    let room = limit.saturating_sub(running.get(task).copied().unwrap_or(0));
                    CapJson { task, cap: room.min(free) }
                })
                .collect();
            let caps = to_json(&caps)?;
            on_read!(self, |db, d| sqlx::query_as(q::CANDIDATES.get(d))
                .bind(id)
                .bind(&caps)
                .bind(i64::from(free))
                .fetch_all(db)
                .await?)
        } else {
            Vec::new()
        };
        Ok(Some(StepPlan {
            workflow,
            running,
            any_failed,
            syncable: syncable.count,
            candidates: candidates.into_iter().map(|c| (c.node, c.task, c.args)).collect(),
        }))
    }

    async fn workflow_step(&self, id: &str, starts: &[NodeStart]) -> StoreResult<StepOutcome> {
        let mut yields = 0;
        loop {
            match self.step_once(id, starts, yields < STEP_YIELDS).await {
                Err(StoreError::Yielded) => yields += 1,
                other => return other,
            }
        }
    }

    async fn workflow_pause(&self, id: &str) -> StoreResult<WorkflowInfo> {
        let row: WorkflowRow = in_tx!(self, |tx, d| {
            let row: Option<WorkflowRow> =
                sqlx::query_as(q::WORKFLOW_LOCK.get(d)).bind(id).fetch_optional(&mut *tx).await?;
            let row = row.ok_or_else(|| not_found(id))?;
            let counts = row.counts.clone();
            let wf = row.decode()?;
            if wf.status.is_final() {
                return Err(final_conflict(&wf, "paused"));
            }
            sqlx::query_as(q::WORKFLOW_SET_PAUSED.get(d)).bind(id).bind(true).bind(counts).fetch_one(&mut *tx).await?
        });
        row.decode()
    }

    async fn workflow_resume(&self, id: &str, cold: bool) -> StoreResult<(WorkflowInfo, Vec<String>)> {
        let (row, restarted): (WorkflowRow, Vec<InvocationIdRow>) = in_tx!(self, |tx, d| {
            let row: Option<WorkflowRow> =
                sqlx::query_as(q::WORKFLOW_LOCK.get(d)).bind(id).fetch_optional(&mut *tx).await?;
            let row = row.ok_or_else(|| not_found(id))?;
            let mut counts = row.counts()?;
            let wf = row.decode()?;
            if wf.status.is_final() {
                return Err(final_conflict(&wf, "resumed"));
            }
            let restarted: Vec<InvocationIdRow> = if cold {
                sqlx::query_as(q::NODES_RESTART.get(d)).bind(id).fetch_all(&mut *tx).await?
            } else {
                Vec::new()
            };
            let n = i64::try_from(restarted.len()).unwrap_or(i64::MAX);
            *counts.entry(NodeStatus::Running).or_default() -= n;
            *counts.entry(NodeStatus::Ready).or_default() += n;
            let row: WorkflowRow = sqlx::query_as(q::WORKFLOW_SET_PAUSED.get(d))
                .bind(id)
                .bind(false)
                .bind(to_json(&counts)?)
                .fetch_one(&mut *tx)
                .await?;
            (row, restarted)
        });
        Ok((row.decode()?, restarted.into_iter().filter_map(|r| r.invocation).collect()))
    }

    async fn workflow_cancel(&self, id: &str) -> StoreResult<(WorkflowInfo, Vec<String>)> {
        let (row, cancelled): (WorkflowRow, Vec<InvocationIdRow>) = in_tx!(self, |tx, d| {
            let row: Option<WorkflowRow> =
                sqlx::query_as(q::WORKFLOW_LOCK.get(d)).bind(id).fetch_optional(&mut *tx).await?;
            let row = row.ok_or_else(|| not_found(id))?;
            let status = row.status.parse::<WorkflowStatus>().map_err(StoreError::Corrupt)?;
            if status == WorkflowStatus::Cancelled {
                (row, Vec::new())
            } else if status.is_final() {
                return Err(final_conflict(&row.decode()?, "cancelled"));
            } else {
                // Every waiting, ready and running node is cancelled.
                let mut counts = row.counts()?;
                let mut unfinished = 0;
                for s in [NodeStatus::Waiting, NodeStatus::Ready, NodeStatus::Running] {
                    unfinished += counts.remove(&s).unwrap_or(0);
                }
                *counts.entry(NodeStatus::Cancelled).or_default() += unfinished;
                let cancelled: Vec<InvocationIdRow> =
                    sqlx::query_as(q::NODES_CANCEL.get(d)).bind(id).fetch_all(&mut *tx).await?;
                let row: WorkflowRow = sqlx::query_as(q::WORKFLOW_CANCEL.get(d))
                    .bind(id)
                    .bind(to_json(&counts)?)
                    .fetch_one(&mut *tx)
                    .await?;
                (row, cancelled)
            }
        });
        Ok((row.decode()?, cancelled.into_iter().filter_map(|r| r.invocation).collect()))
    }
}

impl SqlStore {
    /// One try of [`WorkflowStore::workflow_step`]. With `may_yield`, on SQLite, it gives the
    /// writer up to a routing that waits for it at the points marked below: it rolls back
    /// ([`StoreError::Yielded`]) and the caller goes again. A step holds the writer for about
    /// ten round trips, which on two busy cores was 3–17 ms, and a routing that came just after
    /// it began waited that long: the tail of an unrelated call's routing while a large
    /// workflow ran (issue 11, item 6).
    pub(in crate::store) async fn step_once(
        &self,
        id: &str,
        starts: &[NodeStart],
        may_yield: bool,
    ) -> StoreResult<StepOutcome> {
        // `yield_point()?` at each point: rolls back and hands the writer over when it must.
        let yield_point = || if may_yield && self.urgent_waiting() { Err(StoreError::Yielded) } else { Ok(()) };
        // A step reports nothing to a client and is derived from what is stored: a crash can
        // only lose it whole (the nodes are then still `ready` and start again), and the next
        // durable commit (its invocations' claim, outcome) makes it durable. Not waiting for
        // the disk keeps its hold of SQLite's one writer short.
        let out = in_tx!(self, super::Commit::Relaxed, &mut false, |tx, d| {
            let row: Option<WorkflowRow> =
                sqlx::query_as(q::WORKFLOW_LOCK.get(d)).bind(id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(StepOutcome::default()) };
            let mut tally = row.counts()?;
            let wf = row.decode()?;
            if wf.status.is_final() {
                return Ok(StepOutcome { workflow: Some(wf), ..StepOutcome::default() });
            }
            yield_point()?;
            let mut out = StepOutcome::default();
            let mut moved = |from: NodeStatus, to: NodeStatus, n: i64| {
                *tally.entry(from).or_default() -= n;
                *tally.entry(to).or_default() += n;
            };
            // b. Sync running nodes from their final invocations.
            let synced: Vec<ChangedRow> = sqlx::query_as(q::STEP_SYNC.get(d)).bind(id).fetch_all(&mut *tx).await?;
            out.synced = synced.len();
            let mut done: Vec<&str> = Vec::new();
            let mut failed: Vec<String> = Vec::new();
            for r in &synced {
                if r.status == NodeStatus::Done.as_str() {
                    done.push(&r.node);
                    moved(NodeStatus::Running, NodeStatus::Done, 1);
                } else {
                    failed.push(r.node.clone());
                    moved(NodeStatus::Running, NodeStatus::Failed, 1);
                }
            }
            // c. Their direct downstream whose upstreams are all done.
            if !done.is_empty() {
                let readied: Vec<NodeIdRow> = with_json!(tx, d, q::STEP_READY, id, to_json(&done)?);
                out.readied = readied.len();
                moved(NodeStatus::Waiting, NodeStatus::Ready, i64::try_from(readied.len()).unwrap_or(i64::MAX));
            }
            // e. Start what still fits, counted again inside the transaction.
            let counts: Vec<TaskCountRow> =
                sqlx::query_as(q::RUNNING_AND_FAILED.get(d)).bind(id).fetch_all(&mut *tx).await?;
            let (running, any_failed) = running_and_failed(counts);
            let failed_fast = wf.fail_fast && (any_failed || !failed.is_empty());
            let may_start = !wf.paused && !failed_fast;
            yield_point()?;
            if may_start && !starts.is_empty() {
                let tasks: Vec<&str> = starts.iter().map(|s| s.task.as_str()).collect();
                let picked = workflow::select_ready(&tasks, &running, wf.max_concurrently_running, &wf.task_limits);
                let chosen: Vec<&NodeStart> = picked.iter().filter_map(|&i| starts.get(i)).collect();
                if !chosen.is_empty() {
                    let json: Vec<StartJson<'_>> = chosen
                        .iter()
                        .map(|s| StartJson { node: &s.node, invocation: s.invocation.as_ref().map(|i| i.id.as_str()) })
                        .collect();
                    let changed: Vec<ChangedRow> = with_json!(tx, d, q::STEP_START, id, to_json(&json)?);
                    let mut started: HashSet<&str> = HashSet::new();
                    for r in &changed {
                        if r.status == NodeStatus::Failed.as_str() {
                            failed.push(r.node.clone());
                            out.unstartable += 1;
                            moved(NodeStatus::Ready, NodeStatus::Failed, 1);
                        } else {
                            started.insert(r.node.as_str());
                            moved(NodeStatus::Ready, NodeStatus::Running, 1);
                        }
                    }
                    let calls: Vec<NewInvocation> = chosen
                        .iter()
                        .filter(|s| started.contains(s.node.as_str()))
                        .filter_map(|s| s.invocation.clone())
                        .collect();
                    if !calls.is_empty() {
                        yield_point()?;
                        super::insert_registered(&mut *tx, &calls).await?;
                        out.started = calls.into_iter().map(|c| c.id).collect();
                    }
                }
            }
            // d. Everything downstream of failed nodes.
            if !failed.is_empty() {
                let failed = to_json(&failed)?;
                let from: Vec<StatusCountRow> = with_json!(tx, d, q::STEP_BLOCK_FROM, id, failed.as_str());
                let blocked: Vec<NodeIdRow> = with_json!(tx, d, q::STEP_BLOCK, id, failed.as_str());
                out.blocked = blocked.len();
                for r in from {
                    moved(parse_node_status(&r.status)?, NodeStatus::Blocked, r.count);
                }
            }
            // f. The workflow's status and counts, when anything moved.
            let wf = if out.changed() {
                let status = workflow::status_of(&tally, wf.paused, wf.fail_fast);
                let row: WorkflowRow = sqlx::query_as(q::STEP_STATUS.get(d))
                    .bind(id)
                    .bind(status.as_str())
                    .bind(to_json(&tally)?)
                    .fetch_one(&mut *tx)
                    .await?;
                row.decode()?
            } else {
                wf
            };
            out.workflow = Some(wf);
            out
        });
        Ok(out)
    }
}
