//! The orchestrator: routing calls, the invocation status machine, the local worker pool,
//! retries and waiting for results. It reaches the database only through `store::Store` and
//! guests only through `runtime::Runtime`; every per-invocation write goes through a
//! group-commit `Batcher`, so the cost is one transaction per tick, not one per invocation.

pub mod batcher;
mod components;
mod coordination;
mod feed;
mod guest_host;
mod instances;
pub mod policy;
mod queries;
mod rate_limits;
mod tidy;
pub mod triggers;
mod waiters;
mod worker;
pub mod workflows;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{Invocation, Millis, NewInvocation, TaskDef, Transition, identity};
use crate::runtime::{LoadedComponent, Runtime, RuntimeError};
use crate::store::{Debounce, Store, StoreError, TransitionOutcome};
use batcher::Batcher;
pub use coordination::NewTrigger;
pub use feed::Subscription;
pub(crate) use feed::feed_loop;
use waiters::Waiters;
pub(crate) use worker::dispatch_loop;

/// The node's one timer of due times ([`Orchestrator::wake_after`]): sleeps until the earliest,
/// then wakes the cluster, until shutdown.
pub(crate) async fn due_loop(orch: Orchestrator) {
    loop {
        let next = orch.fire_due();
        tokio::select! {
            _ = async { match next { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {},
            _ = orch.inner.claims.due_added.notified() => {},
            _ = orch.inner.shutdown.cancelled() => return,
        }
    }
}
pub(crate) use workflows::scheduler_loop as workflow_scheduler;

/// The idle dispatcher's safety-net look when other nodes' notices reach this node
/// ([`Orchestrator::claim_poll`]).
const SHARED_CLAIM_POLL: Duration = Duration::from_secs(2);

/// Largest number of items one group commit takes.
const MAX_BATCH: usize = 2048;

/// The smallest memory limit a task may be given when its component does not declare its
/// initial memory (1 MiB: no component starts in less).
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 1024 * 1024;

/// Errors the orchestrator reports to its callers (the API maps them to HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// No task of that name is registered.
    #[error("unknown task `{0}`")]
    UnknownTask(String),
    /// No such invocation / component.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The component was rejected.
    #[error(transparent)]
    Component(#[from] RuntimeError),
    /// The database failed.
    #[error("storage failed: {0}")]
    Store(String),
    /// The database cannot be reached or keeps aborting the write for a transient reason
    /// (restart, lost connections); the store already retried. Worth trying again later
    /// (HTTP 503).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Registration concurrency `keys` found a waiting invocation with the same key
    /// arguments but different other arguments, and the task raises on that (HTTP 409).
    #[error("{0}")]
    ArgsConflict(String),
    /// An idempotency key was used before for a different call.
    #[error("idempotency key `{0}` was already used for a different call")]
    IdempotencyMismatch(String),
}

/// Routing errors as the group commit hands them to every caller of a failed batch.
#[derive(Debug, Clone)]
enum RouteFailure {
    /// A unique index refused a row (another node registered the same scope or key first).
    Conflict(String),
    /// A call names a task that no longer exists.
    NotFound(String),
    /// The database is unavailable for now ([`StoreError::is_transient`]).
    Unavailable(String),
    /// Anything else.
    Other(String),
}

/// Why a group commit of status changes failed, as every submitter of the batch gets it:
/// `Unavailable` (transient: the database could not be reached or kept aborting it, even
/// after the store's own retries; nothing of the batch is stored, or all of it, and trying
/// again is right) or `Failed` (anything else; trying again would fail again).
#[derive(Debug, Clone)]
enum WriteFailure {
    Unavailable(String),
    Failed(String),
}

impl From<String> for WriteFailure {
    fn from(s: String) -> Self {
        Self::Failed(s)
    }
}

impl From<StoreError> for WriteFailure {
    fn from(e: StoreError) -> Self {
        if e.is_transient() { Self::Unavailable(e.to_string()) } else { Self::Failed(e.to_string()) }
    }
}

impl From<WriteFailure> for OrchestratorError {
    fn from(f: WriteFailure) -> Self {
        match f {
            WriteFailure::Unavailable(m) => Self::Unavailable(m),
            WriteFailure::Failed(m) => Self::Store(m),
        }
    }
}

impl From<String> for RouteFailure {
    fn from(s: String) -> Self {
        Self::Other(s)
    }
}

impl From<StoreError> for RouteFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::NotFound(m) => Self::NotFound(m),
            e if e.is_transient() => Self::Unavailable(e.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<RouteFailure> for OrchestratorError {
    fn from(f: RouteFailure) -> Self {
        match f {
            RouteFailure::Conflict(m) => Self::Conflict(m),
            RouteFailure::NotFound(m) => Self::NotFound(m),
            RouteFailure::Unavailable(m) => Self::Unavailable(m),
            RouteFailure::Other(m) => Self::Store(m),
        }
    }
}

/// A routed call: the invocation that answers it, and whether that invocation already existed
/// (same registration scope still waiting, or the same idempotency key).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The invocation.
    pub invocation: Invocation,
    /// True when an existing invocation answers the call.
    pub reused: bool,
}

impl From<StoreError> for OrchestratorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(what) => Self::Conflict(what),
            e if e.is_transient() => Self::Unavailable(e.to_string()),
            other => Self::Store(other.to_string()),
        }
    }
}

