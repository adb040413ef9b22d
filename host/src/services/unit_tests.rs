//! The atomic services one `run_once` at a time, against a real SQLite store: each unit does
//! its work under the leader's fence and nothing under a stale one.

use std::sync::Arc;
use std::time::Duration;

use super::pending::PendingRecovery;
use super::purge::Purge;
use crate::model::{InvocationStatus, NewInvocation, Owner, TaskDef, Transition};
use crate::store::{Fence, SqliteStore, Store, StoreError};

struct Fixture {
    store: Arc<dyn Store>,
    fence: Fence,
    _dir: tempfile::TempDir,
}

/// A fresh SQLite store with task `t`, node `n1` registered and leading.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("w.db")).await.expect("open"));
    let task = TaskDef { component: "comp".into(), ..TaskDef::sample("t") };
    store.component_put("comp", "digest", b"\0asm", &[task]).await.expect("component");
    store.node_register("n1", &[], 1).await.expect("register");
    let epoch = store.lease_claim("n1", 60_000, None).await.expect("lease").expect("free lease");
    Fixture { store, fence: Fence { node: "n1".into(), epoch }, _dir: dir }
}

fn call(n: usize) -> NewInvocation {
    NewInvocation::sample(n, "t")
}

async fn status(store: &dyn Store, id: &str) -> InvocationStatus {
    store.invocation_get(id).await.expect("get").expect("stored").status
}

#[tokio::test]
async fn pending_recovery_reroutes_only_what_waited_past_the_limit_and_only_under_the_lease() {
    let f = fixture().await;
    let ids: Vec<String> =
        f.store.invocation_insert_batch(&[call(1), call(2)]).await.expect("route").into_iter().map(|i| i.id).collect();
    let claimed = f.store.invocation_claim("n1", 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let pending_id = claimed[0].id.clone();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // A generous limit: nothing is overdue.
    let patient = PendingRecovery::new(f.store.clone(), Duration::from_secs(3_600));
    assert_eq!(patient.run_once(&f.fence).await.expect("run"), 0);
    assert_eq!(status(f.store.as_ref(), &pending_id).await, InvocationStatus::Pending);

    // A former leader's term writes nothing.
    let unit = PendingRecovery::new(f.store.clone(), Duration::from_millis(5));
    let stale = Fence { node: "n1".into(), epoch: f.fence.epoch - 1 };
    assert!(matches!(unit.run_once(&stale).await, Err(StoreError::Fenced { .. })));
    assert_eq!(status(f.store.as_ref(), &pending_id).await, InvocationStatus::Pending);

    // Past the limit: the claimed one goes back to be claimed again; the unclaimed one is untouched.
    assert_eq!(unit.run_once(&f.fence).await.expect("run"), 1);
    assert_eq!(status(f.store.as_ref(), &pending_id).await, InvocationStatus::Rerouted);
    let other = ids.iter().find(|i| **i != pending_id).expect("other");
    assert_eq!(status(f.store.as_ref(), other).await, InvocationStatus::Registered);
}

#[tokio::test]
async fn purge_deletes_final_invocations_past_the_retention_and_keeps_the_rest() {
    let f = fixture().await;
    f.store.invocation_insert_batch(&[call(1), call(2)]).await.expect("route");
    let claimed = f.store.invocation_claim("n1", 1).await.expect("claim");
    let done = claimed[0].id.clone();
    let owner = Owner { node: "n1".into(), attempt: claimed[0].attempt };
    let end = Transition::attempt_end(&done, &owner, InvocationStatus::Pending, "n1").succeeded("1".into());
    f.store.invocation_transition_batch(&[end]).await.expect("record");
    assert_eq!(status(f.store.as_ref(), &done).await, InvocationStatus::Success);
    tokio::time::sleep(Duration::from_millis(20)).await;

    // No retention: nothing goes.
    let keep = Purge::new(f.store.clone(), None);
    assert_eq!(keep.run_once(&f.fence, || false).await.expect("run"), 0);
    assert!(f.store.invocation_get(&done).await.expect("get").is_some());

    let purge = Purge::new(f.store.clone(), Some(Duration::from_millis(5)));
    assert_eq!(purge.run_once(&f.fence, || false).await.expect("run"), 1);
    assert!(f.store.invocation_get(&done).await.expect("get").is_none(), "the final one is purged");
    let left = f.store.invocation_get(&call(2).id).await.expect("get").expect("the waiting one stays");
    assert_eq!(left.status, InvocationStatus::Registered);
}
