//! Conformance of transitions: compare-and-swap, passes, recovery, history only for what
//! applied, failed writes that leave nothing behind, instance records, ambiguous retries.

use super::*;

conformance!(
    transitions_are_compare_and_swap,
    duplicate_ids_in_one_batch_apply_in_order,
    recover_node,
    rejected_changes_write_no_history,
    failed_writes_leave_nothing_behind,
    one_attempt_moved_twice_in_one_batch_keeps_its_last_instance,
    lost_attempts_end_their_instances_when_rerouted,
    lost_attempts_count_toward_max_attempts,
    claims_handed_back_unstarted_do_not_count,
    a_retried_write_that_was_stored_counts_as_applied,
    an_attempts_writes_lost_to_a_crash_are_written_again,
);

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
    // The writer commits durably again after every write, failed or relaxed (2 = FULL on
    // SQLite, `synchronous_commit` on for every pooled connection on PostgreSQL).
    let durable_writer = 2;

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
    assert_eq!(instance(store, &id(1)).await.status.as_str(), "done");
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

/// Every recovery counts the attempt it takes back: a restart, the retirement of a dead node,
/// `max_pending` and triage reroute an invocation while it has attempts left, and fail it
/// (error kind `lost`, saying how many were lost) when the lost attempt was its last, in the
/// same transaction; each lost attempt's instance says so.
async fn lost_attempts_count_toward_max_attempts(h: Harness) {
    use crate::model::instance::triage;
    let store = &*h.store;
    setup(store, &["t"]).await; // max_attempts 3
    let mut one = call(1, "t");
    one.max_attempts = Some(1);
    let mut two = call(2, "t");
    two.max_attempts = Some(1);
    store.invocation_insert_batch(&[call(0, "t"), one, two]).await.expect("insert");
    let f = ClaimFilter::default();
    let leader = lead(store, "n9").await;
    let lost_kinds = |id: String| async move {
        let all = store.instance_list(&id).await.expect("instances");
        all.iter().map(|i| i.error.as_ref().map(|e| e.kind)).collect::<Vec<_>>()
    };

    // Attempt 1 of each is claimed by n1, which restarts: 0 has attempts left, 1 does not.
    assert_eq!(store.invocation_claim_reporting("n1", 2, 60_000, &f).await.expect("claim").len(), 2);
    assert_eq!(store.invocation_recover_node("n1").await.expect("recover"), 2);
    assert_eq!(get(store, &id(0)).await.status, Rerouted);
    let failed = get(store, &id(1)).await;
    assert_eq!((failed.status, failed.owner.as_deref(), failed.attempts), (Failed, None, 1));
    let error = failed.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Lost);
    assert!(error.message.starts_with("1 attempt lost") && error.message.contains("`n1` restarted"), "{error:?}");
    let tail = |s: Vec<InvocationStatus>| s[s.len() - 2..].to_vec();
    assert_eq!(tail(statuses(store, &id(1)).await), vec![PendingRecovery, Failed]);
    let i = instance(store, &id(1)).await;
    assert_eq!((i.status.as_str(), i.error.as_ref().map(|e| e.kind)), ("error", Some(ErrorKind::Lost)));
    assert!(i.error.as_ref().is_some_and(|e| e.message.contains("the invocation failed")), "{i:?}");

    // Attempt 2 of 0 runs on n2, which dies and is retired: rerouted.
    let c = store.invocation_claim_reporting("n2", 1, 60_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| (c.id.clone(), c.attempt)).collect::<Vec<_>>(), vec![(id(0), 2)]);
    let mut running = tr(&id(0), Pending, Some(("n2", 2)), &[Running]);
    running.instance = Some(Box::new(instance_of(&id(0), 2, "n2", "running", Some(60_000))));
    assert_eq!(store.invocation_transition_batch(&[running]).await.expect("running"), vec![Applied]);
    store.node_register("n2", &[], 1).await.expect("register");
    assert_eq!(store.node_retire("n2", &leader).await.expect("retire"), 1);
    assert_eq!(get(store, &id(0)).await.status, Rerouted);
    // Attempt 3 is claimed by n3 and never started: `max_pending` takes it back, and that
    // claim does not count (n3 is alive; it had not started it). Claimed again, it is lost
    // with n3's restart: then its last counted attempt is lost, and it fails.
    let c = store.invocation_claim_reporting("n3", 1, 60_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| (c.id.clone(), c.attempt)).collect::<Vec<_>>(), vec![(id(0), 3)]);
    assert_eq!(store.invocation_recover_pending(&leader, -60_000, 10).await.expect("max_pending"), 1);
    assert_eq!(get(store, &id(0)).await.status, Rerouted, "an unstarted claim is not a lost attempt");
    let c = store.invocation_claim_reporting("n3", 1, 60_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| (c.attempt, c.unstarted, c.started())).collect::<Vec<_>>(), vec![(4, 1, 3)]);
    assert_eq!(store.invocation_recover_node("n3").await.expect("recover"), 1);
    let failed = get(store, &id(0)).await;
    assert_eq!((failed.status, failed.attempts), (Failed, 4));
    let error = failed.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Lost);
    assert!(
        error.message.starts_with("4 attempts lost")
            && error.message.contains("max_attempts 3; 1 claim handed back before it started does not count")
            && error.message.contains("`n3` restarted"),
        "{error:?}"
    );
    assert_eq!(lost_kinds(id(0)).await, vec![Some(ErrorKind::Lost); 4], "each attempt has its instance");
    let i = store.instance_list(&id(0)).await.expect("instances");
    assert_eq!(i.iter().map(|i| i.status.as_str()).collect::<Vec<_>>(), ["error", "unknown_error", "error", "error"]);
    assert!(i[2].error.as_ref().is_some_and(|e| e.message.contains("max_pending")), "{:?}", i[2]);

    // Triage: 2 (max_attempts 1) runs on n4, which stops reporting: given up, failed.
    let c = store.invocation_claim_reporting("n4", 1, 5_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![id(2)]);
    let mut running = tr(&id(2), Pending, Some(("n4", 1)), &[Running]);
    running.instance = Some(Box::new(instance_of(&id(2), 1, "n4", "running", Some(5_000))));
    assert_eq!(store.invocation_transition_batch(&[running]).await.expect("running"), vec![Applied]);
    let mut now = store.now().await.expect("now") + 120_000;
    let mut failed_by_triage = Vec::new();
    for _ in 0..2 {
        let decisions = triage(&store.instance_overdue(now, 100).await.expect("overdue"), now, 5_000);
        failed_by_triage.extend(store.instance_triage_apply(&decisions, &leader).await.expect("triage").1);
        now += 120_000;
    }
    assert_eq!(failed_by_triage, vec![id(2)]);
    let failed = get(store, &id(2)).await;
    assert_eq!(failed.status, Failed);
    assert_eq!(failed.error.as_ref().map(|e| e.kind), Some(ErrorKind::Lost), "{failed:?}");
    assert_eq!(tail(statuses(store, &id(2)).await), vec![RunningRecovery, Failed]);
    let i = instance(store, &id(2)).await;
    assert_eq!((i.status.as_str(), i.error.map(|e| e.kind)), ("unknown_error", Some(ErrorKind::Lost)));
    // Nothing failed is claimed again.
    assert!(store.invocation_claim_reporting("n5", 10, 60_000, &f).await.expect("claim").is_empty());
}

