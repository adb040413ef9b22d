//! Durable state behind one `Store` trait: components, tasks, invocations and their history.
//! Two implementations on sqlx share every query that both dialects accept: SQLite (the
//! embedded default: WAL, `synchronous=FULL`) and PostgreSQL (clusters). This module is the
//! only place with SQL. Every write that happens per invocation takes a batch and costs one
//! transaction, whatever the batch size (on SQLite, the hot ones are one round trip to the
//! database thread each: see `engine.rs`); every status change is a compare-and-swap that
//! writes its history rows in the same transaction. Timestamps come from the database clock.

use async_trait::async_trait;

use crate::model::{
    Claimed, ComponentInfo, HistoryEntry, Invocation, InvocationFilter, InvocationStatus, Millis, NewInvocation,
    TaskDef, TaskInstance, TaskPatch, Transition,
};

#[cfg(test)]
mod conformance;
mod engine;
pub mod postgres;
mod sql;
pub mod sqlite;

pub use engine::SqlStore;
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
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of one transition of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The compare-and-swap matched and the change (and history) is stored.
    Applied,
    /// The row was not in the expected status or had another owner: the change was dropped.
    /// For an attempt's write this means the attempt was taken away (fencing).
    Rejected,
}

/// Counts of invocations per task and status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusCount {
    /// Task name.
    pub task: String,
    /// Status.
    pub status: InvocationStatus,
    /// Number of invocations.
    pub count: i64,
}

/// Durable state of a Warden host. Methods are verb-first and grouped by noun.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn dialect(&self) -> &'static str;

    /// Checks that the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// The database clock in milliseconds since the Unix epoch.
    async fn now(&self) -> StoreResult<Millis>;

    /// Stores a component (bytes and metadata) and registers its tasks, in one transaction.
    /// Re-uploading a name replaces the component; its tasks are replaced, but options a user
    /// changed with `task_update` are kept for tasks that stay. A task name owned by another
    /// component is a `Conflict`.
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

    /// The bytes of a component.
    async fn component_bytes(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Removes a component and its tasks. Returns false if it did not exist.
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
    /// a claim lost in a crash only means the invocation is claimed again.
    async fn invocation_claim(&self, node: &str, limit: u32) -> StoreResult<Vec<Claimed>>;

    /// Applies a batch of compare-and-swap transitions in one transaction; each row changes
    /// only if it is in `from` and (when given) owned by `owner`. Entering a status that
    /// releases or overrides ownership clears the owner (entering one that acquires it, i.e.
    /// `pending` outside a claim, makes `node` the owner and starts a new attempt); `attempts`
    /// is otherwise kept (`retry` keeps it). `result` and `error`, when given, replace the
    /// stored ones; when absent the previous values stay (the last error remains on record).
    /// One history row per status of `path`, in order. One outcome per transition, in order;
    /// an empty `path` is `Rejected`. An id repeated in the batch is applied in batch order
    /// (each later change sees the earlier one). A `result` that is not JSON fails the batch.
    /// The `instance` of an applied change (the attempt it ends) is recorded in the same
    /// transaction; a second record of the same attempt is ignored.
    async fn invocation_transition_batch(&self, changes: &[Transition]) -> StoreResult<Vec<TransitionOutcome>>;

    /// Moves every invocation owned by `node` in an owned status to `rerouted` through the
    /// recovery statuses (`pending_recovery` from pending, `running_recovery` otherwise), with
    /// history. Used at start-up to recover this node's previous life. Returns how many.
    async fn invocation_recover_node(&self, node: &str) -> StoreResult<u64>;

    /// One invocation.
    async fn invocation_get(&self, id: &str) -> StoreResult<Option<Invocation>>;

    /// Invocations that already answer calls: `registered` ones whose registration scope is in
    /// `scopes`, and any whose idempotency key is in `keys`. Inserting a second `registered`
    /// invocation of a scope, or a second use of a key, is a `Conflict` (unique indexes).
    async fn invocation_find_routed(&self, scopes: &[String], keys: &[String]) -> StoreResult<Vec<Invocation>>;

    /// Deletes up to `limit` final invocations (oldest first) whose last change is more than
    /// `older_than_ms` old on the database clock, with their history, in one transaction.
    /// Returns how many invocations went.
    async fn invocation_purge(&self, older_than_ms: u64, limit: u32) -> StoreResult<u64>;

    /// The recorded attempts of an invocation, in order.
    async fn instance_list(&self, invocation_id: &str) -> StoreResult<Vec<TaskInstance>>;

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