/// Result of orchestrator operations.
pub type OrchResult<T> = Result<T, OrchestratorError>;

/// One call to route.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// Task name.
    pub task: String,
    /// Arguments.
    pub args: serde_json::Value,
    /// The client's idempotency key: the same key always answers with the same invocation.
    pub idempotency_key: Option<String>,
    /// Claimed no earlier than this many ms after it is stored (a delayed call).
    pub delay_ms: Option<u64>,
    /// Claimed no earlier than this time, ms since the Unix epoch (a scheduled call).
    pub not_before: Option<Millis>,
    /// A debounced call: calls of the task with the same debounce key within this many ms of
    /// each other collapse into one invocation, which runs with the last call's arguments
    /// this many ms after the last call.
    pub debounce_ms: Option<u64>,
    /// The debounce key; `None`: the values of the task's key arguments.
    pub debounce_key: Option<String>,
    /// The caller's W3C trace context (a valid `traceparent`): the call's spans join it.
    pub trace_parent: Option<String>,
    /// 0-9, higher claimed first; `None`: the task's (`TaskPolicy::priority`).
    pub priority: Option<u8>,
}

impl CallRequest {
    /// A call of `task` with `args` and no options.
    pub fn new(task: impl Into<String>, args: serde_json::Value) -> Self {
        Self {
            task: task.into(),
            args,
            idempotency_key: None,
            delay_ms: None,
            not_before: None,
            debounce_ms: None,
            debounce_key: None,
            trace_parent: None,
            priority: None,
        }
    }
}

/// Latest progress a running guest reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Progress {
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// Optional message.
    pub message: Option<String>,
}

/// Settings of the orchestrator.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// This node's name (owner of claimed invocations).
    pub node: String,
    /// Attempts that may run at once on this node.
    pub slots: usize,
    /// Most invocations claimed ahead in one transaction (waiting here for a slot).
    pub prefetch: usize,
    /// How often the dispatcher looks for work nobody told it about (other nodes).
    pub poll_interval: Duration,
    /// Backoff ceiling of the first retry; doubles per attempt (equal jitter).
    pub retry_base: Duration,
    /// Largest retry backoff.
    pub retry_max: Duration,
    /// Largest arguments of a call a guest makes (`--max-args-bytes`, as for calls over HTTP).
    pub max_args_bytes: usize,
    /// How often this node heartbeats (and reports for the attempts it holds).
    pub heartbeat_interval: Duration,
    /// A node silent this long counts as dead.
    pub heartbeat_timeout: Duration,
    /// Live task instances must be reported for within `heartbeat_interval` × this.
    pub report_buffer: f64,
    /// Tokens in the ring until the ring's own count is known.
    pub total_tokens: u32,
    /// Most nodes of one workflow or array (`--max-workflow-nodes`).
    pub max_workflow_nodes: usize,
    /// After how long claimable a call ranks as priority 9 (ms).
    pub priority_aging_ms: u64,
    /// Status changes the change feed keeps for slow subscribers (`--stream-buffer-events`).
    pub stream_buffer_events: usize,
}

/// The orchestrator's state, split by what owns it.
struct Inner {
    store: Arc<dyn Store>,
    runtime: Runtime,
    cfg: OrchestratorConfig,
    /// Long-polls and waits on final statuses.
    waiters: Arc<Waiters>,
    /// The group commit of status changes.
    transitions: Batcher<Transition, TransitionOutcome, WriteFailure>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Wakes the workflow scheduler (an invocation became final, a workflow was created).
    workflow_wake: Notify,
    /// Whether the scheduler's last look found active workflows: while it found none, an
    /// invocation that becomes final does not wake it (it cannot be a workflow's node that
    /// this node stepped; a workflow created elsewhere is found at the idle tick). Saves every
    /// call outside workflows a listing of the active workflows.
    workflows_active: std::sync::atomic::AtomicBool,
    /// The change feed (status changes for streams and batch awaits).
    feed: Arc<feed::Feed>,
    /// Changes counted toward the next look at the database's housekeeping.
    tidy: Mutex<tidy::Tidy>,
    routing: Routing,
    attempts: Attempts,
    claims: ClaimView,
}

/// Routing: the group commit of new calls and the caches it reads.
struct Routing {
    routes: Batcher<NewInvocation, Invocation, RouteFailure>,
    tasks: Mutex<HashMap<String, TaskDef>>,
    /// The rate limits tasks name, by name (`None`: gone), forgotten with the tasks.
    rate_limits: Mutex<HashMap<String, Option<crate::model::rate_limit::RateLimit>>>,
    /// Compiled components by (name, version).
    components: tokio::sync::Mutex<HashMap<(String, u64), LoadedComponent>>,
}

