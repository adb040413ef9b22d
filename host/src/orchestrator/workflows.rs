//! Workflows and arrays (Jobmon) in the orchestrator: creation (validation, task check,
//! storage), summaries, incremental node sync, pause / resume / cancel, and the scheduler
//! loop that steps every active workflow. The store's step does the work in one transaction;
//! this side builds the invocations of the nodes to start (as routing does) and cancels the
//! invocations a control change hands back through [`Orchestrator::cancel`], which interrupts
//! running guests.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::{OrchResult, Orchestrator, OrchestratorError};
use crate::model::Millis;
use crate::model::workflow::{self, NodeStatus, WorkflowInfo, WorkflowKind, WorkflowNode, WorkflowRequest};
use crate::store::NodeStart;

/// How often the scheduler looks at active workflows without being woken.
const SCHEDULER_TICK: Duration = Duration::from_millis(200);

/// How often it looks when its last look found none: a workflow created or resumed on this
/// node, or an invocation ending here, wakes it at once; this bounds how long a workflow whose
/// own node died waits for another node's scheduler. Looking every 200 ms while idle was 5 of
/// an idle node's 29 PostgreSQL transactions per second.
const SCHEDULER_IDLE_TICK: Duration = Duration::from_secs(2);

/// Most workflows one scheduler round looks at.
const ACTIVE_LIMIT: u32 = 10_000;

/// How a paused workflow resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumeMode {
    /// Clear the pause: running nodes keep running.
    #[default]
    Hot,
    /// Also cancel the invocations of running nodes and start those nodes again.
    Cold,
}

/// `GET /v1/workflows/{id}`: the workflow, its nodes per status and (unless skipped) its nodes.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkflowSummary {
    /// The workflow.
    #[serde(flatten)]
    pub workflow: WorkflowInfo,
    /// Nodes per status (every status, zeros included).
    pub counts: BTreeMap<&'static str, i64>,
    /// Every node in request order, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<WorkflowNode>>,
}

impl Orchestrator {
    /// Validates and stores a workflow (or an array, by `kind`), then wakes the scheduler.
    /// Invalid graphs, limits and unknown tasks are `BadRequest`.
    pub async fn workflow_create(
        &self,
        req: WorkflowRequest,
        kind: WorkflowKind,
        trace_parent: Option<String>,
    ) -> OrchResult<WorkflowInfo> {
        let id = crate::model::identity::new_invocation_id();
        let mut new = workflow::validate(&req, id, kind, self.inner.cfg.max_workflow_nodes)
            .map_err(OrchestratorError::BadRequest)?;
        // Traced: the workflow's span, a child of the request's context; its nodes' calls
        // are routed as its children (`workflow_step`), so its attempts are one trace.
        let _span;
        new.trace_parent = if crate::telemetry::enabled() {
            let span = tracing::info_span!(
                "workflow",
                otel.name = "warden.workflow",
                workflow = %new.id,
                nodes = new.nodes.len(),
                kind = kind.as_str()
            );
            crate::telemetry::set_parent(&span, trace_parent.as_deref());
            let here = crate::telemetry::traceparent(&span);
            _span = span;
            here
        } else {
            trace_parent
        };
        let tasks: HashSet<&str> = new.nodes.iter().map(|n| n.task.as_str()).collect();
        let mut tasks: Vec<&str> = tasks.into_iter().collect();
        tasks.sort_unstable();
        for t in tasks {
            match self.task(t).await {
                Ok(_) => {}
                Err(OrchestratorError::UnknownTask(t)) => {
                    return Err(OrchestratorError::BadRequest(format!("unknown task `{t}`")));
                }
                Err(e) => return Err(e),
            }
        }
        let info = self.inner.store.workflow_create(&new).await?;
        self.inner.workflow_wake.notify_one();
        Ok(info)
    }

    /// A workflow with its counts and, when `with_nodes`, its nodes.
    pub async fn workflow_summary(&self, id: &str, with_nodes: bool) -> OrchResult<WorkflowSummary> {
        let workflow = self.workflow_info(id).await?;
        self.summary_of(workflow, with_nodes).await
    }

