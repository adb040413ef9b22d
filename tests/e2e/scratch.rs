//! Scratch space (issue 17, item 7): a task's `scratch_bytes` gives each attempt a fresh, empty
//! `/tmp` (`TMPDIR=/tmp`) backed by a directory under the daemon's data directory, removed when
//! the attempt ends, and holds the guest to the limit with an error the guest sees; without it
//! the guest has no `/tmp` at all. On both backends: the option is stored with the task.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

use crate::api::{assert_error, patch};
use crate::both;

const MINUTE: Duration = Duration::from_secs(60);
const LIMIT: u64 = 64 * 1024;

/// The entries of a host directory (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs `scratch` with `args`; asserts it succeeded and returns its result.
async fn scratch(d: &TestDaemon, args: Value) -> Value {
    let v = d.run("scratch", args).await;
    assert_eq!(v["status"], "success", "{v}");
    v["result"].clone()
}

async fn scratch_space(b: Backend) {
    let mut d = TestDaemon::start_with(b, |c| c.retry_base_ms = 50).await;
    d.deploy("scratch", guests::SCRATCH).await;
    let root = d.config().data_dir.join("scratch");

    // Without scratch space (the default) the guest has no /tmp: nothing of the host is visible.
    let (_, t) = d.get("/v1/tasks/scratch").await;
    assert_eq!(t["scratch_bytes"], 0, "{t}");
    let r = scratch(&d, json!({"bytes": 10})).await;
    assert_eq!(r["tmpdir"], Value::Null, "{r}");
    assert!(r["before"]["error"].is_string(), "listing /tmp must fail: {r}");
    assert!(r["error"].as_str().is_some_and(|e| e.starts_with("create:")), "creating a file must fail: {r}");

    // Bad values are 400 in the one error shape, stating the range; nothing changes.
    for bad in [json!(-1), json!(1.5), json!(5_000_000_000_u64), json!(1e30)] {
        let res = d.http.patch(format!("{}/v1/tasks/scratch", d.url)).json(&json!({"scratch_bytes": bad})).send();
        let res = res.await.expect("patch");
        let s = res.status();
        let v: Value = res.json().await.expect("json");
        assert_error(s, &v, StatusCode::BAD_REQUEST, "from 0 (no scratch directory) to 4294967296 (4 gib)");
    }
    let (_, t) = d.get("/v1/tasks/scratch").await;
    assert_eq!(t["scratch_bytes"], 0, "{t}");

    // The option is in the OpenAPI document, in the patch and in the task, with its maximum.
    let (_, doc) = d.get("/openapi.json").await;
    for schema in ["TaskPatch", "TaskPolicy"] {
        let field = &doc["components"]["schemas"][schema]["properties"]["scratch_bytes"];
        assert_eq!(field["maximum"].as_f64(), Some(4_294_967_296.0), "{schema}: {field}");
    }

    // Set, it is stored with the task (a restart keeps it) and shown.
    patch(&d, "scratch", json!({"scratch_bytes": LIMIT})).await;
    d.restart().await;
    let (_, t) = d.get("/v1/tasks/scratch").await;
    assert_eq!(t["scratch_bytes"], LIMIT, "{t}");

    // An attempt writes and reads a file in /tmp; it lives in the attempt's own directory on
    // the host while the attempt runs, and that directory is gone once the attempt ended.
    let id = d.call("scratch", json!({"file": "held", "bytes": 10_000, "hold_ms": 3_000})).await;
    let host_dir = root.join(format!("{id}-1"));
    let started = Instant::now();
    while std::fs::metadata(host_dir.join("held")).map(|m| m.len()).ok() != Some(10_000) {
        assert!(started.elapsed() < Duration::from_secs(20), "no {}/held of 10000 bytes", host_dir.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(entries(&root), vec![format!("{id}-1")], "one directory per attempt");
    let v = d.result(&id, MINUTE).await;
    assert_eq!(v["status"], "success", "{v}");
    let r = &v["result"];
    assert_eq!(r["tmpdir"], "/tmp", "{r}");
    assert_eq!(r["before"], json!([]), "a fresh directory is empty: {r}");
    assert_eq!(r["read"], 10_000, "{r}");
    assert_eq!(r["error"], Value::Null, "{r}");
    assert!(!host_dir.exists(), "{} outlived its attempt", host_dir.display());
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));

    // The next call starts empty, and so does the next attempt of a call whose first attempt
    // failed with its file left behind.
    let r = scratch(&d, json!({"file": "held", "bytes": 10})).await;
    assert_eq!(r["before"], json!([]), "{r}");
    let v = d.run("scratch", json!({"file": "left", "bytes": 100, "fail_attempts": 1})).await;
    assert_eq!((&v["status"], &v["attempts"]), (&json!("success"), &json!(2)), "{v}");
    assert_eq!(v["result"]["before"], json!([]), "the second attempt saw the first one's files: {v}");
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));

    // Writing past the limit fails in the guest, not in the host (through a stream the guest's
    // libc reports the stream's failure as EIO; calls that answer a filesystem error code say
    // "no space", below); truncating the file gives its bytes back, so the guest can go on.
    let r = scratch(&d, json!({"bytes": 100_000, "again": 1_000})).await;
    let err = r["error"].as_str().unwrap_or_else(|| panic!("a write past the limit succeeded: {r}"));
    assert!(err.starts_with("write:"), "{err}");
    assert_eq!(r["again_error"], Value::Null, "after truncating, a small write fits: {r}");
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));
    // The host is fine: the next attempt gets the whole limit (less one file's entry).
    let r = scratch(&d, json!({"bytes": LIMIT - 4096})).await;
    assert_eq!((&r["read"], &r["error"]), (&json!(LIMIT - 4096), &Value::Null), "{r}");

    // Every way to take space counts: a directory costs 4 KiB (16 fit in 64 KiB), setting a
    // file's length or writing one byte far past its end costs what the file grows by.
    let r = scratch(&d, json!({"dirs": 100})).await;
    assert_eq!(r["dirs_made"], LIMIT / 4096, "{r}");
    assert!(r["dirs_error"].as_str().is_some_and(|e| e.to_lowercase().contains("space")), "{r}");
    let r = scratch(&d, json!({"set_len": 1_000_000, "seek_write": 1_000_000})).await;
    assert!(r["set_len_error"].as_str().is_some_and(|e| e.to_lowercase().contains("space")), "{r}");
    assert!(r["seek_write_error"].is_string(), "{r}");
    let r = scratch(&d, json!({"set_len": 1_000, "seek_write": 1_000})).await;
    assert_eq!((&r["set_len_error"], &r["seek_write_error"]), (&Value::Null, &Value::Null), "{r}");
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));

    // Set back to 0, the guest has no /tmp again.
    patch(&d, "scratch", json!({"scratch_bytes": 0})).await;
    let r = scratch(&d, json!({"bytes": 10})).await;
    assert_eq!(r["tmpdir"], Value::Null, "{r}");
    assert!(r["error"].is_string(), "{r}");
    d.stop().await;
}
both!(scratch_space, scratch_space);
