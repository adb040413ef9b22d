//! Conformance of invocations: routing, claims (order, limits, pins, concurrent claimers),
//! reads and corrupt rows.

use super::*;

conformance!(
    insert_batch,
    claim_respects_limit_order_and_paused_tasks,
    concurrent_claimers_never_share_an_invocation,
    list_and_count,
    get_many_and_history,
    corrupt_rows_are_errors,
    blocked_calls_say_why_and_are_recorded_once,
    a_waiting_debounced_call_takes_the_last_arguments,
    claims_take_higher_priorities_first_and_aged_calls_as_the_highest,
);

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
    let skip_a = ClaimFilter { excluded: vec!["a".to_string()], ..ClaimFilter::default() };
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

/// A call held back by running concurrency says why (the holder of its scope and the policy),
/// and the claim that first holds it back records `concurrency_controlled` in its history,
/// once, whatever the number of later claims; it stays runnable and runs when the scope is free.
async fn blocked_calls_say_why_and_are_recorded_once(h: Harness) {
    use crate::model::{Concurrency, Waiting};
    let store = &*h.store;
    let mut def = TaskDef::sample("t");
    def.running_concurrency = Concurrency::Task;
    store.component_put("comp", "digest", b"\0asm", &[def]).await.expect("component_put");
    let mut batch = calls(0..3, "t");
    for c in &mut batch {
        c.run_scope = Some("t:scope".into());
    }
    store.invocation_insert_batch(&batch).await.expect("insert");
    assert_eq!(store.invocation_waiting(&id(1)).await.expect("waiting"), None, "nothing holds the scope yet");
    let cc = || h.count_raw("SELECT COUNT(*) FROM invocation_history WHERE status = 'concurrency_controlled'");
    // n1 takes 0; 1 and 2 are held back behind it, recorded by that claim.
    let claimed = store.invocation_claim("n1", 10).await.expect("claim");
    assert_eq!(ids_of_claimed(&claimed), vec![id(0)]);
    let waiting = store.invocation_waiting(&id(1)).await.expect("waiting").expect("held back");
    assert_eq!(
        (waiting.reason.as_str(), waiting.policy, waiting.held_by.as_str()),
        ("running_concurrency", Concurrency::Task, id(0).as_str())
    );
    assert!(waiting.since.is_some(), "{waiting:?}");
    assert_eq!(statuses(store, &id(1)).await, vec![Registered, ConcurrencyControlled]);
    assert_eq!(get(store, &id(1)).await.status, Registered, "it stays runnable");
    assert_eq!(store.invocation_waiting(&id(0)).await.expect("waiting"), None, "the holder does not wait");
    // Later claims find nothing and record nothing again.
    for _ in 0..3 {
        assert!(store.invocation_claim("n2", 10).await.expect("claim").is_empty());
    }
    assert_eq!(cc().await, 2);
    // 0 ends: 1 runs next; 2 waits behind 1, recorded once all the same.
    let mut done = tr(&id(0), Pending, Some(("n1", 1)), &[Running, Success]);
    done.result = Some("1".into());
    assert_eq!(store.invocation_transition_batch(&[done]).await.expect("done"), vec![Applied]);
    assert_eq!(ids_of_claimed(&store.invocation_claim("n1", 10).await.expect("claim")), vec![id(1)]);
    assert_eq!(statuses(store, &id(1)).await, vec![Registered, ConcurrencyControlled, Pending]);
    let waiting: Option<Waiting> = store.invocation_waiting(&id(2)).await.expect("waiting");
    assert_eq!(waiting.map(|w| w.held_by), Some(id(1)));
    assert_eq!(cc().await, 2);
    assert_eq!(store.invocation_waiting(&id(1)).await.expect("waiting"), None, "a claimed call does not wait");
}

fn ids_of_claimed(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.id.clone()).collect()
}

