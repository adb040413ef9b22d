//! The one implementation of [`Store`], [`SqlStore`], for both databases; [`SqliteStore`](super::SqliteStore)
//! and [`PgStore`](super::PgStore) only open it.
//!
//! # Why an enum of native pools and not `sqlx::Any` or generics
//!
//! [`SqlStore`] holds a [`Pools`] enum: SQLite (a pool of readers plus a pool of exactly ONE
//! writer connection, since SQLite allows one writer) or PostgreSQL (one pool). Every method is
//! written once; the [`on_read!`] and [`in_tx!`] macros expand its body once per arm, so the
//! same source compiles against each native driver. Compared with the alternatives:
//!
//! - `sqlx::Any` would erase types at run time, configure SQLite only through URL strings and
//!   `after_connect` hooks, cannot express the reader/writer split cleanly, and would stand in
//!   the way of PostgreSQL-only features the cluster will want (LISTEN/NOTIFY, advisory locks).
//! - Functions generic over `sqlx::Database` need a wall of higher-ranked trait bounds on every
//!   helper, for no gain over the macro expansion.
//!
//! Rows are decoded through `#[derive(sqlx::FromRow)]` structs of plain column types
//! (`String`, `i64`, `bool`, `Option<…>`) that both drivers decode; turning them into domain
//! types is ordinary Rust that reports bad values as [`StoreError::Corrupt`].
//!
//! # Batches
//!
//! Every batched write is one transaction with a constant number of statements: the batch is
//! one JSON text parameter expanded in SQL (see [`super::sql`]), and history rows are built
//! from what the first statement returned (ids, attempts, database time) and inserted by one
//! more statement. A transition batch in which an id appears more than once is split into
//! passes (the n-th pass holds each id's n-th transition), still inside the one transaction,
//! so a batch costs `2 × (highest repetition of one id)` statements: 2 in the normal case.
//! Within a pass the rows are sent sorted by id, so concurrent PostgreSQL transactions lock
//! overlapping rows in the same order.
//!
//! # SQLite: one round trip per hot write
//!
//! sqlx runs each SQLite connection on its own worker thread, and every `execute`/`fetch_*`
//! is a round trip to it (a channel send and two thread wake-ups, tens of µs each), which
//! costs more than the work of a small transaction: `BEGIN`, two statements, `COMMIT` and the
//! two `PRAGMA synchronous` of a relaxed commit were up to 6 round trips, for a commit whose
//! fsync alone takes ≈ 0.2 ms. So the three writes on the path of every call, routing
//! ([`Store::invocation_insert_batch`]), claiming ([`Store::invocation_claim`]) and a
//! transition batch of one pass ([`Store::invocation_transition_batch`]), run on SQLite as
//! ONE query string holding the whole transaction, `[PRAGMA synchronous = NORMAL;] BEGIN
//! IMMEDIATE; <change> RETURNING …; <history>; COMMIT[; PRAGMA synchronous = FULL]` (the
//! `*_ONE_TRIP` scripts of [`super::sql`], run by [`one_trip`]): sqlx prepares and steps the
//! statements of a string one after the other on the worker thread, binds `$n` by number in
//! each of them, and returns the rows of all of them, here those of the `RETURNING`.
//!
//! - The history statement cannot see what the change returned, so it reads `invocations`
//!   again: the insert fails as a whole unless every call was inserted (an unknown task breaks
//!   a NOT NULL constraint, see [`sql::INVOCATION_INSERT_ONE_TRIP`]), and claims and
//!   transitions stamp the rows they change with a random per-transaction marker (`last_tx`,
//!   [`tx_marker`]) that the history statement selects on. A row the compare-and-swap did not
//!   match keeps its old marker, so it never gets history, even if it already is in the
//!   target status.
//! - `BEGIN` and `COMMIT` are plain SQL here: sqlx does not know about the transaction, so
//!   after a failure [`one_trip`] rolls back itself, puts `synchronous` back to `FULL` and
//!   checks that no transaction is left open before the writer returns to the pool; if it
//!   cannot, or if the future is dropped midway, the connection is closed instead ([`Writer`]).
//! - Transition batches of several passes (an id twice) and PostgreSQL keep the statement by
//!   statement form above; PostgreSQL does not wait on a worker thread per statement.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::query::QueryAs;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{PgPool, Sqlite, SqlitePool};

use super::sql::{self, Sql};
use super::{ClaimFilter, Fence, HeldInstance, StatusCount, Store, StoreError, StoreResult, TransitionOutcome};
use crate::model::instance::{Overdue, Triage};
use crate::model::status::Ownership;
use crate::model::{
    Claimed, ComponentInfo, Concurrency, ErrorKind, HistoryEntry, Invocation, InvocationFilter, InvocationStatus,
    Millis, NewInvocation, Owner, TaskDef, TaskFailure, TaskInstance, TaskPatch, Transition,
};

/// Which SQL text to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Sql {
    /// The text for one dialect.
    fn get(self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// The connections behind a store.
pub(super) enum Pools {
    /// SQLite: readers (WAL lets them run beside the writer) and a pool of one writer, so
    /// writers queue in the pool instead of fighting over the database lock.
    Sqlite {
        /// Read-only (`query_only`) connections.
        read: SqlitePool,
        /// The single writer connection.
        write: SqlitePool,
    },
    /// PostgreSQL: one pool for everything.
    Postgres(PgPool),
}

/// The shared store implementation.
pub struct SqlStore {
    pools: Pools,
}

impl SqlStore {
    /// Wraps migrated pools.
    pub(super) fn new(pools: Pools) -> Self {
        Self { pools }
    }

    /// The `PRAGMA synchronous` of the SQLite writer (`None` on PostgreSQL), for tests.
    #[cfg(test)]
    pub(super) async fn writer_synchronous(&self) -> StoreResult<Option<i64>> {
        match &self.pools {
            Pools::Sqlite { write, .. } => Ok(Some(sqlx::query_scalar("PRAGMA synchronous").fetch_one(write).await?)),
            Pools::Postgres(_) => Ok(None),
        }
    }
}

/// Runs `$body` with `$db` bound to a reading pool (`&Pool<DB>`, an executor) and `$d` to the
/// [`Dialect`]; the body is expanded once per backend.
macro_rules! on_read {
    ($self:ident, |$db:ident, $d:ident| $body:expr) => {
        match &$self.pools {
            Pools::Sqlite { read, .. } => {
                let $db = read;
                let $d = Dialect::Sqlite;
                $body
            }
            Pools::Postgres(pool) => {
                let $db = pool;
                let $d = Dialect::Postgres;
                $body
            }
        }
    };
}

/// How long a write keeps trying again after the database aborted it for a transient reason
/// ([`StoreError::is_transient`]) before the error goes to the caller. Callers that must not
/// lose what they write (an attempt's outcome) keep trying beyond it.
const RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// The retries of one write: exponential backoff with jitter, from 2 ms up to 200 ms, within
/// [`RETRY_BUDGET`].
pub(super) struct Retry {
    started: std::time::Instant,
    tries: u32,
    ambiguous: bool,
}

impl Retry {
    pub(super) fn new() -> Self {
        Self { started: std::time::Instant::now(), tries: 0, ambiguous: false }
    }

    /// Whether a failed try may have been stored all the same: a connection lost while the
    /// server committed leaves the client without an answer. (A deadlock or serialization
    /// failure is a rollback, never ambiguous.) A write that is tried again after such a
    /// failure may meet its own change.
    pub(super) fn ambiguous(&self) -> bool {
        self.ambiguous
    }

    /// Whether to run the write again after `e` (having waited the backoff): only for a
    /// transient error, within the budget. Every retry is logged with its cause.
    pub(super) async fn again(&mut self, e: &StoreError, what: &'static str) -> bool {
        if !e.is_transient() || self.started.elapsed() > RETRY_BUDGET {
            return false;
        }
        self.tries += 1;
        self.ambiguous |= !e.is_deadlock();
        let ceiling = 2u64.saturating_mul(1 << self.tries.min(7)).min(200);
        let wait = std::time::Duration::from_millis(ceiling / 2 + rand::random_range(0..=ceiling / 2));
        if e.is_deadlock() {
            tracing::warn!(error = %e, write = what, tries = self.tries, "the database aborted a write (deadlock or serialization); retrying");
        } else {
            tracing::info!(error = %e, write = what, tries = self.tries, "a write failed for a transient reason; retrying");
        }
        tokio::time::sleep(wait).await;
        true
    }
}

/// A PostgreSQL transaction on `$pool` bound to `$tx`, committed if `$body` finishes; when
/// `$durable` is false the commit does not wait for the disk (see `in_tx_relaxed!`). A
/// transaction the database aborts for a transient reason (deadlock, serialization failure,
/// lost connection: [`StoreError::is_transient`]) runs again from the start ([`Retry`]), so
/// `$body` must be re-runnable: it may borrow but not move what it binds. A `return` in the
/// body leaves the transaction (rolled back) with that value.
macro_rules! pg_tx {
    ($pool:expr, $durable:expr, |$tx:ident| $body:expr) => {{
        let mut _ambiguous = false;
        pg_tx!($pool, $durable, _ambiguous, |$tx| $body)
    }};
    // `$ambiguous` (a `bool` variable) is set if a try that failed may have been
    // stored all the same ([`Retry::ambiguous`]).
    ($pool:expr, $durable:expr, $ambiguous:ident, |$tx:ident| $body:expr) => {{
        let mut retry = $crate::store::engine::Retry::new();
        loop {
            let attempt: $crate::store::StoreResult<_> = async {
                let mut $tx = $pool.begin().await?;
                if !$durable {
                    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *$tx).await?;
                }
                let out = $body;
                $tx.commit().await?;
                Ok(out)
            }
            .await;
            match attempt {
                Err(e) if retry.again(&e, concat!(module_path!(), ":", line!())).await => continue,
                other => {
                    $ambiguous |= retry.ambiguous();
                    break other;
                }
            }
        }?
    }};
}

