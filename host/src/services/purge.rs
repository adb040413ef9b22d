//! The auto-purge: final invocations (with their history and instances) and events older than
//! the retention are deleted in bounded transactions; old execution records of the services
//! are pruned with them.

use std::sync::Arc;
use std::time::Duration;

use super::{RECORD_RETENTION_MS, ms};
use crate::store::{Fence, Store, StoreError};

/// Most invocations one purge transaction deletes.
const PURGE_BATCH: u32 = 5_000;

/// The purge service: needs the store and the retention (`None` keeps everything but the
/// services' own records).
pub(crate) struct Purge {
    store: Arc<dyn Store>,
    retention: Option<Duration>,
}

impl Purge {
    pub(crate) fn new(store: Arc<dyn Store>, retention: Option<Duration>) -> Self {
        Self { store, retention }
    }

    /// One purge; `stop` cuts a long one short between batches (shutdown). Returns the
    /// invocations deleted. The services' old execution records are pruned even when the
    /// purge itself fails.
    pub(crate) async fn run_once(&self, fence: &Fence, stop: impl Fn() -> bool) -> Result<u64, StoreError> {
        let purged = self.past_retention(fence, stop).await;
        let pruned = self.store.service_prune(fence, RECORD_RETENTION_MS).await;
        let n = purged?;
        pruned?;
        Ok(n)
    }

    async fn past_retention(&self, fence: &Fence, stop: impl Fn() -> bool) -> Result<u64, StoreError> {
        let Some(retention) = self.retention else { return Ok(0) };
        let age = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let mut total = 0;
        loop {
            let n = self.store.invocation_purge(fence, age, PURGE_BATCH).await?;
            total += n;
            if n < u64::from(PURGE_BATCH) || stop() {
                break;
            }
        }
        self.store.events_purge(fence, ms(retention)).await?;
        if total > 0 {
            tracing::info!(purged = total, retention_ms = age, "purged final invocations past their retention");
        }
        Ok(total)
    }
}
