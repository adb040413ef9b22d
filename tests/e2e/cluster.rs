//! The cluster over HTTP on both backends: pinning tasks to nodes by name and label patterns
//! (only matching nodes run them; a task no live node matches is reported and waits), and
//! readiness tied to registration.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::assert_error;
use crate::both;

const MINUTE: Duration = Duration::from_secs(60);

/// Two nodes, `cpu-1` and `gpu-1` (label `gpu`): `hello` pinned to `["gpu-primary", "gpu-%"]`
/// runs only on `gpu-1` whichever node routes it; `primes` pinned to `tpu%` is unrunnable
/// (reported) and waits until unpinned.
async fn pinned_tasks_run_only_on_matching_nodes(b: Backend) {
    let cpu = TestDaemon::start_with(b, |c| c.node_name = "cpu-1".into()).await;
    let gpu = cpu.join("gpu-1", |c| c.labels = vec!["gpu".into(), "region=eu".into()]).await;
    cpu.deploy("hello", guests::HELLO).await;
    cpu.deploy("math", guests::MATH).await;

    let (s, v) = cpu.post("/v1/cluster/pins", &json!({"task": "hello", "patterns": ["gpu-primary", "gpu-%"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((&v["eligible"], &v["runnable"]), (&json!(["gpu-1"]), &json!(true)), "{v}");
    let (s, v) = cpu.post("/v1/cluster/pins", &json!({"task": "primes", "patterns": ["tpu%"]})).await;
    assert_eq!((s, &v["runnable"]), (StatusCode::CREATED, &json!(false)), "{v}");
    // Bad pins are refused in the error shape.
    let (s, v) = cpu.post("/v1/cluster/pins", &json!({"task": "hello", "patterns": []})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "pattern");
    let (s, v) = cpu.post("/v1/cluster/pins", &json!({"task": "nope", "patterns": ["x"]})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    // The same rules hold when pins come through PATCH /v1/tasks/{task}.
    let long = "x".repeat(300);
    let r = cpu.http.patch(format!("{}/v1/tasks/hello", cpu.url)).json(&json!({"pins": [long]})).send().await;
    let r = r.expect("patch");
    let s = r.status();
    let v: serde_json::Value = r.json().await.expect("json");
    assert_error(s, &v, StatusCode::BAD_REQUEST, "pattern");
    let (_, v) = gpu.get("/v1/cluster/pins").await;
    assert_eq!(v["unrunnable"], json!(["primes"]), "{v}");
    let text = gpu.http.get(format!("{}/metrics", gpu.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(text.lines().any(|l| l == "warden_pinned_task_unrunnable{task=\"primes\"} 1"), "{text}");
    // Every node hears of new pins at its next heartbeat (100 ms here).
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut ids = Vec::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { &cpu } else { &gpu };
        ids.push(via.call("hello", json!({"name": format!("n{i}")})).await);
    }
    let waiting = cpu.call("primes", json!({"below": 100})).await;
    for id in &ids {
        let v = cpu.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        let (_, i) = cpu.get(&format!("/v1/invocations/{id}/instances")).await;
        assert_eq!(i["instances"][0]["node"], "gpu-1", "pinned hello ran elsewhere: {i}");
    }
    let (_, v) = cpu.get(&format!("/v1/invocations/{waiting}")).await;
    assert_eq!(v["status"], "registered", "no live node may run primes: {v}");

    // Unpinned, it runs.
    let r = cpu.http.delete(format!("{}/v1/cluster/pins/primes", cpu.url)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v = cpu.result(&waiting, MINUTE).await;
    assert_eq!(v["status"], "success", "{v}");
    let (_, v) = cpu.get("/v1/cluster/pins").await;
    assert_eq!((&v["unrunnable"], v["pins"].as_array().map(Vec::len)), (&json!([]), Some(1)), "{v}");

    // Metrics: the unrunnable pinned task is gone, both nodes are live and own tokens.
    let r = cpu.http.get(format!("{}/metrics", cpu.url)).send().await.expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("text");
    for line in [
        "warden_pinned_tasks_unrunnable 0",
        "warden_nodes_live 2",
        "warden_node_tokens{node=\"gpu-1\"} 5000",
        "warden_invocations{task=\"hello\",status=\"success\"} 20",
        "warden_ready{node=\"cpu-1\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    // Readiness: both nodes are registered.
    for d in [&cpu, &gpu] {
        let (s, v) = d.get("/health/ready").await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    gpu.stop().await;
    cpu.stop().await;
}
both!(pinning, pinned_tasks_run_only_on_matching_nodes);

/// The token ring: one node owns all 10,000 tokens; a second node joins and the leader (the
/// older node) gives it half, moving nothing else; calls routed to either node run on both,
/// each on the owner of its token; when the second node leaves, its tokens come back.
async fn the_ring_spreads_work_and_follows_membership(b: Backend) {
    let first = TestDaemon::start_with(b, |c| c.node_name = "first".into()).await;
    first.deploy("hello", guests::HELLO).await;
    let v = wait_for(&first, |v| v["distribution"] == json!({"first": 10_000})).await;
    assert_eq!(v["total_tokens"], 10_000, "{v}");
    let second = first.join("second", |_| {}).await;
    let v = wait_for(&first, |v| v["distribution"] == json!({"first": 5_000, "second": 5_000})).await;
    assert_eq!(v["spread"], 0, "{v}");
    let swap = &v["swaps"][0];
    assert_eq!((&swap["leader"], &swap["moved"]), (&json!("first"), &json!(5_000)), "{v}");
    let (_, nodes) = second.get("/v1/cluster/nodes").await;
    assert_eq!(nodes["leader"], "first", "{nodes}");

    let mut ids = Vec::new();
    for i in 0..60 {
        let via = if i % 2 == 0 { &first } else { &second };
        ids.push(via.call("hello", json!({"name": format!("r{i}")})).await);
    }
    let mut ran_on = std::collections::BTreeMap::new();
    for id in &ids {
        let v = first.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        let (_, i) = first.get(&format!("/v1/invocations/{id}/instances")).await;
        *ran_on.entry(i["instances"][0]["node"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    assert_eq!(ran_on.len(), 2, "both nodes ran their tokens' calls: {ran_on:?}");
    second.stop().await;
    let v = wait_for(&first, |v| v["distribution"] == json!({"first": 10_000})).await;
    assert_eq!(v["swaps"][0]["moved"], 5_000, "only the leaving node's tokens moved: {v}");
    first.stop().await;
}
both!(token_ring, the_ring_spreads_work_and_follows_membership);

/// Two nodes on PostgreSQL, `front` and `back`, with `hello` deployed and pinned to `back`;
/// both have heard of the pin and one call has run (warm).
pub(crate) async fn hello_pinned_to_back() -> (TestDaemon, TestDaemon) {
    let front = TestDaemon::start_with(Backend::Postgres, |c| c.node_name = "front".into()).await;
    let back = front.join("back", |_| {}).await;
    front.deploy("hello", guests::HELLO).await;
    let (s, v) = front.post("/v1/cluster/pins", &json!({"task": "hello", "patterns": ["back"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Both nodes hear of the pin at their next heartbeat (100 ms here); warm up.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let id = front.call("hello", json!({"name": "warm"})).await;
    assert_eq!(front.result(&id, MINUTE).await["status"], "success");
    (front, back)
}

/// A task patched, or a component deployed again, through one node takes effect on the node
/// that runs the task within a heartbeat: each node keeps copies of the tasks and compiled
/// components for routing and running, and drops them when the tasks' version (moved by every
/// deploy, patch or removal, whichever node made it) moves. They were kept for the node's life:
/// a timeout patched through `front` never reached the attempts `back` ran.
async fn a_patch_through_one_node_reaches_the_node_that_runs_the_task(b: Backend) {
    let front = TestDaemon::start_with(b, |c| c.node_name = "front".into()).await;
    let back = front.join("back", |_| {}).await;
    front.deploy("slow", guests::SLOW).await;
    let (s, v) = front.post("/v1/cluster/pins", &json!({"task": "slow", "patterns": ["back"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Where a call of `slow {"ms": 300}` ran, and how it ended.
    let run = async || {
        let id = front.call("slow", json!({"ms": 300})).await;
        let v = front.result(&id, MINUTE).await;
        let (_, i) = front.get(&format!("/v1/invocations/{id}/instances")).await;
        (i["instances"][0]["node"].as_str().unwrap_or_default().to_string(), v)
    };
    // `back` has heard of the pin and run the task (reading it, compiling the component).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (node, v) = run().await;
        if node == "back" && v["status"] == "success" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the pinned task never ran on back: {v}");
    }
    let r =
        front.http.patch(format!("{}/v1/tasks/slow", front.url)).json(&json!({"timeout_ms": 100, "max_attempts": 1}));
    assert_eq!(r.send().await.expect("patch").status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (node, v) = run().await;
        assert_eq!(node, "back", "{v}");
        if v["status"] == "failed" {
            assert_eq!(v["error"]["kind"], "timeout", "{v}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "back still runs the task without the patched timeout: {v}");
    }
    back.stop().await;
    front.stop().await;
}
both!(patches_reach_every_node, a_patch_through_one_node_reaches_the_node_that_runs_the_task);

/// A call routed through one node and run by another is answered at once: the routing node's
/// notice wakes the other's dispatcher (no wait for its poll), and the runner's notice wakes the
/// long-poll on the routing node (no wait for its next look). PostgreSQL: the nodes of a
/// cluster hear each other through `LISTEN`/`NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_run_by_another_node_is_answered_at_once() {
    let (front, back) = hello_pinned_to_back().await;

    let mut took = Vec::new();
    for i in 0..15 {
        let t = std::time::Instant::now();
        let id = front.call("hello", json!({"name": format!("n{i}")})).await;
        let v = front.result(&id, MINUTE).await;
        took.push(t.elapsed());
        assert_eq!(v["status"], "success", "{v}");
        let (_, inst) = front.get(&format!("/v1/invocations/{id}/instances")).await;
        assert_eq!(inst["instances"][0]["node"], "back", "the pinned call ran elsewhere: {inst}");
    }
    took.sort();
    // Woken by polls instead (the dispatcher's 500 ms, the long-poll's 250 ms), the median was
    // 514 ms; woken by the notices it is 30-40 ms in a debug build (the margin is for a loaded CI).
    assert!(took[took.len() / 2] < Duration::from_millis(150), "a call run by another node took (sorted) {took:?}");
    back.stop().await;
    front.stop().await;
}

/// Polls `/v1/cluster/tokens` until `ok` holds (10 s at most).
async fn wait_for(d: &TestDaemon, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = d.get("/v1/cluster/tokens").await;
        if ok(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < end, "the ring never got there: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle node costs PostgreSQL at most 5 transactions a second at the default heartbeat
/// (1 s): one membership tick (heartbeat, lease, node list, versions and the services' probes
/// in one transaction) instead of a dozen reads and writes a second, so 50 idle nodes cost 250
/// transactions a second, not 1,300. Counted by the server (`pg_stat_database` of the
/// daemon's own database, autovacuum off for its tables) over 10 s, after a deploy and a
/// call, as the leader of a cluster of one with no trigger and no pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_costs_at_most_five_transactions_a_second() {
    use sqlx::Connection;
    let d = TestDaemon::start_with(Backend::Postgres, |c| {
        c.heartbeat_interval_ms = 1_000;
        c.heartbeat_timeout_ms = 10_000;
    })
    .await;
    d.deploy("hello", guests::HELLO).await;
    let id = d.call("hello", json!({"name": "idle"})).await;
    assert_eq!(d.result(&id, MINUTE).await["status"], "success");
    let url = d.database_url();
    let name = url.rsplit('/').next().expect("a database name").to_string();
    let mut probe = sqlx::PgConnection::connect(&warden_tests::harness::database_url()).await.expect("connect");
    // PostgreSQL's autovacuum counts its own transactions in the same database (an ANALYZE
    // per table the deploy and the call wrote): switched off for this database's tables, so
    // that the count is the daemon's.
    autovacuum_off(&url).await;
    let mut committed = async || -> i64 {
        sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut probe)
            .await
            .expect("pg_stat_database")
    };
    // Settled: the first tick of the lease term ran the services, the keys were read, and
    // every connection that worked for the deploy and the call has reported its count (an
    // idle backend sends its statistics up to 10 s late: PostgreSQL's PGSTAT_IDLE_INTERVAL).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let before = committed().await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = committed().await;
    let per_s = (after - before) as f64 / started.elapsed().as_secs_f64();
    assert!(per_s <= 5.0, "an idle node made {per_s:.1} transactions a second ({} in 10 s)", after - before);
    d.stop().await;
}

/// Switches PostgreSQL's autovacuum off for the tables of the database at `url` (a test that
/// counts the daemon's own transactions or needs tables that were never analysed).
async fn autovacuum_off(url: &str) {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
        .fetch_all(&mut db)
        .await
        .expect("tables");
    for t in &tables {
        let sql = format!("ALTER TABLE \"{t}\" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut db).await.expect("autovacuum off");
    }
    db.close().await.expect("close");
}

/// A fresh PostgreSQL database has no planner statistics until autovacuum's first ANALYZE, a
/// minute or more after a burst of calls, and none at all with autovacuum off. What a call
/// costs must not hang on them, and must not hang on plans made while the tables were small:
/// - without statistics, the transition's row lock and the instance record hash-joined their
///   ids with a scan of every invocation, and the claim hashed every token of the node, on
///   every call (one call in flight took 14.8 ms instead of 3.2 at 30,000 invocations);
/// - sqlx prepares each statement once per connection and PostgreSQL keeps a generic plan
///   after five runs: plans made during 50 calls on an empty table kept scanning the whole
///   table in every outcome commit of the 20,000 calls after (1.3 s a commit in `warden
///   bench`), until an ANALYZE, which the node now runs when the table's figures say it is
///   due (`Store::tidy`).
///
/// Counted from PostgreSQL's own statistics: tuples read by sequential scans of `invocations`
/// and tuples fetched from `token_owners`, over 10,000 calls routed in batches after 50 single
/// ones, then over 100 single calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_do_not_scan_the_tables_of_a_fresh_database() {
    use sqlx::Connection;
    let d = TestDaemon::start(Backend::Postgres).await;
    let url = d.database_url();
    autovacuum_off(&url).await;
    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    d.deploy("hello", guests::HELLO).await;
    // Read what every backend has reported (an idle one reports up to 10 s late).
    let mut read = async || -> (i64, i64) {
        tokio::time::sleep(Duration::from_secs(11)).await;
        sqlx::query_as(
            "SELECT (SELECT COALESCE(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'invocations'), \
             (SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) FROM pg_stat_user_tables \
              WHERE relname = 'token_owners')",
        )
        .fetch_one(&mut db)
        .await
        .expect("pg_stat_user_tables")
    };
    for i in 0..50 {
        assert_eq!(d.run("hello", json!({"name": format!("warm{i}")})).await["status"], "success");
    }
    let start = read().await;
    let batch: Vec<_> = (0..1000).map(|i| json!({"task": "hello", "args": {"name": format!("n{i}")}})).collect();
    let mut last = Vec::new();
    for _ in 0..10 {
        let (s, v) = d.post("/v1/invocations/batch", &json!({ "calls": batch })).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        last.push(v["invocations"][999]["id"].as_str().expect("the batch's last id").to_owned());
    }
    // Wait without reading the table: a count of 10,000 rows is a scan of them (rightly).
    for id in &last {
        let (_, v) = d.get(&format!("/v1/invocations/{id}/result?timeout_ms=60000")).await;
        assert_eq!(v["status"], "success", "{v}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let batches = read().await;
    for i in 0..100 {
        assert_eq!(d.run("hello", json!({"name": format!("one{i}")})).await["status"], "success");
    }
    let after = read().await;
    let (scanned, tokens) = (batches.0 - start.0, batches.1 - start.1);
    eprintln!(
        "10,000 calls in batches after 50 on an empty table: {scanned} invocations scanned, {tokens} token rows read"
    );
    assert!(scanned < 600_000, "10,000 calls read {scanned} invocations by sequential scans");
    let (scanned, tokens) = (after.0 - batches.0, after.1 - batches.1);
    eprintln!("100 calls on 10,050 invocations: {scanned} invocations scanned, {tokens} token rows read");
    assert!(scanned < 100_000, "100 calls read {scanned} invocations by sequential scans (the table holds 10,050)");
    assert!(tokens < 100_000, "100 calls read {tokens} rows of token_owners (the ring has 10,000)");
    d.stop().await;
}
