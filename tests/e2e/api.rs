//! The daemon over HTTP: the foundation's user journeys, bad input and hostile guests, on both
//! backends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::both;

const MINUTE: Duration = Duration::from_secs(60);

async fn hello_end_to_end(b: Backend) {
    let d = TestDaemon::start(b).await;
    let up = d.deploy("hello", guests::HELLO).await;
    assert_eq!(up["name"], "hello");
    assert_eq!(up["digest"].as_str().map(str::len), Some(64), "{up}");
    assert_eq!(up["tasks"][0]["name"], "hello", "{up}");

    let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "Ada"}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "registered");
    assert_eq!(v["reused"], false);
    let id = v["id"].as_str().expect("id").to_string();

    let (s, v) = d.get(&format!("/v1/invocations/{id}/result?timeout_ms=5000")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["result"], json!({"greeting": "Hello, Ada!"}));
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["args"], json!({"name": "Ada"}));

    let (s, h) = d.get(&format!("/v1/invocations/{id}/history")).await;
    assert_eq!(s, StatusCode::OK);
    let statuses: Vec<&str> =
        h["history"].as_array().expect("history").iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["registered", "pending", "running", "success"]);

    let (s, v) = d.get("/v1/components").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["components"][0]["name"], "hello");
    let (s, v) = d.get("/v1/tasks").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tasks"][0]["name"], "hello");
    let (s, _) = d.get("/health/live").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = d.get("/health/ready").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Removing the component removes its tasks but keeps the invocations' record.
    let r = d.http.delete(format!("{}/v1/components/hello", d.url)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = d.get("/v1/tasks/hello").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "Ada"}})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = d.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("success")), "{v}");
    d.stop().await;
}
both!(hello, hello_end_to_end);

async fn examples_and_retries(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("math", guests::MATH).await;
    d.deploy("flaky", guests::FLAKY).await;
    d.deploy("slow", guests::SLOW).await;

    let v = d.run("primes", json!({"below": 100})).await;
    assert_eq!(v["result"], json!({"count": 25}), "{v}");

    // Retryable errors are retried until the guest succeeds, each attempt counted.
    let v = d.run("flaky", json!({"fail_times": 2})).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["result"], json!({"attempt": 3}));
    assert_eq!(v["attempts"], 3);
    let (_, h) = d.get(&format!("/v1/invocations/{}/history", v["id"].as_str().unwrap_or_default())).await;
    let retries = h["history"].as_array().map(|a| a.iter().filter(|e| e["status"] == "retry").count());
    assert_eq!(retries, Some(2), "{h}");

    // … but never beyond the task's max attempts.
    patch(&d, "flaky", json!({"max_attempts": 2})).await;
    let v = d.run("flaky", json!({"fail_times": 5})).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["attempts"], 2);
    assert_eq!(v["error"]["kind"], "retryable", "{v}");

    let v = d.run("slow", json!({"ms": 200})).await;
    assert_eq!(v["status"], "success", "{v}");
    d.stop().await;
}
both!(examples, examples_and_retries);

