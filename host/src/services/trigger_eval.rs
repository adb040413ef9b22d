//! The trigger service: reads what happened since its cursors (events, status changes of
//! watched tasks), evaluates every trigger (`orchestrator::triggers::evaluate`), routes each
//! firing with the idempotency key `trigger:<id>:<run key>` (the claim: a run routed twice
//! answers with the same invocation; all firings in one group commit), then saves the new
//! trigger states, the runs and the cursors in one transaction, so a crash midway repeats the
//! evaluation without firing anything twice.

use std::collections::BTreeSet;

use crate::model::{Trigger, TriggerRun};
use crate::orchestrator::triggers::{Facts, evaluate, watched_tasks};
use crate::orchestrator::{CallRequest, Orchestrator, OrchestratorError};
use crate::store::Fence;

/// Cursor of the invocation history.
const HISTORY: &str = "history";
/// Cursor of the events.
const EVENTS: &str = "events";
/// Most events one evaluation reads.
const EVENT_BATCH: u32 = 1_000;
/// Most history rows one evaluation scans.
const HISTORY_BATCH: u32 = 10_000;

/// How long rows must have been written before the evaluation reads past them. PostgreSQL
/// hands out sequence numbers before commit, so a transaction may commit a lower number after
/// a reader moved past it; waiting a second makes that practically impossible. SQLite has one
/// writer: numbers commit in order.
fn settle_ms(orch: &Orchestrator) -> i64 {
    if orch.store().dialect() == "postgres" { 1_000 } else { 0 }
}

/// Evaluates every trigger once, as the leader holding `fence` (a former leader's evaluation
/// saves nothing: its firings were routed under their idempotency keys, so the next leader's
/// evaluation of the same runs answers with the same invocations); returns how many runs fired.
pub(super) async fn evaluate_all(orch: &Orchestrator, fence: &Fence) -> Result<usize, OrchestratorError> {
    let store = orch.store();
    let triggers: Vec<Trigger> = store.trigger_list().await?;
    // Nothing to evaluate: no read, no write (an idle leader looks every tick). The first
    // trigger made starts the cursors at the heads (`trigger_insert` in the store).
    if triggers.is_empty() {
        return Ok(0);
    }
    let mut watched = BTreeSet::new();
    for t in &triggers {
        watched_tasks(&t.on, &mut watched);
    }
    let tasks: Vec<String> = watched.into_iter().collect();
    let settle = settle_ms(orch);
    let cursors = store.trigger_cursors().await?;
    let history_at = cursors.get(HISTORY).copied().unwrap_or(0);
    let events_at = cursors.get(EVENTS).copied().unwrap_or(0);
    let (events, events_next) = store.events_after(events_at, settle, EVENT_BATCH).await?;
    let (changes, history_next) = store.status_changes_after(history_at, &tasks, settle, HISTORY_BATCH).await?;
    let now = store.now().await?;
    let facts = Facts { events: &events, changes: &changes, now };

    let mut states = Vec::new();
    let mut runs = Vec::new();
    let mut calls = Vec::new();
    for t in &triggers {
        let (fires, state) = evaluate(t, &facts);
        for fire in fires {
            let key = format!("trigger:{}:{}", t.id, fire.run_key);
            calls.push(CallRequest { idempotency_key: Some(key), ..CallRequest::new(t.task.clone(), fire.args) });
            runs.push(TriggerRun { trigger_id: t.id.clone(), run_key: fire.run_key, invocation_id: None, at: now });
        }
        if state != t.state {
            states.push((t.id.clone(), state));
        }
    }
    for (run, id) in runs.iter_mut().zip(route_all(orch, calls).await) {
        run.invocation_id = id;
    }
    let mut moved = Vec::new();
    if history_next != history_at {
        moved.push((HISTORY, history_next));
    }
    if events_next != events_at {
        moved.push((EVENTS, events_next));
    }
    store.trigger_evaluation_save(fence, &states, &runs, &moved).await?;
    Ok(runs.len())
}

/// Routes the firings in one group (one transaction); if that fails (a task removed since the
/// trigger was made, say) each is routed alone so the others still fire. The invocation id of
/// each, or `None` for a refused one (logged).
async fn route_all(orch: &Orchestrator, calls: Vec<CallRequest>) -> Vec<Option<String>> {
    if calls.is_empty() {
        return Vec::new();
    }
    if let Ok(routed) = orch.route(calls.clone()).await {
        return routed.into_iter().map(|r| Some(r.invocation.id)).collect();
    }
    let mut ids = Vec::with_capacity(calls.len());
    for call in calls {
        let (task, key) = (call.task.clone(), call.idempotency_key.clone());
        match orch.route(vec![call]).await {
            Ok(mut routed) => ids.push(routed.pop().map(|r| r.invocation.id)),
            Err(e) => {
                tracing::warn!(task = %task, run = ?key, error = %e, "a trigger fired but its call was refused");
                ids.push(None);
            }
        }
    }
    ids
}
