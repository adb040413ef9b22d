//! The wasm runtime: the only place in Warden that touches wasmtime.
//!
//! One `Engine` (cranelift, pooling allocator, epoch interruption) serves every component.
//! `Runtime::load` validates a component, compiles it once (or loads the AOT artifact from the
//! disk cache) and links it into one `InstancePre`; `Runtime::run` runs one attempt in a fresh
//! `Store` whose data is a `TaskCtx`, under a memory limiter, an epoch deadline and capped
//! output, and classifies however the attempt ended into a `RunReport`. An attempt with
//! scratch space also gets a fresh directory preopened as `/tmp`, its writes charged to a byte
//! budget, and removed when it ends (`scratch.rs`). The orchestrator sees only the types of
//! this file; wasmtime's never leak out.

mod bindings;
mod cache;
mod classify;
mod ctx;
mod host;
mod output;
mod scratch;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::model::{ErrorKind, TaskDef, TaskFailure};
use bindings::{HANDLER_EXPORT, Task, TaskPre};

/// The macro `GuestHost` implementations need, re-exported so implementors need no extra dependency.
pub use async_trait::async_trait;
use classify::Seen;
pub use ctx::AttemptGauge;
use ctx::{AttemptClock, Interrupt, Logs, MemoryLimiter, TaskCtx};
use output::CappedOutput;
use scratch::{ScratchBudget, ScratchDir};
/// The cancellation token of `RunRequest::cancel`, re-exported for the same reason.
pub use tokio_util::sync::CancellationToken;

/// How often the engine's epoch advances: the granularity of timeouts, cancellation and yields.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Limits of the attempt that runs `describe`.
const DESCRIBE_LIMITS: Limits = Limits { timeout_ms: 10_000, memory_limit_bytes: 256 * 1024 * 1024, scratch_bytes: 0 };
/// Most resources (streams, pollables, …) one attempt may hold at once.
const MAX_RESOURCES: usize = 10_000;
/// Linear memories the pool keeps per concurrent instance (a Rust component has one).
const MEMORIES_PER_INSTANCE: u32 = 2;
/// Core instances the pool keeps per concurrent instance.
const CORE_INSTANCES_PER_INSTANCE: u32 = 20;
/// Tables the pool keeps per concurrent instance.
const TABLES_PER_INSTANCE: u32 = 10;
/// How much of a freed linear memory's slot the pool resets in place and keeps resident for
/// the next instance (wasmtime's `linear_memory_keep_resident`), instead of giving it back to
/// the kernel with `madvise` (a TLB shoot-down across cores) and faulting it in again at the
/// next call; the rest still goes back. Without the `PAGEMAP_SCAN` ioctl (Linux before 6.7)
/// the pool cannot tell which pages an instance touched and zeroes the whole kept range:
/// measured with `warden bench --calls 20000` on the `hello` example, two release builds run
/// alternately, none → 128 KiB took no-op calls from 5,148 to 5,974/s and instantiate + run
/// from 35–63 to 29–31 µs; 1 MiB zeroed more than a small task touches (45–72 µs), 256 KiB was
/// no better than 128 KiB.
const MEMORY_KEEP_RESIDENT: usize = 128 << 10;
/// The same when the kernel has `PAGEMAP_SCAN` (Linux 6.7+): the pool resets only the pages
/// the instance touched (`PoolingAllocationConfig::pagemap_scan`), so it can keep more.
/// `warden bench --component-only --runs 1000`, the same build, kept bytes with the scan:
/// JavaScript `reverse` 613 µs at 128 KiB, 415 at 2 MiB, 408–474 from 4 to 32 MiB (2 MiB is
/// the knee); Rust `hello` 10 µs from 128 KiB to 8 MiB (27–28 µs without the scan); Python
/// `wordcount` 1,435–1,567 µs whatever the size. At most this much per slot stays resident,
/// and only what a guest touched.
const MEMORY_KEEP_RESIDENT_SCANNED: usize = 2 << 20;
/// The same for tables (wasmtime's `table_keep_resident`).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Settings of the runtime, fixed for the life of the engine.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of the AOT artifacts: `<cache_dir>/<digest>-<engine hash>.cwasm`.
    pub cache_dir: PathBuf,
    /// Component instances alive at once (running attempts, waiting parents, `describe`s).
    pub max_instances: u32,
    /// Hard cap of any linear memory; the per-attempt limit is in `Limits`.
    pub max_memory_bytes: u64,
    /// The last this many bytes of stdout and of stderr are kept per attempt.
    pub output_cap_bytes: usize,
    /// Largest result accepted; a bigger one fails with `ErrorKind::BadResult`.
    pub max_result_bytes: usize,
    /// Log lines kept per attempt (each capped at 4 KiB); further lines are counted and dropped.
    pub max_log_lines: usize,
    /// Components compiled at once (each compile runs on a blocking thread).
    pub compile_concurrency: usize,
    /// Largest component accepted.
    pub max_component_bytes: usize,
    /// Directory of the attempts' scratch directories (`<scratch_dir>/<invocation>-<attempt>`),
    /// emptied when the runtime starts (a crash's leftovers), so it must be this runtime's
    /// alone: the daemon's is `<data_dir>/scratch`, under the data directory's lock. `None`: no
    /// scratch space, and an attempt that asks for some fails with a host error.
    pub scratch_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: std::env::temp_dir().join("warden-cache"),
            max_instances: 100,
            max_memory_bytes: 4 << 30,
            output_cap_bytes: 10_000,
            max_result_bytes: 1 << 20,
            max_log_lines: 1000,
            compile_concurrency: 1,
            max_component_bytes: 64 << 20,
            scratch_dir: None,
        }
    }
}

