//! The wasm runtime on its own, against real guest components: `warden::runtime::Runtime`
//! driven directly (no daemon, no database) with a small in-memory `GuestHost`. Covers loading
//! (validation, the AOT cache), `describe`, and the classification of every way an attempt ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden::model::{ErrorKind, TaskFailure};
use warden::runtime::{
    CancellationToken, GuestHost, InvocationInfo, Limits, LoadedComponent, RunReport, RunRequest, Runtime,
    RuntimeConfig, RuntimeError,
};
use warden_tests::guests;

/// A `GuestHost` that records calls and answers waits after `wait_delay` with `{"y": x*x}` for a
/// child called with `{"x": x}` (what `fanout` expects of `square`).
#[derive(Default)]
struct TestHost {
    calls: Mutex<Vec<(String, u32, String, String)>>,
    progress: Mutex<Vec<(u64, u64, Option<String>)>>,
    wait_delay: Duration,
}

#[warden::runtime::async_trait]
impl GuestHost for TestHost {
    async fn call(&self, caller: &InvocationInfo, seq: u32, task: &str, args: &str) -> Result<String, TaskFailure> {
        self.calls.lock().unwrap().push((caller.id.clone(), seq, task.into(), args.into()));
        Ok(format!("{}.{seq}", caller.id))
    }

    async fn wait(&self, _caller: &InvocationInfo, ids: &[String]) -> Vec<Result<String, TaskFailure>> {
        tokio::time::sleep(self.wait_delay).await;
        let calls = self.calls.lock().unwrap().clone();
        ids.iter()
            .map(|id| {
                let Some((_, _, _, args)) = calls.iter().find(|(parent, seq, _, _)| format!("{parent}.{seq}") == *id)
                else {
                    return Err(TaskFailure::new(ErrorKind::Fatal, format!("unknown invocation `{id}`")));
                };
                let x = serde_json::from_str::<serde_json::Value>(args).unwrap()["x"].as_u64().unwrap();
                Ok(serde_json::json!({ "y": x * x }).to_string())
            })
            .collect()
    }

    fn progress(&self, _caller: &InvocationInfo, done: u64, total: u64, message: Option<String>) {
        self.progress.lock().unwrap().push((done, total, message));
    }
}

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig { cache_dir: dir.to_path_buf(), max_instances: 8, max_memory_bytes: 1 << 30, ..Default::default() }
}

fn request(task: &str, args: &str, timeout_ms: u64, memory_limit_bytes: u64) -> RunRequest {
    RunRequest {
        task: task.into(),
        args: args.into(),
        info: InvocationInfo { id: "inv-1".into(), task: task.into(), attempt: 1, parent: None, workflow: None },
        limits: Limits { timeout_ms, memory_limit_bytes, scratch_bytes: 0 },
        cancel: CancellationToken::new(),
        gauge: Default::default(),
    }
}

async fn load(rt: &Runtime, path: &str) -> LoadedComponent {
    let bytes = std::fs::read(path).unwrap();
    rt.load(&bytes).await.unwrap()
}

async fn run(rt: &Runtime, c: &LoadedComponent, req: RunRequest) -> RunReport {
    rt.run(c, req, Arc::new(TestHost::default())).await
}

