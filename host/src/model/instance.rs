//! Task instances (Jobmon): the status machine of one attempt as a declarative table, and
//! triage as a pure function (overdue instances and the time in, decisions out), so that both
//! are tested without a database or a clock. The store applies what triage decides as
//! compare-and-swaps; the services loop runs it.
//!
//! An instance is written `queued` by the claim that creates its attempt, `running` (through
//! `instantiated` and `launched`, in the same write) when the attempt has run for a moment, and
//! final with the attempt's outcome, always in the transaction that moves its invocation. While
//! it is live its node pushes `report_by` forward on every heartbeat tick, for all of them in
//! one statement; triage looks only at instances whose `report_by` has passed. Every write of
//! an instance is a compare-and-swap on [`InstanceStatus::may_write`] (the store matches each
//! row against [`InstanceStatus::writes_text`]); a write it forbids is untimely and ignored.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ErrorKind, Millis, TaskFailure};

macro_rules! instance_statuses {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, final: $final:literal, next: [$($next:ident),*];)*) => {
        /// The status of a task instance (Jobmon's). Each doc line says who moves it out.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum InstanceStatus {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl InstanceStatus {
            /// Every status, in table order.
            pub const ALL: &'static [InstanceStatus] = &[$(Self::$variant),*];

            /// The lower snake case name (API and database).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// Final statuses never change again (`report_by` is cleared).
            pub fn is_final(self) -> bool {
                match self { $(Self::$variant => $final,)* }
            }

            /// The statuses it may move to.
            pub fn next(self) -> &'static [InstanceStatus] {
                match self { $(Self::$variant => &[$(Self::$next),*],)* }
            }
        }

        impl FromStr for InstanceStatus {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(format!("unknown task instance status `{other}`")),
                }
            }
        }
    };
}

instance_statuses! {
    /// Claimed by a node, waiting there for a run slot. The node's heartbeat keeps it alive.
    Queued = "queued", final: false, next: [Instantiated, NoHeartbeat, KillSelf, Error, ErrorFatal];
    /// A slot is taken and the component is being instantiated (passed through on the way to
    /// `running`).
    Instantiated = "instantiated", final: false, next: [Launched, NoHeartbeat, KillSelf, Error, ErrorFatal];
    /// The guest's handler was called (passed through on the way to `running`).
    Launched = "launched", final: false, next: [Running, NoHeartbeat, KillSelf, Error, ErrorFatal, ResourceError];
    /// Running; its node reports for it by `report_by`. Recovery ends it `unknown_error` when
    /// its node died or restarted (as Jobmon's `running → unknown_error`).
    Running = "running", final: false, next: [Done, Error, ErrorFatal, ResourceError, KillSelf, Triaging, UnknownError];
    /// Overdue: triage found `report_by` passed. A heartbeat in time brings it back to
    /// `running`; still overdue at the next triage, it is `unknown_error`.
    Triaging = "triaging", final: false, next: [Running, UnknownError, Done, Error, ErrorFatal, ResourceError, KillSelf];
    /// Never reported after it was claimed or launched; becomes `error` at the next triage.
    NoHeartbeat = "no_heartbeat", final: false, next: [Error];
    /// The guest returned a result.
    Done = "done", final: true, next: [];
    /// A retryable failure (error or trap).
    Error = "error", final: true, next: [];
    /// A failure that is not retried (guest `fatal`, invalid arguments, a late outcome).
    ErrorFatal = "error_fatal", final: true, next: [];
    /// Timeout or memory limit: the retry runs with scaled limits.
    ResourceError = "resource_error", final: true, next: [];
    /// Its node stopped reporting and triage gave up on it; the invocation was rerouted.
    UnknownError = "unknown_error", final: true, next: [];
    /// A kill was requested (a user's cancel sent through another node, delivered to the
    /// guest by its node's next heartbeat); the attempt's real end follows: `error_fatal` when
    /// the guest was interrupted, or whatever it ended with first; `unknown_error` if its node
    /// dies meanwhile (recovery, or triage when overdue). Transient, as in Jobmon.
    KillSelf = "kill_self", final: false, next: [ErrorFatal, Done, Error, ResourceError, UnknownError];
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl InstanceStatus {
    /// Whether `path` is a walk of the table starting at `self`.
    pub fn walk_ok(self, path: &[InstanceStatus]) -> bool {
        let mut at = self;
        for &next in path {
            if !at.next().contains(&next) {
                return false;
            }
            at = next;
        }
        true
    }

    /// The walk from `queued` to `running` (one write: the statuses between are passed through).
    pub const TO_RUNNING: &'static [InstanceStatus] = &[Self::Instantiated, Self::Launched, Self::Running];

    /// Whether one write may move an instance from `self` to `to`: an edge of the table, or a
    /// walk through the statuses a write passes through on the way to `running` (`queued →
    /// instantiated → launched → running`), e.g. `queued → running` or `queued → done` for an
    /// attempt that ended before `running` was written. Every instance write is a
    /// compare-and-swap on this rule; a write it forbids is untimely and ignored.
    pub fn may_write(self, to: InstanceStatus) -> bool {
        if self.next().contains(&to) {
            return true;
        }
        // Passing through only leads where the attempt's own node writes: `running` and the
        // attempt's ends (never triage's or recovery's statuses).
        let by_its_node = matches!(
            to,
            Self::Running | Self::Done | Self::Error | Self::ErrorFatal | Self::ResourceError | Self::KillSelf
        );
        if !by_its_node {
            return false;
        }
        let mut at = self;
        loop {
            at = match at {
                Self::Queued => Self::Instantiated,
                Self::Instantiated => Self::Launched,
                Self::Launched => Self::Running,
                _ => return false,
            };
            if at.next().contains(&to) || at == to {
                return true;
            }
        }
    }

    /// Every `(from, to)` pair [`may_write`](Self::may_write) allows, as the text the store
    /// matches a write against: `,from>to,` for each pair, concatenated.
    pub fn writes_text() -> String {
        let mut out = String::from(",");
        for from in Self::ALL {
            for to in Self::ALL {
                if from.may_write(*to) {
                    out.push_str(&format!("{from}>{to},"));
                }
            }
        }
        out
    }
}

/// Settings of the host's heartbeats on behalf of guests (Jobmon's `report_by` buffer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportWindow {
    /// The node's heartbeat interval in ms.
    pub interval_ms: u64,
    /// How many intervals a live instance may go without a heartbeat (Jobmon's
    /// `heartbeat_report_by_buffer`, default 3.1).
    pub buffer: f64,
}

