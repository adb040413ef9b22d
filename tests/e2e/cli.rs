//! The `warden` command line as a user runs it (the real program, as a process) against a daemon:
//! the daily loop (deploy, call, wait, get, ls, history, logs, cancel, rerun, rm) for people and
//! with `-o json` for scripts, the exit codes, a closed pipe, and the messages of bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

/// What a `warden` process did.
pub(crate) struct Out {
    pub(crate) ok: bool,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

async fn warden(url: &str, args: &[&str]) -> Out {
    warden_in(None, url, args).await
}

/// Runs `warden` in directory `cwd` (the test's own when `None`).
pub(crate) async fn warden_in(cwd: Option<&std::path::Path>, url: &str, args: &[&str]) -> Out {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let cwd = cwd.map(|p| p.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(crate::warden());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.args(&args).env("WARDEN_URL", &url).env("WARDEN_LOG", "error").output().expect("run warden")
    })
    .await
    .expect("join");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// The JSON of a `-o json` answer.
pub(crate) fn json(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", o.stdout, o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_daemon() {
    let d = TestDaemon::start(Backend::Sqlite).await;

    let o = warden(&d.url, &["-o", "json", "deploy", guests::HELLO]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["name"], "hello");

    let o = warden(&d.url, &["call", "hello", r#"{"name":"Ada"}"#, "--wait", "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    let inv = json(&o);
    assert_eq!(inv["result"]["greeting"], "Hello, Ada!");

    let id = inv["id"].as_str().expect("id");
    let o = warden(&d.url, &["get", id, "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["status"], "success");

    // A delayed call waits in `registered` and says until when; bad options are refused.
    let o = warden(&d.url, &["call", "hello", "{}", "--delay-ms", "600000", "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    let delayed = json(&o)["id"].as_str().expect("id").to_string();
    let o = warden(&d.url, &["get", &delayed, "-o", "json"]).await;
    let v = json(&o);
    assert_eq!(v["status"], "registered", "{v}");
    assert_eq!(v["not_before"].as_i64().expect("not_before") - v["created_at"].as_i64().expect("created"), 600_000);
    let o = warden(&d.url, &["cancel", &delayed]).await;
    assert!(o.ok, "{}", o.stderr);
    let o = warden(&d.url, &["call", "hello", "{}", "--not-before", "soon"]).await;
    assert_eq!(o.code, Some(2), "a refused request: {}", o.stderr);
    assert!(o.stderr.contains("RFC 3339"), "{}", o.stderr);

    let o = warden(&d.url, &["-o", "json", "ls", "tasks"]).await;
    assert_eq!(json(&o)["tasks"][0]["name"], "hello");
    let o = warden(&d.url, &["-o", "json", "ls", "invocations", "--task", "hello", "--status", "success"]).await;
    assert_eq!(json(&o)["invocations"][0]["id"], id);

    let o = warden(&d.url, &["status-graph"]).await;
    assert!(o.ok && o.stdout.contains("running_recovery"), "{}", o.stdout);

    // Bad input: the cause, not a stack trace, and the exit code of its kind.
    let o = warden(&d.url, &["call", "nope", "{}"]).await;
    assert_eq!(o.code, Some(2), "a refused request is usage: {}", o.stderr);
    assert!(o.stderr.contains("unknown task `nope`"), "{}", o.stderr);
    let o = warden(&d.url, &["call", "hello", "{not json"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("not valid JSON"), "{}", o.stderr);
    let o = warden(&d.url, &["deploy", "/definitely/missing.wasm"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("cannot read /definitely/missing.wasm"), "{}", o.stderr);
    let o = warden("http://127.0.0.1:9", &["ls", "tasks"]).await;
    assert_eq!(o.code, Some(3), "an unreachable daemon: {}", o.stderr);
    assert!(o.stderr.contains("cannot reach the daemon"), "{}", o.stderr);
    let o = warden(&d.url, &["get", "0190a000-0000-7000-8000-000000000000"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("not found"), "{}", o.stderr);
    let o = warden(&d.url, &["frobnicate"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    d.stop().await;
}

/// The daily loop as a person sees it: tables and blocks, human times, and the exit code
/// saying whether the calls succeeded.
/// `warden rate-limit`: set (with the tasks naming it), ls, a refused rm while named, unset,
/// rm; a bad limit exits with the usage code and the daemon's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_from_the_cli() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    d.deploy("hello", guests::HELLO).await;
    let set =
        ["rate-limit", "set", "api", "--limit", "50", "--per-ms", "1000", "--key", "$.customer", "--task", "hello"];
    let o = warden(&d.url, &set).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, "rate limit api: 50 starts per 1.0 s per $.customer (tasks: hello)\n");
    let (_, t) = d.get("/v1/tasks/hello").await;
    assert_eq!(t["rate_limit"], "api", "{t}");
    let o = warden(&d.url, &["rate-limit", "ls"]).await;
    assert!(o.ok && o.stdout.contains("$.customer") && o.stdout.contains("hello"), "{}", o.stdout);
    let o = warden(&d.url, &["-o", "json", "rate-limit", "ls"]).await;
    assert_eq!(json(&o)["rate_limits"][0]["limit"], 50);
    let o = warden(&d.url, &["rate-limit", "rm", "api"]).await;
    assert_eq!(o.code, Some(2), "refused while hello names it: {}", o.stderr);
    assert!(o.stderr.contains("409") && o.stderr.contains("`hello`"), "{}", o.stderr);
    let o = warden(&d.url, &["rate-limit", "unset", "hello"]).await;
    assert!(o.ok, "{}", o.stderr);
    let o = warden(&d.url, &["rate-limit", "rm", "api"]).await;
    assert!(o.ok && o.stdout == "removed rate limit api\n", "{} {}", o.stdout, o.stderr);
    let o = warden(&d.url, &["rate-limit", "set", "zero", "--limit", "0", "--per-ms", "1000"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("limit must be between 1"), "{}", o.stderr);
    d.stop().await;
}

/// `warden deploy` says the version, `warden versions` lists them, `warden rollback` makes the
/// previous (or a named) one current and fails with the daemon's reason when there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_rollback_from_the_cli() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    for (file, version) in [(guests::VERSIONED_ONE, 1), (guests::VERSIONED_TWO, 2)] {
        let o = warden(&d.url, &["deploy", file, "--name", "svc"]).await;
        assert!(o.ok, "{}", o.stderr);
        assert!(o.stdout.starts_with(&format!("deployed component svc version {version} (")), "{}", o.stdout);
    }
    let o = warden(&d.url, &["versions", "svc"]).await;
    assert!(o.ok, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", o.stdout);
    assert!(
        lines[0].starts_with("VERSION") && lines[1].starts_with("2 ") && lines[1].contains("current"),
        "{}",
        o.stdout
    );
    assert!(lines[2].starts_with("1 ") && !lines[2].contains("current"), "{}", o.stdout);
    let o = warden(&d.url, &["rollback", "svc"]).await;
    assert!(o.ok && o.stdout.starts_with("component svc runs version 1 again"), "{} {}", o.stdout, o.stderr);
    let o = warden(&d.url, &["rollback", "svc"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("409") && o.stderr.contains("nothing to roll back to"), "{}", o.stderr);
    let o = warden(&d.url, &["-o", "json", "rollback", "svc", "--to", "2"]).await;
    assert_eq!(json(&o)["version"], 2, "{}", o.stderr);
    let o = warden(&d.url, &["-o", "json", "versions", "svc"]).await;
    assert_eq!(json(&o)["current"], 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_loop_for_people() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    // `--url` takes host:port without a scheme.
    let bare = d.url.trim_start_matches("http://").to_string();
    for g in [guests::HELLO, guests::FLAKY, guests::SLOW] {
        let o = warden(&d.url, &["deploy", g, "--url", &bare]).await;
        assert!(o.ok, "{}", o.stderr);
        assert!(o.stdout.starts_with("deployed component "), "{}", o.stdout);
    }

    // call --wait: the id at once on stderr, then the outcome as a block.
    let o = warden(&d.url, &["call", "hello", r#"{"name":"Ada"}"#, "--wait"]).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("routed hello as "), "{}", o.stderr);
    let id = o.stdout.lines().find_map(|l| l.strip_prefix("id")).expect("id line").trim().to_string();
    assert!(o.stdout.contains("status    success"), "{}", o.stdout);
    assert!(o.stdout.contains(r#"{"greeting":"Hello, Ada!"}"#), "{}", o.stdout);
    assert!(o.stdout.contains(" UTC ("), "a human time: {}", o.stdout);
    assert!(!o.stdout.contains('\x1b'), "no colour when not on a terminal");

    // history: one row per status, with the time since the one before.
    let o = warden(&d.url, &["history", &id]).await;
    assert!(o.ok, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("AT") && lines[0].contains("STATUS"), "{}", o.stdout);
    assert!(
        lines.iter().any(|l| l.contains("registered")) && lines.last().expect("row").contains("success"),
        "{}",
        o.stdout
    );

    // A call that fails: exit 1, the error shown, its logs per attempt.
    let o = warden(&d.url, &["call", "flaky", r#"{"fail_times":9}"#, "--wait"]).await;
    assert_eq!(o.code, Some(1), "a failed call exits 1: {}", o.stderr);
    assert!(o.stdout.contains("status    failed") && o.stdout.contains("error "), "{}", o.stdout);
    let failed = o.stdout.lines().find_map(|l| l.strip_prefix("id")).expect("id line").trim().to_string();
    let o = warden(&d.url, &["logs", &failed]).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("── attempt 1 ──") && o.stdout.contains("attempt 1 fails on purpose"), "{}", o.stdout);

    // wait on several: a table, exit 1 because one failed.
    let o = warden(&d.url, &["wait", &id, &failed]).await;
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stdout.starts_with("ID") && o.stdout.contains("RESULT / ERROR"), "{}", o.stdout);
    assert!(o.stderr.contains(&format!("{failed} ended failed")), "{}", o.stderr);

    // cancel a running call; rerun the failed one.
    let o = warden(&d.url, &["call", "slow", r#"{"ms":30000}"#]).await;
    assert!(o.ok, "{}", o.stderr);
    let slow = o.stdout.split_whitespace().next().expect("id").to_string();
    let o = warden(&d.url, &["cancel", &slow]).await;
    assert!(o.ok && o.stdout.contains("status    cancelled"), "{}\n{}", o.stdout, o.stderr);
    let o = warden(&d.url, &["rerun", &failed]).await;
    assert!(o.ok && o.stdout.starts_with(&format!("rerun of {failed}: ")), "{}\n{}", o.stdout, o.stderr);

    // ls: aligned tables.
    let o = warden(&d.url, &["ls", "tasks"]).await;
    assert!(o.ok && o.stdout.lines().next().expect("header").starts_with("TASK"), "{}", o.stdout);
    assert!(o.stdout.lines().any(|l| l.starts_with("hello ")), "{}", o.stdout);
    let o = warden(&d.url, &["ls", "invocations", "--limit", "2"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout.lines().count(), 3, "header + 2 rows: {}", o.stdout);
    assert!(o.stderr.contains("more: --cursor "), "{}", o.stderr);

    // rm: every call of hello is final, so the component goes, and its task with it.
    let o = warden(&d.url, &["rm", "hello"]).await;
    assert!(o.ok && o.stdout.contains("removed component hello"), "{}\n{}", o.stdout, o.stderr);
    let o = warden(&d.url, &["call", "hello", "{}"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    d.stop().await;
}

/// `warden route FILE.jsonl` routes a file of calls and awaits them (a summary, exit 1 when one
/// fails, a bad line named before anything is routed); `warden call --wait` follows the call's
/// statuses live on stderr; `warden watch -o json` prints the event stream as JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_a_file_follow_a_call_and_watch_the_stream() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("flaky", guests::FLAKY).await;
    d.deploy("slow", guests::SLOW).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // A watcher, started before the work, as a process whose output we read after.
    let watch_out = dir.path().join("watch.jsonl");
    let mut watcher = std::process::Command::new(crate::warden())
        .args(["watch", "--task", "hello", "-o", "json"])
        .env("WARDEN_URL", &d.url)
        .env("WARDEN_LOG", "error")
        .stdout(std::fs::File::create(&watch_out).expect("create"))
        .spawn()
        .expect("start watch");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let file = dir.path().join("calls.jsonl");
    let mut lines = String::from("# 250 greetings\n");
    for i in 0..250 {
        lines.push_str(&format!("{{\"task\":\"hello\",\"args\":{{\"name\":\"n{i}\"}}}}\n"));
    }
    std::fs::write(&file, &lines).expect("write");
    let o = warden(&d.url, &["route", file.to_str().expect("path"), "--batch", "100"]).await;
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.starts_with("routed 250 calls from ") && o.stdout.contains("250 succeeded, 0 failed"),
        "{}",
        o.stdout
    );

    // One that fails: exit 1, counted and listed (JSON for scripts).
    std::fs::write(
        &file,
        "{\"task\":\"hello\",\"args\":{\"name\":\"ok\"}}\n{\"task\":\"flaky\",\"args\":{\"fail_times\":9}}\n",
    )
    .expect("write");
    let o = warden(&d.url, &["-o", "json", "route", file.to_str().expect("path")]).await;
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let v = json(&o);
    assert_eq!((v["routed"].as_u64(), v["succeeded"].as_u64()), (Some(2), Some(1)), "{v}");
    assert_eq!(v["failed"][0]["status"], "failed", "{v}");

    // A bad line: usage, named, and nothing routed.
    let (_, before) = d.get("/v1/invocations/count").await;
    std::fs::write(&file, "{\"task\":\"hello\"}\n{not json\n").expect("write");
    let o = warden(&d.url, &["route", file.to_str().expect("path")]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("calls.jsonl:2: not JSON"), "{}", o.stderr);
    let (_, after) = d.get("/v1/invocations/count").await;
    assert_eq!(before["total"], after["total"], "nothing may be routed from a bad file");

    // call --wait follows the statuses live: running then success, on stderr.
    let o = warden(&d.url, &["call", "slow", r#"{"ms":600}"#, "--wait"]).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("running") && o.stderr.contains("success"), "live statuses: {}", o.stderr);
    assert!(o.stdout.contains("status    success"), "{}", o.stdout);

    // The watcher saw every hello of the file reach success, as JSON lines with ids.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = watcher.kill();
    let _ = watcher.wait();
    let text = std::fs::read_to_string(&watch_out).expect("read");
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let successes = events.iter().filter(|e| e["status"] == "success").count();
    assert_eq!(successes, 251, "250 from the file and 1 from the second file: {}", events.len());
    assert!(events.iter().all(|e| e["task"] == "hello" && e["id"].as_i64().is_some()), "{text}");
    d.stop().await;
}

/// `warden ls invocations | head`: the reader goes away before the output is written; the
/// program ends quietly with success instead of panicking (exit 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_output_quietly() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    d.deploy("hello", guests::HELLO).await;
    d.run("hello", serde_json::json!({"name": "pipe"})).await;
    let url = d.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(crate::warden())
            .args(["ls", "invocations"])
            .env("WARDEN_URL", &url)
            .env("WARDEN_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Close the read end at once: the program's first write meets a closed pipe.
        drop(child.stdout.take());
        child.wait_with_output().expect("wait")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
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

/// `warden --version` names the commit it was built from; `warden completions SHELL` prints
/// a completion script that knows the commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_completions() {
    let o = warden("", &["--version"]).await;
    assert!(o.ok, "{}", o.stderr);
    let commit = o.stdout.trim().split("(commit ").nth(1).expect("a commit").trim_end_matches(')');
    assert!(
        commit == "unknown" || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{}",
        o.stdout
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = warden("", &["completions", shell]).await;
        assert!(o.ok, "{}", o.stderr);
        assert!(
            o.stdout.contains("history") && o.stdout.contains("rerun"),
            "{shell}: {}",
            &o.stdout[..200.min(o.stdout.len())]
        );
    }
    let o = warden("", &["completions", "cmd.exe"]).await;
    assert_eq!(o.code, Some(2), "{}", o.stderr);
}

/// `warden new NAME [--lang LANG]` in `dir`: succeeds and writes `files`; returns the project's
/// directory and what the command printed.
async fn new_project(d: &TestDaemon, dir: &Path, name: &str, lang: &[&str], files: &[&str]) -> (PathBuf, String) {
    let o = warden_in(Some(dir), &d.url, &[&["new", name][..], lang].concat()).await;
    assert!(o.ok, "{}", o.stderr);
    let project = dir.join(name);
    for f in files {
        assert!(project.join(f).is_file(), "{f} is missing");
    }
    (project, o.stdout)
}

/// Calls `task` with `args` and waits: it must end failed (exit code 1) with `exception` in its
/// error, and `warden logs` must show every one of `trace` (the guest's traceback or stack).
/// Returns the invocation for the caller's own checks.
pub(crate) async fn fails_with_trace(d: &TestDaemon, task: &str, args: &str, exception: &str, trace: &[&str]) -> Value {
    let o = warden(&d.url, &["call", task, args, "--wait", "-o", "json"]).await;
    assert_eq!(o.code, Some(1), "{}", o.stdout);
    let inv = json(&o);
    assert_eq!(inv["status"], "failed", "{inv}");
    assert!(inv["error"]["message"].as_str().expect("message").contains(exception), "{inv}");
    let o = warden(&d.url, &["logs", inv["id"].as_str().expect("id")]).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(trace.iter().all(|t| o.stdout.contains(t)), "{trace:?} not all in: {}", o.stdout);
    inv
}

/// From nothing to a result with the project's own tools: `warden new` a Rust task project,
/// `warden deploy` with no file builds and uploads it, and the new task answers `{}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_deploy_and_call_a_rust_task() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = ["Cargo.toml", "src/lib.rs", "README.md", "wit/task.wit", "warden-guest/src/lib.rs"];
    let (project, said) = new_project(&d, dir.path(), "word-count", &[], &files).await;
    assert!(said.contains("warden call word_count"), "{said}");
    assert_eq!(std::fs::read_to_string(project.join("README.md")).expect("readme").trim().lines().count(), 4);

    // `warden build` prints the component's path; `warden deploy` with no file builds and uploads.
    let o = warden_in(Some(&project), &d.url, &["build"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.trim().ends_with("word_count.wasm"), "{}", o.stdout);
    let o = warden_in(Some(&project), &d.url, &["deploy"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("deployed component word-count") && o.stdout.contains("tasks word_count"),
        "{}",
        o.stdout
    );
    let o = warden(&d.url, &["call", "word_count", "{}", "--wait", "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["result"]["greeting"], "Hello, world!");

    // Bad input says why, with exit code 2, and creates nothing.
    let o = warden_in(Some(dir.path()), &d.url, &["new", "word-count"]).await;
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let o = warden_in(Some(dir.path()), &d.url, &["new", "Bad Name"]).await;
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("lower-case letters"), "{}", o.stderr);
    let o = warden_in(Some(dir.path()), &d.url, &["new", "fn"]).await;
    assert!(o.stderr.contains("keyword"), "{}", o.stderr);
    let o = warden_in(Some(dir.path()), &d.url, &["build"]).await;
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("no task project") && o.stderr.contains("warden new"), "{}", o.stderr);
    d.stop().await;
}

/// A Python task with the project's own tools: `warden new --lang python`, `warden deploy`
/// builds it with componentize-py (installed into the user's cache on first use) and uploads
/// it; the `@task` helper turns a `TaskError` into its kind and any other exception into a
/// retryable failure whose traceback is in the attempt's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_deploy_and_call_a_python_task() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = ["app.py", "warden_task.py", "pyproject.toml", "README.md", "wit/task.wit"];
    let (project, _) = new_project(&d, dir.path(), "py-words", &["--lang", "python"], &files).await;
    // A second task whose code breaks, as a user's would.
    let mut app = std::fs::read_to_string(project.join("app.py")).expect("app.py");
    app.push_str("\n\n@task(max_attempts=1)\ndef divide(args):\n    return {\"q\": args[\"a\"] / args[\"b\"]}\n");
    std::fs::write(project.join("app.py"), app).expect("write app.py");

    let o = warden_in(Some(&project), &d.url, &["deploy"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("tasks py_words, divide") || o.stdout.contains("tasks divide, py_words"), "{}", o.stdout);

    let o = warden(&d.url, &["call", "py_words", r#"{"name":"Ada"}"#, "--wait", "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["result"]["greeting"], "Hello, Ada!");
    let o = warden(&d.url, &["call", "py_words", r#"{"name":5}"#, "--wait", "-o", "json"]).await;
    assert_eq!(o.code, Some(1));
    assert_eq!(json(&o)["error"]["kind"], "invalid_args", "{}", o.stdout);

    fails_with_trace(&d, "divide", r#"{"a":1,"b":0}"#, "ZeroDivisionError", &["Traceback", "app.py"]).await;
    d.stop().await;
}

/// A JavaScript task with the project's own tools: `warden new --lang js`, `warden deploy`
/// builds it with componentize-js (installed with npm into the user's cache on first use) and
/// uploads it; the helper turns a `TaskError` into its kind and any other exception into a
/// retryable failure whose stack is in the attempt's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_deploy_and_call_a_js_task() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = ["app.js", "warden_task.js", "package.json", "README.md", "wit/task.wit"];
    let (project, said) = new_project(&d, dir.path(), "js-greet", &["--lang", "js"], &files).await;
    assert!(said.contains("warden call js_greet"), "{said}");
    // A second task whose code breaks, as a user's would.
    let app = std::fs::read_to_string(project.join("app.js")).expect("app.js");
    let app = app.replacen(
        "export const tasks = {\n",
        "export const tasks = {\n  divide: { maxAttempts: 1, run(args) { return { q: args.a.b / 2 }; } },\n",
        1,
    );
    std::fs::write(project.join("app.js"), app).expect("write app.js");

    let o = warden_in(Some(&project), &d.url, &["deploy"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("deployed component js-greet"), "{}", o.stdout);
    assert!(o.stdout.contains("js_greet") && o.stdout.contains("divide"), "{}", o.stdout);

    let o = warden(&d.url, &["call", "js_greet", "{}", "--wait", "-o", "json"]).await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(json(&o)["result"]["greeting"], "Hello, world!");
    let o = warden(&d.url, &["call", "js_greet", r#"{"name":"Ada"}"#, "--wait", "-o", "json"]).await;
    assert_eq!(json(&o)["result"]["greeting"], "Hello, Ada!");
    let o = warden(&d.url, &["call", "js_greet", r#"{"name":5}"#, "--wait", "-o", "json"]).await;
    assert_eq!(o.code, Some(1));
    assert_eq!(json(&o)["error"]["kind"], "invalid_args", "{}", o.stdout);

    fails_with_trace(&d, "divide", "{}", "TypeError", &["TypeError", "app.js"]).await;

    // A project that is not one says what is missing.
    std::fs::remove_file(project.join("warden_task.js")).expect("rm");
    let o = warden_in(Some(&project), &d.url, &["build"]).await;
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("no warden_task.js"), "{}", o.stderr);
    d.stop().await;
}

/// `warden bench --database URL` measures in a fresh database that it creates on that server
/// and drops at the end: runs do not pile rows up in the user's database (they did, and every
/// run was slower than the one before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_on_postgres_runs_in_a_fresh_database_and_drops_it() {
    use sqlx::Connection;
    let server = warden_tests::harness::fresh_postgres_database().await;
    let benches = || async {
        let mut c = sqlx::PgConnection::connect(&server).await.expect("connect");
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'warden_bench_%' ORDER BY 1")
                .fetch_all(&mut c)
                .await
                .expect("databases");
        let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut c)
            .await
            .expect("tables");
        (names, tables)
    };
    let before = benches().await;
    let args = [
        "bench",
        "--component",
        guests::HELLO,
        "--calls",
        "200",
        "--batch",
        "100",
        "--latency-calls",
        "20",
        "--runs",
        "5",
        "--idle-secs",
        "0",
        "--database",
        &server,
    ];
    let o = warden("http://127.0.0.1:9", &args).await;
    assert!(o.ok, "bench failed: {}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("warden throughput_per_s="), "{}", o.stdout);
    assert!(o.stdout.contains("(durable: postgresql)"), "{}", o.stdout);
    let after = benches().await;
    assert_eq!(after.0, before.0, "the bench's database was left behind");
    assert_eq!((before.1, after.1), (0, 0), "the bench wrote into the database it was given");
}
