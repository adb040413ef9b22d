//! Conformance of components, tasks and API keys: migrations, uploads and task options,
//! keys kept as hashes.

use super::*;

conformance!(migrations_on_a_fresh_database, components_and_tasks, api_keys_keep_hashes_names_and_batched_use,);

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
    assert_eq!(store.component_version_bytes("c1", 1).await.expect("bytes"), Some(b"bytes-1".to_vec()));
    assert_eq!(store.component_version_bytes("nope", 1).await.expect("bytes"), None);
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
    assert_eq!(info.version, 2, "new code is the next version");
    assert_eq!(store.component_version_bytes("c1", 2).await.expect("bytes"), Some(b"bytes-22".to_vec()));
    assert_eq!(store.component_version_bytes("c1", 1).await.expect("bytes"), Some(b"bytes-1".to_vec()));
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
