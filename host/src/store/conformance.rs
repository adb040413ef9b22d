//! The store conformance suite: every test runs against a fresh SQLite file and a fresh
//! PostgreSQL database (`store::conformance::<test>::{sqlite,postgres}`), so both backends
//! keep exactly the semantics documented on [`Store`].
//!
//! PostgreSQL tests need `DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`) and
//! fail loudly without it: a missing service is a failure, never a skip. Each test creates its
//! own database `warden_t_<random>` through that connection and drops it at the end (best
//! effort), so tests run in parallel.

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
    ServiceRunStatus, TaskDef, TaskFailure, TaskPatch, TaskPolicy, Transition, Trigger, TriggerCondition, TriggerRun,
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

    /// The `PRAGMA synchronous` of the store's SQLite writer (`None` on PostgreSQL).
    async fn writer_synchronous(&self) -> Option<i64> {
        match &self.target {
            Target::Sqlite { store, .. } => store.writer_synchronous().await.expect("PRAGMA synchronous"),
            Target::Postgres { store, .. } => store.writer_synchronous().await.expect("no-op"),
        }
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

conformance!(
    migrations_on_a_fresh_database,
    components_and_tasks,
    insert_batch,
    claim_respects_limit_order_and_paused_tasks,
    concurrent_claimers_never_share_an_invocation,
    transitions_are_compare_and_swap,
    duplicate_ids_in_one_batch_apply_in_order,
    recover_node,
    list_and_count,
    get_many_and_history,
    corrupt_rows_are_errors,
    rejected_changes_write_no_history,
    failed_writes_leave_nothing_behind,
    nodes_register_heartbeat_and_leave,
    the_service_gate_admits_one_execution,
    trigger_evaluation_is_saved_in_one_go,
    instances_are_live_rows_with_heartbeats_and_triage,
    one_heartbeat_statement_whatever_the_number_of_instances,
    the_ring_swaps_only_under_the_current_lease,
    workflow_create_step_and_sync,
    workflow_plan_reads_only_what_may_start,
    drops_follow_the_policy_in_force,
    one_attempt_moved_twice_in_one_batch_keeps_its_last_instance,
    lost_attempts_end_their_instances_when_rerouted,
    a_retried_write_that_was_stored_counts_as_applied,
    api_keys_keep_hashes_names_and_batched_use,
);

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn task(name: &str) -> TaskDef {
    TaskDef {
        name: name.to_owned(),
        component: String::new(),
        description: Some(format!("the {name} task")),
        max_attempts: 3,
        timeout_ms: 1_000,
        memory_limit_bytes: 1 << 20,
        registration_concurrency: Concurrency::Disabled,
        running_concurrency: Concurrency::Disabled,
        key_arguments: vec![],
        pins: vec![],
        paused: false,
        policy: TaskPolicy::default(),
    }
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
    NewInvocation {
        id: id(n),
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
    }
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

// ---------------------------------------------------------------------------------------------
// Tests.

async fn migrations_on_a_fresh_database(h: Harness) {
    let store = &*h.store;
    store.ping().await.expect("ping");
    assert!(["sqlite", "postgres"].contains(&store.dialect()));
    let now = store.now().await.expect("now");
    assert!((now - system_now_ms()).abs() < 60_000, "database clock {now} is far from the system clock");
    assert!(store.component_list().await.expect("list").is_empty());
    assert!(store.task_list().await.expect("tasks").is_empty());
    assert!(store.invocation_count(None, None).await.expect("count").is_empty());
    // Migrating an up-to-date database again is a no-op, and data survives.
    setup(store, &["t"]).await;
    let again = h.reopen().await;
    assert_eq!(again.task_list().await.expect("tasks").len(), 1);
}

async fn components_and_tasks(h: Harness) {
    let store = &*h.store;
    let info = store.component_put("c1", "d1", b"bytes-1", &[task("b"), task("a")]).await.expect("put");
    assert_eq!((info.name.as_str(), info.digest.as_str(), info.size_bytes), ("c1", "d1", 7));
    assert_eq!(info.tasks, vec!["a", "b"]);
    assert!(info.uploaded_at > 0);

    assert_eq!(store.component_list().await.expect("list"), vec![info.clone()]);
    assert_eq!(store.component_get("c1").await.expect("get"), Some(info.clone()));
    assert_eq!(store.component_get("nope").await.expect("get"), None);
    assert_eq!(store.component_bytes("c1").await.expect("bytes"), Some(b"bytes-1".to_vec()));
    assert_eq!(store.component_bytes("nope").await.expect("bytes"), None);
    let tasks = store.task_list().await.expect("tasks");
    assert_eq!(tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(tasks[0], TaskDef { component: "c1".into(), ..task("a") });

    // A task name owned by another component is a conflict, and nothing of c2 is stored.
    let err = store.component_put("c2", "d2", b"x", &[task("z"), task("a")]).await.expect_err("conflict");
    match err {
        StoreError::Conflict(msg) => assert_eq!(msg, "task `a` belongs to component `c1`"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.component_get("c2").await.expect("get"), None);
    assert_eq!(store.task_get("z").await.expect("get"), None);
    // A component describing a task twice is a conflict too.
    assert!(matches!(
        store.component_put("c3", "d", b"x", &[task("q"), task("q")]).await,
        Err(StoreError::Conflict(_))
    ));

    // User patches apply and accumulate.
    let patch = TaskPatch { max_attempts: Some(9), paused: Some(true), ..TaskPatch::default() };
    let patched = store.task_update("a", &patch).await.expect("update").expect("task a exists");
    assert_eq!((patched.max_attempts, patched.paused, patched.timeout_ms), (9, true, 1_000));
    let patch = TaskPatch {
        running_concurrency: Some(Concurrency::Keys),
        key_arguments: Some(vec!["user".into()]),
        pins: Some(vec!["gpu-%".into()]),
        ..TaskPatch::default()
    };
    store.task_update("a", &patch).await.expect("update");
    assert_eq!(store.task_update("nope", &patch).await.expect("update"), None);
    let a = store.task_get("a").await.expect("get").expect("a");
    assert_eq!((a.max_attempts, a.paused, a.running_concurrency), (9, true, Concurrency::Keys));
    assert_eq!((a.key_arguments.clone(), a.pins.clone()), (vec!["user".to_owned()], vec!["gpu-%".to_owned()]));

    // An invocation of b, which the re-upload drops: refused while it is unfinished, and the
    // component cannot be deleted either.
    store.invocation_insert_batch(&[call(1, "b")]).await.expect("insert");
    let mut a2 = task("a");
    a2.max_attempts = 2;
    a2.timeout_ms = 5_000;
    a2.description = Some("new a".into());
    match store.component_put("c1", "d1b", b"bytes-22", &[a2.clone(), task("c")]).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("task `b`") && m.contains("1 unfinished"), "{m}"),
        other => panic!("a task with an unfinished call was dropped: {other:?}"),
    }
    match store.component_delete("c1").await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("1 unfinished call(s)") && m.contains("1 of `b`"), "{m}"),
        other => panic!("a component with an unfinished call was deleted: {other:?}"),
    }
    assert!(store.task_get("b").await.expect("get").is_some(), "nothing changed");
    let out = store.invocation_transition_batch(&[tr(&id(1), Registered, None, &[Cancelled])]).await;
    assert_eq!(out.expect("cancel"), vec![Applied]);

    // Re-upload: new options apply except the patched ones; b goes, c comes, a keeps patches.
    let info = store.component_put("c1", "d1b", b"bytes-22", &[a2, task("c")]).await.expect("re-upload");
    assert_eq!((info.digest.as_str(), info.size_bytes), ("d1b", 8));
    assert_eq!(info.tasks, vec!["a", "c"]);
    let a = store.task_get("a").await.expect("get").expect("a");
    assert_eq!((a.max_attempts, a.paused, a.timeout_ms), (9, true, 5_000));
    assert_eq!(a.description.as_deref(), Some("new a"));
    assert_eq!((a.running_concurrency, a.pins.clone()), (Concurrency::Keys, vec!["gpu-%".to_owned()]));
    assert_eq!(store.task_get("b").await.expect("get"), None);
    assert_eq!(store.task_get("c").await.expect("get").expect("c").max_attempts, 3);
    assert_eq!(store.component_bytes("c1").await.expect("bytes"), Some(b"bytes-22".to_vec()));
    assert_eq!(get(store, &id(1)).await.task, "b", "invocations survive their task");

    // A task dropped and re-added starts without the old patches.
    store.component_put("c1", "d1c", b"x", &[task("c")]).await.expect("drop a");
    let info = store.component_put("c1", "d1d", b"x", &[task("a"), task("c")]).await.expect("re-add a");
    assert_eq!(info.tasks, vec!["a", "c"]);
    assert_eq!(store.task_get("a").await.expect("get").expect("a"), TaskDef { component: "c1".into(), ..task("a") });

    // Delete: tasks go, invocations stay.
    store.component_put("c2", "d2", b"x", &[task("z")]).await.expect("put c2");
    assert!(store.component_delete("c1").await.expect("delete"));
    assert!(!store.component_delete("c1").await.expect("delete twice"));
    assert_eq!(store.task_list().await.expect("tasks").len(), 1);
    assert_eq!(store.component_list().await.expect("list").len(), 1);
    assert!(store.invocation_get(&id(1)).await.expect("get").is_some());
}