async fn batch_list_count(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let calls: Vec<Value> = (0..200).map(|i| json!({"task": "hello", "args": {"name": format!("n{i}")}})).collect();
    let (s, v) = d.post("/v1/invocations/batch", &json!({ "calls": calls })).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let ids: Vec<String> = v["invocations"]
        .as_array()
        .expect("invocations")
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 200);
    for id in &ids {
        let r = d.result(id, MINUTE).await;
        assert_eq!(r["status"], "success", "{r}");
    }
    let (_, c) = d.get("/v1/invocations/count?task=hello&status=success").await;
    assert_eq!(c["total"], 200, "{c}");

    // Pages of 64, newest first, cover everything exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/invocations?task=hello&limit=64&cursor={c}"),
            None => "/v1/invocations?task=hello&limit=64".to_string(),
        };
        let (s, page) = d.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        seen.extend(
            page["invocations"]
                .as_array()
                .expect("page")
                .iter()
                .map(|i| i["id"].as_str().unwrap_or_default().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected);
    let (s, v) = d.get("/v1/invocations?status=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    d.stop().await;
}
both!(batch, batch_list_count);

pub(crate) fn assert_error(s: StatusCode, v: &Value, want: StatusCode, needle: &str) {
    assert_eq!(s, want, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("not the error shape: {v}"));
    assert!(v["error"]["code"].is_string(), "{v}");
    assert!(msg.to_lowercase().contains(needle), "`{msg}` does not mention `{needle}`");
}

async fn bad_input(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.max_upload_bytes = 8 * 1024 * 1024).await;
    let (s, v) = d.post_bytes("/v1/components?name=junk", b"definitely not wasm".to_vec()).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "component");
    let (s, v) = d.post_bytes("/v1/components?name=core", b"\0asm\x01\0\0\0".to_vec()).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "core");
    let bytes = std::fs::read(guests::NOHANDLER).expect("nohandler");
    let (s, v) = d.post_bytes("/v1/components?name=nohandler", bytes).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "warden:task/handler");
    // The daemon answers 413 before reading the whole body and closes that connection, so this
    // upload gets a client of its own (a pooled connection would be dead for the next request).
    let big = warden_tests::harness::Api::new(&d.url);
    let (s, v) = big.post_bytes("/v1/components?name=big", vec![0u8; 9 * 1024 * 1024]).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "large");
    let (s, v) = d.post_bytes("/v1/components", b"x".to_vec()).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "name");

    d.deploy("hello", guests::HELLO).await;
    let (s, v) = d.post("/v1/invocations", &json!({"task": "nope", "args": {}})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    let r = d
        .http
        .post(format!("{}/v1/invocations", d.url))
        .header("content-type", "application/json")
        .body("{\"task\": \"hello\", ")
        .send()
        .await
        .expect("post");
    let s = r.status();
    let v: Value = r.json().await.expect("json");
    assert_error(s, &v, StatusCode::BAD_REQUEST, "");
    let r = d.http.delete(format!("{}/v1/tasks", d.url)).send().await.expect("delete");
    let s = r.status();
    assert_error(s, &r.json().await.expect("json"), StatusCode::METHOD_NOT_ALLOWED, "method");
    let (s, v) = d.get("/v1/nothing-here").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "route");
    let (s, v) = d.get("/v1/invocations/does-not-exist").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "does-not-exist");

    // Arguments the task rejects: a failed invocation with invalid_args, not retried.
    let v = d.run("hello", json!({"nom": 1})).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["kind"], "invalid_args", "{v}");
    assert_eq!(v["attempts"], 1);

    // Nothing was lost and the daemon still serves.
    let v = d.run("hello", json!({"name": "still here"})).await;
    assert_eq!(v["status"], "success", "{v}");
    d.stop().await;
}
both!(bad_input_gets_clear_errors, bad_input);

/// Waits for each invocation to succeed and returns when it was owned: (`pending`, `success`)
/// times from its history.
pub(crate) async fn owned_spans(d: &TestDaemon, ids: &[String]) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    for id in ids {
        let v = d.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        let (_, h) = d.get(&format!("/v1/invocations/{id}/history")).await;
        let h = h["history"].as_array().expect("history").clone();
        let at = |s: &str| h.iter().find(|e| e["status"] == s).and_then(|e| e["at"].as_i64()).expect(s);
        spans.push((at("pending"), at("success")));
    }
    spans
}

