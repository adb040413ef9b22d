//! Triage (Jobmon) as a service: reads the instances whose `report_by` has passed, lets the
//! pure rule (`model::instance::triage`) decide, and applies the decisions as compare-and-swaps
//! fenced by the leader's epoch; the invocations of given-up instances are rerouted.

use std::sync::Arc;

use super::STEP_LIMIT;
use crate::model::Millis;
use crate::store::{Fence, Store, StoreError};

/// The triage service: needs the store and the report window its nodes heartbeat within.
pub(crate) struct Triage {
    store: Arc<dyn Store>,
    report_window_ms: i64,
}

/// What one triage run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Triaged {
    /// Instances whose status changed.
    pub(crate) changed: usize,
    /// Invocations rerouted because their instance was given up.
    pub(crate) rerouted: usize,
}

impl Triage {
    pub(crate) fn new(store: Arc<dyn Store>, report_window_ms: i64) -> Self {
        Self { store, report_window_ms }
    }

    /// One run at `now` (the database clock as the tick read it): overdue instances move on
    /// (`running → triaging`, `triaging → unknown_error`, never reported → `no_heartbeat →
    /// error`).
    pub(crate) async fn run_once(&self, fence: &Fence, now: Millis) -> Result<Triaged, StoreError> {
        let overdue = self.store.instance_overdue(now, STEP_LIMIT).await?;
        let decisions = crate::model::instance::triage(&overdue, now, self.report_window_ms);
        let (changed, rerouted) = self.store.instance_triage_apply(&decisions, fence).await?;
        if !rerouted.is_empty() {
            tracing::warn!(rerouted = rerouted.len(), "triage rerouted invocations whose node stopped reporting");
        }
        Ok(Triaged { changed, rerouted: rerouted.len() })
    }
}