async fn insert_batch(h: Harness) {
    let store = &*h.store;
    setup(store, &["t", "u"]).await;
    assert!(store.invocation_insert_batch(&[]).await.expect("empty batch").is_empty());

    let before = store.now().await.expect("now");
    let batch = calls(0..1000, "t");
    let inserted = store.invocation_insert_batch(&batch).await.expect("insert 1000");
    let after = store.now().await.expect("now");
    assert_eq!(ids_of(&inserted), batch.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), "input order");
    for (inv, c) in inserted.iter().zip(&batch) {
        assert_eq!(inv.status, Registered);
        assert_eq!(
            (inv.attempts, inv.owner.as_deref(), inv.result.as_ref(), inv.error.as_ref()),
            (0, None, None, None)
        );
        assert_eq!((inv.task.as_str(), inv.call_id.as_str()), ("t", c.call_id.as_str()));
        assert_eq!(inv.args, serde_json::from_str::<serde_json::Value>(&c.args).expect("json"));
        assert!(before <= inv.created_at && inv.created_at <= after && inv.created_at == inv.updated_at);
    }
    assert_eq!(get(store, &id(500)).await, inserted[500]);
    assert_eq!(
        store.invocation_count(None, None).await.expect("count"),
        vec![StatusCount { task: "t".into(), status: Registered, count: 1000 }]
    );
    assert_eq!(h.count_raw("SELECT COUNT(*) FROM invocation_history").await, 1000);
    let history = store.invocation_history(&id(7)).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].status, history[0].node.as_deref(), history[0].attempt), (Registered, None, 0));
    assert_eq!(history[0].at, inserted[7].created_at);

    // Parent and arbitrary JSON arguments round-trip.
    let mut child = call(2000, "u");
    child.parent = Some(id(1));
    child.args = r#"{"s":"ü \"q\"","list":[1,2.5,null],"nested":{"b":true}}"#.into();
    let got = store.invocation_insert_batch(&[child.clone()]).await.expect("insert child");
    assert_eq!(got[0].parent.as_deref(), Some(id(1).as_str()));
    assert_eq!(got[0].args, serde_json::from_str::<serde_json::Value>(&child.args).expect("json"));

    // An unknown task fails the whole batch.
    let bad = vec![call(3000, "t"), call(3001, "nope"), call(3002, "u")];
    match store.invocation_insert_batch(&bad).await {
        Err(StoreError::NotFound(what)) => assert_eq!(what, "task `nope`"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(store.invocation_get(&id(3000)).await.expect("get").is_none(), "batch rolled back");
    // An id that exists already is a conflict, and rolls back the batch.
    let dup = vec![call(4000, "t"), call(5, "t")];
    assert!(matches!(store.invocation_insert_batch(&dup).await, Err(StoreError::Conflict(_))));
    assert!(store.invocation_get(&id(4000)).await.expect("get").is_none());
    assert_eq!(h.count_raw("SELECT COUNT(*) FROM invocation_history").await, 1001);
}

async fn claim_respects_limit_order_and_paused_tasks(h: Harness) {
    let store = &*h.store;
    setup(store, &["a", "b", "gone"]).await;
    assert!(store.invocation_claim("n1", 10).await.expect("claim nothing").is_empty());
    // Interleave: b takes every third id.
    let mut batch: Vec<NewInvocation> = (0..9).map(|n| call(n, if n % 3 == 0 { "b" } else { "a" })).collect();
    batch.reverse(); // insertion order must not matter, only id order
    store.invocation_insert_batch(&batch).await.expect("insert");
    store.task_update("b", &TaskPatch { paused: Some(true), ..TaskPatch::default() }).await.expect("pause b");
    // Invocations of a deleted task and invocations not yet available are not claimed.
    store.invocation_insert_batch(&[call(100, "gone"), call(101, "a")]).await.expect("insert");
    // (Behind the store's back: it refuses to drop a task with unfinished calls.)
    h.exec_raw("DELETE FROM tasks WHERE name = 'gone'").await;
    h.exec_raw("UPDATE invocations SET available_at = available_at + 3600000 WHERE call_id = 'call-101'").await;

    assert!(store.invocation_claim("n1", 0).await.expect("limit 0").is_empty());
    // A task pinned elsewhere is skipped by this node's claim.
    let skip_a = ClaimFilter { excluded: vec!["a".to_string()], pinned_here: vec![] };
    assert!(
        store.invocation_claim_reporting("n1", 10, 1_000, &skip_a).await.expect("claim").is_empty(),
        "a is excluded"
    );
    let first = store.invocation_claim("n1", 4).await.expect("claim");
    assert_eq!(first.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(1), id(2), id(4), id(5)]);
    for c in &first {
        assert_eq!((c.task.as_str(), c.attempt, c.parent.as_ref()), ("a", 1, None));
        let n = batch.iter().find(|b| b.id == c.id).expect("claimed one of ours");
        assert_eq!(c.args, n.args);
        let inv = get(store, &c.id).await;
        assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Pending, Some("n1"), 1));
        let history = store.invocation_history(&c.id).await.expect("history");
        assert_eq!(history.iter().map(|h| h.status).collect::<Vec<_>>(), vec![Registered, Pending]);
        assert_eq!((history[1].node.as_deref(), history[1].attempt), (Some("n1"), 1));
        assert_eq!(history[1].at, inv.updated_at);
    }
    let rest = store.invocation_claim("n2", 10).await.expect("claim");
    assert_eq!(rest.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(7), id(8)]);
    assert!(store.invocation_claim("n2", 10).await.expect("claim").is_empty(), "b is paused");

    store.task_update("b", &TaskPatch { paused: Some(false), ..TaskPatch::default() }).await.expect("unpause");
    let b = store.invocation_claim("n2", 10).await.expect("claim");
    assert_eq!(b.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(0), id(3), id(6)]);
    assert!(store.invocation_claim("n2", 10).await.expect("claim").is_empty());
    assert_eq!(get(store, &id(100)).await.status, Registered);
    assert_eq!(get(store, &id(101)).await.status, Registered);

    // Retry and rerouted are runnable too, and a new claim is a new attempt.
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&id(1), Pending, Some(("n1", 1)), &[Running, Retry]),
            tr(&id(2), Pending, None, &[PendingRecovery, Rerouted]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![Applied, Applied]);
    let again = store.invocation_claim("n3", 10).await.expect("claim");
    assert_eq!(again.iter().map(|c| (c.id.clone(), c.attempt)).collect::<Vec<_>>(), vec![(id(1), 2), (id(2), 2)]);
}

async fn concurrent_claimers_never_share_an_invocation(h: Harness) {
    let store = h.store.clone();
    setup(&*store, &["t"]).await;
    const N: usize = 600;
    store.invocation_insert_batch(&calls(0..N, "t")).await.expect("insert");
    let claimer = |node: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.invocation_claim(node, 16).await.expect("claim");
                if got.is_empty() {
                    break;
                }
                assert!(got.windows(2).all(|w| w[0].id < w[1].id), "claims come oldest first");
                mine.extend(got.into_iter().map(|c| c.id));
            }
            mine
        })
    };
    let (one, two, three) = tokio::join!(claimer("n1"), claimer("n2"), claimer("n3"));
    let all = [one.expect("n1"), two.expect("n2"), three.expect("n3")];
    let mut seen = HashSet::new();
    for (node, ids) in ["n1", "n2", "n3"].iter().zip(&all) {
        for id in ids {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
        for inv in store.invocation_get_many(ids).await.expect("get_many") {
            assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Pending, Some(*node), 1));
        }
    }
    assert_eq!(seen.len(), N);
    assert_eq!(h.count_raw("SELECT COUNT(*) FROM invocation_history").await, 2 * N as i64);
}

async fn transitions_are_compare_and_swap(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..3, "t")).await.expect("insert");
    assert!(store.invocation_transition_batch(&[]).await.expect("empty").is_empty());
    store.invocation_claim("n1", 3).await.expect("claim");
    let a = id(0);

    // Wrong from, wrong owner, wrong attempt, empty path: rejected and nothing written.
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&a, Registered, Some(("n1", 1)), &[Pending]),
            tr(&a, Pending, Some(("n2", 1)), &[Running]),
            tr(&a, Pending, Some(("n1", 2)), &[Running]),
            tr(&a, Pending, Some(("n1", 1)), &[]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![LostRace, WrongOwner, WrongOwner, BadTransition], "each refusal says why");
    // A path the status table does not allow never reaches the database, however owned.
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&a, Pending, Some(("n1", 1)), &[Success]),
            tr(&a, Pending, Some(("n1", 1)), &[Running, Registered]),
            tr("missing", Pending, None, &[Running]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![BadTransition, BadTransition, NotFound]);
    assert_eq!(statuses(store, &a).await, vec![Registered, Pending]);

    // The owner moves it; the owner is kept while running and cleared on success.
    let before = get(store, &a).await.updated_at;
    let outcomes =
        store.invocation_transition_batch(&[tr(&a, Pending, Some(("n1", 1)), &[Running])]).await.expect("transition");
    assert_eq!(outcomes, vec![Applied]);
    let inv = get(store, &a).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Running, Some("n1"), 1));
    assert!(inv.updated_at >= before);
    let mut done = tr(&a, Running, Some(("n1", 1)), &[Success]);
    done.result = Some(r#"{"answer":42}"#.into());
    assert_eq!(store.invocation_transition_batch(&[done.clone()]).await.expect("transition"), vec![Applied]);
    let inv = get(store, &a).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Success, None, 1));
    assert_eq!(inv.result, Some(serde_json::json!({"answer": 42})));
    assert_eq!(store.invocation_transition_batch(&[done]).await.expect("again"), vec![LostRace], "final is final");
    let history = store.invocation_history(&a).await.expect("history");
    assert_eq!(history.iter().map(|h| h.status).collect::<Vec<_>>(), vec![Registered, Pending, Running, Success]);
    assert!(history.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!((history[3].node.as_deref(), history[3].attempt, history[3].at), (Some("n1"), 1, inv.updated_at));

    // A whole path in one change: history rows in path order; retry releases, keeps attempts
    // and records the error; the next claim is attempt 2 and fences the old attempt out.
    let b = id(1);
    let mut fail = tr(&b, Pending, Some(("n1", 1)), &[Running, Retry]);
    fail.error = Some(TaskFailure::new(ErrorKind::Timeout, "took too long"));
    let c = id(2);
    let outcomes = store
        .invocation_transition_batch(&[fail, tr(&c, Pending, Some(("zombie", 1)), &[Running])])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![Applied, WrongOwner], "outcomes in input order");
    let inv = get(store, &b).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Retry, None, 1));
    assert_eq!(inv.error, Some(TaskFailure::new(ErrorKind::Timeout, "took too long")));
    assert_eq!(statuses(store, &b).await, vec![Registered, Pending, Running, Retry]);
    let claimed = store.invocation_claim("n2", 1).await.expect("claim");
    assert_eq!((claimed[0].id.as_str(), claimed[0].attempt), (b.as_str(), 2));
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&b, Pending, Some(("n1", 1)), &[Running]),
            tr(&b, Pending, Some(("n2", 1)), &[Running]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![WrongOwner, WrongOwner], "the old epoch is fenced out");
    let mut ok = tr(&b, Pending, Some(("n2", 2)), &[Running, Success]);
    ok.result = Some("7".into());
    assert_eq!(store.invocation_transition_batch(&[ok]).await.expect("transition"), vec![Applied]);
    let inv = get(store, &b).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Success, None, 2));
    assert_eq!(inv.result, Some(serde_json::json!(7)));
    assert_eq!(inv.error.map(|e| e.kind), Some(ErrorKind::Timeout), "the last error stays for the record");
    let history = store.invocation_history(&b).await.expect("history");
    assert_eq!(
        history.iter().map(|h| (h.status, h.attempt)).collect::<Vec<_>>(),
        vec![(Registered, 0), (Pending, 1), (Running, 1), (Retry, 1), (Pending, 2), (Running, 2), (Success, 2)]
    );

    // No owner given skips the owner check (recovery overrides); the owner is cleared.
    let outcomes = store
        .invocation_transition_batch(&[tr(&c, Pending, None, &[PendingRecovery, Rerouted])])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![Applied]);
    let inv = get(store, &c).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Rerouted, None, 1));
    // Failed with a fatal error.
    let c2 = store.invocation_claim("n3", 1).await.expect("claim").remove(0);
    let mut fatal = tr(&c, Pending, Some(("n3", c2.attempt)), &[Running, Failed]);
    fatal.error = Some(TaskFailure::new(ErrorKind::Fatal, "no"));
    assert_eq!(store.invocation_transition_batch(&[fatal]).await.expect("transition"), vec![Applied]);
    let inv = get(store, &c).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts, inv.result), (Failed, None, 2, None));
    assert_eq!(inv.error, Some(TaskFailure::new(ErrorKind::Fatal, "no")));
}

