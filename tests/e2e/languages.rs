//! The Python and JavaScript examples (`examples/python`, `examples/js`) as a user builds them:
//! the project's own `warden build` with a relative `--path` (componentize-py or componentize-js,
//! installed into the user's cache on first use), then deploy, call, the result, the task's log
//! line, and the error path: bad arguments make the guest raise, and the attempt's output shows
//! the Python traceback or the JavaScript stack.

use std::path::{Path, PathBuf};

use serde_json::Value;
use warden_tests::harness::{Backend, TestDaemon};

use crate::cli::{json, warden_in};

/// A copy of `examples/NAME` (links followed: the examples link to the repository's helper and
/// WIT) in a fresh directory, so the test builds it without writing into the source tree.
fn copy_example(name: &str) -> (tempfile::TempDir, PathBuf) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read example") {
            let path = entry.expect("entry").path();
            let file = path.file_name().expect("name").to_owned();
            if file == "target" || file == "node_modules" || file == "__pycache__" {
                continue;
            }
            if path.is_dir() {
                copy(&path, &to.join(&file));
            } else {
                std::fs::copy(&path, to.join(&file)).expect("copy");
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    copy(&src, &dir.path().join(name));
    let project = dir.path().join(name);
    (dir, project)
}

/// Builds `examples/NAME` with `warden build --path NAME` run from its parent (a relative path),
/// deploys the component; returns the daemon (retries 10 ms apart) and the component's path.
async fn build_and_deploy(name: &str) -> (TestDaemon, tempfile::TempDir) {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.retry_base_ms = 10;
        c.retry_max_ms = 20;
    })
    .await;
    let (dir, _) = copy_example(name);
    let o = warden_in(Some(dir.path()), &d.url, &["build", "--path", name]).await;
    assert!(o.ok, "{}", o.stderr);
    // stdout is the component's path and nothing else (the toolchain's chatter is on stderr).
    let wasm = o.stdout.trim();
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    assert!(wasm.ends_with(".wasm") && Path::new(wasm).is_file(), "{}", o.stdout);
    let o = warden_in(Some(dir.path()), &d.url, &["deploy", wasm, "--name", name]).await;
    assert!(o.ok, "{}", o.stderr);
    (d, dir)
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
    let (d, _dir) = build_and_deploy("python").await;
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
    let inv = call(&d, "wordcount", "{}").await;
    assert_eq!(inv["status"], "failed", "{inv}");
    assert!(inv["error"]["message"].as_str().expect("message").contains("KeyError"), "{inv}");
    assert_eq!(inv["attempts"], 3, "{inv}");
    let out = logs(&d, &inv).await;
    assert!(out.contains("Traceback") && out.contains("app.py") && out.contains("KeyError: 'text'"), "{out}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_reverse() {
    let (d, _dir) = build_and_deploy("js").await;
    let inv = call(&d, "reverse", r#"{"text":"hello, añb"}"#).await;
    assert_eq!(inv["status"], "success", "{inv}");
    assert_eq!(inv["result"], serde_json::json!({"reversed": "bña ,olleh", "length": 10}), "{inv}");
    assert!(logs(&d, &inv).await.contains("reversing 10 characters"));

    let inv = call(&d, "reverse", r#"{"text":5}"#).await;
    assert_eq!(inv["error"]["kind"], "invalid_args", "{inv}");
    // No text: Array.from(undefined) throws a TypeError; retried, then failed, with the stack
    // (pointing into app.js) in the output.
    let inv = call(&d, "reverse", "{}").await;
    assert_eq!(inv["status"], "failed", "{inv}");
    assert!(inv["error"]["message"].as_str().expect("message").contains("TypeError"), "{inv}");
    assert_eq!(inv["attempts"], 3, "{inv}");
    let out = logs(&d, &inv).await;
    assert!(out.contains("TypeError") && out.contains("app.js"), "{out}");
    d.stop().await;
}
