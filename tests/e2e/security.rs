//! Who may drive the daemon, and what it takes in (issue 11, items 4, 5 and 7): API keys and
//! their roles, the defences against web pages (content types, `Host`, `Origin`, CORS), the
//! refusal to serve a public address without keys, bounded inputs, and the HTTP server's
//! header timeout, connection cap and answer to long-polls at shutdown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_tests::guests;
use warden_tests::harness::{Api, Backend, TestDaemon};

use crate::both;

const ADMIN: &str = "test-admin-key-0123456789abcdef";

/// The error code of an error answer.
fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error answer: {v}"))
}

/// Sends raw bytes on a new connection and reads the answer until the daemon closes it (or
/// `wait` passes).
async fn raw(addr: &str, request: &str, wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(d: &TestDaemon) -> String {
    d.url.trim_start_matches("http://").to_string()
}

async fn keys_and_roles(b: Backend) {
    let d = TestDaemon::start_with(b, |c| {
        c.admin_key = Some(warden::config::Secret::new(ADMIN));
        c.heartbeat_interval_ms = 500;
        c.heartbeat_timeout_ms = 5_000;
    })
    .await;
    let anon = Api::new(&d.url);
    let admin = anon.with_key(ADMIN);

    // Probes stay open; everything else needs a key, and a wrong key is no key.
    assert_eq!(anon.get("/health/live").await.0, StatusCode::OK);
    anon.wait_ready(Duration::from_secs(10)).await;
    let r = anon.http.get(format!("{}/v1/tasks", d.url)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    let (s, v) = anon.get("/v1/tasks").await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = anon.with_key("wk_not-a-key").get("/v1/tasks").await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{v}");
    assert_eq!(anon.post("/v1/invocations", &json!({"task": "hello"})).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(anon.get("/metrics").await.0, StatusCode::UNAUTHORIZED);

    // Keys of each role; the secret is only in the creation's answer.
    let read_key = admin.create_key("reader", "read").await;
    let write_key = admin.create_key("writer", "write").await;
    let admin2_key = admin.create_key("admin2", "admin").await;
    assert!(read_key.starts_with("wk_") && read_key.len() == 67, "{read_key}");
    let (reader, writer, admin2) = (anon.with_key(&read_key), anon.with_key(&write_key), anon.with_key(&admin2_key));
    let (s, v) = admin.post("/v1/keys", &json!({"name": "reader", "role": "read"})).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    let (s, v) = admin.post("/v1/keys", &json!({"name": "x", "role": "root"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Components: admin only.
    let wasm = std::fs::read(guests::HELLO).expect("read guest");
    for (who, want) in [(&reader, StatusCode::FORBIDDEN), (&writer, StatusCode::FORBIDDEN)] {
        let (s, v) = who.post_bytes("/v1/components?name=hello", wasm.clone()).await;
        assert_eq!(s, want, "{v}");
        assert_eq!(code(&v), "forbidden");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("needs `admin`")), "{v}");
    }
    admin2.deploy("hello", guests::HELLO).await;

    // Reads need read; routing, cancel, rerun, events and workflows need write.
    assert_eq!(reader.get("/v1/tasks").await.0, StatusCode::OK);
    assert_eq!(reader.get("/metrics").await.0, StatusCode::OK);
    let (s, v) = reader.post("/v1/invocations", &json!({"task": "hello", "args": {"name": "r"}})).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    let id = writer.call("hello", json!({"name": "w"})).await;
    assert_eq!(reader.result(&id, Duration::from_secs(30)).await["status"], "success");
    assert_eq!(reader.post(&format!("/v1/invocations/{id}/rerun"), &json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(writer.post(&format!("/v1/invocations/{id}/rerun"), &json!({})).await.0, StatusCode::ACCEPTED);
    assert_eq!(writer.post("/v1/events", &json!({"code": "e"})).await.0, StatusCode::ACCEPTED);
    let wf = json!({"nodes": [{"id": "a", "task": "hello", "args": {"name": "a"}}]});
    assert_eq!(reader.post("/v1/workflows", &wf).await.0, StatusCode::FORBIDDEN);
    assert_eq!(writer.post("/v1/workflows", &wf).await.0, StatusCode::CREATED);

    // Task options, pins, triggers and keys: admin only.
    let patch = writer.http.patch(format!("{}/v1/tasks/hello", d.url)).json(&json!({"max_attempts": 2}));
    assert_eq!(patch.send().await.expect("patch").status(), StatusCode::FORBIDDEN);
    let patch = admin2.http.patch(format!("{}/v1/tasks/hello", d.url)).json(&json!({"max_attempts": 2}));
    assert_eq!(patch.send().await.expect("patch").status(), StatusCode::OK);
    let pin = json!({"task": "hello", "patterns": ["local"]});
    assert_eq!(writer.post("/v1/cluster/pins", &pin).await.0, StatusCode::FORBIDDEN);
    let trigger = json!({"task": "hello", "args": {"name": "t"}, "on": {"event": "go"}});
    assert_eq!(writer.post("/v1/triggers", &trigger).await.0, StatusCode::FORBIDDEN);
    assert_eq!(admin2.post("/v1/triggers", &trigger).await.0, StatusCode::CREATED);
    assert_eq!(writer.get("/v1/keys").await.0, StatusCode::FORBIDDEN);
    assert_eq!(writer.post("/v1/keys", &json!({"name": "mine", "role": "admin"})).await.0, StatusCode::FORBIDDEN);

    // The list shows names, roles and times, never a secret or a hash; use is recorded
    // (batched, within a heartbeat interval or so).
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let (s, list) = admin.get("/v1/keys").await;
        assert_eq!(s, StatusCode::OK);
        let used = |n: &str| {
            list["keys"].as_array().expect("keys").iter().any(|k| k["name"] == n && k["last_used_at"].is_i64())
        };
        if used("reader") && used("writer") {
            break list;
        }
        assert!(Instant::now() < deadline, "last use never recorded: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = list.to_string();
    for secret in [&read_key, &write_key, &admin2_key] {
        assert!(!text.contains(secret.as_str()) && !text.contains(&secret[3..]), "{text}");
    }
    let names: Vec<&str> = list["keys"].as_array().expect("keys").iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, ["admin2", "reader", "writer"]);
    assert_eq!(list["bootstrap_key"], true);
    let reader_entry = &list["keys"][1];
    assert!(reader_entry["role"] == "read" && reader_entry["created_at"].is_i64() && reader_entry.get("key").is_none());

    // A second node on the same database without a bootstrap key: the stored keys rule it,
    // and a key created on the first node works there within 250 ms (an unknown key makes a
    // node read the keys again, at most every 250 ms), before its next heartbeat.
    let n2 = d
        .join("n2", |c| {
            c.admin_key = None;
        })
        .await;
    let n2_anon = Api::new(&n2.url);
    assert_eq!(n2_anon.get("/v1/tasks").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(n2_anon.with_key(&write_key).get("/v1/tasks").await.0, StatusCode::OK);
    let late = n2_anon.with_key(&admin.create_key("late", "read").await);
    let created = Instant::now();
    while late.get("/v1/tasks").await.0 != StatusCode::OK {
        assert!(created.elapsed() < Duration::from_millis(450), "a new key is not accepted by n2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Deleting a key: at once on this node, within one heartbeat interval (500 ms) on the other.
    let (s, _) = admin.delete("/v1/keys/writer").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let deleted_at = Instant::now();
    assert_eq!(writer.get("/v1/tasks").await.0, StatusCode::UNAUTHORIZED);
    let n2_writer = n2_anon.with_key(&write_key);
    loop {
        if n2_writer.get("/v1/tasks").await.0 == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(deleted_at.elapsed() < Duration::from_millis(500 + 300), "still accepted on n2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admin.delete("/v1/keys/writer").await.0, StatusCode::NOT_FOUND);
    n2.stop().await;
    d.stop().await;
}
both!(keys_and_roles, keys_and_roles);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_may_be_public_while_the_api_is_not() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.admin_key = Some(warden::config::Secret::new(ADMIN));
        c.metrics_public = true;
    })
    .await;
    let anon = Api::new(&d.url);
    assert_eq!(anon.http.get(format!("{}/metrics", d.url)).send().await.expect("get").status(), StatusCode::OK);
    assert_eq!(anon.get("/v1/tasks").await.0, StatusCode::UNAUTHORIZED);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_its_api_key() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| c.admin_key = Some(warden::config::Secret::new(ADMIN))).await;
    let run = |key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden-under-test"));
        cmd.args(["ls", "tasks"]).env("WARDEN_URL", &d.url).env("WARDEN_LOG", "error").env_remove("WARDEN_API_KEY");
        if let Some(k) = key {
            cmd.env("WARDEN_API_KEY", k);
        }
        cmd.output().expect("run warden")
    };
    let denied = run(None);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("401") && err.contains("--api-key"), "{err}");
    let ok = run(Some(ADMIN));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let flag = Command::new(env!("CARGO_BIN_EXE_warden-under-test"))
        .args(["ls", "tasks", "--api-key", ADMIN, "--url", &d.url])
        .env_remove("WARDEN_API_KEY")
        .output()
        .expect("run warden");
    assert!(flag.status.success(), "{}", String::from_utf8_lossy(&flag.stderr));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cannot_drive_the_daemon() {
    let d = TestDaemon::start(Backend::Sqlite).await;
    d.deploy("hello", guests::HELLO).await;
    let wasm = std::fs::read(guests::HELLO).expect("read guest");
    // Uploads must be application/wasm, JSON bodies application/json: 415 otherwise.
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut req = d.http.post(format!("{}/v1/components?name=h2", d.url)).body(wasm.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(code(&v), "unsupported_media_type", "{v}");
    }
    let body = r#"{"task":"hello","args":{"name":"x"}}"#;
    for ct in [Some("text/plain"), None] {
        let mut req = d.http.post(format!("{}/v1/invocations", d.url)).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(code(&v), "unsupported_media_type", "{v}");
    }
    let (s, v) = d.post_raw("/v1/invocations", "application/json; charset=utf-8", body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    // A state-changing request from another origin (a "simple" bodiless POST needs no
    // preflight) is refused.
    let id = d.call("hello", json!({"name": "o"})).await;
    let r = d
        .http
        .post(format!("{}/v1/invocations/{id}/cancel", d.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.expect("json");
    assert_eq!(code(&v), "forbidden_origin");

    // DNS rebinding: a request for another host name gets 421 in the error shape; the
    // daemon's own names pass.
    let port = d.url.rsplit(':').next().expect("port").to_string();
    let ask = |host: String| {
        let a = addr(&d);
        async move {
            raw(
                &a,
                &format!("GET /health/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
                Duration::from_secs(5),
            )
            .await
        }
    };
    let foreign = ask(format!("rebound.example.com:{port}")).await;
    assert!(foreign.starts_with("HTTP/1.1 421"), "{foreign}");
    assert!(foreign.contains("\"misdirected_request\"") && foreign.contains("--allowed-hosts"), "{foreign}");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}"), "localhost".into()]
    {
        let ok = ask(host.clone()).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
    }

    // No CORS headers unless origins are configured.
    let r = d.http.get(format!("{}/v1/tasks", d.url)).header("origin", "https://ui.example.com").send().await;
    let r = r.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let pre = d
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/invocations", d.url))
        .header("origin", "https://ui.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(pre.headers().get("access-control-allow-origin").is_none(), "{:?}", pre.headers());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_origins_and_hosts_are_let_in() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.cors_origins = vec!["https://ui.example.com".into()];
        c.allowed_hosts = vec!["warden.internal".into()];
    })
    .await;
    d.deploy("hello", guests::HELLO).await;
    let pre = d
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/invocations", d.url))
        .header("origin", "https://ui.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authorization")
        .send()
        .await
        .expect("preflight");
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h.get("access-control-allow-origin").map(|v| v.as_bytes()), Some(&b"https://ui.example.com"[..]));
    let allowed = h.get("access-control-allow-headers").and_then(|v| v.to_str().ok()).unwrap_or("").to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    let r = d
        .http
        .post(format!("{}/v1/invocations", d.url))
        .header("origin", "https://ui.example.com")
        .json(&json!({"task": "hello", "args": {"name": "ui"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers().get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"https://ui.example.com"[..])
    );
    // Another origin gets no CORS header and cannot change anything.
    let pre = d
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/invocations", d.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    let ok = raw(
        &addr(&d),
        "GET /health/live HTTP/1.1\r\nHost: warden.internal:7700\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    d.stop().await;
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_keys_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = |extra: &[&str], port: u16| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden-under-test"));
        cmd.args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--slots", "1"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("WARDEN_DATABASE_URL")
            .env_remove("WARDEN_ADMIN_KEY")
            .env_remove("WARDEN_ALLOW_UNAUTHENTICATED")
            .env("WARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let out = serve(&[], free_port()).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
    assert!(err.contains("--admin-key") && err.contains("--allow-unauthenticated"), "{err}");

    // Starting anyway warns loudly; with a key it starts quietly and asks for it.
    for (extra, warns) in [(vec!["--allow-unauthenticated"], true), (vec!["--admin-key", ADMIN], false)] {
        let port = free_port();
        let mut child = serve(&extra, port).spawn().expect("spawn");
        let api = Api::new(&format!("http://127.0.0.1:{port}"));
        api.wait_ready(Duration::from_secs(30)).await;
        let status = api.get("/v1/tasks").await.0;
        assert_eq!(status, if warns { StatusCode::OK } else { StatusCode::UNAUTHORIZED });
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.contains("WITHOUT AUTHENTICATION"), warns, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_bounded() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.max_args_bytes = 4096;
        c.max_body_bytes = 64 * 1024;
    })
    .await;
    d.deploy("hello", guests::HELLO).await;
    d.deploy("hostile", guests::HOSTILE).await;
    let big = "x".repeat(5000);
    let too_large = |(s, v): (StatusCode, Value)| {
        assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{v}");
        v
    };
    // Call arguments, in a call, a batch, a workflow, an array; event payloads.
    let v = too_large(d.post("/v1/invocations", &json!({"task": "hello", "args": {"name": big}})).await);
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("4096")), "{v}");
    let calls = json!({"calls": [{"task": "hello", "args": {"name": "ok"}}, {"task": "hello", "args": {"name": big}}]});
    too_large(d.post("/v1/invocations/batch", &calls).await);
    let wf = json!({"nodes": [{"id": "a", "task": "hello", "args": {"name": big}}]});
    too_large(d.post("/v1/workflows", &wf).await);
    too_large(d.post("/v1/arrays", &json!({"task": "hello", "args": [{"name": big}]})).await);
    too_large(d.post("/v1/events", &json!({"code": "e", "payload": {"blob": big}})).await);
    // A JSON body over --max-body-bytes is 413; a batch may be larger (--max-batch-body-bytes).
    let many: Vec<Value> =
        (0..1000).map(|i| json!({"task": "hello", "args": {"name": format!("{i:0>100}")}})).collect();
    let body = json!({"calls": many});
    assert!(body.to_string().len() > 64 * 1024);
    too_large(
        d.post(
            "/v1/invocations",
            &json!({"task": "hello", "args": {}, "options": {"idempotency_key": "x".repeat(70_000)}}),
        )
        .await,
    );
    assert_eq!(d.post("/v1/invocations/batch", &body).await.0, StatusCode::ACCEPTED);
    // At most 10,000 calls per batch.
    let calls: Vec<Value> = (0..10_001).map(|_| json!({"task": "hello"})).collect();
    let (s, v) = d.post("/v1/invocations/batch", &json!({"calls": calls})).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("10000")), "{v}");
    // Nesting deeper than 128 is 400; 100 levels are fine.
    let nest = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    for (depth, want) in [(100, StatusCode::ACCEPTED), (129, StatusCode::BAD_REQUEST), (5000, StatusCode::BAD_REQUEST)]
    {
        let body = format!(r#"{{"task":"echo","args":{{"x":{}}}}}"#, nest(depth));
        let (s, v) = d.post_raw("/v1/invocations", "application/json", body).await;
        assert_eq!(s, want, "depth {depth}: {v}");
    }
    // Events are stored, not echoed.
    let (s, v) = d.post("/v1/events", &json!({"code": "e", "payload": {"secret": "do-not-echo"}})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(v["seq"].is_i64() && v["code"] == "e" && v.get("payload").is_none(), "{v}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_follow_the_args_limit_and_lists_omit_large_values() {
    // With an 8 MiB limit, a 4 MiB result (over the old fixed 1 MiB cap) is stored.
    let d = TestDaemon::start_with(Backend::Sqlite, |c| c.max_args_bytes = 8 << 20).await;
    d.deploy("hostile", guests::HOSTILE).await;
    let v = d.run("bigresult", json!({})).await;
    assert_eq!(v["status"], "success", "{}", &v.to_string()[..300.min(v.to_string().len())]);
    // A list page leaves out args and results over 1 KiB; the invocation's own page has them.
    let args = json!({"blob": "y".repeat(2000)});
    let echo = d.run("echo", args.clone()).await;
    let id = echo["id"].as_str().expect("id").to_string();
    let (s, page) = d.get("/v1/invocations?limit=10").await;
    assert_eq!(s, StatusCode::OK);
    let items = page["invocations"].as_array().expect("list");
    let item = items.iter().find(|i| i["id"] == id.as_str()).expect("listed");
    assert!(item["args"].is_null() && item["args_omitted"] == true, "{item}");
    assert!(item["args_bytes"].as_u64().is_some_and(|n| n > 2000), "{item}");
    assert!(item["result"].is_null() && item["result_omitted"] == true, "{item}");
    let big = items.iter().find(|i| i["task"] == "bigresult").expect("listed");
    assert!(big["result_bytes"].as_u64().is_some_and(|n| n > 4 << 20), "{}", big["result_bytes"]);
    assert!(page.to_string().len() < 20_000);
    let (_, full) = d.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(full["args"], args);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_within_the_header_timeout() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.header_read_timeout_ms = 500;
        c.max_connections = 4000;
    })
    .await;
    let a = addr(&d);
    let mut conns = Vec::new();
    for _ in 0..3000 {
        let mut s = TcpStream::connect(&a).await.expect("connect");
        s.write_all(b"POST /v1/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty").await.expect("write");
        conns.push(s);
    }
    let sent = Instant::now();
    let closed: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.is_ok()
            })
        })
        .collect();
    let mut n = 0;
    for c in closed {
        n += usize::from(c.await.expect("join"));
    }
    let took = sent.elapsed();
    assert_eq!(n, 3000, "only {n} of 3000 half-sent requests were closed");
    assert!(took < Duration::from_secs(5), "closing took {took:?}");
    // The daemon still serves.
    assert_eq!(d.get("/health/live").await.0, StatusCode::OK);
    // A body that stops coming is cut off within the same timeout, and the connection closed.
    let t0 = Instant::now();
    let cut = raw(
        &a,
        "POST /v1/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{\"task\":",
        Duration::from_secs(10),
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(3), "body held for {:?}", t0.elapsed());
    assert!(cut.starts_with("HTTP/1.1 400"), "{cut}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_with_retry_after() {
    let d = TestDaemon::start_with(Backend::Sqlite, |c| c.max_connections = 8).await;
    let a = addr(&d);
    // Eight keep-alive connections, each known to be accepted (it got an answer).
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(&a).await.expect("connect");
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(s);
    }
    let busy = raw(&a, "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", Duration::from_secs(5)).await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    let lower = busy.to_lowercase();
    assert!(lower.contains("retry-after: 1") && lower.contains("\"overloaded\""), "{busy}");
    // A closed connection frees its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = raw(
            &a,
            "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if ok.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {ok}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    d.stop().await;
}

async fn long_poll_answered_at_stop(b: Backend) {
    let d = TestDaemon::start(b).await;
    d.deploy("hello", guests::HELLO).await;
    crate::api::patch(&d, "hello", json!({"paused": true})).await;
    let id = d.call("hello", json!({"name": "waits"})).await;
    let poll = {
        let api = Api::new(&d.url);
        let id = id.clone();
        tokio::spawn(async move { api.get(&format!("/v1/invocations/{id}/result?timeout_ms=30000")).await })
    };
    // Wait until the long-poll is in flight (it is the only open request besides ours).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let stop = tokio::spawn(d.stop());
    let (s, v) = tokio::time::timeout(Duration::from_secs(4), poll).await.expect("long-poll answered").expect("join");
    assert!(stopping.elapsed() < Duration::from_secs(3), "answered after {:?}", stopping.elapsed());
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!((v["id"].as_str(), v["status"].as_str()), (Some(id.as_str()), Some("registered")), "{v}");
    stop.await.expect("stop");
}
both!(long_poll_answered_at_stop, long_poll_answered_at_stop);
