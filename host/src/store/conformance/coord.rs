//! Conformance of coordination: membership, the atomic services' gate, trigger evaluation,
//! concurrency drops under the fence, the leader lease and the token ring.

use super::*;

conformance!(
    nodes_register_heartbeat_and_leave,
    the_service_gate_admits_one_execution,
    trigger_evaluation_is_saved_in_one_go,
    the_first_trigger_starts_the_cursors_at_the_heads,
    usage_counts_bytes_and_transactions,
    drops_follow_the_policy_in_force,
    the_ring_swaps_only_under_the_current_lease,
    a_tick_is_one_look_at_everything_a_node_keeps,
);

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

/// A trigger `id` that calls `hello` with the payload of each `deploy` event.
fn on_deploy(id: &str) -> Trigger {
    Trigger {
        id: id.into(),
        task: "hello".into(),
        args: None,
        args_from: ArgsFrom::Event,
        on: TriggerCondition::Event("deploy".into()),
        state: serde_json::json!({}),
        created_at: 0,
    }
}

async fn trigger_evaluation_is_saved_in_one_go(h: Harness) {
    let store = &*h.store;
    let t = store.trigger_insert(&on_deploy("t1")).await.expect("insert");
    assert!(t.created_at > 0, "the database sets the creation time");
    // The first trigger starts the cursors at the heads (nothing was written yet).
    let cursors = store.trigger_cursors().await.expect("cursors");
    assert_eq!((cursors.get("history"), cursors.get("events")), (Some(&0), Some(&0)));
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

/// The evaluation reads nothing while no trigger exists, so its cursors stand still; the first
/// trigger made starts them at the heads (it answers to what happens after it is made), and a
/// later one leaves them where the evaluation has them.
async fn the_first_trigger_starts_the_cursors_at_the_heads(h: Harness) {
    let store = &*h.store;
    setup(store, &["hello"]).await;
    store.invocation_insert_batch(&[call(1, "hello"), call(2, "hello")]).await.expect("insert");
    store.event_insert("deploy", &serde_json::json!({})).await.expect("event");
    let last_event = store.event_insert("deploy", &serde_json::json!({})).await.expect("event").seq;
    let head = store.history_head().await.expect("head");
    assert!(head > 0);
    store.trigger_insert(&on_deploy("first")).await.expect("first");
    let cursors = store.trigger_cursors().await.expect("cursors");
    assert_eq!((cursors.get("history"), cursors.get("events")), (Some(&head), Some(&last_event)));
    // A second trigger does not move them (the evaluation reads from where it is).
    let leader = lead(store, "n1").await;
    store.trigger_evaluation_save(&leader, &[], &[], &[("history", 1), ("events", 1)]).await.expect("save");
    store.invocation_insert_batch(&[call(3, "hello")]).await.expect("insert");
    store.trigger_insert(&on_deploy("second")).await.expect("second");
    let cursors = store.trigger_cursors().await.expect("cursors");
    assert_eq!((cursors.get("history"), cursors.get("events")), (Some(&1), Some(&1)));
}

/// The usage `warden bench` reports: the database grows with what is stored; PostgreSQL also
/// counts the transactions (SQLite keeps no such count).
async fn usage_counts_bytes_and_transactions(h: Harness) {
    let store = &*h.store;
    setup(store, &["hello"]).await;
    let before = store.usage().await.expect("usage");
    assert!(before.bytes > 0, "{before:?}");
    let calls: Vec<_> = (0..2_000).map(|n| call(n, "hello")).collect();
    store.invocation_insert_batch(&calls).await.expect("insert");
    let after = store.usage().await.expect("usage");
    assert!(after.bytes > before.bytes, "2,000 calls stored, yet {before:?} -> {after:?}");
    match store.dialect() {
        "postgres" => assert!(after.transactions.is_some_and(|t| t > 0), "{after:?}"),
        _ => assert_eq!(after.transactions, None),
    }
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
    assert_eq!(statuses(store, &id(1)).await, vec![Registered, ConcurrencyControlled, ConcurrencyControlledFinal]);
    assert_eq!(get(store, &id(0)).await.status, Pending, "the holder is untouched");
}

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
    let loads: Vec<(String, i64)> =
        store.token_loads().await.expect("loads").into_iter().map(|l| (l.node, l.tokens)).collect();
    assert_eq!(loads, vec![("n1".to_string(), 4), ("n2".to_string(), 4)]);
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
    let n1 = ClaimFilter { pinned_here: vec!["pinned".into()], ..ClaimFilter::default() };
    let got = mine(store.invocation_claim_reporting("n1", 10, 1_000, &n1).await.expect("claim"));
    assert_eq!(got, vec![id(1), id(3), id(10), id(11)]);
    let got = mine(store.invocation_claim("n2", 10).await.expect("claim"));
    assert_eq!(got, vec![id(0), id(2)]);
}

