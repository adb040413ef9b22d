//! The store conformance suite: every test runs against a fresh SQLite file and a fresh
//! PostgreSQL database (`store::conformance::<test>::{sqlite,postgres}`), so both backends
//! keep exactly the semantics documented on [`Store`].
//!
//! PostgreSQL tests need `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`) and
//! fail loudly without it: a missing service is a failure, never a skip. Each test creates its
//! own database `warden_t_<random>` through that connection and drops it at the end (best
//! effort), so tests run in parallel.
//!
//! This file holds the harness, the `conformance!` generator and the shared fixtures; the
//! tests are in one file per subject beside it.

use super::engine::SqlStore;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

use super::{ClaimFilter, Fence, PgStore, ServiceGate, SqliteStore, StatusCount, Store, StoreError, TransitionOutcome};
use crate::model::{
    ArgsFrom, Claimed, Concurrency, ErrorKind, Invocation, InvocationFilter, InvocationStatus, NewInvocation, Owner,
    ServiceRunStatus, TaskDef, TaskFailure, TaskPatch, Transition, Trigger, TriggerCondition, TriggerRun,
};

use InvocationStatus::*;
use TransitionOutcome::{Applied, BadTransition, LostRace, NotFound, WrongOwner};

// ---------------------------------------------------------------------------------------------
// Harness.

/// A fresh store plus what it takes to reach the same database again.
pub(super) struct Harness {
    pub(super) store: Arc<dyn Store>,
    target: Target,
}

/// Fields drop in order: the store closes before its database or directory goes.
enum Target {
    Sqlite { path: PathBuf, store: Arc<SqlStore>, _dir: tempfile::TempDir },
    Postgres { store: Arc<SqlStore>, db: Box<PgDatabase> },
}

/// A throw-away PostgreSQL database, dropped (best effort) with the harness.
struct PgDatabase {
    admin: PgConnectOptions,
    name: String,
}

impl PgDatabase {
    fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(drop_sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

impl Harness {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("warden.db");
        let store = Arc::new(SqliteStore::open(&path).await.expect("open SQLite store"));
        Self { store: store.clone(), target: Target::Sqlite { path, store, _dir: dir } }
    }

    pub(super) async fn postgres() -> Self {
        let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
            panic!(
                "DATABASE_URL is not set: the PostgreSQL conformance tests need a server, e.g. \
                 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p warden store::"
            )
        });
        let admin: PgConnectOptions = url.parse().expect("DATABASE_URL is not a PostgreSQL URL");
        let name = format!("warden_t_{:016x}", rand::random::<u64>());
        let mut conn = admin
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL ({url}): {e}; is PostgreSQL running?"));
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let db = PgDatabase { admin, name };
        let store = Arc::new(PgStore::connect_with(db.options(), 8).await.expect("connect PgStore"));
        Self { store: store.clone(), target: Target::Postgres { store, db: Box::new(db) } }
    }

    /// The store as its implementation, shared (for tasks a test spawns).
    pub(super) fn sql_store_arc(&self) -> Arc<SqlStore> {
        match &self.target {
            Target::Sqlite { store, .. } | Target::Postgres { store, .. } => store.clone(),
        }
    }

    /// The store as its implementation (for its test-only entry points).
    pub(super) fn sql_store(&self) -> &SqlStore {
        match &self.target {
            Target::Sqlite { store, .. } | Target::Postgres { store, .. } => store,
        }
    }

    /// How to reach the PostgreSQL database of the harness (panics on SQLite).
    pub(super) fn pg_options(&self) -> PgConnectOptions {
        match &self.target {
            Target::Postgres { db, .. } => db.options(),
            Target::Sqlite { .. } => panic!("not a PostgreSQL harness"),
        }
    }

    /// A second store on the same database (runs the migrations again).
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.target {
            Target::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await.expect("reopen")),
            Target::Postgres { db, .. } => Arc::new(PgStore::connect_with(db.options(), 2).await.expect("reconnect")),
        }
    }

    /// Runs raw SQL (valid in both dialects) behind the store's back.
    async fn exec_raw(&self, sql: &'static str) {
        self.exec_raw_each(sql, sql).await;
    }

    /// Runs raw SQL behind the store's back, one text per dialect.
    async fn exec_raw_each(&self, sqlite: &'static str, postgres: &'static str) {
        match &self.target {
            Target::Sqlite { path, .. } => {
                let mut conn = SqliteConnectOptions::new().filename(path).connect().await.expect("raw connect");
                sqlx::raw_sql(sqlite).execute(&mut conn).await.expect("raw sql");
                let _ = conn.close().await;
            }
            Target::Postgres { db, .. } => {
                let mut conn = db.options().connect().await.expect("raw connect");
                sqlx::raw_sql(postgres).execute(&mut conn).await.expect("raw sql");
                let _ = conn.close().await;
            }
        }
    }

    /// Runs raw SQL built at run time (valid in both dialects) behind the store's back.
    async fn exec_raw_owned(&self, sql: String) {
        match &self.target {
            Target::Sqlite { path, .. } => {
                let mut conn = SqliteConnectOptions::new().filename(path).connect().await.expect("raw connect");
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await.expect("raw sql");
                let _ = conn.close().await;
            }
            Target::Postgres { db, .. } => {
                let mut conn = db.options().connect().await.expect("raw connect");
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await.expect("raw sql");
                let _ = conn.close().await;
            }
        }
    }

    /// Whether the store's writes commit durably (`SqlStore::writer_synchronous`: 2 = yes).
    async fn writer_synchronous(&self) -> i64 {
        self.sql_store().writer_synchronous().await.expect("the commit setting")
    }

    /// A raw `SELECT COUNT(*) …`.
    async fn count_raw(&self, sql: &'static str) -> i64 {
        match &self.target {
            Target::Sqlite { path, .. } => {
                let mut conn = SqliteConnectOptions::new().filename(path).connect().await.expect("raw connect");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("raw count")
            }
            Target::Postgres { db, .. } => {
                let mut conn = db.options().connect().await.expect("raw connect");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("raw count")
            }
        }
    }
}

