//! `max_pending` recovery (pynenc): invocations claimed but not started within `max_pending`
//! (their node holds them and never ran them) are rerouted, at most a step's worth per run.

use std::sync::Arc;
use std::time::Duration;

use super::{STEP_LIMIT, ms};
use crate::store::{Fence, Store, StoreError};

/// The pending-recovery service: needs the store and the limit.
pub(crate) struct PendingRecovery {
    store: Arc<dyn Store>,
    max_pending: Duration,
}

impl PendingRecovery {
    pub(crate) fn new(store: Arc<dyn Store>, max_pending: Duration) -> Self {
        Self { store, max_pending }
    }

    /// Reroutes what has been pending longer than `max_pending`; returns how many.
    pub(crate) async fn run_once(&self, fence: &Fence) -> Result<u64, StoreError> {
        let n = self.store.invocation_recover_pending(fence, ms(self.max_pending), STEP_LIMIT).await?;
        if n > 0 {
            tracing::warn!(
                rerouted = n,
                max_pending_ms = ms(self.max_pending),
                "rerouted invocations claimed but not started in time"
            );
        }
        Ok(n)
    }
}