pub(crate) async fn patch(d: &TestDaemon, task: &str, body: Value) {
    let r = d.http.patch(format!("{}/v1/tasks/{task}", d.url)).json(&body).send().await.expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn hostile_guests(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hostile", guests::HOSTILE).await;
    d.deploy("hello", guests::HELLO).await;
    for t in ["spin", "hog", "sleeper"] {
        patch(&d, t, json!({"max_attempts": 1})).await;
    }

    // An endless loop fails with a timeout within its timeout (1 s) plus one second, and the
    // daemon keeps serving meanwhile.
    let t0 = Instant::now();
    let spin = d.call("spin", json!({})).await;
    let v = d.run("hello", json!({"name": "during spin"})).await;
    assert_eq!(v["status"], "success", "{v}");
    let v = d.result(&spin, MINUTE).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
    assert!(t0.elapsed() < Duration::from_millis(2_500), "spin took {:?}", t0.elapsed());

    let t0 = Instant::now();
    let v = d.run("sleeper", json!({"ms": 60_000})).await;
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
    assert!(t0.elapsed() < Duration::from_millis(2_500), "sleeper took {:?}", t0.elapsed());

    let v = d.run("hog", json!({})).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["kind"], "memory_limit", "{v}");

    let v = d.run("chatty", json!({"bytes": 5_000_000})).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["result"], json!({"printed": 5_000_000}));

    let v = d.run("bigresult", json!({})).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["kind"], "bad_result", "{v}");

    // The sandbox grants nothing: no environment, no arguments, no host files, no network.
    let v = d.run("snoop", json!({})).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(
        v["result"],
        json!({"env": [], "args": [], "files": [], "network": [], "dns": false}),
        "the guest saw host resources"
    );

    let v = d.run("fatal", json!({})).await;
    assert_eq!(v["error"]["kind"], "fatal", "{v}");
    assert_eq!(v["attempts"], 1, "fatal errors are not retried: {v}");

    let (s, _) = d.get("/health/ready").await;
    assert_eq!(s, StatusCode::OK);
    d.stop().await;
}
both!(hostile_guests_are_contained, hostile_guests);

async fn restart_keeps_everything(b: Backend) {
    let mut d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let v = d.run("hello", json!({"name": "before"})).await;
    let id = v["id"].as_str().expect("id").to_string();
    patch(&d, "hello", json!({"max_attempts": 7})).await;
    d.restart().await;

    let (s, v) = d.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"], json!({"greeting": "Hello, before!"}));
    let (_, t) = d.get("/v1/tasks/hello").await;
    assert_eq!(t["max_attempts"], 7, "{t}");
    let (_, c) = d.get("/v1/components/hello").await;
    assert_eq!(c["name"], "hello", "{c}");
    let v = d.run("hello", json!({"name": "after"})).await;
    assert_eq!(v["result"], json!({"greeting": "Hello, after!"}), "{v}");
    d.stop().await;
}
both!(restart, restart_keeps_everything);

