//! The client commands that follow the daemon's change feed: `warden watch` prints the event
//! stream as lines (resuming with `Last-Event-ID` after a drop or a `lagged` cut-off),
//! `warden call --wait` follows its invocation's statuses live, and `warden route FILE.jsonl`
//! routes a file of calls in batches and awaits them with a progress bar (`POST
//! /v1/invocations/results`).

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::Failure;
use super::client::{Client, SseEvent};
use super::output::{self, Format, emit, exit};

/// Most ids one batch await takes (the daemon's limit).
const AWAIT_CHUNK: usize = 10_000;

/// One line of `warden watch` for people.
fn status_line(e: &SseEvent) -> String {
    let d = &e.data;
    format!(
        "{}  {:<40}  {:<16}  {:<28}  {}\n",
        d["at"].as_i64().map(output::time).unwrap_or_default(),
        output::text(&d["invocation"]),
        output::text(&d["task"]),
        output::status(&output::text(&d["status"])),
        output::text(&d["node"]),
    )
}

/// Prints one event: a line for people, or the event's JSON with its `id` for scripts.
fn print_event(fmt: Format, e: &SseEvent) {
    match fmt {
        Format::Text => emit(&status_line(e)),
        Format::Json => {
            let mut v = e.data.clone();
            if let (Some(obj), Some(id)) = (v.as_object_mut(), e.id) {
                obj.insert("id".into(), json!(id));
            }
            emit(&format!("{v}\n"));
        }
    }
}

