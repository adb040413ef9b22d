//! The change feed over HTTP on both backends: the live event stream (`GET /v1/events/stream`:
//! one event per status change, filters, resuming with `Last-Event-ID` without a gap, changes
//! made on another node, a slow client cut off with `event: lagged`) and the batch await
//! (`POST /v1/invocations/results`: returns as soon as every id is final, or at the timeout
//! with the rest pending), and their bad input.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Api, Backend, TestDaemon};

use crate::api::assert_error;
use crate::both;

/// One Server-Sent Event as received.
#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub event: String,
    pub id: Option<i64>,
    pub data: Value,
}

/// A client of `GET /v1/events/stream` that parses events as they arrive.
pub(crate) struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    /// Opens the stream at `path_and_query` (e.g. `/v1/events/stream?task=hello`).
    pub(crate) async fn open(api: &Api, path_and_query: &str, last_event_id: Option<i64>) -> Self {
        let mut req = api.http.get(format!("{}{path_and_query}", api.url));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("open the stream");
        assert_eq!(resp.status(), StatusCode::OK, "stream status");
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Self { resp, buf: String::new() }
    }

    /// The next event, or `None` if the stream ended or nothing came within `timeout`.
    /// Keep-alive comments are skipped.
    pub(crate) async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() && id.is_none() && event == "message" {
                    continue; // a comment (keep-alive)
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Sse { event, id, data });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Reads events until `done` says enough (panics after `timeout`); returns them all.
    pub(crate) async fn until(&mut self, timeout: Duration, mut done: impl FnMut(&[Sse]) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(e) => seen.push(e),
                None => panic!("the stream ended or stalled before the expected events; got {seen:#?}"),
            }
        }
        seen
    }
}

/// Whether `events` hold a final `success` for every id of `ids`.
fn all_succeeded(events: &[Sse], ids: &[String]) -> bool {
    let done: HashSet<&str> = events
        .iter()
        .filter(|e| e.event == "status" && e.data["status"] == "success")
        .filter_map(|e| e.data["invocation"].as_str())
        .collect();
    ids.iter().all(|i| done.contains(i.as_str()))
}

/// Ids strictly increase, every event is a well-formed `status`, and each invocation's
/// statuses are those of its `/history`, in order.
async fn assert_events_match_history(api: &Api, events: &[Sse], ids: &[String]) {
    let mut last = 0;
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        assert_eq!(e.event, "status", "{e:?}");
        let id = e.id.expect("every status event has an id");
        assert!(id > last, "ids must increase: {last} then {id}");
        last = id;
        for field in ["invocation", "task", "status", "at", "node"] {
            assert!(e.data.get(field).is_some(), "event without {field}: {}", e.data);
        }
        let inv = e.data["invocation"].as_str().expect("invocation").to_string();
        per.entry(inv).or_default().push(e.data["status"].as_str().expect("status").to_string());
    }
    for id in ids {
        let (_, h) = api.get(&format!("/v1/invocations/{id}/history")).await;
        let stored: Vec<String> = h["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(per.get(id), Some(&stored), "the stream's statuses of {id} differ from its history");
    }
}

