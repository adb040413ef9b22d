//! PostgreSQL lock-order tests: every multi-row write takes its row locks in the one global
//! order (rate limits by name, invocations by id, then task instances by (invocation,
//! attempt)), and a write the
//! database aborts as a deadlock victim runs again instead of failing. Each test holds a row
//! lock from a raw connection, lets a store write block on it, and probes with `NOWAIT`
//! which rows the write has locked so far: a write that locks in plan order (the rows
//! arranged so that the plan meets them out of order) fails the probe. SQLite has one writer
//! and no row locks, so these run on PostgreSQL only.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::conformance::{Harness, call, id, instance_of, setup, tr};
use super::{ClaimFilter, Store, StoreError, TransitionOutcome};
use crate::model::InvocationStatus::{Pending, Running, Success};
use crate::model::instance::HeldAttempt;

/// A raw connection to the harness's database.
async fn raw(h: &Harness) -> PgConnection {
    PgConnection::connect_with(&h.pg_options()).await.expect("raw connection")
}

/// Waits until some backend of this database waits on a lock (the store's write is blocked).
async fn until_blocked(probe: &mut PgConnection) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *probe)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the store's write never blocked on the held lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `sql` (a `SELECT … FOR UPDATE NOWAIT`) gets its lock at once.
async fn lockable(probe: &mut PgConnection, sql: &'static str, id: &str) -> bool {
    let mut tx = probe.begin().await.expect("probe tx");
    let got = sqlx::query(sql).bind(id).fetch_optional(&mut *tx).await.is_ok();
    let _ = tx.rollback().await;
    got
}

const LOCK_INVOCATION: &str = "SELECT id FROM invocations WHERE id = $1 FOR UPDATE NOWAIT";
const LOCK_INSTANCE: &str = "SELECT invocation_id FROM task_instances WHERE invocation_id = $1 FOR UPDATE NOWAIT";

/// Two invocations claimed by n1, id(1)'s rows updated once more so that their newest
/// versions lie after id(2)'s (a sequential scan meets id(2) first).
async fn two_claimed(h: &Harness) -> Arc<dyn Store> {
    let store = h.store.clone();
    setup(&*store, &["t"]).await;
    store.invocation_insert_batch(&[call(1, "t"), call(2, "t")]).await.expect("insert");
    let claimed = store.invocation_claim_reporting("n1", 2, 60_000, &ClaimFilter::default()).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let mut running = tr(&id(1), Pending, Some(("n1", 1)), &[Running]);
    running.instance = Some(Box::new(instance_of(&id(1), 1, "n1", "running", Some(60_000))));
    assert_eq!(store.invocation_transition_batch(&[running]).await.expect("running"), vec![TransitionOutcome::Applied]);
    store.instance_heartbeat("n1", &[HeldAttempt::new(id(1), 1)], 60_000).await.expect("heartbeat");
    store
}