/// A claim known not to have started does not use up an attempt: the leader's `max_pending`
/// recovery of a live node's claim, and a node's hand-back of its queue at shutdown. A call
/// that waits in a busy node's queue past `max_pending` again and again is rerouted each time,
/// never failed as lost (CI once failed a 700 ms call, `max_attempts` 3, that had waited three
/// times behind others on one slot and never run), and its later attempts keep the whole
/// budget.
async fn claims_handed_back_unstarted_do_not_count(h: Harness) {
    let store = &*h.store;
    setup(store, &["t"]).await; // max_attempts 3
    store.invocation_insert_batch(&[call(0, "t")]).await.expect("insert");
    let f = ClaimFilter::default();
    let leader = lead(store, "n9").await;
    for attempt in 1..=4 {
        let c = store.invocation_claim_reporting("n1", 1, 60_000, &f).await.expect("claim");
        assert_eq!(
            c.iter().map(|c| (c.attempt, c.unstarted, c.started())).collect::<Vec<_>>(),
            vec![(attempt, attempt - 1, 1)]
        );
        assert_eq!(store.invocation_recover_pending(&leader, -60_000, 10).await.expect("max_pending"), 1);
        let inv = get(store, &id(0)).await;
        assert_eq!((inv.status, inv.error), (Rerouted, None), "attempt {attempt}");
    }
    // The node's own hand-back (shutdown) counts the same way.
    let c = store.invocation_claim_reporting("n1", 1, 60_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| (c.attempt, c.unstarted)).collect::<Vec<_>>(), vec![(5, 4)]);
    let mut back = tr(&id(0), Pending, Some(("n1", 5)), &[PendingRecovery, Rerouted]);
    back.unstarted = true;
    assert_eq!(store.invocation_transition_batch(&[back]).await.expect("hand back"), vec![Applied]);
    // A handed-back transition that does not apply counts nothing.
    let mut stale = tr(&id(0), Pending, Some(("n1", 5)), &[PendingRecovery, Rerouted]);
    stale.unstarted = true;
    assert_eq!(store.invocation_transition_batch(&[stale]).await.expect("stale"), vec![LostRace]);
    let c = store.invocation_claim_reporting("n1", 1, 60_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| (c.attempt, c.unstarted, c.started())).collect::<Vec<_>>(), vec![(6, 5, 1)]);
    // A claim lost with its node counts: the node may have died running it.
    assert_eq!(store.invocation_recover_node("n1").await.expect("restart"), 1);
    let c = store.invocation_claim_reporting("n1", 1, 60_000, &f).await.expect("claim");
    assert_eq!(c.iter().map(|c| (c.attempt, c.unstarted, c.started())).collect::<Vec<_>>(), vec![(7, 5, 2)]);
}

