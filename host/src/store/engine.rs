//! The one implementation of [`Store`], [`SqlStore`], for both databases; [`SqliteStore`](super::SqliteStore)
//! and [`PgStore`](super::PgStore) only open it.
//!
//! # Why an enum of native pools and not `sqlx::Any` or generics
//!
//! [`SqlStore`] holds a [`Pools`] enum: SQLite (a pool of readers plus exactly ONE writer
//! connection behind a gate, since SQLite allows one writer) or PostgreSQL (one pool). Every method is
//! written once; the [`on_read!`], [`in_tx!`] and [`on_conn!`] macros only write its body out
//! once per arm, so the same source compiles against each native driver. What happens around
//! a body is ordinary functions: [`sqlite_write`] and [`pg_write`] begin, commit or roll back
//! (and on PostgreSQL retry transient failures, [`Retry`]); statements that several writes
//! share run on a [`Conn`] (the leader's [`check_fence`], `invocations::insert_registered`,
//! the transition pass in `transitions.rs`) and return their errors to the caller's `?`.
//! Compared with the alternatives:
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
//!   a NOT NULL constraint, see [`sql::invocations::INVOCATION_INSERT_ONE_TRIP`]), and claims and
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
//!
//! # Files
//!
//! This file holds the pools, the transactions, the shared conversions and the [`Store`]
//! impl, one line per method; each subject has a file of its own beside it, its SQL in the
//! `sql_*.rs` file of the same name: `components.rs` (components and tasks), `invocations.rs`
//! (routing, claims, reads, purge), `transitions.rs` (the transition batch, what a transition
//! writes, recovery), `instances.rs` (heartbeats, triage), `coord.rs` (membership, atomic
//! services, lease, ring), `triggers.rs` (triggers and events), `workflow.rs`, `keys.rs`, `changes.rs` (the change feed).

use async_trait::async_trait;
use serde::Serialize;
use sqlx::query::QueryAs;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{PgConnection, PgPool, Sqlite, SqliteConnection, SqlitePool};

use super::sql::{self, Sql};
use super::write_gate::{Lane, SqliteWriter};
use super::{ClaimFilter, Fence, HeldInstance, StatusCount, Store, StoreError, StoreResult, TransitionOutcome};
use crate::model::instance::{Overdue, Triage};
use crate::model::{
    Claimed, ComponentInfo, ComponentVersion, ErrorKind, HistoryEntry, Invocation, InvocationFilter, InvocationStatus,
    Millis, NewInvocation, TaskDef, TaskFailure, TaskInstance, TaskPatch, Transition,
};

use crate::model::rate_limit::RateLimit;

// Rows shared with the subject files below.
use invocations::{CountRow, insert_registered};

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
    /// SQLite: readers (WAL lets them run beside the writer) and one writer connection behind
    /// a gate, so writers queue at the gate instead of fighting over the database lock.
    Sqlite {
        /// Read-only (`query_only`) connections.
        read: SqlitePool,
        /// The single writer connection behind its gate: routings first (see `write_gate.rs`).
        writer: Box<SqliteWriter>,
        /// The one connection that checkpoints the write-ahead log ([`Store::checkpoint`]).
        checkpoint: SqlitePool,
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

    /// The PostgreSQL pool, for tests of what the store's own sessions do.
    #[cfg(test)]
    pub(super) fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pools {
            Pools::Postgres(pool) => Some(pool),
            Pools::Sqlite { .. } => None,
        }
    }

    /// Whether a routing waits for SQLite's writer (never on PostgreSQL, where writers do not
    /// queue behind one another).
    pub(super) fn urgent_waiting(&self) -> bool {
        match &self.pools {
            Pools::Sqlite { writer, .. } => writer.urgent_waiting(),
            Pools::Postgres(_) => false,
        }
    }

    /// The SQLite writer (`None` on PostgreSQL), for tests.
    #[cfg(test)]
    pub(super) fn sqlite_writer(&self) -> Option<&SqliteWriter> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => Some(writer),
            Pools::Postgres(_) => None,
        }
    }

    /// Whether the writes commit durably, for tests: the `PRAGMA synchronous` of the SQLite
    /// writer (2 = FULL); on PostgreSQL 2 if every open connection of the pool has
    /// `synchronous_commit` on, else 1 (a relaxed write must not leave its setting behind on
    /// a pooled connection).
    #[cfg(test)]
    pub(super) async fn writer_synchronous(&self) -> StoreResult<i64> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => {
                let mut held = writer.enter(Lane::Background, "test").await?;
                let sync = sqlx::query_scalar("PRAGMA synchronous").fetch_one(held.conn()).await?;
                held.settle();
                Ok(sync)
            }
            Pools::Postgres(pool) => {
                // Every open connection: held until all are seen, so none is seen twice (one
                // just released may not be idle yet, so `num_idle` could miss it).
                let (mut held, mut durable) = (Vec::new(), true);
                for _ in 0..pool.size() {
                    let mut conn = pool.acquire().await?;
                    let setting: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&mut *conn).await?;
                    durable &= setting == "on";
                    held.push(conn);
                }
                Ok(if durable { 2 } else { 1 })
            }
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

