//! Task instances (Jobmon) over HTTP on both backends: the host heartbeats for a running guest
//! (its `report_by` moves and triage leaves it alone), and a cancel sent to another node of
//! the cluster reaches the guest through its node's heartbeat.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::patch;
use crate::both;

const MINUTE: Duration = Duration::from_secs(60);

/// The instances of an invocation.
async fn instances(d: &TestDaemon, id: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/v1/invocations/{id}/instances")).await;
    v["instances"].as_array().unwrap_or_else(|| panic!("instances: {v}")).clone()
}

/// Polls until the invocation's latest instance has `status`, returning it.
async fn instance_in(d: &TestDaemon, id: &str, status: &str, within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        if let Some(last) = instances(d, id).await.last().filter(|i| i["status"] == status) {
            return last.clone();
        }
        assert!(Instant::now() < end, "no `{status}` instance of {id} in {within:?}: {:?}", instances(d, id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A guest that runs for 1.5 s, five times its report window (100 ms heartbeat × 3.1): the
/// node's heartbeat keeps pushing `report_by`, triage never touches it, it succeeds on its
/// first attempt.
async fn heartbeats_keep_a_long_attempt_alive(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hostile", guests::HOSTILE).await;
    patch(&d, "sleeper", json!({"timeout_ms": 10_000, "max_attempts": 1})).await;
    let id = d.call("sleeper", json!({"ms": 1_500})).await;
    let first = instance_in(&d, &id, "running", Duration::from_secs(5)).await;
    let due = first["report_by"].as_i64().unwrap_or_else(|| panic!("a running instance has report_by: {first}"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = instances(&d, &id).await.pop().expect("instance");
    assert_eq!(later["status"], "running", "{later}");
    let due_later = later["report_by"].as_i64().expect("report_by");
    assert!(due_later >= due + 400, "the heartbeat pushed report_by from {due} to {due_later}");
    let v = d.result(&id, MINUTE).await;
    assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(1)), "{v}");
    let all = instances(&d, &id).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((&all[0]["status"], &all[0]["report_by"]), (&json!("done"), &Value::Null), "{all:?}");
    assert_eq!(all[0]["node"], "local");
    // The services ran (at least at the first tick of the lease term) and triage changed nothing.
    let (_, runs) = d.get("/v1/services/runs?limit=100").await;
    let runs = runs["runs"].as_array().expect("runs").clone();
    assert!(runs.iter().any(|r| r["detail"]["triaged"] == 0), "{runs:?}");
    assert!(runs.iter().all(|r| r["detail"]["triaged"].as_i64().unwrap_or(0) == 0), "{runs:?}");
    d.stop().await;
}
both!(host_heartbeats, heartbeats_keep_a_long_attempt_alive);

/// Node `a` runs a 20 s guest; a cancel sent to node `b` marks the invocation cancelled and
/// signals the instance (`kill_self`: a kill requested, in the same transaction); `a`'s next
/// heartbeat interrupts the guest, whose real end (`error_fatal`, cancelled) comes long before
/// the guest would have ended.
async fn a_cancel_on_another_node_reaches_the_guest(b: Backend) {
    let a = TestDaemon::start_with(b, |c| c.node_name = "a".into()).await;
    a.deploy("hostile", guests::HOSTILE).await;
    patch(&a, "sleeper", json!({"timeout_ms": 60_000, "max_attempts": 1})).await;
    let id = a.call("sleeper", json!({"ms": 20_000})).await;
    instance_in(&a, &id, "running", Duration::from_secs(5)).await;
    // Node b joins with no slots to spare for the sleeper: it is a's.
    let other = a.join("b", |_| {}).await;
    // The nodes view counts what each node runs (once b has registered, at its first tick).
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, nodes) = other.get("/v1/cluster/nodes").await;
        let running = |name: &str| {
            nodes["nodes"].as_array().expect("nodes").iter().find(|n| n["name"] == name).map(|n| n["running"].clone())
        };
        if running("b").is_some() {
            assert_eq!((running("a"), running("b")), (Some(json!(1)), Some(json!(0))), "{nodes}");
            break;
        }
        assert!(Instant::now() < end, "b never registered: {nodes}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let (s, v) = other.post(&format!("/v1/invocations/{id}/cancel"), &json!({})).await;
    assert!(s.is_success(), "{s} {v}");
    assert_eq!(v["status"], "cancelled", "{v}");
    let (_, i) = other.get(&format!("/v1/invocations/{id}/instances")).await;
    let status = i["instances"][0]["status"].as_str().unwrap_or_default().to_string();
    assert!(status == "kill_self" || status == "error_fatal", "the kill is requested at once: {i}");
    let stopped = instance_in(&other, &id, "error_fatal", Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!((&stopped["node"], &stopped["error"]["kind"]), (&json!("a"), &json!("cancelled")), "{stopped}");
    assert!(took < Duration::from_secs(3), "the guest stopped {took:?} after the cancel (it sleeps 20 s)");
    let v = a.result(&id, MINUTE).await;
    assert_eq!((&v["status"], &v["attempts"]), (&json!("cancelled"), &json!(1)), "{v}");
    eprintln!("cross-node cancel reached the guest in {took:?}");
    other.stop().await;
    a.stop().await;
}
both!(cross_node_cancel, a_cancel_on_another_node_reaches_the_guest);