impl ReportWindow {
    /// `interval × buffer` in ms: how far `report_by` is pushed past the database now.
    pub fn ms(self) -> i64 {
        let ms = (self.interval_ms as f64 * self.buffer.max(1.0)).ceil();
        if ms.is_finite() && ms < i64::MAX as f64 { ms as i64 } else { i64::MAX / 4 }
    }
}

/// An overdue live instance as triage sees it, with the invocation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// The invocation.
    pub invocation_id: String,
    /// The attempt.
    pub attempt: u32,
    /// Node that runs it.
    pub node: String,
    /// Its status.
    pub status: InstanceStatus,
    /// Its deadline as read (the compare-and-swap checks it is unchanged).
    pub report_by: Millis,
    /// When it was claimed (database clock): the age guard of unstarted instances.
    pub started_at: Millis,
    /// What its node last reported of it.
    pub last: LastReport,
}

/// What a node knows of an attempt it holds, sent with every heartbeat of the attempt's
/// instance (in the heartbeat's one statement) and kept on the instance row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeKnowledge {
    /// The most linear memory the guest held so far (0 before it starts).
    pub peak_memory_bytes: u64,
    /// The attempt's memory limit (0 before it starts).
    pub memory_limit_bytes: u64,
    /// Time left before the attempt's timeout, in ms; `None` before it starts and while it
    /// waits on other invocations (its clock is stopped then).
    pub timeout_left_ms: Option<u64>,
    /// How the attempt ended, once it has and while its outcome is not recorded yet.
    pub exit: Option<AttemptExit>,
}

/// How an attempt ended on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptExit {
    /// The instance status its outcome records (`TaskInstance::status_for`).
    pub status: InstanceStatus,
    /// Why it failed, if it did.
    pub error: Option<TaskFailure>,
}

/// One attempt a node holds, as its heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAttempt {
    /// The invocation.
    pub invocation_id: String,
    /// The attempt.
    pub attempt: u32,
    /// What the node knows of it.
    pub known: NodeKnowledge,
}

impl HeldAttempt {
    /// An attempt the node holds and knows nothing more of (claimed, not started).
    pub fn new(invocation_id: impl Into<String>, attempt: u32) -> Self {
        Self { invocation_id: invocation_id.into(), attempt, known: NodeKnowledge::default() }
    }
}