/// `warden watch [--task T] [--workflow W] [--invocation I]`: prints every status change from
/// now on until Ctrl-C; after a dropped connection or a `lagged` cut-off it reconnects from
/// the last event it printed, so nothing is skipped.
pub async fn watch(c: &Client, fmt: Format, filter: &[(&str, String)]) -> anyhow::Result<()> {
    let mut last: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let mut events = match c.events(filter, last).await {
            Ok(e) => {
                failures = 0;
                e
            }
            Err(e) if last.is_some() && failures < 30 => {
                failures += 1;
                eprintln!("reconnecting to the event stream ({e:#})");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            let next = tokio::select! {
                n = events.next() => n,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match next {
                Ok(Some(e)) if e.event == "status" => {
                    print_event(fmt, &e);
                    last = e.id.or(last);
                }
                Ok(Some(e)) if e.event == "lagged" => {
                    eprintln!("fell behind the stream; catching up from event {}", last.unwrap_or(0));
                    last = e.data["last_event_id"].as_i64().or(last);
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if last.is_none() {
            // The stream ended before any event: ask again from "now".
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `warden call TASK ARGS --wait`: says the id at once (on stderr), prints each status change
/// of the invocation as it happens (text), then the final invocation; exits with
/// [`exit::NOT_SUCCESS`] unless it succeeded. Ctrl-C leaves the call running.
pub async fn follow_call(c: &Client, fmt: Format, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    let filter = [("invocation", id.to_string())];
    // Subscribe first, then read the status: a change between the two is in the stream.
    let mut events = c.events(&filter, None).await?;
    let now = c.get(&format!("/v1/invocations/{id}")).await?;
    if is_final(&now["status"]) {
        return Ok(now);
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return c.get(&format!("/v1/invocations/{id}")).await;
        }
        match tokio::time::timeout(left, events.next()).await {
            Ok(Ok(Some(e))) if e.event == "status" => {
                if fmt == Format::Text {
                    eprint!("{}", status_line(&e));
                }
                if is_final(&e.data["status"]) {
                    return c.get(&format!("/v1/invocations/{id}")).await;
                }
            }
            Ok(Ok(Some(_))) => {}
            // The stream dropped or cut us off: fall back to long-polling the result.
            Ok(Ok(None) | Err(_)) => return c.result(id, deadline.saturating_duration_since(Instant::now())).await,
            Err(_) => return c.get(&format!("/v1/invocations/{id}")).await,
        }
    }
}

fn is_final(status: &Value) -> bool {
    matches!(status.as_str(), Some("success" | "failed" | "cancelled" | "concurrency_controlled_final"))
}

/// Reads a JSON Lines file of calls (`{"task":…, "args":…, "options":…}` per line; blank lines
/// and lines starting with `#` skipped); a bad line is a usage error naming it.
fn read_calls(file: &Path) -> anyhow::Result<Vec<Value>> {
    let f = std::fs::File::open(file)
        .map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", file.display())))?;
    let mut calls = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Failure::new(exit::USAGE, format!("cannot read {}: {e}", file.display())))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let v: Value = serde_json::from_str(t).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("{}:{}: not JSON ({e}); each line is {{\"task\":…,\"args\":…}}", file.display(), n + 1),
            )
        })?;
        if !v["task"].is_string() {
            return Err(Failure::new(
                exit::USAGE,
                format!("{}:{}: no \"task\"; each line is {{\"task\":…,\"args\":…}}", file.display(), n + 1),
            )
            .into());
        }
        calls.push(v);
    }
    if calls.is_empty() {
        return Err(Failure::new(exit::USAGE, format!("{} holds no calls", file.display())).into());
    }
    Ok(calls)
}

/// Awaits `ids` through the batch await (`POST /v1/invocations/results`, [`AWAIT_CHUNK`] ids a
/// request, short waits so that progress shows while the first chunk runs) until all are final
/// or `deadline` passes; hands each answer's final results to `each` (an error from it stops
/// the wait) and returns the ids still pending.
pub(super) async fn await_all(
    c: &Client,
    mut pending: Vec<String>,
    deadline: Instant,
    mut each: impl FnMut(&[Value]) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<String>> {
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut still = Vec::new();
        for chunk in pending.chunks(AWAIT_CHUNK) {
            let wait_ms = left.as_millis().min(2_000) as u64;
            let v = c.post("/v1/invocations/results", &json!({"ids": chunk, "timeout_ms": wait_ms})).await?;
            each(v["results"].as_array().map(Vec::as_slice).unwrap_or_default())?;
            still.extend(v["pending"].as_array().into_iter().flatten().map(output::text));
        }
        pending = still;
    }
    Ok(pending)
}

/// `warden route FILE.jsonl [--batch N] [--timeout S]`: routes every call of the file in
/// batches, then awaits them all with a progress bar (done, failed, rate, ETA) on a terminal;
/// prints a summary (`-o json`: counts and the ids that did not succeed) and exits with
/// [`exit::NOT_SUCCESS`] unless all succeeded.
pub async fn route_file(c: &Client, fmt: Format, file: &Path, batch: usize, timeout: Duration) -> anyhow::Result<()> {
    let calls = read_calls(file)?;
    let total = calls.len() as u64;
    let started = Instant::now();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && fmt == Format::Text {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("routing");
    let mut ids: Vec<String> = Vec::with_capacity(calls.len());
    for chunk in calls.chunks(batch.clamp(1, AWAIT_CHUNK)) {
        let routed = c.call_batch(chunk).await?;
        for inv in routed["invocations"].as_array().into_iter().flatten() {
            ids.push(output::text(&inv["id"]));
        }
        bar.set_position(ids.len() as u64);
    }
    bar.set_prefix("running");
    bar.set_position(0);
    bar.reset_eta();
    let mut failed: Vec<Value> = Vec::new();
    let mut succeeded = 0u64;
    let pending = await_all(c, ids, started + timeout, |results| {
        for r in results {
            if r["status"] == "success" {
                succeeded += 1;
            } else {
                failed.push(json!({"id": r["id"], "status": r["status"], "error": r["error"]}));
            }
        }
        bar.set_position(succeeded + failed.len() as u64);
        bar.set_message(if failed.is_empty() { String::new() } else { format!("{} failed", failed.len()) });
        Ok(())
    })
    .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    match fmt {
        Format::Json => emit(&output::json(&json!({
            "routed": total, "succeeded": succeeded, "failed": failed, "pending": pending,
            "seconds": (secs * 1000.0).round() / 1000.0,
        }))),
        Format::Text => {
            emit(&format!(
                "routed {total} calls from {}: {succeeded} succeeded, {} failed, {} still running, in {secs:.1} s ({:.0} calls/s)\n",
                file.display(),
                failed.len(),
                pending.len(),
                (succeeded + failed.len() as u64) as f64 / secs
            ));
            for f in failed.iter().take(20) {
                emit(&format!(
                    "  {}  {}  {}: {}\n",
                    output::text(&f["id"]),
                    output::status(&output::text(&f["status"])),
                    output::text(&f["error"]["kind"]),
                    output::text(&f["error"]["message"])
                ));
            }
        }
    }
    if failed.is_empty() && pending.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        exit::NOT_SUCCESS,
        format!(
            "{} of {total} calls did not succeed ({} failed, {} still running)",
            failed.len() + pending.len(),
            failed.len(),
            pending.len()
        ),
    )
    .into())
}