/// The attempts this node runs: its slots and what it knows of each attempt.
struct Attempts {
    slots: Arc<Semaphore>,
    /// Running guests by invocation: their cancellation tokens.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Attempts this node holds (claimed, not yet recorded): invocation → attempt. The
    /// heartbeat reports for their instances.
    held: Mutex<HashMap<String, u32>>,
    /// Held attempts not started yet (waiting in the dispatcher's queue). The heartbeat takes
    /// out one whose instance was taken away, and the worker starts only those still here.
    unstarted: Mutex<std::collections::HashSet<String>>,
    /// Attempts interrupted because a user cancelled their invocation.
    user_cancels: Mutex<std::collections::HashSet<String>>,
    progress: Mutex<HashMap<String, Progress>>,
    /// What this node knows of its started attempts (memory, time left, an end not recorded
    /// yet), reported with every heartbeat of their instances for triage to read.
    known: Mutex<HashMap<String, instances::Known>>,
    /// What happened to this node's attempts, counted since start (`/metrics`).
    counters: AttemptCounters,
}

/// What this node may claim, as the membership tick last computed it, and the dispatcher's
/// wake-up.
struct ClaimView {
    /// Wakes the dispatcher (work routed here, a slot freed, a retry due).
    work: Notify,
    /// Pinned tasks this node must skip or may take whatever their token (recomputed every
    /// heartbeat tick).
    claim_filter: Mutex<crate::store::ClaimFilter>,
    /// Tokens in the ring (the ring's own count once assigned): routing hashes ids onto it.
    total_tokens: std::sync::atomic::AtomicU32,
    /// True once the node is registered and has computed its pins: the dispatcher claims
    /// nothing before, and `/health/ready` answers 503.
    ready: tokio::sync::watch::Sender<bool>,
    /// When calls this node delayed become claimable (retries after their backoff, delayed and
    /// scheduled calls routed here), earliest first, at most [`MAX_DUE`] (the poll finds the
    /// rest): [`due_loop`] wakes the cluster then.
    due: Mutex<std::collections::BinaryHeap<std::cmp::Reverse<tokio::time::Instant>>>,
    /// An earlier due time was added: [`due_loop`] looks again.
    due_added: Notify,
}

/// Most due times a node keeps a timer for.
const MAX_DUE: usize = 10_000;

/// Counts of what happened to this node's attempts since it started, for `/metrics`: the
/// figures that say whether work is being thrown away.
#[derive(Debug, Default)]
pub struct AttemptCounters {
    /// Outcomes stored.
    pub recorded: std::sync::atomic::AtomicU64,
    /// Outcomes stored only after the database was unavailable for a while (retried).
    pub recorded_after_retry: std::sync::atomic::AtomicU64,
    /// Outcomes refused by the compare-and-swap: the invocation was taken away or cancelled
    /// meanwhile (the instance records the discarded outcome).
    pub discarded: std::sync::atomic::AtomicU64,
    /// Outcomes that could not be written for a lasting reason (recovery reroutes them).
    pub unrecorded: std::sync::atomic::AtomicU64,
    /// Running guests interrupted because their instance was taken away by triage.
    pub taken_away: std::sync::atomic::AtomicU64,
}