/// Why a component could not be loaded or described.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The component is bigger than `max_component_bytes`.
    #[error("component is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Size of the upload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Not a WebAssembly component: random bytes, or a core module.
    #[error("{0}")]
    NotAComponent(String),
    /// The component fails validation or compilation.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not export the handler interface.
    #[error("{0}")]
    MissingExport(String),
    /// The component imports something Warden does not provide.
    #[error("{0}")]
    UnsupportedImport(String),
    /// `describe` failed or described tasks the host cannot register.
    #[error("describe failed: {0}")]
    Describe(String),
    /// The host itself failed (engine, cache directory, worker threads).
    #[error("runtime failure: {0}")]
    Host(String),
}

/// Who and what an attempt is; shown to the guest by `context.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationInfo {
    /// The invocation's id.
    pub id: String,
    /// The task being run.
    pub task: String,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// The calling invocation, if any.
    pub parent: Option<String>,
    /// The workflow the invocation belongs to, if any.
    pub workflow: Option<String>,
}

/// Limits of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time the attempt may use, excluding time spent waiting on other invocations.
    pub timeout_ms: u64,
    /// Linear memory the attempt may hold, over all its memories (capped by `max_memory_bytes`).
    pub memory_limit_bytes: u64,
    /// Scratch space: 0 for none, else the bytes the attempt may put in its own directory,
    /// preopened in the guest as `/tmp`.
    pub scratch_bytes: u64,
}

/// One attempt to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The task to run (one the component describes).
    pub task: String,
    /// Its arguments, JSON text.
    pub args: String,
    /// The attempt's identity.
    pub info: InvocationInfo,
    /// The attempt's limits.
    pub limits: Limits,
    /// Fired to cancel the attempt; the guest is interrupted within an epoch tick.
    pub cancel: CancellationToken,
    /// Kept up to date while the attempt runs (memory, time left), for the host to read.
    pub gauge: Arc<AttemptGauge>,
}

/// A line logged by a guest through `context.log`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The message, at most 4 KiB.
    pub message: String,
    /// Wall-clock time of the call, Unix milliseconds.
    pub at_ms: i64,
}

/// How an attempt ended, with what it left behind.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The result JSON text (valid JSON, within `max_result_bytes`), or the classified failure.
    pub outcome: Result<String, TaskFailure>,
    /// The last `output_cap_bytes` of stdout (lossy UTF-8).
    pub stdout: String,
    /// The last `output_cap_bytes` of stderr (lossy UTF-8).
    pub stderr: String,
    /// Whether either stream lost bytes to the cap.
    pub output_truncated: bool,
    /// Log lines, in order.
    pub logs: Vec<LogLine>,
    /// Log lines dropped over `max_log_lines`.
    pub logs_dropped: u64,
    /// Most linear memory held at once.
    pub peak_memory_bytes: u64,
    /// Wall-clock duration of the attempt, waits included.
    pub wall_ms: u64,
}

impl RunReport {
    /// The report of an attempt that left nothing behind (no output, no logs, nothing
    /// measured): one whose guest never ran, or whose host panicked.
    pub fn nothing(outcome: Result<String, TaskFailure>) -> Self {
        Self {
            outcome,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            logs: Vec::new(),
            logs_dropped: 0,
            peak_memory_bytes: 0,
            wall_ms: 0,
        }
    }
}

