//! Workflows and arrays (Jobmon) over HTTP on both backends: a diamond in order, refused
//! graphs, failures that block their downstream (and fail fast), pause with hot and cold
//! resume, incremental sync with `updated_since`, an array within its running limit, a step
//! whose cost does not grow with the ready nodes, and a 10,000-node workflow within its limit,
//! with its figures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::{assert_error, patch};
use crate::both;

const FINAL: [&str; 4] = ["success", "failed", "cancelled", "concurrency_controlled_final"];

async fn create(d: &TestDaemon, body: Value) -> String {
    let (s, v) = d.post("/v1/workflows", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "queued", "{v}");
    v["id"].as_str().expect("workflow id").to_string()
}

async fn summary(d: &TestDaemon, id: &str) -> Value {
    let (s, v) = d.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Polls the workflow until `done(summary)` holds (or panics after `timeout`).
async fn wait_until(d: &TestDaemon, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = summary(d, id).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "workflow {id} did not get there in {timeout:?}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_final(d: &TestDaemon, id: &str, timeout: Duration) -> Value {
    wait_until(d, id, timeout, |v| ["done", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await
}

fn node<'a>(summary: &'a Value, id: &str) -> &'a Value {
    summary["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["id"] == id))
        .unwrap_or_else(|| panic!("no node {id} in {summary}"))
}

fn invocation_of(summary: &Value, id: &str) -> String {
    node(summary, id)["invocation"].as_str().unwrap_or_else(|| panic!("node {id} has no invocation")).to_string()
}

/// `(registered at, final at)` of an invocation, from its history.
async fn span(d: &TestDaemon, invocation: &str) -> (i64, i64) {
    let (s, h) = d.get(&format!("/v1/invocations/{invocation}/history")).await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let h = h["history"].as_array().expect("history").clone();
    let at = |pred: &dyn Fn(&str) -> bool| {
        h.iter().find(|e| pred(e["status"].as_str().unwrap_or(""))).and_then(|e| e["at"].as_i64())
    };
    let registered = at(&|s| s == "registered").unwrap_or_else(|| panic!("no registered in {h:?}"));
    let ended = at(&|s| FINAL.contains(&s)).unwrap_or_else(|| panic!("not final: {h:?}"));
    (registered, ended)
}

/// `(created_at, updated_at)` of every invocation of `task` (all final): for a final
/// invocation these are its `registered` and final history times (same transactions).
async fn spans_of_task(d: &TestDaemon, task: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/invocations?task={task}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = d.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for inv in v["invocations"].as_array().expect("invocations") {
            assert!(FINAL.contains(&inv["status"].as_str().unwrap_or("")), "not final: {inv}");
            out.push((
                inv["created_at"].as_i64().expect("created_at"),
                inv["updated_at"].as_i64().expect("updated_at"),
            ));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The largest number of spans `(routed, final)` open at once; at equal times finals count
/// first (an invocation routed in the step that saw another one final never overlaps it).
fn max_overlap(spans: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = spans.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    events.sort_unstable();
    let (mut open, mut max) = (0i64, 0i64);
    for (_, delta) in events {
        open += i64::from(delta);
        max = max.max(open);
    }
    usize::try_from(max).unwrap_or(0)
}

#[test]
fn overlap_counts_finals_first() {
    assert_eq!(max_overlap(&[]), 0);
    assert_eq!(max_overlap(&[(0, 10), (10, 20), (20, 30)]), 1);
    assert_eq!(max_overlap(&[(0, 10), (5, 20), (9, 30), (25, 40)]), 3);
}

async fn diamond_in_order(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let id = create(
        &d,
        json!({"name": "diamond", "nodes": [
            {"id": "a", "task": "hello", "args": {"name": "a"}},
            {"id": "b", "task": "hello", "args": {"name": "b"}, "depends_on": ["a"]},
            {"id": "c", "task": "hello", "args": {"name": "c"}, "depends_on": ["a"]},
            {"id": "d", "task": "hello", "args": {"name": "d"}, "depends_on": ["b", "c"]},
        ]}),
    )
    .await;
    let v = wait_final(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["kind"], "workflow");
    assert_eq!(v["counts"]["done"], 4, "{v}");
    assert_eq!(node(&v, "d")["depends_on"], json!(["b", "c"]));
    let mut spans = HashMap::new();
    for n in ["a", "b", "c", "d"] {
        let inv = invocation_of(&v, n);
        let (_, i) = d.get(&format!("/v1/invocations/{inv}")).await;
        assert_eq!(i["status"], "success", "{i}");
        assert_eq!(i["workflow"], id.as_str(), "{i}");
        assert_eq!(i["result"]["greeting"], format!("Hello, {n}!"));
        spans.insert(n, span(&d, &inv).await);
    }
    for (down, up) in [("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")] {
        assert!(spans[down].0 >= spans[up].1, "{down} routed before {up} ended: {spans:?}");
    }
    let (s, list) = d.get("/v1/workflows").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["workflows"][0]["id"], id.as_str(), "{list}");
    let (_, light) = d.get(&format!("/v1/workflows/{id}?nodes=false")).await;
    assert!(light.get("nodes").is_none() && light["counts"]["done"] == 4, "{light}");
    d.stop().await;
}
both!(diamond, diamond_in_order);

async fn bad_graphs_are_refused(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let cycle = json!({"nodes": [
        {"id": "a", "task": "hello", "depends_on": ["c"]},
        {"id": "b", "task": "hello", "depends_on": ["a"]},
        {"id": "c", "task": "hello", "depends_on": ["b"]},
    ]});
    let (s, v) = d.post("/v1/workflows", &cycle).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "cycle");
    assert_eq!(v["error"]["code"], "bad_request");
    let (s, v) = d.post("/v1/workflows", &json!({"nodes": [{"id": "a", "task": "nope"}]})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "unknown task `nope`");
    let (s, v) = d.post("/v1/workflows", &json!({"nodes": [{"id": "a", "task": "hello", "depends_on": ["zz"]}]})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "zz");
    let (s, v) = d.post("/v1/workflows", &json!({"nodes": [{"id": "a", "task": "hello", "depends_on": ["a"]}]})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "itself");
    let (s, v) =
        d.post("/v1/workflows", &json!({"max_concurrently_running": 0, "nodes": [{"id": "a", "task": "hello"}]})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "max_concurrently_running");
    let (s, v) = d.post("/v1/arrays", &json!({"task": "nope", "args": [{}]})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "nope");
    let (s, v) = d.get("/v1/workflows/nope").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    let (s, v) = d.post("/v1/workflows/nope/pause", &json!({})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    let (_, list) = d.get("/v1/workflows").await;
    assert_eq!(list["workflows"], json!([]), "nothing stored: {list}");
    d.stop().await;
}
both!(bad_graphs, bad_graphs_are_refused);

async fn failures_block_downstream(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("hostile", guests::HOSTILE).await;
    let id = create(
        &d,
        json!({"nodes": [
            {"id": "bad", "task": "fatal"},
            {"id": "after_bad", "task": "hello", "args": {"name": "x"}, "depends_on": ["bad"]},
            {"id": "after_after", "task": "hello", "args": {"name": "y"}, "depends_on": ["after_bad"]},
            {"id": "good", "task": "hello", "args": {"name": "g"}},
            {"id": "after_good", "task": "hello", "args": {"name": "h"}, "depends_on": ["good"]},
        ]}),
    )
    .await;
    let v = wait_final(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(node(&v, "bad")["status"], "failed");
    for n in ["after_bad", "after_after"] {
        assert_eq!(node(&v, n)["status"], "blocked", "{v}");
        assert!(node(&v, n)["invocation"].is_null(), "{v}");
    }
    for n in ["good", "after_good"] {
        assert_eq!(node(&v, n)["status"], "done", "{v}");
    }
    let (s, v2) = d.post(&format!("/v1/workflows/{id}/resume"), &json!({})).await;
    assert_error(s, &v2, StatusCode::CONFLICT, "final");

    // Fail fast, one at a time: the failure stops everything after it.
    let id = create(
        &d,
        json!({"fail_fast": true, "max_concurrently_running": 1, "nodes": [
            {"id": "bad", "task": "fatal"},
            {"id": "x", "task": "hello", "args": {"name": "x"}},
            {"id": "y", "task": "hello", "args": {"name": "y"}},
        ]}),
    )
    .await;
    let v = wait_final(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(node(&v, "bad")["status"], "failed");
    for n in ["x", "y"] {
        assert_eq!(node(&v, n)["status"], "ready", "{v}");
        assert!(node(&v, n)["invocation"].is_null(), "{v}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, count) = d.get("/v1/invocations/count?task=hello").await;
    let started: i64 = count["counts"].as_array().expect("counts").iter().filter_map(|c| c["count"].as_i64()).sum();
    assert_eq!(started, 2, "only the first workflow's two good nodes ran: {count}");
    d.stop().await;
}
both!(failures, failures_block_downstream);

async fn pause_and_resume(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("slow", guests::SLOW).await;
    // Hot: the running node finishes while paused, nothing new starts, resume completes.
    let id = create(
        &d,
        json!({"nodes": [
            {"id": "s", "task": "slow", "args": {"ms": 1000}},
            {"id": "n1", "task": "hello", "args": {"name": "1"}, "depends_on": ["s"]},
            {"id": "n2", "task": "hello", "args": {"name": "2"}, "depends_on": ["s"]},
        ]}),
    )
    .await;
    wait_until(&d, &id, Duration::from_secs(10), |v| node(v, "s")["status"] == "running").await;
    let (s, v) = d.post(&format!("/v1/workflows/{id}/pause"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["status"].as_str(), v["paused"].as_bool()), (Some("halted"), Some(true)), "{v}");
    let v = wait_until(&d, &id, Duration::from_secs(10), |v| node(v, "s")["status"] == "done").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let v2 = summary(&d, &id).await;
    assert_eq!(v2["status"], "halted", "{v2}");
    for n in ["n1", "n2"] {
        assert_eq!(node(&v2, n)["status"], "ready", "{v} {v2}");
        assert!(node(&v2, n)["invocation"].is_null(), "{v2}");
    }
    let r = d.http.post(format!("{}/v1/workflows/{id}/resume", d.url)).send().await.expect("resume");
    assert_eq!(r.status(), StatusCode::OK);
    let v = wait_final(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "done", "{v}");

    // Cold: the slow node's invocation is cancelled and the node runs again; done nodes do not.
    let id = create(
        &d,
        json!({"nodes": [
            {"id": "a", "task": "hello", "args": {"name": "cold"}},
            {"id": "s", "task": "slow", "args": {"ms": 2000}, "depends_on": ["a"]},
            {"id": "z", "task": "hello", "args": {"name": "after"}, "depends_on": ["s"]},
        ]}),
    )
    .await;
    let v = wait_until(&d, &id, Duration::from_secs(10), |v| node(v, "s")["status"] == "running").await;
    let first_a = invocation_of(&v, "a");
    let old = invocation_of(&v, "s");
    // Let the guest really run before the restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, i) = d.get(&format!("/v1/invocations/{old}")).await;
        if i["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "slow never ran: {i}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = d.post(&format!("/v1/workflows/{id}/pause"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = d.post(&format!("/v1/workflows/{id}/resume"), &json!({"mode": "cold"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["paused"], false, "{v}");
    let (_, old_inv) = d.get(&format!("/v1/invocations/{old}")).await;
    assert_eq!(old_inv["status"], "cancelled", "{old_inv}");
    let v = wait_final(&d, &id, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "done", "{v}");
    let new = invocation_of(&v, "s");
    assert_ne!(new, old, "the slow node ran again with a new invocation");
    assert_eq!(invocation_of(&v, "a"), first_a, "a done node is never rerun");
    let (_, count) = d.get("/v1/invocations/count?task=hello").await;
    let hellos: i64 = count["counts"].as_array().expect("counts").iter().filter_map(|c| c["count"].as_i64()).sum();
    assert_eq!(hellos, 4, "two hello nodes per workflow, each once: {count}");

    // Cancel: unfinished nodes and their invocations.
    let id = create(
        &d,
        json!({"nodes": [
            {"id": "s", "task": "slow", "args": {"ms": 5000}},
            {"id": "t", "task": "hello", "args": {"name": "never"}, "depends_on": ["s"]},
        ]}),
    )
    .await;
    let v = wait_until(&d, &id, Duration::from_secs(10), |v| node(v, "s")["status"] == "running").await;
    let slow = invocation_of(&v, "s");
    let (s, v) = d.post(&format!("/v1/workflows/{id}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_eq!(v["counts"]["cancelled"], 2, "{v}");
    let i = d.result(&slow, Duration::from_secs(10)).await;
    assert_eq!(i["status"], "cancelled", "{i}");
    let (s, v) = d.post(&format!("/v1/workflows/{id}/pause"), &json!({})).await;
    assert_error(s, &v, StatusCode::CONFLICT, "final");
    d.stop().await;
}
both!(pause_resume, pause_and_resume);

async fn updated_since_sees_every_change(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("hostile", guests::HOSTILE).await;
    let mut nodes = Vec::new();
    for layer in 0..6 {
        for i in 0..5 {
            let mut n =
                json!({"id": format!("{layer}-{i}"), "task": "hello", "args": {"name": format!("{layer}-{i}")}});
            if layer > 0 {
                n["depends_on"] = json!([format!("{}-{i}", layer - 1), format!("{}-{}", layer - 1, (i + 1) % 5)]);
            }
            nodes.push(n);
        }
    }
    nodes.push(json!({"id": "bad", "task": "fatal"}));
    nodes.push(json!({"id": "after-bad", "task": "hello", "args": {"name": "b"}, "depends_on": ["bad"]}));
    let id = create(&d, json!({"max_concurrently_running": 3, "nodes": nodes})).await;
    let mut seen: HashMap<String, (Value, Value)> = HashMap::new();
    let mut since: Option<i64> = None;
    let mut polls = 0;
    loop {
        let status = summary(&d, &id).await["status"].clone();
        let path = match since {
            Some(t) => format!("/v1/workflows/{id}/nodes?updated_since={t}"),
            None => format!("/v1/workflows/{id}/nodes"),
        };
        let (s, v) = d.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        polls += 1;
        for n in v["nodes"].as_array().expect("nodes") {
            seen.insert(n["id"].as_str().expect("id").to_string(), (n["status"].clone(), n["invocation"].clone()));
        }
        since = Some(v["server_time"].as_i64().expect("server_time"));
        if ["done", "failed"].contains(&status.as_str().unwrap_or("")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let v = summary(&d, &id).await;
    assert_eq!(v["status"], "failed", "{v}");
    let all = v["nodes"].as_array().expect("nodes");
    assert_eq!(seen.len(), all.len());
    for n in all {
        let key = n["id"].as_str().expect("id");
        assert_eq!(seen[key], (n["status"].clone(), n["invocation"].clone()), "node {key} after {polls} polls");
    }
    d.stop().await;
}
both!(updated_since, updated_since_sees_every_change);

async fn array_within_its_limit(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let args: Vec<Value> = (0..200).map(|i| json!({"name": format!("n{i}")})).collect();
    let (s, v) = d
        .post("/v1/arrays", &json!({"task": "hello", "args": args, "max_concurrently_running": 5, "max_attempts": 2}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let v = wait_final(&d, &id, Duration::from_secs(60)).await;
    assert_eq!((v["status"].as_str(), v["kind"].as_str()), (Some("done"), Some("array")), "{v}");
    assert_eq!(v["counts"]["done"], 200, "{v}");
    let mut spans = Vec::new();
    for i in 0..200 {
        let inv = invocation_of(&v, &i.to_string());
        spans.push(span(&d, &inv).await);
    }
    let (_, one) = d.get(&format!("/v1/invocations/{}", invocation_of(&v, "7"))).await;
    assert_eq!((one["max_attempts"].as_i64(), one["result"]["greeting"].as_str()), (Some(2), Some("Hello, n7!")));
    let overlap = max_overlap(&spans);
    assert!(overlap <= 5, "{overlap} routed-not-final at once, limit 5");
    assert!(overlap > 1, "the array ran one at a time");
    d.stop().await;
}
both!(array_limit, array_within_its_limit);

/// Creates an array of `n` `hello` calls, limit `limit`, and returns its id and how long its
/// first `first` nodes took to be done (from the answer to the POST).
async fn first_done(d: &TestDaemon, n: usize, limit: u32, first: i64) -> (String, Duration) {
    let args: Vec<Value> = (0..n).map(|i| json!({"name": format!("n{i}")})).collect();
    let (s, v) = d.post("/v1/arrays", &json!({"task": "hello", "args": args, "max_concurrently_running": limit})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let t0 = Instant::now();
    loop {
        let (s, v) = d.get(&format!("/v1/workflows/{id}?nodes=false")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["counts"]["done"].as_i64().unwrap_or(0) >= first {
            return (id, t0.elapsed());
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "not {first} done after 120 s: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A step costs what it may start, not what is ready: the first 200 nodes of an array with
/// 50,000 ready nodes and room for 2 at a time (≈ 100 steps) take about as long as a whole
/// 200-node array with the same limit. A step that ranked or walked every ready node (as it
/// once did) costs tens of ms more per step at 50,000 ready nodes: ≥ 10 times slower here.
async fn step_cost_is_not_the_ready_nodes(b: Backend) {
    const FIRST: i64 = 200;
    const LIMIT: u32 = 2;
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    patch(&d, "hello", json!({"max_attempts": 1})).await;
    // Warm-up (component cache, statements), then the small array.
    first_done(&d, 20, LIMIT, 20).await;
    let (_, small) = first_done(&d, FIRST as usize, LIMIT, FIRST).await;
    let (big, large) = first_done(&d, 50_000, LIMIT, FIRST).await;
    let (s, v) = d.post(&format!("/v1/workflows/{big}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    eprintln!(
        "{FIRST} nodes at limit {LIMIT} on {b:?}: {:.2} s in an array of {FIRST}, {:.2} s in an array of 50,000",
        small.as_secs_f64(),
        large.as_secs_f64()
    );
    assert!(
        large <= small * 3 + Duration::from_secs(2),
        "the first {FIRST} of 50,000 ready nodes took {large:?}, a whole array of {FIRST} {small:?}: \
         a step costs what is ready again"
    );
    d.stop().await;
}
both!(step_cost, step_cost_is_not_the_ready_nodes);

async fn ten_thousand_nodes(b: Backend) {
    const LAYERS: usize = 100;
    const WIDTH: usize = 100;
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    patch(&d, "hello", json!({"max_attempts": 1})).await;
    let mut nodes = Vec::with_capacity(LAYERS * WIDTH);
    for l in 0..LAYERS {
        for i in 0..WIDTH {
            let mut n = json!({"id": format!("{l}.{i}"), "task": "hello", "args": {"name": format!("{l}.{i}")}});
            if l > 0 {
                let mut ups = vec![format!("{}.{i}", l - 1)];
                if i % 2 == 0 {
                    ups.push(format!("{}.{}", l - 1, (i * 7 + 3) % WIDTH));
                }
                n["depends_on"] = json!(ups);
            }
            nodes.push(n);
        }
    }
    let t0 = Instant::now();
    let id = create(&d, json!({"name": "big", "max_concurrently_running": 50, "nodes": nodes})).await;
    let created = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let v = loop {
        let (s, v) = d.get(&format!("/v1/workflows/{id}?nodes=false")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if ["done", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or("")) {
            break v;
        }
        assert!(Instant::now() < deadline, "not done after 300 s: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total = t0.elapsed();
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["counts"]["done"], (LAYERS * WIDTH) as i64, "{v}");
    let spans = spans_of_task(&d, "hello").await;
    assert_eq!(spans.len(), LAYERS * WIDTH);
    let overlap = max_overlap(&spans);
    let run = total - created;
    eprintln!(
        "10,000-node workflow on {b:?}: POST {:.2} s, done after {:.2} s ({:.2} s after the POST), {:.0} invocations/s, \
         at most {overlap} routed-not-final at once",
        created.as_secs_f64(),
        total.as_secs_f64(),
        run.as_secs_f64(),
        (LAYERS * WIDTH) as f64 / run.as_secs_f64(),
    );
    assert!(overlap <= 50, "{overlap} routed-not-final at once, limit 50");
    d.stop().await;
}
both!(ten_thousand, ten_thousand_nodes);