/// One membership tick: the heartbeat (none for a node that left, and then no renewal), the
/// renewal of the term the node held, the node list, the versions that say when to read the
/// ring, the tasks or the keys again (every write to the tasks and the keys bumps its own),
/// and the probes that say whether the atomic services have anything to do.
async fn a_tick_is_one_look_at_everything_a_node_keeps(h: Harness) {
    use crate::model::{Due, TaskPatch, TickAsk, key::Role};
    let store = &*h.store;
    let ask = |node, renew| TickAsk { node, renew, max_pending_ms: 60_000 };
    store.node_register("n1", &[], 1).await.expect("register");
    let first = store.node_tick(&ask("n1", None)).await.expect("tick");
    assert!(first.beat.is_some_and(|b| b > 0) && first.now >= first.beat.unwrap_or(0), "{first:?}");
    assert_eq!(first.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["n1"]);
    assert_eq!((first.lease, first.ring_version, first.total_tokens, first.due), (None, 0, 0, Due::default()));
    let unchanged = store.node_tick(&ask("n1", None)).await.expect("tick");
    assert_eq!((unchanged.tasks_version, unchanged.keys_version), (first.tasks_version, first.keys_version));

    // Every write to the tasks moves their version, and only theirs.
    let mut tasks = first.tasks_version;
    let mut moved = async |what: &str| {
        let v = store.node_tick(&ask("n1", None)).await.expect("tick");
        assert!(v.tasks_version > tasks, "{what} moves the tasks' version");
        assert_eq!(v.keys_version, first.keys_version, "{what} leaves the keys' version");
        tasks = v.tasks_version;
    };
    setup(store, &["t"]).await;
    moved("a deploy").await;
    let patch = TaskPatch { max_attempts: Some(5), ..TaskPatch::default() };
    store.task_update("t", &patch).await.expect("patch").expect("the task");
    moved("a patch").await;
    assert!(store.component_delete("comp").await.expect("delete"));
    moved("a removal").await;
    // And of the keys.
    store.key_insert("ci", Role::Read, "digest").await.expect("key");
    let v = store.node_tick(&ask("n1", None)).await.expect("tick");
    assert!(v.keys_version > first.keys_version && v.tasks_version == tasks, "{v:?}");
    assert!(store.key_delete("ci").await.expect("delete key"));
    let w = store.node_tick(&ask("n1", None)).await.expect("tick");
    assert!(w.keys_version > v.keys_version, "{w:?}");

    // The term held is renewed in the tick; a node that left heartbeats and renews nothing.
    let epoch = store.lease_claim("n1", 60_000, None).await.expect("lease").expect("free");
    h.exec_raw("UPDATE cluster_lease SET expires_at = expires_at - 50000").await;
    let before = store.lease_get().await.expect("lease").expires_at;
    let renewed = store.node_tick(&ask("n1", Some((epoch, 60_000)))).await.expect("tick");
    assert_eq!(renewed.lease, Some(epoch));
    assert!(store.lease_get().await.expect("lease").expires_at > before, "renewed");
    store.node_leave("n1").await.expect("leave");
    let gone = store.node_tick(&ask("n1", Some((epoch, 60_000)))).await.expect("tick");
    assert_eq!((gone.beat, gone.lease), (None, None));

    // The probes: a trigger; an invocation pending past max_pending; a live instance overdue.
    store.trigger_insert(&on_deploy("t1")).await.expect("trigger");
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&[call(0, "t")]).await.expect("insert");
    store.invocation_claim_reporting("n2", 1, 60_000, &ClaimFilter::default()).await.expect("claim");
    // Probed for a node that leads (asks to renew its term) only.
    let due = |v: &crate::model::TickView| v.due;
    let leading = Some((epoch, 60_000));
    assert_eq!(due(&store.node_tick(&ask("n2", None)).await.expect("tick")), Due::default(), "not probed");
    let fresh = store.node_tick(&ask("n2", leading)).await.expect("tick");
    assert_eq!(due(&fresh), Due { overdue_instances: false, stale_pending: false, triggers: true });
    let stale = store.node_tick(&TickAsk { node: "n2", renew: leading, max_pending_ms: -60_000 }).await.expect("tick");
    assert!(stale.due.stale_pending, "{stale:?}");
    h.exec_raw("UPDATE task_instances SET report_by = 1 WHERE report_by IS NOT NULL").await;
    assert!(store.node_tick(&ask("n2", leading)).await.expect("tick").due.overdue_instances);
}