/// Whether the commit of a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// The commit is on disk when the write returns.
    Durable,
    /// The commit does not wait for the disk: SQLite runs it with `synchronous=NORMAL`,
    /// PostgreSQL with `synchronous_commit = off`. Both logs are sequential, so such a commit
    /// becomes durable with the next durable one; a crash can only lose a suffix of relaxed
    /// commits. For writes that report nothing to a client and whose loss is redone: an
    /// attempt's `running`, `paused`, `resumed` (its next write is written again from where
    /// the crash left the invocation: `Transition::rebased`), a workflow's step, and on
    /// SQLite a claim (lost only with the machine, its node with it). The outcomes a client
    /// sees (routed, final, retry) and PostgreSQL's claims are durable before they are reported.
    Relaxed,
}

impl Commit {
    /// `Durable` when `durable`, else `Relaxed`.
    pub(super) fn durable_if(durable: bool) -> Self {
        if durable { Self::Durable } else { Self::Relaxed }
    }
}

/// A boxed, sendable future: what the body of a write transaction returns.
pub(super) type BoxFuture<'t, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 't>>;

/// The second argument of a transaction body: `&'t &'e ()` tells the compiler that what the
/// body borrows from its caller (`'e`) outlives the transaction it runs in (`'t`), which a
/// closure over `for<'t> &'t mut Connection` cannot say otherwise.
pub(super) type Scope<'t, 'e> = &'t &'e ();

/// Runs `body` in a write transaction on the SQLite writer, begun IMMEDIATE (the write lock is
/// taken up front: a deferred transaction could fail to upgrade if another process wrote in
/// between). The transaction commits if `body` returns `Ok` and rolls back if it returns
/// `Err`, which is then returned. `BEGIN` and `COMMIT` are plain SQL, each in one round trip
/// with the `PRAGMA synchronous` of a relaxed commit (as in [`one_trip`]): a round trip on a
/// busy node costs a thread wake-up, and the writer is held meanwhile. If the connection
/// cannot be brought back to no transaction and `synchronous = FULL`, it is closed.
pub(super) async fn sqlite_write<'e, T>(
    writer: &SqliteWriter,
    what: &'static str,
    commit: Commit,
    body: impl for<'t> FnOnce(&'t mut SqliteConnection, Scope<'t, 'e>) -> BoxFuture<'t, StoreResult<T>>,
) -> StoreResult<T> {
    let scope: &'e () = &();
    let mut held = writer.enter(Lane::Background, what).await?;
    let relaxed = commit == Commit::Relaxed;
    let (begin, end) = if relaxed {
        ("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE", "COMMIT; PRAGMA synchronous = FULL")
    } else {
        ("BEGIN IMMEDIATE", "COMMIT")
    };
    // A failure here leaves `held` unsettled: the connection is closed.
    sqlx::query(begin).execute(held.conn()).await?;
    let result = match body(held.conn(), &scope).await {
        Ok(out) => sqlx::query(end).execute(held.conn()).await.map(|_| out).map_err(StoreError::from),
        Err(e) => Err(e),
    };
    held.finish(result.is_err()).await;
    result
}