async fn duplicate_ids_in_one_batch_apply_in_order(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..3, "t")).await.expect("insert");
    store.invocation_claim("n", 3).await.expect("claim");
    let (a, b, c) = (id(0), id(1), id(2));
    let o = Some(("n", 1));
    let mut success = tr(&a, Running, o, &[Success]);
    success.result = Some("1".into());
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&a, Pending, o, &[Running]),
            tr(&b, Pending, o, &[Running]),
            success,
            tr(&a, Running, o, &[Failed]),  // after success: rejected
            tr(&c, Running, o, &[Success]), // c is pending: rejected
            tr(&c, Pending, o, &[Running]),
            tr(&b, Running, o, &[Paused]),
            tr(&b, Paused, o, &[Resumed, Running]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![Applied, Applied, Applied, LostRace, LostRace, Applied, Applied, Applied]);
    assert_eq!(statuses(store, &a).await, vec![Registered, Pending, Running, Success]);
    assert_eq!(statuses(store, &b).await, vec![Registered, Pending, Running, Paused, Resumed, Running]);
    assert_eq!(statuses(store, &c).await, vec![Registered, Pending, Running]);
    assert_eq!(get(store, &a).await.result, Some(serde_json::json!(1)));
    assert_eq!(get(store, &b).await.owner.as_deref(), Some("n"));
}

async fn recover_node(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..6, "t")).await.expect("insert");
    store.invocation_claim("n1", 5).await.expect("claim");
    store.invocation_claim("n2", 1).await.expect("claim");
    let o = Some(("n1", 1));
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&id(1), Pending, o, &[Running]),
            tr(&id(2), Pending, o, &[Running, Paused]),
            tr(&id(3), Pending, o, &[Running, Paused, Resumed]),
            tr(&id(4), Pending, o, &[Running, Success]),
            tr(&id(5), Pending, Some(("n2", 1)), &[Running]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![Applied; 5]);

    // The leader n9 retires n1; a former term of n9 is fenced off and changes nothing.
    store.node_register("n1", &[], 1).await.expect("register");
    let n9 = lead(store, "n9").await;
    assert!(is_fenced(store.node_retire("n1", &stale(&n9)).await), "a former term");
    assert_eq!(get(store, &id(1)).await.status, Running);
    assert_eq!(store.node_retire("n1", &n9).await.expect("retire"), 4);
    let last = store.invocation_history(&id(0)).await.expect("history").pop().expect("history row");
    assert_eq!(last.node.as_deref(), Some("n9"), "the recovering node writes the history");
    let (_, nodes) = store.node_list().await.expect("nodes");
    assert!(nodes.iter().any(|n| n.name == "n1" && n.left_at.is_some()), "a retired node is marked left");
    let tail = |s: Vec<InvocationStatus>| s[s.len() - 2..].to_vec();
    assert_eq!(tail(statuses(store, &id(0)).await), vec![PendingRecovery, Rerouted]);
    for n in 1..=3 {
        assert_eq!(tail(statuses(store, &id(n)).await), vec![RunningRecovery, Rerouted], "{n}");
    }
    for n in 0..=3 {
        let inv = get(store, &id(n)).await;
        assert_eq!((inv.status, inv.owner.as_deref(), inv.attempts), (Rerouted, None, 1));
    }
    assert_eq!(get(store, &id(4)).await.status, Success);
    let other = get(store, &id(5)).await;
    assert_eq!((other.status, other.owner.as_deref()), (Running, Some("n2")));
    assert_eq!(store.node_retire("n1", &n9).await.expect("retire again"), 0);
    // A node recovering its own previous life (at start-up) writes the history itself.
    assert_eq!(store.invocation_recover_node("n2").await.expect("own recovery"), 1);
    let last = store.invocation_history(&id(5)).await.expect("history").pop().expect("history row");
    assert_eq!((last.status, last.node.as_deref()), (Rerouted, Some("n2")));
    // Recovered invocations run again as a new attempt.
    let again = store.invocation_claim("n3", 10).await.expect("claim");
    assert_eq!(
        again.iter().map(|c| (c.id.clone(), c.attempt)).collect::<Vec<_>>(),
        [0, 1, 2, 3, 5].into_iter().map(|n| (id(n), 2)).collect::<Vec<_>>()
    );
}

async fn list_and_count(h: Harness) {
    let store = &*h.store;
    setup(store, &["a", "b"]).await;
    store.invocation_insert_batch(&calls(0..20, "a")).await.expect("insert a");
    store.invocation_insert_batch(&calls(20..30, "b")).await.expect("insert b");
    store.invocation_claim("n", 5).await.expect("claim"); // a 0..5 → pending
    let ids = |range: std::ops::Range<usize>| range.rev().map(id).collect::<Vec<_>>();
    let page = |task: Option<&str>, status: Option<InvocationStatus>, limit: u32, cursor: Option<String>| {
        InvocationFilter { task: task.map(str::to_owned), status, limit, cursor }
    };

    let mut cursor = None;
    let mut pages = Vec::new();
    loop {
        let got = store.invocation_list(&page(None, None, 12, cursor.clone())).await.expect("list");
        if got.is_empty() {
            break;
        }
        cursor = got.last().map(|i| i.id.clone());
        pages.push(ids_of(&got));
    }
    assert_eq!(pages, vec![ids(18..30), ids(6..18), ids(0..6)]);
    assert_eq!(ids_of(&store.invocation_list(&page(Some("a"), None, 100, None)).await.expect("list")), ids(0..20));
    assert_eq!(ids_of(&store.invocation_list(&page(None, Some(Pending), 100, None)).await.expect("list")), ids(0..5));
    assert_eq!(
        ids_of(&store.invocation_list(&page(Some("a"), Some(Registered), 4, Some(id(15)))).await.expect("list")),
        ids(11..15)
    );
    assert_eq!(
        ids_of(&store.invocation_list(&page(None, Some(Registered), 3, Some(id(21)))).await.expect("list")),
        ids(18..21)
    );
    assert!(store.invocation_list(&page(Some("b"), Some(Pending), 10, None)).await.expect("list").is_empty());
    assert!(store.invocation_list(&page(Some("nope"), None, 10, None)).await.expect("list").is_empty());
    let first = store.invocation_list(&page(None, None, 1, None)).await.expect("list");
    assert_eq!(first[0], get(store, &id(29)).await);

    let count = |task: &str, status, count| StatusCount { task: task.into(), status, count };
    assert_eq!(
        store.invocation_count(None, None).await.expect("count"),
        vec![count("a", Pending, 5), count("a", Registered, 15), count("b", Registered, 10)]
    );
    assert_eq!(
        store.invocation_count(Some("a"), None).await.expect("count"),
        vec![count("a", Pending, 5), count("a", Registered, 15)]
    );
    assert_eq!(
        store.invocation_count(None, Some(Registered)).await.expect("count"),
        vec![count("a", Registered, 15), count("b", Registered, 10)]
    );
    assert_eq!(
        store.invocation_count(Some("b"), Some(Registered)).await.expect("count"),
        vec![count("b", Registered, 10)]
    );
    assert!(store.invocation_count(Some("b"), Some(Pending)).await.expect("count").is_empty());
}

async fn get_many_and_history(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..5, "t")).await.expect("insert");
    let asked = vec![id(3), "missing".to_owned(), id(1), id(3)];
    assert_eq!(ids_of(&store.invocation_get_many(&asked).await.expect("get_many")), vec![id(3), id(1), id(3)]);
    assert!(store.invocation_get_many(&[]).await.expect("get_many").is_empty());
    assert!(store.invocation_get("missing").await.expect("get").is_none());
    assert!(store.invocation_history("missing").await.expect("history").is_empty());
}

