//! Durable state behind one `Store` trait: components, tasks, invocations and their history.
//! Two implementations on sqlx share every query that both dialects accept: SQLite (the
//! embedded default: WAL, `synchronous=FULL`) and PostgreSQL (clusters). This module is the
//! only place with SQL. Every write that happens per invocation takes a batch and costs one
//! transaction, whatever the batch size (on SQLite, the hot ones are one round trip to the
//! database thread each: see `engine.rs`); every status change is a compare-and-swap that
//! writes its history rows in the same transaction. Timestamps come from the database clock.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::instance::{Overdue, Triage};
use crate::model::rate_limit::RateLimit;
use crate::model::workflow::{NewWorkflow, NodeStatus, WorkflowInfo, WorkflowNode};
use crate::model::{
    Claimed, ComponentInfo, ComponentVersion, Event, HistoryEntry, Invocation, InvocationFilter, InvocationStatus,
    Lease, Millis, NewInvocation, NodeInfo, ServiceRun, ServiceRunStatus, StatusChange, TaskDef, TaskInstance,
    TaskPatch, TokenAudit, TokenRing, Transition, Trigger, TriggerRun,
};

#[cfg(test)]
mod conformance;
mod engine;
#[cfg(test)]
mod lock_order;
pub mod postgres;
mod sql;
pub mod sqlite;
mod write_gate;

pub use engine::ChangeListener;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start-up.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded (corrupt row, unknown status).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// A referenced row does not exist (e.g. a call of an unknown task).
    #[error("{0} not found")]
    NotFound(String),
    /// A unique name or id is taken, or a name belongs to someone else (the message says
    /// which, e.g. "task `x` belongs to component `y`").
    #[error("conflict: {0}")]
    Conflict(String),
    /// A maintenance write under a [`Fence`] found the lease held otherwise (another holder or
    /// epoch, or expired): the writer is no longer the leader, and nothing was written.
    #[error("fenced: `{node}` no longer holds the leader lease with epoch {epoch}")]
    Fenced {
        /// The node that wrote.
        node: String,
        /// The epoch it believed it held.
        epoch: i64,
    },
    /// A background write gave SQLite's writer up to a routing that was waiting for it and
    /// rolled back, to go again (never returned by a [`Store`] method: the write that yields
    /// goes again itself).
    #[error("gave the writer up to a routing")]
    Yielded,
}

impl StoreError {
    /// Whether the database aborted the work for a reason that trying again can cure: a
    /// deadlock or serialization failure (the transaction was rolled back, nothing of it is
    /// stored), a lost or refused connection (the server restarted, a backend was terminated,
    /// the pool timed out), or a busy SQLite file. A rejected compare-and-swap, a constraint
    /// violation or a fence is never transient: those are answers, not accidents.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => transient_sqlx(e),
            _ => false,
        }
    }

    /// Whether the error is a deadlock or a serialization failure (PostgreSQL `40P01`,
    /// `40001`): the database chose this transaction as the victim and rolled it back.
    pub fn is_deadlock(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
    }
}

/// See [`StoreError::is_transient`].
fn transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(
                code.as_ref(),
                // deadlock, serialization failure, terminated backend (admin/crash shutdown),
                // server starting up, too many connections
                "40P01" | "40001" | "57P01" | "57P02" | "57P03" | "53300"
                // SQLite: busy, busy (recovery), locked
                | "5" | "261" | "517" | "6"
            ) || code.starts_with("08")
        }),
        _ => false,
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of one transition of a batch: applied, or why not (typed, so that callers can
/// tell fencing from a lost race from a caller's bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The compare-and-swap matched and the change (and history) is stored.
    Applied,
    /// The path is not a walk of the status table from `from` (or is empty); it was never
    /// sent to the database. A caller's bug.
    BadTransition,
    /// No invocation has that id.
    NotFound,
    /// The invocation is in `from` but another owner (node or attempt epoch) holds it: for an
    /// attempt's write this means the attempt was taken away (fencing).
    WrongOwner,
    /// The invocation is no longer in `from`: another change came first.
    LostRace,
}

impl TransitionOutcome {
    /// Whether the change was stored.
    pub fn is_applied(self) -> bool {
        self == Self::Applied
    }
}

/// Counts of invocations per task and status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StatusCount {
    /// Task name.
    pub task: String,
    /// Status.
    pub status: InvocationStatus,
    /// Number of invocations.
    pub count: i64,
}

/// The leader's credentials for a maintenance write (JobSync's lease, with an epoch): the node
/// holding the lease and the epoch of its term. A store method that takes a `Fence` checks,
/// inside its transaction and before it writes, that the lease is still held so and not expired
/// (on PostgreSQL it locks the lease row, so no new leader can take over until the write
/// commits); otherwise it writes nothing and fails with [`StoreError::Fenced`]. A node that
/// lost the lease (stalled, partitioned, taken over) can therefore never overwrite the work of
/// the next leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease holder; history rows written under the fence name it.
    pub node: String,
    /// The epoch of its term (bumped by every new term, even of the same node).
    pub epoch: i64,
}