/// A database crash loses a suffix of relaxed commits (an attempt's `running`, `paused`,
/// `resumed`): the invocation is then behind where its attempt left it, yet still the
/// attempt's. The attempt's next write is not refused as if it had been taken away: it is
/// written again from where the invocation is, the lost steps back in the history, and its
/// instance records the outcome (not a late one). An invocation another owner holds stays
/// refused. (A lost `running` once left a call `pending` with a "late outcome" instance
/// until `--max-pending-ms` passed: the chaos test that restarts PostgreSQL found it.)
async fn an_attempts_writes_lost_to_a_crash_are_written_again(h: Harness) {
    use crate::model::{TaskInstance, instance::InstanceStatus};
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..3, "t")).await.expect("insert");
    store.invocation_claim_reporting("n1", 3, 60_000, &ClaimFilter::default()).await.expect("claim");
    let o = Some(("n1", 1));
    // What a crash does to a relaxed commit: the row and the history as before it.
    let lose = |id: String, back_to: &str, lost: &str| {
        format!(
            "UPDATE invocations SET status = '{back_to}' WHERE id = '{id}'; \
             DELETE FROM invocation_history WHERE invocation_id = '{id}' AND status = '{lost}'"
        )
    };

    // 0: its `running` is lost; the outcome, written from `running`, lands.
    let run = |n: usize| tr(&id(n), Pending, o, &[Running]);
    for n in 0..3 {
        assert_eq!(store.invocation_transition_batch(&[run(n)]).await.expect("running"), vec![Applied]);
    }
    h.exec_raw_owned(lose(id(0), "pending", "running")).await;
    let mut done = tr(&id(0), Running, o, &[Success]);
    done.result = Some("7".into());
    done.instance = Some(Box::new(TaskInstance::ended(&id(0), 1, "n1", InstanceStatus::Done, None)));
    assert_eq!(store.invocation_transition_batch(&[done]).await.expect("success"), vec![Applied]);
    let inv = get(store, &id(0)).await;
    assert_eq!((inv.status, inv.owner.as_deref(), inv.result), (Success, None, Some(serde_json::json!(7))));
    assert_eq!(statuses(store, &id(0)).await, vec![Registered, Pending, Running, Success], "the lost step is back");
    let i = instance(store, &id(0)).await;
    assert_eq!((i.status, i.error), (InstanceStatus::Done, None), "its outcome, not a late one");

    // 1: its `paused` is lost; the resume, written from `paused`, lands.
    assert_eq!(
        store.invocation_transition_batch(&[tr(&id(1), Running, o, &[Paused])]).await.expect("p"),
        vec![Applied]
    );
    h.exec_raw_owned(lose(id(1), "running", "paused")).await;
    let resume = tr(&id(1), Paused, o, &[Resumed, Running]);
    assert_eq!(store.invocation_transition_batch(&[resume]).await.expect("resume"), vec![Applied]);
    assert_eq!(
        statuses(store, &id(1)).await,
        vec![Registered, Pending, Running, Paused, Resumed, Running],
        "written again from `running`"
    );

    // 2: taken away meanwhile (another owner holds it, behind too): still refused.
    h.exec_raw_owned(format!("UPDATE invocations SET status = 'pending', owner_node = 'n2' WHERE id = '{}'", id(2)))
        .await;
    let mut theirs = tr(&id(2), Running, o, &[Success]);
    theirs.result = Some("8".into());
    assert_eq!(store.invocation_transition_batch(&[theirs]).await.expect("refused"), vec![LostRace]);
    let inv = get(store, &id(2)).await;
    assert_eq!((inv.status, inv.owner.as_deref()), (Pending, Some("n2")));
}
