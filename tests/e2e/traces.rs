//! Traces: two real `warden serve` processes on one PostgreSQL database export their spans over
//! OTLP/HTTP to a collector stand-in run by the test (one node as JSON, the other as
//! protobuf). A call routed with a `traceparent` header, whose attempt on one node makes child
//! calls that run on the other, is one trace: route → claim and attempt → outcome, and each
//! child's route is a child of the parent's attempt span, its attempt a child of that route,
//! across the two nodes. The same holds for one process on SQLite.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use warden_tests::guests;
use warden_tests::harness::{Api, fresh_postgres_database};
use warden_tests::process::{CLUSTER_TIMINGS, DaemonProcess, Spec};

/// One exported span, as the stand-in decoded it.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    /// `service.instance.id` of the exporting node.
    node: String,
    /// The `invocation` attribute.
    invocation: String,
    /// The `workflow` attribute.
    workflow: String,
    /// The request's content type.
    format: String,
}

/// An OTLP/HTTP traces receiver on a free port, accepting protobuf and JSON.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

fn string_attr(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let store = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let store = store.clone();
                async move {
                    let format =
                        headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let req = if format.contains("json") {
                        serde_json::from_slice::<ExportTraceServiceRequest>(&body)
                            .unwrap_or_else(|e| panic!("OTLP JSON does not parse: {e}"))
                    } else {
                        ExportTraceServiceRequest::decode(body)
                            .unwrap_or_else(|e| panic!("OTLP protobuf does not parse: {e}"))
                    };
                    let mut out = store.lock().unwrap();
                    for rs in req.resource_spans {
                        let node =
                            string_attr(&rs.resource.map(|r| r.attributes).unwrap_or_default(), "service.instance.id");
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                out.push(Span {
                                    trace: hex(&s.trace_id),
                                    id: hex(&s.span_id),
                                    parent: hex(&s.parent_span_id),
                                    invocation: string_attr(&s.attributes, "invocation"),
                                    workflow: string_attr(&s.attributes, "workflow"),
                                    name: s.name,
                                    node: node.clone(),
                                    format: format.clone(),
                                });
                            }
                        }
                    }
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("collector") });
        Self { url, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one span named `name` of invocation `id`; waits up to 20 s for it to be exported.
async fn one(c: &Collector, name: &str, id: &str) -> Span {
    one_where(c, &format!("`{name}` span of {id}"), |s| s.name == name && s.invocation == id).await
}

/// The one exported span that `pick` accepts (`what` names it in a failure); waits up to 20 s.
async fn one_where(c: &Collector, what: &str, pick: impl Fn(&Span) -> bool) -> Span {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Span> = c.spans().into_iter().filter(|s| pick(s)).collect();
        if let [one] = found.as_slice() {
            return one.clone();
        }
        assert!(found.len() < 2, "{} of the {what}: {found:#?}", found.len());
        assert!(Instant::now() < deadline, "no {what} exported after 20 s; spans: {:#?}", c.spans());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Workflow `id` once it is `done`, with its nodes; fails after 60 s.
async fn finished_workflow(api: &Api, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = api.get(&format!("/v1/workflows/{id}")).await;
        if v["status"] == "done" {
            return v;
        }
        assert!(Instant::now() < deadline, "workflow {id} did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(dir: &std::path::Path, db: &str, name: &str, collector: &str, protocol: &str) -> Spec {
    Spec::new(crate::warden(), &dir.join(name), Some(db)).args(&CLUSTER_TIMINGS).args(&[
        "--node-name",
        name,
        "--otlp-endpoint",
        collector,
        "--otlp-protocol",
        protocol,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_and_its_children_are_one_trace_across_nodes() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fresh_postgres_database().await;
    let a = DaemonProcess::spawn(node(dir.path(), &db, "trace-a", &collector.url, "http/json")).await;
    let b = DaemonProcess::spawn(node(dir.path(), &db, "trace-b", &collector.url, "http/protobuf")).await;
    let api: &Api = &a.api;
    api.deploy("fanout", guests::FANOUT).await;
    // The parent runs on trace-a, its children on trace-b.
    for (task, on) in [("fanout", "trace-a"), ("square", "trace-b")] {
        let (s, v) = api.post("/v1/cluster/pins", &json!({"task": task, "patterns": [on]})).await;
        assert!(s.is_success(), "pin {task}: {v}");
        assert_eq!(v["eligible"], json!([on]), "{v}");
    }
    // Every node hears of new pins at its next heartbeat (200 ms here).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = api
        .http
        .post(format!("{}/v1/invocations", api.url))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"task": "fanout", "args": {"n": 3}}))
        .send()
        .await
        .expect("route");
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_string();
    let done = api.result(&id, Duration::from_secs(60)).await;
    assert_eq!((done["status"].as_str(), done["result"]["sum"].as_u64()), (Some("success"), Some(5)), "{done}");

    // The parent: routed under the caller's span, claimed and run under its route span.
    let route = one(&collector, "warden.route", &id).await;
    assert_eq!((route.trace.as_str(), route.parent.as_str(), route.node.as_str()), (trace, caller, "trace-a"));
    let (_, inv) = api.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(inv["traceparent"], format!("00-{trace}-{}-01", route.id), "{inv}");
    let attempt = one(&collector, "warden.attempt", &id).await;
    let claim = one(&collector, "warden.claim", &id).await;
    for s in [&attempt, &claim] {
        assert_eq!(
            (s.trace.as_str(), s.parent.as_str(), s.node.as_str()),
            (trace, route.id.as_str(), "trace-a"),
            "{s:?}"
        );
    }
    let run = collector.spans().into_iter().find(|s| s.name == "warden.run" && s.invocation == id).expect("run span");
    assert_eq!(run.parent, attempt.id);

    // The children: routed by the parent's attempt on trace-a, run on trace-b (protobuf).
    let (_, kids) = api.get(&format!("/v1/invocations/{id}/children")).await;
    let kids: Vec<String> = kids["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(kids.len(), 3, "{kids:?}");
    for kid in &kids {
        let kid_route = one(&collector, "warden.route", kid).await;
        assert_eq!(
            (kid_route.trace.as_str(), kid_route.parent.as_str()),
            (trace, attempt.id.as_str()),
            "{kid_route:?}"
        );
        let kid_attempt = one(&collector, "warden.attempt", kid).await;
        assert_eq!((kid_attempt.trace.as_str(), kid_attempt.parent.as_str()), (trace, kid_route.id.as_str()));
        assert_eq!((kid_attempt.node.as_str(), kid_attempt.format.as_str()), ("trace-b", "application/x-protobuf"));
        let kid_outcome = one(&collector, "warden.outcome", kid).await;
        assert_eq!(kid_outcome.parent, kid_attempt.id);
    }
    assert!(route.format.contains("json"), "{route:?}");

    // A call without a traceparent starts a trace of its own; one with a malformed one too.
    for header in [None, Some("00-not-a-trace-01")] {
        let mut req = api.http.post(format!("{}/v1/invocations", api.url));
        if let Some(h) = header {
            req = req.header("traceparent", h);
        }
        let r = req.json(&json!({"task": "square", "args": {"x": 4}})).send().await.expect("route");
        assert_eq!(r.status(), 202);
        let id = r.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_string();
        api.result(&id, Duration::from_secs(60)).await;
        let route = one(&collector, "warden.route", &id).await;
        assert!(route.parent.is_empty() && route.trace != trace && route.trace.len() == 32, "{route:?}");
        let attempt = one(&collector, "warden.attempt", &id).await;
        assert_eq!((attempt.trace.as_str(), attempt.parent.as_str()), (route.trace.as_str(), route.id.as_str()));
    }
    let by_node: HashMap<String, usize> = collector.spans().iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.node.clone()).or_default() += 1;
        m
    });
    eprintln!("spans exported per node: {by_node:?}");
    drop((a, b));
}

