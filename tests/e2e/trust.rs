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

/// Transient database faults under load (PostgreSQL): every connection of the daemon is
/// terminated (`pg_terminate_backend`) every 100 ms while calls route and run. Routing may
/// answer 503 (the client tries again under the same idempotency keys), but no call that ran
/// fails, none is lost, none succeeds twice, and no attempt ends `cancelled` because a write
/// met a dead connection (it used to: the `pending → running` write's error interrupted the
/// guest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_fail_nothing() {
    use sqlx::Connection;
    let d = TestDaemon::start_with(Backend::Postgres, |c| c.slots = 8).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("slow", guests::SLOW).await;
    let url = d.database_url();
    let db = url.rsplit('/').next().expect("database name").to_string();
    let stop = tokio_util_like_flag();
    let storm = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut c = sqlx::PgConnection::connect(&url).await.expect("storm connection");
            let mut kills = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&db)
                .fetch_one(&mut c)
                .await
                .expect("terminate");
                kills += u64::try_from(n).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            kills
        })
    };
    let mut acknowledged = Vec::new();
    for k in 0..20 {
        let mut calls: Vec<_> = (0..40)
            .map(|i| json!({"task": "hello", "args": {"name": format!("b{k}i{i}")}, "options": {"idempotency_key": format!("h{k}-{i}")}}))
            .collect();
        calls.push(json!({"task": "slow", "args": {"ms": 150 + k}, "options": {"idempotency_key": format!("s{k}")}}));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, v) = d.post("/v1/invocations/batch", &json!({ "calls": calls })).await;
            if s == StatusCode::ACCEPTED {
                acknowledged.extend(
                    v["invocations"]
                        .as_array()
                        .expect("invocations")
                        .iter()
                        .map(|i| i["id"].as_str().expect("id").to_string()),
                );
                break;
            }
            assert!(s.is_server_error(), "only a transient failure may refuse a batch: {s} {v}");
            assert!(Instant::now() < deadline, "routing never got through the storm: {s} {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the storm go on while they run, then stop it and audit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = storm.await.expect("storm");
    let mut c = sqlx::PgConnection::connect(&url).await.expect("audit connection");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let finals: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM invocations WHERE status IN ('success', 'failed', 'cancelled')")
                .fetch_one(&mut c)
                .await
                .expect("count");
        if finals >= i64::try_from(acknowledged.len()).expect("n") {
            break;
        }
        assert!(Instant::now() < deadline, "{finals} of {} calls ended in time", acknowledged.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stored, success, other): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'success'), COUNT(*) FILTER (WHERE status <> 'success') FROM invocations",
    )
    .fetch_one(&mut c)
    .await
    .expect("audit");
    let doubles: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT invocation_id FROM invocation_history WHERE status = 'success' \
         GROUP BY invocation_id HAVING COUNT(*) > 1) AS x",
    )
    .fetch_one(&mut c)
    .await
    .expect("doubles");
    let reruns: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invocations WHERE attempts > 1")
        .fetch_one(&mut c)
        .await
        .expect("reruns");
    eprintln!(
        "trust storm: {kills} backends terminated; {} acknowledged, {stored} stored, {success} succeeded, \
         {other} not, {doubles} succeeded twice, {reruns} ran more than once",
        acknowledged.len()
    );
    assert!(kills > 0, "the storm terminated nothing");
    assert_eq!(stored, i64::try_from(acknowledged.len()).expect("n"), "acknowledged = stored");
    assert_eq!((success, other, doubles), (stored, 0, 0), "every call succeeded exactly once");
    d.stop().await;
}

fn tokio_util_like_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}