/// Generates `mod <test> { sqlite, postgres }` for every conformance test function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::Harness::sqlite().await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(super::Harness::postgres().await).await;
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn task(name: &str) -> TaskDef {
    TaskDef::sample(name)
}

/// Registers component `comp` with the given tasks.
pub(super) async fn setup(store: &dyn Store, tasks: &[&str]) {
    let defs: Vec<TaskDef> = tasks.iter().map(|t| task(t)).collect();
    store.component_put("comp", "digest", b"\0asm", &defs).await.expect("component_put");
}

/// Registers `node` and makes it the leader: the fence of its lease term.
pub(super) async fn lead(store: &dyn Store, node: &str) -> Fence {
    store.node_register(node, &[], 1).await.expect("register");
    let epoch = store.lease_claim(node, 60_000, None).await.expect("lease").expect("the lease is free");
    Fence { node: node.into(), epoch }
}

/// A fence of a term that is not (or no longer) the lease's.
fn stale(fence: &Fence) -> Fence {
    Fence { node: fence.node.clone(), epoch: fence.epoch - 1 }
}

fn is_fenced<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Fenced { .. }))
}

/// Ids sort in the order of `n`, like UUIDv7s created one after another.
pub(super) fn id(n: usize) -> String {
    format!("0190a000-0000-7000-8000-{n:012}")
}

pub(super) fn call(n: usize, task: &str) -> NewInvocation {
    NewInvocation::sample(n, task)
}

fn calls(range: std::ops::Range<usize>, task: &str) -> Vec<NewInvocation> {
    range.map(|n| call(n, task)).collect()
}

pub(super) fn tr(
    id: &str,
    from: InvocationStatus,
    owner: Option<(&str, u32)>,
    path: &[InvocationStatus],
) -> Transition {
    Transition {
        id: id.to_owned(),
        from,
        owner: owner.map(|(node, attempt)| Owner { node: node.to_owned(), attempt }),
        path: path.to_vec(),
        result: None,
        error: None,
        node: owner.map_or("recoverer", |(node, _)| node).to_owned(),
        delay_ms: 0,
        unstarted: false,
        instance: None,
    }
}

async fn get(store: &dyn Store, id: &str) -> Invocation {
    store.invocation_get(id).await.expect("invocation_get").expect("invocation exists")
}

async fn statuses(store: &dyn Store, id: &str) -> Vec<InvocationStatus> {
    store.invocation_history(id).await.expect("history").into_iter().map(|h| h.status).collect()
}

fn ids_of(invocations: &[Invocation]) -> Vec<String> {
    invocations.iter().map(|i| i.id.clone()).collect()
}

fn system_now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("millis fit i64")
}

pub(super) fn instance_of(
    store_id: &str,
    attempt: u32,
    node: &str,
    status: &str,
    window: Option<i64>,
) -> crate::model::TaskInstance {
    let status = status.parse().expect("an instance status");
    let mut i = crate::model::TaskInstance::live(store_id, attempt, node, status, window.unwrap_or(0));
    i.report_window_ms = window;
    i
}

async fn instance(store: &dyn Store, id: &str) -> crate::model::TaskInstance {
    let mut all = store.instance_list(id).await.expect("instance_list");
    assert_eq!(all.len(), 1, "one instance of {id}: {all:?}");
    all.remove(0)
}

// ---------------------------------------------------------------------------------------------
// The tests, one file per subject.

mod catalog;
mod coord;
mod instances;
mod invocations;
mod rate_limits;
mod transitions;
mod versions;
mod workflows;