/// Debounce (`Store::invocation_debounce`): a `registered` invocation of the debounce scope
/// takes the later call's arguments and start, in one statement for many; one claimed
/// meanwhile, or under another scope, is left alone and missing from the answer.
async fn a_waiting_debounced_call_takes_the_last_arguments(h: Harness) {
    use crate::store::Debounce;
    let store = &*h.store;
    setup(store, &["t"]).await;
    let scoped =
        |n: usize| NewInvocation { scope: Some(format!("debounce:{n}")), delay_ms: Some(60_000), ..call(n, "t") };
    store.invocation_insert_batch(&[scoped(0), scoped(1), scoped(2)]).await.expect("insert");
    // 2 is claimed (its not_before passed: made claimable by hand).
    h.exec_raw_owned(format!("UPDATE invocations SET available_at = 0 WHERE id = '{}'", id(2))).await;
    assert_eq!(store.invocation_claim("n1", 10).await.expect("claim").len(), 1);
    let later = |n: usize, scope: &str, delay_ms: u64| Debounce {
        id: id(n),
        scope: scope.into(),
        args: format!(r#"{{"n":{n},"later":true}}"#),
        call_id: format!("call-{n}-later"),
        run_scope: Some(format!("run-{n}")),
        delay_ms,
    };
    let before = get(store, &id(0)).await;
    let mut changed = store
        .invocation_debounce(&[
            later(1, "debounce:1", 5_000),
            later(0, "debounce:0", 120_000),
            later(2, "debounce:2", 1),
        ])
        .await
        .expect("debounce");
    changed.sort();
    assert_eq!(changed, vec![id(0), id(1)], "the claimed one is not changed");
    assert!(store.invocation_debounce(&[later(1, "debounce:x", 1)]).await.expect("other scope").is_empty());
    let zero = get(store, &id(0)).await;
    assert_eq!(
        (zero.args.clone(), zero.call_id.as_str(), zero.status),
        (serde_json::json!({"n": 0, "later": true}), "call-0-later", Registered)
    );
    let (b, z) = (before.not_before.expect("delayed"), zero.not_before.expect("still delayed"));
    assert!(z >= b + 59_000, "the start moved on: {b} -> {z}");
    let one = get(store, &id(1)).await;
    assert!(one.not_before.expect("delayed") < z, "each its own delay");
    assert_eq!(get(store, &id(2)).await.args, serde_json::json!({"n": 2}));
    assert!(store.invocation_debounce(&[]).await.expect("nothing").is_empty());
}

/// Priorities (issue 17): a claim takes higher priorities first and the oldest first within
/// one, the invocations keep theirs, and a call claimable for longer than the aging time ranks
/// as 9 (an aging of -1 ms ages every call at once: plain oldest-first).
async fn claims_take_higher_priorities_first_and_aged_calls_as_the_highest(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await;
    let with = |n: usize, priority: u8| NewInvocation { priority, ..call(n, "t") };
    let batch = [with(0, 1), with(1, 1), with(2, 9), with(3, 5), with(4, 9), with(5, 0)];
    let stored = store.invocation_insert_batch(&batch).await.expect("insert");
    assert_eq!(stored.iter().map(|i| i.priority).collect::<Vec<_>>(), vec![1, 1, 9, 5, 9, 0]);
    let mut order = Vec::new();
    for _ in 0..3 {
        let c = store.invocation_claim_reporting("n1", 2, 60_000, &ClaimFilter::default()).await.expect("claim");
        order.extend(c.iter().map(|c| (c.id.clone(), c.priority)));
    }
    let want = [(2, 9), (4, 9), (3, 5), (0, 1), (1, 1), (5, 0)].map(|(n, p)| (id(n), p));
    assert_eq!(order, want.to_vec(), "by priority, then oldest first");

    store.invocation_insert_batch(&[with(6, 0), with(7, 9), with(8, 3)]).await.expect("insert");
    let aged = ClaimFilter { aging_ms: Some(-1), ..ClaimFilter::default() };
    let mut order = Vec::new();
    for _ in 0..3 {
        let c = store.invocation_claim_reporting("n1", 1, 60_000, &aged).await.expect("claim");
        order.extend(c.into_iter().map(|c| c.id));
    }
    assert_eq!(order, vec![id(6), id(7), id(8)], "aged: oldest first");
}