/// Runs `body` in a PostgreSQL transaction on `pool`: committed if `body` returns `Ok`,
/// rolled back if it returns `Err`. A transaction the database aborts for a transient reason
/// (deadlock, serialization failure, lost connection: [`StoreError::is_transient`]) runs again
/// from the start ([`Retry`], logged as the write `what`), so `body` must be re-runnable: it
/// may borrow but not move what it uses. `ambiguous` is set when a try that failed may have
/// been stored all the same ([`Retry::ambiguous`]).
pub(super) async fn pg_write<'e, T>(
    pool: &PgPool,
    commit: Commit,
    what: &'static str,
    ambiguous: &mut bool,
    mut body: impl for<'t> FnMut(&'t mut PgConnection, Scope<'t, 'e>) -> BoxFuture<'t, StoreResult<T>>,
) -> StoreResult<T> {
    let scope: &'e () = &();
    let mut retry = Retry::new();
    loop {
        let attempt: StoreResult<T> = async {
            let mut tx = pool.begin().await?;
            if commit == Commit::Relaxed {
                sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
            }
            let out = body(&mut tx, &scope).await?;
            tx.commit().await?;
            Ok(out)
        }
        .await;
        match attempt {
            Err(e) if retry.again(&e, what).await => continue,
            other => {
                *ambiguous |= retry.ambiguous();
                return other;
            }
        }
    }
}

/// Runs one PostgreSQL statement that is its own transaction (a CTE that writes everything a
/// change needs: a claim's, a transition batch's; routing keeps a loop of its own, as it reads
/// the database's error before deciding to try again), again from the start on a
/// transient error as [`pg_write`] runs a transaction; `ambiguous` is set when a try that
/// failed may have been stored all the same ([`Retry::ambiguous`]).
pub(super) async fn pg_statement<T, F>(
    what: &'static str,
    ambiguous: &mut bool,
    mut run: impl FnMut() -> F,
) -> StoreResult<T>
where
    F: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut retry = Retry::new();
    loop {
        match run().await.map_err(StoreError::from) {
            Err(e) if retry.again(&e, what).await => continue,
            other => {
                *ambiguous |= retry.ambiguous();
                return other;
            }
        }
    }
}

/// Wraps the body of a write transaction as the future [`sqlite_write`] and [`pg_write`] take
/// (it fixes the error type that `?` converts to).
pub(super) fn tx_body<'t, T>(
    body: impl std::future::Future<Output = StoreResult<T>> + Send + 't,
) -> BoxFuture<'t, StoreResult<T>> {
    Box::pin(body)
}

/// A write transaction on either database: `in_tx!(self, |tx, d| body)` runs `body` with `tx`
/// bound to the connection inside the transaction (`&mut SqliteConnection` or
/// `&mut PgConnection`, an executor as `&mut *tx`) and `d` to the [`Dialect`], and evaluates
/// to its value; an error fails the method (`?`). The macro only writes the body out once per
/// backend; beginning, committing, rolling back and retrying are [`sqlite_write`] and
/// [`pg_write`]. The body is an async block on both backends: a `?` or `return Err(…)` in it
/// rolls the transaction back, a `return Ok(v)` commits with value `v`.
/// `in_tx!(self, commit, &mut ambiguous, |tx, d| body)` also chooses the [`Commit`] and
/// reports whether a failed try may have been stored ([`pg_write`]).
macro_rules! in_tx {
    ($self:ident, |$tx:ident, $d:ident| $body:expr) => {
        in_tx!($self, $crate::store::engine::Commit::Durable, &mut false, |$tx, $d| $body)
    };
    ($self:ident, $commit:expr, $ambiguous:expr, |$tx:ident, $d:ident| $body:expr) => {
        match &$self.pools {
            Pools::Sqlite { writer, .. } => {
                $crate::store::engine::sqlite_write(writer, concat!(module_path!(), ":", line!()), $commit, |$tx, _| {
                    $crate::store::engine::tx_body(async {
                        let $d = Dialect::Sqlite;
                        Ok::<_, $crate::store::StoreError>($body)
                    })
                })
                .await?
            }
            Pools::Postgres(pool) => {
                $crate::store::engine::pg_write(
                    pool,
                    $commit,
                    concat!(module_path!(), ":", line!()),
                    $ambiguous,
                    |$tx, _| {
                        $crate::store::engine::tx_body(async {
                            let $d = Dialect::Postgres;
                            Ok::<_, $crate::store::StoreError>($body)
                        })
                    },
                )
                .await?
            }
        }
    };
}