/// Runs `$body` inside a write transaction bound to `$tx` (use `&mut *$tx` as executor) and
/// commits if the body finishes; a `?` or `return` inside the body rolls back. SQLite
/// transactions begin IMMEDIATE so that they take the write lock up front (a deferred one
/// could fail to upgrade if another process wrote in between).
macro_rules! in_tx {
    ($self:ident, |$tx:ident, $d:ident| $body:expr) => {
        match &$self.pools {
            Pools::Sqlite { write, .. } => {
                let mut $tx = write.begin_with("BEGIN IMMEDIATE").await?;
                let $d = Dialect::Sqlite;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Pools::Postgres(pool) => {
                let $d = Dialect::Postgres;
                pg_tx!(pool, true, |$tx| $body)
            }
        }
    };
}

/// Like [`in_tx!`], but when `$durable` is false the commit does not wait for the disk: SQLite
/// runs it with `synchronous=NORMAL`, PostgreSQL with `synchronous_commit = off`. Both logs
/// are sequential, so such a commit becomes durable with the next durable one; a crash can only
/// lose a suffix of relaxed commits. Used for writes that report nothing to a client and that
/// recovery redoes anyway (claims, `running`, `paused`): the outcomes a client sees (routed,
/// final, retry) are always durable before they are reported. The body must not `return`.
macro_rules! in_tx_relaxed {
    ($self:ident, $durable:expr, |$tx:ident, $d:ident| $body:expr) => {{
        let mut _ambiguous = false;
        in_tx_relaxed!($self, $durable, _ambiguous, |$tx, $d| $body)
    }};
    ($self:ident, $durable:expr, $ambiguous:ident, |$tx:ident, $d:ident| $body:expr) => {
        match &$self.pools {
            Pools::Sqlite { write, .. } => {
                let mut conn = write.acquire().await?;
                let relaxed = !$durable;
                if relaxed {
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                }
                let result: StoreResult<_> = async {
                    let mut $tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
                    let $d = Dialect::Sqlite;
                    let out = $body;
                    $tx.commit().await?;
                    Ok(out)
                }
                .await;
                if relaxed && let Err(e) = sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await {
                    // Never hand a relaxed connection back to the pool.
                    conn.close_on_drop();
                    return Err(e.into());
                }
                result?
            }
            Pools::Postgres(pool) => {
                let $d = Dialect::Postgres;
                pg_tx!(pool, $durable, $ambiguous, |$tx| $body)
            }
        }
    };
}

/// Inserts `$calls` (`&[NewInvocation]`) as `registered` invocations inside a transaction, with
/// their `registered` history; evaluates to the inserted rows. A call of an unknown task fails
/// it (`NotFound`, naming the task), a taken id or unique key too (`Conflict`). Used by routing
/// on PostgreSQL and by the workflow step on both databases.
macro_rules! insert_registered {
    ($tx:ident, $d:ident, $calls:expr) => {{
        let calls: &[$crate::model::NewInvocation] = $calls;
        let rows: Vec<$crate::store::engine::InvocationRow> =
            sqlx::query_as($crate::store::sql::INVOCATION_INSERT.get($d))
                .bind($crate::store::engine::insert_json(calls)?)
                .fetch_all(&mut *$tx)
                .await
                .map_err($crate::store::engine::conflict_on_unique($crate::store::engine::DUPLICATE_INVOCATION))?;
        if rows.len() != calls.len() {
            let known: std::collections::HashSet<&str> = rows.iter().map(|r| r.task.as_str()).collect();
            return Err($crate::store::engine::unknown_task(
                calls.iter().map(|c| c.task.as_str()).find(|t| !known.contains(t)),
            ));
        }
        let history: Vec<$crate::store::engine::HistoryJson<'_>> = rows
            .iter()
            .map(|r| $crate::store::engine::HistoryJson {
                id: &r.id,
                status: $crate::model::InvocationStatus::Registered.as_str(),
                node: None,
                attempt: r.attempts,
                at: r.created_at,
            })
            .collect();
        sqlx::query($crate::store::sql::HISTORY_INSERT.get($d))
            .bind($crate::store::engine::to_json(&history)?)
            .execute(&mut *$tx)
            .await?;
        rows
    }};
}

/// The leader's fence inside a write transaction: the first statement checks that `$fence`
/// (`&Fence`) still holds the lease with its epoch and that it has not expired (locking the
/// lease row on PostgreSQL until the commit, so no new term can begin meanwhile); if not, the
/// transaction rolls back and the method returns [`StoreError::Fenced`].
macro_rules! fence {
    ($tx:ident, $d:ident, $fence:expr) => {{
        let fence: &$crate::store::Fence = $fence;
        let held: Option<(i64,)> = sqlx::query_as($crate::store::sql::coord::LEASE_CHECK.get($d))
            .bind(&fence.node)
            .bind(fence.epoch)
            .fetch_optional(&mut *$tx)
            .await?;
        if held.is_none() {
            return Err($crate::store::StoreError::Fenced { node: fence.node.clone(), epoch: fence.epoch });
        }
    }};
}

/// The way back from an owned status whose owner is gone: `pending_recovery` from `pending`,
/// `running_recovery` otherwise, then `rerouted`.
fn recovery_path(from: InvocationStatus) -> Vec<InvocationStatus> {
    let via = if from == InvocationStatus::Pending {
        InvocationStatus::PendingRecovery
    } else {
        InvocationStatus::RunningRecovery
    };
    vec![via, InvocationStatus::Rerouted]
}

/// Inside a transaction, reroutes every invocation node `$node` owns in an owned status
/// ([`recovery_path`]), with history written by `$by`, and ends the live instances of the
/// attempts that were lost so with the message `$why` ([`end_lost!`]); evaluates to how many
/// moved.
macro_rules! reroute_owned {
    ($tx:ident, $d:ident, $node:expr, $by:expr, $why:expr) => {{
        let owned: Vec<MovableRow> =
            sqlx::query_as(sql::INVOCATION_OWNED_BY.get($d)).bind($node).fetch_all(&mut *$tx).await?;
        let changes = moves(owned, $by, recovery_path)?;
        let applied = apply_moves!($tx, $d, &changes);
        end_lost!($tx, $d, &changes, &applied, $why);
        applied.len()
    }};
}

/// Inside a transaction that rerouted `$changes` (owned transitions; `$applied` the positions
/// that applied), ends the live instances of the attempts they took away with message `$why`
/// ([`sql::INSTANCE_END_LOST`]): the instances then say how each lost attempt ended, instead
/// of staying live until triage blames a missing heartbeat.
macro_rules! end_lost {
    ($tx:ident, $d:ident, $changes:expr, $applied:expr, $why:expr) => {{
        let changes: &[Transition] = $changes;
        let lost: Vec<LostJson<'_>> = $applied
            .iter()
            .filter_map(|&i: &usize| changes.get(i))
            .filter_map(|t| t.owner.as_ref().map(|o| LostJson { id: &t.id, attempt: o.attempt }))
            .collect();
        if !lost.is_empty() {
            let why: &str = $why;
            sqlx::query(sql::INSTANCE_END_LOST.get($d)).bind(to_json(&lost)?).bind(why).execute(&mut *$tx).await?;
        }
    }};
}

/// One lost attempt for [`sql::INSTANCE_END_LOST`].
#[derive(Serialize)]
struct LostJson<'a> {
    id: &'a str,
    attempt: u32,
}

/// [`transition_pass!`] over owned transitions that may be none (then no statement runs).
macro_rules! apply_moves {
    ($tx:ident, $d:ident, $changes:expr) => {{
        let changes: &[Transition] = $changes;
        if changes.is_empty() {
            Vec::new()
        } else {
            let refs: Vec<&Transition> = changes.iter().collect();
            transition_pass!($tx, $d, &refs)
        }
    }};
}

/// One pass of compare-and-swap transitions (distinct ids, sorted by id) inside a transaction:
/// the UPDATE, then the history of the rows it changed. Evaluates to the positions (in
/// `$pass`) of the applied transitions.
macro_rules! transition_pass {
    ($tx:ident, $d:ident, $pass:expr) => {{
        let pass: &[&Transition] = $pass;
        let applied: Vec<AppliedRow> = sqlx::query_as(sql::INVOCATION_TRANSITION.get($d))
            .bind(transition_json(pass)?)
            .fetch_all(&mut *$tx)
            .await?;
        let (history, positions) = transition_history(pass, &applied)?;
        if !positions.is_empty() {
            sqlx::query(sql::HISTORY_INSERT.get($d)).bind(history).execute(&mut *$tx).await?;
        }
        positions
    }};
}

// ---------------------------------------------------------------------------------------------
// Rows as the databases return them.

