//! Conformance of task instances: live rows, heartbeats (one statement whatever their
//! number), signals, triage with an injected clock, late outcomes.

use super::*;
use crate::model::instance::HeldAttempt;

conformance!(
    instances_are_live_rows_with_heartbeats_and_triage,
    one_heartbeat_statement_whatever_the_number_of_instances,
    every_instance_write_is_a_compare_and_swap_on_the_table,
    a_kill_is_requested_then_the_attempt_ends,
    a_silent_nodes_last_report_decides_the_triage,
);

/// Ids `0..n`, claimed by `n1` (attempt 1), go `pending → running` with their instance, in
/// one write.
async fn start_running(store: &dyn Store, n: usize) {
    let running: Vec<Transition> = (0..n)
        .map(|n| {
            let mut t = tr(&id(n), Pending, Some(("n1", 1)), &[Running]);
            t.instance = Some(Box::new(instance_of(&id(n), 1, "n1", "running", Some(5_000))));
            t
        })
        .collect();
    assert_eq!(store.invocation_transition_batch(&running).await.expect("running"), vec![Applied; n]);
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
    start_running(store, 4).await;
    assert_eq!(instance(store, &id(0)).await.status.as_str(), "running");

    // The heartbeat of n1 for what it holds (not id 5): report_by moves, one answer per row.
    let held: Vec<HeldAttempt> = (0..5).map(|n| HeldAttempt::new(id(n), 1)).collect();
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
    assert_eq!(instance(store, &id(0)).await.status.as_str(), "running", "a fenced triage writes nothing");
    let (changed, rerouted) = store.instance_triage_apply(&decisions, &leader).await.expect("triage");
    assert_eq!(changed, 6);
    // Never launched (4, 5: queued) → no_heartbeat, and their invocations are taken back.
    assert_eq!(rerouted.len(), 2, "{rerouted:?}");
    assert_eq!(instance(store, &id(4)).await.status.as_str(), "no_heartbeat");
    assert_eq!(get(store, &id(4)).await.status, Rerouted);
    assert_eq!(instance(store, &id(0)).await.status.as_str(), "triaging");
    assert_eq!(get(store, &id(0)).await.status, Running, "triaging does not touch the invocation");
    // 1 was cancelled (a kill requested, `kill_self`) and its node went silent: given up.
    assert_eq!(instance(store, &id(1)).await.status.as_str(), "unknown_error");
    assert_eq!(get(store, &id(1)).await.status, Cancelled, "as the user left it");
    // Applying the same decisions again changes nothing (compare-and-swap on status + deadline).
    assert_eq!(store.instance_triage_apply(&decisions, &leader).await.expect("again").0, 0);

    // A heartbeat in time brings triaging back to running; no_heartbeat is not revived.
    let beat = store.instance_heartbeat("n1", &held, 60_000).await.expect("heartbeat");
    assert_eq!(beat.len(), 3, "ids 0, 2, 3 (1 is given up, 4 is no_heartbeat)");
    assert_eq!(instance(store, &id(0)).await.status.as_str(), "running");

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
    assert_eq!(instance(store, &id(0)).await.status.as_str(), "unknown_error");
    assert_eq!(instance(store, &id(4)).await.status.as_str(), "error", "no_heartbeat → error");
    assert_eq!(instance(store, &id(2)).await.status.as_str(), "done", "a final instance is never triaged");
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
    assert_eq!(instance(store, &id(0)).await.status.as_str(), "unknown_error");
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
    assert_eq!(i.status, InstanceStatus::ErrorFatal);
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
    let held: Vec<HeldAttempt> = claimed.iter().map(|c| HeldAttempt::new(c.id.clone(), c.attempt)).collect();
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

/// Every instance write the store makes with an attempt's transition is a compare-and-swap on
/// the instance table: for every pair of statuses, an instance in the first receives a record
/// of the second; it moves exactly when `InstanceStatus::may_write` allows it, and is left as
/// it was otherwise (an untimely write, ignored), while the invocation's own change applies.
async fn every_instance_write_is_a_compare_and_swap_on_the_table(h: Harness) {
    use crate::model::instance::InstanceStatus;
    let store = &*h.store;
    setup(store, &["t"]).await;
    let all = InstanceStatus::ALL;
    let pairs: Vec<(InstanceStatus, InstanceStatus)> =
        all.iter().flat_map(|from| all.iter().map(move |to| (*from, *to))).collect();
    store.invocation_insert_batch(&calls(0..pairs.len(), "t")).await.expect("insert");
    let f = ClaimFilter::default();
    let claimed = store.invocation_claim_reporting("n1", pairs.len() as u32, 60_000, &f).await.expect("claim");
    assert_eq!(claimed.len(), pairs.len());
    // Put each instance in its `from` status behind the store's back (final ones not live).
    for (from_index, from) in all.iter().enumerate() {
        let ids: Vec<String> = (0..all.len()).map(|k| format!("'{}'", id(from_index * all.len() + k))).collect();
        let report_by = if from.is_final() { "NULL" } else { "report_by" };
        h.exec_raw_owned(format!(
            "UPDATE task_instances SET status = '{from}', report_by = {report_by} WHERE invocation_id IN ({})",
            ids.join(", ")
        ))
        .await;
    }
    let changes: Vec<Transition> = pairs
        .iter()
        .enumerate()
        .map(|(n, (_, to))| {
            let mut t = tr(&id(n), Pending, Some(("n1", 1)), &[Running]);
            let window = (!to.is_final()).then_some(60_000);
            t.instance = Some(Box::new(instance_of(&id(n), 1, "n1", to.as_str(), window)));
            t
        })
        .collect();
    let out = store.invocation_transition_batch(&changes).await.expect("one batch");
    assert_eq!(out, vec![Applied; pairs.len()], "the invocations move whatever their instances do");
    let mut wrong = Vec::new();
    for (n, (from, to)) in pairs.iter().enumerate() {
        let now = instance(store, &id(n)).await.status;
        let want = if from.may_write(*to) { *to } else { *from };
        if now != want {
            wrong.push(format!("{from} → {to}: {now}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The table allows some writes and forbids others: the test saw both.
    assert!(pairs.iter().any(|(a, b)| a.may_write(*b)) && pairs.iter().any(|(a, b)| !a.may_write(*b)));
}

/// A cancel sent through another node requests a kill: the live instance goes `kill_self` in
/// the cancel's transaction, and the attempt's real end follows (`error_fatal`, its outcome
/// discarded as late); a kill requested of a node that then dies ends `unknown_error`.
async fn a_kill_is_requested_then_the_attempt_ends(h: Harness) {
    use crate::model::instance::{InstanceStatus, triage};
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..2, "t")).await.expect("insert");
    let f = ClaimFilter::default();
    assert_eq!(store.invocation_claim_reporting("n1", 2, 5_000, &f).await.expect("claim").len(), 2);
    for n in 0..2 {
        let mut running = tr(&id(n), Pending, Some(("n1", 1)), &[Running]);
        running.instance = Some(Box::new(instance_of(&id(n), 1, "n1", "running", Some(5_000))));
        assert_eq!(store.invocation_transition_batch(&[running]).await.expect("running"), vec![Applied]);
        let mut cancel = tr(&id(n), Running, Some(("n1", 1)), &[Cancelled]);
        cancel.node = "n2".into();
        assert_eq!(store.invocation_transition_signal(&cancel, "cancel").await.expect("cancel").0, Applied);
        assert_eq!(instance(store, &id(n)).await.status, InstanceStatus::KillSelf, "a kill requested");
    }
    // The heartbeat keeps a kill_self instance alive and carries the signal.
    let held: Vec<HeldAttempt> = (0..2).map(|n| HeldAttempt::new(id(n), 1)).collect();
    assert_eq!(store.instance_heartbeat("n1", &held, 5_000).await.expect("heartbeat").len(), 2);
    // 0: the guest is interrupted; its outcome is refused (cancelled) and ends the instance.
    let mut end = tr(&id(0), Running, Some(("n1", 1)), &[Cancelled]);
    end.error = Some(TaskFailure::new(ErrorKind::Cancelled, "interrupted"));
    let mut record = instance_of(&id(0), 1, "n1", "error_fatal", None);
    record.error = end.error.clone();
    end.instance = Some(Box::new(record));
    assert_ne!(store.invocation_transition_batch(&[end]).await.expect("late")[0], Applied);
    let i = instance(store, &id(0)).await;
    assert_eq!((i.status, i.error.map(|e| e.kind)), (InstanceStatus::ErrorFatal, Some(ErrorKind::Cancelled)));
    // 1: its node goes silent: triage ends the kill_self instance `unknown_error`.
    let now = store.now().await.expect("now") + 120_000;
    let decisions = triage(&store.instance_overdue(now, 100).await.expect("overdue"), now, 5_000);
    let leader = lead(store, "n9").await;
    store.instance_triage_apply(&decisions, &leader).await.expect("triage");
    assert_eq!(instance(store, &id(1)).await.status, InstanceStatus::UnknownError);
    assert_eq!(get(store, &id(1)).await.status, Cancelled, "the invocation stays as the user left it");
}

/// What a node reported with its heartbeats decides how triage ends an attempt of a node that
/// went silent (Jobmon's exit-info lookup): its time ran out → `resource_error` (timeout), its
/// memory near the limit → `resource_error` (memory limit), an end it could not record → that
/// end (a fatal one fails the invocation at once), nothing known → `unknown_error` (lost).
async fn a_silent_nodes_last_report_decides_the_triage(h: Harness) {
    use crate::model::instance::{AttemptExit, InstanceStatus, NodeKnowledge, triage};
    let store = &*h.store;
    setup(store, &["t"]).await;
    store.invocation_insert_batch(&calls(0..4, "t")).await.expect("insert");
    let claimed = store.invocation_claim_reporting("n1", 4, 5_000, &ClaimFilter::default()).await.expect("claim");
    assert_eq!(claimed.len(), 4);
    start_running(store, 4).await;
    let t0 = store.now().await.expect("now");
    let known = |peak, limit, left, exit| NodeKnowledge {
        peak_memory_bytes: peak,
        memory_limit_bytes: limit,
        timeout_left_ms: left,
        exit,
    };
    let fatal = AttemptExit {
        status: InstanceStatus::ErrorFatal,
        error: Some(TaskFailure::new(ErrorKind::Fatal, "boom: Traceback (most recent call last)")),
    };
    let held = vec![
        HeldAttempt { known: known(1_000, 64 << 20, Some(30_000), None), ..HeldAttempt::new(id(0), 1) },
        HeldAttempt { known: known(61 << 20, 64 << 20, None, None), ..HeldAttempt::new(id(1), 1) },
        HeldAttempt { known: known(1_000, 64 << 20, None, Some(fatal)), ..HeldAttempt::new(id(2), 1) },
        HeldAttempt { known: known(1_000, 64 << 20, Some(600_000), None), ..HeldAttempt::new(id(3), 1) },
    ];
    assert_eq!(store.instance_heartbeat("n1", &held, 5_000).await.expect("heartbeat").len(), 4);
    // The store kept what the node said, the time left as a deadline on its clock.
    let t1 = store.now().await.expect("now");
    let overdue = store.instance_overdue(t1 + 10_000, 100).await.expect("overdue");
    let last = |n: usize| overdue.iter().find(|o| o.invocation_id == id(n)).expect("overdue").last.clone();
    let at = last(0).timeout_at.expect("a running clock");
    assert!(at >= t0 + 30_000 && at <= t1 + 30_000, "timeout_at {at} is the heartbeat's now + 30000");
    assert_eq!((last(1).peak_memory_bytes, last(1).memory_limit_bytes, last(1).timeout_at), (61 << 20, 64 << 20, None));
    assert_eq!(last(2).exit.map(|e| e.status), Some(InstanceStatus::ErrorFatal));
    // A later beat lowers no peak and clears an exit no longer reported.
    let lower = vec![HeldAttempt { known: known(5, 64 << 20, None, None), ..HeldAttempt::new(id(1), 1) }];
    store.instance_heartbeat("n1", &lower, 5_000).await.expect("heartbeat");
    let o = store.instance_overdue(t1 + 10_000, 100).await.expect("overdue");
    assert_eq!(o.iter().find(|o| o.invocation_id == id(1)).map(|o| o.last.peak_memory_bytes), Some(61 << 20));
    store.instance_heartbeat("n1", &held, 5_000).await.expect("heartbeat");

    // n1 goes silent. A minute on, triage moves them to `triaging`; at 2 minutes (past id 0's
    // time, before id 3's) it decides.
    let leader = lead(store, "leader").await;
    for now in [t1 + 60_000, t1 + 120_000] {
        let decisions = triage(&store.instance_overdue(now, 100).await.expect("overdue"), now, 5_000);
        assert_eq!(decisions.len(), 4, "{decisions:?}");
        store.instance_triage_apply(&decisions, &leader).await.expect("triage");
    }
    let ended = |n: usize| async move {
        let i = instance(store, &id(n)).await;
        (i.status, i.error.map(|e| e.kind), get(store, &id(n)).await.status)
    };
    assert_eq!(ended(0).await, (InstanceStatus::ResourceError, Some(ErrorKind::Timeout), Rerouted));
    assert_eq!(ended(1).await, (InstanceStatus::ResourceError, Some(ErrorKind::MemoryLimit), Rerouted));
    assert_eq!(ended(2).await, (InstanceStatus::ErrorFatal, Some(ErrorKind::Fatal), Failed));
    assert_eq!(ended(3).await, (InstanceStatus::UnknownError, Some(ErrorKind::Lost), Rerouted));
    let failed = get(store, &id(2)).await;
    let why = failed.error.expect("an error").message;
    assert!(why.contains("never recorded") && why.contains("Traceback"), "{why}");
    let memory = instance(store, &id(1)).await.error.expect("an error").message;
    assert!(memory.contains("95%") || memory.contains("of its 67108864 bytes"), "{memory}");
    assert_eq!(statuses(store, &id(2)).await.last(), Some(&Failed));
}