async fn corrupt_rows_are_errors(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    h.exec_raw(
        "INSERT INTO invocations (id, task, call_id, args, status, attempts, available_at, created_at, updated_at) \
         VALUES ('bad', 't', 'c', '{}', 'exploded', 0, 0, 0, 0)",
    )
    .await;
    assert!(matches!(store.invocation_get("bad").await, Err(StoreError::Corrupt(_))));
    assert!(matches!(
        store.invocation_list(&InvocationFilter { limit: 10, ..Default::default() }).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(store.invocation_count(None, None).await, Err(StoreError::Corrupt(_))));
    h.exec_raw("UPDATE invocations SET status = 'registered', args = 'not json' WHERE id = 'bad'").await;
    assert!(matches!(store.invocation_get("bad").await, Err(StoreError::Corrupt(_))));
    h.exec_raw("UPDATE tasks SET running_concurrency = 'sometimes'").await;
    assert!(matches!(store.task_get("t").await, Err(StoreError::Corrupt(_))));
}

async fn rejected_changes_write_no_history(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..4, "t")).await.expect("insert");
    // One claim after the other by the same node: each writes the history of its own row only,
    // though the rows of the node's earlier claims are pending too (likely since the same
    // millisecond), and a claim that finds nothing writes nothing.
    for n in 0..4 {
        let got = store.invocation_claim("n", 1).await.expect("claim");
        assert_eq!(got.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(n)]);
    }
    assert!(store.invocation_claim("n", 4).await.expect("claim nothing").is_empty());
    assert_eq!(h.count_raw("SELECT COUNT(*) FROM invocation_history").await, 8);

    let (a, b, c, d) = (id(0), id(1), id(2), id(3));
    let o = Some(("n", 1));
    assert_eq!(
        store.invocation_transition_batch(&[tr(&a, Pending, o, &[Running])]).await.expect("run a"),
        vec![Applied]
    );
    // `a` is in the target status already, with the same owner and attempt (and likely the
    // same `updated_at`), right beside a change that applies: the rejected one writes nothing.
    let outcomes = store
        .invocation_transition_batch(&[
            tr(&a, Pending, o, &[Running]),
            tr(&b, Pending, o, &[Running]),
            tr(&c, Pending, Some(("m", 1)), &[Running]),
            tr(&d, Pending, Some(("n", 2)), &[Running]),
        ])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![LostRace, Applied, WrongOwner, WrongOwner]);
    // The same on the durable path, and without an owner check.
    let outcomes = store
        .invocation_transition_batch(&[tr(&a, Running, o, &[Success]), tr(&b, Pending, None, &[Running, Success])])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![Applied, LostRace]);
    let outcomes = store
        .invocation_transition_batch(&[tr(&a, Running, None, &[Success]), tr(&a, Running, o, &[Success])])
        .await
        .expect("transition");
    assert_eq!(outcomes, vec![LostRace, LostRace]);

    assert_eq!(statuses(store, &a).await, vec![Registered, Pending, Running, Success]);
    assert_eq!(statuses(store, &b).await, vec![Registered, Pending, Running]);
    assert_eq!(statuses(store, &c).await, vec![Registered, Pending]);
    assert_eq!(statuses(store, &d).await, vec![Registered, Pending]);
    assert_eq!(h.count_raw("SELECT COUNT(*) FROM invocation_history").await, 11, "no history of anything else");
}