/// An `invocations` row (`invocation_columns!` in `sql.rs`).
#[derive(sqlx::FromRow)]
pub(super) struct InvocationRow {
    id: String,
    task: String,
    call_id: String,
    args: String,
    status: String,
    owner_node: Option<String>,
    attempts: i64,
    result: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    parent: Option<String>,
    reg_scope: Option<String>,
    idempotency_key: Option<String>,
    workflow: Option<String>,
    max_attempts: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

/// A `task_instances` row ([`sql::INSTANCE_LIST`]).
#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    invocation_id: String,
    attempt: i64,
    node: String,
    status: String,
    error_kind: Option<String>,
    error_message: Option<String>,
    wall_ms: i64,
    peak_memory_bytes: i64,
    stdout: String,
    stderr: String,
    logs: String,
    output_truncated: i64,
    ended_at: i64,
    report_by: Option<i64>,
    started_at: i64,
}

impl InstanceRow {
    fn decode(self) -> StoreResult<TaskInstance> {
        let error = stored_failure(self.error_kind, self.error_message)?;
        Ok(TaskInstance {
            attempt: to_u32("attempt", self.attempt)?,
            wall_ms: to_u64("wall_ms", self.wall_ms)?,
            peak_memory_bytes: to_u64("peak_memory_bytes", self.peak_memory_bytes)?,
            logs: serde_json::from_str(&self.logs).map_err(|e| corrupt("instance logs", e))?,
            output_truncated: self.output_truncated != 0,
            error,
            invocation_id: self.invocation_id,
            node: self.node,
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
            ended_at: self.ended_at,
            started_at: self.started_at,
            report_by: self.report_by,
            report_window_ms: None,
        })
    }
}

#[derive(Serialize)]
struct InstanceJson<'a> {
    invocation_id: &'a str,
    attempt: i64,
    node: &'a str,
    status: &'a str,
    error_kind: Option<String>,
    error_message: Option<&'a str>,
    wall_ms: i64,
    peak_memory_bytes: i64,
    stdout: &'a str,
    stderr: &'a str,
    logs: String,
    output_truncated: i64,
    report_window_ms: Option<i64>,
}

/// A `tasks` row (`task_columns!` in `sql.rs`).
#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    name: String,
    component: String,
    description: Option<String>,
    max_attempts: i64,
    timeout_ms: i64,
    memory_limit_bytes: i64,
    registration_concurrency: String,
    running_concurrency: String,
    key_arguments: String,
    pins: String,
    paused: bool,
    user_patched: String,
    options: String,
}

#[derive(sqlx::FromRow)]
struct ComponentRow {
    name: String,
    digest: String,
    size_bytes: i64,
    uploaded_at: i64,
}

#[derive(sqlx::FromRow)]
struct TaskNameRow {
    component: String,
    name: String,
}

#[derive(sqlx::FromRow)]
struct PutTaskRow {
    name: String,
    component: String,
    user_patched: String,
}

/// Unfinished invocations of one task (`sql::COMPONENT_UNFINISHED`, `sql::TASKS_STALE_UNFINISHED`).
#[derive(sqlx::FromRow)]
struct TaskCount {
    task: String,
    count: i64,
}

/// ` and N of `task`, …` for the tasks after the first of a refusal's message.
fn others(rest: &[TaskCount]) -> String {
    rest.iter().map(|t| format!(", and {} of task `{}`", t.count, t.task)).collect()
}

#[derive(sqlx::FromRow)]
struct NameRow {
    name: String,
}

#[derive(sqlx::FromRow)]
struct BytesRow {
    bytes: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct NowRow {
    now: i64,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: String,
    task: String,
    args: String,
    attempts: i64,
    parent: Option<String>,
    workflow: Option<String>,
    max_attempts: Option<i64>,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct AppliedRow {
    id: String,
    attempts: i64,
    updated_at: i64,
}

/// An invocation to move along a path without being its owner's attempt: recovery and
/// concurrency control (the compare-and-swap checks the owner it had when read).
#[derive(sqlx::FromRow)]
struct MovableRow {
    id: String,
    status: String,
    attempts: i64,
    owner_node: Option<String>,
}

/// Transitions moving each row from its status, with its owner, along `path(from)`, by `node`.
fn moves(
    rows: Vec<MovableRow>,
    node: &str,
    path: impl Fn(InvocationStatus) -> Vec<InvocationStatus>,
) -> StoreResult<Vec<Transition>> {
    rows.into_iter()
        .map(|r| {
            let from = parse_status(&r.status)?;
            let owner = match r.owner_node {
                Some(n) => Some(Owner { node: n, attempt: to_u32("attempts", r.attempts)? }),
                None => None,
            };
            Ok(Transition {
                id: r.id,
                from,
                owner,
                path: path(from),
                result: None,
                error: None,
                node: node.to_owned(),
                delay_ms: 0,
                instance: None,
            })
        })
        .collect()
}

/// A row [`sql::INSTANCE_HEARTBEAT`] refreshed.
#[derive(sqlx::FromRow)]
struct HeldRow {
    invocation_id: String,
    attempt: i64,
    status: String,
    signal: Option<String>,
}

/// An overdue instance ([`sql::INSTANCE_OVERDUE`]).
#[derive(sqlx::FromRow)]
struct OverdueRow {
    invocation_id: String,
    attempt: i64,
    node: String,
    status: String,
    report_by: i64,
}

/// The key of an instance.
#[derive(sqlx::FromRow)]
struct KeyRow {
    invocation_id: String,
    attempt: i64,
}

#[derive(sqlx::FromRow)]
struct CountRow {
    task: String,
    status: String,
    count: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    status: String,
    node: Option<String>,
    attempt: i64,
    at: i64,
}

// ---------------------------------------------------------------------------------------------
// JSON batch parameters.

#[derive(Serialize)]
struct InsertJson<'a> {
    id: &'a str,
    task: &'a str,
    call_id: &'a str,
    args: &'a str,
    parent: Option<&'a str>,
    scope: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    run_scope: Option<&'a str>,
    workflow: Option<&'a str>,
    max_attempts: Option<u32>,
    token: Option<u32>,
}

/// The JSON parameter of an insert of new invocations (`invocation_insert!` in `sql.rs`).
pub(super) fn insert_json(calls: &[NewInvocation]) -> StoreResult<String> {
    for c in calls {
        check_json("args", &c.id, &c.args)?;
    }
    to_json(
        &calls
            .iter()
            .map(|c| InsertJson {
                id: &c.id,
                task: &c.task,
                call_id: &c.call_id,
                args: &c.args,
                parent: c.parent.as_deref(),
                scope: c.scope.as_deref(),
                idempotency_key: c.idempotency_key.as_deref(),
                run_scope: c.run_scope.as_deref(),
                workflow: c.workflow.as_deref(),
                max_attempts: c.max_attempts,
                token: c.token,
            })
            .collect::<Vec<_>>(),
    )
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    id: &'a str,
    status: &'static str,
    node: Option<&'a str>,
    attempt: i64,
    at: i64,
}

#[derive(Serialize)]
struct TransitionJson<'a> {
    id: &'a str,
    from: &'static str,
    to: &'static str,
    node: &'a str,
    owner_node: Option<&'a str>,
    owner_attempt: Option<i64>,
    owner_mode: &'static str,
    attempt_inc: i64,
    result: Option<&'a str>,
    error_kind: Option<String>,
    error_message: Option<&'a str>,
    delay_ms: i64,
}

#[derive(Serialize)]
struct TaskJson<'a> {
    name: &'a str,
    component: &'a str,
    description: Option<&'a str>,
    max_attempts: i64,
    timeout_ms: i64,
    memory_limit_bytes: i64,
    registration_concurrency: &'static str,
    running_concurrency: &'static str,
    key_arguments: String,
    pins: String,
    paused: i64,
    user_patched: String,
    options: String,
}

/// Refuses to store text that would not decode later (the store never holds rows it cannot
/// read back).
fn check_json(what: &str, id: &str, text: &str) -> StoreResult<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| corrupt(&format!("{what} of invocation `{id}` is not JSON"), e))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("encoding a batch: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Conversions.

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// Integers are `i64` in both databases; options beyond `i64::MAX` (effectively unlimited)
/// are stored as `i64::MAX`.
fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u32(what: &str, v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| corrupt(what, format!("{v} out of range")))
}

fn to_u64(what: &str, v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| corrupt(what, format!("{v} out of range")))
}

fn parse_status(s: &str) -> StoreResult<InvocationStatus> {
    s.parse().map_err(|e: String| StoreError::Corrupt(e))
}

fn parse_concurrency(s: &str) -> StoreResult<Concurrency> {
    s.parse().map_err(|e: String| StoreError::Corrupt(e))
}

fn error_kind_name(kind: ErrorKind) -> StoreResult<String> {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(corrupt("error kind", format!("{other:?}"))),
    }
}

/// The stored error of an invocation or instance (kind and message columns).
fn stored_failure(kind: Option<String>, message: Option<String>) -> StoreResult<Option<TaskFailure>> {
    kind.map(|k| Ok(TaskFailure { kind: parse_error_kind(&k)?, message: message.unwrap_or_default() })).transpose()
}

fn parse_error_kind(s: &str) -> StoreResult<ErrorKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|e| corrupt("error kind", format!("`{s}`: {e}")))
}

fn parse_patch(s: &str) -> StoreResult<TaskPatch> {
    serde_json::from_str(s).map_err(|e| corrupt("task user patch", e))
}