fn kind(report: &RunReport) -> Option<ErrorKind> {
    report.outcome.as_ref().err().map(|f| f.kind)
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_and_describes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    let c = load(&rt, guests::HELLO).await;
    assert_eq!(c.digest().len(), 64);

    let tasks = rt.describe(&c, "greeter").await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].name, "hello");
    assert_eq!(tasks[0].component, "greeter");
    assert_eq!(tasks[0].timeout_ms, warden::model::defaults::TIMEOUT_MS);
    assert_eq!(tasks[0].memory_limit_bytes, warden::model::defaults::MEMORY_LIMIT_BYTES);

    let report = run(&rt, &c, request("hello", r#"{"name":"Ada"}"#, 5_000, 64 * MIB)).await;
    let result: serde_json::Value = serde_json::from_str(report.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(result, serde_json::json!({"greeting": "Hello, Ada!"}));
    assert!(report.peak_memory_bytes > 0);
    assert!(!report.output_truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();

    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(matches!(rt.load(&random).await, Err(RuntimeError::NotAComponent(_))));

    let core = rt.load(b"\0asm\x01\0\0\0").await.unwrap_err();
    assert!(matches!(&core, RuntimeError::NotAComponent(m) if m.contains("core WebAssembly module")), "{core}");

    let bytes = std::fs::read(guests::NOHANDLER).unwrap();
    let missing = rt.load(&bytes).await.unwrap_err();
    assert!(matches!(missing, RuntimeError::MissingExport(_)), "{missing}");
    assert!(missing.to_string().contains("warden:task/handler@0.1.0"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aot_cache_is_hit_by_a_fresh_runtime_and_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guests::HELLO).unwrap();

    let cold = Runtime::new(config(dir.path())).unwrap();
    let c = cold.load(&bytes).await.unwrap();
    assert!(!c.from_cache());
    drop(cold);

    let warm = Runtime::new(config(dir.path())).unwrap();
    let c = warm.load(&bytes).await.unwrap();
    assert!(c.from_cache(), "a fresh runtime with the same cache dir loads the artifact");
    assert!(run(&warm, &c, request("hello", r#"{"name":"cache"}"#, 5_000, 64 * MIB)).await.outcome.is_ok());

    // A damaged artifact is dropped and the component compiled again.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(&path, b"not an artifact").unwrap();
        }
    }
    let again = Runtime::new(config(dir.path())).unwrap();
    let c = again.load(&bytes).await.unwrap();
    assert!(!c.from_cache());
    assert!(run(&again, &c, request("hello", r#"{"name":"again"}"#, 5_000, 64 * MIB)).await.outcome.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    let c = load(&rt, guests::HOSTILE).await;
    let tasks = rt.describe(&c, "hostile").await.unwrap();
    let spin_def = tasks.iter().find(|t| t.name == "spin").unwrap();
    assert_eq!(spin_def.timeout_ms, 1000);
    let hog_def = tasks.iter().find(|t| t.name == "hog").unwrap();

    // A CPU loop is interrupted by the epoch deadline.
    let started = Instant::now();
    let report = run(&rt, &c, request("spin", "{}", spin_def.timeout_ms, 64 * MIB)).await;
    assert_eq!(kind(&report), Some(ErrorKind::Timeout), "{:?}", report.outcome);
    assert_eq!(report.outcome.unwrap_err().message, "attempt exceeded its timeout of 1000 ms");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // A guest blocked in a WASI sleep is interrupted too.
    let started = Instant::now();
    let report = run(&rt, &c, request("sleeper", r#"{"ms":60000}"#, 1000, 64 * MIB)).await;
    assert_eq!(kind(&report), Some(ErrorKind::Timeout), "{:?}", report.outcome);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // Memory growth past the limit stops the attempt as a memory-limit failure.
    let report = run(&rt, &c, request("hog", "{}", 30_000, hog_def.memory_limit_bytes)).await;
    assert_eq!(kind(&report), Some(ErrorKind::MemoryLimit), "{:?}", report.outcome);
    assert_eq!(
        report.outcome.as_ref().unwrap_err().message,
        format!("attempt exceeded its memory limit of {} bytes", hog_def.memory_limit_bytes)
    );
    assert!(report.peak_memory_bytes <= hog_def.memory_limit_bytes);
    assert!(report.peak_memory_bytes > hog_def.memory_limit_bytes / 2);

    // Unbounded output runs to completion; only the last 10 000 bytes of each stream are kept.
    let report = run(&rt, &c, request("chatty", r#"{"bytes":20000000}"#, 120_000, 64 * MIB)).await;
    assert_eq!(report.outcome.as_deref().unwrap(), r#"{"printed":20000000}"#);
    assert!(report.output_truncated);
    assert!(report.stdout.len() <= 10_000 && report.stdout.len() > 9_000, "{}", report.stdout.len());
    assert!(report.stderr.len() <= 10_000 && report.stderr.len() > 9_000, "{}", report.stderr.len());
    assert!(report.stdout.ends_with('\n') && report.stdout.contains("chatty out line"));
    assert!(report.stderr.contains("chatty err line"));

    // A result over max_result_bytes (1 MiB) is refused.
    let report = run(&rt, &c, request("bigresult", "{}", 10_000, 64 * MIB)).await;
    assert_eq!(kind(&report), Some(ErrorKind::BadResult), "{:?}", report.outcome);

    // Guest errors keep their kind; panics are traps carrying the panic message.
    let report = run(&rt, &c, request("fatal", "{}", 10_000, 64 * MIB)).await;
    assert_eq!(report.outcome, Err(TaskFailure::new(ErrorKind::Fatal, "nope")));
    let report = run(&rt, &c, request("panics", "{}", 10_000, 64 * MIB)).await;
    assert_eq!(kind(&report), Some(ErrorKind::Trap), "{:?}", report.outcome);
    assert!(report.outcome.unwrap_err().message.contains("this task panics on purpose"));
    assert!(report.stderr.contains("this task panics on purpose"));

    // The same component still runs fine afterwards.
    let report = run(&rt, &c, request("echo", r#"{"a":[1,2]}"#, 10_000, 64 * MIB)).await;
    assert_eq!(report.outcome.as_deref().map(|s| s.replace(' ', "")), Ok(r#"{"a":[1,2]}"#.to_string()));
}

/// Every attempt gets a memory as fresh as a new instance's, whatever ran in the same pool slot
/// before: the pool keeps freed slots resident and resets them in place, page by page where
/// the kernel can say which pages were touched (`PAGEMAP_SCAN`), so this is what proves the
/// reset complete. One slot, so each attempt reuses the memory the one before dirtied: its
/// initialised data, its zeroed statics and 24 MiB it grew (more than the pool keeps
/// resident), also after an attempt that trapped at its memory limit with 64 MiB touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_never_sees_the_memory_of_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig { max_instances: 1, ..config(dir.path()) };
    let rt = Runtime::new(cfg).unwrap();
    let c = load(&rt, guests::HOSTILE).await;
    let hello = load(&rt, guests::HELLO).await;
    let clean = serde_json::json!({"data": 0, "bss": 0, "heap": 0});
    for round in 0..4 {
        let report = run(&rt, &c, request("residue", "{}", 30_000, 256 * MIB)).await;
        let found: serde_json::Value = serde_json::from_str(report.outcome.as_deref().unwrap()).unwrap();
        assert_eq!(found, clean, "round {round}: bytes left by an earlier attempt");
        match round {
            // Another component in between, then an attempt killed at its limit.
            1 => assert!(run(&rt, &hello, request("hello", r#"{"name":"x"}"#, 5_000, 64 * MIB)).await.outcome.is_ok()),
            2 => {
                let report = run(&rt, &c, request("hog", "{}", 30_000, 64 * MIB)).await;
                assert_eq!(kind(&report), Some(ErrorKind::MemoryLimit), "{:?}", report.outcome);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_interrupts_a_running_guest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    let c = load(&rt, guests::HOSTILE).await;
    let req = request("spin", "{}", 60_000, 64 * MIB);
    let cancel = req.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let report = run(&rt, &c, req).await;
    assert_eq!(kind(&report), Some(ErrorKind::Cancelled), "{:?}", report.outcome);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // A token cancelled before the attempt starts ends it at once.
    let req = request("echo", "{}", 60_000, 64 * MIB);
    req.cancel.cancel();
    assert_eq!(kind(&run(&rt, &c, req).await), Some(ErrorKind::Cancelled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_do_not_count_towards_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    let c = load(&rt, guests::FANOUT).await;
    let host = Arc::new(TestHost { wait_delay: Duration::from_millis(1500), ..Default::default() });
    let report = rt.run(&c, request("fanout", r#"{"n":4}"#, 1000, 64 * MIB), host.clone()).await;
    assert_eq!(report.outcome.as_deref(), Ok(r#"{"sum":14}"#), "{:?}", report.outcome);
    assert!(report.wall_ms >= 1500);
    let calls = host.calls.lock().unwrap().clone();
    let seqs: Vec<u32> = calls.iter().map(|(_, seq, _, _)| *seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3], "call sequence numbers count from 0");
    assert!(calls.iter().all(|(parent, _, task, _)| parent == "inv-1" && task == "square"));
}

/// Figures for the hand-off notes: cold compile, cache-hit load, instantiate + run of `hello`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_attempts_share_one_compiled_component() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    rt.load(&bytes).await.unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    let c = rt.load(&bytes).await.unwrap();
    assert!(c.from_cache());
    // A fresh store per attempt: 200 attempts in a row all succeed (timings belong to
    // `warden bench`, not to a test).
    for _ in 0..200 {
        let report = run(&rt, &c, request("hello", r#"{"name":"Ada"}"#, 5_000, 64 * MIB)).await;
        assert!(report.outcome.is_ok());
    }
}

/// A `GuestHost` with a bug: it panics on the first call.
struct PanickingHost;

#[warden::runtime::async_trait]
impl GuestHost for PanickingHost {
    async fn call(&self, _: &InvocationInfo, _: u32, _: &str, _: &str) -> Result<String, TaskFailure> {
        panic!("host bug")
    }
    async fn wait(&self, _: &InvocationInfo, _: &[String]) -> Vec<Result<String, TaskFailure>> {
        Vec::new()
    }
    fn progress(&self, _: &InvocationInfo, _: u64, _: u64, _: Option<String>) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_guest_host_is_a_host_failure() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(config(dir.path())).unwrap();
    let c = load(&rt, guests::FANOUT).await;
    let report = rt.run(&c, request("fanout", r#"{"n":1}"#, 5_000, 64 * MIB), Arc::new(PanickingHost)).await;
    let failure = report.outcome.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Host);
    assert!(failure.message.contains("host bug"), "{}", failure.message);
    // The runtime is still usable.
    let report = rt.run(&c, request("square", r#"{"x":3}"#, 5_000, 64 * MIB), Arc::new(TestHost::default())).await;
    assert_eq!(report.outcome.as_deref(), Ok(r#"{"y":9}"#));
}
