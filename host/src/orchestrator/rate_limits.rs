//! Rate limits as the orchestrator sees them: the API's create, list, show and delete (with
//! their checks), the routing-time check that a keyed limit finds its key in the arguments,
//! and how long a waiting call is held back. The claim itself is the dispatcher's
//! (`worker.rs`), through the store.

use super::{OrchResult, Orchestrator, OrchestratorError, lock};
use crate::model::Millis;
use crate::model::rate_limit::{self, KeyPath, RateLimit, RateLimitSpec};
use crate::model::{Invocation, TaskDef};

impl Orchestrator {
    /// Creates or replaces limit `name`; true if it is new. Every node follows within one
    /// heartbeat (the limits are part of the task catalog).
    pub async fn rate_limit_put(&self, name: &str, spec: &RateLimitSpec) -> OrchResult<(RateLimit, bool)> {
        rate_limit::check_name(name).map_err(OrchestratorError::BadRequest)?;
        let (limit, per_ms) = spec.check().map_err(OrchestratorError::BadRequest)?;
        let out = self.store().rate_limit_put(name, limit, per_ms, spec.key.as_deref()).await?;
        self.invalidate_tasks();
        Ok(out)
    }

    /// Every rate limit, by name.
    pub async fn rate_limit_list(&self) -> OrchResult<Vec<RateLimit>> {
        Ok(self.store().rate_limit_list().await?)
    }

    /// Rate limit `name`.
    pub async fn rate_limit_get(&self, name: &str) -> OrchResult<RateLimit> {
        self.store().rate_limit_get(name).await?.ok_or_else(|| no_such_limit(name))
    }

    /// Deletes rate limit `name`; refused (409) while a task names it.
    pub async fn rate_limit_delete(&self, name: &str) -> OrchResult<()> {
        if !self.store().rate_limit_delete(name).await? {
            return Err(no_such_limit(name));
        }
        self.invalidate_tasks();
        Ok(())
    }

    /// A task patch may name only an existing limit (or `""`, none).
    pub(super) async fn check_rate_limit_named(&self, name: &str) -> OrchResult<()> {
        if name.is_empty() || self.store().rate_limit_get(name).await?.is_some() {
            return Ok(());
        }
        Err(OrchestratorError::BadRequest(format!(
            "no rate limit named `{name}`; create it first: PUT /v1/rate-limits/{name} {{\"limit\": N, \"per_ms\": M}}"
        )))
    }

    /// The limit a task names, read once per catalog version (`None`: none, or it is gone).
    async fn rate_limit_of(&self, def: &TaskDef) -> OrchResult<Option<RateLimit>> {
        let Some(name) = def.policy.rate_limit.as_deref() else { return Ok(None) };
        if let Some(l) = lock(&self.inner.routing.rate_limits).get(name) {
            return Ok(l.clone());
        }
        let l = self.store().rate_limit_get(name).await?;
        lock(&self.inner.routing.rate_limits).insert(name.to_string(), l.clone());
        Ok(l)
    }

    /// At routing: a call of a task whose limit is keyed must have a value at the key's path
    /// (400 otherwise: it could never be counted).
    pub(super) async fn check_rate_key(&self, def: &TaskDef, args: &serde_json::Value) -> OrchResult<()> {
        let Some(limit) = self.rate_limit_of(def).await? else { return Ok(()) };
        let Some(path) = limit.key.as_deref() else { return Ok(()) };
        let found = KeyPath::parse(path).ok().and_then(|p| p.key_of(args));
        if found.is_none() {
            return Err(OrchestratorError::BadRequest(format!(
                "task `{}` counts its starts against rate limit `{}`, which is kept per value of `{path}` \
                 in the arguments, and these arguments have nothing there",
                def.name, limit.name
            )));
        }
        Ok(())
    }

    /// Until when a runnable invocation is held back by its task's rate limit: the end of the
    /// current window when its key used it up (database clock); `None` otherwise.
    pub async fn rate_limited_until(&self, inv: &Invocation) -> OrchResult<Option<Millis>> {
        if !inv.status.is_runnable() {
            return Ok(None);
        }
        let Ok(def) = self.task(&inv.task).await else { return Ok(None) };
        let Some(limit) = self.rate_limit_of(&def).await? else { return Ok(None) };
        let key = match limit.key.as_deref().and_then(|p| KeyPath::parse(p).ok()) {
            Some(path) => path.key_of(&inv.args).unwrap_or_default(),
            None => String::new(),
        };
        Ok(self.store().rate_limited_until(&limit.name, &key).await?)
    }
}

fn no_such_limit(name: &str) -> OrchestratorError {
    OrchestratorError::NotFound(format!("rate limit `{name}`"))
}