async fn fanout_waits_on_children(b: Backend) {
    // Fewer slots than waiting parents: a waiting parent must give its slot back.
    let d = TestDaemon::start_with(b, |c| c.slots = 2).await;
    d.deploy("fanout", guests::FANOUT).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(d.call("fanout", json!({"n": 10})).await);
    }
    for id in &ids {
        let v = d.result(id, MINUTE).await;
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["result"], json!({"sum": 285}), "{v}");
        let (_, h) = d.get(&format!("/v1/invocations/{id}/history")).await;
        let statuses: Vec<&str> =
            h["history"].as_array().expect("history").iter().filter_map(|e| e["status"].as_str()).collect();
        assert!(statuses.windows(3).any(|w| w == ["paused", "resumed", "running"]), "{statuses:?}");
    }
    // Children are ordinary invocations with their parent recorded and deterministic ids.
    let child = format!("{}.000003", ids[0]);
    let (s, v) = d.get(&format!("/v1/invocations/{child}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["parent"], ids[0].as_str());
    assert_eq!(v["result"], json!({"y": 9}));
    let (s, v) = d.get(&format!("/v1/invocations/{}/children", ids[0])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kids = v["children"].as_array().expect("children");
    assert_eq!(kids.len(), 10, "{v}");
    let ys: Vec<i64> = kids.iter().map(|k| k["result"]["y"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(ys, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81], "children come back in call order");
    d.stop().await;
}
both!(fanout, fanout_waits_on_children);

async fn cancel_and_rerun(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.slots = 1).await;
    d.deploy("slow", guests::SLOW).await;
    // One slot: the first call runs, the second waits its turn.
    let running = d.call("slow", json!({"ms": 20_000})).await;
    let waiting = d.call("slow", json!({"ms": 10})).await;
    for _ in 0..400 {
        let (_, v) = d.get(&format!("/v1/invocations/{running}")).await;
        if v["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let t0 = Instant::now();
    let (s, v) = d.post(&format!("/v1/invocations/{waiting}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled", "{v}");
    let (s, v) = d.post(&format!("/v1/invocations/{running}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled", "a running guest is interrupted: {v}");
    assert_eq!(v["error"]["kind"], "cancelled", "{v}");
    assert!(t0.elapsed() < Duration::from_secs(3), "cancel took {:?}", t0.elapsed());

    // The waiting one never ran, and cancelling a final invocation changes nothing.
    let (_, v) = d.get(&format!("/v1/invocations/{waiting}")).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    let (s, again) = d.post(&format!("/v1/invocations/{running}/cancel"), &json!({})).await;
    assert_eq!((s, &again["status"]), (StatusCode::OK, &json!("cancelled")), "{again}");

    // Rerun routes the same call again as a new invocation.
    let (s, v) = d.post(&format!("/v1/invocations/{waiting}/rerun"), &json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let new_id = v["id"].as_str().expect("id");
    assert_ne!(new_id, waiting);
    let v = d.result(new_id, MINUTE).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["args"], json!({"ms": 10}));

    let (s, v) = d.post("/v1/invocations/nope/cancel", &json!({})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    d.stop().await;
}
both!(cancel_rerun, cancel_and_rerun);

async fn retries_back_off(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.retry_base_ms = 400).await;
    d.deploy("flaky", guests::FLAKY).await;
    let v = d.run("flaky", json!({"fail_times": 2})).await;
    assert_eq!(v["result"], json!({"attempt": 3}), "{v}");
    let (_, h) = d.get(&format!("/v1/invocations/{}/history", v["id"].as_str().expect("id"))).await;
    let h = h["history"].as_array().expect("history").clone();
    // Each retry waits at least half its ceiling: 200 ms after the first failure, 400 ms after
    // the second (the database clock stamps every row).
    let mut waits = Vec::new();
    for (i, e) in h.iter().enumerate() {
        if e["status"] == "retry" {
            let next = h[i + 1..].iter().find(|n| n["status"] == "pending").expect("claimed again");
            waits.push(next["at"].as_i64().unwrap_or(0) - e["at"].as_i64().unwrap_or(0));
        }
    }
    assert_eq!(waits.len(), 2, "{h:?}");
    assert!(waits[0] >= 200 && waits[1] >= 400, "backoff waits {waits:?}");
    assert!(waits[0] < 2_000 && waits[1] < 2_000, "backoff waits {waits:?}");
    d.stop().await;
}
both!(retry_backoff, retries_back_off);

async fn post_keyed(d: &TestDaemon, key: &str, body: Value) -> (StatusCode, Value) {
    let r = d
        .http
        .post(format!("{}/v1/invocations", d.url))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("post");
    let s = r.status();
    (s, r.json().await.expect("json"))
}

async fn registration_concurrency_and_idempotency(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("hostile", guests::HOSTILE).await;
    // Paused tasks are not claimed, so their invocations stay `registered`.
    patch(&d, "hello", json!({"registration_concurrency": "arguments", "paused": true})).await;
    patch(&d, "echo", json!({"registration_concurrency": "keys", "key_arguments": ["user"], "paused": true})).await;

    let (_, a1) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "a"}})).await;
    let (_, a2) = d.post("/v1/invocations", &json!({"args": {"name": "a"}, "task": "hello"})).await;
    let (_, b1) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "b"}})).await;
    assert_eq!((a1["reused"].clone(), a2["reused"].clone()), (json!(false), json!(true)), "{a1} {a2}");
    assert_eq!(a1["id"], a2["id"]);
    assert_ne!(a1["id"], b1["id"]);
    let calls = json!({"calls": [{"task": "hello", "args": {"name": "c"}}, {"task": "hello", "args": {"name": "c"}}]});
    let (s, batch) = d.post("/v1/invocations/batch", &calls).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{batch}");
    let items = batch["invocations"].as_array().expect("items");
    assert_eq!(items[0]["id"], items[1]["id"], "{batch}");
    assert_eq!((items[0]["reused"].clone(), items[1]["reused"].clone()), (json!(false), json!(true)));

    // Keys: same key argument, other arguments differ → the waiting invocation answers.
    let (_, e1) = d.post("/v1/invocations", &json!({"task": "echo", "args": {"user": "u", "n": 1}})).await;
    let (_, e2) = d.post("/v1/invocations", &json!({"task": "echo", "args": {"user": "u", "n": 2}})).await;
    assert_eq!(e1["id"], e2["id"], "{e1} {e2}");
    assert_eq!(e2["reused"], true);
    let (s, v) = d.post("/v1/invocations", &json!({"task": "echo", "args": {"n": 3}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "key argument");

    // Once it ran, the scope is free again: a new call makes a new invocation.
    patch(&d, "hello", json!({"paused": false})).await;
    let done = d.result(a1["id"].as_str().expect("id"), MINUTE).await;
    assert_eq!(done["status"], "success", "{done}");
    let (_, a3) = d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "a"}})).await;
    assert_ne!(a3["id"], a1["id"]);
    assert_eq!(a3["reused"], false);

    // Idempotency keys: the same key and call answer with the same invocation, for ever; a
    // different call under a used key is refused.
    let (s, k1) = post_keyed(&d, "order-42", json!({"task": "hello", "args": {"name": "k"}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{k1}");
    let first = d.result(k1["id"].as_str().expect("id"), MINUTE).await;
    assert_eq!(first["status"], "success");
    let (s, k2) = post_keyed(&d, "order-42", json!({"task": "hello", "args": {"name": "k"}})).await;
    assert_eq!((s, &k2["id"], &k2["reused"]), (StatusCode::ACCEPTED, &k1["id"], &json!(true)), "{k2}");
    let (s, v) = post_keyed(&d, "order-42", json!({"task": "hello", "args": {"name": "other"}})).await;
    assert_error(s, &v, StatusCode::UNPROCESSABLE_ENTITY, "order-42");
    let (s, k3) = d
        .post(
            "/v1/invocations",
            &json!({"task": "hello", "args": {"name": "k"}, "options": {"idempotency_key": "order-42"}}),
        )
        .await;
    assert_eq!((s, &k3["id"]), (StatusCode::ACCEPTED, &k1["id"]), "{k3}");
    let (s, v) = d.post("/v1/invocations", &json!({"task": "hello", "args": {}, "options": {"retries": 3}})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "retries");
    d.stop().await;
}
both!(call_identity, registration_concurrency_and_idempotency);

async fn final_invocations_are_purged_after_retention(b: Backend) {
    let d = TestDaemon::start_with(b, |c| {
        c.retention_ms = 300;
        c.purge_interval_ms = 100;
    })
    .await;
    d.deploy("hello", guests::HELLO).await;
    let done = d.run("hello", json!({"name": "old"})).await;
    let id = done["id"].as_str().expect("id").to_string();
    patch(&d, "hello", json!({"paused": true})).await;
    let waiting2 = d.call("hello", json!({"name": "still waiting"})).await;

    let mut gone = false;
    for _ in 0..100 {
        let (s, _) = d.get(&format!("/v1/invocations/{id}")).await;
        if s == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a final invocation past its retention was not purged");
    let (s, _) = d.get(&format!("/v1/invocations/{id}/history")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Work that is not final is never purged, however old.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, v) = d.get(&format!("/v1/invocations/{waiting2}")).await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("registered")), "{v}");
    d.stop().await;
}
both!(auto_purge, final_invocations_are_purged_after_retention);

async fn running_concurrency_serialises_a_scope(b: Backend) {
    let d = TestDaemon::start(b).await; // 4 slots
    d.deploy("slow", guests::SLOW).await;
    d.deploy("hello", guests::HELLO).await;
    patch(&d, "slow", json!({"running_concurrency": "task"})).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(d.call("slow", json!({"ms": 150 + i})).await);
    }
    // Other tasks are not held up by the serialised one.
    let other = d.run("hello", json!({"name": "free"})).await;
    assert_eq!(other["status"], "success", "{other}");

    // Each invocation is owned (pending … success) alone: the intervals never overlap.
    let mut spans = owned_spans(&d, &ids).await;
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "two invocations of a serialised task were owned at once: {spans:?}");
    }
    // And the next one starts when the scope frees, not at the dispatcher's next poll (500 ms).
    let gaps: Vec<i64> = spans.windows(2).map(|w| w[1].0 - w[0].1).collect();
    let mut sorted = gaps.clone();
    sorted.sort();
    assert!(
        sorted[sorted.len() / 2] < 200,
        "a serialised call waited for a poll after its scope freed: gaps {gaps:?} ms"
    );
    d.stop().await;
}
both!(running_concurrency, running_concurrency_serialises_a_scope);

