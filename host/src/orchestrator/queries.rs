//! What the HTTP API reads and changes beyond routing and running: the orchestrator's methods
//! for lists, counts, histories, attempts, components and tasks, the cluster's views and the
//! database's health. Handlers call these, never the store; most are one store read, with the
//! existence check or the validation that belongs to the operation.

use super::{OrchResult, Orchestrator, OrchestratorError};
use crate::model::instance::AttemptUsage;
use crate::model::{
    ComponentInfo, HistoryEntry, Invocation, InvocationFilter, InvocationStatus, Lease, Millis, NodeInfo, ServiceRun,
    TaskDef, TaskInstance, TaskPatch, TokenAudit, TokenRing, Trigger, TriggerRun,
};
use crate::model::{NodeLoad, TokenLoad};
use crate::store::StatusCount;

impl Orchestrator {
    /// A page of invocations, newest first.
    pub async fn invocation_list(&self, filter: &InvocationFilter) -> OrchResult<Vec<Invocation>> {
        Ok(self.store().invocation_list(filter).await?)
    }

    /// Counts of invocations per task and status.
    pub async fn invocation_count(
        &self,
        task: Option<&str>,
        status: Option<InvocationStatus>,
    ) -> OrchResult<Vec<StatusCount>> {
        Ok(self.store().invocation_count(task, status).await?)
    }

    /// The invocations an invocation called (one level); `NotFound` for an unknown id.
    pub async fn invocation_children(&self, id: &str) -> OrchResult<Vec<Invocation>> {
        self.get(id).await?;
        Ok(self.store().invocation_children(id).await?)
    }

    /// The attempts (task instances) of an invocation; `NotFound` for an unknown id.
    pub async fn invocation_instances(&self, id: &str) -> OrchResult<Vec<TaskInstance>> {
        self.get(id).await?;
        Ok(self.store().instance_list(id).await?)
    }

    /// The status history of an invocation; `NotFound` for an unknown id.
    pub async fn invocation_history(&self, id: &str) -> OrchResult<Vec<HistoryEntry>> {
        self.get(id).await?;
        Ok(self.store().invocation_history(id).await?)
    }

    /// Every stored component.
    pub async fn component_list(&self) -> OrchResult<Vec<ComponentInfo>> {
        Ok(self.store().component_list().await?)
    }

    /// A stored component, if any.
    pub async fn component_get(&self, name: &str) -> OrchResult<Option<ComponentInfo>> {
        Ok(self.store().component_get(name).await?)
    }

    /// Every task, as stored now (not the cache).
    pub async fn task_list(&self) -> OrchResult<Vec<TaskDef>> {
        Ok(self.store().task_list().await?)
    }

    /// A task as stored now (not the cache), if any.
    pub async fn task_get(&self, name: &str) -> OrchResult<Option<TaskDef>> {
        Ok(self.store().task_get(name).await?)
    }

    /// Validates a patch of a task's options (the same rules whichever endpoint sends it:
    /// `PATCH /v1/tasks/{task}` or the pins API), applies it and drops the cached task
    /// definitions. Bad values are `BadRequest`, an unknown task `UnknownTask`.
    pub async fn task_update(&self, name: &str, patch: &TaskPatch) -> OrchResult<TaskDef> {
        if let Some(m) = patch.max_attempts {
            crate::model::check_max_attempts(m).map_err(OrchestratorError::BadRequest)?;
        }
        if let Some(p) = patch.priority {
            crate::model::task::check_priority(p, "priority").map_err(OrchestratorError::BadRequest)?;
        }
        if patch.timeout_ms == Some(0) {
            return Err(OrchestratorError::BadRequest("timeout_ms must be at least 1".into()));
        }
        if let Some(limit) = patch.memory_limit_bytes {
            self.check_memory_limit(name, limit).await?;
        }
        // An empty list unpins; any other list follows the pin rules.
        if let Some(patterns) = patch.pins.as_ref().filter(|p| !p.is_empty()) {
            crate::cluster::pins::validate(patterns).map_err(OrchestratorError::BadRequest)?;
        }
        if let Some(limit) = &patch.rate_limit {
            self.check_rate_limit_named(limit).await?;
        }
        let t = self
            .store()
            .task_update(name, patch)
            .await?
            .ok_or_else(|| OrchestratorError::UnknownTask(name.to_string()))?;
        self.invalidate_tasks();
        Ok(t)
    }

    /// The resource use of a task's latest `limit` attempts.
    pub async fn task_usage(&self, task: &str, limit: u32) -> OrchResult<Vec<AttemptUsage>> {
        Ok(self.store().instance_usage(task, limit).await?)
    }

    /// Every node the cluster knows, with the database now they were read at.
    pub async fn node_list(&self) -> OrchResult<(Millis, Vec<NodeInfo>)> {
        Ok(self.store().node_list().await?)
    }

    /// The leader's lease as stored.
    pub async fn lease(&self) -> OrchResult<Lease> {
        Ok(self.store().lease_get().await?)
    }

    /// The token ring (without its owners).
    pub async fn ring(&self) -> OrchResult<TokenRing> {
        Ok(self.store().ring_get(false).await?)
    }

    /// Tokens owned per node.
    pub async fn token_loads(&self) -> OrchResult<Vec<TokenLoad>> {
        Ok(self.store().token_loads().await?)
    }

    /// The latest `limit` swaps of the ring.
    pub async fn token_audits(&self, limit: u32) -> OrchResult<Vec<TokenAudit>> {
        Ok(self.store().token_audits(limit).await?)
    }

    /// The invocations each node owns and runs.
    pub async fn node_loads(&self) -> OrchResult<Vec<NodeLoad>> {
        Ok(self.store().owned_per_node().await?)
    }

    /// Every trigger.
    pub async fn trigger_list(&self) -> OrchResult<Vec<Trigger>> {
        Ok(self.store().trigger_list().await?)
    }

    /// A trigger with its latest `runs` runs, if it exists.
    pub async fn trigger_get(&self, id: &str, runs: u32) -> OrchResult<Option<(Trigger, Vec<TriggerRun>)>> {
        let Some(t) = self.store().trigger_get(id).await? else {
            return Ok(None);
        };
        Ok(Some((t, self.store().trigger_runs(id, runs).await?)))
    }

    /// The latest `limit` executions of the atomic services.
    pub async fn service_runs(&self, limit: u32) -> OrchResult<Vec<ServiceRun>> {
        Ok(self.store().service_list(limit).await?)
    }

    /// Whether the database answers.
    pub async fn database_ping(&self) -> OrchResult<()> {
        Ok(self.store().ping().await?)
    }

    /// The database's kind: `sqlite` or `postgres`.
    pub fn database_dialect(&self) -> &'static str {
        self.store().dialect()
    }
}
