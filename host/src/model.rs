//! Domain types shared by the store, the orchestrator, the runtime and the API: tasks,
//! invocations, their errors and history. Plain data with serde; no behaviour beyond parsing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::orchestrator::status::InvocationStatus;

/// Milliseconds since the Unix epoch, always read from the database clock.
pub type Millis = i64;

/// pynenc's concurrency modes, for registration (deduplication) and running (serialisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// No control.
    #[default]
    Disabled,
    /// One invocation of the task in scope.
    Task,
    /// One invocation per distinct argument set.
    Arguments,
    /// One invocation per distinct value of the key arguments.
    Keys,
}

impl Concurrency {
    /// The lower snake case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Task => "task",
            Self::Arguments => "arguments",
            Self::Keys => "keys",
        }
    }
}

impl FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "task" => Ok(Self::Task),
            "arguments" => Ok(Self::Arguments),
            "keys" => Ok(Self::Keys),
            other => Err(format!("unknown concurrency mode `{other}`")),
        }
    }
}

/// Most attempts a task or a workflow may give an invocation: beyond this a limit is a typo,
/// not a policy (a call failing that often should fail and be looked at).
pub const MAX_ATTEMPTS_LIMIT: u32 = 1_000;

/// Checks an attempt limit (`max_attempts` of a task or a workflow): 1 to
/// [`MAX_ATTEMPTS_LIMIT`]; the error says the range.
pub fn check_max_attempts(max_attempts: u32) -> Result<(), String> {
    if (1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        Ok(())
    } else {
        Err(format!("max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {max_attempts}"))
    }
}

/// Host defaults for options a component leaves out.
pub mod defaults {
    /// Attempts before an invocation fails for good.
    pub const MAX_ATTEMPTS: u32 = 3;
    /// Wall-clock limit of one attempt.
    pub const TIMEOUT_MS: u64 = 60_000;
    /// Linear-memory limit of one attempt.
    pub const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
}

/// A task as registered on the host: its component and its effective options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    /// Unique task name.
    pub name: String,
    /// The component (by name) that implements it.
    pub component: String,
    /// One line for humans.
    pub description: Option<String>,
    /// Attempts before the invocation fails for good.
    pub max_attempts: u32,
    /// Wall-clock limit of one attempt.
    pub timeout_ms: u64,
    /// Linear-memory limit of one attempt.
    pub memory_limit_bytes: u64,
    /// Deduplication applied at routing.
    pub registration_concurrency: Concurrency,
    /// Serialisation applied at claim and run time.
    pub running_concurrency: Concurrency,
    /// Argument names forming the key for `Concurrency::Keys`.
    pub key_arguments: Vec<String>,
    /// Ordered LIKE patterns over node names and labels.
    pub pins: Vec<String>,
    /// A paused task's invocations are not claimed.
    pub paused: bool,
    /// pynenc's concurrency policies (and later options), stored as one JSON column.
    #[serde(flatten)]
    pub policy: TaskPolicy,
}

/// Options of a task beyond limits and modes; every field has a default, so stored JSON
/// written before a field existed still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskPolicy {
    /// After an attempt ends in a resource error (timeout or memory limit), the next attempt
    /// runs with the limits grown by this many percent, rounded up, once per earlier resource
    /// error (Jobmon's resource-scaling retry). Default 50.
    pub resource_scale_percent: u32,
    /// Registration concurrency `keys`: a call with the same key arguments but different other
    /// arguments is refused (HTTP 409) instead of reusing the waiting invocation (pynenc's
    /// `on_diff_non_key_args_raise`). Default false: reuse.
    pub on_diff_non_key_args_raise: bool,
    /// Running concurrency: an invocation blocked by another one of its scope stays runnable
    /// and is claimed later (true, the default; pynenc's `reroute_on_concurrency_control`), or
    /// is dropped as `concurrency_controlled_final` (false).
    pub reroute_on_concurrency_control: bool,
    /// Running concurrency: how many invocations of one scope may run at once (default 1).
    /// With N > 1 each invocation is given one of N lanes by its id and one runs per lane, so
    /// never more than N run at once (a busy lane can hold a call back while another is free).
    pub running_concurrency_slots: u32,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        Self {
            resource_scale_percent: 50,
            on_diff_non_key_args_raise: false,
            reroute_on_concurrency_control: true,
            running_concurrency_slots: 1,
        }
    }
}