/// A stream filtered by task sees every status change of the calls routed after it opened,
/// as the history stores them; the batch await returns their results at once, waits for a
/// running call and returns as soon as it is final, and reports one still running as pending
/// at its timeout.
async fn stream_and_batch_await(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("slow", guests::SLOW).await;
    let mut stream = Stream::open(&d, "/v1/events/stream?task=hello", None).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(d.call("hello", json!({"name": format!("s{i}")})).await);
    }
    let started = Instant::now();
    let events = stream.until(Duration::from_secs(30), |seen| all_succeeded(seen, &ids)).await;
    let delay = started.elapsed();
    assert!(events.iter().all(|e| e.data["task"] == "hello"), "the filter let other tasks through: {events:?}");
    assert_eq!(events[0].data["status"], "registered", "{:?}", events[0]);
    assert_events_match_history(&d, &events, &ids).await;
    eprintln!("stream ({b:?}): 5 calls seen final {delay:?} after routing began");

    // All final: answered at once, in the order asked, with results.
    let t = Instant::now();
    let (s, v) = d.post("/v1/invocations/results", &json!({"ids": ids, "timeout_ms": 10_000})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "final ids must not wait: {:?}", t.elapsed());
    let got: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>(), "{v}");
    assert_eq!(v["results"][0]["status"], "success", "{v}");
    assert_eq!(v["results"][0]["result"]["greeting"], "Hello, s0!", "{v}");
    assert_eq!(v["pending"], json!([]), "{v}");

    // One running: the await returns when it ends (~400 ms), not at the timeout.
    let slow = d.call("slow", json!({"ms": 400})).await;
    let t = Instant::now();
    let (s, v) = d.post("/v1/invocations/results", &json!({"ids": [ids[0], slow], "timeout_ms": 30_000})).await;
    let waited = t.elapsed();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["results"][1]["status"], "success", "{v}");
    assert!(waited < Duration::from_secs(5), "the await should end when the call does, took {waited:?}");

    // Not final in time: pending.
    let slower = d.call("slow", json!({"ms": 3000})).await;
    let (s, v) = d.post("/v1/invocations/results", &json!({"ids": [slower, ids[1]], "timeout_ms": 200})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["pending"], json!([slower]), "{v}");
    assert_eq!(v["results"][0]["id"], json!(ids[1]), "{v}");
    d.stop().await;
}
both!(stream_and_batch_await, stream_and_batch_await);

/// A client that reconnects with the `id:` of an event it saw gets every change after it,
/// stored ones first, then the live ones, none twice; and a client of node A sees changes
/// made on node B.
async fn stream_resumes_and_spans_nodes(b: Backend) {
    let a = TestDaemon::start_with(b, |c| c.node_name = "node-a".into()).await;
    let bee = a.join("node-b", |_| {}).await;
    a.deploy("hello", guests::HELLO).await;
    let mut first = Stream::open(&a, "/v1/events/stream", None).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(bee.call("hello", json!({"name": format!("r{i}")})).await);
        }
        ids
    };
    let seen = first.until(Duration::from_secs(30), |s| all_succeeded(s, &ids)).await;
    // B routed them: A's client saw their `registered` (routing writes no node) and where they ran.
    assert!(
        ids.iter()
            .all(|id| seen.iter().any(|e| e.data["invocation"] == id.as_str() && e.data["status"] == "registered"))
    );
    assert!(seen.iter().filter(|e| e.data["status"] == "running").all(|e| e.data["node"].is_string()), "{seen:?}");
    drop(first);

    // Resume from the 3rd event; more calls happen while no one listens.
    let resume_at = seen[2].id.unwrap();
    let mut later = Vec::new();
    for i in 0..3 {
        later.push(bee.call("hello", json!({"name": format!("later{i}")})).await);
    }
    for id in &later {
        a.result(id, Duration::from_secs(30)).await;
    }
    let mut resumed = Stream::open(&a, "/v1/events/stream", Some(resume_at)).await;
    let more = [ids.clone(), later.clone()].concat();
    let again = resumed.until(Duration::from_secs(30), |s| all_succeeded(s, &more)).await;
    let before: Vec<i64> = seen[3..].iter().filter_map(|e| e.id).collect();
    let replayed: Vec<i64> = again.iter().filter_map(|e| e.id).take(before.len()).collect();
    assert_eq!(replayed, before, "the resumed stream must start right after Last-Event-ID");
    assert!(again.iter().all(|e| e.id.unwrap() > resume_at), "nothing at or before Last-Event-ID");
    assert_events_match_history(&a, &again, &later).await;
    // And a live change made on B after the reconnect.
    let live = bee.call("hello", json!({"name": "live"})).await;
    let t = Instant::now();
    resumed.until(Duration::from_secs(30), |s| all_succeeded(s, std::slice::from_ref(&live))).await;
    eprintln!("stream ({b:?}): a change on node B reached a client of node A within {:?}", t.elapsed());
    bee.stop().await;
    a.stop().await;
}
both!(stream_resumes_and_spans_nodes, stream_resumes_and_spans_nodes);