/// A connection inside a write transaction, on either database: what the statements that
/// several writes share ([`check_fence`], `insert_registered`, the transition pass) run on. A
/// body of [`in_tx!`] passes its `&mut *tx`.
pub(super) enum Conn<'c> {
    /// SQLite.
    Sqlite(&'c mut SqliteConnection),
    /// PostgreSQL.
    Postgres(&'c mut PgConnection),
}

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(c: &'c mut SqliteConnection) -> Self {
        Self::Sqlite(c)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(c: &'c mut PgConnection) -> Self {
        Self::Postgres(c)
    }
}

/// A reborrow, so that a function can pass its connection on and go on using it.
impl<'a, 'c> From<&'a mut Conn<'c>> for Conn<'a> {
    fn from(c: &'a mut Conn<'c>) -> Self {
        match c {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// Runs `$body` with `$c` bound to the native connection of a [`Conn`] (an executor as
/// `&mut *$c`) and `$d` to its [`Dialect`]; the body is written out once per backend.
macro_rules! on_conn {
    ($conn:expr, |$c:ident, $d:ident| $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => {
                let $d = Dialect::Sqlite;
                $body
            }
            Conn::Postgres($c) => {
                let $d = Dialect::Postgres;
                $body
            }
        }
    };
}

/// The leader's fence inside a write transaction, its first statement: checks that `fence`
/// still holds the lease with its epoch and that it has not expired (locking the lease row on
/// PostgreSQL until the commit, so no new term can begin meanwhile). Fails with
/// [`StoreError::Fenced`] otherwise; the caller's `?` then rolls the transaction back.
pub(super) async fn check_fence(conn: impl Into<Conn<'_>>, fence: &Fence) -> StoreResult<()> {
    let held: Option<i64> = on_conn!(conn.into(), |c, d| sqlx::query_scalar(sql::coord::LEASE_CHECK.get(d))
        .bind(&fence.node)
        .bind(fence.epoch)
        .fetch_optional(&mut *c)
        .await?);
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced { node: fence.node.clone(), epoch: fence.epoch }),
    }
}