async fn failed_writes_leave_nothing_behind(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..2, "t")).await.expect("insert");
    store.invocation_claim("n", 2).await.expect("claim");
    let history = || h.count_raw("SELECT COUNT(*) FROM invocation_history");
    // SQLite's writer commits durably again after every write (2 = FULL).
    let durable_writer = (store.dialect() == "sqlite").then_some(2);

    // An unknown task, an id that exists, an id twice: nothing is stored, and writes go on.
    match store.invocation_insert_batch(&[call(10, "t"), call(11, "nope"), call(12, "t")]).await {
        Err(StoreError::NotFound(what)) => assert_eq!(what, "task `nope`"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    for dup in [vec![call(10, "t"), call(1, "t")], vec![call(10, "t"), call(10, "t")]] {
        match store.invocation_insert_batch(&dup).await {
            Err(StoreError::Conflict(what)) => assert_eq!(what, "an invocation id of the batch already exists"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    for n in 10..13 {
        assert!(store.invocation_get(&id(n)).await.expect("get").is_none(), "{n} rolled back");
    }
    assert_eq!(history().await, 4);
    assert_eq!(h.writer_synchronous().await, durable_writer);
    store.invocation_insert_batch(&[call(10, "t")]).await.expect("the next insert works");
    assert_eq!(history().await, 5);

    // Writes that fail midway (a trigger refuses their history rows) roll their status
    // changes back, whether they commit relaxed or durably, in one pass or several.
    h.exec_raw_each(
        "CREATE TRIGGER refuse_history BEFORE INSERT ON invocation_history \
         WHEN NEW.status IN ('pending', 'running', 'success') \
         BEGIN SELECT RAISE(ABORT, 'history refused'); END",
        "CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'history refused'; END $$; \
         CREATE TRIGGER refuse_history BEFORE INSERT ON invocation_history FOR EACH ROW \
         WHEN (NEW.status IN ('pending', 'running', 'success')) EXECUTE FUNCTION refuse_history()",
    )
    .await;
    let (a, b) = (id(0), id(1));
    let o = Some(("n", 1));
    assert!(matches!(store.invocation_claim("n", 10).await, Err(StoreError::Database(_))));
    assert_eq!(h.writer_synchronous().await, durable_writer);
    for batch in [
        vec![tr(&a, Pending, o, &[Running])],
        vec![tr(&a, Pending, o, &[Running]), tr(&b, Pending, o, &[Running, Success])],
        vec![tr(&a, Pending, o, &[Running]), tr(&a, Running, o, &[Paused])],
    ] {
        assert!(matches!(store.invocation_transition_batch(&batch).await, Err(StoreError::Database(_))));
        assert_eq!(h.writer_synchronous().await, durable_writer);
    }
    assert_eq!((get(store, &a).await.status, get(store, &b).await.status), (Pending, Pending));
    assert_eq!(get(store, &id(10)).await.status, Registered);
    assert_eq!(history().await, 5);

    h.exec_raw_each("DROP TRIGGER refuse_history", "DROP TRIGGER refuse_history ON invocation_history").await;
    assert_eq!(store.invocation_transition_batch(&[tr(&a, Pending, o, &[Running])]).await.expect("run"), vec![Applied]);
    assert_eq!(store.invocation_claim("n", 10).await.expect("claim").len(), 1);
    assert_eq!(statuses(store, &a).await, vec![Registered, Pending, Running]);
    assert_eq!(statuses(store, &id(10)).await, vec![Registered, Pending]);
    assert_eq!(h.writer_synchronous().await, durable_writer);
}

async fn nodes_register_heartbeat_and_leave(h: Harness) {
    let store = &*h.store;
    let first = store.node_register("a", &["gpu".into()], 4).await.expect("register");
    assert_eq!((first.labels.clone(), first.capacity, first.left_at), (vec!["gpu".to_string()], 4, None));
    store.node_register("b", &[], 2).await.expect("register b");
    let beat = store.node_heartbeat("a").await.expect("beat").expect("live");
    assert!(beat >= first.heartbeat_at);
    // A restart without leaving (a crash) is a new life with the same seniority.
    let again = store.node_register("a", &["gpu".into()], 4).await.expect("restart");
    assert_eq!((again.joined_at, again.left_at), (first.joined_at, None));
    // Both joined a while ago, a first.
    h.exec_raw("UPDATE nodes SET joined_at = joined_at - 10000 WHERE name = 'a'").await;
    h.exec_raw("UPDATE nodes SET joined_at = joined_at - 5000 WHERE name = 'b'").await;
    let (_, nodes) = store.node_list().await.expect("list");
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a", "b"], "oldest first");
    store.node_leave("a").await.expect("leave");
    assert_eq!(store.node_heartbeat("a").await.expect("beat"), None, "a node that left has no heartbeat");
    // A node that left (or was retired as dead) comes back as the youngest: no flip-flop of
    // the leadership, which goes to the oldest live node.
    let back = store.node_register("a", &[], 8).await.expect("rejoin");
    assert_eq!((back.capacity, back.left_at), (8, None));
    assert!(back.joined_at > first.joined_at - 10_000, "a fresh joined_at: {back:?}");
    let (now, nodes) = store.node_list().await.expect("list");
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["b", "a"], "the returner is youngest");
    assert!(nodes.iter().all(|n| n.is_live(now, 60_000)));
    // Declared dead and retired by the leader, then back: the same.
    h.exec_raw("UPDATE nodes SET joined_at = joined_at - 20000 WHERE name = 'a'").await;
    let b = lead(store, "b").await;
    store.node_retire("a", &b).await.expect("retire");
    let back = store.node_register("a", &[], 8).await.expect("rejoin after retirement");
    let (_, nodes) = store.node_list().await.expect("list");
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["b", "a"], "{back:?}");
}

async fn the_service_gate_admits_one_execution(h: Harness) {
    let store = &*h.store;
    let n1 = lead(store, "n1").await;
    store.node_register("n2", &[], 1).await.expect("register");
    let ServiceGate::Acquired(first) = store.service_begin(&n1, 60_000).await.expect("gate") else {
        panic!("an idle gate must admit");
    };
    match store.service_begin(&n1, 60_000).await.expect("gate") {
        ServiceGate::Busy(Some(holder)) => {
            assert_eq!((holder.id, holder.node.as_str(), holder.epoch), (first, "n1", Some(n1.epoch)));
        }
        other => panic!("a second execution was admitted: {other:?}"),
    }
    // Only the lease holder passes: n2 is refused until it leads.
    let not_leader = Fence { node: "n2".into(), epoch: n1.epoch };
    assert!(is_fenced(store.service_begin(&not_leader, 60_000).await));
    // n1 dies mid-execution (its heartbeat goes stale): n2 takes the lease at once (the lease
    // has not expired: a dead holder does not keep it), with a new epoch; the execution of
    // n1's term is abandoned and the gate passes on; n1's writes are fenced off.
    h.exec_raw("UPDATE nodes SET heartbeat_at = 0 WHERE name = 'n1'").await;
    let e2 = store.lease_claim("n2", 60_000, None).await.expect("lease").expect("a dead holder's lease");
    assert!(e2 > n1.epoch);
    let n2 = Fence { node: "n2".into(), epoch: e2 };
    let ServiceGate::Acquired(second) = store.service_begin(&n2, 60_000).await.expect("gate") else {
        panic!("a former term must not keep the gate");
    };
    assert!(is_fenced(store.service_begin(&n1, 60_000).await), "the former leader is fenced");
    assert!(is_fenced(store.service_prune(&n1, 0).await));
    let detail = serde_json::json!({"recovered": 3});
    store.service_finish(first, ServiceRunStatus::Completed, &detail).await.expect("late finish");
    store.service_finish(second, ServiceRunStatus::Completed, &detail).await.expect("finish");
    let runs = store.service_list(10).await.expect("list");
    let seen: Vec<(&str, ServiceRunStatus, Option<i64>)> =
        runs.iter().map(|r| (r.node.as_str(), r.status, r.epoch)).collect();
    assert_eq!(
        seen,
        [
            ("n2", ServiceRunStatus::Completed, Some(e2)),
            ("n1", ServiceRunStatus::Blocked, Some(n1.epoch)),
            ("n1", ServiceRunStatus::Abandoned, Some(n1.epoch))
        ],
        "newest first; a late finish does not revive an abandoned execution"
    );
    assert_eq!(runs[0].detail, detail);
    assert!(runs.iter().all(|r| r.ended_at.is_some()));
    // A stale execution of the same term (older than the limit) is abandoned too.
    let ServiceGate::Acquired(_) = store.service_begin(&n2, 60_000).await.expect("gate") else {
        panic!("gate");
    };
    assert!(matches!(store.service_begin(&n2, -1).await.expect("gate"), ServiceGate::Acquired(_)));
    assert_eq!(store.service_prune(&n2, -1).await.expect("prune"), 4, "all but the running one");
}

async fn trigger_evaluation_is_saved_in_one_go(h: Harness) {
    let store = &*h.store;
    let t = store
        .trigger_insert(&Trigger {
            id: "t1".into(),
            task: "hello".into(),
            args: None,
            args_from: ArgsFrom::Event,
            on: TriggerCondition::Event("deploy".into()),
            state: serde_json::json!({}),
            created_at: 0,
        })
        .await
        .expect("insert");
    assert!(t.created_at > 0, "the database sets the creation time");
    assert!(store.trigger_cursors().await.expect("cursors").is_empty());
    let run = |key: &str, trigger: &str| TriggerRun {
        trigger_id: trigger.into(),
        run_key: key.into(),
        invocation_id: Some(format!("inv-{key}")),
        at: 0,
    };
    let state = serde_json::json!({"seen": {"r.0": {"key": "event:1"}}});
    let leader = lead(store, "n1").await;
    assert!(
        is_fenced(store.trigger_evaluation_save(&stale(&leader), &[], &[], &[("history", 99)]).await),
        "only the leader moves the cursors"
    );
    store
        .trigger_evaluation_save(
            &leader,
            &[("t1".into(), state.clone()), ("gone".into(), serde_json::json!({}))],
            &[run("event:1", "t1"), run("event:9", "gone")],
            &[("history", 5), ("events", 3)],
        )
        .await
        .expect("save");
    // Saving the same run again (a repeated evaluation) records nothing new.
    store.trigger_evaluation_save(&leader, &[], &[run("event:1", "t1")], &[("events", 4)]).await.expect("again");
    assert_eq!(store.trigger_get("t1").await.expect("get").expect("t1").state, state);
    let runs = store.trigger_runs("t1", 10).await.expect("runs");
    assert_eq!(runs.iter().map(|r| r.run_key.as_str()).collect::<Vec<_>>(), ["event:1"]);
    assert_eq!(runs[0].invocation_id.as_deref(), Some("inv-event:1"));
    let cursors = store.trigger_cursors().await.expect("cursors");
    assert_eq!((cursors.get("history"), cursors.get("events")), (Some(&5), Some(&4)));
    assert!(store.trigger_delete("t1").await.expect("delete"));
    assert!(store.trigger_runs("t1", 10).await.expect("runs").is_empty(), "runs go with their trigger");
}

// ---------------------------------------------------------------------------------------------
// Task instances: live rows, heartbeats, signals, triage (injected clock), late outcomes.

pub(super) fn instance_of(
    store_id: &str,
    attempt: u32,
    node: &str,
    status: &str,
    window: Option<i64>,
) -> crate::model::TaskInstance {
    let mut i = crate::model::TaskInstance::live(store_id, attempt, node, status, window.unwrap_or(0));
    i.report_window_ms = window;
    i
}

async fn instance(store: &dyn Store, id: &str) -> crate::model::TaskInstance {
    let mut all = store.instance_list(id).await.expect("instance_list");
    assert_eq!(all.len(), 1, "one instance of {id}: {all:?}");
    all.remove(0)
}

async fn instances_are_live_rows_with_heartbeats_and_triage(h: Harness) {
    use crate::model::instance::{InstanceStatus, triage};
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..6, "t")).await.expect("insert");
    let t0 = store.now().await.expect("now");
    let claimed = store.invocation_claim_reporting("n1", 6, 5_000, &ClaimFilter::default()).await.expect("claim");
    assert_eq!(claimed.len(), 6);
    // The claim writes a `queued` instance per attempt, due by claim time + the window.
    let q = instance(store, &id(0)).await;
    assert_eq!((q.status.as_str(), q.node.as_str(), q.attempt), ("queued", "n1", 1));
    let due = q.report_by.expect("live");
    assert!(due >= t0 + 5_000 && due < t0 + 15_000, "report_by {due} is claim time ({t0}…) + 5000");

    // Ids 0-3 start running: the instance moves with the invocation, in one write.
    let running: Vec<Transition> = (0..4)
        .map(|n| {
            let mut t = tr(&id(n), Pending, Some(("n1", 1)), &[Running]);
            t.instance = Some(Box::new(instance_of(&id(n), 1, "n1", "running", Some(5_000))));
            t
        })
        .collect();
    assert_eq!(store.invocation_transition_batch(&running).await.expect("running"), vec![Applied; 4]);
    assert_eq!(instance(store, &id(0)).await.status, "running");

    // The heartbeat of n1 for what it holds (not id 5): report_by moves, one answer per row.
    let held: Vec<(String, u32)> = (0..5).map(|n| (id(n), 1)).collect();
    let beat = store.instance_heartbeat("n1", &held, 60_000).await.expect("heartbeat");
    assert_eq!(beat.len(), 5);
    assert!(instance(store, &id(0)).await.report_by.expect("live") >= t0 + 60_000);
    assert_eq!(instance(store, &id(5)).await.report_by, Some(due), "not held: not refreshed");
    assert!(store.instance_heartbeat("n2", &held, 60_000).await.expect("heartbeat").is_empty(), "not n2's");
    // A cancel sent through another node signals the owner in the same transaction; the
    // signal rides the owner's next heartbeat.
    let mut cancel = tr(&id(1), Running, Some(("n1", 1)), &[Cancelled]);
    cancel.node = "n2".into();
    let signalled = store.invocation_transition_signal(&cancel, "cancel").await.expect("cancel");
    assert_eq!(signalled, (Applied, Some("n1".to_string())));
    assert_eq!(get(store, &id(1)).await.status, Cancelled);
    let again = store.invocation_transition_signal(&cancel, "cancel").await.expect("again");
    assert_eq!(again, (LostRace, None), "a refused change signals nothing");
    let beat = store.instance_heartbeat("n1", &held, 60_000).await.expect("heartbeat");
    let signalled: Vec<(&str, Option<&str>)> =
        beat.iter().filter(|b| b.signal.is_some()).map(|b| (b.invocation_id.as_str(), b.signal.as_deref())).collect();
    assert_eq!(signalled, vec![(id(1).as_str(), Some("cancel"))]);

    // Triage with an injected clock: two minutes on, everything is overdue.
    let now = store.now().await.expect("now") + 120_000;
    let overdue = store.instance_overdue(now, 100).await.expect("overdue");
    assert_eq!(overdue.len(), 6);
    let decisions = triage(&overdue, now, 5_000);
    let leader = lead(store, "leader").await;
    assert!(is_fenced(store.instance_triage_apply(&decisions, &stale(&leader)).await), "only the leader triages");
    assert_eq!(instance(store, &id(0)).await.status, "running", "a fenced triage writes nothing");
    let (changed, rerouted) = store.instance_triage_apply(&decisions, &leader).await.expect("triage");
    assert_eq!(changed, 6);
    // Never launched (4, 5: queued) → no_heartbeat, and their invocations are taken back.
    assert_eq!(rerouted.len(), 2, "{rerouted:?}");
    assert_eq!(instance(store, &id(4)).await.status, "no_heartbeat");
    assert_eq!(get(store, &id(4)).await.status, Rerouted);
    assert_eq!(instance(store, &id(0)).await.status, "triaging");
    assert_eq!(get(store, &id(0)).await.status, Running, "triaging does not touch the invocation");
    // Applying the same decisions again changes nothing (compare-and-swap on status + deadline).
    assert_eq!(store.instance_triage_apply(&decisions, &leader).await.expect("again").0, 0);

    // A heartbeat in time brings triaging back to running; no_heartbeat is not revived.
    let beat = store.instance_heartbeat("n1", &held, 60_000).await.expect("heartbeat");
    assert_eq!(beat.len(), 4, "ids 0-3 (4 is no_heartbeat)");
    assert_eq!(instance(store, &id(0)).await.status, "running");

    // Id 2 ends in time; nothing more is heard of 0, 1, 3: two passes give them up.
    let mut done = tr(&id(2), Running, Some(("n1", 1)), &[Success]);
    done.result = Some("1".into());
    done.instance = Some(Box::new(instance_of(&id(2), 1, "n1", "done", None)));
    assert_eq!(store.invocation_transition_batch(&[done]).await.expect("done"), vec![Applied]);
    let mut now = store.now().await.expect("now") + 120_000;
    for _ in 0..2 {
        let decisions = triage(&store.instance_overdue(now, 100).await.expect("overdue"), now, 5_000);
        store.instance_triage_apply(&decisions, &leader).await.expect("triage");
        now += 120_000;
    }
    assert_eq!(instance(store, &id(0)).await.status, "unknown_error");
    assert_eq!(instance(store, &id(4)).await.status, "error", "no_heartbeat → error");
    assert_eq!(instance(store, &id(2)).await.status, "done", "a final instance is never triaged");
    assert_eq!(instance(store, &id(0)).await.report_by, None);
    let inv0 = get(store, &id(0)).await;
    assert_eq!((inv0.status, inv0.owner), (Rerouted, None));
    assert_eq!(statuses(store, &id(0)).await.last(), Some(&Rerouted));
    assert!(store.instance_overdue(now + 10_000_000, 100).await.expect("overdue").is_empty(), "all final");

    // The zombie's late outcome: the invocation is untouched, the instance stays as triage left it.
    let mut late = tr(&id(0), Running, Some(("n1", 1)), &[Success]);
    late.result = Some("2".into());
    late.instance = Some(Box::new(instance_of(&id(0), 1, "n1", "done", None)));
    assert_ne!(store.invocation_transition_batch(&[late]).await.expect("late"), vec![Applied]);
    assert_eq!(instance(store, &id(0)).await.status, "unknown_error");
    assert_eq!(get(store, &id(0)).await.status, Rerouted);

    // A late error of a live instance whose invocation is already final → error_fatal.
    store.invocation_insert_batch(&calls(10..11, "t")).await.expect("insert");
    // (The rerouted ones are older, so the claim takes them too.)
    let c = store.invocation_claim_reporting("n1", 10, 60_000, &ClaimFilter::default()).await.expect("claim");
    assert!(c.iter().any(|c| c.id == id(10) && c.attempt == 1), "{c:?}");
    let mut cancel = tr(&id(10), Pending, Some(("n1", 1)), &[Cancelled]);
    cancel.node = "api".into();
    assert_eq!(store.invocation_transition_batch(&[cancel]).await.expect("cancel"), vec![Applied]);
    let mut failed = tr(&id(10), Pending, Some(("n1", 1)), &[Running, Failed]);
    failed.error = Some(TaskFailure::new(ErrorKind::Other, "boom"));
    let mut record = instance_of(&id(10), 1, "n1", "error", None);
    record.error = failed.error.clone();
    failed.instance = Some(Box::new(record));
    assert_ne!(store.invocation_transition_batch(&[failed]).await.expect("late error")[0], Applied);
    let i = instance(store, &id(10)).await;
    assert_eq!(i.status, InstanceStatus::ErrorFatal.as_str());
    assert!(i.error.as_ref().is_some_and(|e| e.message.contains("late outcome")), "{i:?}");
    assert_eq!(get(store, &id(10)).await.status, Cancelled);
}