/// On SQLite (one process, the default protobuf): a call routed with a `traceparent`, and the
/// calls its attempt makes, are one trace, as on a PostgreSQL cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_on_sqlite_too() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(crate::warden(), dir.path(), None).args(&["--otlp-endpoint", &collector.url]);
    let node = DaemonProcess::spawn(spec).await;
    let api = &node.api;
    api.deploy("fanout", guests::FANOUT).await;
    let (trace, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let r = api
        .http
        .post(format!("{}/v1/invocations/batch", api.url))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"calls": [{"task": "fanout", "args": {"n": 2}}]}))
        .send()
        .await
        .expect("route");
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.expect("json");
    let id = v["invocations"][0]["id"].as_str().expect("id").to_string();
    let done = api.result(&id, Duration::from_secs(60)).await;
    assert_eq!(done["result"]["sum"].as_u64(), Some(1), "{done}");
    let route = one(&collector, "warden.route", &id).await;
    assert_eq!((route.trace.as_str(), route.parent.as_str()), (trace, caller));
    assert_eq!(route.format, "application/x-protobuf");
    let attempt = one(&collector, "warden.attempt", &id).await;
    assert_eq!(attempt.parent, route.id);
    let kid = format!("{id}.000001");
    let kid_route = one(&collector, "warden.route", &kid).await;
    assert_eq!((kid_route.trace.as_str(), kid_route.parent.as_str()), (trace, attempt.id.as_str()));
    assert_eq!(one(&collector, "warden.attempt", &kid).await.parent, kid_route.id);
}

