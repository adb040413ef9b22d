//! The Python and JavaScript examples (`examples/python`, `examples/js`) as a user builds them:
//! the project's own `warden build` with a relative `--path` (componentize-py or componentize-js,
//! installed into the user's cache on first use), then deploy, call, the result, the task's log
//! line, and the error path: bad arguments make the guest raise, and the attempt's output shows
//! the Python traceback or the JavaScript stack.

use std::path::Path;

use serde_json::Value;
use warden_tests::harness::{Backend, TestDaemon};

use crate::cli::{fails_with_trace, json, warden_in};

/// Builds `examples/NAME` in place (its links to the repository's helper and WIT as they are;
/// the output goes to its ignored `target/`) with `warden build --path examples/NAME` run from
/// the repository's root (a relative path), and deploys the component; returns the daemon
/// (retries 10-20 ms apart).
async fn build_and_deploy(name: &str) -> TestDaemon {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.retry_base_ms = 10;
        c.retry_max_ms = 20;
    })
    .await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = warden_in(Some(&root), &d.url, &["build", "--path", &format!("examples/{name}")]).await;
    assert!(o.ok, "{}", o.stderr);
    // stdout is the component's path and nothing else (the toolchain's chatter is on stderr).
    let wasm = o.stdout.trim();
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    assert!(wasm.ends_with(".wasm") && Path::new(wasm).is_file(), "{}", o.stdout);
    let o = warden_in(None, &d.url, &["deploy", wasm, "--name", name]).await;
    assert!(o.ok, "{}", o.stderr);
    d
}

/// Calls `task` with `args`, waits, and returns the invocation as JSON.
async fn call(d: &TestDaemon, task: &str, args: &str) -> Value {
    json(&warden_in(None, &d.url, &["call", task, args, "--wait", "-o", "json"]).await)
}

/// `warden logs ID`: the attempts' log lines and captured output.
async fn logs(d: &TestDaemon, inv: &Value) -> String {
    let o = warden_in(None, &d.url, &["logs", inv["id"].as_str().expect("id")]).await;
    assert!(o.ok, "{}", o.stderr);
    o.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_wordcount() {
    let d = build_and_deploy("python").await;
    let inv = call(&d, "wordcount", r#"{"text":"The cat and the hat. The end!"}"#).await;
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"]["words"], 7, "{inv}");
    assert_eq!(inv["result"]["distinct"], 5, "{inv}");
    assert_eq!(inv["result"]["top"][0], serde_json::json!(["the", 3]), "{inv}");
    assert!(logs(&d, &inv).await.contains("7 words, 5 distinct"));

    // A wrong type is the task's own error: invalid_args, not retried.
    let inv = call(&d, "wordcount", r#"{"text":5}"#).await;
    assert_eq!(inv["error"]["kind"], "invalid_args", "{inv}");
    // No text: the guest raises KeyError; retried (max_attempts=3), then failed, and every
    // attempt's output holds the traceback.
    let inv = fails_with_trace(&d, "wordcount", "{}", "KeyError", &["Traceback", "app.py", "KeyError: 'text'"]).await;
    assert_eq!(inv["attempts"], 3, "{inv}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_reverse() {
    let d = build_and_deploy("js").await;
    let inv = call(&d, "reverse", r#"{"text":"hello, añb"}"#).await;
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"], serde_json::json!({"reversed": "bña ,olleh", "length": 10}), "{inv}");
    assert!(logs(&d, &inv).await.contains("reversing 10 characters"));

    let inv = call(&d, "reverse", r#"{"text":5}"#).await;
    assert_eq!(inv["error"]["kind"], "invalid_args", "{inv}");
    // No text: Array.from(undefined) throws a TypeError; retried, then failed, with the stack
    // (pointing into app.js) in the output.
    let inv = fails_with_trace(&d, "reverse", "{}", "TypeError", &["TypeError", "app.js"]).await;
    assert_eq!(inv["attempts"], 3, "{inv}");
    d.stop().await;
}
