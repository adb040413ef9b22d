//! The orchestrator's side of triggers and events: checking a trigger before it is stored and
//! taking events in. Evaluation runs in the atomic services (`services/trigger_eval.rs`).

use serde::Deserialize;
use serde_json::Value;

use super::{OrchResult, Orchestrator, OrchestratorError, triggers};
use crate::model::identity;
use crate::model::{ArgsFrom, Event, Trigger, TriggerCondition};

/// A trigger as `POST /v1/triggers` takes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrigger {
    /// The task to call.
    pub task: String,
    /// Static arguments (default `{}`).
    #[serde(default)]
    pub args: Option<Value>,
    /// Where the arguments come from (default `static`).
    #[serde(default)]
    pub args_from: ArgsFrom,
    /// When it fires.
    pub on: TriggerCondition,
}

impl Orchestrator {
    /// Checks and stores a trigger: the task must exist, the condition must be well formed
    /// (cron parses, composites are not empty) and `args_from` must have something to take
    /// arguments from.
    pub async fn trigger_create(&self, new: NewTrigger) -> OrchResult<Trigger> {
        self.task(&new.task).await?;
        triggers::validate(&new.on, new.args_from).map_err(|e| OrchestratorError::BadRequest(e.0))?;
        if let Some(args) = &new.args
            && !args.is_object()
        {
            return Err(OrchestratorError::BadRequest("trigger `args` must be a JSON object".into()));
        }
        let trigger = Trigger {
            id: identity::new_invocation_id(),
            task: new.task,
            args: new.args,
            args_from: new.args_from,
            on: new.on,
            state: Value::Object(serde_json::Map::new()),
            created_at: 0,
        };
        Ok(self.store().trigger_insert(&trigger).await?)
    }

    /// Removes a trigger.
    pub async fn trigger_delete(&self, id: &str) -> OrchResult<()> {
        if self.store().trigger_delete(id).await? {
            Ok(())
        } else {
            Err(OrchestratorError::NotFound(format!("trigger `{id}`")))
        }
    }

    /// Takes an event in; triggers on its code fire at the next evaluation.
    pub async fn event_post(&self, code: &str, payload: &Value) -> OrchResult<Event> {
        if code.is_empty() || code.len() > 256 {
            return Err(OrchestratorError::BadRequest("event `code` must be 1-256 characters".into()));
        }
        Ok(self.store().event_insert(code, payload).await?)
    }
}
