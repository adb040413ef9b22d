//! The `warden` command line as a user runs it (the real program, as a process) against a daemon:
//! deploy, call --wait, get, ls, status-graph, and the messages of bad input.

use std::process::Command;

use serde_json::Value;
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn warden(url: &str, args: &[&str]) -> Out {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_warden-under-test"))
            .args(&args)
            .env("WARDEN_URL", &url)
            .env("WARDEN_LOG", "error")
            .output()
            .expect("run warden")
    })
    .await
    .expect("join");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn json(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", o.stdout, o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_daemon() {
    let d = TestDaemon::start(Backend::Sqlite).await;

    let o = warden(&d.url, &["deploy", guests::HELLO]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["name"], "hello");

    let o = warden(&d.url, &["call", "hello", r#"{"name":"Ada"}"#, "--wait"]).await;
    assert!(o.ok, "{}", o.stderr);
    let inv = json(&o);
    assert_eq!(inv["result"]["greeting"], "Hello, Ada!");

    let id = inv["id"].as_str().expect("id");
    let o = warden(&d.url, &["get", id]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["status"], "success");

    let o = warden(&d.url, &["ls", "tasks"]).await;
    assert_eq!(json(&o)["tasks"][0]["name"], "hello");
    let o = warden(&d.url, &["ls", "invocations", "--task", "hello", "--status", "success"]).await;
    assert_eq!(json(&o)["invocations"][0]["id"], id);

    let o = warden(&d.url, &["status-graph"]).await;
    assert!(o.ok && o.stdout.contains("running_recovery"), "{}", o.stdout);

    // Bad input: the cause, not a stack trace, and a failing exit code.
    let o = warden(&d.url, &["call", "nope", "{}"]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("unknown task `nope`"), "{}", o.stderr);
    let o = warden(&d.url, &["call", "hello", "{not json"]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("not valid JSON"), "{}", o.stderr);
    let o = warden(&d.url, &["deploy", "/definitely/missing.wasm"]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("cannot read /definitely/missing.wasm"), "{}", o.stderr);
    let o = warden("http://127.0.0.1:9", &["ls", "tasks"]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("cannot reach the daemon"), "{}", o.stderr);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_configuration_with_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, "slotz = 4\n").expect("write");
    let o = warden("", &["serve", "--config", file.to_str().expect("path")]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("slotz"), "{}", o.stderr);
    let o =
        warden("", &["serve", "--database", "mysql://nope", "--data-dir", dir.path().to_str().expect("path")]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("database URL"), "{}", o.stderr);
}
