//! pynenc's orchestration beyond the foundation, over HTTP on both backends: triggers (events,
//! statuses, results, failures, cron, composites; each run fires once), the atomic services'
//! execution records, `max_pending` recovery, running concurrency that drops or allows N at
//! once, registration concurrency that refuses different arguments, and a call tree deeper
//! and wider than the slots.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::{assert_error, owned_spans, patch};
use crate::both;

const MINUTE: Duration = Duration::from_secs(60);

async fn trigger(d: &TestDaemon, body: Value) -> String {
    let (s, v) = d.post("/v1/triggers", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().expect("trigger id").to_string()
}

/// Waits until trigger `id` has at least `n` runs, each with its invocation; returns them.
async fn runs_of(d: &TestDaemon, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = d.get(&format!("/v1/triggers/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let runs = v["runs"].as_array().expect("runs").clone();
        if runs.len() >= n {
            return runs;
        }
        assert!(Instant::now() < deadline, "trigger {id} ran {} times, expected {n}: {v}", runs.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn final_of(d: &TestDaemon, run: &Value) -> Value {
    let id = run["invocation_id"].as_str().unwrap_or_else(|| panic!("run without invocation: {run}"));
    d.result(id, MINUTE).await
}

async fn triggers_fire_once_per_cause(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("hostile", guests::HOSTILE).await;

    // Bad definitions are refused with the cause.
    let (s, v) = d.post("/v1/triggers", &json!({"task": "hello", "on": {"cron": "61 * * * *"}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "cron");
    let (s, v) = d.post("/v1/triggers", &json!({"task": "hello", "on": {"cron": "* * *"}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "5");
    let (s, v) = d.post("/v1/triggers", &json!({"task": "nope", "on": {"event": "x"}})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    let (s, v) =
        d.post("/v1/triggers", &json!({"task": "hello", "args_from": "event", "on": {"cron": "* * * * *"}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "args_from");
    let (s, v) = d.post("/v1/triggers", &json!({"task": "hello", "on": {"sometimes": true}})).await;
    assert!(s.is_client_error(), "{s} {v}");

    // Event → the payload becomes the arguments.
    let on_deploy = trigger(&d, json!({"task": "hello", "args_from": "event", "on": {"event": "deploy"}})).await;
    let (s, v) = d.post("/v1/events", &json!({"code": "deploy", "payload": {"name": "Ada"}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let runs = runs_of(&d, &on_deploy, 1).await;
    let inv = final_of(&d, &runs[0]).await;
    assert_eq!(inv["result"], json!({"greeting": "Hello, Ada!"}), "{inv}");

    // Status of a task → its result becomes the arguments (echo returns its arguments).
    let on_echo = trigger(
        &d,
        json!({"task": "hello", "args_from": "result", "on": {"status": {"task": "echo", "statuses": ["success"]}}}),
    )
    .await;
    // Failure of a task, of one kind → static arguments.
    let on_fatal = trigger(
        &d,
        json!({"task": "hello", "args": {"name": "failure"}, "on": {"failure": {"task": "fatal", "kinds": ["fatal"]}}}),
    )
    .await;
    // All of two events → fires once both were seen.
    let on_both = trigger(
        &d,
        json!({"task": "hello", "args": {"name": "both"}, "on": {"all": [{"event": "a"}, {"event": "b"}]}}),
    )
    .await;
    d.run("echo", json!({"name": "chained"})).await;
    d.run("fatal", json!({})).await;
    let inv = final_of(&d, &runs_of(&d, &on_echo, 1).await[0]).await;
    assert_eq!(inv["result"], json!({"greeting": "Hello, chained!"}), "{inv}");
    let inv = final_of(&d, &runs_of(&d, &on_fatal, 1).await[0]).await;
    assert_eq!(inv["result"], json!({"greeting": "Hello, failure!"}), "{inv}");

    d.post("/v1/events", &json!({"code": "a"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = d.get(&format!("/v1/triggers/{on_both}")).await;
    assert_eq!(v["runs"], json!([]), "`all` fired on one of two events: {v}");
    d.post("/v1/events", &json!({"code": "b"})).await;
    let inv = final_of(&d, &runs_of(&d, &on_both, 1).await[0]).await;
    assert_eq!(inv["result"], json!({"greeting": "Hello, both!"}), "{inv}");

    // Many evaluations later, every cause fired exactly once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (id, want) in [(&on_deploy, 1), (&on_echo, 1), (&on_fatal, 1), (&on_both, 1)] {
        let (_, v) = d.get(&format!("/v1/triggers/{id}")).await;
        assert_eq!(v["runs"].as_array().expect("runs").len(), want, "{v}");
    }
    let (_, count) = d.get("/v1/invocations/count?task=hello").await;
    let total: i64 = count["counts"].as_array().expect("counts").iter().filter_map(|c| c["count"].as_i64()).sum();
    assert_eq!(total, 4, "one hello per firing: {count}");

    // Cron (a 6-field expression with seconds, so the test need not wait a minute): fires each
    // second, each time with its own run; deleting the trigger stops it.
    let every_second =
        trigger(&d, json!({"task": "hello", "args": {"name": "cron"}, "on": {"cron": "* * * * * *"}})).await;
    let runs = runs_of(&d, &every_second, 2).await;
    assert_ne!(runs[0]["run_key"], runs[1]["run_key"]);
    assert!(runs[0]["run_key"].as_str().expect("key").starts_with("cron:"), "{runs:?}");
    let r = d.http.delete(format!("{}/v1/triggers/{every_second}", d.url)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = d.get(&format!("/v1/triggers/{every_second}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = d.get("/v1/triggers").await;
    assert_eq!(list["triggers"].as_array().expect("triggers").len(), 4, "{list}");

    // The atomic services left execution records, all of this node and completed.
    let (_, v) = d.get("/v1/services/runs?limit=5").await;
    let records = v["runs"].as_array().expect("runs");
    assert!(!records.is_empty(), "{v}");
    assert!(records.iter().all(|r| r["node"] == "local"), "{v}");
    assert!(records.iter().any(|r| r["status"] == "completed" && r["detail"]["errors"] == json!([])), "{v}");
    d.stop().await;
}
both!(triggers, triggers_fire_once_per_cause);

/// Invocations claimed but not started for longer than `max_pending` are rerouted (pynenc's
/// `pending_recovery`) and still complete.
async fn pending_too_long_is_rerouted(b: Backend) {
    let d = TestDaemon::start_with(b, |c| {
        c.slots = 1;
        c.max_pending_ms = 300;
    })
    .await;
    d.deploy("slow", guests::SLOW).await;
    let ids: Vec<String> = futures_ids(&d, 3).await;
    let mut recovered = 0;
    for id in &ids {
        let v = d.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        let (_, h) = d.get(&format!("/v1/invocations/{id}/history")).await;
        let h: Vec<&str> =
            h["history"].as_array().expect("history").iter().filter_map(|e| e["status"].as_str()).collect();
        if h.windows(2).any(|w| w == ["pending_recovery", "rerouted"]) {
            recovered += 1;
        }
    }
    assert!(recovered >= 1, "a call waited pending behind a 700 ms one on a single slot, yet was not recovered");
    d.stop().await;
}
both!(max_pending_recovery, pending_too_long_is_rerouted);

async fn futures_ids(d: &TestDaemon, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(d.call("slow", json!({"ms": 700 + i})).await);
    }
    ids
}

async fn concurrency_options(b: Backend) {
    let d = TestDaemon::start(b).await; // 4 slots
    d.deploy("slow", guests::SLOW).await;
    d.deploy("hostile", guests::HOSTILE).await;

    // Drop instead of reroute: a call blocked by a running one of its scope ends
    // `concurrency_controlled_final`.
    patch(&d, "slow", json!({"running_concurrency": "task", "reroute_on_concurrency_control": false})).await;
    let first = d.call("slow", json!({"ms": 1500})).await;
    let second = d.call("slow", json!({"ms": 10})).await;
    let v = d.result(&second, MINUTE).await;
    assert_eq!(v["status"], "concurrency_controlled_final", "{v}");
    let v = d.result(&first, MINUTE).await;
    assert_eq!(v["status"], "success", "{v}");
    let (_, t) = d.get("/v1/tasks/slow").await;
    assert_eq!(t["reroute_on_concurrency_control"], false, "{t}");

    // N at once: with two running slots per scope, never more than two run at once.
    patch(&d, "slow", json!({"reroute_on_concurrency_control": true, "running_concurrency_slots": 2})).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(d.call("slow", json!({"ms": 200 + i})).await);
    }
    let spans = owned_spans(&d, &ids).await;
    for &(start, _) in &spans {
        let owned = spans.iter().filter(|&&(s, e)| s <= start && start < e).count();
        assert!(owned <= 2, "{owned} owned at once with 2 slots per scope: {spans:?}");
    }

    // Registration concurrency by keys that refuses different other arguments: 409.
    patch(
        &d,
        "echo",
        json!({"registration_concurrency": "keys", "key_arguments": ["user"], "on_diff_non_key_args_raise": true, "paused": true}),
    )
    .await;
    let (s, e1) = d.post("/v1/invocations", &json!({"task": "echo", "args": {"user": "u", "n": 1}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e1}");
    let (s, e2) = d.post("/v1/invocations", &json!({"task": "echo", "args": {"user": "u", "n": 1}})).await;
    assert_eq!((s, &e2["id"]), (StatusCode::ACCEPTED, &e1["id"]), "the same call still reuses: {e2}");
    let (s, v) = d.post("/v1/invocations", &json!({"task": "echo", "args": {"user": "u", "n": 2}})).await;
    assert_error(s, &v, StatusCode::CONFLICT, "different");
    d.stop().await;
}
both!(concurrency_policies, concurrency_options);

/// A call tree of depth 3 and width 4 (85 invocations, 21 of them waiting on children) on two
/// slots: waiting parents give their slots back, so it completes.
async fn deep_wide_tree_completes_on_few_slots(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.slots = 2).await;
    d.deploy("fanout", guests::FANOUT).await;
    let v = d.run("tree", json!({"depth": 3, "width": 4})).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["result"], json!({"leaves": 64}), "{v}");
    let (_, c) = d.get("/v1/invocations/count?task=tree").await;
    let total: i64 = c["counts"].as_array().expect("counts").iter().filter_map(|c| c["count"].as_i64()).sum();
    assert_eq!(total, 85, "{c}");
    d.stop().await;
}
both!(deep_wide_fanout, deep_wide_tree_completes_on_few_slots);

/// Jobmon's resource-scaling retry: a guest that needs 40 MiB under a 32 MiB limit fails its
/// first attempt with `memory_limit` (instance `resource_error`) and succeeds on the retry,
/// which runs with the limit grown by 50% (48 MiB). With scaling off, every attempt fails.
async fn resource_errors_retry_with_larger_limits(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.retry_base_ms = 20).await;
    d.deploy("hostile", guests::HOSTILE).await;
    let v = d.run("needs_memory", json!({"mb": 40})).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["attempts"], 2, "{v}");
    let (_, inst) = d.get(&format!("/v1/invocations/{}/instances", v["id"].as_str().expect("id"))).await;
    let statuses: Vec<&str> =
        inst["instances"].as_array().expect("instances").iter().filter_map(|i| i["status"].as_str()).collect();
    assert_eq!(statuses, ["resource_error", "done"], "{inst}");

    patch(&d, "needs_memory", json!({"resource_scale_percent": 0, "max_attempts": 2})).await;
    let v = d.run("needs_memory", json!({"mb": 41})).await;
    assert_eq!((&v["status"], &v["error"]["kind"]), (&json!("failed"), &json!("memory_limit")), "{v}");

    // The task's history suggests limits: at least what its successful attempt used.
    let (s, r) = d.get("/v1/tasks/needs_memory/resources").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["attempts"], 4, "{r}");
    assert_eq!(r["by_status"], json!({"done": 1, "resource_error": 3}), "{r}");
    let suggested = r["suggested"]["memory_limit_bytes"].as_i64().expect("suggestion");
    assert!(suggested > 40 << 20, "a 40 MiB guest needs more than 40 MiB: {r}");
    let (s, r) = d.get("/v1/tasks/nope/resources").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{r}");
    d.stop().await;
}
both!(resource_scaling_retries, resource_errors_retry_with_larger_limits);
