//! `warden bench`: durable no-op calls end to end on a fresh daemon (SQLite, synchronous=FULL,
//! or the PostgreSQL of `--database`):
//! throughput through the batch API, latency of one call in flight, and the in-process cost of
//! instantiate + run. With `--peer`, runs the Celery peer in the same run and prints ratios.
//! With `--workflow-nodes`, measures a large workflow instead: its nodes per second and the
//! latency of unrelated calls routed and read while it runs (on SQLite or `--database`).
//! For any component (Rust, Python, JavaScript) it first reports what the component itself
//! costs: upload, compile, load from the AOT cache (a restart), instantiate + run per call;
//! `--component-only` stops there.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::client::Client;
use crate::config::Config;
use crate::runtime::{GuestHost, InvocationInfo, Limits, RunRequest};
use crate::server::Daemon;
use crate::store::PgStore;

/// Options of `warden bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The component to call (e.g. the `hello` example).
    #[arg(long)]
    component: PathBuf,
    /// Task to call.
    #[arg(long, default_value = "hello")]
    task: String,
    /// Arguments of every call.
    #[arg(long, default_value = r#"{"name":"bench"}"#)]
    args: String,
    /// Calls for the throughput run.
    #[arg(long, default_value_t = 10_000)]
    calls: usize,
    /// Calls per batch request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Sequential calls for the latency run.
    #[arg(long, default_value_t = 300)]
    latency_calls: usize,
    /// Slots of the benchmark daemon.
    #[arg(long, default_value_t = 8)]
    slots: usize,
    /// The peer script (e.g. ../shared/bench/celery-peer) to run in the same run.
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Measure one workflow of this many `--task` nodes instead (an array unless
    /// `--workflow-layers`), while an unrelated call is routed and read every 20 ms.
    #[arg(long)]
    workflow_nodes: Option<usize>,
    /// Layers of the workflow: each node depends on two nodes of the layer before.
    #[arg(long, default_value_t = 0)]
    workflow_layers: usize,
    /// `max_concurrently_running` of the workflow.
    #[arg(long, default_value_t = 100)]
    workflow_limit: u32,
    /// PostgreSQL server for every figure (default: a fresh SQLite file): the benchmark creates
    /// a fresh database on it through this URL's database (`warden_bench_<pid>`, which needs
    /// the CREATEDB privilege) and drops it at the end, so that runs do not pile up rows.
    #[arg(long)]
    database: Option<String>,
    /// Only the component's own figures (upload, compile, cache load, instantiate + run), no
    /// throughput or latency runs.
    #[arg(long)]
    component_only: bool,
    /// In-process instantiate + run calls to average.
    #[arg(long, default_value_t = 200)]
    runs: u32,
    /// Seconds the daemon is left idle at the end to count its database transactions
    /// (PostgreSQL); 0 skips it.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

struct NoHost;

#[async_trait::async_trait]
impl GuestHost for NoHost {
    async fn call(&self, _: &InvocationInfo, _: u32, _: &str, _: &str) -> Result<String, crate::model::TaskFailure> {
        Err(crate::model::TaskFailure::new(crate::model::ErrorKind::Fatal, "no calls in the benchmark"))
    }
    async fn wait(&self, _: &InvocationInfo, ids: &[String]) -> Vec<Result<String, crate::model::TaskFailure>> {
        ids.iter().map(|_| Err(crate::model::TaskFailure::new(crate::model::ErrorKind::Fatal, "no calls"))).collect()
    }
    fn progress(&self, _: &InvocationInfo, _: u64, _: u64, _: Option<String>) {}
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1);
    sorted[i]
}

/// Runs the benchmark and prints one figure a line. With `--database`, in a fresh database
/// on that server, dropped at the end whatever happened.
pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    let Some(server) = a.database.clone() else { return run_on(a, None).await };
    let name = format!("warden_bench_{}", std::process::id());
    let url = PgStore::create_database(&server, &name).await.with_context(|| {
        format!("cannot create the benchmark's database `{name}` through {server} (it needs the CREATEDB privilege)")
    })?;
    let res = run_on(a, Some(url)).await;
    if let Err(e) = PgStore::drop_database(&server, &name).await {
        eprintln!("warning: could not drop the benchmark's database `{name}`: {e}");
    }
    res
}