/// What the storage gate of the atomic services answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceGate {
    /// This node holds the gate; the execution record has this id.
    Acquired(i64),
    /// Another execution runs (a `blocked` record was written).
    Busy(Option<ServiceRun>),
}

/// Durable coordination state: node membership, the atomic services' executions and gate,
/// triggers and events. Part of every [`Store`].
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Registers a node (or starts its new life: labels and capacity replaced, `left_at`
    /// cleared). A node that restarts without having left keeps its `joined_at` (seniority);
    /// one that left or was retired as dead gets a fresh one, so it rejoins as the youngest
    /// and does not take the leadership back.
    async fn node_register(&self, name: &str, labels: &[String], capacity: u32) -> StoreResult<NodeInfo>;

    /// Refreshes a node's heartbeat to the database now, which it returns; `None` if the node
    /// is unknown or left.
    async fn node_heartbeat(&self, name: &str) -> StoreResult<Option<Millis>>;

    /// One membership tick of a node, in one transaction: its heartbeat, the renewal of the
    /// lease term it held (when asked; only if the heartbeat found it), the node list, and the
    /// versions and probes of [`TickView`]. An idle node costs the database this one
    /// transaction per heartbeat interval.
    async fn node_tick(&self, ask: &crate::model::TickAsk<'_>) -> StoreResult<crate::model::TickView>;

    /// Marks a node as left (clean shutdown).
    async fn node_leave(&self, name: &str) -> StoreResult<()>;

    /// The database now and every node, oldest `joined_at` first.
    async fn node_list(&self) -> StoreResult<(Millis, Vec<NodeInfo>)>;

    /// The storage gate, under the leader's fence: in one transaction, abandons the running
    /// execution if it is older than `stale_after_ms` or was begun under another lease term
    /// (a former leader's, dead or stalled), then records a `running` execution of this term
    /// unless one still runs (then a `blocked` record).
    async fn service_begin(&self, fence: &Fence, stale_after_ms: i64) -> StoreResult<ServiceGate>;

    /// Ends an execution (unless it was abandoned meanwhile) with what it did.
    async fn service_finish(&self, id: i64, status: ServiceRunStatus, detail: &serde_json::Value) -> StoreResult<()>;

    /// The latest executions, newest first.
    async fn service_list(&self, limit: u32) -> StoreResult<Vec<ServiceRun>>;

    /// Deletes execution records that started more than `older_than_ms` ago (fenced).
    async fn service_prune(&self, fence: &Fence, older_than_ms: i64) -> StoreResult<u64>;

    /// pynenc's `max_pending` recovery by the leader (fenced; its node writes the history): up
    /// to `limit` invocations pending for more than `older_than_ms` move `pending_recovery →
    /// rerouted` (with history). Returns how many.
    /// A lost attempt counts toward `max_attempts`: an invocation whose lost
    /// attempt was its last ends `failed` instead (error kind `lost`, saying how many were lost).
    async fn invocation_recover_pending(&self, fence: &Fence, older_than_ms: i64, limit: u32) -> StoreResult<u64>;

    /// Running concurrency that drops instead of rerouting: up to `limit` runnable
    /// (`registered`, `rerouted`) invocations of `tasks` whose running scope is held move to
    /// `concurrency_controlled_final` (with history, by the leader: fenced). Returns their ids.
    async fn invocation_drop_blocked(&self, fence: &Fence, tasks: &[String], limit: u32) -> StoreResult<Vec<String>>;

    /// Stores a new trigger (its `created_at` is set by the database). The first one (no other
    /// exists) also starts the evaluation's cursors at the heads of the history and the events,
    /// in the same transaction: the evaluation skips its reads while no trigger exists.
    async fn trigger_insert(&self, trigger: &Trigger) -> StoreResult<Trigger>;

    /// Every trigger, oldest first.
    async fn trigger_list(&self) -> StoreResult<Vec<Trigger>>;

    /// One trigger.
    async fn trigger_get(&self, id: &str) -> StoreResult<Option<Trigger>>;

    /// Removes a trigger and its runs; false if it did not exist.
    async fn trigger_delete(&self, id: &str) -> StoreResult<bool>;

    /// Saves what one trigger evaluation leaves behind, in one transaction of one statement
    /// per table: the new `states` of triggers (by id; a trigger deleted meanwhile is skipped),
    /// the `runs` that fired (a run recorded before is skipped) and the new `cursors`
    /// positions. Fenced: only the leader moves the cursors.
    async fn trigger_evaluation_save(
        &self,
        fence: &Fence,
        states: &[(String, serde_json::Value)],
        runs: &[TriggerRun],
        cursors: &[(&str, i64)],
    ) -> StoreResult<()>;

    /// The latest firings of a trigger, newest first.
    async fn trigger_runs(&self, trigger_id: &str, limit: u32) -> StoreResult<Vec<TriggerRun>>;

    /// Stores an event.
    async fn event_insert(&self, code: &str, payload: &serde_json::Value) -> StoreResult<Event>;

    /// Events after sequence `after` (at most `limit`, only those older than `settle_ms`)
    /// and the sequence number to continue from.
    async fn events_after(&self, after: i64, settle_ms: i64, limit: u32) -> StoreResult<(Vec<Event>, i64)>;

    /// Status changes of `tasks` after history sequence `after` (scanning at most `limit`
    /// history rows older than `settle_ms`) and the sequence number to continue from.
    async fn status_changes_after(
        &self,
        after: i64,
        tasks: &[String],
        settle_ms: i64,
        limit: u32,
    ) -> StoreResult<(Vec<StatusChange>, i64)>;

    /// Deletes events older than `older_than_ms` (fenced).
    async fn events_purge(&self, fence: &Fence, older_than_ms: i64) -> StoreResult<u64>;

    /// The cursors of the trigger evaluation (`history`, `events`), each absent before its
    /// first use.
    async fn trigger_cursors(&self) -> StoreResult<std::collections::HashMap<String, i64>>;

    /// Takes or renews the leader lease for `node` for `ttl_ms` (database clock). `held` is the
    /// epoch of the term `node` believes it holds: when the lease is still `node`'s with that
    /// epoch it is renewed; otherwise `node` may take it if it is free, expired, or held by a node
    /// that is not live (no heartbeat within `ttl_ms`, or left), and every such new term bumps
    /// the epoch (also for the same node in a new life). Returns the epoch held, or `None`.
    async fn lease_claim(&self, node: &str, ttl_ms: i64, held: Option<i64>) -> StoreResult<Option<i64>>;

    /// The leader lease as it is now.
    async fn lease_get(&self) -> StoreResult<Lease>;

    /// The token ring: version, size and (when `owners`) every token's owner.
    async fn ring_get(&self, owners: bool) -> StoreResult<TokenRing>;

    /// Tokens owned per node.
    async fn token_loads(&self) -> StoreResult<Vec<crate::model::TokenLoad>>;

    /// Per node that owns invocations, what it owns (every owned status: claimed `pending`,
    /// `running`, `paused`, `resumed`) and runs.
    async fn owned_per_node(&self) -> StoreResult<Vec<crate::model::NodeLoad>>;

    /// Whether `node` owns at least one token (an index probe: cheap enough for every tick).
    async fn token_owns_any(&self, node: &str) -> StoreResult<bool>;

    /// Swaps the ring to a new assignment in one transaction, fenced by the lease: only if the
    /// fence still holds and the ring is still at `seen_version` (else `None`, nothing written).
    /// Writes the moved tokens only, bumps the version and records `audit` (its `version` is
    /// filled in). Returns the new version.
    async fn ring_swap(
        &self,
        fence: &Fence,
        seen_version: i64,
        total_tokens: u32,
        moved: &[(u32, String)],
        audit: &TokenAudit,
    ) -> StoreResult<Option<i64>>;

    /// The latest ring swaps, newest first.
    async fn token_audits(&self, limit: u32) -> StoreResult<Vec<TokenAudit>>;
}

/// A waiting invocation that takes a later debounced call's arguments and start
/// ([`Store::invocation_debounce`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Debounce {
    /// The waiting invocation.
    pub id: String,
    /// Its debounce scope (its registration scope), checked: the write applies only while it
    /// is `registered` under it.
    pub scope: String,
    /// The later call's canonical arguments.
    pub args: String,
    /// Their call id.
    pub call_id: String,
    /// Their running scope.
    pub run_scope: Option<String>,
    /// Claimable no earlier than this many ms from now.
    pub delay_ms: u64,
}