/// What the store kept of a node's last report on an attempt ([`NodeKnowledge`] as of its
/// last heartbeat, with the time left turned into a deadline on the database clock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastReport {
    /// The most memory the guest held, as last reported.
    pub peak_memory_bytes: u64,
    /// The attempt's memory limit (0: never reported).
    pub memory_limit_bytes: u64,
    /// When the attempt's time would run out (database clock), if its clock was running at
    /// the last report.
    pub timeout_at: Option<Millis>,
    /// How it ended on its node, if it had and the outcome was not recorded.
    pub exit: Option<AttemptExit>,
}

/// From this share of its memory limit (in percent), an attempt whose node went silent is
/// taken to have been killed for memory: the guest's own excess traps inside the sandbox, so a
/// node lost while its guest is this close to the limit was most likely killed by the system
/// for the memory the guest took (Jobmon's resource error of an OOM-killed job).
pub const NEAR_MEMORY_LIMIT_PERCENT: u64 = 90;

/// What a silent node's last report says about an attempt it lost: the instance's final
/// status and why, or `None` when the report says nothing (then it is `unknown_error`, lost).
///
/// - it had ended on its node (outcome not recorded): that end, except a success, whose result
///   is gone (`unknown_error`, said so);
/// - its time had run out by `now`: `resource_error` (timeout), as the node would have ended it;
/// - its memory was within [`NEAR_MEMORY_LIMIT_PERCENT`] of its limit: `resource_error`
///   (memory limit).
///
/// A resource error grows the next attempt's limits by the task's resource scale, as a
/// recorded one does.
pub fn verdict(o: &Overdue, now: Millis) -> Option<(InstanceStatus, TaskFailure)> {
    let last = &o.last;
    if let Some(exit) = &last.exit {
        let why = |what: &str| format!("node `{}` stopped reporting after the attempt {what}", o.node);
        return Some(match (&exit.error, exit.status) {
            (Some(e), status) if status != InstanceStatus::Done => (
                status,
                TaskFailure::new(e.kind, format!("{}: {}", why("ended; its outcome was never recorded"), e.message)),
            ),
            _ => (
                InstanceStatus::UnknownError,
                TaskFailure::new(ErrorKind::Lost, why("succeeded, before its result was recorded; it runs again")),
            ),
        });
    }
    if last.timeout_at.is_some_and(|at| at <= now) {
        return Some((
            InstanceStatus::ResourceError,
            TaskFailure::new(
                ErrorKind::Timeout,
                format!(
                    "node `{}` stopped reporting, and the attempt's time ran out meanwhile ({} ms ago): \
                     it would have been stopped for its timeout",
                    o.node,
                    now.saturating_sub(last.timeout_at.unwrap_or(now))
                ),
            ),
        ));
    }
    let limit = last.memory_limit_bytes;
    if limit > 0 && last.peak_memory_bytes.saturating_mul(100) >= limit.saturating_mul(NEAR_MEMORY_LIMIT_PERCENT) {
        return Some((
            InstanceStatus::ResourceError,
            TaskFailure::new(
                ErrorKind::MemoryLimit,
                format!(
                    "node `{}` stopped reporting while the guest held {} of its {} bytes of memory ({}%): \
                     most likely killed for the memory it took",
                    o.node,
                    last.peak_memory_bytes,
                    limit,
                    last.peak_memory_bytes.saturating_mul(100) / limit
                ),
            ),
        ));
    }
    None
}

/// What triage does with one overdue instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triage {
    /// The instance, as read.
    pub instance: Overdue,
    /// Its next status.
    pub to: InstanceStatus,
    /// Its next `report_by` (`None` when final).
    pub report_by: Option<Millis>,
    /// Whether its invocation is taken back from the node and rerouted (when the node still
    /// owns it with this attempt).
    pub reroute: bool,
    /// Why the attempt ended, when its node's last report tells ([`verdict`]); `None` for an
    /// attempt lost for unknown reasons (or not ended).
    pub cause: Option<TaskFailure>,
}

impl Triage {
    /// Whether the invocation fails at once instead of going back to the queue: its attempt
    /// ended with a fatal error its node could not record.
    pub fn fails(&self) -> bool {
        self.reroute && self.to == InstanceStatus::ErrorFatal
    }
}