/// Host services a guest reaches through the `calls` and `context` imports; the orchestrator
/// implements it.
#[async_trait::async_trait]
pub trait GuestHost: Send + Sync + 'static {
    /// Route a child call; `seq` counts calls made by this attempt from 0 (deterministic child
    /// ids). Returns the child's invocation id.
    async fn call(&self, caller: &InvocationInfo, seq: u32, task: &str, args: &str) -> Result<String, TaskFailure>;
    /// Wait until these invocations are final; results in order. The runtime stops the
    /// attempt's timeout clock while this runs.
    async fn wait(&self, caller: &InvocationInfo, ids: &[String]) -> Vec<Result<String, TaskFailure>>;
    /// Progress report (fire and forget).
    fn progress(&self, caller: &InvocationInfo, done: u64, total: u64, message: Option<String>);
}

/// The `GuestHost` of `describe`: a component may not call or wait while describing itself.
struct DescribeHost;

#[async_trait::async_trait]
impl GuestHost for DescribeHost {
    async fn call(&self, _: &InvocationInfo, _: u32, task: &str, _: &str) -> Result<String, TaskFailure> {
        Err(TaskFailure::new(ErrorKind::Fatal, format!("cannot call `{task}` from describe")))
    }
    async fn wait(&self, _: &InvocationInfo, ids: &[String]) -> Vec<Result<String, TaskFailure>> {
        ids.iter().map(|_| Err(TaskFailure::new(ErrorKind::Fatal, "cannot wait from describe"))).collect()
    }
    fn progress(&self, _: &InvocationInfo, _: u64, _: u64, _: Option<String>) {}
}

/// Hex SHA-256 of component bytes: its identity and AOT cache key.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A validated, compiled and linked component, ready to instantiate; cheap to clone.
#[derive(Clone)]
pub struct LoadedComponent {
    inner: Arc<Loaded>,
}

struct Loaded {
    digest: String,
    pre: TaskPre<TaskCtx>,
    from_cache: bool,
    initial_memory_bytes: Option<u64>,
}

/// Bytes of a Wasm page.
const WASM_PAGE_BYTES: u64 = 64 * 1024;

impl LoadedComponent {
    /// Hex SHA-256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Whether the compiled code came from the AOT cache rather than a compile.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// The initial size of the largest linear memory the component's modules declare, in
    /// bytes: an attempt with a smaller memory limit cannot even instantiate. `None` when the
    /// component does not say (it instantiates modules it imports).
    pub fn initial_memory_bytes(&self) -> Option<u64> {
        self.inner.initial_memory_bytes
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &self.inner.digest)
            .field("from_cache", &self.inner.from_cache)
            .finish()
    }
}

/// The wasm runtime of a node; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<TaskCtx>,
    cfg: RuntimeConfig,
    engine_hash: String,
    compiles: Arc<Semaphore>,
    /// Stops the epoch ticker when the last `Runtime` clone drops.
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// What a call into the guest is for.
enum Call {
    Describe,
    Run { task: String, args: String },
}

/// What the guest returned.
enum Returned {
    Tasks(Vec<bindings::GuestTaskDef>),
    Result(Result<String, bindings::TaskError>),
}

/// How the race between the guest, its deadline and its cancellation ended.
enum Raced {
    Finished(Result<Returned, wasmtime::Error>),
    NotInstantiated(wasmtime::Error),
    TimedOut,
    Cancelled,
}

/// Everything an attempt produced, before it is shaped into a report.
struct Attempt {
    outcome: Result<Returned, TaskFailure>,
    stdout: CappedOutput,
    stderr: CappedOutput,
    logs: Logs,
    peak_memory_bytes: u64,
    wall_ms: u64,
}

impl Attempt {
    /// An attempt that ended before its guest started (cancelled, or its store could not be set
    /// up): the failure, and the empty outputs.
    fn not_started(failure: TaskFailure, stdout: CappedOutput, stderr: CappedOutput) -> Self {
        Self { outcome: Err(failure), stdout, stderr, logs: Logs::new(0), peak_memory_bytes: 0, wall_ms: 0 }
    }
}

fn host_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Host(format!("{what}: {e}"))
}