/// Counts the statements sqlx runs (its `sqlx::query` log events) whose text carries a marker.
mod statement_count {
    use std::sync::Once;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    pub static HEARTBEATS: AtomicUsize = AtomicUsize::new(0);

    struct Counter;
    struct Find(bool);
    impl Visit for Find {
        fn record_str(&mut self, _: &Field, value: &str) {
            self.0 |= value.contains("/* instance_heartbeat */");
        }
        fn record_debug(&mut self, _: &Field, value: &dyn std::fmt::Debug) {
            self.0 |= format!("{value:?}").contains("/* instance_heartbeat */");
        }
    }
    impl<S: tracing::Subscriber> Layer<S> for Counter {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == "sqlx::query" {
                let mut f = Find(false);
                event.record(&mut f);
                if f.0 {
                    HEARTBEATS.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Installs the counter as the process's subscriber (once).
    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Counter));
        });
    }

    pub fn heartbeats() -> usize {
        HEARTBEATS.load(Ordering::SeqCst)
    }
}

/// Heartbeats for 1 and for 500 running instances each cost one statement (counted from what
/// sqlx actually ran). Only this test sends heartbeats in this binary; the SQLite and
/// PostgreSQL variants may run at once, so each counts under a lock.
async fn one_heartbeat_statement_whatever_the_number_of_instances(h: Harness) {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    statement_count::install();
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..500, "t")).await.expect("insert");
    let claimed = store.invocation_claim_reporting("n1", 500, 60_000, &ClaimFilter::default()).await.expect("claim");
    let held: Vec<(String, u32)> = claimed.iter().map(|c| (c.id.clone(), c.attempt)).collect();
    let mut per_size = Vec::new();
    for size in [1, 500] {
        let _serial = SERIAL.lock().await;
        let before = statement_count::heartbeats();
        let beat = store.instance_heartbeat("n1", &held[..size], 60_000).await.expect("heartbeat");
        assert_eq!(beat.len(), size);
        per_size.push(statement_count::heartbeats() - before);
    }
    assert_eq!(per_size, vec![1, 1], "statements per heartbeat for 1 and 500 instances");
}

// ---------------------------------------------------------------------------------------------
// Workflows.

fn node_start(node: &str, n: usize, task: &str, wf: &str) -> super::NodeStart {
    let mut c = call(n, task);
    c.workflow = Some(wf.to_owned());
    c.max_attempts = Some(2);
    super::NodeStart { node: node.to_owned(), task: task.to_owned(), invocation: Some(c) }
}

async fn node_statuses(store: &dyn Store, wf: &str) -> Vec<(String, crate::model::workflow::NodeStatus)> {
    store.workflow_nodes(wf).await.expect("nodes").into_iter().map(|n| (n.id, n.status)).collect()
}

/// Claims invocation `n` alone and ends it `success` or `failed`.
async fn finish(store: &dyn Store, n: usize, ok: bool) {
    let claimed = store.invocation_claim("n1", 100).await.expect("claim");
    assert!(claimed.iter().any(|c| c.id == id(n)), "{n} claimable");
    for c in claimed {
        let end = if c.id != id(n) {
            // Put the others back where a claim can find them again.
            vec![Running, Retry]
        } else if ok {
            vec![Running, Success]
        } else {
            vec![Running, Failed]
        };
        let out = store
            .invocation_transition_batch(&[tr(&c.id, Pending, Some(("n1", c.attempt)), &end)])
            .await
            .expect("transition");
        assert_eq!(out, vec![Applied]);
    }
}

/// A step of workflow `id`, checked against the rule `workflows::status_of` states: the status
/// the store's SQL recomputed is the one the pure rule gives for the node counts.
async fn step(store: &dyn Store, id: &str, starts: &[super::NodeStart]) -> super::StepOutcome {
    let out = store.workflow_step(id, starts).await.expect("step");
    let wf = store.workflow_get(id).await.expect("get").expect("workflow");
    let counts: std::collections::HashMap<_, _> =
        store.workflow_counts(id).await.expect("counts").into_iter().collect();
    assert_eq!(wf.status, crate::model::workflow::status_of(&counts, wf.paused, wf.fail_fast), "{counts:?}");
    out
}

async fn workflow_create_step_and_sync(h: Harness) {
    use crate::model::workflow::{NodeStatus as N, WorkflowKind, WorkflowRequest, WorkflowStatus as W};
    let store = &*h.store;
    setup(store, &["t", "u"]).await;
    let req: WorkflowRequest = serde_json::from_value(serde_json::json!({
        "name": "diamond", "max_concurrently_running": 2, "task_limits": {"u": 1},
        "nodes": [
            {"id": "a", "task": "t"},
            {"id": "b", "task": "t", "depends_on": ["a"]},
            {"id": "c", "task": "u", "depends_on": ["a"]},
            {"id": "d", "task": "t", "depends_on": ["b", "c"]},
            {"id": "e", "task": "u"},
            {"id": "f", "task": "t", "depends_on": ["e"]},
        ]
    }))
    .expect("request");
    let new = crate::model::workflow::validate(
        &req,
        "wf-1".into(),
        WorkflowKind::Workflow,
        crate::model::workflow::MAX_NODES,
    )
    .expect("valid");
    let wf = store.workflow_create(&new).await.expect("create");
    assert_eq!(
        (wf.status, wf.kind, wf.paused, wf.max_concurrently_running),
        (W::Queued, WorkflowKind::Workflow, false, 2)
    );
    assert_eq!(store.workflow_get("wf-1").await.expect("get"), Some(wf.clone()));
    assert_eq!(store.workflow_active(10).await.expect("active"), vec!["wf-1".to_string()]);
    let nodes = store.workflow_nodes("wf-1").await.expect("nodes");
    assert_eq!(
        nodes.iter().map(|n| n.status).collect::<Vec<_>>(),
        [N::Ready, N::Waiting, N::Waiting, N::Waiting, N::Ready, N::Waiting]
    );
    assert_eq!(nodes[3].depends_on, vec!["b".to_string(), "c".to_string()]);
    assert_eq!(store.workflow_counts("wf-1").await.expect("counts"), vec![(N::Waiting, 4), (N::Ready, 2)]);

    // The plan offers the ready nodes in order; the step starts them with their invocations.
    let plan = store.workflow_plan("wf-1").await.expect("plan").expect("exists");
    let cands: Vec<&str> = plan.candidates.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(cands, ["a", "e"]);
    assert_eq!((plan.syncable, plan.any_failed, plan.running.len()), (0, false, 0));
    let out = step(store, "wf-1", &[node_start("a", 0, "t", "wf-1"), node_start("e", 1, "u", "wf-1")]).await;
    assert_eq!(out.started, vec![id(0), id(1)]);
    assert_eq!(out.workflow.as_ref().map(|w| w.status), Some(W::Running));
    let inv = get(store, &id(0)).await;
    assert_eq!((inv.workflow.as_deref(), inv.max_attempts, inv.status), (Some("wf-1"), Some(2), Registered));
    assert_eq!(statuses(store, &id(0)).await, vec![Registered]);
    // A node offered while still waiting (b: a runs) is refused; the limits are tested below.
    let out = step(store, "wf-1", &[node_start("b", 2, "t", "wf-1")]).await;
    assert!(!out.changed(), "{out:?}");
    assert!(store.invocation_get(&id(2)).await.expect("get").is_none());

    // a succeeds, e fails: b and c become ready, f blocked.
    let t0 = store.now().await.expect("now");
    finish(store, 0, true).await;
    finish(store, 1, false).await;
    let plan = store.workflow_plan("wf-1").await.expect("plan").expect("exists");
    assert_eq!(plan.syncable, 2);
    // A waiting node offered to the step is refused (compare-and-swap).
    let out = step(store, "wf-1", &[node_start("d", 9, "t", "wf-1")]).await;
    assert_eq!((out.synced, out.readied, out.blocked), (2, 2, 1), "{out:?}");
    assert!(out.started.is_empty());
    assert!(store.invocation_get(&id(9)).await.expect("get").is_none(), "no invocation for a refused node");
    assert_eq!(
        node_statuses(store, "wf-1").await.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        [N::Done, N::Ready, N::Ready, N::Waiting, N::Failed, N::Blocked]
    );
    let (server_time, changed) = store.workflow_nodes_since("wf-1", t0 - 1).await.expect("since");
    let mut changed: Vec<&str> = changed.iter().map(|n| n.id.as_str()).collect();
    changed.sort_unstable();
    assert_eq!(changed, ["a", "b", "c", "e", "f"]);
    assert!(server_time <= store.now().await.expect("now") - super::SYNC_MARGIN_MS);

    // b and c run and succeed; d becomes ready, runs; the workflow ends failed (e, f).
    let out = step(store, "wf-1", &[node_start("b", 2, "t", "wf-1"), node_start("c", 3, "u", "wf-1")]).await;
    assert_eq!(out.started, vec![id(2), id(3)]);
    finish(store, 2, true).await;
    finish(store, 3, true).await;
    let out = step(store, "wf-1", &[]).await;
    assert_eq!((out.synced, out.readied), (2, 1));
    let out = step(store, "wf-1", &[node_start("d", 4, "t", "wf-1")]).await;
    assert_eq!(out.started, vec![id(4)]);
    finish(store, 4, true).await;
    let out = step(store, "wf-1", &[]).await;
    assert_eq!(out.workflow.map(|w| w.status), Some(W::Failed));
    assert!(store.workflow_active(10).await.expect("active").is_empty());
    assert!(matches!(store.workflow_pause("wf-1").await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.workflow_pause("nope").await, Err(StoreError::NotFound(_))));
    let again = step(store, "wf-1", &[node_start("x", 5, "t", "wf-1")]).await;
    assert!(!again.changed());

    // The step counts the limits again inside its transaction, whatever it is offered: three
    // ready nodes of `u` offered at once under `{"u": 1}` start one; then, at the workflow's
    // limit (2), a ready `t` node offered is refused too.
    let req: WorkflowRequest = serde_json::from_value(serde_json::json!({
        "name": "limits", "max_concurrently_running": 2, "task_limits": {"u": 1},
        "nodes": [
            {"id": "u1", "task": "u"}, {"id": "u2", "task": "u"}, {"id": "u3", "task": "u"},
            {"id": "t1", "task": "t"}, {"id": "t2", "task": "t"},
        ]
    }))
    .expect("request");
    let new = crate::model::workflow::validate(
        &req,
        "wf-2".into(),
        WorkflowKind::Workflow,
        crate::model::workflow::MAX_NODES,
    )
    .expect("valid");
    store.workflow_create(&new).await.expect("create");
    let offered =
        [node_start("u1", 20, "u", "wf-2"), node_start("u2", 21, "u", "wf-2"), node_start("u3", 22, "u", "wf-2")];
    let out = step(store, "wf-2", &offered).await;
    assert_eq!(out.started, vec![id(20)], "one `u` at a time");
    let out = step(store, "wf-2", &[node_start("t1", 23, "t", "wf-2")]).await;
    assert_eq!(out.started, vec![id(23)]);
    let out = step(store, "wf-2", &[node_start("t2", 24, "t", "wf-2")]).await;
    assert!(out.started.is_empty(), "two running, max 2: {out:?}");
    assert!(store.invocation_get(&id(24)).await.expect("get").is_none());

    // A node whose invocation could not be built fails at its start, and its workflow with it.
    let req: WorkflowRequest =
        serde_json::from_value(serde_json::json!({"name": "gone", "nodes": [{"id": "x", "task": "t"}]}))
            .expect("request");
    let new = crate::model::workflow::validate(
        &req,
        "wf-3".into(),
        WorkflowKind::Workflow,
        crate::model::workflow::MAX_NODES,
    )
    .expect("valid");
    store.workflow_create(&new).await.expect("create");
    let unbuilt = super::NodeStart { node: "x".into(), task: "t".into(), invocation: None };
    let out = step(store, "wf-3", &[unbuilt]).await;
    assert_eq!((out.unstartable, out.synced, out.started.len()), (1, 0, 0), "{out:?}");
    assert_eq!(out.workflow.map(|w| w.status), Some(W::Failed));
    assert_eq!(node_statuses(store, "wf-3").await, vec![("x".to_string(), N::Failed)]);
}

