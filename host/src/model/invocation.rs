//! Invocations: one routed call, its errors and history, ownership, the compare-and-swap
//! [`Transition`] with its named constructors, the claimed form a worker runs, and the list filter.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{InvocationStatus, Millis, TaskInstance};

/// The kind of a failure, as stored and shown in the API (lower snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The attempt was lost with its node (the node died, restarted or stopped reporting):
    /// an attempt's instance when it is taken back, and the invocation's when the lost
    /// attempt was its last (`max_attempts` reached).
    Lost,
}

impl ErrorKind {
    /// Whether another attempt may help.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Retryable | Self::Other | Self::Timeout | Self::MemoryLimit | Self::Trap | Self::Host | Self::Lost
        )
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// While it waits to be claimed: the earliest time it may be (database clock), when that
    /// is later than it entered its status: a delayed or scheduled call (`options.delay_ms`,
    /// `options.not_before`), or a retry's backoff. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_before: Option<Millis>,
    /// The W3C trace context its attempts' spans are children of: what routed it (the
    /// request's `traceparent`, the routing span, or the calling attempt). Absent when
    /// nobody traces it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub traceparent: Option<String>,
    /// 0-9: among runnable invocations a node claims higher priorities first, oldest first
    /// within one (a call waiting longer than the aging time ranks as 9).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// The version of its task's component it is bound to: the one current when it was
    /// first claimed. Its retries, and its re-run after a crash, run that version until it
    /// finishes. Absent until its first claim.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub component_version: Option<u64>,
}

/// Why a runnable invocation is not claimed (`GET /v1/invocations/{id}`, field `waiting`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Waiting {
    /// What holds it back: `running_concurrency` (another invocation owns its running scope).
    pub reason: String,
    /// The task's running concurrency (`task`, `arguments`, `keys`).
    pub policy: super::Concurrency,
    /// The invocation that holds the scope.
    pub held_by: String,
    /// When a claim first held it back (database clock); `None` until one has.
    pub since: Option<Millis>,
}

impl Waiting {
    /// Held back by running concurrency: `held_by` owns its scope under `policy`.
    pub fn running_concurrency(policy: super::Concurrency, held_by: String, since: Option<Millis>) -> Self {
        Self { reason: "running_concurrency".into(), policy, held_by, since }
    }
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
    /// A delayed call: claimed no earlier than this many ms after it is stored (database
    /// clock).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// A scheduled call: claimed no earlier than this time (ms since the Unix epoch, compared
    /// with the database clock). Wins over `delay_ms`.
    #[serde(default)]
    pub not_before: Option<Millis>,
    /// The W3C trace context its attempts join (see [`Invocation::traceparent`]).
    #[serde(default)]
    pub trace_parent: Option<String>,
    /// 0-9, higher claimed first.
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_priority() -> u8 {
    super::task::DEFAULT_PRIORITY
}

/// One row of an invocation's status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The change hands back a claim known not to have started (the leader's `max_pending`
    /// recovery of a live node's claim, a node's queue at shutdown): the invocation's
    /// `unstarted` count grows by one, so the claim does not count toward `max_attempts`.
    #[serde(default)]
    pub unstarted: bool,
    /// The record of the attempt this change ends, written in the same transaction when the
    /// change applies.
    #[serde(skip)]
    pub instance: Option<Box<TaskInstance>>,
}

/// Named constructors, one per kind of change (River's `JobSetStateCompleted`,
/// `JobSetStateErrorRetryable`, … are the model): the callers say what happens, these say
/// which statuses that passes through.
impl Transition {
    /// The status the invocation ends in.
    pub fn to(&self) -> InvocationStatus {
        self.path.last().copied().unwrap_or(self.from)
    }