/// Bumps the catalog version `name` (`tasks` or `keys`): the first statement of every
/// transaction that writes them, so that each node's membership tick sees the change
/// ([`crate::model::TickView`]) and, on PostgreSQL, all such transactions lock that row first.
pub(super) async fn bump_catalog(conn: impl Into<Conn<'_>>, name: &str) -> StoreResult<()> {
    on_conn!(conn.into(), |c, d| {
        sqlx::query(sql::coord::CATALOG_BUMP.get(d)).bind(name).execute(&mut *c).await?;
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rows and conversions shared by the subjects.

#[derive(sqlx::FromRow)]
struct NameRow {
    name: String,
}

#[derive(sqlx::FromRow)]
struct NowRow {
    now: i64,
}

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

/// A fresh marker for the rows one SQLite script changes (`last_tx`, see [`sql`]): random, so
/// no other transaction, past or concurrent, stamps the same value (one chance in 2^64).
fn tx_marker() -> i64 {
    rand::random()
}

/// Runs a SQLite one-trip script (`sql::*_ONE_TRIP`: a whole transaction) on the writer in a
/// single round trip and returns the rows of its statements. If it fails, the transaction is
/// rolled back and `synchronous` set back to `FULL` before the writer is let go; if that does
/// not work, or the future is dropped midway, the connection is closed ([`Held`](super::write_gate::Held)).
async fn one_trip<R>(
    writer: &SqliteWriter,
    lane: Lane,
    what: &'static str,
    query: QueryAs<'_, Sqlite, R, SqliteArguments>,
) -> Result<Vec<R>, sqlx::Error>
where
    R: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow>,
{
    let mut held = writer.enter(lane, what).await?;
    let result = query.fetch_all(held.conn()).await;
    held.finish(result.is_err()).await;
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

// ---------------------------------------------------------------------------------------------
// The trait, one line per method: each subject's code is in its own file.

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

    async fn usage(&self) -> StoreResult<super::StoreUsage> {
        Ok(on_read!(self, |db, d| sqlx::query_as(sql::USAGE.get(d)).fetch_one(db).await?))
    }

    async fn checkpoint(&self) -> StoreResult<()> {
        match &self.pools {
            Pools::Sqlite { checkpoint, .. } => super::sqlite::checkpoint(checkpoint).await,
            Pools::Postgres(_) => Ok(()),
        }
    }

    async fn tidy(&self) -> StoreResult<()> {
        tidy::tidy(self).await
    }

    async fn component_put(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
        tasks: &[TaskDef],
    ) -> StoreResult<ComponentInfo> {
        let version = components::VersionSource::Code { digest, bytes };
        components::put(self, &components::NewComponent { name, version, tasks }).await
    }

    async fn component_activate(&self, name: &str, version: u64, tasks: &[TaskDef]) -> StoreResult<ComponentInfo> {
        let version = components::VersionSource::Stored(version);
        components::put(self, &components::NewComponent { name, version, tasks }).await
    }

    async fn component_versions(&self, name: &str) -> StoreResult<Option<Vec<ComponentVersion>>> {
        components::versions(self, name).await
    }

    async fn component_version_bytes(&self, name: &str, version: u64) -> StoreResult<Option<Vec<u8>>> {
        components::version_bytes(self, name, version).await
    }

    async fn component_version_delete(&self, name: &str, version: u64) -> StoreResult<()> {
        components::version_delete(self, name, version).await
    }

    async fn component_list(&self) -> StoreResult<Vec<ComponentInfo>> {
        components::list(self).await
    }

    async fn component_get(&self, name: &str) -> StoreResult<Option<ComponentInfo>> {
        components::get(self, name).await
    }

    async fn component_delete(&self, name: &str) -> StoreResult<bool> {
        components::delete(self, name).await
    }

    async fn task_list(&self) -> StoreResult<Vec<TaskDef>> {
        components::task_list(self).await
    }

    async fn task_get(&self, name: &str) -> StoreResult<Option<TaskDef>> {
        components::task_get(self, name).await
    }

    async fn task_update(&self, name: &str, patch: &TaskPatch) -> StoreResult<Option<TaskDef>> {
        components::task_update(self, name, patch).await
    }

    async fn invocation_insert_batch(&self, calls: &[NewInvocation]) -> StoreResult<Vec<Invocation>> {
        invocations::insert_batch(self, calls).await
    }

    async fn invocation_claim_reporting(
        &self,
        node: &str,
        limit: u32,
        report_window_ms: i64,
        filter: &ClaimFilter,
    ) -> StoreResult<Vec<Claimed>> {
        invocations::claim(self, &invocations::Claim { node, limit, report_window_ms, filter }).await
    }

    async fn invocation_transition_batch(&self, changes: &[Transition]) -> StoreResult<Vec<TransitionOutcome>> {
        self.transition_batch(changes, false).await
    }

    async fn invocation_claim_rate_limited(
        &self,
        node: &str,
        limit: u32,
        report_window_ms: i64,
        filter: &ClaimFilter,
    ) -> StoreResult<super::RateClaim> {
        invocations::claim_rate_limited(self, &invocations::Claim { node, limit, report_window_ms, filter }).await
    }

    async fn rate_limit_put(
        &self,
        name: &str,
        limit: u64,
        per_ms: u64,
        key: Option<&str>,
    ) -> StoreResult<(RateLimit, bool)> {
        rate_limits::put(self, name, limit, per_ms, key).await
    }

    async fn rate_limit_list(&self) -> StoreResult<Vec<RateLimit>> {
        rate_limits::list(self).await
    }

    async fn rate_limit_get(&self, name: &str) -> StoreResult<Option<RateLimit>> {
        rate_limits::get(self, name).await
    }

    async fn rate_limit_delete(&self, name: &str) -> StoreResult<bool> {
        rate_limits::delete(self, name).await
    }

    async fn rate_limited_until(&self, limit: &str, key: &str) -> StoreResult<Option<Millis>> {
        rate_limits::limited_until(self, limit, key).await
    }

    async fn invocation_recover_node(&self, node: &str) -> StoreResult<u64> {
        transitions::recover_node(self, node).await
    }

    async fn node_retire(&self, node: &str, fence: &Fence) -> StoreResult<u64> {
        transitions::retire_node(self, node, fence).await
    }

    async fn invocation_get(&self, id: &str) -> StoreResult<Option<Invocation>> {
        invocations::get(self, id).await
    }

    async fn invocation_waiting(&self, id: &str) -> StoreResult<Option<crate::model::Waiting>> {
        invocations::waiting(self, id).await
    }

    async fn invocation_find_routed(&self, scopes: &[String], keys: &[String]) -> StoreResult<Vec<Invocation>> {
        invocations::find_routed(self, scopes, keys).await
    }

    async fn invocation_debounce(&self, calls: &[super::Debounce]) -> StoreResult<Vec<String>> {
        invocations::debounce(self, calls).await
    }

    async fn invocation_purge(&self, fence: &Fence, older_than_ms: u64, limit: u32) -> StoreResult<u64> {
        invocations::purge(self, fence, older_than_ms, limit).await
    }

    async fn instance_list(&self, invocation_id: &str) -> StoreResult<Vec<TaskInstance>> {
        instances::list(self, invocation_id).await
    }

    async fn instance_heartbeat(
        &self,
        node: &str,
        held: &[crate::model::instance::HeldAttempt],
        report_window_ms: i64,
    ) -> StoreResult<Vec<HeldInstance>> {
        instances::heartbeat(self, node, held, report_window_ms).await
    }

    async fn invocation_transition_signal(
        &self,
        change: &Transition,
        signal: &str,
    ) -> StoreResult<(TransitionOutcome, Option<String>)> {
        transitions::transition_signal(self, change, signal).await
    }

    async fn instance_overdue(&self, now: Millis, limit: u32) -> StoreResult<Vec<Overdue>> {
        instances::overdue(self, now, limit).await
    }

    async fn instance_triage_apply(&self, decisions: &[Triage], fence: &Fence) -> StoreResult<(usize, Vec<String>)> {
        instances::triage_apply(self, decisions, fence).await
    }

    async fn instance_usage(&self, task: &str, limit: u32) -> StoreResult<Vec<crate::model::instance::AttemptUsage>> {
        instances::usage(self, task, limit).await
    }

    async fn invocation_children(&self, parent: &str) -> StoreResult<Vec<Invocation>> {
        invocations::children(self, parent).await
    }

    async fn invocation_get_many(&self, ids: &[String]) -> StoreResult<Vec<Invocation>> {
        invocations::get_many(self, ids).await
    }

    async fn invocation_list(&self, filter: &InvocationFilter) -> StoreResult<Vec<Invocation>> {
        invocations::list(self, filter).await
    }

    async fn invocation_count(
        &self,
        task: Option<&str>,
        status: Option<InvocationStatus>,
    ) -> StoreResult<Vec<StatusCount>> {
        invocations::count(self, task, status).await
    }

    async fn invocation_history(&self, id: &str) -> StoreResult<Vec<HistoryEntry>> {
        invocations::history(self, id).await
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
}

// Each subject in a file of its own, its SQL in the `sql_*.rs` file of the same name; declared
// here, after the macros above, so that they share them.

// Components and tasks.
#[path = "components.rs"]
mod components;

// Invocations: routing, claims and reads.
#[path = "invocations.rs"]
mod invocations;

// Transitions of invocations and recovery.
#[path = "transitions.rs"]
mod transitions;

// Task instances: heartbeats, signals, triage.
#[path = "instances.rs"]
mod instances;

// Membership, the atomic services' gate and records, the leader lease and the token ring.
#[path = "coord.rs"]
mod coord;

// Triggers and events.
#[path = "triggers.rs"]
mod triggers;

// Workflows and arrays.
#[path = "workflow.rs"]
mod workflow;

// Housekeeping: statistics and dead rows when autovacuum does not keep up.
#[path = "tidy.rs"]
mod tidy;

// API keys.
#[path = "keys.rs"]
mod keys;

// The change feed: the history in sequence order, PostgreSQL's LISTEN/NOTIFY.
#[path = "changes.rs"]
mod changes;

// Rate limits: the limits and what started in each window (their claim is in invocations.rs).
#[path = "rate_limits.rs"]
mod rate_limits;
pub use changes::ChangeListener;