/// The plan reads, per task, only the ready nodes a step may start (not every ready node),
/// and the selection over them is the selection over every ready node (the oracle, computed
/// here from all nodes): checked round after round while nodes start and some finish, with
/// limited tasks ahead of the others in request order.
async fn workflow_plan_reads_only_what_may_start(h: Harness) {
    use crate::model::workflow::{NodeStatus as N, WorkflowKind, WorkflowRequest, select_ready};
    let store = &*h.store;
    setup(store, &["t", "u", "v"]).await;
    let task_of = |i: usize| if i < 1_000 { "u" } else { ["t", "t", "u", "v", "t", "v", "v"][i % 7] };
    let nodes: Vec<serde_json::Value> =
        (0..3_000).map(|i| serde_json::json!({"id": format!("n{i:05}"), "task": task_of(i)})).collect();
    let req: WorkflowRequest = serde_json::from_value(serde_json::json!({
        "max_concurrently_running": 9, "task_limits": {"u": 2, "v": 3}, "nodes": nodes,
    }))
    .expect("request");
    let new = crate::model::workflow::validate(
        &req,
        "wf-big".into(),
        WorkflowKind::Workflow,
        crate::model::workflow::MAX_NODES,
    )
    .expect("valid");
    let wf = store.workflow_create(&new).await.expect("create");
    let mut next_call = 1_000;
    let mut started_total = 0;
    for round in 0..8 {
        let plan = store.workflow_plan("wf-big").await.expect("plan").expect("exists");
        let all = store.workflow_nodes("wf-big").await.expect("nodes");
        let ready: Vec<&crate::model::workflow::WorkflowNode> = all.iter().filter(|n| n.status == N::Ready).collect();
        let ready_tasks: Vec<&str> = ready.iter().map(|n| n.task.as_str()).collect();
        let expected: Vec<&str> =
            select_ready(&ready_tasks, &plan.running, wf.max_concurrently_running, &wf.task_limits)
                .into_iter()
                .map(|i| ready[i].id.as_str())
                .collect();
        let offered: Vec<&str> = plan.candidates.iter().map(|c| c.1.as_str()).collect();
        let picked: Vec<&str> = select_ready(&offered, &plan.running, wf.max_concurrently_running, &wf.task_limits)
            .into_iter()
            .map(|i| plan.candidates[i].0.as_str())
            .collect();
        assert_eq!(picked, expected, "round {round}: the plan's candidates pick what all ready nodes pick");
        // At most `free` per unlimited task and each limited task's room: 9 + 2 + 3.
        assert!(plan.candidates.len() <= 14, "round {round}: {} candidates read", plan.candidates.len());
        assert!(plan.candidates.windows(2).all(|w| w[0].0 < w[1].0), "in request order");
        let starts: Vec<super::NodeStart> = expected
            .iter()
            .map(|node| {
                next_call += 1;
                let task = all.iter().find(|n| n.id == *node).map(|n| n.task.clone()).expect("node");
                node_start(node, next_call, &task, "wf-big")
            })
            .collect();
        let out = step(store, "wf-big", &starts).await;
        assert_eq!(out.started.len(), expected.len(), "round {round}: {out:?}");
        started_total += out.started.len();
        // Every other claimed invocation succeeds; the rest keep their nodes running.
        let claimed = store.invocation_claim("n1", 100).await.expect("claim");
        let ends: Vec<Transition> = claimed
            .iter()
            .enumerate()
            .filter(|(k, _)| k % 2 == 0)
            .map(|(_, c)| tr(&c.id, Pending, Some(("n1", c.attempt)), &[Running, Success]))
            .collect();
        store.invocation_transition_batch(&ends).await.expect("finish");
    }
    assert!(started_total >= 9 + 8, "{started_total}");
}

/// Concurrency drops (by the leader, fenced) take only blocked invocations of tasks whose
/// policy in force says drop: a task the caller listed from an older read is checked again.
async fn drops_follow_the_policy_in_force(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    let leader = lead(store, "n9").await;
    let mut batch = calls(0..3, "t");
    for c in &mut batch {
        c.run_scope = Some("t:scope".into());
    }
    store.invocation_insert_batch(&batch).await.expect("insert");
    // n1 holds the scope with id 0; 1 and 2 are blocked behind it.
    assert_eq!(store.invocation_claim("n1", 10).await.expect("claim").len(), 1);
    let listed = vec!["t".to_string()];
    assert!(store.invocation_drop_blocked(&leader, &listed, 10).await.expect("drop").is_empty(), "t reroutes");
    let patch = TaskPatch { reroute_on_concurrency_control: Some(false), ..TaskPatch::default() };
    store.task_update("t", &patch).await.expect("update");
    assert!(is_fenced(store.invocation_drop_blocked(&stale(&leader), &listed, 10).await), "only the leader drops");
    let dropped = store.invocation_drop_blocked(&leader, &listed, 10).await.expect("drop");
    assert_eq!(dropped, vec![id(1), id(2)]);
    assert_eq!(get(store, &id(1)).await.status, ConcurrencyControlledFinal);
    assert_eq!(get(store, &id(0)).await.status, Pending, "the holder is untouched");
}

// ---------------------------------------------------------------------------------------------
// The leader lease and the token ring.

