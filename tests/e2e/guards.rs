//! Guards against stranded work and bad input, over HTTP on both backends: a component is
//! not deleted or replaced under its unfinished calls, absurd limits, names, crons and cursors
//! are refused with a clear 400, a workflow over `--max-workflow-nodes` or with a huge cycle
//! gets a short 400, and a 20,000-node array neither crawls nor slows unrelated calls.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::{assert_error, patch};
use crate::both;

async fn patch_status(d: &TestDaemon, task: &str, body: Value) -> (StatusCode, Value) {
    let r = d.http.patch(format!("{}/v1/tasks/{task}", d.url)).json(&body).send().await.expect("patch");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn delete(d: &TestDaemon, path: &str) -> (StatusCode, Value) {
    let r = d.http.delete(format!("{}{path}", d.url)).send().await.expect("delete");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn upload(d: &TestDaemon, name: &str, path: &str) -> (StatusCode, Value) {
    d.post_bytes(&format!("/v1/components?name={name}"), std::fs::read(path).expect("read component")).await
}

/// Deleting a component, or uploading a version without one of its tasks, is refused while
/// calls of those tasks are unfinished; once they are cancelled it goes through.
async fn components_keep_their_unfinished_calls(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("multi", guests::HOSTILE).await;
    patch(&d, "hello", json!({"paused": true})).await;
    patch(&d, "echo", json!({"paused": true})).await;
    let queued = [d.call("hello", json!({"name": "a"})).await, d.call("hello", json!({"name": "b"})).await];
    let echo = d.call("echo", json!({"x": 1})).await;

    let (s, v) = delete(&d, "/v1/components/hello").await;
    assert_error(s, &v, StatusCode::CONFLICT, "2 unfinished call");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("cancel")), "{v}");
    let (s, _) = d.get("/v1/tasks/hello").await;
    assert_eq!(s, StatusCode::OK, "the task is still there");
    // A new `multi` without `echo` (hello's component under the name) would strand the call.
    patch(&d, "hello", json!({"paused": false})).await;
    for id in &queued {
        d.result(id, Duration::from_secs(60)).await;
    }
    let (s, v) = delete(&d, "/v1/components/hello").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = upload(&d, "multi", guests::HELLO).await;
    assert_error(s, &v, StatusCode::CONFLICT, "task `echo`");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("1 unfinished call")), "{v}");
    let (s, v) = d.get("/v1/tasks/echo").await;
    assert_eq!(s, StatusCode::OK, "the old version stays: {v}");
    let (s, v) = d.post(&format!("/v1/invocations/{echo}/cancel"), &json!({})).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{v}");
    let (s, v) = upload(&d, "multi", guests::HELLO).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = d.get("/v1/tasks/echo").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    d.stop().await;
}
both!(component_guards, components_keep_their_unfinished_calls);

