//! When calls run (issue 17): delayed and scheduled calls, on both backends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::assert_error;
use crate::both;

const MINUTE: Duration = Duration::from_secs(60);

async fn route(d: &TestDaemon, name: &str, options: Value) -> (String, Value) {
    let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": name}, "options": options})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let (_, inv) = d.get(&format!("/v1/invocations/{id}")).await;
    (id, inv)
}

/// When the history says the call was claimed (database clock); it was claimed once.
async fn claimed_at(d: &TestDaemon, id: &str) -> i64 {
    let claims = claims_of(d, id).await;
    assert_eq!(claims.len(), 1, "claimed once: {claims:?}");
    claims[0].0
}

/// A call with `options.delay_ms` or `options.not_before` is stored at once, says when it may
/// start (`not_before`, database clock), is never claimed before then and runs once after,
/// also across a restart of the node; calls without options overtake it; it can be cancelled
/// before it starts; bad options are 400 in the error shape.
async fn delayed_and_scheduled_calls(b: Backend) {
    let mut d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;

    let t0 = Instant::now();
    let (delayed, inv) = route(&d, "delayed", json!({"delay_ms": 1_500})).await;
    assert_eq!(inv["status"], "registered", "{inv}");
    let created = inv["created_at"].as_i64().expect("created_at");
    let due = inv["not_before"].as_i64().unwrap_or_else(|| panic!("a delayed call says when it starts: {inv}"));
    assert_eq!(due - created, 1_500, "{inv}");
    // A scheduled call (RFC 3339), due a second after the delayed one.
    let at = chrono::DateTime::from_timestamp_millis(due + 1_000).expect("time").to_rfc3339();
    let (scheduled, inv) = route(&d, "scheduled", json!({"not_before": at})).await;
    assert_eq!(inv["not_before"], json!(due + 1_000), "{inv}");
    // One far ahead, cancelled before it starts; one not delayed runs at once meanwhile.
    let (cancelled, _) = route(&d, "never", json!({"delay_ms": 600_000})).await;
    let now = d.run("hello", json!({"name": "now"})).await;
    assert_eq!(now["status"], "success", "{now}");
    assert!(now.get("not_before").is_none(), "{now}");
    assert!(t0.elapsed() < Duration::from_millis(1_400), "an undelayed call waited: {:?}", t0.elapsed());
    let (_, v) = d.get(&format!("/v1/invocations/{delayed}")).await;
    assert_eq!(v["status"], "registered", "not before its time: {v}");
    let (s, v) = d.post(&format!("/v1/invocations/{cancelled}/cancel"), &json!({})).await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("cancelled")), "{v}");

    for (id, not_before) in [(&delayed, due), (&scheduled, due + 1_000)] {
        let v = d.result(id, MINUTE).await;
        assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");
        assert!(v.get("not_before").is_none(), "a started call has no not_before: {v}");
        let claimed = claimed_at(&d, id).await;
        assert!(claimed >= not_before, "claimed at {claimed}, before {not_before}");
        // Woken when due, not at a poll long after.
        assert!(claimed - not_before < 1_000, "claimed {} ms late", claimed - not_before);
    }

    // Across a restart: stored at once, run once when due.
    let (kept, inv) = route(&d, "kept", json!({"delay_ms": 1_000})).await;
    let due = inv["not_before"].as_i64().expect("not_before");
    d.restart().await;
    let v = d.result(&kept, MINUTE).await;
    assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");
    assert!(claimed_at(&d, &kept).await >= due);
    let (_, v) = d.get(&format!("/v1/invocations/{cancelled}")).await;
    assert_eq!(v["status"], "cancelled", "{v}");

    // Bad options.
    let bad = |options: Value| json!({"task": "hello", "args": {}, "options": options});
    let (s, v) = d.post("/v1/invocations", &bad(json!({"delay_ms": -5}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "delay_ms must be between 0");
    let (s, v) = d.post("/v1/invocations", &bad(json!({"delay_ms": 40_000_000_000_i64}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "366 days");
    let (s, v) = d.post("/v1/invocations", &bad(json!({"delay_ms": 5, "not_before": at}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "both given");
    let (s, v) = d.post("/v1/invocations", &bad(json!({"not_before": "tomorrow"}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "rfc 3339");
    let (s, v) = d.post("/v1/invocations", &bad(json!({"not_before": "2999-01-01T00:00:00Z"}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "366 days ahead");
    let (s, v) =
        d.post("/v1/invocations/batch", &json!({"calls": [{"task": "hello", "options": {"delay_ms": -1}}]})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "delay_ms");
    d.stop().await;
}
both!(delayed_calls, delayed_and_scheduled_calls);

/// Cluster-wide: delayed calls routed on one node and pinned to another are claimed there
/// when due, woken by the routing node's timer through the cluster's notices (the other
/// node's own look comes only every 2 s on PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_call_starts_on_another_node_when_due() {
    let (front, back) = crate::cluster::hello_pinned_to_back().await;
    let mut routed = Vec::new();
    for (i, delay) in [700, 1_100, 1_500].into_iter().enumerate() {
        routed.push(route(&front, &format!("d{i}"), json!({"delay_ms": delay})).await);
    }
    let mut late = Vec::new();
    for (id, inv) in &routed {
        let due = inv["not_before"].as_i64().expect("not_before");
        let v = front.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        let (_, inst) = front.get(&format!("/v1/invocations/{id}/instances")).await;
        assert_eq!(inst["instances"][0]["node"], "back", "{inst}");
        let claimed = claimed_at(&front, id).await;
        assert!(claimed >= due, "claimed at {claimed}, before {due}");
        late.push(claimed - due);
    }
    assert!(late.iter().all(|&ms| ms < 800), "claimed this late after their time (ms): {late:?}");
    eprintln!("delayed calls on another node: claimed {late:?} ms after their time");
    back.stop().await;
    front.stop().await;
}

/// Debounce (issue 17, item 4), across three nodes: calls with the same debounce key within
/// the window collapse into one invocation, which runs once, with the last call's arguments,
/// a window after the last call; every call answers with its id (`reused: true` but for the
/// first). Another key is another invocation; a call after the run starts a new one; without
/// a key the task's key arguments are the key; bad options are 400 in the error shape.
async fn debounced_calls_collapse_into_one(b: Backend) {
    let a = TestDaemon::start_with(b, |c| c.node_name = "a".into()).await;
    let b2 = a.join("b", |_| {}).await;
    let c = a.join("c", |_| {}).await;
    a.deploy("hello", guests::HELLO).await;
    let nodes = [&a, &b2, &c];
    let debounced = |d: &TestDaemon, name: String, key: &str| {
        let body =
            json!({"task": "hello", "args": {"name": name}, "options": {"debounce_ms": 1_500, "debounce_key": key}});
        let d = warden_tests::harness::Api::clone(d);
        async move {
            let (s, v) = d.post("/v1/invocations", &body).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{v}");
            v
        }
    };
    let mut answers = Vec::new();
    let mut starts = Vec::new();
    for n in 0..9 {
        let v = debounced(nodes[n % 3], format!("n{n}"), "user-7").await;
        let id = v["id"].as_str().expect("id").to_string();
        let (_, inv) = nodes[(n + 1) % 3].get(&format!("/v1/invocations/{id}")).await;
        starts.push(inv["not_before"].as_i64().unwrap_or_else(|| panic!("waits for its window: {inv}")));
        answers.push(v);
    }
    let other = debounced(&b2, "other".into(), "user-8").await;
    let id = answers[0]["id"].as_str().expect("id").to_string();
    assert!(answers.iter().all(|v| v["id"] == json!(id)), "one invocation for one key: {answers:?}");
    assert_eq!(answers[0]["reused"], false);
    assert!(answers[1..].iter().all(|v| v["reused"] == true), "{answers:?}");
    assert_ne!(other["id"], json!(id), "another key, another invocation");
    assert!(starts.windows(2).all(|w| w[1] >= w[0]), "each call pushes the start on: {starts:?}");
    let last_start = *starts.last().expect("starts");

    let v = a.result(&id, MINUTE).await;
    assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");
    assert_eq!(v["result"], json!({"greeting": "Hello, n8!"}), "the last call's arguments: {v}");
    let claimed = claimed_at(&a, &id).await;
    assert!(claimed >= last_start, "claimed at {claimed}, before the window after the last call ({last_start})");
    let other = c.result(other["id"].as_str().expect("id"), MINUTE).await;
    assert_eq!(other["result"], json!({"greeting": "Hello, other!"}), "{other}");
    let (_, count) = a.get("/v1/invocations/count?task=hello").await;
    let total: i64 = count["counts"].as_array().expect("counts").iter().filter_map(|c| c["count"].as_i64()).sum();
    assert_eq!(total, 2, "ten calls, two keys, two invocations: {count}");
    // Once it has started, the key opens a new window.
    let again = debounced(&c, "again".into(), "user-7").await;
    assert_eq!(again["reused"], false, "{again}");
    assert_ne!(again["id"], json!(id));
    // Thirty calls at once through the three nodes: racing routers meet at the unique index
    // of waiting scopes, look again, and all answer with one invocation, which runs once.
    let burst: Vec<_> = (0..30).map(|n| tokio::spawn(debounced(nodes[n % 3], format!("b{n}"), "burst"))).collect();
    let mut answers = Vec::new();
    for call in burst {
        answers.push(call.await.expect("a routing task"));
    }
    let burst_id = answers[0]["id"].clone();
    assert!(answers.iter().all(|v| v["id"] == burst_id), "one invocation for one key: {answers:?}");
    assert_eq!(answers.iter().filter(|v| v["reused"] == false).count(), 1, "{answers:?}");
    let v = b2.result(burst_id.as_str().expect("id"), MINUTE).await;
    assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");

    // Without a key: the task's key arguments, else a 400 that says what to give.
    let bad = |options: Value| json!({"task": "hello", "args": {"name": "x"}, "options": options});
    let (s, v) = a.post("/v1/invocations", &bad(json!({"debounce_ms": 100}))).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "debounce_key");
    let r = a.http.patch(format!("{}/v1/tasks/hello", a.url)).json(&json!({"key_arguments": ["name"]})).send().await;
    assert_eq!(r.expect("patch").status(), StatusCode::OK);
    let by_name = |name: &str| json!({"task": "hello", "args": {"name": name}, "options": {"debounce_ms": 60_000}});
    let (_, first) = a.post("/v1/invocations", &by_name("ada")).await;
    // The patch reaches the other nodes' routing within a heartbeat (the tasks' version).
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        let (s, v) = b2.post("/v1/invocations", &by_name("ada")).await;
        if s == StatusCode::ACCEPTED || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, third) = c.post("/v1/invocations", &by_name("bob")).await;
    assert_eq!((second["id"].clone(), second["reused"].clone()), (first["id"].clone(), json!(true)), "{second}");
    assert_ne!(third["id"], first["id"], "{third}");
    // Bad options.
    for (options, says) in [
        (json!({"debounce_ms": 0}), "between 1 and"),
        (json!({"debounce_ms": -5}), "between 1 and"),
        (json!({"debounce_ms": 40_000_000_000_i64}), "366 days"),
        (json!({"debounce_key": "k"}), "needs options.debounce_ms"),
        (json!({"debounce_ms": 10, "debounce_key": ""}), "1-255"),
        (json!({"debounce_ms": 10, "delay_ms": 5}), "not with options.delay_ms"),
        (json!({"debounce_ms": 10, "idempotency_key": "k"}), "idempotency key"),
    ] {
        let (s, v) = a.post("/v1/invocations", &bad(options.clone())).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, says);
    }
    for d in [c, b2, a] {
        d.stop().await;
    }
}
both!(debounce, debounced_calls_collapse_into_one);

/// Priorities (issue 17): one slot, 1,000 calls at priority 1 routed, then 100 at priority 9.
/// Every priority-9 call runs before every priority-1 call not yet claimed when they were
/// stored (a claim takes up to `prefetch` calls ahead, which run first); the invocations show
/// their priority; a task's default (PATCH) applies to calls that give none and is inherited
/// by a rerun; bad priorities are 400.
async fn higher_priorities_run_first(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.slots = 1).await;
    d.deploy("hello", guests::HELLO).await;
    let batch = |prefix: &str, n: usize, priority: u8| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"task": "hello", "args": {"name": format!("{prefix}{i}")}, "options": {"priority": priority}}))
            .collect()
    };
    let low = route_batch(&d, &batch("low", 1_000, 1)).await;
    let high = route_batch(&d, &batch("high", 100, 9)).await;
    // The database clock once the high calls are stored and visible (the 202 came after their
    // commit). A claim that started earlier may not see them even if its clock reads later
    // than their `created_at` (taken before the commit): its low calls were ahead of them.
    let (_, nodes) = d.get("/v1/cluster/nodes").await;
    let routed_high = nodes["now"].as_i64().unwrap_or_else(|| panic!("the database clock: {nodes}"));
    let (_, first_high) = d.get(&format!("/v1/invocations/{}", high[0])).await;
    assert_eq!(first_high["priority"], 9, "{first_high}");
    let mut high_done = 0;
    for id in &high {
        let v = d.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        high_done = high_done.max(v["updated_at"].as_i64().expect("updated_at"));
    }
    let mut overtaken = 0;
    let mut ahead = 0;
    for id in &low {
        let v = d.result(id, MINUTE).await;
        assert_eq!((&v["status"], &v["priority"]), (&json!("success"), &json!(1)), "{v}");
        if claimed_at(&d, id).await < routed_high {
            ahead += 1;
        } else if v["updated_at"].as_i64().expect("updated_at") < high_done {
            overtaken += 1;
        }
    }
    eprintln!("priorities: {ahead} low calls were claimed before the high ones were routed; {overtaken} overtook");
    assert_eq!(overtaken, 0, "low-priority calls claimed after the high ones were routed ran before them");

    // The task's default, and bad input.
    let (s, v) = d.patch("/v1/tasks/hello", &json!({"priority": 8})).await;
    assert_eq!((s, &v["priority"]), (StatusCode::OK, &json!(8)), "{v}");
    let v = d.run("hello", json!({"name": "default"})).await;
    assert_eq!(v["priority"], 8, "{v}");
    let (s, v) = d.post(&format!("/v1/invocations/{}/rerun", low[0]), &json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (_, again) = d.get(&format!("/v1/invocations/{}", v["id"].as_str().expect("id"))).await;
    assert_eq!(again["priority"], 1, "a rerun keeps the call's priority: {again}");
    let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "options": {"priority": 12}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "between 0 and 9");
    let (s, v) = d.patch("/v1/tasks/hello", &json!({"priority": -1})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "between 0 and 9");
    d.stop().await;
}
both!(priorities, higher_priorities_run_first);