/// Triage (Jobmon's): what happens to each instance whose `report_by` is before `now`.
///
/// - `running` → `triaging`, with one more window to report (a heartbeat in time brings it
///   back to `running`);
/// - `triaging`, still overdue → `unknown_error`, and its invocation is rerouted; unless its
///   node's last report tells why it was lost ([`verdict`]): then the status that says so
///   (`resource_error` for time or memory, the unrecorded end's own), rerouted all the same,
///   except a fatal end, whose invocation fails;
/// - `queued | instantiated | launched` (claimed or launched, never reported) → `no_heartbeat`,
///   and its invocation is rerouted, once the claim is at least two windows old (the age
///   guard: a claim gets a second window, as a running instance does through `triaging`);
///   `no_heartbeat` → `error` at the next pass;
/// - `kill_self` (a kill was requested), still overdue → `unknown_error`.
///
/// Instances not yet overdue are left alone.
pub fn triage(overdue: &[Overdue], now: Millis, window_ms: i64) -> Vec<Triage> {
    overdue
        .iter()
        .filter(|o| o.report_by < now)
        .filter_map(|o| {
            let mut cause = None;
            let (to, report_by, reroute) = match o.status {
                InstanceStatus::Running => (InstanceStatus::Triaging, Some(now.saturating_add(window_ms)), false),
                InstanceStatus::Triaging => match verdict(o, now) {
                    Some((to, why)) => {
                        cause = Some(why);
                        (to, None, true)
                    }
                    None => (InstanceStatus::UnknownError, None, true),
                },
                InstanceStatus::Queued | InstanceStatus::Instantiated | InstanceStatus::Launched => {
                    if now.saturating_sub(o.started_at) < window_ms.saturating_mul(2) {
                        return None;
                    }
                    (InstanceStatus::NoHeartbeat, Some(now), true)
                }
                InstanceStatus::NoHeartbeat => (InstanceStatus::Error, None, false),
                // A kill was requested and its node went silent: its invocation is final
                // already (cancelled), nothing to reroute.
                InstanceStatus::KillSelf => (InstanceStatus::UnknownError, None, false),
                _ => return None,
            };
            Some(Triage { instance: o.clone(), to, report_by, reroute, cause })
        })
        .collect()
}

/// The resource use of one attempt of a task, as `GET /v1/tasks/{task}/resources` sums it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptUsage {
    /// How the attempt ended (or where it is).
    pub status: InstanceStatus,
    /// Wall-clock duration in ms.
    pub wall_ms: i64,
    /// Most linear memory held at once.
    pub peak_memory_bytes: i64,
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
    pub status: InstanceStatus,
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
    /// The version of the task's component it ran (`GET /v1/components/{name}/versions`),
    /// recorded when it was claimed (ignored when recording).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub component_version: Option<u64>,
}

impl TaskInstance {
    /// A final record without resource figures (an attempt that never ran its guest).
    pub fn ended(
        invocation_id: &str,
        attempt: u32,
        node: &str,
        status: InstanceStatus,
        error: Option<TaskFailure>,
    ) -> Self {
        Self { error, report_window_ms: None, ..Self::live(invocation_id, attempt, node, status, 0) }
    }

    /// A live record: the attempt moves to `status` (e.g. `running`) and must report within
    /// `report_window_ms`.
    pub fn live(invocation_id: &str, attempt: u32, node: &str, status: InstanceStatus, report_window_ms: i64) -> Self {
        Self {
            invocation_id: invocation_id.to_string(),
            attempt,
            node: node.to_string(),
            status,
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
            component_version: None,
        }
    }

