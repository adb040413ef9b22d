//! Components and their versions as the API and the attempts see them: deploy (a new version
//! of new code), rollback, the version list and deletion, removal, and the cache of compiled
//! components by (name, version) that attempts run from.

use std::collections::HashMap;

use super::{MIN_MEMORY_LIMIT_BYTES, OrchResult, Orchestrator, OrchestratorError, lock};
use crate::model::{ComponentInfo, ComponentVersions};
use crate::runtime::LoadedComponent;

impl Orchestrator {
    /// Validates, compiles and describes a component, then stores it as the component's next
    /// version (new calls run it) and registers its tasks.
    pub async fn deploy(&self, name: &str, bytes: &[u8]) -> OrchResult<ComponentInfo> {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(OrchestratorError::BadRequest(
                "component name must be 1-128 characters of letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        if name.chars().all(|c| c == '.') {
            return Err(OrchestratorError::BadRequest(format!(
                "component name `{name}` is not allowed: a name of dots only reads as a path (`.`, `..`); \
                 use letters or digits too"
            )));
        }
        let loaded = self.inner.runtime.load(bytes).await?;
        let tasks = self.inner.runtime.describe(&loaded, name).await?;
        let info = self.inner.store.component_put(name, loaded.digest(), bytes, &tasks).await?;
        self.catalog_changed(&info, loaded).await;
        Ok(info)
    }

    /// Makes an earlier version of a component current again: `version`, or without one the
    /// newest stored version before the current one. Calls bound to other versions keep
    /// theirs; new calls run this one. The tasks are registered as that version describes
    /// them (options a user patched are kept).
    pub async fn rollback(&self, name: &str, version: Option<u64>) -> OrchResult<ComponentInfo> {
        let versions = self.component_versions(name).await?;
        let current = versions.current;
        let target = match version {
            Some(v) if v == current => {
                return Err(OrchestratorError::Conflict(format!(
                    "version {v} is already the current version of component `{name}`"
                )));
            }
            Some(v) => v,
            None => versions.previous().ok_or_else(|| {
                OrchestratorError::Conflict(format!(
                    "component `{name}` has no stored version before its current version {current}: nothing \
                     to roll back to (GET /v1/components/{name}/versions lists them; upload a new version instead)"
                ))
            })?,
        };
        let bytes = self
            .inner
            .store
            .component_version_bytes(name, target)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("version {target} of component `{name}`")))?;
        let loaded = self.inner.runtime.load(&bytes).await?;
        let tasks = self.inner.runtime.describe(&loaded, name).await?;
        let info = self.inner.store.component_activate(name, target, &tasks).await?;
        self.catalog_changed(&info, loaded).await;
        Ok(info)
    }

    /// The stored versions of a component, newest first.
    pub async fn component_versions(&self, name: &str) -> OrchResult<ComponentVersions> {
        let versions = self
            .inner
            .store
            .component_versions(name)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("component `{name}`")))?;
        Ok(ComponentVersions::new(name, versions))
    }

    /// Deletes a version that is neither current nor bound to an unfinished call.
    pub async fn component_version_delete(&self, name: &str, version: u64) -> OrchResult<()> {
        self.inner.store.component_version_delete(name, version).await?;
        self.inner.routing.components.lock().await.remove(&(name.to_owned(), version));
        Ok(())
    }

    /// A version became current: cache its compiled code, forget the task definitions, and
    /// wake the dispatcher (calls of new tasks may be waiting).
    async fn catalog_changed(&self, info: &ComponentInfo, loaded: LoadedComponent) {
        self.inner.routing.components.lock().await.insert((info.name.clone(), info.version), loaded);
        lock(&self.inner.routing.tasks).clear();
        self.inner.claims.work.notify_one();
    }

    /// Removes a component, its versions and its tasks.
    pub async fn undeploy(&self, name: &str) -> OrchResult<()> {
        if !self.inner.store.component_delete(name).await? {
            return Err(OrchestratorError::NotFound(format!("component `{name}`")));
        }
        self.inner.routing.components.lock().await.retain(|(n, _), _| n != name);
        lock(&self.inner.routing.tasks).clear();
        Ok(())
    }

    /// Checks a memory limit for a task: at least what its component needs to start, which is
    /// the initial size of the component's largest memory when the runtime can tell, else
    /// [`MIN_MEMORY_LIMIT_BYTES`]; the message says which rule it applied.
    pub async fn check_memory_limit(&self, task: &str, limit: u64) -> OrchResult<()> {
        let def = self.task(task).await?;
        let component = self.component(&def.component, None).await?;
        match component.initial_memory_bytes() {
            Some(need) if limit < need => Err(OrchestratorError::BadRequest(format!(
                "memory_limit_bytes {limit} is below the {need} bytes that component `{}` declares as the \
                 initial size of its largest memory: task `{task}` could never start; give it at least {need}",
                def.component
            ))),
            None if limit < MIN_MEMORY_LIMIT_BYTES => Err(OrchestratorError::BadRequest(format!(
                "memory_limit_bytes {limit} is below the floor of {MIN_MEMORY_LIMIT_BYTES} bytes (1 MiB): component \
                 `{}` does not declare its initial memory, and no task starts in less",
                def.component
            ))),
            _ => Ok(()),
        }
    }

    /// The tasks' version moved (a deploy, rollback, patch or removal, through any node):
    /// forgets the cached task definitions, and the compiled components that are no longer
    /// current (a patch of a task recompiles nothing). They are read again at their next use:
    /// an older version a call is bound to, from the store and the AOT cache.
    pub(crate) async fn forget_catalog(&self) {
        self.invalidate_tasks();
        match self.inner.store.component_list().await {
            Ok(list) => {
                let current: HashMap<String, u64> = list.into_iter().map(|c| (c.name, c.version)).collect();
                self.inner
                    .routing
                    .components
                    .lock()
                    .await
                    .retain(|(name, version), _| current.get(name) == Some(version));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the components failed; forgetting every compiled one");
                self.inner.routing.components.lock().await.clear();
            }
        }
    }

    /// The compiled code of a component's version (`None`: the current one), loaded from the
    /// store (and the AOT cache) on first use.
    pub(super) async fn component(&self, name: &str, version: Option<u64>) -> OrchResult<LoadedComponent> {
        let version = match version {
            Some(v) => v,
            None => {
                self.inner
                    .store
                    .component_get(name)
                    .await?
                    .ok_or_else(|| OrchestratorError::NotFound(format!("component `{name}`")))?
                    .version
            }
        };
        let key = (name.to_owned(), version);
        let mut cache = self.inner.routing.components.lock().await;
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let bytes = self.inner.store.component_version_bytes(name, version).await?.ok_or_else(|| {
            OrchestratorError::NotFound(format!(
                "version {version} of component `{name}` (deleted while a call was bound to it)"
            ))
        })?;
        let loaded = self.inner.runtime.load(&bytes).await?;
        cache.insert(key, loaded.clone());
        Ok(loaded)
    }
}