    /// A change made by the owner of an attempt while it runs (or hands it back): from
    /// `from`, entering `path` in order.
    pub fn owned(id: &str, owner: &Owner, from: InvocationStatus, path: &[InvocationStatus], node: &str) -> Self {
        Self {
            id: id.to_string(),
            from,
            owner: Some(owner.clone()),
            path: path.to_vec(),
            result: None,
            error: None,
            node: node.to_string(),
            delay_ms: 0,
            unstarted: false,
            instance: None,
        }
    }

    /// The start of an attempt's end, by its owner: from where the invocation is now
    /// (`pending` if `running` was never written, which the end then passes through). Finish
    /// it with one of [`succeeded`](Self::succeeded), [`retrying`](Self::retrying),
    /// [`failed`](Self::failed), [`cancelled`](Self::cancelled) or
    /// [`handed_back`](Self::handed_back).
    pub fn attempt_end(id: &str, owner: &Owner, from: InvocationStatus, node: &str) -> Self {
        let through: &[InvocationStatus] =
            if from == InvocationStatus::Pending { &[InvocationStatus::Running] } else { &[] };
        Self::owned(id, owner, from, through, node)
    }

    /// The attempt returned `result`.
    pub fn succeeded(mut self, result: String) -> Self {
        self.path.push(InvocationStatus::Success);
        self.result = Some(result);
        self
    }

    /// The attempt failed and another one may be claimed after `delay_ms`.
    pub fn retrying(mut self, error: TaskFailure, delay_ms: u64) -> Self {
        self.path.push(InvocationStatus::Retry);
        self.error = Some(error);
        self.delay_ms = delay_ms;
        self
    }

    /// The attempt failed for good.
    pub fn failed(mut self, error: TaskFailure) -> Self {
        self.path.push(InvocationStatus::Failed);
        self.error = Some(error);
        self
    }

    /// The attempt was interrupted by a cancel.
    pub fn cancelled(mut self, error: TaskFailure) -> Self {
        self.path.push(InvocationStatus::Cancelled);
        self.error = Some(error);
        self
    }

    /// The attempt was interrupted by its node's shutdown: the invocation goes back to be
    /// claimed again (`killed → rerouted`), which is not a failure.
    pub fn handed_back(mut self) -> Self {
        self.path.extend([InvocationStatus::Killed, InvocationStatus::Rerouted]);
        self
    }

    /// A user's cancel of an invocation that is in `from`, owned by `owner` if anyone.
    pub fn user_cancel(id: &str, from: InvocationStatus, owner: Option<Owner>, node: &str) -> Self {
        Self {
            id: id.to_string(),
            from,
            owner,
            path: vec![InvocationStatus::Cancelled],
            result: None,
            error: Some(TaskFailure::new(ErrorKind::Cancelled, "cancelled by a user")),
            node: node.to_string(),
            delay_ms: 0,
            unstarted: false,
            instance: None,
        }
    }

    /// The record of the attempt this change ends, written in the same transaction.
    pub fn with_instance(mut self, instance: Option<TaskInstance>) -> Self {
        self.instance = instance.map(Box::new);
        self
    }

