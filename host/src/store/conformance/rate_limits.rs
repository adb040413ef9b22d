//! Conformance of rate limits: what a claim of rate-limited calls takes per window and key,
//! concurrent claimers within one limit, and the limits' own rules (a task names only an
//! existing limit, a named limit is not deleted).

use super::*;

conformance!(
    rate_limited_claims_take_at_most_the_limit_per_window_and_key,
    concurrent_rate_limited_claims_never_pass_the_limit,
);

/// A window of a day: the test cannot cross its end (unless run at midnight UTC).
const DAY: u64 = 86_400_000;

fn patch_limit(name: &str) -> TaskPatch {
    TaskPatch { rate_limit: Some(name.to_string()), ..TaskPatch::default() }
}

async fn rate_claim(store: &dyn Store, limit: u32) -> (Vec<String>, Option<i64>) {
    let c = store.invocation_claim_rate_limited("n1", limit, 60_000, &ClaimFilter::default()).await.expect("claim");
    (c.claimed.into_iter().map(|c| c.id).collect(), c.held_for_ms)
}

fn keyed(n: usize, task: &str, customer: &str) -> NewInvocation {
    NewInvocation { args: format!(r#"{{"customer":"{customer}","n":{n}}}"#), ..call(n, task) }
}

async fn rate_limited_claims_take_at_most_the_limit_per_window_and_key(h: Harness) {
    let store = &*h.store;
    setup(store, &["t", "r", "k"]).await;
    // A task may name only a limit that exists.
    let err = store.task_update("r", &patch_limit("api")).await.expect_err("no such limit");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let (api, created) = store.rate_limit_put("api", 3, DAY, None).await.expect("put");
    assert!(created && api.tasks.is_empty(), "{api:?}");
    let def = store.task_update("r", &patch_limit("api")).await.expect("patch").expect("task");
    assert_eq!(def.policy.rate_limit.as_deref(), Some("api"));
    assert_eq!(store.rate_limit_get("api").await.expect("get").expect("api").tasks, vec!["r".to_string()]);

    let mut batch: Vec<NewInvocation> = (0..10).map(|n| call(n, "r")).collect();
    batch.extend([call(10, "t"), call(11, "t")]);
    store.invocation_insert_batch(&batch).await.expect("insert");
    // The ordinary claim leaves rate-limited calls alone.
    let ordinary = store.invocation_claim_reporting("n1", 100, 60_000, &ClaimFilter::default()).await.expect("claim");
    assert_eq!(ordinary.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(10), id(11)]);
    // Three start in this window, the oldest first; the rest wait until it ends.
    let (took, held) = rate_claim(store, 100).await;
    assert_eq!(took, vec![id(0), id(1), id(2)]);
    assert!(held.is_some_and(|ms| ms > 0 && ms <= DAY as i64), "{held:?}");
    for i in 0..3 {
        let history = store.invocation_history(&id(i)).await.expect("history");
        assert_eq!(history.iter().map(|e| e.status).collect::<Vec<_>>(), vec![Registered, Pending]);
    }
    assert_eq!(get(store, &id(3)).await.status, Registered);
    let (took, held) = rate_claim(store, 100).await;
    assert!(took.is_empty() && held.is_some(), "{took:?} {held:?}");
    assert!(store.rate_limited_until("api", "").await.expect("until").is_some());
    // A higher limit in the same window: two more. The free slots bound a claim too.
    store.rate_limit_put("api", 5, DAY, None).await.expect("raise");
    let (took, _) = rate_claim(store, 1).await;
    assert_eq!(took, vec![id(3)]);
    let (took, _) = rate_claim(store, 100).await;
    assert_eq!(took, vec![id(4)]);
    // A new window length starts counting afresh.
    store.rate_limit_put("api", 2, DAY / 2, None).await.expect("new window");
    assert_eq!(rate_claim(store, 100).await.0, vec![id(5), id(6)]);

    // Keyed: per customer.
    store.rate_limit_put("per-customer", 2, DAY, Some("$.customer")).await.expect("put keyed");
    store.task_update("k", &patch_limit("per-customer")).await.expect("patch k");
    let calls: Vec<NewInvocation> = (20..28).map(|n| keyed(n, "k", if n < 24 { "acme" } else { "globex" })).collect();
    store.invocation_insert_batch(&calls).await.expect("insert keyed");
    let (took, _) = rate_claim(store, 100).await;
    assert_eq!(took, vec![id(20), id(21), id(24), id(25)], "two per customer");
    assert!(store.rate_limited_until("per-customer", "acme").await.expect("until").is_some());
    assert_eq!(store.rate_limited_until("per-customer", "initech").await.expect("until"), None);

    // A limit a task names is not deleted; once no task names it, it is.
    let err = store.rate_limit_delete("api").await.expect_err("named by r");
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("`r`")), "{err}");
    store.task_update("r", &patch_limit("")).await.expect("unname");
    assert!(store.rate_limit_delete("api").await.expect("delete"));
    assert!(!store.rate_limit_delete("api").await.expect("delete again"));
    assert_eq!(store.rate_limit_get("api").await.expect("get"), None);
    // Its calls are ordinary again.
    let ordinary = store.invocation_claim_reporting("n1", 100, 60_000, &ClaimFilter::default()).await.expect("claim");
    assert_eq!(ordinary.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(7), id(8), id(9)]);
    let names: Vec<String> = store.rate_limit_list().await.expect("list").into_iter().map(|l| l.name).collect();
    assert_eq!(names, vec!["per-customer".to_string()]);
}

/// Eight claimers at once (PostgreSQL: eight connections) over 200 calls of a limit of 20:
/// exactly 20 are claimed, none twice.
async fn concurrent_rate_limited_claims_never_pass_the_limit(h: Harness) {
    let store = h.store.clone();
    setup(&*store, &["r"]).await;
    store.rate_limit_put("api", 20, DAY, None).await.expect("put");
    store.task_update("r", &patch_limit("api")).await.expect("patch");
    let batch: Vec<NewInvocation> = (0..200).map(|n| call(n, "r")).collect();
    store.invocation_insert_batch(&batch).await.expect("insert");
    let claimers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let node = format!("n{i}");
            let mut got = Vec::new();
            for _ in 0..5 {
                let c = store
                    .invocation_claim_rate_limited(&node, 3, 60_000, &ClaimFilter::default())
                    .await
                    .expect("claim");
                got.extend(c.claimed.into_iter().map(|c| c.id));
            }
            got
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.expect("claimer"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (20, 20), "{all:?}");
}