/// A workflow created with a `traceparent` is one trace: its `warden.workflow` span is a child
/// of the caller's, each node's call is routed as a child of the workflow's span, and each
/// node's attempt is a child of its routing, in dependency order; the workflow shows its
/// trace context. An array created without one starts a trace of its own.
#[tokio::test]
async fn a_workflow_is_one_trace() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec::new(crate::warden(), dir.path(), None).args(&["--otlp-endpoint", &collector.url]);
    let node = DaemonProcess::spawn(spec).await;
    let api = &node.api;
    api.deploy("hello", guests::HELLO).await;
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = api
        .http
        .post(format!("{}/v1/workflows", api.url))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"nodes": [
            {"id": "a", "task": "hello", "args": {"name": "a"}},
            {"id": "b", "task": "hello", "args": {"name": "b"}, "depends_on": ["a"]},
        ]}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.expect("json");
    let wf = v["id"].as_str().expect("id").to_string();
    let nodes = finished_workflow(api, &wf).await;
    let shown = nodes["traceparent"].as_str().unwrap_or_else(|| panic!("the workflow shows its trace: {nodes}"));
    let span = one_where(&collector, "workflow's span", |s| s.name == "warden.workflow" && s.workflow == wf).await;
    assert_eq!((span.trace.as_str(), span.parent.as_str()), (trace, caller));
    assert_eq!(shown, format!("00-{trace}-{}-01", span.id));
    let mut attempts = Vec::new();
    for n in nodes["nodes"].as_array().expect("nodes") {
        let id = n["invocation"].as_str().expect("invocation");
        let route = one(&collector, "warden.route", id).await;
        assert_eq!((route.trace.as_str(), route.parent.as_str()), (trace, span.id.as_str()), "node {n}");
        let attempt = one(&collector, "warden.attempt", id).await;
        assert_eq!((attempt.trace.as_str(), attempt.parent.as_str()), (trace, route.id.as_str()), "node {n}");
        attempts.push(attempt);
    }
    assert_eq!(attempts.len(), 2);

    // Without a header: a trace of its own, still one for the whole array.
    let (s, v) = api.post("/v1/arrays", &json!({"task": "hello", "args": [{"name": "x"}, {"name": "y"}]})).await;
    assert_eq!(s, 201, "{v}");
    let array = v["id"].as_str().expect("id").to_string();
    let done = finished_workflow(api, &array).await;
    let own = done["traceparent"].as_str().expect("traceparent").split('-').nth(1).expect("trace id").to_string();
    assert_ne!(own, trace);
    for n in done["nodes"].as_array().expect("nodes") {
        let attempt = one(&collector, "warden.attempt", n["invocation"].as_str().expect("invocation")).await;
        assert_eq!(attempt.trace, own, "element {n}");
    }
}

/// A node given a bad `--otlp-endpoint` does not start, and says why.
#[tokio::test]
async fn a_bad_otlp_endpoint_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(crate::warden())
        .args(["serve", "--listen", "127.0.0.1:0", "--otlp-endpoint", "grpc://127.0.0.1:4317", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run warden");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains("otlp_endpoint") && stderr.contains("http://"), "{stderr}");
}