/// What a node may claim besides its tokens: pinned tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimFilter {
    /// Tasks pinned to other nodes: never claimed here.
    pub excluded: Vec<String>,
    /// Tasks pinned to this node: claimed whatever their token.
    pub pinned_here: Vec<String>,
    /// After how long claimable a call ranks as priority 9 (ms); `None`: [`PRIORITY_AGING_MS`].
    pub aging_ms: Option<i64>,
    /// Some task names a rate limit: the dispatcher claims their calls apart
    /// ([`Store::invocation_claim_rate_limited`]); the ordinary claim leaves them out anyway.
    pub rate_limited: bool,
}

/// What a claim of rate-limited calls took ([`Store::invocation_claim_rate_limited`]).
#[derive(Debug, Default)]
pub struct RateClaim {
    /// The claimed calls, by id.
    pub claimed: Vec<Claimed>,
    /// How long until the earliest end of a used-up window that held a candidate back (ms).
    pub held_for_ms: Option<i64>,
}

/// After how long claimable a call of any priority ranks as the highest (the aging of
/// priorities): 30 s by default (`--priority-aging-ms`).
pub const PRIORITY_AGING_MS: i64 = 30_000;

/// How long a claimed attempt may wait for its node's first heartbeat when the caller does not
/// say (ms; tests only).
#[cfg(test)]
pub const DEFAULT_REPORT_WINDOW_MS: i64 = 10_000;