    /// This change by an attempt's owner, written again from `now`, where the invocation is
    /// when `now` lies behind `from` on the attempt's own walk (`pending → running → paused →
    /// resumed → running …`): a crash of the database lost the attempt's last relaxed writes.
    /// The lost steps lead the path, so the history tells them. `None` when `now` is not
    /// behind `from` on that walk (or the change is not an owner's): then the refusal stands.
    pub fn rebased(&self, now: InvocationStatus) -> Option<Self> {
        use InvocationStatus::{Paused, Pending, Resumed, Running};
        self.owner.as_ref()?;
        let step = |s| match s {
            Pending | Resumed => Some(Running),
            Running => Some(Paused),
            Paused => Some(Resumed),
            _ => None,
        };
        let mut walk = Vec::new();
        let mut at = now;
        while at != self.from {
            // The walk is a cycle after `pending`: once round and `from` is not on it.
            if walk.len() == 4 {
                return None;
            }
            at = step(at)?;
            walk.push(at);
        }
        if walk.is_empty() {
            return None;
        }
        walk.extend_from_slice(&self.path);
        Some(Self { from: now, path: walk, ..self.clone() })
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
    /// Attempt number (1-based), also the ownership epoch: every claim counts.
    pub attempt: u32,
    /// How many earlier claims were handed back before they started; they do not count
    /// toward `max_attempts` ([`Claimed::started`]).
    pub unstarted: u32,
    /// Calling invocation.
    pub parent: Option<String>,
    /// The workflow that routed it.
    pub workflow: Option<String>,
    /// Its own attempt limit; `None`: the task's.
    pub max_attempts: Option<u32>,
    /// The W3C trace context the attempt's spans join (see [`Invocation::traceparent`]).
    pub trace_parent: Option<String>,
    /// Its priority (0-9): the calls it makes inherit it.
    pub priority: u8,
    /// The version of the task's component it runs (bound at its first claim); `None` only
    /// for a row claimed before versions existed.
    pub component_version: Option<u64>,
}

impl Claimed {
    /// This attempt's place in the attempt budget: its number, less the claims before it
    /// that never started (a call that waited in a busy node's queue past `max_pending`).
    pub fn started(&self) -> u32 {
        self.attempt.saturating_sub(self.unstarted)
    }
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

#[cfg(test)]
impl NewInvocation {
    /// Call `n` of `task`, for tests: ids sort in the order of `n`, like UUIDv7s created one
    /// after another; arguments `{"n":n}`.
    pub(crate) fn sample(n: usize, task: &str) -> Self {
        Self {
            id: format!("0190a000-0000-7000-8000-{n:012}"),
            task: task.to_owned(),
            call_id: format!("call-{n}"),
            args: format!(r#"{{"n":{n}}}"#),
            parent: None,
            scope: None,
            idempotency_key: None,
            run_scope: None,
            workflow: None,
            max_attempts: None,
            token: None,
            delay_ms: None,
            not_before: None,
            trace_parent: None,
            priority: super::task::DEFAULT_PRIORITY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvocationStatus::*;

    fn owner() -> Owner {
        Owner { node: "n1".into(), attempt: 1 }
    }

    #[test]
    fn a_change_behind_on_the_attempts_walk_is_rebased_with_the_lost_steps() {
        let path = |t: Option<Transition>| t.map(|t| (t.from, t.path));
        let end = Transition::attempt_end("i", &owner(), Running, "n1").succeeded("1".into());
        assert_eq!(path(end.rebased(Pending)), Some((Pending, vec![Running, Success])));
        let resume = Transition::owned("i", &owner(), Paused, &[Resumed, Running], "n1");
        assert_eq!(path(resume.rebased(Running)), Some((Running, vec![Paused, Resumed, Running])));
        assert_eq!(path(resume.rebased(Pending)), Some((Pending, vec![Running, Paused, Resumed, Running])));
        let cancel =
            Transition::attempt_end("i", &owner(), Paused, "n1").cancelled(TaskFailure::new(ErrorKind::Cancelled, "x"));
        let rebased = cancel.rebased(Resumed).expect("behind");
        assert_eq!(
            (rebased.from, &rebased.path, rebased.error.is_some()),
            (Resumed, &vec![Running, Paused, Cancelled], true)
        );
        // Not behind: where it is already, ahead of it, off the walk, or not an owner's change.
        assert_eq!(path(end.rebased(Running)), None);
        assert_eq!(
            path(Transition::attempt_end("i", &owner(), Pending, "n1").succeeded("1".into()).rebased(Running)),
            None
        );
        assert_eq!(path(end.rebased(Rerouted)), None);
        assert_eq!(path(end.rebased(Success)), None);
        assert_eq!(path(Transition::user_cancel("i", Running, None, "n1").rebased(Pending)), None);
    }
}
