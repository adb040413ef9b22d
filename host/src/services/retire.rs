//! Retirement of dead nodes (JobSync): a node silent longer than the heartbeat timeout has its
//! owned invocations rerouted and is marked left, in one transaction per node fenced by the
//! leader's epoch (it registers again, as the youngest node, if it comes back).

use std::sync::Arc;

use crate::store::{Fence, Store, StoreError};

/// The retirement service: needs only the store.
pub(crate) struct RetireDead {
    store: Arc<dyn Store>,
}

impl RetireDead {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Retires each of `dead` under `fence`; returns the invocations rerouted in all. A node
    /// that fails is reported and the others are still retired.
    pub(crate) async fn run_once(&self, fence: &Fence, dead: &[String]) -> (u64, Vec<StoreError>) {
        let mut rerouted = 0;
        let mut errors = Vec::new();
        for d in dead {
            match self.store.node_retire(d, fence).await {
                Ok(n) => {
                    rerouted += n;
                    tracing::warn!(node = %d, recovered = n, "retired a dead node and rerouted its invocations");
                }
                Err(e) => errors.push(e),
            }
        }
        (rerouted, errors)
    }
}