/// A call held back by running concurrency says why (`waiting`: the policy and the holder),
/// and its history records `concurrency_controlled` once, however many claims skip it.
async fn a_blocked_call_says_why_it_waits(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("slow", guests::SLOW).await;
    patch(&d, "slow", json!({"running_concurrency": "task"})).await;
    let holder = d.call("slow", json!({"ms": 1500})).await;
    let blocked = d.call("slow", json!({"ms": 10})).await;
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let (_, v) = d.get(&format!("/v1/invocations/{blocked}")).await;
        if v["waiting"]["since"].is_i64() {
            break v;
        }
        assert!(std::time::Instant::now() < end, "never said why it waits: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(waiting["status"], "registered", "{waiting}");
    assert_eq!(waiting["waiting"]["reason"], "running_concurrency", "{waiting}");
    assert_eq!(waiting["waiting"]["policy"], "task", "{waiting}");
    assert_eq!(waiting["waiting"]["held_by"], json!(holder), "{waiting}");
    let v = d.result(&blocked, Duration::from_secs(30)).await;
    assert_eq!(v["status"], "success", "{v}");
    assert!(v.get("waiting").is_none(), "a final call does not wait: {v}");
    let (_, h) = d.get(&format!("/v1/invocations/{blocked}/history")).await;
    let statuses: Vec<&str> =
        h["history"].as_array().expect("history").iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["registered", "concurrency_controlled", "pending", "running", "success"], "{h}");
    d.stop().await;
}
both!(blocked_call_says_why, a_blocked_call_says_why_it_waits);

