//! When the node has the store tidy ([`Store::tidy`]: on PostgreSQL, the ANALYZE and VACUUM
//! autovacuum would run, when its figures say they are due): after every [`TIDY_AFTER`]
//! changes this node made (invocations routed, workflow nodes moved), in the background (the
//! work goes on meanwhile), never two at once. Counting, not a timer: an idle node never asks.

use std::sync::Arc;

use crate::store::Store;

/// Changes after which the node has the store look whether tidying is due: one read of the
/// table statistics per 1,000 calls. A fresh PostgreSQL table is analysed at about 250 calls
/// (four changes each) and then each time it doubles; at 10,000 between looks (the workflow
/// scheduler's former figure) a burst of calls ran its first 10,000 on plans made for a
/// handful of rows.
pub(super) const TIDY_AFTER: usize = 1_000;

/// The changes counted since the last look, and the look in flight.
#[derive(Default)]
pub(super) struct Tidy {
    changes: usize,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Tidy {
    /// Counts `n` changes; past [`TIDY_AFTER`], starts a look unless one is running.
    pub(super) fn changed(&mut self, store: &Arc<dyn Store>, n: usize) {
        self.changes += n;
        if self.changes < TIDY_AFTER || self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.changes = 0;
        let store = store.clone();
        self.running = Some(tokio::spawn(async move {
            if let Err(e) = store.tidy().await {
                tracing::warn!(error = %e, "tidying the database failed; will try again");
            }
        }));
    }
}
