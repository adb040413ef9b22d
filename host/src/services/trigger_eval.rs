//! The trigger service: reads what happened since its cursors (events, status changes of
//! watched tasks), evaluates every trigger (`orchestrator::triggers::evaluate`), routes each
//! firing with the idempotency key `trigger:<id>:<run key>` (the claim: a run routed twice
//! answers with the same invocation), records the runs and only then moves the cursors, so a
//! crash midway repeats the evaluation without firing anything twice.

use crate::model::{Trigger, TriggerRun};
use crate::orchestrator::triggers::{Facts, evaluate};
use crate::orchestrator::{CallRequest, Orchestrator, OrchestratorError};

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

/// Evaluates every trigger once; returns how many runs fired.
pub(super) async fn evaluate_all(orch: &Orchestrator) -> Result<usize, OrchestratorError> {
    let store = orch.store();
    let triggers: Vec<Trigger> = store.trigger_list().await?;
    let tasks = super::watched(&triggers);
    let settle = settle_ms(orch);
    let history_at = store.cursor_get(HISTORY).await?.unwrap_or(0);
    let events_at = store.cursor_get(EVENTS).await?.unwrap_or(0);
    let (events, events_next) = store.events_after(events_at, settle, EVENT_BATCH).await?;
    let (changes, history_next) = store.status_changes_after(history_at, &tasks, settle, HISTORY_BATCH).await?;
    let now = store.now().await?;
    let facts = Facts { events: &events, changes: &changes, now };
    let mut runs = Vec::new();
    for t in &triggers {
        let (fires, state) = evaluate(t, &facts);
        for fire in fires {
            let key = format!("trigger:{}:{}", t.id, fire.run_key);
            let call = CallRequest { task: t.task.clone(), args: fire.args, idempotency_key: Some(key) };
            let invocation_id = match orch.route(vec![call]).await {
                Ok(mut routed) => routed.pop().map(|r| r.invocation.id),
                Err(e) => {
                    tracing::warn!(trigger = %t.id, task = %t.task, error = %e, "a trigger fired but its call was refused");
                    None
                }
            };
            runs.push(TriggerRun { trigger_id: t.id.clone(), run_key: fire.run_key, invocation_id, at: now });
        }
        if state != t.state {
            store.trigger_save_state(&t.id, &state).await?;
        }
    }
    store.trigger_runs_record(&runs).await?;
    if history_next != history_at {
        store.cursor_set(HISTORY, history_next).await?;
    }
    if events_next != events_at {
        store.cursor_set(EVENTS, events_next).await?;
    }
    Ok(runs.len())
}
