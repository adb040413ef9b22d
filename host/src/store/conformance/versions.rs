//! Conformance of component versions: an upload of new code is the next version, a call is
//! bound to the version current at its first claim and keeps it through retries and a
//! re-run after a crash, rollback, and which versions may be deleted or are pruned.

use super::*;

conformance!(calls_keep_the_version_they_started_on, versions_are_deleted_only_when_nothing_needs_them,);

async fn claim(store: &dyn Store, limit: u32) -> Vec<Claimed> {
    store.invocation_claim_reporting("n1", limit, 60_000, &ClaimFilter::default()).await.expect("claim")
}

/// `(version, current, unfinished)` of each stored version, newest first.
async fn versions(store: &dyn Store, name: &str) -> Vec<(u64, bool, u64)> {
    let all = store.component_versions(name).await.expect("versions").expect("a component");
    all.into_iter().map(|v| (v.version, v.current, v.unfinished)).collect()
}

async fn calls_keep_the_version_they_started_on(h: Harness) {
    let store = &*h.store;
    let t = [task("t")];
    let first = store.component_put("c", "d1", b"one", &t).await.expect("put");
    assert_eq!(first.version, 1);
    store.invocation_insert_batch(&[call(0, "t"), call(1, "t"), call(2, "t")]).await.expect("insert");
    // A call is bound at its first claim, and its queued instance records the version.
    let claimed = claim(store, 1).await;
    assert_eq!((claimed[0].id.as_str(), claimed[0].component_version), (id(0).as_str(), Some(1)));
    assert_eq!(instance(store, &id(0)).await.component_version, Some(1));
    assert_eq!(get(store, &id(0)).await.component_version, Some(1));
    assert_eq!(get(store, &id(1)).await.component_version, None, "unclaimed calls are not bound");

    // New code is version 2 and current; the same code again adds nothing.
    let second = store.component_put("c", "d2", b"two", &t).await.expect("put");
    assert_eq!((second.version, second.digest.as_str(), second.size_bytes), (2, "d2", 3));
    assert_eq!(store.component_put("c", "d2", b"two", &t).await.expect("same code").version, 2);
    assert_eq!(versions(store, "c").await, vec![(2, true, 0), (1, false, 1)]);
    assert_eq!(store.component_version_bytes("c", 1).await.expect("bytes"), Some(b"one".to_vec()));
    assert_eq!(store.component_version_bytes("c", 2).await.expect("bytes"), Some(b"two".to_vec()));
    assert_eq!(store.component_version_bytes("c", 3).await.expect("bytes"), None);

    // Calls claimed now run version 2; the one bound to 1 keeps it through a retry…
    assert_eq!(claim(store, 1).await[0].component_version, Some(2));
    let mut retry = tr(&id(0), Pending, Some(("n1", 1)), &[Running, Retry]);
    retry.error = Some(TaskFailure::new(ErrorKind::Retryable, "again"));
    assert_eq!(store.invocation_transition_batch(&[retry]).await.expect("retry"), vec![Applied]);
    let again = claim(store, 10).await;
    let by_id: Vec<(String, Option<u64>, u32)> =
        again.iter().map(|c| (c.id.clone(), c.component_version, c.attempt)).collect();
    assert_eq!(by_id, vec![(id(0), Some(1), 2), (id(2), Some(2), 1)]);
    let instances = store.instance_list(&id(0)).await.expect("instances");
    assert_eq!(
        instances.iter().map(|i| (i.attempt, i.component_version)).collect::<Vec<_>>(),
        [(1, Some(1)), (2, Some(1))]
    );
    // …and through the re-run after its node's crash, even after a rollback to version 1 and
    // an upload of version 3.
    assert!(store.invocation_recover_node("n1").await.expect("recover") >= 3);
    let rolled = store.component_activate("c", 1, &t).await.expect("rollback");
    assert_eq!((rolled.version, rolled.digest.as_str()), (1, "d1"));
    assert_eq!(store.component_get("c").await.expect("get").expect("c").version, 1);
    assert_eq!(store.component_put("c", "d3", b"three", &t).await.expect("put").version, 3);
    let rerun: Vec<(String, Option<u64>)> =
        claim(store, 10).await.into_iter().map(|c| (c.id, c.component_version)).collect();
    assert_eq!(rerun, vec![(id(0), Some(1)), (id(1), Some(2)), (id(2), Some(2))]);

    // A rollback names a version that exists, of a component that exists.
    let err = store.component_activate("c", 9, &t).await.expect_err("no version 9");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.component_activate("nope", 1, &t).await.expect_err("no component");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert_eq!(store.component_versions("nope").await.expect("versions"), None);
}

async fn versions_are_deleted_only_when_nothing_needs_them(h: Harness) {
    let store = &*h.store;
    let t = [task("t")];
    store.component_put("c", "d1", b"one", &t).await.expect("put");
    store.invocation_insert_batch(&[call(0, "t")]).await.expect("insert");
    claim(store, 1).await;
    store.component_put("c", "d2", b"two", &t).await.expect("put");
    let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict(_)));
    // Not the current version, not one an unfinished call is bound to, not one that is gone.
    assert!(conflict(store.component_version_delete("c", 2).await), "current");
    assert!(conflict(store.component_version_delete("c", 1).await), "bound to an unfinished call");
    let err = store.component_version_delete("c", 7).await.expect_err("no version 7");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.component_version_delete("nope", 1).await.expect_err("no component");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    // Uploads keep the last KEPT_COMPONENT_VERSIONS versions, the current one and the bound
    // one; a version a call was bound to goes once the call is final.
    let kept = crate::model::KEPT_COMPONENT_VERSIONS;
    for n in 3..=kept + 4 {
        store.component_put("c", &format!("d{n}"), n.to_string().as_bytes(), &t).await.expect("put");
    }
    let latest = kept + 4;
    let mut expected: Vec<u64> = (latest - kept + 1..=latest).rev().collect();
    expected.push(1);
    assert_eq!(versions(store, "c").await.into_iter().map(|v| v.0).collect::<Vec<_>>(), expected);
    let mut done = tr(&id(0), Pending, Some(("n1", 1)), &[Running, Success]);
    done.result = Some("null".into());
    assert_eq!(store.invocation_transition_batch(&[done]).await.expect("done"), vec![Applied]);
    assert_eq!(versions(store, "c").await.last(), Some(&(1, false, 0)));
    store.component_version_delete("c", 1).await.expect("unused now");
    assert_eq!(store.component_version_bytes("c", 1).await.expect("bytes"), None);
    // Numbers are never given twice: a version deleted stays a gap.
    store.component_put("c", "new", b"new", &t).await.expect("put");
    assert_eq!(versions(store, "c").await[0], (latest + 1, true, 0));

    // A rollback to a pruned version is not found; removing the component removes them all.
    let err = store.component_activate("c", 2, &t).await.expect_err("pruned");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(store.component_delete("c").await.expect("delete"));
    assert_eq!(store.component_versions("c").await.expect("versions"), None);
    assert_eq!(store.component_version_bytes("c", latest).await.expect("bytes"), None);
}