    /// Jobmon's status for an attempt's outcome: fatal and invalid arguments never retry
    /// (`error_fatal`), limits are `resource_error`; an interrupted attempt (cancel, shutdown)
    /// ends `error_fatal` with error kind `cancelled`, as Jobmon's `kill_self → error_fatal`
    /// (`kill_self` itself only says a kill was requested).
    pub fn status_for(outcome: Option<ErrorKind>) -> InstanceStatus {
        match outcome {
            None => InstanceStatus::Done,
            Some(ErrorKind::Fatal | ErrorKind::InvalidArgs | ErrorKind::Cancelled) => InstanceStatus::ErrorFatal,
            Some(ErrorKind::Timeout | ErrorKind::MemoryLimit) => InstanceStatus::ResourceError,
            Some(_) => InstanceStatus::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overdue(status: InstanceStatus, report_by: Millis) -> Overdue {
        Overdue {
            invocation_id: "i".into(),
            attempt: 1,
            node: "n".into(),
            status,
            report_by,
            started_at: 0,
            last: LastReport::default(),
        }
    }

    #[test]
    fn final_statuses_have_no_exits_and_every_status_is_reachable_from_queued() {
        for s in InstanceStatus::ALL {
            assert_eq!(s.is_final(), s.next().is_empty(), "{s}");
            assert_eq!(s.as_str().parse::<InstanceStatus>(), Ok(*s));
        }
        let mut seen = vec![InstanceStatus::Queued];
        let mut i = 0;
        while i < seen.len() {
            for n in seen[i].next() {
                if !seen.contains(n) {
                    seen.push(*n);
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), InstanceStatus::ALL.len(), "reachable: {seen:?}");
        assert!(InstanceStatus::Queued.walk_ok(InstanceStatus::TO_RUNNING));
        assert!(!InstanceStatus::Running.walk_ok(&[InstanceStatus::Queued]));
        assert!(!InstanceStatus::Done.walk_ok(&[InstanceStatus::ErrorFatal]));
    }

    #[test]
    fn every_live_status_reaches_a_final_one_through_triage_alone() {
        let mut now = 1_000;
        for start in InstanceStatus::ALL.iter().filter(|s| !s.is_final()) {
            let mut at = overdue(*start, now - 1);
            let mut steps = 0;
            while !at.status.is_final() {
                let t = triage(std::slice::from_ref(&at), now, 100);
                assert_eq!(t.len(), 1, "{at:?} is overdue");
                assert!(at.status.walk_ok(&[t[0].to]), "{} → {} is in the table", at.status, t[0].to);
                at = Overdue { status: t[0].to, report_by: t[0].report_by.unwrap_or(now), ..at };
                now += 1_000;
                steps += 1;
                assert!(steps <= 2, "{start} takes at most two triage passes");
            }
        }
    }

    #[test]
    fn triage_with_an_injected_clock() {
        let now = 10_000;
        let rows = [
            overdue(InstanceStatus::Running, 9_999),
            overdue(InstanceStatus::Running, 10_000), // due exactly now: not overdue yet
            overdue(InstanceStatus::Triaging, 5_000),
            overdue(InstanceStatus::Launched, 1),
            overdue(InstanceStatus::NoHeartbeat, 9_000),
            overdue(InstanceStatus::Done, 1),
        ];
        let out = triage(&rows, now, 3_100);
        let summary: Vec<(InstanceStatus, Option<Millis>, bool)> =
            out.iter().map(|t| (t.to, t.report_by, t.reroute)).collect();
        assert_eq!(
            summary,
            vec![
                (InstanceStatus::Triaging, Some(13_100), false),
                (InstanceStatus::UnknownError, None, true),
                (InstanceStatus::NoHeartbeat, Some(10_000), true),
                (InstanceStatus::Error, None, false),
            ]
        );
    }

    #[test]
    fn a_silent_nodes_last_report_decides_how_a_triaged_attempt_ends() {
        let now = 50_000;
        let with = |last: LastReport| Overdue { last, ..overdue(InstanceStatus::Triaging, now - 1) };
        let decide = |o: Overdue| {
            let t = triage(&[o], now, 3_100).pop().expect("decided");
            (t.to, t.cause.as_ref().map(|c| c.kind), t.reroute, t.fails())
        };
        // Nothing known: lost.
        assert_eq!(decide(with(LastReport::default())), (InstanceStatus::UnknownError, None, true, false));
        // Its time ran out while the node was silent: a timeout, rerouted (limits scale).
        let timed_out = LastReport { timeout_at: Some(now - 10), ..LastReport::default() };
        assert_eq!(decide(with(timed_out)), (InstanceStatus::ResourceError, Some(ErrorKind::Timeout), true, false));
        // Time left at the deadline: nothing known yet.
        let in_time = LastReport { timeout_at: Some(now + 10), ..LastReport::default() };
        assert_eq!(decide(with(in_time)).0, InstanceStatus::UnknownError);
        // 95% of its memory limit: killed for memory; 50%: unknown.
        let mem = |peak| LastReport { peak_memory_bytes: peak, memory_limit_bytes: 1_000, ..LastReport::default() };
        assert_eq!(decide(with(mem(950))), (InstanceStatus::ResourceError, Some(ErrorKind::MemoryLimit), true, false));
        assert_eq!(decide(with(mem(900))).0, InstanceStatus::ResourceError, "90% is near");
        assert_eq!(decide(with(mem(500))).0, InstanceStatus::UnknownError);
        // An end its node could not record: a fatal one fails the invocation, a retryable one
        // reroutes, a success is lost (its result is gone).
        let ended = |status, error: Option<TaskFailure>| LastReport {
            exit: Some(AttemptExit { status, error }),
            ..LastReport::default()
        };
        let fatal = ended(InstanceStatus::ErrorFatal, Some(TaskFailure::new(ErrorKind::Fatal, "boom")));
        let o = with(fatal);
        assert_eq!(decide(o.clone()), (InstanceStatus::ErrorFatal, Some(ErrorKind::Fatal), true, true));
        let why = verdict(&o, now).expect("known").1.message;
        assert!(why.contains("never recorded") && why.ends_with("boom"), "{why}");
        let flaky = ended(InstanceStatus::Error, Some(TaskFailure::new(ErrorKind::Retryable, "flaky")));
        assert_eq!(decide(with(flaky)), (InstanceStatus::Error, Some(ErrorKind::Retryable), true, false));
        assert_eq!(
            decide(with(ended(InstanceStatus::Done, None))),
            (InstanceStatus::UnknownError, Some(ErrorKind::Lost), true, false)
        );
        // The exit outranks the gauges.
        let both = LastReport { timeout_at: Some(0), ..ended(InstanceStatus::Done, None) };
        assert_eq!(decide(with(both)).1, Some(ErrorKind::Lost));
        // Every verdict is a write the table allows from `triaging`.
        for to in [InstanceStatus::ResourceError, InstanceStatus::ErrorFatal, InstanceStatus::Error] {
            assert!(InstanceStatus::Triaging.may_write(to), "triaging → {to}");
        }
    }

    #[test]
    fn writes_follow_the_table_or_pass_through_to_running() {
        use InstanceStatus::*;
        for from in InstanceStatus::ALL {
            for to in from.next() {
                assert!(from.may_write(*to), "{from} → {to}");
            }
            if from.is_final() {
                assert!(InstanceStatus::ALL.iter().all(|to| !from.may_write(*to)), "{from} is final");
            }
        }
        // The writes the host makes in one go.
        for (from, to) in
            [(Queued, Running), (Queued, Done), (Queued, ErrorFatal), (Launched, Done), (KillSelf, ErrorFatal)]
        {
            assert!(from.may_write(to), "{from} → {to}");
        }
        // Writes Jobmon calls untimely.
        for (from, to) in [
            (Running, Queued),
            (NoHeartbeat, ErrorFatal),
            (NoHeartbeat, Running),
            (Done, ErrorFatal),
            (Queued, UnknownError),
            (Queued, Triaging),
            (Running, Running),
        ] {
            assert!(!from.may_write(to), "{from} → {to}");
        }
        let text = InstanceStatus::writes_text();
        assert!(text.contains(",queued>done,") && !text.contains(",no_heartbeat>error_fatal,"), "{text}");
    }

    #[test]
    fn an_unstarted_claim_gets_two_windows_before_no_heartbeat() {
        let window = 3_100;
        let claimed = |at: Millis| Overdue { started_at: at, ..overdue(InstanceStatus::Queued, at + window) };
        // Overdue (report_by passed) but claimed less than two windows ago: left alone.
        let young = claimed(10_000);
        assert!(triage(std::slice::from_ref(&young), 10_000 + window + 1, window).is_empty());
        assert!(triage(std::slice::from_ref(&young), 10_000 + 2 * window - 1, window).is_empty());
        let out = triage(std::slice::from_ref(&young), 10_000 + 2 * window, window);
        assert_eq!(out.iter().map(|t| (t.to, t.reroute)).collect::<Vec<_>>(), [(InstanceStatus::NoHeartbeat, true)]);
    }

    #[test]
    fn the_report_window_is_interval_times_buffer_rounded_up() {
        assert_eq!(ReportWindow { interval_ms: 1_000, buffer: 3.1 }.ms(), 3_100);
        assert_eq!(ReportWindow { interval_ms: 333, buffer: 1.5 }.ms(), 500);
        assert_eq!(ReportWindow { interval_ms: 100, buffer: 0.2 }.ms(), 100, "never under one interval");
    }
}