/// `base` with every field `patch` sets overridden, as a JSON object without nulls (so new
/// patch fields need no code here).
fn merge_patch(base: &str, patch: &TaskPatch) -> StoreResult<String> {
    let mut merged: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(base).map_err(|e| corrupt("task user patch", e))?;
    match serde_json::to_value(patch) {
        Ok(serde_json::Value::Object(fields)) => {
            for (k, v) in fields {
                if !v.is_null() {
                    merged.insert(k, v);
                }
            }
        }
        other => return Err(corrupt("task patch", format!("{other:?}"))),
    }
    to_json(&merged)
}

impl InvocationRow {
    fn decode(self) -> StoreResult<Invocation> {
        let error = stored_failure(self.error_kind, self.error_message)?;
        Ok(Invocation {
            args: serde_json::from_str(&self.args)
                .map_err(|e| corrupt(&format!("args of invocation `{}`", self.id), e))?,
            result: match &self.result {
                Some(r) => Some(
                    serde_json::from_str(r).map_err(|e| corrupt(&format!("result of invocation `{}`", self.id), e))?,
                ),
                None => None,
            },
            status: parse_status(&self.status)?,
            attempts: to_u32("attempts", self.attempts)?,
            error,
            id: self.id,
            task: self.task,
            call_id: self.call_id,
            owner: self.owner_node,
            parent: self.parent,
            scope: self.reg_scope,
            idempotency_key: self.idempotency_key,
            workflow: self.workflow,
            max_attempts: self.max_attempts.map(|m| to_u32("max_attempts", m)).transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl TaskRow {
    fn decode(self) -> StoreResult<TaskDef> {
        Ok(TaskDef {
            max_attempts: to_u32("max_attempts", self.max_attempts)?,
            timeout_ms: to_u64("timeout_ms", self.timeout_ms)?,
            memory_limit_bytes: to_u64("memory_limit_bytes", self.memory_limit_bytes)?,
            registration_concurrency: parse_concurrency(&self.registration_concurrency)?,
            running_concurrency: parse_concurrency(&self.running_concurrency)?,
            key_arguments: serde_json::from_str(&self.key_arguments).map_err(|e| corrupt("key_arguments", e))?,
            pins: serde_json::from_str(&self.pins).map_err(|e| corrupt("pins", e))?,
            paused: self.paused,
            policy: serde_json::from_str(&self.options).map_err(|e| corrupt("options", e))?,
            name: self.name,
            component: self.component,
            description: self.description,
        })
    }
}

fn decode_invocations(rows: Vec<InvocationRow>) -> StoreResult<Vec<Invocation>> {
    rows.into_iter().map(InvocationRow::decode).collect()
}

fn component_info(row: ComponentRow, tasks: Vec<String>) -> ComponentInfo {
    ComponentInfo {
        name: row.name,
        digest: row.digest,
        size_bytes: row.size_bytes,
        uploaded_at: row.uploaded_at,
        tasks,
    }
}

fn task_json<'a>(task: &'a TaskDef, component: &'a str, user_patched: String) -> StoreResult<TaskJson<'a>> {
    Ok(TaskJson {
        name: &task.name,
        component,
        description: task.description.as_deref(),
        max_attempts: i64::from(task.max_attempts),
        timeout_ms: clamp_i64(task.timeout_ms),
        memory_limit_bytes: clamp_i64(task.memory_limit_bytes),
        registration_concurrency: task.registration_concurrency.as_str(),
        running_concurrency: task.running_concurrency.as_str(),
        key_arguments: to_json(&task.key_arguments)?,
        pins: to_json(&task.pins)?,
        paused: i64::from(task.paused),
        user_patched,
        options: to_json(&task.policy)?,
    })
}

/// The JSON array of task instances for [`sql::INSTANCE_INSERT`] and the transition script.
fn instances_json<'a>(instances: impl Iterator<Item = &'a TaskInstance>) -> StoreResult<String> {
    let rows = instances
        .map(|t| {
            Ok(InstanceJson {
                invocation_id: &t.invocation_id,
                attempt: i64::from(t.attempt),
                node: &t.node,
                status: &t.status,
                error_kind: t.error.as_ref().map(|e| error_kind_name(e.kind)).transpose()?,
                error_message: t.error.as_ref().map(|e| e.message.as_str()),
                wall_ms: i64::try_from(t.wall_ms).unwrap_or(i64::MAX),
                peak_memory_bytes: i64::try_from(t.peak_memory_bytes).unwrap_or(i64::MAX),
                stdout: &t.stdout,
                stderr: &t.stderr,
                logs: t.logs.to_string(),
                output_truncated: i64::from(t.output_truncated),
                report_window_ms: t.report_window_ms,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    to_json(&rows)
}

/// The JSON parameter of one transition pass.
fn transition_json(pass: &[&Transition]) -> StoreResult<String> {
    let mut rows = Vec::with_capacity(pass.len());
    for t in pass {
        // What entering the path does to ownership: the last status that touches it wins.
        let mut owner_mode = "keep";
        let mut attempt_inc = 0;
        for status in &t.path {
            match status.ownership() {
                Ownership::Releases | Ownership::Overrides => owner_mode = "clear",
                Ownership::Acquires => {
                    owner_mode = "set";
                    attempt_inc += 1;
                }
                Ownership::Free | Ownership::Requires => {}
            }
        }
        rows.push(TransitionJson {
            id: &t.id,
            from: t.from.as_str(),
            to: t.to().as_str(),
            node: &t.node,
            owner_node: t.owner.as_ref().map(|o| o.node.as_str()),
            owner_attempt: t.owner.as_ref().map(|o| i64::from(o.attempt)),
            owner_mode,
            attempt_inc,
            result: t.result.as_deref(),
            error_kind: t.error.as_ref().map(|e| error_kind_name(e.kind)).transpose()?,
            error_message: t.error.as_ref().map(|e| e.message.as_str()),
            delay_ms: i64::try_from(t.delay_ms).unwrap_or(i64::MAX),
        });
    }
    to_json(&rows)
}

/// The positions in `pass` of the transitions whose rows the UPDATE changed (`applied`), in
/// order.
fn applied_positions(pass: &[&Transition], applied: &[AppliedRow]) -> StoreResult<Vec<usize>> {
    let position: HashMap<&str, usize> = pass.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut positions = Vec::with_capacity(applied.len());
    for row in applied {
        let i = position
            .get(row.id.as_str())
            .copied()
            .ok_or_else(|| corrupt("transition", format!("unexpected id `{}` updated", row.id)))?;
        positions.push(i);
    }
    positions.sort_unstable();
    Ok(positions)
}

/// The history JSON of the applied transitions of a pass (one row per status of each path,
/// in order) and their positions in the pass.
fn transition_history(pass: &[&Transition], applied: &[AppliedRow]) -> StoreResult<(String, Vec<usize>)> {
    let positions = applied_positions(pass, applied)?;
    let by_id: HashMap<&str, &AppliedRow> = applied.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut history = Vec::new();
    for &i in &positions {
        let t = pass[i];
        let Some(row) = by_id.get(t.id.as_str()) else { continue };
        for status in &t.path {
            history.push(HistoryJson {
                id: &t.id,
                status: status.as_str(),
                node: Some(&t.node),
                attempt: row.attempts,
                at: row.updated_at,
            });
        }
    }
    Ok((to_json(&history)?, positions))
}

/// The history a pass would write if every transition applied: `{id, status, node}` for each
/// status of each path, in pass order then path order. SQLite's one-trip transition keeps the
/// rows of the transitions that did apply (see [`sql::INVOCATION_TRANSITION_ONE_TRIP`]).
fn path_history_json(pass: &[&Transition]) -> StoreResult<String> {
    #[derive(Serialize)]
    struct PathJson<'a> {
        id: &'a str,
        status: &'static str,
        node: &'a str,
    }
    let rows: Vec<PathJson<'_>> = pass
        .iter()
        .flat_map(|t| t.path.iter().map(|s| PathJson { id: &t.id, status: s.as_str(), node: &t.node }))
        .collect();
    to_json(&rows)
}

/// The instance records of one batch, one per attempt (the last given: a batch of several
/// passes can move one attempt twice, and PostgreSQL refuses an upsert that touches a row
/// twice), sorted by (invocation, attempt), the order in which every write locks instances.
fn last_record_per_attempt<'a>(records: impl Iterator<Item = &'a TaskInstance>) -> Vec<&'a TaskInstance> {
    let mut last: std::collections::BTreeMap<(&str, u32), &TaskInstance> = std::collections::BTreeMap::new();
    for r in records {
        last.insert((r.invocation_id.as_str(), r.attempt), r);
    }
    last.into_values().collect()
}

/// Whether a transition's path is a walk of the status table from its `from` status.
fn follows_table(t: &Transition) -> bool {
    let mut at = t.from;
    !t.path.is_empty()
        && t.path.iter().all(|&next| {
            let ok = at.can_move_to(next);
            at = next;
            ok
        })
}

impl SqlStore {
    /// Says why the transitions at `rejected` (sent, not applied) were refused, from the rows
    /// as they are now: gone (`NotFound`), in another status (`LostRace`) or held by another
    /// owner (`WrongOwner`). Read after the fact, so only an explanation; the refusal itself
    /// was the compare-and-swap's. When `retried` (a try that failed may have been stored),
    /// a refusal that meets the change already made by the same writer is `Applied`.
    async fn explain_rejections(
        &self,
        changes: &[Transition],
        rejected: &[usize],
        outcomes: &mut [TransitionOutcome],
        retried: bool,
    ) -> StoreResult<()> {
        let ids: Vec<String> = rejected.iter().map(|&i| changes[i].id.clone()).collect();
        let now: HashMap<String, Invocation> =
            self.invocation_get_many(&ids).await?.into_iter().map(|inv| (inv.id.clone(), inv)).collect();
        for &i in rejected {
            let t = &changes[i];
            outcomes[i] = match now.get(&t.id) {
                None => TransitionOutcome::NotFound,
                Some(inv) if retried && self.already_applied(t, inv).await? => TransitionOutcome::Applied,
                Some(inv) if inv.status != t.from => TransitionOutcome::LostRace,
                Some(inv) => match &t.owner {
                    Some(o) if inv.owner.as_deref() != Some(o.node.as_str()) || inv.attempts != o.attempt => {
                        TransitionOutcome::WrongOwner
                    }
                    _ => TransitionOutcome::LostRace,
                },
            };
        }
        Ok(())
    }
}

impl SqlStore {
    /// [`Store::invocation_transition_batch`]; `assume_retried` (tests) treats the batch as
    /// run again after a try that may have been stored ([`Retry::ambiguous`]).
    pub(super) async fn transition_batch(
        &self,
        changes: &[Transition],
        assume_retried: bool,
    ) -> StoreResult<Vec<TransitionOutcome>> {
        let mut outcomes = vec![TransitionOutcome::LostRace; changes.len()];
        // Pass n holds the n-th transition of every id (positions in `changes`).
        let mut passes: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, t) in changes.iter().enumerate() {
            if let Some(result) = &t.result {
                check_json("result", &t.id, result)?;
            }
            if !follows_table(t) {
                outcomes[i] = TransitionOutcome::BadTransition;
                continue;
            }
            let n = seen.entry(t.id.as_str()).or_insert(0);
            if passes.len() <= *n {
                passes.push(Vec::new());
            }
            passes[*n].push(i);
            *n += 1;
        }
        if passes.is_empty() {
            return Ok(outcomes);
        }
        let sent: Vec<usize> = passes.iter().flatten().copied().collect();
        for pass in &mut passes {
            pass.sort_unstable_by(|a, b| changes[*a].id.cmp(&changes[*b].id));
        }
        // Only batches that merely move attempts along (pending, running, paused, resumed) may
        // skip waiting for the disk; anything a client can observe as an outcome is durable.
        let durable = changes.iter().any(|t| !t.to().is_owned());
        // Whether a try that failed may have been stored: then a refusal may be our own change.
        let mut ambiguous = assume_retried;
        let applied: Vec<usize> = match (&self.pools, passes.as_slice()) {
            // The usual batch, one pass, on SQLite: one script.
            (Pools::Sqlite { write, .. }, [pass]) => {
                let refs: Vec<&Transition> = pass.iter().map(|&i| &changes[i]).collect();
                let script = if durable {
                    sql::INVOCATION_TRANSITION_ONE_TRIP
                } else {
                    sql::INVOCATION_TRANSITION_ONE_TRIP_RELAXED
                };
                let query = sqlx::query_as(script)
                    .bind(transition_json(&refs)?)
                    .bind(tx_marker())
                    .bind(path_history_json(&refs)?)
                    .bind(instances_json(refs.iter().filter_map(|t| t.instance.as_deref()))?);
                let rows: Vec<AppliedRow> = one_trip(write, query).await?;
                applied_positions(&refs, &rows)?.into_iter().map(|p| pass[p]).collect()
            }
            _ => in_tx_relaxed!(self, durable, ambiguous, |tx, d| {
                let mut applied = Vec::new();
                for pass in &passes {
                    let refs: Vec<&Transition> = pass.iter().map(|&i| &changes[i]).collect();
                    let positions = transition_pass!(tx, d, &refs);
                    applied.extend(positions.into_iter().map(|p| pass[p]));
                }
                let records = last_record_per_attempt(applied.iter().filter_map(|&i| changes[i].instance.as_deref()));
                if !records.is_empty() {
                    sqlx::query(sql::INSTANCE_INSERT.get(d))
                        .bind(instances_json(records.into_iter())?)
                        .execute(&mut *tx)
                        .await?;
                }
                applied
            }),
        };
        let applied: HashSet<usize> = applied.into_iter().collect();
        let rejected: Vec<usize> = sent.into_iter().filter(|i| !applied.contains(i)).collect();
        for &i in &applied {
            outcomes[i] = TransitionOutcome::Applied;
        }
        if !rejected.is_empty() {
            self.explain_rejections(changes, &rejected, &mut outcomes, ambiguous).await?;
            let late = rejected.iter().filter(|&&i| !outcomes[i].is_applied());
            self.record_late_outcomes(late.filter_map(|&i| changes[i].instance.as_deref())).await?;
        }
        Ok(outcomes)
    }
}

impl SqlStore {
    /// The invocations of `calls` if every one of them is stored already with its call: a
    /// routing transaction retried after its commit was cut off meets its own rows (ids are
    /// fresh per routing, so a stored id with the same call is this routing's).
    async fn inserted_before(&self, calls: &[NewInvocation]) -> StoreResult<Option<Vec<Invocation>>> {
        let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
        let stored: HashMap<String, Invocation> =
            self.invocation_get_many(&ids).await?.into_iter().map(|inv| (inv.id.clone(), inv)).collect();
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            match stored.get(&c.id) {
                Some(inv) if inv.call_id == c.call_id => out.push(inv.clone()),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Whether the attempt's write `t`, refused now, is stored already: a transaction retried
    /// after its commit was cut off (the connection died while the server committed) meets
    /// its own change. True when the row is in `t`'s target status and that move was this
    /// writer's: still owned by the same attempt for an owned status, or, for a status that
    /// releases the owner, written to the history by `t`'s node for that attempt.
    async fn already_applied(&self, t: &Transition, inv: &Invocation) -> StoreResult<bool> {
        let Some(owner) = &t.owner else { return Ok(false) };
        if inv.status != t.to() || inv.status == t.from {
            return Ok(false);
        }
        if t.to().is_owned() {
            return Ok(inv.owner.as_deref() == Some(owner.node.as_str()) && inv.attempts == owner.attempt);
        }
        let history = self.invocation_history(&t.id).await?;
        Ok(history
            .iter()
            .any(|h| h.status == t.to() && h.attempt == owner.attempt && h.node.as_deref() == Some(t.node.as_str())))
    }
}

/// A fresh marker for the rows one SQLite script changes (`last_tx`, see [`sql`]): random, so
/// no other transaction, past or concurrent, stamps the same value (one chance in 2^64).
impl SqlStore {
    /// Records the outcomes of attempts whose transition was refused (the invocation was final
    /// or taken away meanwhile): the instance ends `error_fatal` (an interrupted one
    /// `kill_self`) without touching the invocation; an instance already final is left alone.
    async fn record_late_outcomes<'a>(&self, records: impl Iterator<Item = &'a TaskInstance>) -> StoreResult<()> {
        let late: Vec<TaskInstance> = records
            .filter(|r| r.report_window_ms.is_none())
            .map(|r| {
                let mut r = r.clone();
                if r.status != crate::model::instance::InstanceStatus::KillSelf.as_str() {
                    let was = r.error.as_ref().map_or_else(|| "a result".to_string(), |e| e.to_string());
                    r.error = Some(TaskFailure::new(
                        ErrorKind::Fatal,
                        format!("late outcome discarded ({was}): the invocation was final or taken away"),
                    ));
                    r.status = crate::model::instance::InstanceStatus::ErrorFatal.as_str().to_string();
                }
                r
            })
            .collect();
        if late.is_empty() {
            return Ok(());
        }
        tracing::info!(count = late.len(), "recorded late attempt outcomes; their invocations are untouched");
        let json = instances_json(late.iter())?;
        in_tx!(self, |tx, d| {
            sqlx::query(sql::INSTANCE_INSERT.get(d)).bind(&json).execute(&mut *tx).await?;
        });
        Ok(())
    }
}

fn tx_marker() -> i64 {
    rand::random()
}

/// The conflict of an insert whose ids exist.
const DUPLICATE_INVOCATION: &str = "an invocation id of the batch already exists";

/// The error of an insert that calls an unknown task (`None`: it vanished again meanwhile).
fn unknown_task(task: Option<&str>) -> StoreError {
    StoreError::NotFound(format!("task `{}`", task.unwrap_or_default()))
}

/// The SQLite writer while a one-trip script runs on it. If the future is dropped (cancelled)
/// before the script's outcome is settled, the connection may be left inside the script's
/// transaction or with `synchronous` relaxed, so it is closed (SQLite rolls back) instead of
/// going back to the pool.
struct Writer {
    conn: PoolConnection<Sqlite>,
    settled: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.close_on_drop();
        }
    }
}

/// Runs a SQLite one-trip script (`sql::*_ONE_TRIP`: a whole transaction) on the writer in a
/// single round trip and returns the rows of its statements. If it fails, the transaction is
/// rolled back and `synchronous` set back to `FULL` before the writer returns to the pool; if
/// that does not work, the writer is closed.
async fn one_trip<R>(write: &SqlitePool, query: QueryAs<'_, Sqlite, R, SqliteArguments>) -> Result<Vec<R>, sqlx::Error>
where
    R: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow>,
{
    let mut writer = Writer { conn: write.acquire().await?, settled: false };
    let result = query.fetch_all(&mut *writer.conn).await;
    if result.is_err() {
        // Fails when the error ended the transaction already (or came before BEGIN).
        let _ = sqlx::query("ROLLBACK").execute(&mut *writer.conn).await;
        if let Err(e) = sqlx::query(sql::ONE_TRIP_RESET).execute(&mut *writer.conn).await {
            tracing::warn!(error = %e, "closing the SQLite writer: it could not be reset after a failed write");
            return result;
        }
    }
    writer.settled = true;
    result
}

/// Turns a unique violation into a conflict about `what`.
fn conflict_on_unique(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.to_owned()),
        _ => StoreError::Database(e),
    }
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Store for SqlStore {
    fn dialect(&self) -> &'static str {
        match self.pools {
            Pools::Sqlite { .. } => "sqlite",
            Pools::Postgres(_) => "postgres",
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        on_read!(self, |db, d| {
            sqlx::query(sql::PING.get(d)).execute(db).await?;
        });
        Ok(())
    }

    async fn now(&self) -> StoreResult<Millis> {
        let row: NowRow = on_read!(self, |db, d| sqlx::query_as(sql::NOW.get(d)).fetch_one(db).await?);
        Ok(row.now)
    }

    async fn component_put(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        tasks: &[TaskDef],
    ) -> StoreResult<ComponentInfo> {
        let mut names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StoreError::Conflict(format!("task `{}` is described twice by component `{name}`", w[0])));
        }
        let names_json = to_json(&names)?;
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let (row, upserted) = in_tx!(self, |tx, d| {
            let existing: Vec<PutTaskRow> =
                sqlx::query_as(sql::TASKS_FOR_PUT.get(d)).bind(&names_json).bind(name).fetch_all(&mut *tx).await?;
            let mut patches = HashMap::new();
            for r in existing {
                if r.component != name {
                    return Err(StoreError::Conflict(format!(
                        "task `{}` belongs to component `{}`",
                        r.name, r.component
                    )));
                }
                patches.insert(r.name, r.user_patched);
            }
            let row: ComponentRow = sqlx::query_as(sql::COMPONENT_UPSERT.get(d))
                .bind(name)
                .bind(digest)
                .bind(size)
                .bind(bytes)
                .fetch_one(&mut *tx)
                .await?;
            // A task the new version drops must not strand calls that still wait for it.
            let stranded: Vec<TaskCount> = sqlx::query_as(sql::TASKS_STALE_UNFINISHED.get(d))
                .bind(&names_json)
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
            if let Some(first) = stranded.first() {
                return Err(StoreError::Conflict(format!(
                    "this version of component `{name}` has no task `{}`, which has {} unfinished call(s){}; \
                     cancel them (POST /v1/invocations/{{id}}/cancel, found with GET /v1/invocations?task={}) \
                     or let them finish, then upload it again",
                    first.task,
                    first.count,
                    others(&stranded[1..]),
                    first.task
                )));
            }
            sqlx::query(sql::TASKS_DELETE_STALE.get(d)).bind(&names_json).bind(name).execute(&mut *tx).await?;
            let mut effective = Vec::with_capacity(tasks.len());
            for t in tasks {
                let mut def = t.clone();
                def.component = name.to_owned();
                let patched = patches.remove(&t.name).unwrap_or_else(|| "{}".to_owned());
                def.apply(&parse_patch(&patched)?);
                effective.push((def, patched));
            }
            let rows = effective
                .iter()
                .map(|(def, patched)| task_json(def, name, patched.clone()))
                .collect::<StoreResult<Vec<_>>>()?;
            let upserted: Vec<NameRow> = if rows.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(sql::TASKS_UPSERT.get(d)).bind(to_json(&rows)?).fetch_all(&mut *tx).await?
            };
            if upserted.len() != tasks.len() {
                // A concurrent upload took a name between our read and the upsert.
                let done: HashSet<&str> = upserted.iter().map(|r| r.name.as_str()).collect();
                let lost = names.iter().find(|n| !done.contains(*n)).copied().unwrap_or_default();
                return Err(StoreError::Conflict(format!("task `{lost}` belongs to another component")));
            }
            (row, upserted)
        });
        let mut task_names: Vec<String> = upserted.into_iter().map(|r| r.name).collect();
        task_names.sort_unstable();
        Ok(component_info(row, task_names))
    }

    async fn component_list(&self) -> StoreResult<Vec<ComponentInfo>> {
        let (rows, names): (Vec<ComponentRow>, Vec<TaskNameRow>) = on_read!(self, |db, d| {
            let rows = sqlx::query_as(sql::COMPONENT_LIST.get(d)).fetch_all(db).await?;
            let names = sqlx::query_as(sql::COMPONENT_TASK_NAMES.get(d)).fetch_all(db).await?;
            (rows, names)
        });
        let mut by_component: HashMap<String, Vec<String>> = HashMap::new();
        for n in names {
            by_component.entry(n.component).or_default().push(n.name);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let tasks = by_component.remove(&row.name).unwrap_or_default();
                component_info(row, tasks)
            })
            .collect())
    }

    async fn component_get(&self, name: &str) -> StoreResult<Option<ComponentInfo>> {
        let found: Option<(ComponentRow, Vec<TaskNameRow>)> = on_read!(self, |db, d| {
            match sqlx::query_as(sql::COMPONENT_GET.get(d)).bind(name).fetch_optional(db).await? {
                Some(row) => {
                    let names = sqlx::query_as(sql::COMPONENT_TASK_NAMES_OF.get(d)).bind(name).fetch_all(db).await?;
                    Some((row, names))
                }
                None => None,
            }
        });
        Ok(found.map(|(row, names)| component_info(row, names.into_iter().map(|n| n.name).collect())))
    }

    async fn component_bytes(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let row: Option<BytesRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::COMPONENT_BYTES.get(d)).bind(name).fetch_optional(db).await?);
        Ok(row.map(|r| r.bytes))
    }

    async fn component_delete(&self, name: &str) -> StoreResult<bool> {
        let deleted = in_tx!(self, |tx, d| {
            let stranded: Vec<TaskCount> =
                sqlx::query_as(sql::COMPONENT_UNFINISHED.get(d)).bind(name).fetch_all(&mut *tx).await?;
            if !stranded.is_empty() {
                let total: i64 = stranded.iter().map(|t| t.count).sum();
                let per_task: Vec<String> = stranded.iter().map(|t| format!("{} of `{}`", t.count, t.task)).collect();
                let task = stranded.first().map(|t| t.task.as_str()).unwrap_or_default();
                return Err(StoreError::Conflict(format!(
                    "component `{name}` has {total} unfinished call(s) of its tasks ({}); cancel them \
                     (POST /v1/invocations/{{id}}/cancel, found with GET /v1/invocations?task={task}) \
                     or let them finish, then delete it",
                    per_task.join(", ")
                )));
            }
            sqlx::query(sql::COMPONENT_DELETE.get(d)).bind(name).execute(&mut *tx).await?.rows_affected()
        });
        Ok(deleted > 0)
    }

    async fn task_list(&self) -> StoreResult<Vec<TaskDef>> {
        let rows: Vec<TaskRow> = on_read!(self, |db, d| sqlx::query_as(sql::TASK_LIST.get(d)).fetch_all(db).await?);
        rows.into_iter().map(TaskRow::decode).collect()
    }

    async fn task_get(&self, name: &str) -> StoreResult<Option<TaskDef>> {
        let row: Option<TaskRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::TASK_GET.get(d)).bind(name).fetch_optional(db).await?);
        row.map(TaskRow::decode).transpose()
    }

    async fn task_update(&self, name: &str, patch: &TaskPatch) -> StoreResult<Option<TaskDef>> {
        let updated = in_tx!(self, |tx, d| {
            let row: Option<TaskRow> =
                sqlx::query_as(sql::TASK_GET_FOR_UPDATE.get(d)).bind(name).fetch_optional(&mut *tx).await?;
            match row {
                None => None,
                Some(row) => {
                    let user_patched = merge_patch(&row.user_patched, patch)?;
                    let mut def = row.decode()?;
                    def.apply(patch);
                    sqlx::query(sql::TASK_UPDATE.get(d))
                        .bind(name)
                        .bind(i64::from(def.max_attempts))
                        .bind(clamp_i64(def.timeout_ms))
                        .bind(clamp_i64(def.memory_limit_bytes))
                        .bind(def.registration_concurrency.as_str())
                        .bind(def.running_concurrency.as_str())
                        .bind(to_json(&def.key_arguments)?)
                        .bind(to_json(&def.pins)?)
                        .bind(def.paused)
                        .bind(user_patched)
                        .bind(to_json(&def.policy)?)
                        .execute(&mut *tx)
                        .await?;
                    Some(def)
                }
            }
        });
        Ok(updated)
    }

    async fn invocation_insert_batch(&self, calls: &[NewInvocation]) -> StoreResult<Vec<Invocation>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let json = insert_json(calls)?;
        let rows: Vec<InvocationRow> = match &self.pools {
            Pools::Sqlite { read, write } => {
                match one_trip(write, sqlx::query_as(sql::INVOCATION_INSERT_ONE_TRIP).bind(json.as_str())).await {
                    Ok(rows) => rows,
                    // The script's insert fails on a call of an unknown task (see sql.rs).
                    Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::NotNullViolation => {
                        let missing: Option<NameRow> = sqlx::query_as(sql::INVOCATION_INSERT_UNKNOWN_TASK)
                            .bind(&json)
                            .fetch_optional(read)
                            .await?;
                        return Err(unknown_task(missing.as_ref().map(|r| r.name.as_str())));
                    }
                    Err(e) => return Err(conflict_on_unique(DUPLICATE_INVOCATION)(e)),
                }
            }
            Pools::Postgres(pool) => {
                let mut ambiguous = false;
                let inserted: StoreResult<Vec<InvocationRow>> = async {
                    Ok(pg_tx!(pool, true, ambiguous, |tx| {
                        let d = Dialect::Postgres;
                        insert_registered!(tx, d, calls)
                    }))
                }
                .await;
                match inserted {
                    Err(StoreError::Conflict(m)) if ambiguous => {
                        return self.inserted_before(calls).await?.ok_or(StoreError::Conflict(m));
                    }
                    other => other?,
                }
            }
        };
        // Input order.
        let position: HashMap<&str, usize> = calls.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
        let mut out = decode_invocations(rows)?;
        out.sort_by_key(|inv| position.get(inv.id.as_str()).copied().unwrap_or(usize::MAX));
        Ok(out)
    }

    async fn invocation_claim_reporting(
        &self,
        node: &str,
        limit: u32,
        report_window_ms: i64,
        filter: &ClaimFilter,
    ) -> StoreResult<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let excluded = to_json(&filter.excluded)?;
        let pinned_here = to_json(&filter.pinned_here)?;
        // A claim reports nothing to a client and is redone after a crash: relaxed commit.
        let mut rows: Vec<ClaimedRow> = match &self.pools {
            Pools::Sqlite { write, .. } => {
                let claim = sqlx::query_as(sql::INVOCATION_CLAIM_ONE_TRIP)
                    .bind(node)
                    .bind(i64::from(limit))
                    .bind(tx_marker())
                    .bind(report_window_ms)
                    .bind(&excluded)
                    .bind(&pinned_here);
                one_trip(write, claim).await?
            }
            Pools::Postgres(pool) => pg_tx!(pool, false, |tx| {
                let mut rows: Vec<ClaimedRow> = sqlx::query_as(sql::INVOCATION_CLAIM_POSTGRES)
                    .bind(node)
                    .bind(i64::from(limit))
                    .bind(&excluded)
                    .bind(&pinned_here)
                    .fetch_all(&mut *tx)
                    .await?;
                if !rows.is_empty() {
                    rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                    let history: Vec<HistoryJson<'_>> = rows
                        .iter()
                        .map(|r| HistoryJson {
                            id: &r.id,
                            status: InvocationStatus::Pending.as_str(),
                            node: Some(node),
                            attempt: r.attempts,
                            at: r.updated_at,
                        })
                        .collect();
                    let history = to_json(&history)?;
                    sqlx::query(sql::HISTORY_INSERT.postgres).bind(&history).execute(&mut *tx).await?;
                    sqlx::query(sql::INSTANCE_QUEUE_POSTGRES)
                        .bind(history)
                        .bind(report_window_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                rows
            }),
        };
        rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        rows.into_iter()
            .map(|r| {
                Ok(Claimed {
                    attempt: to_u32("attempts", r.attempts)?,
                    id: r.id,
                    task: r.task,
                    args: r.args,
                    parent: r.parent,
                    workflow: r.workflow,
                    max_attempts: r.max_attempts.map(|m| to_u32("max_attempts", m)).transpose()?,
                })
            })
            .collect()
    }

    async fn invocation_transition_batch(&self, changes: &[Transition]) -> StoreResult<Vec<TransitionOutcome>> {
        self.transition_batch(changes, false).await
    }

    async fn invocation_recover_node(&self, node: &str) -> StoreResult<u64> {
        let why =
            format!("attempt lost: node `{node}` restarted while it held this attempt; the invocation was rerouted");
        let recovered = in_tx!(self, |tx, d| reroute_owned!(tx, d, node, node, &why));
        Ok(u64::try_from(recovered).unwrap_or(u64::MAX))
    }

    async fn node_retire(&self, node: &str, fence: &Fence) -> StoreResult<u64> {
        let why = format!(
            "attempt lost: node `{node}` stopped heartbeating and was retired by the leader `{}`; the invocation was rerouted",
            fence.node
        );
        let recovered = in_tx!(self, |tx, d| {
            fence!(tx, d, fence);
            let n = reroute_owned!(tx, d, node, &fence.node, &why);
            sqlx::query(sql::coord::NODE_LEAVE.get(d)).bind(node).execute(&mut *tx).await?;
            n
        });
        Ok(u64::try_from(recovered).unwrap_or(u64::MAX))
    }

    async fn invocation_get(&self, id: &str) -> StoreResult<Option<Invocation>> {
        let row: Option<InvocationRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::INVOCATION_GET.get(d)).bind(id).fetch_optional(db).await?);
        row.map(InvocationRow::decode).transpose()
    }

    async fn invocation_find_routed(&self, scopes: &[String], keys: &[String]) -> StoreResult<Vec<Invocation>> {
        if scopes.is_empty() && keys.is_empty() {
            return Ok(Vec::new());
        }
        let (scopes, keys) = (to_json(scopes)?, to_json(keys)?);
        let rows: Vec<InvocationRow> = on_read!(self, |db, d| sqlx::query_as(sql::INVOCATION_FIND_ROUTED.get(d))
            .bind(scopes)
            .bind(keys)
            .fetch_all(db)
            .await?);
        rows.into_iter().map(InvocationRow::decode).collect()
    }

    async fn invocation_purge(&self, fence: &Fence, older_than_ms: u64, limit: u32) -> StoreResult<u64> {
        let age = i64::try_from(older_than_ms).unwrap_or(i64::MAX);
        let purged = in_tx!(self, |tx, d| {
            fence!(tx, d, fence);
            sqlx::query(sql::PURGE_HISTORY.get(d)).bind(age).bind(i64::from(limit)).execute(&mut *tx).await?;
            sqlx::query(sql::PURGE_INVOCATIONS.get(d))
                .bind(age)
                .bind(i64::from(limit))
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(purged)
    }

    async fn instance_list(&self, invocation_id: &str) -> StoreResult<Vec<TaskInstance>> {
        let rows: Vec<InstanceRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::INSTANCE_LIST.get(d)).bind(invocation_id).fetch_all(db).await?);
        rows.into_iter().map(InstanceRow::decode).collect()
    }

    async fn instance_heartbeat(
        &self,
        node: &str,
        held: &[(String, u32)],
        report_window_ms: i64,
    ) -> StoreResult<Vec<HeldInstance>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Serialize)]
        struct HeldJson<'a> {
            id: &'a str,
            attempt: u32,
        }
        let json = to_json(&held.iter().map(|(id, attempt)| HeldJson { id, attempt: *attempt }).collect::<Vec<_>>())?;
        // One statement, autocommit: the cost of a tick does not grow with the instances.
        let rows: Vec<HeldRow> = match &self.pools {
            Pools::Sqlite { write, .. } => {
                sqlx::query_as(sql::INSTANCE_HEARTBEAT.sqlite)
                    .bind(node)
                    .bind(&json)
                    .bind(report_window_ms)
                    .fetch_all(write)
                    .await?
            }
            Pools::Postgres(pool) => {
                let mut retry = Retry::new();
                loop {
                    let beat = sqlx::query_as(sql::INSTANCE_HEARTBEAT.postgres)
                        .bind(node)
                        .bind(json.as_str())
                        .bind(report_window_ms)
                        .fetch_all(pool)
                        .await
                        .map_err(StoreError::from);
                    match beat {
                        Err(e) if retry.again(&e, "instance heartbeat").await => continue,
                        other => break other?,
                    }
                }
            }
        };
        rows.into_iter()
            .map(|r| {
                Ok(HeldInstance {
                    attempt: to_u32("attempt", r.attempt)?,
                    invocation_id: r.invocation_id,
                    status: r.status,
                    signal: r.signal,
                })
            })
            .collect()
    }

    async fn invocation_transition_signal(
        &self,
        change: &Transition,
        signal: &str,
    ) -> StoreResult<(TransitionOutcome, Option<String>)> {
        if !follows_table(change) {
            return Ok((TransitionOutcome::BadTransition, None));
        }
        let (applied, node): (bool, Option<NameRow>) = in_tx!(self, |tx, d| {
            let applied = !transition_pass!(tx, d, &[change]).is_empty();
            let node = if applied {
                sqlx::query_as(sql::INSTANCE_SIGNAL.get(d))
                    .bind(&change.id)
                    .bind(signal)
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            (applied, node)
        });
        if applied {
            return Ok((TransitionOutcome::Applied, node.map(|n| n.name)));
        }
        let mut outcomes = [TransitionOutcome::LostRace];
        self.explain_rejections(std::slice::from_ref(change), &[0], &mut outcomes, false).await?;
        Ok((outcomes[0], None))
    }

    async fn instance_overdue(&self, now: Millis, limit: u32) -> StoreResult<Vec<Overdue>> {
        let rows: Vec<OverdueRow> = on_read!(self, |db, d| sqlx::query_as(sql::INSTANCE_OVERDUE.get(d))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(Overdue {
                    attempt: to_u32("attempt", r.attempt)?,
                    status: r.status.parse().map_err(|e| corrupt("instance status", e))?,
                    invocation_id: r.invocation_id,
                    node: r.node,
                    report_by: r.report_by,
                })
            })
            .collect()
    }

    async fn instance_triage_apply(&self, decisions: &[Triage], fence: &Fence) -> StoreResult<(usize, Vec<String>)> {
        if decisions.is_empty() {
            return Ok((0, Vec::new()));
        }
        #[derive(Serialize)]
        struct TriageJson<'a> {
            id: &'a str,
            attempt: u32,
            from: &'static str,
            to: &'static str,
            report_by: i64,
            next_report_by: Option<i64>,
            error_kind: Option<&'static str>,
            error_message: Option<String>,
        }
        let rows: Vec<TriageJson<'_>> = decisions
            .iter()
            .map(|t| {
                let o = &t.instance;
                let failed = t.to.is_final();
                TriageJson {
                    id: &o.invocation_id,
                    attempt: o.attempt,
                    from: o.status.as_str(),
                    to: t.to.as_str(),
                    report_by: o.report_by,
                    next_report_by: t.report_by,
                    error_kind: failed.then_some("host"),
                    error_message: failed.then(|| {
                        format!("node `{}` stopped reporting for this attempt (due by {} ms)", o.node, o.report_by)
                    }),
                }
            })
            .collect();
        let json = to_json(&rows)?;
        // The invocations that may be rerouted, locked (PostgreSQL) before any instance: the
        // global lock order is invocations, then instances.
        let mut reroute_ids: Vec<&str> =
            decisions.iter().filter(|t| t.reroute).map(|t| t.instance.invocation_id.as_str()).collect();
        reroute_ids.sort_unstable();
        reroute_ids.dedup();
        let reroute_ids = to_json(&reroute_ids)?;
        let (changed, rerouted) = in_tx!(self, |tx, d| {
            fence!(tx, d, fence);
            let movable: Vec<MovableRow> = if decisions.iter().any(|t| t.reroute) {
                sqlx::query_as(sql::INVOCATION_MOVABLE.get(d)).bind(reroute_ids.as_str()).fetch_all(&mut *tx).await?
            } else {
                Vec::new()
            };
            let applied: Vec<KeyRow> =
                sqlx::query_as(sql::INSTANCE_TRIAGE.get(d)).bind(json.as_str()).fetch_all(&mut *tx).await?;
            let applied: HashSet<(String, i64)> = applied.into_iter().map(|r| (r.invocation_id, r.attempt)).collect();
            // The invocations to take back: those of changed instances marked `reroute` whose
            // node still owns them with the instance's attempt.
            let owners: HashMap<&str, (&str, u32)> = decisions
                .iter()
                .filter(|t| {
                    t.reroute && applied.contains(&(t.instance.invocation_id.clone(), i64::from(t.instance.attempt)))
                })
                .map(|t| (t.instance.invocation_id.as_str(), (t.instance.node.as_str(), t.instance.attempt)))
                .collect();
            let rows: Vec<MovableRow> = movable
                .into_iter()
                .filter(|r| {
                    let owned = parse_status(&r.status).is_ok_and(InvocationStatus::is_owned);
                    owned
                        && owners.get(r.id.as_str()).is_some_and(|(node, attempt)| {
                            r.owner_node.as_deref() == Some(*node) && r.attempts == i64::from(*attempt)
                        })
                })
                .collect();
            let changes = moves(rows, &fence.node, recovery_path)?;
            let positions = apply_moves!(tx, d, &changes);
            let rerouted: Vec<String> =
                positions.into_iter().filter_map(|i| changes.get(i).map(|c| c.id.clone())).collect();
            (applied.len(), rerouted)
        });
        Ok((changed, rerouted))
    }

    async fn instance_usage(&self, task: &str, limit: u32) -> StoreResult<Vec<(String, i64, i64)>> {
        Ok(on_read!(self, |db, d| sqlx::query_as(sql::INSTANCE_USAGE.get(d))
            .bind(task)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?))
    }

    async fn invocation_children(&self, parent: &str) -> StoreResult<Vec<Invocation>> {
        let rows: Vec<InvocationRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::INVOCATION_CHILDREN.get(d)).bind(parent).fetch_all(db).await?);
        rows.into_iter().map(InvocationRow::decode).collect()
    }

    async fn invocation_get_many(&self, ids: &[String]) -> StoreResult<Vec<Invocation>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let json = to_json(ids)?;
        let rows: Vec<InvocationRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::INVOCATION_GET_MANY.get(d)).bind(&json).fetch_all(db).await?);
        // Input order; an id asked for twice is returned twice.
        let mut left: HashMap<&str, usize> = HashMap::new();
        for id in ids {
            *left.entry(id.as_str()).or_default() += 1;
        }
        let mut by_id: HashMap<String, Invocation> =
            decode_invocations(rows)?.into_iter().map(|inv| (inv.id.clone(), inv)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let n = left.entry(id.as_str()).or_default();
            *n = n.saturating_sub(1);
            let found = if *n > 0 { by_id.get(id).cloned() } else { by_id.remove(id) };
            out.extend(found);
        }
        Ok(out)
    }

    async fn invocation_list(&self, filter: &InvocationFilter) -> StoreResult<Vec<Invocation>> {
        let statement = match (&filter.task, filter.status) {
            (None, None) => sql::INVOCATION_LIST,
            (Some(_), None) => sql::INVOCATION_LIST_TASK,
            (None, Some(_)) => sql::INVOCATION_LIST_STATUS,
            (Some(_), Some(_)) => sql::INVOCATION_LIST_TASK_STATUS,
        };
        let rows: Vec<InvocationRow> = on_read!(self, |db, d| {
            let mut q = sqlx::query_as(statement.get(d)).bind(filter.cursor.as_deref()).bind(i64::from(filter.limit));
            if let Some(task) = &filter.task {
                q = q.bind(task.as_str());
            }
            if let Some(status) = filter.status {
                q = q.bind(status.as_str());
            }
            q.fetch_all(db).await?
        });
        decode_invocations(rows)
    }

    async fn invocation_count(
        &self,
        task: Option<&str>,
        status: Option<InvocationStatus>,
    ) -> StoreResult<Vec<StatusCount>> {
        let statement = match (task, status) {
            (None, None) => sql::INVOCATION_COUNT,
            (Some(_), None) => sql::INVOCATION_COUNT_TASK,
            (None, Some(_)) => sql::INVOCATION_COUNT_STATUS,
            (Some(_), Some(_)) => sql::INVOCATION_COUNT_TASK_STATUS,
        };
        let rows: Vec<CountRow> = on_read!(self, |db, d| {
            let mut q = sqlx::query_as(statement.get(d));
            if let Some(task) = task {
                q = q.bind(task);
            }
            if let Some(status) = status {
                q = q.bind(status.as_str());
            }
            q.fetch_all(db).await?
        });
        rows.into_iter()
            .map(|r| Ok(StatusCount { status: parse_status(&r.status)?, task: r.task, count: r.count }))
            .collect()
    }

    async fn invocation_history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        let rows: Vec<HistoryRow> =
            on_read!(self, |db, d| sqlx::query_as(sql::INVOCATION_HISTORY.get(d)).bind(id).fetch_all(db).await?);
        rows.into_iter()
            .map(|r| {
                Ok(HistoryEntry {
                    status: parse_status(&r.status)?,
                    node: r.node,
                    attempt: to_u32("history attempt", r.attempt)?,
                    at: r.at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_status_lists_match_the_status_table() {
        let quoted = |it: &mut dyn Iterator<Item = InvocationStatus>| {
            format!("({})", it.map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", "))
        };
        assert_eq!(sql::RUNNABLE_STATUSES, quoted(&mut InvocationStatus::runnable()));
        assert_eq!(sql::FINAL_STATUSES, quoted(&mut InvocationStatus::ALL.iter().copied().filter(|s| s.is_final())));
        let unfinished = sql::UNFINISHED_STATUSES.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(unfinished, quoted(&mut InvocationStatus::ALL.iter().copied().filter(|s| !s.is_final())));
        assert_eq!(sql::OWNED_STATUSES, quoted(&mut InvocationStatus::ALL.iter().copied().filter(|s| s.is_owned())));
    }

    #[test]
    fn merge_patch_overrides_only_given_fields() {
        let first = TaskPatch { max_attempts: Some(5), paused: Some(true), ..TaskPatch::default() };
        let merged = merge_patch("{}", &first).unwrap();
        let second = TaskPatch { max_attempts: Some(7), ..TaskPatch::default() };
        let merged = parse_patch(&merge_patch(&merged, &second).unwrap()).unwrap();
        assert_eq!(merged, TaskPatch { max_attempts: Some(7), paused: Some(true), ..TaskPatch::default() });
    }
}

// The coordination tables (membership, atomic services, triggers, events), in a file of their
// own; declared here so that it shares the macros above.
#[path = "coord.rs"]
mod coord;

// Workflows and arrays, in a file of their own; declared here so that it shares the macros
// above.
#[path = "workflow.rs"]
mod workflow;

// API keys, in a file of their own; declared here so that it shares the macros above.
#[path = "keys.rs"]
mod keys;