async fn attempts_are_recorded_with_their_output(b: Backend) {
    let d = TestDaemon::start_with(b, |c| c.retry_base_ms = 20).await;
    d.deploy("flaky", guests::FLAKY).await;
    d.deploy("hostile", guests::HOSTILE).await;
    patch(&d, "hog", json!({"max_attempts": 1})).await;

    let v = d.run("flaky", json!({"fail_times": 2})).await;
    let id = v["id"].as_str().expect("id");
    let (s, inst) = d.get(&format!("/v1/invocations/{id}/instances")).await;
    assert_eq!(s, StatusCode::OK, "{inst}");
    let rows = inst["instances"].as_array().expect("instances");
    let seen: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|r| {
            (r["attempt"].as_i64().unwrap_or(0), r["status"].as_str().unwrap_or(""), r["node"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(seen, [(1, "error", "local"), (2, "error", "local"), (3, "done", "local")], "{inst}");
    assert_eq!(rows[0]["error"]["kind"], "retryable", "{inst}");
    let (_, logs) = d.get(&format!("/v1/invocations/{id}/logs")).await;
    assert_eq!(logs["attempts"][0]["logs"][0]["level"], "warn", "{logs}");
    assert_eq!(logs["attempts"][0]["logs"][0]["message"], "attempt 1 fails on purpose", "{logs}");

    // Output is kept per attempt, cut to its last 10,000 bytes.
    let v = d.run("chatty", json!({"bytes": 50_000})).await;
    let (_, logs) = d.get(&format!("/v1/invocations/{}/logs", v["id"].as_str().expect("id"))).await;
    let a = &logs["attempts"][0];
    assert_eq!(a["output_truncated"], true, "{logs}");
    let out = a["stdout"].as_str().expect("stdout");
    assert!(!out.is_empty() && out.len() <= 10_000, "stdout kept {} bytes", out.len());
    assert!(!a["stderr"].as_str().expect("stderr").is_empty());

    // Limits are resource errors, with the memory the attempt reached.
    let v = d.run("hog", json!({})).await;
    let (_, inst) = d.get(&format!("/v1/invocations/{}/instances", v["id"].as_str().expect("id"))).await;
    assert_eq!(inst["instances"][0]["status"], "resource_error", "{inst}");
    assert!(inst["instances"][0]["peak_memory_bytes"].as_u64().unwrap_or(0) >= 32 << 20, "{inst}");
    d.stop().await;
}
both!(task_instances, attempts_are_recorded_with_their_output);

/// `GET /openapi.json` answers without a key even when keys are in force, with an OpenAPI 3.1
/// document whose every operation the daemon serves: a request to each documented path and
/// method (path parameters filled in) never meets the router's fallbacks ("no such route",
/// 405), and never a 5xx.
async fn openapi_document(b: Backend) {
    const ADMIN: &str = "wk_openapi_e2e_admin_key";
    let d = TestDaemon::start_with(b, |c| c.admin_key = Some(warden::config::Secret::new(ADMIN))).await;
    // Ready first: `/health/ready` answers its documented 503 until the node owns tokens.
    d.wait_ready(MINUTE).await;
    let (s, doc) = d.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");
    assert_eq!(doc["info"]["title"], "Warden");
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    // The rest needs the key.
    let (s, v) = d.get("/v1/tasks").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let admin = d.with_key(ADMIN);
    // The fallbacks answer as the checks below expect, so the checks can fail.
    let (s, v) = admin.get("/v1/nowhere").await;
    assert_eq!((s, v["error"]["message"].as_str()), (StatusCode::NOT_FOUND, Some("no such route")), "{v}");
    let r = admin.http.put(format!("{}/v1/tasks", d.url)).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    let text = doc.to_string();
    for name in text.split("\"$ref\":\"#/components/schemas/").skip(1).filter_map(|s| s.split('"').next()) {
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {name}");
    }
    let mut served = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "nothing-here" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
            let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let r = admin.http.request(m, format!("{}{concrete}", d.url)).send().await.expect("request");
            let status = r.status();
            // The event stream never ends: its answer's head is enough.
            let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let body: Value =
                if ct.starts_with("text/event-stream") { Value::Null } else { r.json().await.unwrap_or(Value::Null) };
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not served");
            assert!(
                !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
                "{method} {path} is documented but not served"
            );
            assert!(!status.is_server_error(), "{method} {concrete}: {status} {body}");
            served += 1;
        }
    }
    assert!(served >= 44, "only {served} operations documented");
    d.stop().await;
}
both!(openapi, openapi_document);