fn engine(cfg: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    if cfg.max_instances == 0 {
        return Err(RuntimeError::Host("max_instances must be at least 1".into()));
    }
    if cfg.max_memory_bytes < 65_536 || cfg.max_memory_bytes > 4 << 30 {
        return Err(RuntimeError::Host(format!(
            "max_memory_bytes must be between 64 KiB and 4 GiB, not {}",
            cfg.max_memory_bytes
        )));
    }
    // Whole wasm pages, so the pool's slots and the reservation agree.
    let max_memory = cfg.max_memory_bytes.div_ceil(65_536) * 65_536;
    let n = cfg.max_instances;
    // Freed slots are reset page by page where the kernel can say which pages were touched.
    let scan = PoolingAllocationConfig::is_pagemap_scan_available();
    tracing::debug!(pagemap_scan = scan, "linear memories are reset {}", if scan { "page by page" } else { "in bulk" });
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_INSTANCE))
        .max_core_instances_per_component(CORE_INSTANCES_PER_INSTANCE * 2)
        .total_memories(n.saturating_mul(MEMORIES_PER_INSTANCE))
        .max_memories_per_component(MEMORIES_PER_INSTANCE * 2)
        .total_tables(n.saturating_mul(TABLES_PER_INSTANCE))
        .max_tables_per_component(TABLES_PER_INSTANCE * 2)
        .max_tables_per_module(4)
        .total_stacks(n)
        .linear_memory_keep_resident(if scan { MEMORY_KEEP_RESIDENT_SCANNED } else { MEMORY_KEEP_RESIDENT })
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(if scan { Enabled::Yes } else { Enabled::No })
        .max_memory_size(usize::try_from(max_memory).map_err(|e| host_err("max_memory_bytes", e))?);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        // A memory's slot is exactly the cap: no more address space than the limit needs.
        .memory_reservation(max_memory)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| host_err("cannot create the wasm engine", classify::one_line(&e)))
}

/// Advances the engine's epoch every tick until `stop` is set.
fn start_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    std::thread::Builder::new()
        .name("warden-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| host_err("cannot start the epoch ticker", e))
}

/// Checks the binary's preamble: a component, not a core module or anything else.
fn check_preamble(bytes: &[u8]) -> Result<(), RuntimeError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(RuntimeError::NotAComponent(
            "the upload is not a webassembly component: it lacks the `\\0asm` preamble".into(),
        ));
    }
    match (bytes[4..6] == [1, 0], &bytes[6..8]) {
        (true, [0, 0]) => Err(RuntimeError::NotAComponent(
            "the upload is a core WebAssembly module, not a component: build it for wasm32-wasip2 or wrap it with \
             `wasm-tools component new`"
                .into(),
        )),
        (_, [1, 0]) => Ok(()),
        _ => Err(RuntimeError::NotAComponent(format!(
            "the upload is not a webassembly component: unknown version or layer {:02x?}",
            &bytes[4..8]
        ))),
    }
}

/// The name between the first pair of backticks of a message, if any.
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