/// [`run`] on the PostgreSQL database at `database` (or a fresh SQLite file).
async fn run_on(a: BenchArgs, database: Option<String>) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.component).with_context(|| format!("cannot read {}", a.component.display()))?;
    let args: Value = serde_json::from_str(&a.args).context("--args is not JSON")?;
    let dir = tempfile_dir()?;
    let cfg = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.clone(),
        slots: a.slots,
        database_url: database,
        ..Config::default()
    };
    let daemon = Daemon::start(cfg).await?;
    let c = Client::new(&daemon.url(), None)?;
    let t = Instant::now();
    c.deploy("bench", bytes.clone()).await?;
    let upload_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (compile_ms, cache_load_ms) = match compile_figures(&bytes, &dir).await {
        Ok(f) => f,
        Err(e) => {
            daemon.stop().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    println!(
        "warden component size_kib={} upload_ms={upload_ms:.0} compile_ms={compile_ms:.0} cache_load_ms={cache_load_ms:.1} \
         (upload: HTTP + validate + compile + describe on the daemon; compile: a fresh engine, empty AOT cache; \
         cache_load: a fresh engine loading the AOT cache, as after a restart)",
        bytes.len() / 1024
    );
    if a.component_only {
        let res = instantiate_run(&daemon, &bytes, &a).await;
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        return res;
    }
    if let Some(nodes) = a.workflow_nodes {
        let res = workflow_figures(&c, &daemon.url(), &a, &args, nodes).await;
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        return res;
    }

    // Warm-up.
    for _ in 0..50 {
        let r = c.call(&a.task, &args).await?;
        c.result(r["id"].as_str().unwrap_or_default(), Duration::from_secs(30)).await?;
    }

    // Throughput: route everything through the batch API, then await the results through the
    // batch await (not by counting: a count of the task's calls reads them all, every 5 ms,
    // which loaded the machine being measured, most on PostgreSQL).
    let store = daemon.orchestrator().store().clone();
    let usage_before = store.usage().await?;
    let started = Instant::now();
    let call = json!({"task": a.task, "args": args});
    let mut routed = 0;
    let mut ids: Vec<String> = Vec::with_capacity(a.calls);
    while routed < a.calls {
        let n = a.batch.min(a.calls - routed);
        let r = c.call_batch(&vec![call.clone(); n]).await?;
        ids.extend(
            r["invocations"].as_array().into_iter().flatten().filter_map(|i| i["id"].as_str().map(str::to_string)),
        );
        routed += n;
    }
    anyhow::ensure!(ids.len() == a.calls, "the batch route returned {} ids for {} calls", ids.len(), a.calls);
    await_success(&c, &ids, started).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let throughput = a.calls as f64 / elapsed;
    let store_name = if a.database.is_some() { "postgresql" } else { "sqlite synchronous=FULL" };
    println!(
        "warden throughput_per_s={throughput:.0} calls={} elapsed_s={elapsed:.2} (durable: {store_name})",
        a.calls
    );
    let grown = store.usage().await?.bytes - usage_before.bytes;
    println!(
        "warden bytes_per_call={:.0} (the database grew {:.1} MiB over {} calls; history and instances kept)",
        grown as f64 / a.calls as f64,
        grown as f64 / (1024.0 * 1024.0),
        a.calls
    );
    super::bench_feed::feed_figures(&c, &ids, &a.task, &args).await?;

    // Latency: one call in flight.
    let mut lat = Vec::with_capacity(a.latency_calls);
    for _ in 0..a.latency_calls {
        let t = Instant::now();
        let r = c.call(&a.task, &args).await?;
        let inv = c.result(r["id"].as_str().unwrap_or_default(), Duration::from_secs(30)).await?;
        if inv["status"] != "success" {
            bail!("a latency call ended {}", inv["status"]);
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!("warden latency_p50_ms={p50:.2} latency_p99_ms={p99:.2}");

    instantiate_run(&daemon, &bytes, &a).await?;
    idle_figures(store.as_ref(), a.idle_secs).await?;
    daemon.stop().await;
    // A pure function, timed once the daemon's loops are stopped.
    ring_figures()?;
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(peer) = a.peer {
        let out = tokio::process::Command::new(&peer)
            .arg(a.calls.to_string())
            .output()
            .await
            .with_context(|| format!("cannot run the peer {}", peer.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        print!("{text}");
        if !out.status.success() {
            bail!("the peer failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let figure = |key: &str| -> Option<f64> {
            text.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")).and_then(|v| v.parse().ok()))
        };
        if let (Some(pt), Some(pl)) = (figure("throughput_per_s"), figure("latency_p50_ms")) {
            println!("ratio throughput warden/peer={:.2}", throughput / pt);
            println!("ratio latency_p50 peer/warden={:.2} (above 1: warden is faster)", pl / p50);
        }
        if let Some(pp99) = figure("latency_p99_ms") {
            println!("ratio latency_p99 peer/warden={:.2}", pp99 / p99);
        }
    }
    Ok(())
}

/// The idle daemon's database transactions per second over `secs` (PostgreSQL counts them;
/// each connection reports about once a second, so the window is several seconds long).
/// Autovacuum's own transactions after the run count too: a figure to read with that in mind
/// (the e2e test `an_idle_node_costs_at_most_five_transactions_a_second` switches it off).
async fn idle_figures(store: &dyn crate::store::Store, secs: u64) -> anyhow::Result<()> {
    if secs == 0 {
        return Ok(());
    }
    // Let the last calls' writes and their statistics settle first: a connection that has gone
    // idle reports its count up to 10 s late (PostgreSQL's PGSTAT_IDLE_INTERVAL).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let Some(first) = store.usage().await?.transactions else {
        println!("warden idle_transactions_per_s=n/a (SQLite keeps no count of transactions)");
        return Ok(());
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let last = store.usage().await?.transactions.unwrap_or(first);
    println!(
        "warden idle_transactions_per_s={:.1} (postgresql pg_stat_database over {secs} s, one idle node)",
        (last - first) as f64 / secs as f64
    );
    Ok(())
}

/// Compile time on a fresh engine with an empty AOT cache, then the load time of a second
/// fresh engine from that cache (what a restarted daemon pays), in ms.
async fn compile_figures(bytes: &[u8], dir: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    use crate::runtime::{Runtime, RuntimeConfig};
    let cfg = RuntimeConfig { cache_dir: dir.join("bench-aot"), max_instances: 2, ..RuntimeConfig::default() };
    let timed = |cfg: RuntimeConfig| async move {
        let rt = Runtime::new(cfg)?;
        let t = Instant::now();
        let c = rt.load(bytes).await?;
        anyhow::Ok((t.elapsed().as_secs_f64() * 1000.0, c.from_cache()))
    };
    let (compile_ms, hit) = timed(cfg.clone()).await?;
    if hit {
        bail!("the fresh AOT cache {} was not empty", cfg.cache_dir.display());
    }
    let (cache_load_ms, hit) = timed(cfg).await?;
    if !hit {
        bail!("the second engine compiled again instead of loading the AOT cache");
    }
    Ok((compile_ms, cache_load_ms))
}

/// Instantiate + run of `--task` with `--args`, in-process on the daemon's runtime (no
/// database), averaged over `--runs` calls.
async fn instantiate_run(daemon: &Daemon, bytes: &[u8], a: &BenchArgs) -> anyhow::Result<()> {
    let rt = daemon.orchestrator().runtime().clone();
    let comp = rt.load(bytes).await?;
    let n = a.runs.max(1);
    let t = Instant::now();
    for i in 0..n {
        let req = RunRequest {
            task: a.task.clone(),
            args: a.args.clone(),
            info: InvocationInfo {
                id: format!("bench-{i}"),
                task: a.task.clone(),
                attempt: 1,
                parent: None,
                workflow: None,
            },
            limits: Limits { timeout_ms: 10_000, memory_limit_bytes: 256 << 20, scratch_bytes: 0 },
            cancel: Default::default(),
            gauge: Default::default(),
        };
        let rep = rt.run(&comp, req, Arc::new(NoHost)).await;
        if let Err(e) = rep.outcome {
            bail!("in-process run failed: {e}");
        }
    }
    let per_run_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("warden instantiate_run_us={per_run_us:.0} runs={n}");
    Ok(())
}

/// The leader's pure token distribution (`cluster::ring::rebalance`) over JobSync's default
/// ring (10,000 tokens) and 50 nodes: a fresh ring, a node leaving, a node joining; the median
/// of 101 runs each. (JobSync's own Python function takes about 3 ms for this.)
fn ring_figures() -> anyhow::Result<()> {
    use crate::cluster::ring;
    const TOKENS: usize = 10_000;
    let median_us = |current: &[Option<u32>], live: &[u32]| -> anyhow::Result<(f64, Vec<u32>)> {
        let mut times = Vec::with_capacity(101);
        let mut owners = Vec::new();
        for _ in 0..101 {
            let t = Instant::now();
            let plan = ring::rebalance(current, live)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            owners = plan.owners;
        }
        times.sort_by(f64::total_cmp);
        Ok((percentile(&times, 0.5), owners))
    };
    let fifty: Vec<u32> = (0..50).collect();
    let (fresh, owners) = median_us(&vec![None; TOKENS], &fifty)?;
    let current: Vec<Option<u32>> = owners.into_iter().map(Some).collect();
    let (leave, owners) = median_us(&current, &fifty[..49])?;
    let current: Vec<Option<u32>> = owners.into_iter().map(Some).collect();
    let (join, _) = median_us(&current, &fifty)?;
    println!(
        "warden ring_rebalance_us fresh={fresh:.0} leave={leave:.0} join={join:.0} (10000 tokens, 50 nodes, median of 101)"
    );
    Ok(())
}

/// One workflow of `nodes` nodes (an array without `--workflow-layers`) while, every 20 ms,
/// an unrelated call is routed (`POST /v1/invocations`) and read (`GET /v1/invocations/{id}`).
async fn workflow_figures(c: &Client, url: &str, a: &BenchArgs, args: &Value, nodes: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let (path, body, shape) = if a.workflow_layers == 0 {
        let all: Vec<Value> = (0..nodes).map(|i| json!({"name": format!("n{i}")})).collect();
        let body = json!({"task": a.task, "args": all, "max_concurrently_running": a.workflow_limit});
        ("/v1/arrays", body, "array".to_string())
    } else {
        let width = nodes.div_ceil(a.workflow_layers).max(1);
        let id = |layer: usize, i: usize| format!("{layer}.{i}");
        let all: Vec<Value> = (0..nodes)
            .map(|n| {
                let (layer, i) = (n / width, n % width);
                let deps: Vec<String> = if layer == 0 {
                    Vec::new()
                } else {
                    let mut d = vec![id(layer - 1, i), id(layer - 1, (i + 1) % width)];
                    d.dedup();
                    d
                };
                json!({"id": id(layer, i), "task": a.task, "args": {"name": format!("n{n}")}, "depends_on": deps})
            })
            .collect();
        let body = json!({"nodes": all, "max_concurrently_running": a.workflow_limit});
        ("/v1/workflows", body, format!("workflow of {} layers", nodes.div_ceil(width)))
    };
    // Idle latency of the unrelated calls first (after a warm-up).
    let never = Arc::new(AtomicBool::new(false));
    probe_apart(url, &a.task, args, 10, never.clone()).await?;
    let (mut idle_route, mut idle_read) = probe_apart(url, &a.task, args, 50, never).await?;
    idle_route.sort_by(f64::total_cmp);
    idle_read.sort_by(f64::total_cmp);
    let started = Instant::now();
    let resp = http.post(format!("{url}{path}")).json(&body).send().await?;
    if !resp.status().is_success() {
        bail!("creating the workflow failed: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let wf: Value = resp.json().await?;
    let wf = wf["id"].as_str().context("no workflow id")?.to_string();
    let status = std::sync::Mutex::new(String::new());
    let done = Arc::new(AtomicBool::new(false));
    let watch = async {
        loop {
            let v = c.get(&format!("/v1/workflows/{wf}?nodes=false")).await?;
            let s = v["status"].as_str().unwrap_or_default().to_string();
            if ["done", "failed", "cancelled"].contains(&s.as_str()) {
                *status.lock().unwrap_or_else(|e| e.into_inner()) = s;
                done.store(true, Ordering::SeqCst);
                return anyhow::Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(1200) {
                bail!("the workflow is still {s} after 20 minutes");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let probes = probe_apart(url, &a.task, args, usize::MAX, done.clone());
    let (elapsed, probes) = tokio::join!(watch, probes);
    let (elapsed, (mut route, mut read)) = (elapsed?.as_secs_f64(), probes?);
    let status = status.into_inner().unwrap_or_else(|e| e.into_inner());
    if status != "done" {
        bail!("the workflow ended {status}");
    }
    route.sort_by(f64::total_cmp);
    read.sort_by(f64::total_cmp);
    println!(
        "warden workflow_nodes_per_s={:.0} nodes={nodes} elapsed_s={elapsed:.1} ({shape}, limit {}, {})",
        nodes as f64 / elapsed,
        a.workflow_limit,
        if a.database.is_some() { "postgresql" } else { "sqlite" }
    );
    println!(
        "warden unrelated_route_p50_ms={:.2} unrelated_route_p99_ms={:.2} unrelated_read_p50_ms={:.2} \
         unrelated_read_p99_ms={:.2} samples={}",
        percentile(&route, 0.5),
        percentile(&route, 0.99),
        percentile(&read, 0.5),
        percentile(&read, 0.99),
        route.len()
    );
    println!(
        "warden idle_route_p50_ms={:.2} idle_route_p99_ms={:.2} idle_read_p99_ms={:.2}",
        percentile(&idle_route, 0.5),
        percentile(&idle_route, 0.99),
        percentile(&idle_read, 0.99)
    );
    Ok(())
}

/// [`probe`] on a thread and runtime of its own, as a separate client process would: the
/// daemon's busy worker threads then delay the answers, not the client's own timing. (An
/// in-process probe sharing the daemon's two worker threads measured 1–3 ms more at p99.)
async fn probe_apart(
    url: &str,
    task: &str,
    args: &Value,
    n: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (url, task, args) = (url.to_string(), task.to_string(), args.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("bench-probe".into()).spawn(move || {
        let out =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from).and_then(
                |rt| {
                    rt.block_on(async {
                        let c = Client::new(&url, None)?;
                        probe(&c, &reqwest::Client::new(), &url, &task, &args, n, || stop.load(Ordering::SeqCst)).await
                    })
                },
            );
        let _ = tx.send(out);
    })?;
    rx.await.context("the probe thread stopped")?
}

/// Routes an unrelated call and reads it, every 20 ms, `n` times or until `stop`: the
/// latencies (ms) of the routings and of the reads.
async fn probe(
    c: &Client,
    http: &reqwest::Client,
    url: &str,
    task: &str,
    args: &Value,
    n: usize,
    stop: impl Fn() -> bool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut route, mut read) = (Vec::new(), Vec::new());
    while route.len() < n && !stop() {
        let t = Instant::now();
        let v = c.call(task, args).await?;
        route.push(t.elapsed().as_secs_f64() * 1000.0);
        let id = v["id"].as_str().context("no invocation id")?;
        let t = Instant::now();
        let r = http.get(format!("{url}/v1/invocations/{id}")).send().await?;
        read.push(t.elapsed().as_secs_f64() * 1000.0);
        if !r.status().is_success() {
            bail!("reading an unrelated call failed: {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((route, read))
}

/// Waits until every call of `ids` is final through the batch await
/// ([`super::stream::await_all`]); fails on one that did not succeed or when they take more
/// than 10 minutes from `started`.
async fn await_success(c: &Client, ids: &[String], started: Instant) -> anyhow::Result<()> {
    let pending =
        super::stream::await_all(c, ids.to_vec(), started + Duration::from_secs(600), |results| {
            match results.iter().find(|r| r["status"] != "success") {
                Some(bad) => bail!("a call ended {}: {}", bad["status"], bad["error"]),
                None => Ok(()),
            }
        })
        .await?;
    anyhow::ensure!(pending.is_empty(), "{} of {} calls not finished in 10 minutes", pending.len(), ids.len());
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("warden-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