/// A client that stops reading while thousands of changes happen is cut off with
/// `event: lagged` (naming the last id it was given) instead of being buffered for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_client_is_cut_off_with_lagged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The smallest ring (the default keeps 16,384), so that a few thousand calls overrun it.
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.slots = 8;
        c.stream_buffer_events = 4096;
    })
    .await;
    d.deploy("hello", guests::HELLO).await;
    let addr = d.url.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr.parse().unwrap()).await.unwrap();
    let req = format!("GET /v1/events/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    // Let the stream begin, then route far more changes than the feed keeps, without reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut routed = 0;
    for round in 0..4 {
        let calls: Vec<Value> =
            (0..2000).map(|i| json!({"task": "hello", "args": {"name": format!("l{round}-{i}")}})).collect();
        let (s, v) = d.post("/v1/invocations/batch", &json!({"calls": calls})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        routed += 2000;
    }
    // Wait for the work to finish (about 4 changes per call).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = d.get("/v1/invocations/count?status=success").await;
        if v["total"].as_u64() == Some(routed) {
            break;
        }
        assert!(Instant::now() < deadline, "not all calls finished: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Now read everything the server sent: it must end with `event: lagged` and close.
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the server kept the lagging stream open");
    let text = String::from_utf8_lossy(&all);
    let tail: String = text.chars().rev().take(400).collect::<String>().chars().rev().collect();
    assert!(text.contains("event: lagged"), "no lagged event; the stream ended with: {tail}");
    let sent = text.matches("event: status").count();
    assert!(sent < routed as usize * 4, "the whole history was buffered ({sent} events)");
    eprintln!("lagged after {sent} events sent of about {} changes", routed * 4);
    d.stop().await;
}

/// Bad input is refused in the error shape and changes nothing.
async fn feed_bad_input(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    let id = d.call("hello", json!({"name": "x"})).await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("id-{i}")).collect();
    let (s, v) = d.post("/v1/invocations/results", &json!({"ids": too_many})).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "10000");
    let (s, v) = d.post("/v1/invocations/results", &json!({"ids": [id, "nope-1", "nope-2"]})).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "nope-1");
    assert_eq!(v["error"]["ids"], json!(["nope-1", "nope-2"]), "{v}");
    for t in [json!(-1), json!(1_000_000_000_000u64), json!(60_001), json!("soon")] {
        let (s, v) = d.post("/v1/invocations/results", &json!({"ids": [id], "timeout_ms": t})).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, "timeout_ms");
    }
    let (s, v) = d.post("/v1/invocations/results", &json!({"ids": [id], "extra": 1})).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "extra");
    let r = d.http.get(format!("{}/v1/events/stream", d.url)).header("Last-Event-ID", "abc").send().await.unwrap();
    let s = r.status();
    let v: Value = r.json().await.unwrap();
    assert_error(s, &v, StatusCode::BAD_REQUEST, "last-event-id");
    for (q, code, word) in [
        ("task=nope", StatusCode::NOT_FOUND, "nope"),
        ("invocation=nope", StatusCode::NOT_FOUND, "nope"),
        ("workflow=nope", StatusCode::NOT_FOUND, "nope"),
        ("colour=red", StatusCode::BAD_REQUEST, "colour"),
    ] {
        let (s, v) = d.get(&format!("/v1/events/stream?{q}")).await;
        assert_error(s, &v, code, word);
    }
    // Nothing changed: the one call is still the only one.
    let (_, v) = d.get("/v1/invocations/count").await;
    assert_eq!(v["total"], 1, "{v}");
    d.stop().await;
}
both!(feed_bad_input, feed_bad_input);