/// The `pending` entries of an invocation's history (its claims): `(at, node)`.
async fn claims_of(d: &TestDaemon, id: &str) -> Vec<(i64, String)> {
    let (_, h) = d.get(&format!("/v1/invocations/{id}/history")).await;
    h["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["status"] == "pending")
        .map(|e| (e["at"].as_i64().expect("at"), e["node"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Routes `calls` through the batch route; their ids.
async fn route_batch(d: &TestDaemon, calls: &[Value]) -> Vec<String> {
    let (s, v) = d.post("/v1/invocations/batch", &json!({ "calls": calls })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    v["invocations"]
        .as_array()
        .expect("invocations")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

/// Rate limits (issue 17), cluster-wide: three nodes on one PostgreSQL database, 12 slots,
/// `hello` limited to 50 starts per 1,000 ms. 300 calls routed through all three nodes all
/// succeed, at most 50 start (are claimed, database clock) in any window, on every node, and
/// a call that waits says until when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_three_nodes() {
    let a = TestDaemon::start(Backend::Postgres).await;
    let b = a.join("node-b", |_| {}).await;
    let c = a.join("node-c", |_| {}).await;
    a.deploy("hello", guests::HELLO).await;
    let (s, v) = a.put("/v1/rate-limits/api", &json!({"limit": 50, "per_ms": 1_000})).await;
    assert_eq!((s, &v["limit"], &v["per_ms"]), (StatusCode::CREATED, &json!(50), &json!(1_000)), "{v}");
    let (s, v) = a.patch("/v1/tasks/hello", &json!({"rate_limit": "api"})).await;
    assert_eq!((s, &v["rate_limit"]), (StatusCode::OK, &json!("api")), "{v}");
    let (_, v) = b.get("/v1/rate-limits/api").await;
    assert_eq!(v["tasks"], json!(["hello"]), "{v}");
    // Every node hears of the limit within a heartbeat (100 ms here).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Instant::now();
    let mut ids = Vec::new();
    for (n, d) in [&a, &b, &c].into_iter().enumerate() {
        let calls: Vec<Value> =
            (0..100).map(|i| json!({"task": "hello", "args": {"name": format!("{n}-{i}")}})).collect();
        ids.extend(route_batch(d, &calls).await);
    }
    // One of the last routed waits, and says until when.
    let last = ids.last().expect("ids").clone();
    let mut seen_wait = None;
    while seen_wait.is_none() && t0.elapsed() < Duration::from_secs(4) {
        let (_, v) = c.get(&format!("/v1/invocations/{last}")).await;
        if let Some(until) = v["rate_limited_until"].as_i64() {
            assert_eq!(until % 1_000, 0, "a window ends on a whole second: {v}");
            seen_wait = Some(until);
        }
        if v["status"] != "registered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_wait.is_some(), "a call held back by the limit shows rate_limited_until");

    let mut per_window: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    let mut nodes = std::collections::BTreeSet::new();
    for id in &ids {
        let v = a.result(id, MINUTE).await;
        assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");
        for (at, node) in claims_of(&a, id).await {
            *per_window.entry(at.div_euclid(1_000)).or_default() += 1;
            nodes.insert(node);
        }
    }
    let counts: Vec<usize> = per_window.values().copied().collect();
    assert_eq!(counts.iter().sum::<usize>(), 300, "{per_window:?}");
    assert!(counts.iter().all(|n| *n <= 50), "at most 50 starts per window: {per_window:?}");
    assert!(per_window.len() >= 6, "300 starts at 50 per window take six windows at least: {per_window:?}");
    // Six windows: the first may be nearly over when the first call starts.
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(nodes.len(), 3, "every node started some: {nodes:?}");
    for d in [c, b, a] {
        d.stop().await;
    }
}

/// Rate limits per key, and their bad input (both databases): a limit of 2 per hour per
/// `$.customer` lets two calls of each customer start and holds the rest (they show
/// `rate_limited_until`, and run once the task no longer names the limit); a call without a
/// customer, a limit of 0, a bad key path, a task naming no limit and deleting a limit in use
/// are refused in the error shape.
async fn rate_limits_per_key(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let (s, v) =
        d.put("/v1/rate-limits/per-customer", &json!({"limit": 2, "per_ms": 3_600_000, "key": "$.customer"})).await;
    assert_eq!((s, &v["key"]), (StatusCode::CREATED, &json!("$.customer")), "{v}");
    let (s, v) =
        d.put("/v1/rate-limits/per-customer", &json!({"limit": 2, "per_ms": 3_600_000, "key": "$.customer"})).await;
    assert_eq!(s, StatusCode::OK, "replaced: {v}");
    let (s, v) = d.patch("/v1/tasks/hello", &json!({"rate_limit": "per-customer"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let calls: Vec<Value> = (0..8)
        .map(|i| json!({"task": "hello", "args": {"name": format!("n{i}"), "customer": if i % 2 == 0 { "acme" } else { "globex" }}}))
        .collect();
    let ids = route_batch(&d, &calls).await;
    // Two of each customer start; the other four wait for the next hour.
    let status_of = |v: &Value| v["status"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + MINUTE;
    let started = loop {
        let mut done = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (_, v) = d.get(&format!("/v1/invocations/{id}")).await;
            if status_of(&v) == "success" {
                done.push(i);
            }
        }
        if done.len() >= 4 {
            break done;
        }
        assert!(Instant::now() < deadline, "four calls should have run: {done:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acme = started.iter().filter(|i| *i % 2 == 0).count();
    assert_eq!((started.len(), acme), (4, 2), "two of each customer: {started:?}");
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| !started.contains(i)) {
        let (_, v) = d.get(&format!("/v1/invocations/{id}")).await;
        assert_eq!(v["status"], "registered", "call {i} is held back: {v}");
        let until = v["rate_limited_until"].as_i64().unwrap_or_else(|| panic!("says until when: {v}"));
        assert_eq!(until % 3_600_000, 0, "{v}");
    }
    let (_, list) = d.get("/v1/rate-limits").await;
    assert_eq!(list["rate_limits"][0]["name"], "per-customer", "{list}");

    // Bad input.
    let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "nobody"}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "$.customer");
    let (s, v) = d.put("/v1/rate-limits/zero", &json!({"limit": 0, "per_ms": 1_000})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "limit must be between 1");
    let (s, v) = d.put("/v1/rate-limits/neg", &json!({"limit": 5, "per_ms": -1})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "per_ms must be between 1");
    let (s, v) = d.put("/v1/rate-limits/path", &json!({"limit": 5, "per_ms": 1_000, "key": "customer"})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "json path");
    let (s, v) = d.patch("/v1/tasks/hello", &json!({"rate_limit": "nope"})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "no rate limit named `nope`");
    let (s, v) = d.delete("/v1/rate-limits/per-customer").await;
    assert_error(s, &v, StatusCode::CONFLICT, "`hello`");
    let (s, v) = d.get("/v1/rate-limits/nope").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");

    // No longer named: the held calls run, and the limit may go.
    let (s, v) = d.patch("/v1/tasks/hello", &json!({"rate_limit": ""})).await;
    assert!(s == StatusCode::OK && v.get("rate_limit").is_none(), "{v}");
    for id in &ids {
        let v = d.result(id, MINUTE).await;
        assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");
    }
    let (s, _) = d.delete("/v1/rate-limits/per-customer").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    d.stop().await;
}
both!(rate_limits_by_key, rate_limits_per_key);