async fn absurd_input_is_refused(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    // Memory below what the component declares as its initial memory; attempts out of range.
    let (s, v) = patch_status(&d, "hello", json!({"memory_limit_bytes": 65_536})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "initial size of its largest memory");
    for bad in [0, 1_001, 4_000_000_000u32] {
        let (s, v) = patch_status(&d, "hello", json!({"max_attempts": bad})).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "between 1 and 1000");
    }
    let (s, v) = patch_status(&d, "hello", json!({"memory_limit_bytes": 8 << 20, "max_attempts": 1000})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(d.run("hello", json!({"name": "still"})).await["status"], "success");
    let (s, v) = d.post("/v1/arrays", &json!({"task": "hello", "args": [{}], "max_attempts": 5_000})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "between 1 and 1000");
    // Names that read as paths.
    for name in [".", ".."] {
        let (s, v) = upload(&d, name, guests::HELLO).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "not allowed");
    }
    // A cron that matches no date.
    let (s, v) = d.post("/v1/triggers", &json!({"task": "hello", "on": {"cron": "0 0 30 2 *"}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "never fires");
    let (s, v) = d.post("/v1/triggers", &json!({"task": "hello", "on": {"cron": "0 0 29 2 *"}})).await;
    assert_eq!(s, StatusCode::CREATED, "a leap day fires: {v}");
    // Cursors no page handed out.
    let (s, v) = d.get("/v1/invocations?cursor=garbage").await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "unknown cursor");
    let (s, v) = d.get("/v1/invocations?limit=1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let next = v["next_cursor"].as_str().expect("a cursor").to_string();
    let (s, v) = d.get(&format!("/v1/invocations?limit=1&cursor={next}")).await;
    assert_eq!(s, StatusCode::OK, "a cursor handed out works: {v}");
    let (s, v) = d.post("/v1/arrays", &json!({"task": "hello", "args": [{}]})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let wf = v["id"].as_str().expect("id").to_string();
    let (s, v) = d.get(&format!("/v1/workflows/{wf}/nodes?updated_since=garbage")).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "updated_since");
    d.stop().await;
}
both!(absurd_input, absurd_input_is_refused);

/// `--max-workflow-nodes` bounds workflows and arrays; a cycle through every node of a large
/// graph is named in a short message.
async fn workflow_size_and_cycles(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.max_workflow_nodes = 50).await;
    d.deploy("hello", guests::HELLO).await;
    let args: Vec<Value> = (0..51).map(|i| json!({"name": format!("n{i}")})).collect();
    let (s, v) = d.post("/v1/arrays", &json!({"task": "hello", "args": args})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "at most 50 nodes (--max-workflow-nodes)");
    let nodes: Vec<Value> = (0..51).map(|i| json!({"id": format!("n{i}"), "task": "hello"})).collect();
    let (s, v) = d.post("/v1/workflows", &json!({ "nodes": nodes })).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "this one has 51");
    d.stop().await;

    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let n = 20_000;
    let nodes: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("node-{i:05}"), "task": "hello", "depends_on": [format!("node-{:05}", (i + 1) % n)]}))
        .collect();
    let (s, v) = d.post("/v1/workflows", &json!({ "nodes": nodes })).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "a cycle of 20000 nodes");
    let len = v.to_string().len();
    assert!(len < 1_000, "{len} bytes: {v}");
    d.stop().await;
}
both!(workflow_limits, workflow_size_and_cycles);

/// A 20,000-node array on SQLite: the scheduler starts nodes at its pace (a step reads what it
/// may start, not every ready node) and an unrelated call (routing one, reading one) stays
/// fast meanwhile. The bounds are loose for a debug build on a shared machine; the release
/// figures are in ARCHITECTURE.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_array_does_not_slow_the_node() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| c.slots = 8).await;
    d.deploy("hello", guests::HELLO).await;
    patch(&d, "hello", json!({"max_attempts": 1})).await;
    let unrelated = d.run("hello", json!({"name": "unrelated"})).await;
    let unrelated = unrelated["id"].as_str().expect("id").to_string();
    let args: Vec<Value> = (0..20_000).map(|i| json!({"name": format!("n{i}")})).collect();
    let t0 = Instant::now();
    let (s, v) = d.post("/v1/arrays", &json!({"task": "hello", "args": args, "max_concurrently_running": 200})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let wf = v["id"].as_str().expect("id").to_string();
    let mut latencies = Vec::new();
    let mut done = 0;
    let mut k = 0;
    while done < 2_000 {
        // Before steps read only what they may start: ≈ 50 nodes/s here, 42 s for 2,000.
        assert!(t0.elapsed() < Duration::from_secs(30), "only {done} nodes done after {:?}", t0.elapsed());
        k += 1;
        let t = Instant::now();
        let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": format!("u{k}")}})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let (s, _) = d.get(&format!("/v1/invocations/{unrelated}")).await;
        assert_eq!(s, StatusCode::OK);
        latencies.push(t.elapsed());
        let (_, v) = d.get(&format!("/v1/workflows/{wf}?nodes=false")).await;
        done = v["counts"]["done"].as_i64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100).saturating_sub(1)];
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "20,000-node array (debug build): {done} done in {:.2} s ({:.0}/s); route + read of an unrelated call: \
         p50 {p50:?}, p99 {p99:?} over {} samples",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        latencies.len()
    );
    // Before: p50 ≈ 1 s, p99 ≈ 4.4 s; after: p99 ≈ 0.25 s on a loaded 2-core machine.
    assert!(p99 < Duration::from_secs(1), "unrelated calls slowed: p99 {p99:?}");
    let (s, v) = d.post(&format!("/v1/workflows/{wf}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    d.stop().await;
}
