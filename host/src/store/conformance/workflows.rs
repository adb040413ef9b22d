//! Conformance of workflows: creation, the step and its sync, the plan.

use super::*;

conformance!(
    workflow_create_step_and_sync,
    workflow_plan_reads_only_what_may_start,
    a_step_gives_the_writer_up_to_a_waiting_routing,
);

fn node_start(node: &str, n: usize, task: &str, wf: &str) -> crate::store::NodeStart {
    let mut c = call(n, task);
    c.workflow = Some(wf.to_owned());
    c.max_attempts = Some(2);
    crate::store::NodeStart { node: node.to_owned(), task: task.to_owned(), invocation: Some(c) }
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

/// A step of workflow `id`, checked: the nodes per status the workflow row keeps are the
/// nodes' own, and its status is the one the rule `workflows::status_of` gives for them.
async fn step(store: &dyn Store, id: &str, starts: &[crate::store::NodeStart]) -> crate::store::StepOutcome {
    let out = store.workflow_step(id, starts).await.expect("step");
    check_counts(store, id).await;
    out
}

/// The workflow row's nodes per status are what its nodes say, and its status follows them.
async fn check_counts(store: &dyn Store, id: &str) {
    let wf = store.workflow_get(id).await.expect("get").expect("workflow");
    let mut truth: std::collections::BTreeMap<_, i64> = std::collections::BTreeMap::new();
    for n in store.workflow_nodes(id).await.expect("nodes") {
        *truth.entry(n.status).or_default() += 1;
    }
    let kept: std::collections::BTreeMap<_, _> = store.workflow_counts(id).await.expect("counts").into_iter().collect();
    assert_eq!(kept, truth, "the counts the workflow row keeps");
    if wf.status != crate::model::workflow::WorkflowStatus::Cancelled {
        let counts = kept.into_iter().collect();
        assert_eq!(wf.status, crate::model::workflow::status_of(&counts, wf.paused, wf.fail_fast), "{counts:?}");
    }
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
    assert!(server_time <= store.now().await.expect("now") - crate::store::SYNC_MARGIN_MS);

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
    // Control changes keep the counts too: a pause, a cold resume (the two running nodes go
    // back to ready and their invocations are handed back for cancelling), a cancel.
    store.workflow_pause("wf-2").await.expect("pause");
    check_counts(store, "wf-2").await;
    let (_, restarted) = store.workflow_resume("wf-2", true).await.expect("resume");
    assert_eq!(restarted.len(), 2, "{restarted:?}");
    check_counts(store, "wf-2").await;
    assert_eq!(store.workflow_counts("wf-2").await.expect("counts"), vec![(N::Ready, 5)]);
    let (wf, _) = store.workflow_cancel("wf-2").await.expect("cancel");
    assert_eq!(wf.status, W::Cancelled);
    check_counts(store, "wf-2").await;
    assert_eq!(store.workflow_counts("wf-2").await.expect("counts"), vec![(N::Cancelled, 5)]);

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
    let unbuilt = crate::store::NodeStart { node: "x".into(), task: "t".into(), invocation: None };
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
        let starts: Vec<crate::store::NodeStart> = expected
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

/// On SQLite a step gives the one writer up to a routing that waits for it: it rolls back
/// (nothing of it is stored) and goes again, at most `STEP_YIELDS` times in a row, so that
/// routings arriving without pause cannot starve a workflow. (PostgreSQL's writers do not
/// queue behind one another: there the step just runs.)
async fn a_step_gives_the_writer_up_to_a_waiting_routing(h: Harness) {
    use crate::model::workflow::{NodeStatus as N, WorkflowKind, WorkflowRequest};
    let store = &*h.store;
    setup(store, &["t"]).await;
    let req: WorkflowRequest = serde_json::from_value(serde_json::json!({
        "nodes": [{"id": "a", "task": "t"}, {"id": "b", "task": "t"}]
    }))
    .expect("request");
    let new = crate::model::workflow::validate(&req, "wf-y".into(), WorkflowKind::Workflow, 10).expect("valid");
    store.workflow_create(&new).await.expect("create");
    let starts = [node_start("a", 0, "t", "wf-y"), node_start("b", 1, "t", "wf-y")];
    let sql = h.sql_store_arc();
    if let Some(writer) = sql.sqlite_writer() {
        // One try, with a routing waiting: it yields, and the routing gets the writer next.
        let mut routing = writer.urgent_stand_in();
        assert!(matches!(sql.step_once("wf-y", &starts, true).await, Err(StoreError::Yielded)));
        assert!(routing.try_recv().is_ok(), "the waiting routing got the writer");
        writer.release_for_test();
        assert_eq!(node_statuses(store, "wf-y").await, [("a".into(), N::Ready), ("b".into(), N::Ready)]);
        assert!(store.invocation_get(&id(0)).await.expect("get").is_none(), "the yielded try left nothing");

        // Routings that keep waiting: the step yields to three of them, then goes through. A
        // stand-in that gets the writer before the step committed sees no invocation yet (it
        // looks while it holds the writer, so the step cannot commit meanwhile).
        let before = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut stand_ins = Vec::new();
        for _ in 0..6 {
            let rx = writer.urgent_stand_in();
            let (sql, before) = (sql.clone(), before.clone());
            stand_ins.push(tokio::spawn(async move {
                let Some(w) = sql.sqlite_writer() else { return };
                if rx.await.is_ok() {
                    if sql.invocation_get(&id(0)).await.expect("get").is_none() {
                        before.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // The step that yielded goes again: let it queue before giving the
                        // writer back, as a routing that takes longer would.
                        while !w.background_waiting() {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                    }
                    w.release_for_test();
                }
            }));
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(10), store.workflow_step("wf-y", &starts))
            .await
            .expect("the step is not starved")
            .expect("step");
        assert_eq!(out.started, vec![id(0), id(1)]);
        // The stand-ins still queued get the writer after the step.
        for t in stand_ins {
            tokio::time::timeout(std::time::Duration::from_secs(10), t).await.expect("stand-in").expect("join");
        }
        assert_eq!(before.load(std::sync::atomic::Ordering::SeqCst), 3, "it yielded three times, then went through");
    } else {
        let out = step(store, "wf-y", &starts).await;
        assert_eq!(out.started, vec![id(0), id(1)]);
    }
    check_counts(store, "wf-y").await;
}
