//! The web dashboard (`/ui`) in a real browser: headless Chromium driven through chromedriver
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs) with fantoccini. The
//! tests assert what a person sees: the node on the overview, an invocation reaching `success`
//! on its page without a reload, a workflow's graph with its nodes coloured as they finish,
//! the other pages, and with keys on, the key dialog and a read-only key that hides the
//! cancel button a writer gets. They take screenshots on the way (in a temporary directory,
//! or in `WARDEN_UI_SHOTS` if set; with `WARDEN_DASHBOARD_PNG=docs/dashboard.png` the
//! overview is also saved there, which is how the README's picture is made).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use warden_tests::guests;
use warden_tests::harness::{Backend, TestDaemon};

const ADMIN: &str = "wk_ui_test_admin_key_0123456789abcdef";
/// How long the page may take to show something (the machine runs other builds).
const SEE: Duration = Duration::from_secs(20);

/// chromedriver on a free port and one headless Chromium session.
struct Browser {
    driver: Child,
    client: Client,
    shots: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("address").port()
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let exe = std::env::var("WARDEN_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{exe}` ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http.get(format!("{url}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut chrome = json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1000,820", "--hide-scrollbars", "--force-device-scale-factor=1",
        ]});
        if let Ok(bin) = std::env::var("WARDEN_CHROMIUM") {
            chrome["binary"] = json!(bin);
        } else if Path::new("/usr/bin/chromium").exists() {
            chrome["binary"] = json!("/usr/bin/chromium");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), chrome);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no browser session from chromedriver: {e}"));
        let (shots, tmp) = match std::env::var("WARDEN_UI_SHOTS") {
            Ok(dir) => (PathBuf::from(dir), None),
            Err(_) => {
                let t = tempfile::tempdir().expect("tempdir");
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Self { driver, client, shots, _tmp: tmp }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(SEE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing matches `{css}` on the page within {SEE:?}: {e}"))
    }

    async fn exists(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.expect("find_all").is_empty()
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    async fn text_until(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SEE;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = el.text().await
            {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
            if Instant::now() >= deadline {
                let page = self.js("return document.body.innerText").await;
                panic!("`{css}` never showed {what}; last seen: {last:?}; the page:\n{}", page.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`, finding it again if the page replaced it meanwhile.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + SEE;
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot click `{css}`: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Saves a screenshot as `name.png`; returns its path.
    async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        assert_eq!(&png[1..4], b"PNG", "a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write the screenshot");
        eprintln!("screenshot {} ({} KB)", path.display(), png.len() / 1024);
        path
    }

    async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

/// chromedriver goes with the test, also one that fails (it ends its browser).
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Routes `task(args)` and returns the id.
async fn call(d: &TestDaemon, task: &str, args: Value) -> String {
    d.call(task, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live_in_a_browser() {
    // Making the README's picture (WARDEN_DASHBOARD_PNG): a second node with labels, and
    // calls for long enough to draw a curve.
    let picture = std::env::var("WARDEN_DASHBOARD_PNG").ok();
    let d = TestDaemon::start_with(Backend::Sqlite, |c| c.labels = vec!["zone-a".into()]).await;
    let second = match picture {
        Some(_) => Some(d.join("worker-2", |c| c.labels = vec!["zone-b".into(), "gpu".into()]).await),
        None => None,
    };
    for (name, path) in [("hello", guests::HELLO), ("slow", guests::SLOW), ("math", guests::MATH)] {
        d.deploy(name, path).await;
    }
    // The server answers every /ui path with the app, and its assets with their types.
    let page = d.http.get(format!("{}/ui/invocations/some-id", d.url)).send().await.expect("GET /ui/…");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap_or("").starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    let html = page.text().await.expect("page");
    let app = html.split('"').find(|p| p.ends_with("/app.js")).expect("the page loads app.js").to_string();
    let js = d.http.get(format!("{}{app}", d.url)).send().await.expect("GET app.js");
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(js.headers()["cache-control"].to_str().unwrap_or("").contains("immutable"));
    let missing = d.http.get(format!("{}/ui/assets/x/nope.js", d.url)).send().await.expect("GET");
    assert_eq!(missing.status(), 404);

    let (_, nodes) = d.get("/v1/cluster/nodes").await;
    let node = d.config().node_name.clone();
    assert!(nodes["nodes"].as_array().is_some_and(|ns| ns.iter().any(|n| n["name"] == node.as_str())), "{nodes}");
    let b = Browser::start().await;

    // Overview: the node, then calls and failures drawn as they happen.
    b.goto(&format!("{}/ui", d.url)).await;
    let row = b.text_until("#nodes tr[data-node]", "the node", |t| t.contains(&node)).await;
    assert!(row.contains("live"), "the node is shown live: {row}");
    b.find("svg.chart polyline.k-routed").await;
    b.text_until("#live", "the stream connected", |t| t.contains("live")).await;
    let rounds = if picture.is_some() { 50 } else { 6 };
    for round in 0..rounds {
        let calls: Vec<Value> =
            (0..15).map(|i| json!({"task": "hello", "args": {"name": format!("r{round}-{i}")}})).collect();
        let (s, v) = d.post("/v1/invocations/batch", &json!({"calls": calls})).await;
        assert_eq!(s, 202, "{v}");
        if round % 3 == 0 {
            call(&d, "primes", json!({"below": 1_000_000_000_000u64 + round})).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await; // spread over the chart's buckets
    }
    b.text_until("#counts", "the successes counted", |t| t.contains("success")).await;
    b.text_until(".legend", "a rate of calls", |t| !t.contains("routed: 0/s")).await;
    let overview = b.shot("overview").await;
    if let Some(dest) = &picture {
        std::fs::copy(&overview, dest).expect("copy the overview screenshot");
    }
    if let Some(n) = second {
        n.stop().await;
    }

    // One invocation reaches success on its page, live: `running` first, then `success`, with
    // no navigation in between (a marker set on the page's window survives).
    let id = call(&d, "slow", json!({"ms": 2500})).await;
    b.goto(&format!("{}/ui/invocations/{id}", d.url)).await;
    b.text_until("#status", "running", |t| t == "running").await;
    b.js("window.__same_page = true").await;
    b.text_until("#status", "success", |t| t == "success").await;
    assert_eq!(b.js("return window.__same_page === true").await, json!(true), "the page was reloaded");
    b.text_until("#result", "the result", |t| !t.is_empty()).await;
    b.text_until("#timeline", "the history", |t| t.contains("running") && t.contains("success")).await;
    b.text_until("#instances", "the attempt", |t| t.contains(&node) && t.contains("done")).await;
    assert!(b.exists("#rerun").await, "a finished invocation offers a rerun without keys");
    b.shot("invocation").await;

    // A delayed call's page says when it may start (issue 17), then it is cancelled.
    let (s, v) =
        d.post("/v1/invocations", &json!({"task": "slow", "args": {"ms": 1}, "options": {"delay_ms": 600_000}})).await;
    assert_eq!(s.as_u16(), 202, "{v}");
    let delayed = v["id"].as_str().expect("id").to_string();
    b.goto(&format!("{}/ui/invocations/{delayed}", d.url)).await;
    b.text_until("#not-before", "when the delayed call starts", |t| t.contains("10 min 0 s after it was registered"))
        .await;
    let (s, v) = d.post(&format!("/v1/invocations/{delayed}/cancel"), &json!({})).await;
    assert_eq!(s.as_u16(), 200, "{v}");

    // The invocations list shows it, and the list filters by task.
    b.goto(&format!("{}/ui/invocations?task=slow", d.url)).await;
    let list = b.text_until("#invocation-list", "the slow call", |t| t.contains(&id)).await;
    assert!(!list.contains("hello"), "filtered by task: {list}");

    // A workflow's graph: every node drawn, each turning `done` as the scheduler gets there.
    let (s, v) = d
        .post(
            "/v1/workflows",
            &json!({"name": "diamond", "nodes": [
                {"id": "fetch", "task": "slow", "args": {"ms": 300}},
                {"id": "left", "task": "hello", "args": {"name": "l"}, "depends_on": ["fetch"]},
                {"id": "right", "task": "hello", "args": {"name": "r"}, "depends_on": ["fetch"]},
                {"id": "join", "task": "hello", "args": {"name": "j"}, "depends_on": ["left", "right"]},
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let wf = v["id"].as_str().expect("workflow id").to_string();
    b.goto(&format!("{}/ui/workflows/{wf}", d.url)).await;
    b.find("svg.dag g.node").await;
    let deadline = Instant::now() + SEE;
    loop {
        let drawn = b
            .js("return [...document.querySelectorAll('svg.dag g.node')].map(g => [g.dataset.node, g.dataset.status])")
            .await;
        let drawn: Vec<(String, String)> = serde_json::from_value(drawn).expect("nodes");
        let mut names: Vec<&str> = drawn.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["fetch", "join", "left", "right"], "the graph's nodes");
        if drawn.iter().all(|(_, s)| s == "done") {
            break;
        }
        assert!(Instant::now() < deadline, "the graph never showed every node done: {drawn:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.text_until("#status", "done", |t| t == "done").await;
    b.text_until("#node-counts", "the counts", |t| t.contains("done 4")).await;
    b.shot("workflow").await;
    b.goto(&format!("{}/ui/workflows", d.url)).await;
    b.text_until("#workflow-list", "the workflow", |t| t.contains(&wf) && t.contains("diamond")).await;

    // Pause, resume and cancel from the workflow's page. By now the browser has opened six
    // pages with a live stream each: this also fails if a page left behind keeps its stream's
    // connection (a browser has six per host, and the buttons' requests would queue forever).
    let (s, v) = d
        .post(
            "/v1/workflows",
            &json!({"name": "long", "nodes": [
                {"id": "wait", "task": "slow", "args": {"ms": 60_000}},
                {"id": "after", "task": "hello", "args": {"name": "a"}, "depends_on": ["wait"]},
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let long = v["id"].as_str().expect("workflow id").to_string();
    b.goto(&format!("{}/ui/workflows/{long}", d.url)).await;
    b.click("#pause").await;
    b.text_until("#status", "paused", |t| t.contains("paused")).await;
    assert_eq!(d.get(&format!("/v1/workflows/{long}")).await.1["paused"], true);
    b.click("#resume").await;
    b.text_until("#status", "resumed", |t| !t.contains("paused")).await;
    b.click("#cancel").await;
    b.text_until("#status", "cancelled", |t| t == "cancelled").await;
    assert!(!b.exists("#pause").await, "a cancelled workflow offers no pause");

    // Tasks and components (a task's scratch space among its options); triggers with their runs.
    crate::api::patch(&d, "hello", json!({"scratch_bytes": 1 << 20})).await;
    b.goto(&format!("{}/ui/tasks", d.url)).await;
    b.text_until("section[data-task=\"slow\"]", "the slow task's resource use", |t| t.contains("p99")).await;
    b.text_until("section[data-task=\"hello\"]", "hello's scratch space", |t| {
        t.contains("Scratch space") && t.contains("in /tmp")
    })
    .await;
    b.text_until("#components", "the components", |t| t.contains("hello") && t.contains("Digest")).await;
    b.shot("tasks").await;
    let (s, v) =
        d.post("/v1/triggers", &json!({"task": "hello", "args_from": "event", "on": {"event": "deploy"}})).await;
    assert_eq!(s, 201, "{v}");
    let trigger = v["id"].as_str().expect("trigger id").to_string();
    let (s, v) = d.post("/v1/events", &json!({"code": "deploy", "payload": {"name": "ui"}})).await;
    assert_eq!(s, 202, "{v}");
    let deadline = Instant::now() + SEE;
    while d.get(&format!("/v1/triggers/{trigger}")).await.1["runs"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the trigger did not fire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.goto(&format!("{}/ui/triggers", d.url)).await;
    b.text_until("#triggers", "the trigger and its run", |t| {
        t.contains(&trigger) && t.contains("deploy") && t.contains("Run key")
    })
    .await;

    // Rate limits (issue 17): the task page names a task's limit; a call it holds back says
    // until when on its page.
    let (s, v) = d.put("/v1/rate-limits/once-a-day", &json!({"limit": 1, "per_ms": 86_400_000})).await;
    assert_eq!(s, 201, "{v}");
    crate::api::patch(&d, "hello", json!({"rate_limit": "once-a-day"})).await;
    let first = d.call("hello", json!({"name": "first"})).await;
    let held = d.call("hello", json!({"name": "held"})).await;
    b.goto(&format!("{}/ui/tasks", d.url)).await;
    b.text_until("section[data-task=\"hello\"]", "hello's rate limit", |t| {
        t.contains("once-a-day") && t.contains("1 starts per")
    })
    .await;
    // One of the two started (the older, as a rule); the other waits for tomorrow.
    let deadline = Instant::now() + SEE;
    let held = loop {
        let mut waiting = Vec::new();
        for id in [&first, &held] {
            if d.get(&format!("/v1/invocations/{id}")).await.1["rate_limited_until"].is_i64() {
                waiting.push(id.clone());
            }
        }
        if let [one] = waiting.as_slice() {
            break one.clone();
        }
        assert!(Instant::now() < deadline, "one of the two calls should be held back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    b.goto(&format!("{}/ui/invocations/{held}", d.url)).await;
    b.text_until("#rate-limited", "how long the held call waits", |t| t.contains("no starts left")).await;

    // Versioned deploys (issue 17): the components table says the current version, each
    // component lists its versions, and a call's page says which version it is bound to.
    d.deploy("svc", guests::VERSIONED_ONE).await;
    d.deploy("svc", guests::VERSIONED_TWO).await;
    let (s, v) = d.post("/v1/components/svc/rollback", &json!({})).await;
    assert_eq!(s, 200, "{v}");
    let ran = d.run("which", json!({})).await;
    assert_eq!(ran["component_version"], 1, "{ran}");
    b.goto(&format!("{}/ui/tasks", d.url)).await;
    b.text_until("[data-version=\"svc\"]", "svc's current version", |t| t.trim() == "1").await;
    b.text_until("[data-versions=\"svc\"]", "svc's versions", |t| {
        t.to_lowercase().contains("versions of svc")
            && t.contains("2")
            && t.contains("current")
            && t.contains("warden rollback svc")
    })
    .await;
    let id = ran["id"].as_str().expect("id");
    b.goto(&format!("{}/ui/invocations/{id}", d.url)).await;
    b.text_until("#component-version", "the version the call ran", |t| t.starts_with("1 (bound at its first claim"))
        .await;
    b.text_until("#instances", "the version each attempt ran", |t| t.contains("Version")).await;

    b.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_sees_no_cancel_button() {
    let admin_daemon = TestDaemon::start_with(Backend::Sqlite, |c| {
        c.admin_key = Some(warden::config::Secret::new(ADMIN));
    })
    .await;
    let admin = admin_daemon.with_key(ADMIN);
    let read = admin.create_key("viewer", "read").await;
    let (s, v) = admin.post_bytes("/v1/components?name=slow", std::fs::read(guests::SLOW).expect("slow.wasm")).await;
    assert_eq!(s, 201, "{v}");
    let id = admin.call("slow", json!({"ms": 60_000})).await;

    let b = Browser::start().await;
    // The page asks for a key; a read key shows the invocation without a cancel button.
    b.goto(&format!("{}/ui/invocations/{id}", admin.url)).await;
    let input = b.find("#key-input").await;
    b.text_until("#key-why", "why a key is needed", |t| t.contains("needs an API key")).await;
    b.shot("key-dialog").await;
    input.send_keys(&read).await.expect("type the key");
    b.click("#key-submit").await;
    b.text_until("#status", "the running call", |t| t == "running" || t == "pending").await;
    b.text_until("#who", "the key in use", |t| t.contains("viewer") && t.contains("read")).await;
    assert!(!b.exists("#cancel").await, "a read-only key must not see the cancel button");
    assert_eq!(b.js("return sessionStorage.getItem('warden.key')").await, json!(read), "kept in session storage");
    b.shot("read-only").await;

    // Forgetting the key and giving the admin's shows the button, and it cancels, live.
    b.click("#who").await;
    b.find("#key-input").await.send_keys(ADMIN).await.expect("type the key");
    b.click("#key-submit").await;
    b.click("#cancel").await;
    b.text_until("#status", "cancelled", |t| t == "cancelled").await;
    let (_, v) = admin.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(v["status"], "cancelled", "{v}");

    b.stop().await;
    admin_daemon.stop().await;
}
