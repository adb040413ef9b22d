//! The host's heartbeat on behalf of its guests (Jobmon's `report_by`): the instances this
//! node holds (claimed and waiting for a slot, or running) are refreshed together in one
//! statement per tick, and what the answer says is acted on the same tick: a control signal
//! (`cancel`) interrupts the guest, and an instance missing from the answer was taken away by
//! triage, so its guest is interrupted and its outcome will be discarded (fencing), or, if it
//! has not started, it is let go and never starts here. Each heartbeat also carries what the
//! node knows of its attempts (memory, time left, an end not recorded yet): when the node goes
//! silent, triage decides from it why the attempt was lost.

use std::sync::Arc;

use super::{Orchestrator, lock};
use crate::model::instance::{AttemptExit, HeldAttempt, NodeKnowledge};
use crate::runtime::AttemptGauge;

/// What this node knows of one started attempt.
pub(super) struct Known {
    /// Kept up to date by the runtime while the guest runs.
    gauge: Arc<AttemptGauge>,
    /// How it ended, once it has (until its outcome is recorded).
    exit: Option<AttemptExit>,
}

/// What one heartbeat of the instances did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstanceBeat {
    /// Instances held and refreshed.
    pub refreshed: usize,
    /// Guests interrupted by a control signal.
    pub signalled: usize,
    /// Guests interrupted because their instance was taken away.
    pub taken_away: usize,
}

impl Orchestrator {
    /// How far past the database now a live instance's `report_by` goes, in ms.
    pub fn report_window_ms(&self) -> i64 {
        let cfg = &self.inner.cfg;
        crate::model::instance::ReportWindow {
            interval_ms: u64::try_from(cfg.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
            buffer: cfg.report_buffer,
        }
        .ms()
    }

    /// Notes that this node holds the attempt (claimed): its heartbeat reports for it.
    pub(super) fn hold(&self, id: &str, attempt: u32) {
        lock(&self.inner.attempts.held).insert(id.to_string(), attempt);
        lock(&self.inner.attempts.unstarted).insert(id.to_string());
    }

    /// The attempt is over (recorded, handed back or discarded).
    pub(super) fn unhold(&self, id: &str) {
        lock(&self.inner.attempts.held).remove(id);
        lock(&self.inner.attempts.unstarted).remove(id);
        lock(&self.inner.attempts.known).remove(id);
    }

    /// The gauge of an attempt that starts here: its heartbeats report what it says.
    pub(super) fn gauge(&self, id: &str) -> Arc<AttemptGauge> {
        let gauge = Arc::new(AttemptGauge::default());
        lock(&self.inner.attempts.known).insert(id.to_string(), Known { gauge: gauge.clone(), exit: None });
        gauge
    }

    /// The attempt ended here this way; its heartbeats say so until its outcome is recorded.
    pub(super) fn ended(&self, id: &str, exit: AttemptExit) {
        if let Some(k) = lock(&self.inner.attempts.known).get_mut(id) {
            k.exit = Some(exit);
        }
    }

    /// Marks the attempt as running here (its cancellation token) if this node still holds it;
    /// false when its instance was taken away meanwhile (the heartbeat let it go): then it
    /// must not start. Locks `running`, then `held`, as the heartbeat does.
    pub(super) fn start_if_held(&self, id: &str, attempt: u32, token: tokio_util::sync::CancellationToken) -> bool {
        let mut running = lock(&self.inner.attempts.running);
        let held = lock(&self.inner.attempts.held).get(id) == Some(&attempt);
        if !lock(&self.inner.attempts.unstarted).remove(id) || !held {
            return false;
        }
        running.insert(id.to_string(), token);
        true
    }

    /// How many attempts this node holds (claimed, not yet recorded or handed back).
    pub(crate) fn held_count(&self) -> usize {
        lock(&self.inner.attempts.held).len()
    }

    /// One heartbeat for every instance this node holds, in one statement, then the signals.
    pub(crate) async fn heartbeat_instances(&self) -> Result<InstanceBeat, crate::store::StoreError> {
        let held: Vec<(String, u32)> = lock(&self.inner.attempts.held).iter().map(|(k, v)| (k.clone(), *v)).collect();
        if held.is_empty() {
            return Ok(InstanceBeat::default());
        }
        let report: Vec<HeldAttempt> = {
            let known = lock(&self.inner.attempts.known);
            held.iter()
                .map(|(id, attempt)| HeldAttempt {
                    known: known.get(id).map(Known::knowledge).unwrap_or_default(),
                    ..HeldAttempt::new(id.clone(), *attempt)
                })
                .collect()
        };
        let answer = self.inner.store.instance_heartbeat(self.node(), &report, self.report_window_ms()).await?;
        let mut beat = InstanceBeat { refreshed: answer.len(), ..InstanceBeat::default() };
        let refreshed: std::collections::HashSet<(&str, u32)> =
            answer.iter().map(|h| (h.invocation_id.as_str(), h.attempt)).collect();
        for h in answer.iter().filter(|h| h.signal.is_some()) {
            let signal = h.signal.as_deref().unwrap_or_default();
            if lock(&self.inner.attempts.held).get(&h.invocation_id) != Some(&h.attempt) {
                continue;
            }
            if signal == "cancel" {
                lock(&self.inner.attempts.user_cancels).insert(h.invocation_id.clone());
            }
            if let Some(token) = lock(&self.inner.attempts.running).get(&h.invocation_id) {
                tracing::info!(invocation = %h.invocation_id, signal, "control signal: interrupting the guest");
                token.cancel();
                beat.signalled += 1;
            }
        }
        for (id, attempt) in &held {
            if refreshed.contains(&(id.as_str(), *attempt)) || lock(&self.inner.attempts.held).get(id) != Some(attempt)
            {
                continue;
            }
            // Not live any more: finished meanwhile (then the token is gone or unused), or
            // triaged away from this node: stop the guest; its outcome will be refused. One
            // not started yet (in the local queue) is no longer this node's: it is let go, and
            // the worker never starts it (`running` is locked first, as `run_attempt` does).
            let running = lock(&self.inner.attempts.running);
            if let Some(token) = running.get(id) {
                tracing::warn!(invocation = %id, attempt, "instance taken away by triage; interrupting the guest");
                token.cancel();
                super::AttemptCounters::bump(&self.inner.attempts.counters.taken_away);
                beat.taken_away += 1;
            } else if lock(&self.inner.attempts.unstarted).remove(id) {
                let mut held = lock(&self.inner.attempts.held);
                if held.get(id) == Some(attempt) {
                    held.remove(id);
                    tracing::warn!(invocation = %id, attempt, "unstarted attempt taken away by triage; it will not start here");
                    super::AttemptCounters::bump(&self.inner.attempts.counters.taken_away);
                    beat.taken_away += 1;
                }
            }
        }
        Ok(beat)
    }
}

impl Known {
    /// What to report now.
    fn knowledge(&self) -> NodeKnowledge {
        NodeKnowledge {
            peak_memory_bytes: self.gauge.peak_memory_bytes(),
            memory_limit_bytes: self.gauge.memory_limit_bytes(),
            timeout_left_ms: if self.exit.is_some() { None } else { self.gauge.timeout_left_ms() },
            exit: self.exit.clone(),
        }
    }
}