/// A live instance a heartbeat refreshed, with the control signal waiting for its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInstance {
    /// The invocation.
    pub invocation_id: String,
    /// The attempt.
    pub attempt: u32,
    /// Its status after the heartbeat.
    pub status: String,
    /// A control signal, e.g. `cancel` (the invocation was cancelled elsewhere); the node
    /// interrupts the guest on any signal. Only `cancel` is sent today.
    pub signal: Option<String>,
}

/// What the scheduler reads before a step of a workflow (outside any transaction).
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// The workflow as read.
    pub workflow: WorkflowInfo,
    /// Running nodes per task.
    pub running: HashMap<String, u32>,
    /// Whether some node failed.
    pub any_failed: bool,
    /// Running nodes whose invocation is final (what the step would sync).
    pub syncable: i64,
    /// Ready nodes that could start, in `seq` order: `(node, task, canonical args)`.
    pub candidates: Vec<(String, String, String)>,
}

/// A node the step should start, with the invocation built for it; `None` when the
/// invocation could not be built (its task is gone): the node fails instead.
#[derive(Debug, Clone)]
pub struct NodeStart {
    /// Node id.
    pub node: String,
    /// Its task (counted against the limits even when the invocation could not be built).
    pub task: String,
    /// Its invocation.
    pub invocation: Option<NewInvocation>,
}

/// What one step changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutcome {
    /// The workflow after the step (`None` if it does not exist).
    pub workflow: Option<WorkflowInfo>,
    /// Nodes synced from final invocations.
    pub synced: usize,
    /// Nodes that became ready.
    pub readied: usize,
    /// Invocations routed for started nodes.
    pub started: Vec<String>,
    /// Nodes that became blocked.
    pub blocked: usize,
    /// Nodes that failed at their start (their invocation could not be built).
    pub unstartable: usize,
}

impl StepOutcome {
    /// Whether the step changed any node.
    pub fn changed(&self) -> bool {
        self.moved() > 0
    }

    /// How many node status changes the step made.
    pub fn moved(&self) -> usize {
        self.synced + self.readied + self.blocked + self.unstartable + self.started.len()
    }
}

/// Durable workflows and arrays (Jobmon): the graph, its nodes' statuses and the step that
/// moves them. Part of every [`Store`]. Every write is one transaction of a constant number
/// of statements, whatever the size of the workflow.
#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Stores a validated workflow in one transaction (workflow row, nodes, edges): nodes
    /// without upstreams start `ready`, the others `waiting`; the workflow is `queued`.
    async fn workflow_create(&self, wf: &NewWorkflow) -> StoreResult<WorkflowInfo>;

    /// One workflow.
    async fn workflow_get(&self, id: &str) -> StoreResult<Option<WorkflowInfo>>;

    /// The newest workflows.
    async fn workflow_list(&self, limit: u32) -> StoreResult<Vec<WorkflowInfo>>;

    /// Ids of the workflows that may still move, oldest first.
    async fn workflow_active(&self, limit: u32) -> StoreResult<Vec<String>>;

    /// Nodes per status.
    async fn workflow_counts(&self, id: &str) -> StoreResult<Vec<(NodeStatus, i64)>>;

    /// Every node in `seq` order, with its upstreams.
    async fn workflow_nodes(&self, id: &str) -> StoreResult<Vec<WorkflowNode>>;

    /// The nodes changed after `since` (database ms; no upstreams) and the time to pass as
    /// the next `since`: the database now minus [`SYNC_MARGIN_MS`] (a step stamps its rows
    /// when it runs and commits later, so a client sees some rows twice, never misses one).
    async fn workflow_nodes_since(&self, id: &str, since: Millis) -> StoreResult<(Millis, Vec<WorkflowNode>)>;

    /// Reads what a step needs to decide what to start: the workflow, running counts, and
    /// the ready candidates that could fill its free places (none when it is final, paused,
    /// failed fast or full).
    async fn workflow_plan(&self, id: &str) -> StoreResult<Option<StepPlan>>;

    /// The step, one transaction: locks the workflow (skips it when final), syncs running
    /// nodes from their final invocations, readies the direct downstream of nodes that became
    /// done, starts `starts` (in order) that are still ready and fit the limits counted again
    /// here (routing their invocations with `registered` history) unless the workflow is
    /// paused or failed fast, blocks everything downstream of failed nodes, and recomputes
    /// the workflow's status when anything changed.
    async fn workflow_step(&self, id: &str, starts: &[NodeStart]) -> StoreResult<StepOutcome>;

    /// Pauses: nothing new starts (status `halted`). A final workflow is a `Conflict`.
    async fn workflow_pause(&self, id: &str) -> StoreResult<WorkflowInfo>;

    /// Resumes a paused (or running) workflow; `cold` also puts its running nodes back to
    /// `ready` and returns their invocations, for the caller to cancel. A final workflow is a
    /// `Conflict`.
    async fn workflow_resume(&self, id: &str, cold: bool) -> StoreResult<(WorkflowInfo, Vec<String>)>;

    /// Cancels: unfinished nodes → `cancelled`, the workflow → `cancelled`; returns the
    /// invocations of started nodes, for the caller to cancel. Cancelling a cancelled
    /// workflow changes nothing; a done or failed one is a `Conflict`.
    async fn workflow_cancel(&self, id: &str) -> StoreResult<(WorkflowInfo, Vec<String>)>;
}