/// A change to a task's options (`PATCH /v1/tasks/{task}`); absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// New attempt limit.
    pub max_attempts: Option<u32>,
    /// New timeout.
    pub timeout_ms: Option<u64>,
    /// New memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// New registration concurrency.
    pub registration_concurrency: Option<Concurrency>,
    /// New running concurrency.
    pub running_concurrency: Option<Concurrency>,
    /// New key arguments.
    pub key_arguments: Option<Vec<String>>,
    /// New pins.
    pub pins: Option<Vec<String>>,
    /// Pause or unpause the task.
    pub paused: Option<bool>,
    /// See [`TaskPolicy::resource_scale_percent`].
    pub resource_scale_percent: Option<u32>,
    /// See [`TaskPolicy::on_diff_non_key_args_raise`].
    pub on_diff_non_key_args_raise: Option<bool>,
    /// See [`TaskPolicy::reroute_on_concurrency_control`].
    pub reroute_on_concurrency_control: Option<bool>,
    /// See [`TaskPolicy::running_concurrency_slots`] (at least 1).
    pub running_concurrency_slots: Option<u32>,
}

impl TaskDef {
    /// Applies a patch in place.
    pub fn apply(&mut self, p: &TaskPatch) {
        if let Some(v) = p.max_attempts {
            self.max_attempts = v;
        }
        if let Some(v) = p.timeout_ms {
            self.timeout_ms = v;
        }
        if let Some(v) = p.memory_limit_bytes {
            self.memory_limit_bytes = v;
        }
        if let Some(v) = p.registration_concurrency {
            self.registration_concurrency = v;
        }
        if let Some(v) = p.running_concurrency {
            self.running_concurrency = v;
        }
        if let Some(v) = &p.key_arguments {
            self.key_arguments.clone_from(v);
        }
        if let Some(v) = &p.pins {
            self.pins.clone_from(v);
        }
        if let Some(v) = p.paused {
            self.paused = v;
        }
        if let Some(v) = p.resource_scale_percent {
            self.policy.resource_scale_percent = v.min(1_000);
        }
        if let Some(v) = p.on_diff_non_key_args_raise {
            self.policy.on_diff_non_key_args_raise = v;
        }
        if let Some(v) = p.reroute_on_concurrency_control {
            self.policy.reroute_on_concurrency_control = v;
        }
        if let Some(v) = p.running_concurrency_slots {
            self.policy.running_concurrency_slots = v.max(1);
        }
    }
}

/// A stored component: its bytes live in the database so every node can load it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Name given at upload (`?name=`).
    pub name: String,
    /// Hex SHA-256 of the component bytes; also the AOT cache key.
    pub digest: String,
    /// Size of the component in bytes.
    pub size_bytes: i64,
    /// Upload time.
    pub uploaded_at: Millis,
    /// The tasks it registered.
    pub tasks: Vec<String>,
}

/// The kind of a failure, as stored and shown in the API (lower snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Guest said it can never succeed.
    Fatal,
    /// Guest said try again.
    Retryable,
    /// Guest rejected its arguments.
    InvalidArgs,
    /// Guest returned `other`.
    Other,
    /// The attempt exceeded its timeout.
    Timeout,
    /// The attempt exceeded its memory limit.
    MemoryLimit,
    /// The guest trapped (panic, unreachable, bad memory access).
    Trap,
    /// The invocation was cancelled while running.
    Cancelled,
    /// The host could not run the attempt (component missing, instantiation failed, …).
    Host,
    /// The result was not valid JSON or exceeded the size cap.
    BadResult,
}

impl ErrorKind {
    /// Whether another attempt may help.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Retryable | Self::Other | Self::Timeout | Self::MemoryLimit | Self::Trap | Self::Host)
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Classification that decides retries.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl TaskFailure {
    /// Builds a failure.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", serde_json::to_value(self.kind).unwrap_or_default(), self.message)
    }
}

