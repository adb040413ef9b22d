//! Versioned deploys (issue 17): an upload of new code under a component's name is its next
//! version; calls that started on a version (their retries too) finish on it while new calls
//! run the newest; rollback, the version list, deletion only of versions nothing needs, and
//! the same across a PostgreSQL cluster. Two fixture guests export the same task `which`,
//! answering "one" and "two", so each test sees which code ran.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::assert_error;
use crate::both;

const MINUTE: Duration = Duration::from_secs(60);

/// Polls until the invocation has `status`.
async fn wait_status(d: &TestDaemon, id: &str, status: &str) {
    let end = Instant::now() + MINUTE;
    loop {
        let (_, v) = d.get(&format!("/v1/invocations/{id}")).await;
        if v["status"] == status {
            return;
        }
        assert!(Instant::now() < end, "{id} never `{status}`: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(version, current, unfinished)` of each stored version of `name`, newest first, and the
/// list's `current`.
async fn versions(d: &TestDaemon, name: &str) -> (Vec<(u64, bool, u64)>, u64) {
    let (s, v) = d.get(&format!("/v1/components/{name}/versions")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let list = v["versions"].as_array().unwrap_or_else(|| panic!("{v}"));
    let rows = list
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
            (n("version"), r["current"].as_bool().unwrap_or_else(|| panic!("{r}")), n("unfinished"))
        })
        .collect();
    (rows, v["current"].as_u64().unwrap_or_else(|| panic!("{v}")))
}

/// Which code answered a final invocation, and the version it is bound to.
fn ran(inv: &Value) -> (String, u64) {
    assert_eq!(inv["status"], "success", "{inv}");
    let code = inv["result"]["version"].as_str().unwrap_or_else(|| panic!("{inv}")).to_string();
    (code, inv["component_version"].as_u64().unwrap_or_else(|| panic!("no component_version: {inv}")))
}

async fn versioned_deploys(b: Backend) {
    let d = TestDaemon::start(b).await;
    let first = d.deploy("svc", guests::VERSIONED_ONE).await;
    assert_eq!(first["version"], 1, "{first}");
    // Two calls start on version 1: one works 1.5 s, one fails its first 1.5 s attempt.
    let long = d.call("which", json!({"ms": 1_500})).await;
    let retried = d.call("which", json!({"ms": 1_500, "fail_times": 1})).await;
    wait_status(&d, &long, "running").await;
    wait_status(&d, &retried, "running").await;

    // Version 2 arrives while they run: new calls run it at once…
    let second = d.deploy("svc", guests::VERSIONED_TWO).await;
    assert_eq!(second["version"], 2, "{second}");
    assert_eq!(ran(&d.run("which", json!({})).await), ("two".into(), 2));
    // …while the calls that started on version 1 finish on it, the retry included.
    assert_eq!(ran(&d.result(&long, MINUTE).await), ("one".into(), 1));
    let done = d.result(&retried, MINUTE).await;
    assert_eq!(ran(&done), ("one".into(), 1));
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    let (_, inst) = d.get(&format!("/v1/invocations/{retried}/instances")).await;
    let by_attempt: Vec<(u64, u64)> = inst["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{inst}"))
        .iter()
        .map(|i| (i["attempt"].as_u64().unwrap_or(0), i["component_version"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(by_attempt, vec![(1, 1), (2, 1)], "each instance records the version it ran: {inst}");
    assert_eq!(versions(&d, "svc").await, (vec![(2, true, 0), (1, false, 0)], 2));
    let (_, shown) = d.get("/v1/components/svc").await;
    assert_eq!(shown["version"], 2, "{shown}");
    // The same code again is no new version.
    assert_eq!(d.deploy("svc", guests::VERSIONED_TWO).await["version"], 2);

    // Rollback: version 1 is current again, then there is nothing before it.
    let (s, v) = d.post("/v1/components/svc/rollback", &json!({})).await;
    assert_eq!((s, v["version"].clone()), (StatusCode::OK, json!(1)), "{v}");
    assert_eq!(v["tasks"][0]["name"], "which", "{v}");
    assert_eq!(ran(&d.run("which", json!({})).await), ("one".into(), 1));
    let (s, v) = d.post("/v1/components/svc/rollback", &json!({})).await;
    assert_error(s, &v, StatusCode::CONFLICT, "nothing to roll back to");
    // A named version; the current one, one that does not exist, one that is not a number.
    let (s, v) = d.post("/v1/components/svc/rollback?version=2", &json!({})).await;
    assert_eq!((s, v["version"].clone()), (StatusCode::OK, json!(2)), "{v}");
    let (s, v) = d.post("/v1/components/svc/rollback?version=2", &json!({})).await;
    assert_error(s, &v, StatusCode::CONFLICT, "already the current version");
    let (s, v) = d.post("/v1/components/svc/rollback?version=9", &json!({})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "version 9");
    let (s, v) = d.post("/v1/components/svc/rollback?version=last", &json!({})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "version");
    let (s, v) = d.post("/v1/components/nope/rollback", &json!({})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");
    let (s, v) = d.get("/v1/components/nope/versions").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope");

    // Deletion: not the current version, not one an unfinished call is bound to.
    let (s, v) = d.delete("/v1/components/svc/versions/2").await;
    assert_error(s, &v, StatusCode::CONFLICT, "current version");
    let (s, v) = d.delete("/v1/components/svc/versions/two").await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "not a version number");
    let busy = d.call("which", json!({"ms": 60_000})).await;
    wait_status(&d, &busy, "running").await;
    assert_eq!(
        d.deploy("svc", guests::VERSIONED_ONE).await["version"],
        3,
        "new code after a rollback is a new version"
    );
    assert_eq!(versions(&d, "svc").await.0, vec![(3, true, 0), (2, false, 1), (1, false, 0)]);
    let (s, v) = d.delete("/v1/components/svc/versions/2").await;
    assert_error(s, &v, StatusCode::CONFLICT, "unfinished");
    let (s, v) = d.delete("/v1/components/svc/versions/1").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = d.delete("/v1/components/svc/versions/1").await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "version 1");
    let (s, v) = d.post(&format!("/v1/invocations/{busy}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    d.result(&busy, MINUTE).await;
    let (s, v) = d.delete("/v1/components/svc/versions/2").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(versions(&d, "svc").await, (vec![(3, true, 0)], 3));
    let (s, v) = d.post("/v1/components/svc/rollback", &json!({})).await;
    assert_error(s, &v, StatusCode::CONFLICT, "nothing to roll back to");
}

both!(versioned_deploys_keep_started_calls_on_their_version, versioned_deploys);

/// On a PostgreSQL cluster a deploy or rollback through one node is what every node runs
/// next: calls routed through the other node right after run the new current version,
/// whichever node claims them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_deploys_across_a_cluster() {
    let a = TestDaemon::start(Backend::Postgres).await;
    let b = a.join("b", |_| {}).await;
    a.deploy("svc", guests::VERSIONED_ONE).await;
    async fn batch(through: &TestDaemon, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(through.call("which", json!({"ms": 20})).await);
        }
        ids
    }
    async fn all_ran(on: &TestDaemon, ids: &[String]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for id in ids {
            out.push(ran(&on.result(id, MINUTE).await));
        }
        out.sort();
        out.dedup();
        out
    }
    let ids = batch(&a, 10).await;
    assert_eq!(all_ran(&b, &ids).await, vec![("one".into(), 1)]);
    b.deploy("svc", guests::VERSIONED_TWO).await;
    let ids = batch(&a, 20).await;
    assert_eq!(all_ran(&b, &ids).await, vec![("two".into(), 2)]);
    let (s, v) = a.post("/v1/components/svc/rollback", &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ids = batch(&b, 20).await;
    assert_eq!(all_ran(&a, &ids).await, vec![("one".into(), 1)]);
    let (_, v) = b.get("/v1/components/svc/versions").await;
    assert_eq!(v["current"], 1, "{v}");
}