/// How far behind the database now the `server_time` of [`WorkflowStore::workflow_nodes_since`]
/// stays: longer than a step transaction takes between stamping its rows and committing.
pub const SYNC_MARGIN_MS: Millis = 1_000;

/// A stored API key: never the secret, only its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Unique name.
    pub name: String,
    /// What it may do.
    pub role: crate::model::key::Role,
    /// SHA-256 of the key, lower-case hex.
    pub hash: String,
    /// Creation (database clock).
    pub created_at: Millis,
    /// Last use as recorded (batched: at most once per key per heartbeat interval).
    pub last_used_at: Option<Millis>,
}

/// API keys (`api_keys`, migration 0011). Part of every [`Store`].
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key; a taken name is a `Conflict`.
    async fn key_insert(&self, name: &str, role: crate::model::key::Role, hash: &str) -> StoreResult<ApiKey>;

    /// Every key, by name.
    async fn key_list(&self) -> StoreResult<Vec<ApiKey>>;

    /// Deletes a key; false if there was none of that name.
    async fn key_delete(&self, name: &str) -> StoreResult<bool>;

    /// Records that the named keys were used now: ONE statement whatever their number.
    async fn key_touch(&self, names: &[String]) -> StoreResult<()>;
}

/// The change feed's reads (`orchestrator/feed.rs`): the invocation history in sequence order,
/// and on PostgreSQL the notifications that tell other nodes it grew. Part of every [`Store`].
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// The highest history sequence number stored (0 if none).
    async fn history_head(&self) -> StoreResult<i64>;

    /// At most `limit` status changes after sequence `after`, in sequence order, and the
    /// database clock. On PostgreSQL a sequence number is taken before its transaction
    /// commits, so a later one can be visible before an earlier one: the caller decides how
    /// long to wait for a gap ([`ChangeFeed::history_gaps_possible`]).
    async fn changes_after(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<(Vec<crate::model::feed::ChangeEvent>, Millis)>;

    /// Whether rows can become visible out of sequence order (PostgreSQL: yes; SQLite, whose
    /// one writer commits in order: no).
    fn history_gaps_possible(&self) -> bool;

    /// Tells the other nodes that the history grew (PostgreSQL `NOTIFY` with `payload`, which
    /// their [`ChangeListener`] returns; nothing on SQLite).
    async fn changes_notify(&self, payload: &str) -> StoreResult<()>;

    /// Listens for other nodes' [`ChangeFeed::changes_notify`]; `None` on SQLite (one node).
    async fn changes_listen(&self) -> StoreResult<Option<ChangeListener>>;
}

/// The size of a database and the work it has done ([`Store::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct StoreUsage {
    /// Bytes it holds (SQLite: pages × page size, the WAL's pages included; PostgreSQL:
    /// `pg_database_size`).
    pub bytes: i64,
    /// Transactions it has committed or rolled back since its statistics were reset
    /// (PostgreSQL's `pg_stat_database`, which each connection reports about once a second);
    /// `None` on SQLite, which keeps no such count.
    pub transactions: Option<i64>,
}