    /// The summary of a workflow already read (or just returned by a control change).
    async fn summary_of(&self, workflow: WorkflowInfo, with_nodes: bool) -> OrchResult<WorkflowSummary> {
        let mut counts: BTreeMap<&'static str, i64> = NodeStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (s, n) in self.inner.store.workflow_counts(&workflow.id).await? {
            counts.insert(s.as_str(), n);
        }
        let nodes = if with_nodes { Some(self.inner.store.workflow_nodes(&workflow.id).await?) } else { None };
        Ok(WorkflowSummary { workflow, counts, nodes })
    }

    /// The newest workflows.
    pub async fn workflow_list(&self, limit: u32) -> OrchResult<Vec<WorkflowInfo>> {
        Ok(self.inner.store.workflow_list(limit).await?)
    }

    /// The nodes changed after `since` and the `server_time` to pass next time (see
    /// `WorkflowStore::workflow_nodes_since`).
    pub async fn workflow_nodes_since(&self, id: &str, since: Millis) -> OrchResult<(Millis, Vec<WorkflowNode>)> {
        self.workflow_info(id).await?;
        Ok(self.inner.store.workflow_nodes_since(id, since).await?)
    }

    /// Pauses a workflow: running nodes finish, nothing new starts.
    pub async fn workflow_pause(&self, id: &str) -> OrchResult<WorkflowSummary> {
        let info = self.inner.store.workflow_pause(id).await?;
        self.summary_of(info, false).await
    }

    /// Resumes a workflow; `Cold` also cancels the invocations of running nodes, which start
    /// again with new invocations (done nodes never run again).
    pub async fn workflow_resume(&self, id: &str, mode: ResumeMode) -> OrchResult<WorkflowSummary> {
        let (info, to_cancel) = self.inner.store.workflow_resume(id, mode == ResumeMode::Cold).await?;
        self.cancel_all(&to_cancel).await;
        self.inner.workflow_wake.notify_one();
        self.summary_of(info, false).await
    }

    /// Cancels a workflow: its unfinished nodes and their invocations.
    pub async fn workflow_cancel(&self, id: &str) -> OrchResult<WorkflowSummary> {
        let (info, to_cancel) = self.inner.store.workflow_cancel(id).await?;
        self.cancel_all(&to_cancel).await;
        self.summary_of(info, false).await
    }

    async fn workflow_info(&self, id: &str) -> OrchResult<WorkflowInfo> {
        self.inner.store.workflow_get(id).await?.ok_or_else(|| OrchestratorError::NotFound(format!("workflow `{id}`")))
    }

    /// Cancels invocations (a final one is left as it is); failures are logged, the step
    /// syncs whatever they end as.
    async fn cancel_all(&self, ids: &[String]) {
        let cancels = ids.iter().map(|id| async move {
            if let Err(e) = self.cancel(id).await {
                tracing::warn!(invocation = %id, error = %e, "cancelling a workflow node's invocation failed");
            }
        });
        futures::future::join_all(cancels).await;
    }

    /// One step of a workflow: reads what could start, builds those invocations, and lets
    /// the store's step (one transaction) sync, start and block. Returns how many node status
    /// changes it made; a workflow with nothing to sync and nothing to start costs only the
    /// reads.
    pub(crate) async fn workflow_step(&self, id: &str) -> OrchResult<usize> {
        let Some(plan) = self.inner.store.workflow_plan(id).await? else { return Ok(0) };
        let wf = &plan.workflow;
        if wf.status.is_final() {
            return Ok(0);
        }
        let tasks: Vec<&str> = plan.candidates.iter().map(|(_, task, _)| task.as_str()).collect();
        let picked = workflow::select_ready(&tasks, &plan.running, wf.max_concurrently_running, &wf.task_limits);
        if picked.is_empty() && plan.syncable == 0 {
            return Ok(0);
        }
        let mut starts = Vec::with_capacity(picked.len());
        // Traced: each node's call is routed as a child of the workflow's span (open until
        // the step commits, like a routing's).
        let mut spans = Vec::new();
        for i in picked {
            let Some((node, task, args)) = plan.candidates.get(i) else { continue };
            let invocation = match serde_json::from_str::<serde_json::Value>(args) {
                Ok(args) => match self.new_invocation(task, &args, None, None, None, Some((id, wf.max_attempts))).await
                {
                    Ok(mut n) => {
                        n.trace_parent = super::routing_trace(&n, wf.traceparent.as_deref(), &mut spans);
                        Some(n)
                    }
                    Err(e @ (OrchestratorError::UnknownTask(_) | OrchestratorError::BadRequest(_))) => {
                        tracing::warn!(workflow = %id, node = %node, error = %e, "a workflow node cannot start; it fails");
                        None
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    tracing::warn!(workflow = %id, node = %node, error = %e, "stored node arguments are not JSON");
                    None
                }
            };
            starts.push(NodeStart { node: node.clone(), task: task.clone(), invocation });
        }
        let out = self.inner.store.workflow_step(id, &starts).await?;
        drop(spans);
        if !out.started.is_empty() {
            self.nudge();
        }
        Ok(out.moved())
    }
}

/// The scheduler: steps every active workflow when woken (an invocation became final while
/// it had workflows to step, a workflow was created or resumed) and at least every [`SCHEDULER_TICK`] (every
/// [`SCHEDULER_IDLE_TICK`] while there is none); goes round again
/// at once while steps change something. Any node may step any workflow: the step's
/// transaction serialises them. Stops at shutdown.
pub(crate) async fn scheduler_loop(orch: Orchestrator) {
    let shutdown = orch.shutdown_token();
    loop {
        let mut moved = false;
        let mut tick = SCHEDULER_TICK;
        match orch.inner.store.workflow_active(ACTIVE_LIMIT).await {
            Ok(ids) => {
                if ids.is_empty() {
                    tick = SCHEDULER_IDLE_TICK;
                }
                orch.inner.workflows_active.store(!ids.is_empty(), std::sync::atomic::Ordering::Relaxed);
                for id in ids {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    match orch.workflow_step(&id).await {
                        Ok(n) => {
                            moved |= n > 0;
                            orch.changed(n);
                        }
                        Err(e) => tracing::warn!(workflow = %id, error = %e, "workflow step failed; will try again"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing active workflows failed; will try again"),
        }
        if moved && !shutdown.is_cancelled() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = orch.inner.workflow_wake.notified() => {}
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