/// Finishes both invocations of [`two_claimed`] in one batch, in the background.
fn finish_both(store: Arc<dyn Store>) -> tokio::task::JoinHandle<super::StoreResult<Vec<TransitionOutcome>>> {
    tokio::spawn(async move {
        let batch = [
            tr(&id(1), Running, Some(("n1", 1)), &[Success]),
            tr(&id(2), Pending, Some(("n1", 1)), &[Running, Success]),
        ];
        store.invocation_transition_batch(&batch).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_locks_instances_in_order() {
    let h = Harness::postgres().await;
    let store = two_claimed(&h).await;
    let (mut holder, mut probe) = (raw(&h).await, raw(&h).await);
    let mut held = holder.begin().await.expect("tx");
    sqlx::query(LOCK_INSTANCE).bind(id(1)).execute(&mut *held).await.expect("hold instance 1");
    let s = store.clone();
    let beat = tokio::spawn(async move {
        s.instance_heartbeat("n1", &[HeldAttempt::new(id(2), 1), HeldAttempt::new(id(1), 1)], 60_000).await
    });
    until_blocked(&mut probe).await;
    let second_free = lockable(&mut probe, LOCK_INSTANCE, &id(2)).await;
    held.rollback().await.expect("release");
    let beat = beat.await.expect("join").expect("heartbeat");
    assert_eq!(beat.len(), 2);
    assert!(second_free, "the heartbeat locked instance 2 before instance 1: out of the global order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_batches_lock_invocations_in_order() {
    let h = Harness::postgres().await;
    let store = two_claimed(&h).await;
    let (mut holder, mut probe) = (raw(&h).await, raw(&h).await);
    let mut held = holder.begin().await.expect("tx");
    sqlx::query(LOCK_INVOCATION).bind(id(1)).execute(&mut *held).await.expect("hold invocation 1");
    let done = finish_both(store.clone());
    until_blocked(&mut probe).await;
    let second_free = lockable(&mut probe, LOCK_INVOCATION, &id(2)).await;
    held.rollback().await.expect("release");
    let out = done.await.expect("join").expect("batch");
    assert_eq!(out, vec![TransitionOutcome::Applied; 2]);
    assert!(second_free, "the batch locked invocation 2 before invocation 1: out of the global order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_locks_invocations_before_instances() {
    use crate::model::instance::triage;
    let h = Harness::postgres().await;
    let store = two_claimed(&h).await;
    let leader = super::conformance::lead(&*store, "leader").await;
    // Far in the future: id(2)'s queued instance is overdue and its invocation is taken back.
    let now = store.now().await.expect("now") + 3_600_000;
    let overdue: Vec<_> = store
        .instance_overdue(now, 10)
        .await
        .expect("overdue")
        .into_iter()
        .filter(|o| o.invocation_id == id(2))
        .collect();
    let decisions = triage(&overdue, now, 5_000);
    assert!(decisions.iter().any(|d| d.reroute), "{decisions:?}");
    let (mut holder, mut probe) = (raw(&h).await, raw(&h).await);
    let mut held = holder.begin().await.expect("tx");
    sqlx::query(LOCK_INVOCATION).bind(id(2)).execute(&mut *held).await.expect("hold invocation 2");
    let s = store.clone();
    let fence = leader.clone();
    let applied = tokio::spawn(async move { s.instance_triage_apply(&decisions, &fence).await });
    until_blocked(&mut probe).await;
    let instance_free = lockable(&mut probe, LOCK_INSTANCE, &id(2)).await;
    held.rollback().await.expect("release");
    let (changed, rerouted) = applied.await.expect("join").expect("triage");
    assert_eq!((changed, rerouted), (1, vec![id(2)]));
    assert!(instance_free, "triage locked the instance before its invocation: out of the global order");
}

/// A claim of rate-limited calls locks the limit before any invocation: held back by a raw
/// transaction holding the limit's row, it has locked no candidate yet (so a claim of the
/// same limit on another node waits at the limit, never holding invocations meanwhile); once
/// the row is free, it claims within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_claims_lock_the_limit_before_invocations() {
    let h = Harness::postgres().await;
    let store = h.store.clone();
    setup(&*store, &["t"]).await;
    store.rate_limit_put("api", 1, 86_400_000, None).await.expect("limit");
    let patch = crate::model::TaskPatch { rate_limit: Some("api".into()), ..Default::default() };
    store.task_update("t", &patch).await.expect("patch");
    store.invocation_insert_batch(&[call(1, "t"), call(2, "t")]).await.expect("insert");
    let (mut holder, mut probe) = (raw(&h).await, raw(&h).await);
    let mut held = holder.begin().await.expect("tx");
    sqlx::query("SELECT name FROM rate_limits WHERE name = 'api' FOR UPDATE").execute(&mut *held).await.expect("hold");
    let s = store.clone();
    let claim =
        tokio::spawn(async move { s.invocation_claim_rate_limited("n1", 4, 60_000, &ClaimFilter::default()).await });
    until_blocked(&mut probe).await;
    let first_free = lockable(&mut probe, LOCK_INVOCATION, &id(1)).await;
    held.rollback().await.expect("release");
    let claimed = claim.await.expect("join").expect("claim");
    assert_eq!(claimed.claimed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(1)]);
    assert!(first_free, "the claim locked an invocation before its limit: out of the global order");
}

/// A deadlock made on purpose: the store's batch holds invocation 1 and waits for 2, which a
/// raw transaction holds while it waits for 1. PostgreSQL aborts the store's transaction
/// (it waited first and its `deadlock_timeout` is the shorter); the store runs it again once
/// the raw transaction is gone, and the batch is applied, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_retried_not_failed() {
    let h = Harness::postgres().await;
    let store = two_claimed(&h).await;
    let (mut holder, mut probe) = (raw(&h).await, raw(&h).await);
    sqlx::query("SET deadlock_timeout = '20s'").execute(&mut holder).await.expect("slow detector for the raw side");
    let mut held = holder.begin().await.expect("tx");
    sqlx::query(LOCK_INVOCATION).bind(id(2)).execute(&mut *held).await.expect("hold invocation 2");
    let done = finish_both(store.clone());
    until_blocked(&mut probe).await;
    // Now wait for invocation 1, which the store's transaction holds: a cycle. The store's
    // side is the victim; this statement then gets its lock.
    sqlx::query("SELECT id FROM invocations WHERE id = $1 FOR UPDATE")
        .bind(id(1))
        .execute(&mut *held)
        .await
        .expect("the raw side is not the victim");
    held.rollback().await.expect("release");
    let out = done.await.expect("join").expect("the batch is retried after the deadlock, not failed");
    assert_eq!(out, vec![TransitionOutcome::Applied; 2]);
}

/// A claim binds calls to the version it read as current when it began. A version's deletion
/// waits for the claims in flight, so one that began before a rollback away from the version
/// and binds a call to it is counted (the deletion is refused), never left bound to deleted
/// code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_delete_waits_for_claims_in_flight() {
    let h = Harness::postgres().await;
    let store = h.store.clone();
    let t = [crate::model::TaskDef::sample("t")];
    store.component_put("c", "d1", b"one", &t).await.expect("version 1");
    store.invocation_insert_batch(&[call(1, "t")]).await.expect("insert");
    store.component_put("c", "d2", b"two", &t).await.expect("version 2");
    let (mut holder, mut probe) = (raw(&h).await, raw(&h).await);
    // The claim in flight: it read version 2 as current and bound the call to it.
    let mut claim = holder.begin().await.expect("tx");
    sqlx::query(
        "UPDATE invocations SET status = 'pending', owner_node = 'n1', attempts = attempts + 1, \
         component_version = 2 WHERE id = $1",
    )
    .bind(id(1))
    .execute(&mut *claim)
    .await
    .expect("bind to version 2");
    store.component_activate("c", 1, &t).await.expect("rollback to version 1");
    let s = store.clone();
    let delete = tokio::spawn(async move { s.component_version_delete("c", 2).await });
    until_blocked(&mut probe).await;
    claim.commit().await.expect("the claim commits");
    let out = delete.await.expect("join");
    assert!(matches!(out, Err(StoreError::Conflict(_))), "version 2 has a call bound to it: {out:?}");
    assert!(store.component_version_bytes("c", 2).await.expect("bytes").is_some());
}