/// How often the daemon runs [`Store::checkpoint`]. The log grows by about 2 MB in that time
/// under a full load (a 100,000-node workflow at 3,500 nodes/s), which one checkpoint copies in
/// a few ms beside the writer.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Durable state of a Warden host. Methods are verb-first and grouped by noun.
#[async_trait]
pub trait Store: Coordination + WorkflowStore + KeyStore + ChangeFeed + Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn dialect(&self) -> &'static str;

    /// Checks that the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// The database clock in milliseconds since the Unix epoch.
    async fn now(&self) -> StoreResult<Millis>;

    /// What the database holds and has done, for `warden bench` ([`StoreUsage`]).
    async fn usage(&self) -> StoreResult<StoreUsage>;

    /// SQLite: copies what the write-ahead log holds into the database file (a passive
    /// checkpoint, on a connection of its own: it never holds the writer nor waits for it);
    /// PostgreSQL: nothing. The daemon of a SQLite store runs it every [`CHECKPOINT_EVERY`]
    /// (`server.rs`), so that commits no longer run the checkpoint themselves (see `sqlite.rs`).
    async fn checkpoint(&self) -> StoreResult<()>;

    /// Housekeeping after many changes (the orchestrator calls it every so many routings and
    /// workflow node moves): on PostgreSQL, what its statistics say is due, by autovacuum's
    /// rules, for when autovacuum is off or slow: an `ANALYZE` of a table the calls churn once
    /// its changes since the last one outnumber its rows, and a `VACUUM` of the workflow node
    /// table once its dead rows are a fifth of the live ones. An ANALYZE also makes every
    /// session plan again the statements it had cached while the table was small (which kept
    /// scanning it whole); a VACUUM removes the dead index entries each node status change
    /// leaves. Nothing on SQLite, which updates index entries in place and caches no plan by
    /// table size. See `store/tidy.rs`.
    async fn tidy(&self) -> StoreResult<()>;

    /// Stores a component (bytes and metadata) and registers its tasks, in one transaction.
    /// Uploading new code under a name stores it as the component's next version and makes
    /// it current (the same code as the current version stores nothing new); versions more
    /// than [`crate::model::KEPT_COMPONENT_VERSIONS`] behind that neither are current nor
    /// have unfinished invocations bound to them are deleted. Its tasks are replaced, but
    /// options a user changed with `task_update` are kept for tasks that stay. A task name
    /// owned by another component is a `Conflict`, and so is a version without a task that
    /// has unfinished invocations (they would wait for ever; the message names the task and
    /// how many).
    async fn component_put(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        tasks: &[TaskDef],
    ) -> StoreResult<ComponentInfo>;

    /// All components, by name (no bytes).
    async fn component_list(&self) -> StoreResult<Vec<ComponentInfo>>;

    /// One component (no bytes).
    async fn component_get(&self, name: &str) -> StoreResult<Option<ComponentInfo>>;

    /// Makes stored version `version` of a component current again (a rollback) and
    /// registers the tasks it describes (`tasks`), as [`Store::component_put`] does.
    /// `NotFound` for an unknown component or version.
    async fn component_activate(&self, name: &str, version: u64, tasks: &[TaskDef]) -> StoreResult<ComponentInfo>;

    /// The stored versions of a component, newest first; `None` for an unknown component.
    async fn component_versions(&self, name: &str) -> StoreResult<Option<Vec<ComponentVersion>>>;

    /// The bytes of one version of a component.
    async fn component_version_bytes(&self, name: &str, version: u64) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes a version of a component: a `Conflict` while it is current or unfinished
    /// invocations are bound to it, `NotFound` for an unknown component or version.
    async fn component_version_delete(&self, name: &str, version: u64) -> StoreResult<()>;

    /// Removes a component and its tasks. Returns false if it did not exist. While invocations
    /// of its tasks are unfinished (queued, running, on their way back) it is a `Conflict`
    /// saying how many and how to cancel them: removing it would strand them for ever.
    async fn component_delete(&self, name: &str) -> StoreResult<bool>;

    /// All tasks, by name.
    async fn task_list(&self) -> StoreResult<Vec<TaskDef>>;

    /// One task.
    async fn task_get(&self, name: &str) -> StoreResult<Option<TaskDef>>;

    /// Changes a task's options; `None` if the task does not exist.
    async fn task_update(&self, name: &str, patch: &TaskPatch) -> StoreResult<Option<TaskDef>>;

    /// Inserts invocations in status `registered` with their first history row, all in one
    /// transaction (one statement per table, whatever the batch size). Unknown task → `NotFound`.
    async fn invocation_insert_batch(&self, calls: &[NewInvocation]) -> StoreResult<Vec<Invocation>>;

    /// Claims up to `limit` runnable invocations (registered, retry, rerouted) of unpaused tasks,
    /// oldest first, for `node`: each moves to `pending`, its `attempts` grows by one and the
    /// node becomes its owner with that attempt as epoch; history rows in the same transaction.
    /// Concurrent claimers never get the same invocation.
    /// The commit does not wait for the disk (it becomes durable with the next durable commit):
    /// a claim lost in a crash only means the invocation is claimed again. (Tests only: the
    /// dispatcher claims with [`Store::invocation_claim_reporting`].)
    #[cfg(test)]
    async fn invocation_claim(&self, node: &str, limit: u32) -> StoreResult<Vec<Claimed>> {
        self.invocation_claim_reporting(node, limit, DEFAULT_REPORT_WINDOW_MS, &ClaimFilter::default()).await
    }

    /// [`Store::invocation_claim`], writing a `queued` task instance for every claimed attempt
    /// (same transaction) that its node must report for within `report_window_ms`, within
    /// `filter` (pins and tokens): invocations of tasks pinned elsewhere are skipped, those of
    /// tasks pinned to this node taken whatever their token, the rest only on the node's tokens
    /// (or without one).
    async fn invocation_claim_reporting(
        &self,
        node: &str,
        limit: u32,
        report_window_ms: i64,
        filter: &ClaimFilter,
    ) -> StoreResult<Vec<Claimed>>;

    /// Claims up to `limit` runnable calls of tasks that name a rate limit (the ordinary claim
    /// leaves them out), within `filter` as [`Store::invocation_claim_reporting`] does, and
    /// only while the limit's key has starts left in its current window (database clock,
    /// windows aligned on multiples of the limit's `per_ms`); across nodes, claims of one limit
    /// go one at a time (its row is locked first). A claimed call counts as started at its
    /// claim, whose time is the `pending` history's. `held_for_ms`: how long until the
    /// earliest end of a window that held a candidate back, when one did.
    async fn invocation_claim_rate_limited(
        &self,
        node: &str,
        limit: u32,
        report_window_ms: i64,
        filter: &ClaimFilter,
    ) -> StoreResult<RateClaim>;

    /// Creates or replaces rate limit `name` (`limit` starts per `per_ms` ms, per value at
    /// `key` when given); true if it is new. A new window length or key forgets the starts
    /// counted so far.
    async fn rate_limit_put(
        &self,
        name: &str,
        limit: u64,
        per_ms: u64,
        key: Option<&str>,
    ) -> StoreResult<(RateLimit, bool)>;

    /// Every rate limit with the tasks naming it, by name.
    async fn rate_limit_list(&self) -> StoreResult<Vec<RateLimit>>;

    /// Rate limit `name` with the tasks naming it.
    async fn rate_limit_get(&self, name: &str) -> StoreResult<Option<RateLimit>>;

    /// Deletes rate limit `name` (`Conflict` while a task names it); false if there is none.
    async fn rate_limit_delete(&self, name: &str) -> StoreResult<bool>;

    /// When the current window of rate limit `limit` ends for `key` (`""` for an unkeyed
    /// limit), if the starts of that key used it up; `None` otherwise.
    async fn rate_limited_until(&self, limit: &str, key: &str) -> StoreResult<Option<Millis>>;

    /// Applies a batch of compare-and-swap transitions in one transaction; each row changes
    /// only if it is in `from` and (when given) owned by `owner`. Entering a status that
    /// releases or overrides ownership clears the owner (entering one that acquires it, i.e.
    /// `pending` outside a claim, makes `node` the owner and starts a new attempt); `attempts`
    /// is otherwise kept (`retry` keeps it). `result` and `error`, when given, replace the
    /// stored ones; when absent the previous values stay (the last error remains on record).
    /// One history row per status of `path`, in order. One outcome per transition, in order: a
    /// `path` that is not a walk of the status table from `from` (or is empty) is
    /// `BadTransition` and never reaches the database; a refused compare-and-swap says why
    /// (`NotFound`, `WrongOwner`, `LostRace`). An id repeated in the batch is applied in batch order
    /// (each later change sees the earlier one). A `result` that is not JSON fails the batch.
    /// The `instance` of an applied change (the attempt it ends) is recorded in the same
    /// transaction; a second record of the same attempt is ignored.
    async fn invocation_transition_batch(&self, changes: &[Transition]) -> StoreResult<Vec<TransitionOutcome>>;

    /// Moves every invocation owned by `node` in an owned status to `rerouted` through the
    /// recovery statuses (`pending_recovery` from pending, `running_recovery` otherwise), with
    /// history written by `node` itself. Used at start-up to recover this node's previous life
    /// (dead nodes are retired by the leader: [`Store::node_retire`]). Returns how many.
    /// A lost attempt counts toward `max_attempts`: an invocation whose lost
    /// attempt was its last ends `failed` instead (error kind `lost`, saying how many were lost).
    async fn invocation_recover_node(&self, node: &str) -> StoreResult<u64>;

    /// The leader retires a dead node (fenced), in one transaction: every invocation it owns in
    /// an owned status goes to `rerouted` through the recovery statuses, with history written
    /// by the leader, and the node is marked left (it registers again if it comes back, keeping
    /// its seniority). Returns how many invocations were rerouted (or failed).
    /// A lost attempt counts toward `max_attempts`: an invocation whose lost
    /// attempt was its last ends `failed` instead (error kind `lost`, saying how many were lost).
    async fn node_retire(&self, node: &str, fence: &Fence) -> StoreResult<u64>;

    /// One invocation.
    async fn invocation_get(&self, id: &str) -> StoreResult<Option<Invocation>>;

    /// Why invocation `id` waits, if it is runnable and held back by running concurrency
    /// (another invocation owns its running scope); `None` otherwise. A read: the claims record
    /// the first time a call is held back (`concurrency_controlled` in its history, once).
    async fn invocation_waiting(&self, id: &str) -> StoreResult<Option<crate::model::Waiting>>;

    /// Invocations that already answer calls: `registered` ones whose registration scope is in
    /// `scopes`, and any whose idempotency key is in `keys`. Inserting a second `registered`
    /// invocation of a scope, or a second use of a key, is a `Conflict` (unique indexes).
    async fn invocation_find_routed(&self, scopes: &[String], keys: &[String]) -> StoreResult<Vec<Invocation>>;

    /// Debounced calls (`options.debounce_ms`): each named invocation that is still
    /// `registered` under its debounce scope takes the later call's arguments (with their
    /// call id and running scope) and is claimable no earlier than `delay_ms` from now
    /// (database clock), in one statement. Returns the ids it changed; one missing was claimed
    /// (or cancelled) meanwhile, and its call must be routed anew.
    async fn invocation_debounce(&self, calls: &[Debounce]) -> StoreResult<Vec<String>>;

    /// Deletes up to `limit` final invocations (oldest first) whose last change is more than
    /// `older_than_ms` old on the database clock, with their history, in one transaction.
    /// Returns how many invocations went. Fenced: only the leader purges.
    async fn invocation_purge(&self, fence: &Fence, older_than_ms: u64, limit: u32) -> StoreResult<u64>;

    /// The recorded attempts of an invocation, in order.
    async fn instance_list(&self, invocation_id: &str) -> StoreResult<Vec<TaskInstance>>;

    /// The heartbeat of `node` on behalf of the live instances it holds (`(invocation, attempt)`):
    /// ONE statement whatever their number pushes their `report_by` to database now +
    /// `report_window_ms` and brings `triaging` ones back to `running`. Returns the refreshed
    /// instances with their control signals; a held instance missing from the answer was
    /// taken away (triaged), and its guest must stop.
    async fn instance_heartbeat(
        &self,
        node: &str,
        held: &[crate::model::instance::HeldAttempt],
        report_window_ms: i64,
    ) -> StoreResult<Vec<HeldInstance>>;

    /// Applies one `change` (a compare-and-swap like any transition: a user's cancel of an
    /// invocation another node owns) and, if it applied, sets control signal `signal` on the
    /// invocation's live instance, both in one transaction, so that the owner always hears of
    /// it at its next heartbeat. Returns the outcome and the node signalled.
    async fn invocation_transition_signal(
        &self,
        change: &Transition,
        signal: &str,
    ) -> StoreResult<(TransitionOutcome, Option<String>)>;

    /// Live instances whose `report_by` is before `now` (the triage's clock), oldest first.
    async fn instance_overdue(&self, now: Millis, limit: u32) -> StoreResult<Vec<Overdue>>;

    /// Applies triage decisions in one transaction: each instance changes only if its status
    /// and `report_by` are still as read (a heartbeat that came in wins); for the changed ones
    /// marked `reroute`, the invocation, if the instance's node still owns it with that
    /// attempt, goes `pending_recovery | running_recovery → rerouted` with history written by
    /// the leader (fenced: only the leader triages). Returns the instances changed and the
    /// invocations rerouted (or failed).
    /// A lost attempt counts toward `max_attempts`: an invocation whose lost
    /// attempt was its last ends `failed` instead (error kind `lost`, saying how many were lost).
    async fn instance_triage_apply(&self, decisions: &[Triage], fence: &Fence) -> StoreResult<(usize, Vec<String>)>;

    /// Resource use of the latest `limit` attempts of a task, newest first.
    async fn instance_usage(&self, task: &str, limit: u32) -> StoreResult<Vec<crate::model::instance::AttemptUsage>>;

    /// The invocations `parent` called, in call order (children ids sort by call sequence).
    async fn invocation_children(&self, parent: &str) -> StoreResult<Vec<Invocation>>;

    /// Several invocations by id (missing ids are skipped).
    async fn invocation_get_many(&self, ids: &[String]) -> StoreResult<Vec<Invocation>>;

    /// A page of invocations, newest first.
    async fn invocation_list(&self, filter: &InvocationFilter) -> StoreResult<Vec<Invocation>>;

    /// Counts per task and status, optionally for one task / status.
    async fn invocation_count(
        &self,
        task: Option<&str>,
        status: Option<InvocationStatus>,
    ) -> StoreResult<Vec<StatusCount>>;

    /// The status history of one invocation, oldest first.
    async fn invocation_history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>>;
}