/// One routed call of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// Unique id (UUIDv7, so ids sort by creation time).
    pub id: String,
    /// Task name.
    pub task: String,
    /// Call identity: hash of task + canonical JSON of the args.
    pub call_id: String,
    /// Arguments (JSON).
    pub args: serde_json::Value,
    /// Current status.
    pub status: InvocationStatus,
    /// Result (JSON) once successful.
    pub result: Option<serde_json::Value>,
    /// Last error, if any attempt failed.
    pub error: Option<TaskFailure>,
    /// Attempts started so far; also the ownership epoch of the current attempt.
    pub attempts: u32,
    /// Node that owns the invocation while in an owned status.
    pub owner: Option<String>,
    /// Invocation that called this one.
    pub parent: Option<String>,
    /// Registration scope (calls of one scope share a `registered` invocation).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
    /// The client's idempotency key, if routed with one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idempotency_key: Option<String>,
    /// The workflow that routed it, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workflow: Option<String>,
    /// Its own attempt limit (a workflow's `max_attempts`); `None`: the task's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_attempts: Option<u32>,
    /// Creation time.
    pub created_at: Millis,
    /// Time of the last status change.
    pub updated_at: Millis,
}

/// A call to insert as a new invocation (status `registered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewInvocation {
    /// Fresh id.
    pub id: String,
    /// Task name (must exist).
    pub task: String,
    /// Call identity.
    pub call_id: String,
    /// Canonical JSON text of the arguments.
    pub args: String,
    /// Calling invocation, if any.
    pub parent: Option<String>,
    /// Registration scope; `None` when the task does not deduplicate.
    #[serde(default)]
    pub scope: Option<String>,
    /// The client's idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Running scope: at most one invocation of a scope is owned at a time; `None` when the
    /// task does not serialise.
    #[serde(default)]
    pub run_scope: Option<String>,
    /// The workflow routing it, if any.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Its own attempt limit; `None`: the task's.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Its token on the ring (`cluster::ring::token_of` of its id); only the token's owner
    /// claims it. `None`: any node may.
    #[serde(default)]
    pub token: Option<u32>,
}

/// One row of an invocation's status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The status entered.
    pub status: InvocationStatus,
    /// The node that made the change, if any.
    pub node: Option<String>,
    /// Attempt number at the time.
    pub attempt: u32,
    /// When (database clock).
    pub at: Millis,
}

/// Ownership of an invocation: the node and the attempt epoch it claimed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Node name.
    pub node: String,
    /// Attempt epoch (the `attempts` counter at claim).
    pub attempt: u32,
}

/// A compare-and-swap status change of one invocation, with the statuses it passes through.
///
/// `path` lists every status entered in order (its last element is the new status), so that a
/// tick can fold `pending → running → success` into one update with three history rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Invocation id.
    pub id: String,
    /// Status the row must be in for the change to apply.
    pub from: InvocationStatus,
    /// Owner the row must have (owned statuses); `None` skips the check (recovery overrides).
    pub owner: Option<Owner>,
    /// Statuses entered, in order; non-empty.
    pub path: Vec<InvocationStatus>,
    /// Result to store (success).
    pub result: Option<String>,
    /// Error to store (failed, retry).
    pub error: Option<TaskFailure>,
    /// Node making the change (history).
    pub node: String,
    /// When entering a runnable status (`retry`): how long before it may be claimed again.
    #[serde(default)]
    pub delay_ms: u64,
    /// The record of the attempt this change ends, written in the same transaction when the
    /// change applies.
    #[serde(skip)]
    pub instance: Option<Box<TaskInstance>>,
}

impl Transition {
    /// The status the invocation ends in.
    pub fn to(&self) -> InvocationStatus {
        self.path.last().copied().unwrap_or(self.from)
    }
}