impl Runtime {
    /// One engine (pooling allocator, epoch interruption, cranelift) and its epoch ticker thread,
    /// which stops when the last clone of the runtime drops.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine(&cfg)?;
        std::fs::create_dir_all(&cfg.cache_dir)
            .map_err(|e| host_err(&format!("cannot create the cache directory {}", cfg.cache_dir.display()), e))?;
        if let Some(dir) = &cfg.scratch_dir {
            scratch::clean_root(dir)
                .map_err(|e| host_err(&format!("cannot empty the scratch directory {}", dir.display()), e))?;
        }
        let mut linker = Linker::<TaskCtx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| host_err("cannot link wasi", classify::one_line(&e)))?;
        scratch::add_to_linker(&mut linker)
            .map_err(|e| host_err("cannot link the scratch filesystem", classify::one_line(&e)))?;
        Task::add_to_linker::<TaskCtx, HasSelf<TaskCtx>>(&mut linker, |c| c)
            .map_err(|e| host_err("cannot link the warden imports", classify::one_line(&e)))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        start_ticker(engine.clone(), ticker_stop.clone())?;
        let engine_hash = cache::engine_hash(&engine);
        let compiles = Arc::new(Semaphore::new(cfg.compile_concurrency.max(1)));
        Ok(Runtime { inner: Arc::new(Inner { engine, linker, cfg, engine_hash, compiles, ticker_stop }) })
    }

    /// Validate + compile (or load from the disk cache by digest) + link: one `InstancePre` per
    /// component. Also checks the component exports `warden:task/handler@0.1.0` and imports
    /// nothing Warden does not provide.
    pub async fn load(&self, bytes: &[u8]) -> Result<LoadedComponent, RuntimeError> {
        let cfg = &self.inner.cfg;
        if bytes.len() > cfg.max_component_bytes {
            return Err(RuntimeError::TooLarge { size: bytes.len(), max: cfg.max_component_bytes });
        }
        check_preamble(bytes)?;
        let digest = digest(bytes);
        let path = cache::artifact_path(&cfg.cache_dir, &digest, &self.inner.engine_hash);
        let (component, from_cache) = self.compile(bytes, &path).await?;
        let loaded = self.link(component.clone(), digest, from_cache)?;
        if !from_cache {
            // Only components that passed every check are worth keeping.
            tokio::task::spawn_blocking(move || cache::store(&component, &path))
                .await
                .map_err(|e| host_err("the cache writer failed", e))?;
        }
        Ok(loaded)
    }

    /// The component from the cache, or compiled on a blocking thread behind the compile
    /// semaphore. A cache hit does not queue behind other compiles.
    async fn compile(&self, bytes: &[u8], path: &Path) -> Result<(Component, bool), RuntimeError> {
        let started = Instant::now();
        let engine = self.inner.engine.clone();
        let cached = path.to_path_buf();
        let hit = tokio::task::spawn_blocking(move || cache::load(&engine, &cached))
            .await
            .map_err(|e| host_err("the cache reader failed", e))?;
        if let Some(c) = hit {
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "component loaded from the cache");
            return Ok((c, true));
        }
        let permit = self
            .inner
            .compiles
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| host_err("the compile queue is closed", e))?;
        let engine = self.inner.engine.clone();
        let bytes = bytes.to_vec();
        let path = path.to_path_buf();
        // The permit moves into the blocking task: dropping this future does not free a
        // compile slot while a compile still runs.
        let compiled = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Another load may have compiled the same bytes while this one queued.
            if let Some(c) = cache::load(&engine, &path) {
                return Ok((c, true));
            }
            let c = Component::new(&engine, &bytes).map_err(|e| RuntimeError::Invalid(classify::one_line(&e)))?;
            Ok((c, false))
        })
        .await
        .map_err(|e| host_err("the compile worker failed", e))?;
        if compiled.is_ok() {
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "component compiled");
        }
        compiled
    }

    /// Checks the component's exports and imports and pre-links it.
    fn link(&self, component: Component, digest: String, from_cache: bool) -> Result<LoadedComponent, RuntimeError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.inner.engine).map(|(name, _)| name.to_string()).collect();
        if !exports.iter().any(|n| n == HANDLER_EXPORT) {
            let similar: Vec<&String> = exports.iter().filter(|n| n.starts_with("warden:task/handler")).collect();
            let hint = match similar.first() {
                Some(other) => format!(" (it exports `{other}`, another version of the contract)"),
                None => String::new(),
            };
            return Err(RuntimeError::MissingExport(format!("component does not export `{HANDLER_EXPORT}`{hint}")));
        }
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            let msg = classify::one_line(&e);
            match quoted(&msg) {
                Some(name) => RuntimeError::UnsupportedImport(format!(
                    "component imports `{name}`, which warden does not provide ({msg})"
                )),
                None => RuntimeError::UnsupportedImport(msg),
            }
        })?;
        let pre = TaskPre::new(pre).map_err(|e| {
            RuntimeError::Invalid(format!(
                "export `{HANDLER_EXPORT}` does not match the warden contract: {}",
                classify::one_line(&e)
            ))
        })?;
        // Pages of the largest memory the component's modules declare: what it needs to
        // start at the least (unknown when it instantiates imported modules).
        let initial_memory_bytes = component
            .resources_required()
            .and_then(|r| r.max_initial_memory_size)
            .map(|pages| pages.saturating_mul(WASM_PAGE_BYTES));
        Ok(LoadedComponent { inner: Arc::new(Loaded { digest, pre, from_cache, initial_memory_bytes }) })
    }

    /// Instantiates with default limits (10 s, 256 MiB) and calls `describe`; returns the tasks
    /// with `model::defaults` applied for absent options and `component` set to
    /// `component_name`. A task list that is empty, has duplicate or empty names (or options
    /// the host cannot honour) is a `RuntimeError::Describe`.
    pub async fn describe(&self, c: &LoadedComponent, component_name: &str) -> Result<Vec<TaskDef>, RuntimeError> {
        let info = InvocationInfo {
            id: format!("describe-{}", c.digest()),
            task: "describe".into(),
            attempt: 1,
            parent: None,
            workflow: None,
        };
        let span = tracing::info_span!(
            "describe",
            otel.name = "warden.describe",
            component = component_name,
            digest = c.digest()
        );
        let attempt = self
            .attempt(
                c,
                Call::Describe,
                info,
                DESCRIBE_LIMITS,
                CancellationToken::new(),
                Arc::new(DescribeHost),
                Arc::default(),
            )
            .instrument(span)
            .await;
        match attempt.outcome {
            Ok(Returned::Tasks(tasks)) => classify::task_defs(tasks, component_name, self.inner.cfg.max_memory_bytes)
                .map_err(RuntimeError::Describe),
            Ok(Returned::Result(_)) => Err(RuntimeError::Host("describe returned a run result".into())),
            Err(f) if f.kind == ErrorKind::Host => Err(RuntimeError::Host(f.message)),
            Err(f) => Err(RuntimeError::Describe(f.message)),
        }
    }

    /// Runs one attempt in a fresh `Store`. Never panics, never returns an error: every failure
    /// is classified in the report.
    pub async fn run(&self, c: &LoadedComponent, req: RunRequest, host: Arc<dyn GuestHost>) -> RunReport {
        let span = tracing::info_span!(
            "attempt",
            otel.name = "warden.run",
            invocation = %req.info.id,
            task = %req.task,
            attempt = req.info.attempt,
            outcome = tracing::field::Empty,
        );
        let RunRequest { task, args, info, limits, cancel, gauge } = req;
        let max_result = self.inner.cfg.max_result_bytes;
        let call = Call::Run { task, args };
        let attempt = self.attempt(c, call, info, limits, cancel, host, gauge).instrument(span.clone());
        // A panic (a bug of the host, e.g. in a `GuestHost`) must not take the caller down.
        let attempt = match AssertUnwindSafe(attempt).catch_unwind().await {
            Ok(attempt) => attempt,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let failure =
                    TaskFailure::new(ErrorKind::Host, format!("the host panicked during the attempt: {what}"));
                span.record("outcome", "host");
                tracing::error!(parent: &span, "{}", failure.message);
                return RunReport::nothing(Err(failure));
            }
        };
        let outcome = match attempt.outcome {
            Ok(Returned::Result(Ok(json))) => classify::validate_result(json, max_result),
            Ok(Returned::Result(Err(e))) => Err(classify::failure_from_guest(e)),
            Ok(Returned::Tasks(_)) => Err(TaskFailure::new(ErrorKind::Host, "run returned a task list")),
            Err(f) => Err(f),
        };
        match &outcome {
            Ok(_) => span.record("outcome", "success"),
            Err(f) => span.record("outcome", classify::kind_name(f.kind)),
        };
        let (stdout, out_cut) = attempt.stdout.contents();
        let (stderr, err_cut) = attempt.stderr.contents();
        if let Err(f) = &outcome {
            span.in_scope(|| tracing::debug!(kind = classify::kind_name(f.kind), "attempt failed: {}", f.message));
        }
        RunReport {
            outcome,
            stdout,
            stderr,
            output_truncated: out_cut || err_cut,
            logs: attempt.logs.lines,
            logs_dropped: attempt.logs.dropped,
            peak_memory_bytes: attempt.peak_memory_bytes,
            wall_ms: attempt.wall_ms,
        }
    }

    /// Instantiates the component in a fresh store and makes one call, racing it against the
    /// attempt's deadline and cancellation; keeps `gauge` up to date meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        c: &LoadedComponent,
        call: Call,
        info: InvocationInfo,
        limits: Limits,
        cancel: CancellationToken,
        host: Arc<dyn GuestHost>,
        gauge: Arc<AttemptGauge>,
    ) -> Attempt {
        let started = Instant::now();
        let cfg = &self.inner.cfg;
        let stdout = CappedOutput::new(cfg.output_cap_bytes);
        let stderr = CappedOutput::new(cfg.output_cap_bytes);
        let clock = AttemptClock::new(Duration::from_millis(limits.timeout_ms));
        let limits = Limits { memory_limit_bytes: limits.memory_limit_bytes.min(cfg.max_memory_bytes), ..limits };
        if cancel.is_cancelled() {
            return Attempt::not_started(classify::cancelled(), stdout, stderr);
        }
        let scratch = match self.scratch(&info, limits.scratch_bytes).await {
            Ok(s) => s,
            Err(f) => return Attempt::not_started(f, stdout, stderr),
        };
        gauge.start(limits.memory_limit_bytes, &clock);
        let mut store =
            match self.store(&info, limits, &cancel, host, &clock, &stdout, &stderr, gauge, scratch.as_ref()) {
                Ok(s) => s,
                Err(f) => {
                    if let Some(s) = scratch {
                        s.remove().await;
                    }
                    return Attempt::not_started(f, stdout, stderr);
                }
            };

        let pre = &c.inner.pre;
        let guest = async {
            let task = match pre.instantiate_async(&mut store).await {
                Ok(t) => t,
                Err(e) => return Raced::NotInstantiated(e),
            };
            let handler = task.warden_task_handler();
            Raced::Finished(match &call {
                Call::Describe => handler.call_describe(&mut store).await.map(Returned::Tasks),
                Call::Run { task, args } => handler.call_run(&mut store, task, args).await.map(Returned::Result),
            })
        };
        let raced = tokio::select! {
            biased;
            r = guest => r,
            () = ctx::deadline(&clock) => Raced::TimedOut,
            () = cancel.cancelled() => Raced::Cancelled,
        };

        let data = store.into_data();
        if let Some(s) = scratch {
            // The guest is gone; nothing it opened is used any more.
            s.remove().await;
        }
        let seen = Seen {
            timeout_ms: limits.timeout_ms,
            memory_limit_bytes: limits.memory_limit_bytes,
            memory_exceeded: data.limiter.exceeded(),
        };
        let outcome = match raced {
            Raced::Finished(Ok(r)) => Ok(r),
            Raced::Finished(Err(e)) => Err(classify::call_error(&e, seen, &stderr.contents().0)),
            Raced::NotInstantiated(e) => Err(classify::instantiate_error(&e, seen)),
            Raced::TimedOut => Err(classify::timeout(limits.timeout_ms)),
            Raced::Cancelled => Err(classify::cancelled()),
        };
        Attempt {
            outcome,
            stdout,
            stderr,
            logs: data.logs,
            peak_memory_bytes: data.limiter.peak(),
            wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The attempt's fresh scratch directory, if it has scratch space.
    async fn scratch(&self, info: &InvocationInfo, bytes: u64) -> Result<Option<ScratchDir>, TaskFailure> {
        if bytes == 0 {
            return Ok(None);
        }
        let Some(root) = &self.inner.cfg.scratch_dir else {
            return Err(TaskFailure::new(ErrorKind::Host, "this runtime has no scratch directory to give the attempt"));
        };
        ScratchDir::create(root, info).await.map(Some).map_err(|e| {
            TaskFailure::new(ErrorKind::Host, format!("cannot create the attempt's scratch directory: {e}"))
        })
    }

    /// A fresh store for one attempt: WASI with nothing granted but clocks, randomness and the
    /// capped stdout/stderr, and the scratch directory as `/tmp` (with `TMPDIR=/tmp`) when the
    /// attempt has one; the memory limiter; an epoch deadline checked every tick.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        info: &InvocationInfo,
        limits: Limits,
        cancel: &CancellationToken,
        host: Arc<dyn GuestHost>,
        clock: &Arc<AttemptClock>,
        stdout: &CappedOutput,
        stderr: &CappedOutput,
        gauge: Arc<AttemptGauge>,
        scratch: Option<&ScratchDir>,
    ) -> Result<Store<TaskCtx>, TaskFailure> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = scratch {
            wasi.preopened_dir(dir.path(), scratch::GUEST_PATH, FsPerms::ReadWrite).map_err(|e| {
                TaskFailure::new(ErrorKind::Host, format!("cannot open the attempt's scratch directory: {e}"))
            })?;
            wasi.env("TMPDIR", scratch::GUEST_PATH);
        }
        let wasi = wasi.build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let data = TaskCtx {
            wasi,
            table,
            limiter: MemoryLimiter::new(limits.memory_limit_bytes, gauge),
            logs: Logs::new(self.inner.cfg.max_log_lines),
            info: info.clone(),
            host,
            call_seq: 0,
            clock: clock.clone(),
            cancel: cancel.clone(),
            scratch: scratch.map(|_| Arc::new(ScratchBudget::new(limits.scratch_bytes))),
        };
        let mut store = Store::new(&self.inner.engine, data);
        store.limiter(|c| &mut c.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|cx| {
            let data = cx.data();
            if data.cancel.is_cancelled() {
                return Err(wasmtime::Error::new(Interrupt::Cancelled));
            }
            if data.clock.expired() {
                return Err(wasmtime::Error::new(Interrupt::Timeout));
            }
            // Give the executor back to other tasks every tick, so a busy guest starves no one.
            Ok(UpdateDeadline::Yield(1))
        });
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_tells_components_from_modules_and_junk() {
        assert!(check_preamble(b"\0asm\x0d\0\x01\0").is_ok());
        let module = check_preamble(b"\0asm\x01\0\0\0");
        assert!(matches!(module, Err(RuntimeError::NotAComponent(m)) if m.contains("core WebAssembly module")));
        assert!(matches!(check_preamble(b"hello world"), Err(RuntimeError::NotAComponent(_))));
        assert!(matches!(check_preamble(b"\0as"), Err(RuntimeError::NotAComponent(_))));
        assert!(matches!(check_preamble(b"\0asm\x02\0\x05\0"), Err(RuntimeError::NotAComponent(_))));
    }

    #[test]
    fn quoted_finds_the_import_name() {
        assert_eq!(
            quoted("component imports instance `wasi:http/types@0.2.0`, but a matching implementation was not found"),
            Some("wasi:http/types@0.2.0")
        );
        assert_eq!(quoted("no names"), None);
    }

    fn runtime(dir: &std::path::Path) -> Runtime {
        let cfg =
            RuntimeConfig { cache_dir: dir.into(), max_instances: 2, max_memory_bytes: 1 << 20, ..Default::default() };
        Runtime::new(cfg).unwrap()
    }

    fn link_wat(rt: &Runtime, wat: &str) -> Result<LoadedComponent, RuntimeError> {
        let component = Component::new(&rt.inner.engine, wat).unwrap();
        rt.link(component, "d".into(), false)
    }

    #[test]
    fn unknown_imports_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let wat = r#"(component
            (import "wasi:http/types@0.2.0" (instance (export "handle" (func))))
            (instance $h)
            (export "warden:task/handler@0.1.0" (instance $h)))"#;
        let err = link_wat(&rt, wat).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::UnsupportedImport(m) if m.starts_with("component imports `wasi:http/types@0.2.0`, which warden does not provide")),
            "{err}"
        );
    }

    #[test]
    fn a_missing_or_mismatched_handler_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path());
        let err = link_wat(&rt, "(component)").unwrap_err();
        assert_eq!(err.to_string(), "component does not export `warden:task/handler@0.1.0`");
        let other = r#"(component (instance $h) (export "warden:task/handler@0.2.0" (instance $h)))"#;
        let err = link_wat(&rt, other).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::MissingExport(m) if m.contains("it exports `warden:task/handler@0.2.0`")),
            "{err}"
        );
        let empty = r#"(component (instance $h) (export "warden:task/handler@0.1.0" (instance $h)))"#;
        let err = link_wat(&rt, empty).unwrap_err();
        assert!(matches!(&err, RuntimeError::Invalid(m) if m.contains("does not match the warden contract")), "{err}");
    }

    #[tokio::test]
    async fn load_refuses_oversized_and_foreign_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            cache_dir: dir.path().into(),
            max_instances: 1,
            max_memory_bytes: 1 << 20,
            max_component_bytes: 16,
            ..Default::default()
        };
        let rt = Runtime::new(cfg).unwrap();
        assert!(matches!(rt.load(&[0; 17]).await, Err(RuntimeError::TooLarge { size: 17, max: 16 })));
        assert!(matches!(rt.load(b"(component)").await, Err(RuntimeError::NotAComponent(_))));
        // A component preamble followed by garbage fails validation.
        assert!(matches!(rt.load(b"\0asm\x0d\0\x01\0garbage").await, Err(RuntimeError::Invalid(_))));
    }

    #[test]
    fn config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = RuntimeConfig { cache_dir: dir.path().into(), max_instances: 0, ..Default::default() };
        assert!(matches!(Runtime::new(bad), Err(RuntimeError::Host(_))));
        let bad = RuntimeConfig { cache_dir: dir.path().into(), max_memory_bytes: 5 << 30, ..Default::default() };
        assert!(matches!(Runtime::new(bad), Err(RuntimeError::Host(_))));
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(digest(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