async fn the_ring_swaps_only_under_the_current_lease(h: Harness) {
    use crate::model::TokenAudit;
    let store = &*h.store;
    let audit = |moved: u32| TokenAudit {
        version: 0,
        leader: "n1".into(),
        epoch: 0,
        nodes_before: vec![],
        nodes_after: vec!["n1".into()],
        moved,
        compute_us: 5,
        at: 0,
    };
    let ring = store.ring_get(true).await.expect("ring");
    assert_eq!((ring.version, ring.total_tokens, ring.owners.len()), (0, 0, 0));
    let f1 = lead(store, "n1").await;
    let e1 = f1.epoch;
    store.node_register("n2", &[], 1).await.expect("register");
    assert_eq!(store.lease_claim("n1", 60_000, Some(e1)).await.expect("renew"), Some(e1), "renewal keeps the epoch");
    assert_eq!(store.lease_claim("n2", 60_000, None).await.expect("lease"), None, "held by n1, live");
    let all: Vec<(u32, String)> = (0..8).map(|t| (t, "n1".to_string())).collect();
    assert_eq!(store.ring_swap(&f1, 0, 8, &all, &audit(8)).await.expect("swap"), Some(1));
    assert_eq!(store.ring_swap(&f1, 0, 8, &all, &audit(8)).await.expect("stale version"), None);
    let not_holder = Fence { node: "n2".into(), epoch: e1 };
    assert!(is_fenced(store.ring_swap(&not_holder, 1, 8, &all, &audit(8)).await), "not the holder");
    let half: Vec<(u32, String)> = (4..8).map(|t| (t, "n2".to_string())).collect();
    assert_eq!(store.ring_swap(&f1, 1, 8, &half, &audit(4)).await.expect("swap"), Some(2));
    let ring = store.ring_get(true).await.expect("ring");
    assert_eq!(ring.version, 2);
    assert_eq!(ring.owners.iter().filter(|o| o.as_deref() == Some("n2")).count(), 4);
    assert_eq!(store.token_loads().await.expect("loads"), vec![("n1".to_string(), 4), ("n2".to_string(), 4)]);
    assert!(store.token_owns_any("n2").await.expect("owns"));
    assert!(!store.token_owns_any("n3").await.expect("owns"));
    // The lease lapses; n2 takes it with a new epoch and n1's writes are fenced off.
    h.exec_raw("UPDATE cluster_lease SET expires_at = 0").await;
    let e2 = store.lease_claim("n2", 60_000, None).await.expect("lease").expect("lapsed lease");
    assert!(e2 > e1);
    assert_eq!(store.lease_claim("n1", 60_000, Some(e1)).await.expect("lease"), None, "n2 holds it now");
    assert!(is_fenced(store.ring_swap(&f1, 2, 8, &all, &audit(4)).await), "the former leader");
    assert_eq!(store.ring_get(false).await.expect("ring").version, 2, "nothing written");
    // The ring shrinks: tokens past the new size go.
    let four: Vec<(u32, String)> = (0..4).map(|t| (t, "n2".to_string())).collect();
    let f2 = Fence { node: "n2".into(), epoch: e2 };
    assert_eq!(store.ring_swap(&f2, 2, 4, &four, &audit(4)).await.expect("swap"), Some(3));
    let ring = store.ring_get(true).await.expect("ring");
    assert_eq!(ring.owners, vec![Some("n2".to_string()); 4]);
    let audits = store.token_audits(10).await.expect("audits");
    assert_eq!(audits.iter().map(|a| (a.version, a.moved)).collect::<Vec<_>>(), vec![(3, 4), (2, 4), (1, 8)]);
    assert_eq!(store.lease_get().await.expect("lease").holder.as_deref(), Some("n2"));
    // n2 restarts (a new life knows no term): it takes its own lease again under a new epoch,
    // so the writes of its previous life are fenced off too.
    let e3 = store.lease_claim("n2", 60_000, None).await.expect("lease").expect("own lease");
    assert!(e3 > e2);
    assert!(is_fenced(store.ring_swap(&f2, 3, 4, &four, &audit(4)).await), "the previous life");
    // A holder that left hands the lease over at once.
    store.node_leave("n2").await.expect("leave");
    assert!(store.lease_claim("n1", 60_000, None).await.expect("lease").is_some_and(|e| e > e3));

    // Claims take only invocations on the node's tokens (or pinned to it, or without a token).
    setup(store, &["t", "pinned"]).await;
    let mut batch = calls(0..4, "t");
    for (n, c) in batch.iter_mut().enumerate() {
        c.token = Some(u32::try_from(n).expect("small"));
    }
    let mut pinned = call(10, "pinned");
    pinned.token = Some(0);
    batch.push(pinned);
    let mut free = call(11, "t");
    free.token = None;
    batch.push(free);
    store.invocation_insert_batch(&batch).await.expect("insert");
    h.exec_raw("UPDATE token_owners SET node = 'n1' WHERE token IN (1, 3)").await;
    let mine = |ids: Vec<Claimed>| ids.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let n1 = ClaimFilter { excluded: vec![], pinned_here: vec!["pinned".into()] };
    let got = mine(store.invocation_claim_reporting("n1", 10, 1_000, &n1).await.expect("claim"));
    assert_eq!(got, vec![id(1), id(3), id(10), id(11)]);
    let got = mine(store.invocation_claim("n2", 10).await.expect("claim"));
    assert_eq!(got, vec![id(0), id(2)]);
}

/// A batch can hold two changes of one attempt (`running` and the outcome, queued together by
/// the group commit), each with its instance record: both apply, and the instance ends with
/// the last. (PostgreSQL refuses an upsert that touches one row twice in a statement, which
/// failed the whole batch and threw the outcome away.)
async fn one_attempt_moved_twice_in_one_batch_keeps_its_last_instance(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..2, "t")).await.expect("insert");
    let claimed = store.invocation_claim_reporting("n1", 2, 60_000, &ClaimFilter::default()).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let o = Some(("n1", 1));
    let mut running = tr(&id(0), Pending, o, &[Running]);
    running.instance = Some(Box::new(instance_of(&id(0), 1, "n1", "running", Some(60_000))));
    let mut done = tr(&id(0), Running, o, &[Success]);
    done.result = Some("42".into());
    done.instance = Some(Box::new(instance_of(&id(0), 1, "n1", "done", None)));
    let mut other = tr(&id(1), Pending, o, &[Running, Success]);
    other.instance = Some(Box::new(instance_of(&id(1), 1, "n1", "done", None)));
    let out = store.invocation_transition_batch(&[running, other, done]).await.expect("one batch, two passes");
    assert_eq!(out, vec![Applied; 3]);
    assert_eq!(get(store, &id(0)).await.status, Success);
    let i = instance(store, &id(0)).await;
    assert_eq!((i.status.as_str(), i.report_by), ("done", None));
    assert_eq!(instance(store, &id(1)).await.status, "done");
}

/// Recovery takes attempts away from a node that restarted or died: their instances end with
/// the true reason in the same transaction (not live until triage blames a missing
/// heartbeat), so every attempt the history shows has an instance that says how it ended.
async fn lost_attempts_end_their_instances_when_rerouted(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..4, "t")).await.expect("insert");
    let f = ClaimFilter::default();
    assert_eq!(store.invocation_claim_reporting("n1", 2, 60_000, &f).await.expect("claim").len(), 2);
    assert_eq!(store.invocation_claim_reporting("n2", 2, 60_000, &f).await.expect("claim").len(), 2);
    let mut running = tr(&id(1), Pending, Some(("n1", 1)), &[Running]);
    running.instance = Some(Box::new(instance_of(&id(1), 1, "n1", "running", Some(60_000))));
    assert_eq!(store.invocation_transition_batch(&[running]).await.expect("running"), vec![Applied]);
    // n1 restarts: its claimed (0) and running (1) attempts are lost.
    assert_eq!(store.invocation_recover_node("n1").await.expect("recover"), 2);
    let queued = instance(store, &id(0)).await;
    assert_eq!((queued.status.as_str(), queued.report_by), ("error", None));
    let ran = instance(store, &id(1)).await;
    assert_eq!((ran.status.as_str(), ran.report_by), ("unknown_error", None));
    let why = ran.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(why.contains("attempt lost") && why.contains("`n1` restarted"), "{why}");
    // n2 dies and the leader retires it.
    store.node_register("n2", &[], 1).await.expect("register");
    let leader = lead(store, "n9").await;
    assert_eq!(store.node_retire("n2", &leader).await.expect("retire"), 2);
    for n in 2..4 {
        let i = instance(store, &id(n)).await;
        assert_eq!(i.report_by, None, "{n} ended");
        let why = i.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(why.contains("`n2` stopped heartbeating") && why.contains("`n9`"), "{why}");
    }
    // History and instances agree on the attempts.
    for n in 0..4 {
        let attempts: HashSet<u32> = store
            .invocation_history(&id(n))
            .await
            .expect("history")
            .iter()
            .map(|h| h.attempt)
            .filter(|a| *a > 0)
            .collect();
        let instances: HashSet<u32> =
            store.instance_list(&id(n)).await.expect("instances").iter().map(|i| i.attempt).collect();
        assert_eq!(attempts, instances, "{n}");
    }
}

/// A write whose commit was cut off but stored, run again (the store retries a transaction
/// after a lost connection), meets its own change: it counts as applied, not as a lost race
/// that would throw the outcome away. Without a retry, the same write twice is a lost race.
async fn a_retried_write_that_was_stored_counts_as_applied(h: Harness) {
    let store = &*h.store;
    let sql = h.sql_store();
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..1, "t")).await.expect("insert");
    store.invocation_claim_reporting("n1", 1, 60_000, &ClaimFilter::default()).await.expect("claim");
    let o = Some(("n1", 1));
    let run = tr(&id(0), Pending, o, &[Running]);
    assert_eq!(store.invocation_transition_batch(std::slice::from_ref(&run)).await.expect("running"), vec![Applied]);
    assert_eq!(store.invocation_transition_batch(std::slice::from_ref(&run)).await.expect("again"), vec![LostRace]);
    assert_eq!(sql.transition_batch(&[run], true).await.expect("retried"), vec![Applied], "the same attempt's running");
    let mut done = tr(&id(0), Running, o, &[Success]);
    done.result = Some("1".into());
    assert_eq!(store.invocation_transition_batch(std::slice::from_ref(&done)).await.expect("success"), vec![Applied]);
    assert_eq!(sql.transition_batch(&[done], true).await.expect("retried"), vec![Applied], "stored before");
    // Another node's write of the same status is not this one's.
    let mut theirs = tr(&id(0), Running, Some(("n2", 1)), &[Success]);
    theirs.result = Some("2".into());
    assert_eq!(sql.transition_batch(&[theirs], true).await.expect("theirs"), vec![LostRace]);
    assert_eq!(statuses(store, &id(0)).await.iter().filter(|s| **s == Success).count(), 1);
}

async fn api_keys_keep_hashes_names_and_batched_use(h: Harness) {
    use crate::model::key::Role;
    let store = &*h.store;
    assert!(store.key_list().await.expect("list").is_empty());
    let ci = store.key_insert("ci", Role::Write, "aa11").await.expect("insert");
    assert_eq!((ci.name.as_str(), ci.role, ci.hash.as_str(), ci.last_used_at), ("ci", Role::Write, "aa11", None));
    assert!((ci.created_at - system_now_ms()).abs() < 60_000);
    store.key_insert("admin", Role::Admin, "bb22").await.expect("insert");
    // A taken name is a conflict and changes nothing.
    assert!(matches!(store.key_insert("ci", Role::Admin, "cc33").await, Err(StoreError::Conflict(_))));
    let list = store.key_list().await.expect("list");
    assert_eq!(
        list.iter().map(|k| (k.name.as_str(), k.role)).collect::<Vec<_>>(),
        vec![("admin", Role::Admin), ("ci", Role::Write)]
    );
    // Use is recorded for any number of keys in one statement; unknown names are ignored.
    store.key_touch(&[]).await.expect("touch nothing");
    store.key_touch(&["ci".into(), "gone".into()]).await.expect("touch");
    let list = store.key_list().await.expect("list");
    assert!(list.iter().find(|k| k.name == "ci").and_then(|k| k.last_used_at).is_some());
    assert!(list.iter().find(|k| k.name == "admin").and_then(|k| k.last_used_at).is_none());
    // Another store on the same database sees the keys (every node of a cluster does).
    let other = h.reopen().await;
    assert_eq!(other.key_list().await.expect("list").len(), 2);
    assert!(store.key_delete("ci").await.expect("delete"));
    assert!(!store.key_delete("ci").await.expect("delete again"));
    assert_eq!(
        other.key_list().await.expect("list").iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        vec!["admin"]
    );
    // A stored role the code does not know is a corrupt row, not a silent downgrade.
    h.exec_raw("UPDATE api_keys SET role = 'root'").await;
    assert!(matches!(store.key_list().await, Err(StoreError::Corrupt(_))));
}
