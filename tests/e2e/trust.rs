//! Trust under load (issue "Trust"): a busy node stores every outcome it ran, once. Many
//! short calls from concurrent clients beside slow ones make the outcome group commit, the
//! claims and the instance heartbeat (every 100 ms here) write the same rows at once; on
//! PostgreSQL they used to deadlock and throw whole batches of finished outcomes away (their
//! calls ran again), and a finished guest was reported "taken away by triage". Audited per
//! id from the database: one attempt, one instance, one success.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::both;

/// A counter of this node's `/metrics`.
async fn counter(d: &TestDaemon, name: &str) -> u64 {
    let text = d.http.get(format!("{}/metrics", d.url)).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// (stored invocations, successes, invocations with more than one attempt, instances).
async fn audit(url: &str) -> (i64, i64, i64, i64) {
    use sqlx::Connection;
    const Q: &str = "SELECT (SELECT COUNT(*) FROM invocations), \
        (SELECT COUNT(*) FROM invocations WHERE status = 'success'), \
        (SELECT COUNT(*) FROM invocations WHERE attempts > 1), \
        (SELECT COUNT(*) FROM task_instances)";
    if url.starts_with("sqlite://") {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_as(Q).fetch_one(&mut c).await.expect("audit")
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query_as(Q).fetch_one(&mut c).await.expect("audit")
    }
}

async fn a_busy_node_stores_every_outcome_once(b: Backend) {
    let d = TestDaemon::start_with(b, |c| {
        c.slots = 8;
        c.prefetch = 64;
    })
    .await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("slow", guests::SLOW).await;
    const CLIENTS: usize = 4;
    const BATCHES: usize = 4;
    const BATCH: usize = 300;
    const SLOW: usize = 60;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let api = (*d).clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for k in 0..BATCHES {
                let calls: Vec<_> =
                    (0..BATCH).map(|i| json!({"task": "hello", "args": {"name": format!("c{c}b{k}i{i}")}})).collect();
                let (s, v) = api.post("/v1/invocations/batch", &json!({ "calls": calls })).await;
                assert_eq!(s, StatusCode::ACCEPTED, "{v}");
                ids.extend(v["invocations"].as_array().expect("invocations").iter().map(|i| i["id"].to_string()));
            }
            ids.len()
        }));
    }
    for i in 0..SLOW {
        d.call("slow", json!({"ms": 100 + i})).await;
    }
    let mut routed = SLOW;
    for c in clients {
        routed += c.await.expect("client");
    }
    let total = i64::try_from(routed).expect("count");
    let url = d.database_url();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (stored, success, _, _) = audit(&url).await;
        assert_eq!(stored, total, "every acknowledged call is stored");
        if success == total {
            break;
        }
        assert!(Instant::now() < deadline, "{success} of {total} calls succeeded in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, rerun, instances) = audit(&url).await;
    let discarded = counter(&d, "warden_outcomes_discarded_total").await;
    let unrecorded = counter(&d, "warden_outcomes_unrecorded_total").await;
    let taken = counter(&d, "warden_attempts_taken_away_total").await;
    eprintln!(
        "trust ({b:?}): {total} calls, {rerun} ran more than once, {instances} instances, {discarded} outcomes \
         discarded, {unrecorded} unrecorded, {taken} guests taken away"
    );
    assert_eq!((rerun, instances), (0, total), "each call ran once, with one instance");
    assert_eq!((discarded, unrecorded, taken), (0, 0, 0), "no outcome thrown away, no false triage");
    d.stop().await;
}
both!(a_busy_node_stores_every_outcome_once, a_busy_node_stores_every_outcome_once);