/// An invocation claimed for running: everything a worker needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// Invocation id.
    pub id: String,
    /// Task name.
    pub task: String,
    /// Arguments (JSON text).
    pub args: String,
    /// Attempt number (1-based), also the ownership epoch.
    pub attempt: u32,
    /// Calling invocation.
    pub parent: Option<String>,
    /// The workflow that routed it.
    pub workflow: Option<String>,
    /// Its own attempt limit; `None`: the task's.
    pub max_attempts: Option<u32>,
}

/// Filter and page of `GET /v1/invocations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationFilter {
    /// Only this task.
    pub task: Option<String>,
    /// Only this status.
    pub status: Option<InvocationStatus>,
    /// Page size.
    pub limit: u32,
    /// Return invocations with ids strictly below this one (newest first).
    pub cursor: Option<String>,
}

/// One attempt of an invocation as it ended (Jobmon's task instance): where it ran, how it
/// ended, what it used and the tail of what it printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInstance {
    /// The invocation.
    pub invocation_id: String,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Node that ran it.
    pub node: String,
    /// Jobmon status (`instances::InstanceStatus`): `queued`, `running`, `triaging`, … while
    /// live; `done`, `error`, `error_fatal`, `resource_error`, `unknown_error`, `kill_self` at the end.
    pub status: String,
    /// Why it failed, if it did.
    pub error: Option<TaskFailure>,
    /// Wall-clock duration in ms (waits on children included).
    pub wall_ms: u64,
    /// Most linear memory held at once.
    pub peak_memory_bytes: u64,
    /// Tail of stdout (at most 10,000 bytes).
    pub stdout: String,
    /// Tail of stderr (at most 10,000 bytes).
    pub stderr: String,
    /// The guest's log lines (JSON array of `{level, message, at_ms}`).
    pub logs: serde_json::Value,
    /// Whether output was cut to the cap.
    pub output_truncated: bool,
    /// When it ended (database clock; ignored when recording; 0 while live).
    pub ended_at: Millis,
    /// When it was created (claimed), database clock (ignored when recording).
    #[serde(default)]
    pub started_at: Millis,
    /// While live: the time its node must report by (database clock); `None` once final.
    #[serde(default)]
    pub report_by: Option<Millis>,
    /// When recording a live status (`running`): how far past the database now `report_by`
    /// goes, in ms. `None` records a final status.
    #[serde(skip)]
    pub report_window_ms: Option<i64>,
}

impl TaskInstance {
    /// A final record without resource figures (an attempt that never ran its guest).
    pub fn ended(invocation_id: &str, attempt: u32, node: &str, status: &str, error: Option<TaskFailure>) -> Self {
        Self { error, report_window_ms: None, ..Self::live(invocation_id, attempt, node, status, 0) }
    }

    /// A live record: the attempt moves to `status` (e.g. `running`) and must report within
    /// `report_window_ms`.
    pub fn live(invocation_id: &str, attempt: u32, node: &str, status: &str, report_window_ms: i64) -> Self {
        Self {
            invocation_id: invocation_id.to_string(),
            attempt,
            node: node.to_string(),
            status: status.to_string(),
            error: None,
            wall_ms: 0,
            peak_memory_bytes: 0,
            stdout: String::new(),
            stderr: String::new(),
            logs: serde_json::Value::Array(Vec::new()),
            output_truncated: false,
            ended_at: 0,
            started_at: 0,
            report_by: None,
            report_window_ms: Some(report_window_ms),
        }
    }

    /// Jobmon's status for an attempt's outcome: fatal and invalid arguments never retry
    /// (`error_fatal`), limits are `resource_error`, an interrupted attempt `kill_self`.
    pub fn status_for(outcome: Option<ErrorKind>) -> &'static str {
        match outcome {
            None => "done",
            Some(ErrorKind::Fatal | ErrorKind::InvalidArgs) => "error_fatal",
            Some(ErrorKind::Timeout | ErrorKind::MemoryLimit) => "resource_error",
            Some(ErrorKind::Cancelled) => "kill_self",
            Some(_) => "error",
        }
    }
}