impl AttemptCounters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The orchestrator of one node; cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl Orchestrator {
    /// Builds the orchestrator; call [`Orchestrator::start`] to recover and begin claiming.
    pub fn new(store: Arc<dyn Store>, runtime: Runtime, cfg: OrchestratorConfig) -> Self {
        let waiters = Arc::new(Waiters::default());
        let feed = Arc::new(feed::Feed::new(store.clone(), &cfg.node, cfg.stream_buffer_events, waiters.clone()));
        let (s, f) = (store.clone(), feed.clone());
        let routes = Batcher::spawn(MAX_BATCH, move |calls: Vec<NewInvocation>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                let out = s.invocation_insert_batch(&calls).await.map_err(RouteFailure::from);
                f.routed();
                out
            }
        });
        let (s, f) = (store.clone(), feed.clone());
        let transitions = Batcher::spawn(MAX_BATCH, move |changes: Vec<Transition>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                let out = s.invocation_transition_batch(&changes).await.map_err(WriteFailure::from);
                f.wrote();
                out
            }
        });
        let slots = Arc::new(Semaphore::new(cfg.slots.max(1)));
        let total_tokens = cfg.total_tokens.max(1);
        Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                cfg,
                waiters,
                transitions,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                workflow_wake: Notify::new(),
                workflows_active: std::sync::atomic::AtomicBool::new(true),
                feed,
                tidy: Mutex::new(tidy::Tidy::default()),
                routing: Routing {
                    routes,
                    tasks: Mutex::new(HashMap::new()),
                    rate_limits: Mutex::new(HashMap::new()),
                    components: tokio::sync::Mutex::new(HashMap::new()),
                },
                attempts: Attempts {
                    slots,
                    running: Mutex::new(HashMap::new()),
                    held: Mutex::new(HashMap::new()),
                    unstarted: Mutex::new(std::collections::HashSet::new()),
                    user_cancels: Mutex::new(std::collections::HashSet::new()),
                    progress: Mutex::new(HashMap::new()),
                    known: Mutex::new(HashMap::new()),
                    counters: AttemptCounters::default(),
                },
                claims: ClaimView {
                    work: Notify::new(),
                    claim_filter: Mutex::new(crate::store::ClaimFilter::default()),
                    total_tokens: std::sync::atomic::AtomicU32::new(total_tokens),
                    ready: tokio::sync::watch::channel(false).0,
                    due: Mutex::new(std::collections::BinaryHeap::new()),
                    due_added: Notify::new(),
                },
            }),
        }
    }

    /// Reroutes the invocations this node owned in a previous life (it crashed or was
    /// killed with them running). Run before this node claims anything.
    pub async fn recover(&self) -> OrchResult<()> {
        let recovered = self.inner.store.invocation_recover_node(&self.inner.cfg.node).await?;
        if recovered > 0 {
            tracing::warn!(recovered, node = %self.inner.cfg.node, "rerouted invocations left running by this node's previous life");
        }
        Ok(())
    }

    /// Runs one of the daemon's loops (the composition root in `server.rs` passes them) as
    /// part of this node's life: [`shutdown`](Self::shutdown) waits for it within the grace
    /// period, like the attempts.
    pub(crate) fn run_loop(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tracker.spawn(fut);
    }

    /// After how long without a heartbeat a node counts as dead, in ms.
    pub fn heartbeat_timeout_ms(&self) -> i64 {
        i64::try_from(self.inner.cfg.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether this node is registered in the cluster and knows its pins (readiness).
    pub fn is_ready(&self) -> bool {
        *self.inner.claims.ready.borrow()
    }

    /// Sets what the node may claim besides its tokens (pins), and whether it may claim at
    /// all (registered, owning tokens).
    pub(crate) fn set_claim_filter(&self, filter: crate::store::ClaimFilter, ready: bool) {
        let changed = {
            let mut current = lock(&self.inner.claims.claim_filter);
            let changed = *current != filter;
            *current = filter;
            changed
        };
        let was_ready = self.inner.claims.ready.send_replace(ready);
        // Pins moved, or this node's tokens came: there may be work it may now claim.
        if changed || ready != was_ready {
            self.inner.claims.work.notify_one();
        }
    }

    /// How long an idle dispatcher waits before it looks for work nobody told it of. When other
    /// nodes' notices reach this node (PostgreSQL), whatever they route or free for it wakes it
    /// at once (the change feed), so the look is only a safety net and comes less often.
    pub(crate) fn claim_poll(&self) -> Duration {
        if self.inner.feed.is_shared() {
            self.inner.cfg.poll_interval.max(SHARED_CLAIM_POLL)
        } else {
            self.inner.cfg.poll_interval
        }
    }

    /// Tokens in the ring routing hashes onto.
    pub fn total_tokens(&self) -> u32 {
        self.inner.claims.total_tokens.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Follows the ring's size once it is assigned.
    pub(crate) fn set_total_tokens(&self, total: u32) {
        if total > 0 {
            self.inner.claims.total_tokens.store(total, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The node cannot take part (not registered, or fenced): stop claiming.
    pub(crate) fn set_unready(&self) {
        self.inner.claims.ready.send_replace(false);
    }

    /// Attempts this node runs at once.
    pub fn slots(&self) -> usize {
        self.inner.cfg.slots
    }

    /// Cancelled when the orchestrator shuts down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Tells the dispatchers there may be work (rerouted invocations, say): this node's at
    /// once, the other nodes' through the change feed's notice.
    pub(crate) fn nudge(&self) {
        self.inner.claims.work.notify_one();
        self.inner.feed.routed();
    }

    /// Wakes this node's dispatcher and the other nodes' ([`Orchestrator::nudge`]) `after`
    /// from now, when something this node delayed becomes claimable (a retry's backoff, a
    /// delayed call routed here), instead of at their next poll. One timer task serves them
    /// all ([`due_loop`]).
    pub(crate) fn wake_after(&self, after: Duration) {
        let at = tokio::time::Instant::now() + after;
        let mut due = lock(&self.inner.claims.due);
        if due.len() >= MAX_DUE {
            return;
        }
        let earliest = due.peek().is_none_or(|d| at < d.0);
        due.push(std::cmp::Reverse(at));
        drop(due);
        if earliest {
            self.inner.claims.due_added.notify_one();
        }
    }

    /// Keeps a timer for the delayed calls just routed ([`Orchestrator::wake_after`]).
    fn wake_when_due(&self, routed: &[Routed]) {
        for inv in routed.iter().filter(|r| !r.reused).map(|r| &r.invocation) {
            if let Some(at) = inv.not_before {
                self.wake_after(Duration::from_millis(u64::try_from(at.saturating_sub(inv.updated_at)).unwrap_or(0)));
            }
        }
    }

    /// Drops the due times passed, nudging the cluster if there were any; the next one ahead.
    fn fire_due(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let mut due = lock(&self.inner.claims.due);
        let mut passed = false;
        while due.peek().is_some_and(|d| d.0 <= now) {
            due.pop();
            passed = true;
        }
        let next = due.peek().map(|d| d.0);
        drop(due);
        if passed {
            self.nudge();
        }
        next
    }

    /// An invocation became final: wakes the workflow scheduler, if it has workflows to step.
    fn wake_workflows_if_active(&self) {
        if self.inner.workflows_active.load(std::sync::atomic::Ordering::Relaxed) {
            self.inner.workflow_wake.notify_one();
        }
    }

    /// Wakes the waiters of invocations that became final outside this node's attempts.
    pub(crate) fn wake_final(&self, ids: &[String]) {
        // Nothing ended: no wake-up, and above all no notice to the other nodes (the leader's
        // concurrency service calls this at every tick).
        if ids.is_empty() {
            return;
        }
        for id in ids {
            self.inner.waiters.wake(id);
        }
        self.wake_workflows_if_active();
        self.inner.feed.wrote();
    }

    /// Stops claiming, lets running attempts finish within `grace`, then interrupts the rest
    /// (they are recovered at the next start or by another node).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_err() {
            let tokens: Vec<CancellationToken> = lock(&self.inner.attempts.running).values().cloned().collect();
            tracing::warn!(interrupted = tokens.len(), "grace period over; interrupting running attempts");
            for t in tokens {
                t.cancel();
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tracker.wait()).await;
        }
    }

    /// What happened to this node's attempts since it started.
    pub fn counters(&self) -> &AttemptCounters {
        &self.inner.attempts.counters
    }

    /// The store behind this orchestrator, for its own files and the atomic services; the
    /// HTTP API goes through the orchestrator's methods (`queries.rs`), never the store.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The runtime behind this orchestrator.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.cfg.node
    }

    /// Forgets cached task definitions (after a change of options).
    pub fn invalidate_tasks(&self) {
        lock(&self.inner.routing.tasks).clear();
        lock(&self.inner.routing.rate_limits).clear();
    }

    /// A task definition, cached.
    pub async fn task(&self, name: &str) -> OrchResult<TaskDef> {
        if let Some(t) = lock(&self.inner.routing.tasks).get(name) {
            return Ok(t.clone());
        }
        let t =
            self.inner.store.task_get(name).await?.ok_or_else(|| OrchestratorError::UnknownTask(name.to_string()))?;
        lock(&self.inner.routing.tasks).insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Routes calls: checks each task exists, computes call ids and stores the invocations in
    /// one group commit. All or nothing.
    ///
    /// A call whose registration scope already has a `registered` invocation reuses it, and so
    /// does a call with an idempotency key used before (a different call under the same key is
    /// `IdempotencyMismatch`). The unique indexes behind both make a race with another router
    /// fail the insert; the routing then looks again (at most three times).
    pub async fn route(&self, calls: Vec<CallRequest>) -> OrchResult<Vec<Routed>> {
        let mut news = Vec::with_capacity(calls.len());
        // Open until the routing is committed (or fails).
        let mut spans = Vec::new();
        for c in calls {
            let mut new = self.new_invocation(&c.task, &c.args, None, None, c.idempotency_key, None).await?;
            (new.delay_ms, new.not_before) = (c.delay_ms, c.not_before);
            new.trace_parent = routing_trace(&new, c.trace_parent.as_deref(), &mut spans);
            if let Some(p) = c.priority {
                new.priority = p;
            }
            if let Some(ms) = c.debounce_ms {
                new.scope = Some(self.debounce_scope(&c.task, &c.args, c.debounce_key.as_deref()).await?);
                new.delay_ms = Some(ms);
            }
            news.push((new, c.debounce_ms));
        }
        let mut last = String::new();
        for _ in 0..3 {
            match self.route_new(&news).await {
                Err(OrchestratorError::Conflict(m)) => last = m,
                Ok(routed) => {
                    self.wake_when_due(&routed);
                    return Ok(routed);
                }
                other => return other,
            }
        }
        Err(OrchestratorError::Conflict(format!("routing kept racing other routers: {last}")))
    }

    /// The debounce scope of a call (its registration scope: one `registered` invocation per
    /// scope): `debounce:` and the hash of the task with the call's debounce key or, without
    /// one, with the values of the task's key arguments.
    async fn debounce_scope(&self, task: &str, args: &serde_json::Value, key: Option<&str>) -> OrchResult<String> {
        let hash = match key {
            Some(k) => identity::call_id(task, &identity::canonical_json(&serde_json::Value::from(k))),
            None => {
                let def = self.task(task).await?;
                if def.key_arguments.is_empty() {
                    return Err(OrchestratorError::BadRequest(format!(
                        "options.debounce_ms needs options.debounce_key, or key arguments on task `{task}` \
                         (PATCH /v1/tasks/{task} {{\"key_arguments\": [...]}}) whose values are the key"
                    )));
                }
                policy::concurrency_scope(crate::model::Concurrency::Keys, task, args, "", &def.key_arguments)
                    .map_err(|e| OrchestratorError::BadRequest(format!("debounce key: {e}")))?
                    .unwrap_or_default()
            }
        };
        Ok(format!("debounce:{hash}"))
    }

    /// A debounced call `n` landing on the waiting invocation `id`: the invocation as the call
    /// would make it (its arguments, call id and running scope), under `id`.
    async fn debounced_into(&self, n: &NewInvocation, id: &str) -> OrchResult<NewInvocation> {
        let args: serde_json::Value = serde_json::from_str(&n.args)
            .map_err(|e| OrchestratorError::Store(format!("canonical arguments do not parse: {e}")))?;
        let later = self.new_invocation(&n.task, &args, Some(id.to_string()), None, None, None).await?;
        Ok(NewInvocation { scope: n.scope.clone(), delay_ms: n.delay_ms, ..later })
    }

    async fn route_new(&self, news: &[(NewInvocation, Option<u64>)]) -> OrchResult<Vec<Routed>> {
        enum Answer {
            Existing(Box<Invocation>),
            Inserted(usize),
            SameAs(usize),
        }
        let mut scopes: Vec<String> = news.iter().filter_map(|(n, _)| n.scope.clone()).collect();
        scopes.sort_unstable();
        scopes.dedup();
        let keys: Vec<String> = news.iter().filter_map(|(n, _)| n.idempotency_key.clone()).collect();
        let found = self.inner.store.invocation_find_routed(&scopes, &keys).await?;
        let mut by_scope = HashMap::new();
        let mut by_key = HashMap::new();
        for inv in found {
            if let Some(k) = &inv.idempotency_key {
                by_key.insert(k.clone(), inv.clone());
            }
            if let Some(s) = inv.scope.clone().filter(|_| inv.status == crate::model::InvocationStatus::Registered) {
                by_scope.insert(s, inv);
            }
        }
        let mismatch = |key: &str, a: &str, b: &str| {
            if a == b { Ok(()) } else { Err(OrchestratorError::IdempotencyMismatch(key.to_string())) }
        };
        let mut answers = Vec::with_capacity(news.len());
        let mut to_insert: Vec<NewInvocation> = Vec::new();
        let mut scope_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut key_in_batch: HashMap<&str, usize> = HashMap::new();
        // Debounced calls landing on waiting invocations: the last call per invocation wins.
        let mut debounced: Vec<Debounce> = Vec::new();
        let mut debounced_at: HashMap<String, usize> = HashMap::new();
        for (n, debounce_ms) in news {
            if let Some(k) = n.idempotency_key.as_deref() {
                if let Some(inv) = by_key.get(k) {
                    mismatch(k, &inv.call_id, &n.call_id)?;
                    answers.push(Answer::Existing(Box::new(inv.clone())));
                    continue;
                }
                if let Some(&j) = key_in_batch.get(k) {
                    mismatch(k, &to_insert[j].call_id, &n.call_id)?;
                    answers.push(Answer::SameAs(j));
                    continue;
                }
            }
            if let Some(s) = n.scope.as_deref() {
                if let Some(inv) = by_scope.get(s) {
                    if let Some(ms) = *debounce_ms {
                        let later = self.debounced_into(n, &inv.id).await?;
                        let d = Debounce {
                            id: inv.id.clone(),
                            scope: s.to_string(),
                            args: later.args,
                            call_id: later.call_id,
                            run_scope: later.run_scope,
                            delay_ms: ms,
                        };
                        match debounced_at.get(&inv.id) {
                            Some(&i) => debounced[i] = d,
                            None => {
                                debounced_at.insert(inv.id.clone(), debounced.len());
                                debounced.push(d);
                            }
                        }
                    } else {
                        self.check_same_args(n, &inv.call_id, &inv.id).await?;
                    }
                    answers.push(Answer::Existing(Box::new(inv.clone())));
                    continue;
                }
                if let Some(&j) = scope_in_batch.get(s) {
                    if debounce_ms.is_some() {
                        let id = to_insert[j].id.clone();
                        to_insert[j] = self.debounced_into(n, &id).await?;
                    } else {
                        self.check_same_args(n, &to_insert[j].call_id, "an earlier call of this batch").await?;
                    }
                    answers.push(Answer::SameAs(j));
                    continue;
                }
            }
            let j = to_insert.len();
            if let Some(s) = n.scope.as_deref() {
                scope_in_batch.insert(s, j);
            }
            if let Some(k) = n.idempotency_key.as_deref() {
                key_in_batch.insert(k, j);
            }
            to_insert.push(n.clone());
            answers.push(Answer::Inserted(j));
        }
        // The waiting invocations take their last calls first: one claimed meanwhile makes the
        // routing look again (and insert a new invocation for its scope), before anything of
        // this batch is inserted.
        if !debounced.is_empty() {
            let changed = self.inner.store.invocation_debounce(&debounced).await?;
            if changed.len() < debounced.len() {
                return Err(OrchestratorError::Conflict("a debounced invocation was claimed meanwhile".into()));
            }
            for d in &debounced {
                self.wake_after(Duration::from_millis(d.delay_ms));
            }
        }
        let inserted = self.insert(to_insert).await?;
        let pick = |j: usize| {
            inserted.get(j).cloned().ok_or_else(|| OrchestratorError::Store("routing lost an inserted call".into()))
        };
        answers
            .into_iter()
            .map(|a| match a {
                Answer::Existing(invocation) => Ok(Routed { invocation: *invocation, reused: true }),
                Answer::Inserted(j) => Ok(Routed { invocation: pick(j)?, reused: false }),
                Answer::SameAs(j) => Ok(Routed { invocation: pick(j)?, reused: true }),
            })
            .collect()
    }

    /// A call about to reuse a waiting invocation of its registration scope: refused when the
    /// arguments differ and the task says so (`on_diff_non_key_args_raise`).
    async fn check_same_args(&self, n: &NewInvocation, existing_call_id: &str, existing: &str) -> OrchResult<()> {
        if n.call_id == existing_call_id || !self.task(&n.task).await?.policy.on_diff_non_key_args_raise {
            return Ok(());
        }
        Err(OrchestratorError::ArgsConflict(format!(
            "task `{}` already has a waiting invocation ({existing}) with the same key arguments but different \
             other arguments, and its on_diff_non_key_args_raise option refuses to reuse it",
            n.task
        )))
    }

    /// Builds the invocation of a call: its id, call id, canonical arguments, scopes and token.
    /// `node_of` is `(workflow, max_attempts)` for the call of a workflow node: a node is its
    /// own identity, so it gets no registration scope (whose unique index would refuse a
    /// node's call outright); other calls get the task's registration scope.
    pub(crate) async fn new_invocation(
        &self,
        task: &str,
        args: &serde_json::Value,
        id: Option<String>,
        parent: Option<String>,
        idempotency_key: Option<String>,
        node_of: Option<(&str, Option<u32>)>,
    ) -> OrchResult<NewInvocation> {
        let def = self.task(task).await?;
        if def.policy.rate_limit.is_some() {
            self.check_rate_key(&def, args).await?;
        }
        let canonical = identity::canonical_json(args);
        let scope_of = |mode| {
            policy::concurrency_scope(mode, task, args, &canonical, &def.key_arguments)
                .map_err(|e| OrchestratorError::BadRequest(e.to_string()))
        };
        let scope = if node_of.is_some() { None } else { scope_of(def.registration_concurrency)? };
        let id = id.unwrap_or_else(identity::new_invocation_id);
        let run_scope = scope_of(def.running_concurrency)?
            .map(|s| policy::running_lane(s, &id, def.policy.running_concurrency_slots));
        let token = Some(crate::cluster::ring::token_of(&id, self.total_tokens()));
        Ok(NewInvocation {
            id,
            call_id: identity::call_id(task, &canonical),
            task: task.to_string(),
            args: canonical,
            parent,
            scope,
            idempotency_key,
            run_scope,
            workflow: node_of.map(|(w, _)| w.to_string()),
            max_attempts: node_of.and_then(|(_, m)| m),
            token,
            delay_ms: None,
            not_before: None,
            trace_parent: None,
            priority: def.policy.priority,
        })
    }

    async fn insert(&self, news: Vec<NewInvocation>) -> OrchResult<Vec<Invocation>> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.inner.routing.routes.submit(news).await?;
        self.inner.claims.work.notify_one();
        self.changed(out.len());
        Ok(out)
    }

    /// Counts `n` changes this node made toward the next look at the database's
    /// housekeeping (`tidy.rs`).
    fn changed(&self, n: usize) {
        lock(&self.inner.tidy).changed(&self.inner.store, n);
    }

    /// One invocation.
    pub async fn get(&self, id: &str) -> OrchResult<Invocation> {
        self.inner
            .store
            .invocation_get(id)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(format!("invocation `{id}`")))
    }

    /// Why a runnable invocation waits (held back by running concurrency: the scope's holder
    /// and the policy); `None` for one that is not runnable or not held back.
    pub async fn waiting(&self, inv: &Invocation) -> OrchResult<Option<crate::model::Waiting>> {
        if !inv.status.is_runnable() {
            return Ok(None);
        }
        Ok(self.inner.store.invocation_waiting(&inv.id).await?)
    }

    /// Cancels an invocation: a runnable or pending one moves to `cancelled` at once; a guest
    /// running on this node is interrupted and its attempt ends `cancelled`. A final invocation
    /// is returned unchanged.
    pub async fn cancel(&self, id: &str) -> OrchResult<Invocation> {
        for _ in 0..8 {
            let inv = self.get(id).await?;
            if inv.status.is_final() {
                return Ok(inv);
            }
            let token = lock(&self.inner.attempts.running).get(id).cloned();
            if let Some(token) = token {
                lock(&self.inner.attempts.user_cancels).insert(id.to_string());
                token.cancel();
                return Ok(self.wait_final(id, Some(Duration::from_secs(10))).await?.0);
            }
            let owner =
                inv.owner.as_ref().map(|node| crate::model::Owner { node: node.clone(), attempt: inv.attempts });
            let change = Transition::user_cancel(id, inv.status, owner, self.node());
            if inv.owner.is_some() {
                // Owned elsewhere: the cancel and the signal to its node commit together, and
                // the node interrupts the guest at its next heartbeat.
                let (outcome, node) = self.inner.store.invocation_transition_signal(&change, "cancel").await?;
                if outcome.is_applied() {
                    tracing::info!(invocation = %id, node = ?node, "cancelled; the owner hears of it at its next heartbeat");
                    self.wake_final(&[id.to_string()]);
                    return self.get(id).await;
                }
            } else if self.transition(vec![change]).await?.first() == Some(&TransitionOutcome::Applied) {
                return self.get(id).await;
            }
            // It moved meanwhile (claimed, started, finished): look again.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(OrchestratorError::Conflict(format!("invocation `{id}` keeps changing; try cancelling again")))
    }

    /// Routes the same call again as a new invocation.
    pub async fn rerun(&self, id: &str) -> OrchResult<Invocation> {
        let inv = self.get(id).await?;
        let mut out = self
            .route(vec![CallRequest { priority: Some(inv.priority), ..CallRequest::new(inv.task, inv.args) }])
            .await?;
        out.pop().map(|r| r.invocation).ok_or_else(|| OrchestratorError::Store("routing returned nothing".into()))
    }

    /// Latest progress of a running invocation.
    pub fn progress(&self, id: &str) -> Option<Progress> {
        lock(&self.inner.attempts.progress).get(id).cloned()
    }

    /// Waits until the invocation is final or `timeout` passes; returns it and whether final.
    pub async fn wait_final(&self, id: &str, timeout: Option<Duration>) -> OrchResult<(Invocation, bool)> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let guard = self.inner.waiters.register(id);
        // Another node may finish it: the change feed wakes the guard when it sees that.
        let _watch = self.inner.feed.watch().await;
        loop {
            let notified = guard.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let inv = match self.get(id).await {
                Ok(inv) => inv,
                // The database is away for now: look again later, within the deadline.
                Err(OrchestratorError::Unavailable(e))
                    if deadline.is_none_or(|d| tokio::time::Instant::now() + Duration::from_millis(250) < d) =>
                {
                    tracing::debug!(error = %e, invocation = %id, "waiting for a result while the database is unavailable");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if inv.status.is_final() {
                return Ok((inv, true));
            }
            // Look again now and then even without a signal (a notice lost with a connection).
            let mut nap = Duration::from_millis(250);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Ok((inv, false));
                }
                nap = nap.min(left);
            }
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    /// Applies status changes through the group commit. The changes are queued at once (in
    /// call order), even before the returned future is polled.
    fn transition(
        &self,
        changes: Vec<Transition>,
    ) -> impl std::future::Future<Output = OrchResult<Vec<TransitionOutcome>>> + Send + 'static {
        let finals: Vec<(String, bool)> = changes.iter().map(|t| (t.id.clone(), t.to().is_final())).collect();
        let submitted = self.inner.transitions.submit(changes);
        let me = self.clone();
        async move {
            let out = submitted.await.map_err(OrchestratorError::from)?;
            for ((id, is_final), o) in finals.iter().zip(&out) {
                if *is_final && *o == TransitionOutcome::Applied {
                    me.inner.waiters.wake(id);
                    me.wake_workflows_if_active();
                }
            }
            Ok(out)
        }
    }
}

/// The trace context a call routed now is stored with. With traces exported: that of a new
/// `warden.route` span, a child of `parent` (the request's `traceparent`, or the calling
/// attempt's span for a child call) or, without one, a new trace; the span is kept open in
/// `spans` until the routing is committed. Without: `parent` as it came, passed on for
/// whoever exports.
fn routing_trace(new: &NewInvocation, parent: Option<&str>, spans: &mut Vec<tracing::Span>) -> Option<String> {
    if !crate::telemetry::enabled() {
        return parent.map(str::to_string);
    }
    let span = tracing::info_span!("route", otel.name = "warden.route", invocation = %new.id, task = %new.task);
    crate::telemetry::set_parent(&span, parent);
    let here = crate::telemetry::traceparent(&span);
    spans.push(span);
    here
}

/// How long to wait before writing again, after `tries` writes failed because the database
/// was unavailable: 50 ms doubling to 1 s, with jitter.
pub(crate) fn write_backoff(tries: u32) -> Duration {
    policy::retry_delay(tries, Duration::from_millis(50), Duration::from_secs(1), rand::random::<f64>())
}

/// Locks a std mutex, recovering from poisoning (a panicked holder leaves plain data behind).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
