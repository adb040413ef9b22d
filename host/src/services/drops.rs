//! Running-concurrency drops (pynenc): an invocation held back by running concurrency, of a
//! task that does not reroute on concurrency control, ends `concurrency_controlled_final`.

use std::sync::Arc;

use super::STEP_LIMIT;
use crate::model::TaskDef;
use crate::store::{Fence, Store, StoreError};

/// The drop service: needs only the store.
pub(crate) struct ConcurrencyDrops {
    store: Arc<dyn Store>,
}

impl ConcurrencyDrops {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Drops the blocked invocations of such tasks among `tasks` (the tick's list); returns
    /// their ids (now final).
    pub(crate) async fn run_once(&self, fence: &Fence, tasks: &[TaskDef]) -> Result<Vec<String>, StoreError> {
        let tasks: Vec<String> = tasks.iter().filter(|t| droppable(t)).map(|t| t.name.clone()).collect();
        self.store.invocation_drop_blocked(fence, &tasks, STEP_LIMIT).await
    }
}

/// Whether the blocked calls of `task` are dropped rather than left to be claimed later.
fn droppable(task: &TaskDef) -> bool {
    !task.policy.reroute_on_concurrency_control
}

/// Whether any of `tasks` has its blocked calls dropped (else the service has nothing to do).
pub(crate) fn any_droppable(tasks: &[TaskDef]) -> bool {
    tasks.iter().any(droppable)
}
