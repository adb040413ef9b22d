//! Triggers (pynenc): their conditions and argument sources, stored triggers and their runs,
//! posted events, and the status changes trigger evaluation reads.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ErrorKind, InvocationStatus, Millis, TaskFailure};

/// When a trigger fires (`"on"` of `POST /v1/triggers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerCondition {
    /// A 5-field cron expression (minute hour day-of-month month day-of-week), UTC.
    Cron(String),
    /// An invocation of `task` entered one of `statuses`.
    Status(StatusCondition),
    /// An invocation of `task` succeeded (with a result equal to `equals`, when given).
    Result(ResultCondition),
    /// An invocation of `task` failed (with one of `kinds`, when given).
    Failure(FailureCondition),
    /// An event of this code was posted (`POST /v1/events`).
    Event(String),
    /// Any of the conditions.
    #[schema(no_recursion)]
    Any(Vec<TriggerCondition>),
    /// All of the conditions (each seen at least once since the last firing).
    #[schema(no_recursion)]
    All(Vec<TriggerCondition>),
}

/// See [`TriggerCondition::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusCondition {
    /// Task watched.
    pub task: String,
    /// Statuses that fire.
    pub statuses: Vec<InvocationStatus>,
}

/// See [`TriggerCondition::Result`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultCondition {
    /// Task watched.
    pub task: String,
    /// Fire only for this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
}

/// See [`TriggerCondition::Failure`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureCondition {
    /// Task watched.
    pub task: String,
    /// Fire only for these error kinds (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<ErrorKind>,
}

/// Where a trigger's call takes its arguments from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArgsFrom {
    /// The trigger's own `args` (default `{}`).
    #[default]
    Static,
    /// The result of the invocation that fired it.
    Result,
    /// The payload of the event that fired it.
    Event,
    /// `{"invocation","task","status","result","error"}` of the invocation that fired it.
    Status,
}

impl ArgsFrom {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Result => "result",
            Self::Event => "event",
            Self::Status => "status",
        }
    }
}

impl FromStr for ArgsFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "static" => Ok(Self::Static),
            "result" => Ok(Self::Result),
            "event" => Ok(Self::Event),
            "status" => Ok(Self::Status),
            other => Err(format!("unknown args_from `{other}`")),
        }
    }
}

/// A stored trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trigger {
    /// Trigger id.
    pub id: String,
    /// The task it calls.
    pub task: String,
    /// Static arguments.
    pub args: Option<serde_json::Value>,
    /// Where the arguments come from.
    pub args_from: ArgsFrom,
    /// When it fires.
    pub on: TriggerCondition,
    /// What an `all` composite has seen so far, and the cron position (evaluation state).
    pub state: serde_json::Value,
    /// Creation time.
    pub created_at: Millis,
}

/// One firing of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TriggerRun {
    /// The trigger.
    pub trigger_id: String,
    /// What fired it (`cron:<minute>`, `event:<seq>`, `history:<seq>`); unique per trigger.
    pub run_key: String,
    /// The invocation it routed.
    pub invocation_id: Option<String>,
    /// When.
    pub at: Millis,
}

/// A posted event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number (order of arrival).
    pub seq: i64,
    /// Event code.
    pub code: String,
    /// Payload.
    pub payload: serde_json::Value,
    /// Arrival (database clock).
    pub at: Millis,
}

/// A status change of an invocation, as trigger evaluation reads it from the history.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// History sequence number.
    pub seq: i64,
    /// Invocation id.
    pub invocation: String,
    /// Its task.
    pub task: String,
    /// The status it entered.
    pub status: InvocationStatus,
    /// Its result now (for final successes).
    pub result: Option<serde_json::Value>,
    /// Its error now.
    pub error: Option<TaskFailure>,
    /// When it entered the status (database clock).
    pub at: Millis,
}
