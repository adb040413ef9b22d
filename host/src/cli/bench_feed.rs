//! `warden bench`'s figures of the change feed: the batch await on 10,000 finished ids (`POST
//! /v1/invocations/results`) and the delay from a status change (its database time) to a
//! client of the event stream (`GET /v1/events/stream`), measured on the benchmark's daemon.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::bench::percentile;
use super::client::Client;

/// Prints `warden results_ms=… ids=…` and `warden stream_delay_p50_ms=… p99=…`.
pub async fn feed_figures(c: &Client, finished: &[String], task: &str, args: &Value) -> anyhow::Result<()> {
    let ids: Vec<&String> = finished.iter().take(10_000).collect();
    if !ids.is_empty() {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let v = c.post("/v1/invocations/results", &json!({"ids": ids, "timeout_ms": 0})).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let n = v["results"].as_array().map_or(0, Vec::len);
            anyhow::ensure!(n == ids.len(), "the batch await returned {n} of {} finished ids", ids.len());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "warden results_ms={:.1} ids={} (batch await of finished calls, median of 5)",
            percentile(&times, 0.5),
            ids.len()
        );
    }
    // The stream: one call at a time; each of its status events is timed against its `at`
    // (the database clock, the same machine's clock on SQLite).
    let mut stream = c.events(&[("task", task.to_string())], None).await?;
    let mut delays = Vec::new();
    for _ in 0..100 {
        let r = c.call(task, args).await?;
        let id = r["id"].as_str().unwrap_or_default().to_string();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("no event within 10 s"))??
                .ok_or_else(|| anyhow::anyhow!("the stream ended"))?;
            let now = chrono::Utc::now().timestamp_millis();
            if let Some(at) = e.data["at"].as_i64() {
                delays.push((now - at) as f64);
            }
            if e.data["invocation"] == id.as_str() && e.data["status"] == "success" {
                break;
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "warden stream_delay_p50_ms={:.1} stream_delay_p99_ms={:.1} events={} (status change to stream client)",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.len()
    );
    Ok(())
}