/// A node of the cluster as its membership row says (one row on a single-node daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique node name.
    pub name: String,
    /// Labels pins can match (`gpu`, `region=eu`).
    pub labels: Vec<String>,
    /// Attempts it runs at once.
    pub capacity: u32,
    /// First registration: seniority (the oldest live node leads); kept across restarts.
    pub joined_at: Millis,
    /// Start of the node's current life.
    pub started_at: Millis,
    /// Last heartbeat (database clock).
    pub heartbeat_at: Millis,
    /// Set when the node left cleanly.
    pub left_at: Option<Millis>,
}

impl NodeInfo {
    /// Live = not left and heartbeat within `timeout_ms` of `now`.
    pub fn is_live(&self, now: Millis, timeout_ms: i64) -> bool {
        self.left_at.is_none() && now - self.heartbeat_at <= timeout_ms
    }
}

/// The status of one execution of the atomic services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRunStatus {
    /// Running now (at most one cluster-wide: the storage gate).
    Running,
    /// Finished.
    Completed,
    /// Its node died or it ran past its deadline; the gate was taken from it.
    Abandoned,
    /// A node was in its slot but another execution held the gate.
    Blocked,
}

impl ServiceRunStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Abandoned => "abandoned",
            Self::Blocked => "blocked",
        }
    }
}

impl FromStr for ServiceRunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(Self::Running),
            "completed" => Ok(Self::Completed),
            "abandoned" => Ok(Self::Abandoned),
            "blocked" => Ok(Self::Blocked),
            other => Err(format!("unknown service run status `{other}`")),
        }
    }
}

/// One execution record of the atomic services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRun {
    /// Sequence number.
    pub id: i64,
    /// The node that ran (or was blocked): the leader.
    pub node: String,
    /// The lease epoch (leader term) it ran under; absent on records older than the lease.
    pub epoch: Option<i64>,
    /// What became of it.
    pub status: ServiceRunStatus,
    /// Start (database clock).
    pub started_at: Millis,
    /// End, once ended.
    pub ended_at: Option<Millis>,
    /// What it did (counts per service, errors).
    pub detail: serde_json::Value,
}

/// When a trigger fires (`"on"` of `POST /v1/triggers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    Any(Vec<TriggerCondition>),
    /// All of the conditions (each seen at least once since the last firing).
    All(Vec<TriggerCondition>),
}

/// See [`TriggerCondition::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCondition {
    /// Task watched.
    pub task: String,
    /// Statuses that fire.
    pub statuses: Vec<InvocationStatus>,
}

/// See [`TriggerCondition::Result`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultCondition {
    /// Task watched.
    pub task: String,
    /// Fire only for this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
}

/// See [`TriggerCondition::Failure`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureCondition {
    /// Task watched.
    pub task: String,
    /// Fire only for these error kinds (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<ErrorKind>,
}

/// Where a trigger's call takes its arguments from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The leader lease (JobSync's leader, fenced by an epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node holding it, if anyone ever did.
    pub holder: Option<String>,
    /// Bumped by every new term (a change of holder, or the same node in a new life).
    pub epoch: i64,
    /// When it lapses unless renewed (database clock).
    pub expires_at: Millis,
    /// The database now when read.
    pub now: Millis,
}

/// The token ring: who owns which of the `total_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRing {
    /// Bumped by every swap; 0 before the first assignment.
    pub version: i64,
    /// Tokens in the ring (0 before the first assignment).
    pub total_tokens: u32,
    /// Last swap (database clock).
    pub updated_at: Millis,
    /// Owner of each token by index (when asked for; `None`: unassigned).
    pub owners: Vec<Option<String>>,
}

/// One swap of the ring, as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAudit {
    /// The version it produced.
    pub version: i64,
    /// The leader that swapped it.
    pub leader: String,
    /// The leader's lease epoch.
    pub epoch: i64,
    /// Nodes owning tokens before.
    pub nodes_before: Vec<String>,
    /// Live nodes after.
    pub nodes_after: Vec<String>,
    /// Tokens that changed owner.
    pub moved: u32,
    /// Time to compute the new assignment, in µs.
    pub compute_us: i64,
    /// When (database clock).
    pub at: Millis,
}
