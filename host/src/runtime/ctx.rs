//! The data of one attempt's `Store`: `TaskCtx` (WASI context, resource table, memory limiter,
//! logs, the attempt's identity and host services) and the attempt clock, which measures time
//! towards the timeout and stops while the guest waits on other invocations; the attempt's
//! gauge, what the host can read of a running attempt from outside it. The scratch space's
//! budget, when the attempt has one, is here too (`scratch.rs` charges it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::scratch::ScratchBudget;
use super::{GuestHost, InvocationInfo, LogLine};

/// Why the runtime interrupted a guest; raised from the epoch callback as the trap's error so
/// that the classification can tell it from a guest's own trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Interrupt {
    /// The attempt used up its time.
    #[error("the attempt ran out of time")]
    Timeout,
    /// The invocation was cancelled.
    #[error("the invocation was cancelled")]
    Cancelled,
}

/// Marker error returned by the limiter when a memory would grow past the attempt's limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("memory growth to {desired} bytes refused: the attempt's limit is {limit} bytes")]
pub(crate) struct MemoryLimitExceeded {
    desired: u64,
    limit: u64,
}

/// What the host can read of a running attempt from outside it, while it runs: the most
/// linear memory held so far, the attempt's memory limit and the time left before its timeout.
/// The runtime keeps it up to date; the node's heartbeat reports it, so that triage knows why
/// a node that went silent lost the attempt (Jobmon's exit-info lookup). All zero (and no time
/// left known) until the attempt starts.
#[derive(Debug, Default)]
pub struct AttemptGauge {
    peak_memory_bytes: AtomicU64,
    memory_limit_bytes: AtomicU64,
    clock: OnceLock<Arc<AttemptClock>>,
}

impl AttemptGauge {
    /// The most linear memory the attempt held at once, so far.
    pub fn peak_memory_bytes(&self) -> u64 {
        self.peak_memory_bytes.load(Ordering::Relaxed)
    }

    /// The attempt's memory limit (0 before it starts).
    pub fn memory_limit_bytes(&self) -> u64 {
        self.memory_limit_bytes.load(Ordering::Relaxed)
    }

    /// Time left before the attempt's timeout, in ms; `None` before it starts and while the
    /// guest waits on other invocations (its clock is stopped then).
    pub fn timeout_left_ms(&self) -> Option<u64> {
        let left = self.clock.get()?.remaining()?;
        Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    /// The attempt starts: its limit and clock.
    pub(crate) fn start(&self, memory_limit_bytes: u64, clock: &Arc<AttemptClock>) {
        self.memory_limit_bytes.store(memory_limit_bytes, Ordering::Relaxed);
        let _ = self.clock.set(clock.clone());
    }
}

/// Enforces the attempt's memory limit over all its linear memories together.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    total: u64,
    peak: u64,
    exceeded: bool,
    gauge: Arc<AttemptGauge>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64, gauge: Arc<AttemptGauge>) -> Self {
        Self { limit, total: 0, peak: 0, exceeded: false, gauge }
    }

    /// Whether the guest asked for more memory than its limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// The most linear memory the attempt held at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    fn grow(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // Beyond the memory's own declared maximum: an ordinary failed `memory.grow`.
            return Ok(false);
        }
        let delta = desired.saturating_sub(current) as u64;
        let total = self.total.saturating_add(delta);
        if total > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::new(MemoryLimitExceeded { desired: total, limit: self.limit }));
        }
        self.total = total;
        self.peak = self.peak.max(total);
        self.gauge.peak_memory_bytes.store(self.peak, Ordering::Relaxed);
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired, maximum)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Table slots are bounded by the pooling allocator; only honour the declared maximum.
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

#[derive(Debug, Default)]
struct WaitState {
    /// Time spent in finished waits.
    waited: Duration,
    /// Start of the current wait, if the guest is waiting now.
    since: Option<Instant>,
    /// Nested waits in progress (a guest has one, but count them anyway).
    depth: u32,
}

/// Time the attempt has used towards its timeout: wall time since the start, minus time spent
/// waiting on other invocations.
#[derive(Debug)]
pub(crate) struct AttemptClock {
    started: Instant,
    timeout: Duration,
    waits: Mutex<WaitState>,
}

/// Ends a wait when dropped (also when the waiting future is dropped half-way).
pub(crate) struct WaitGuard(Arc<AttemptClock>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut w = self.0.waits.lock().unwrap_or_else(PoisonError::into_inner);
        w.depth = w.depth.saturating_sub(1);
        if w.depth == 0
            && let Some(since) = w.since.take()
        {
            w.waited += since.elapsed();
        }
    }
}

impl AttemptClock {
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self { started: Instant::now(), timeout, waits: Mutex::default() })
    }

    /// Stops the clock until the guard drops.
    pub(crate) fn begin_wait(self: &Arc<Self>) -> WaitGuard {
        let mut w = self.waits.lock().unwrap_or_else(PoisonError::into_inner);
        if w.depth == 0 {
            w.since = Some(Instant::now());
        }
        w.depth += 1;
        WaitGuard(self.clone())
    }

    /// Time left before the timeout; `None` while the guest waits (the clock is stopped).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.remaining_at(Instant::now())
    }

    fn remaining_at(&self, now: Instant) -> Option<Duration> {
        let w = self.waits.lock().unwrap_or_else(PoisonError::into_inner);
        if w.since.is_some() {
            return None;
        }
        let used = now.saturating_duration_since(self.started).saturating_sub(w.waited);
        Some(self.timeout.saturating_sub(used))
    }

    /// Whether the attempt has used up its time.
    pub(crate) fn expired(&self) -> bool {
        self.remaining().is_some_and(|d| d.is_zero())
    }
}

/// Resolves once the attempt's time is used up (never while the guest waits).
pub(crate) async fn deadline(clock: &AttemptClock) {
    /// How often a stopped clock is looked at again.
    const WHILE_WAITING: Duration = Duration::from_millis(50);
    loop {
        match clock.remaining() {
            Some(left) if left.is_zero() => return,
            Some(left) => tokio::time::sleep(left).await,
            None => tokio::time::sleep(WHILE_WAITING).await,
        }
    }
}

/// The logs an attempt recorded, capped in count and line length.
#[derive(Debug, Default)]
pub(crate) struct Logs {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: u64,
    max_lines: usize,
}

/// Longest log line (and progress message) kept, in bytes.
pub(crate) const MAX_LINE_BYTES: usize = 4096;

impl Logs {
    pub(crate) fn new(max_lines: usize) -> Self {
        Self { lines: Vec::new(), dropped: 0, max_lines }
    }

    pub(crate) fn push(&mut self, level: &str, message: String) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        self.lines.push(LogLine { level: level.to_string(), message: cap_line(message), at_ms: unix_ms() });
    }
}

/// Cuts a guest-provided line to `MAX_LINE_BYTES` at a character boundary.
pub(crate) fn cap_line(mut s: String) -> String {
    if s.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The data of one attempt's `Store`.
pub(crate) struct TaskCtx {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) logs: Logs,
    pub(crate) info: InvocationInfo,
    pub(crate) host: Arc<dyn GuestHost>,
    /// Calls made so far; the next call's sequence number.
    pub(crate) call_seq: u32,
    pub(crate) clock: Arc<AttemptClock>,
    pub(crate) cancel: CancellationToken,
    /// The scratch space's budget, when the attempt has a scratch directory.
    pub(crate) scratch: Option<Arc<ScratchBudget>>,
}

impl WasiView for TaskCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_all_memories_and_flags_the_excess() {
        let gauge = Arc::new(AttemptGauge::default());
        let mut l = MemoryLimiter::new(10 * 65536, gauge.clone());
        assert!(l.grow(0, 4 * 65536, None).is_ok_and(|ok| ok));
        assert!(l.grow(0, 4 * 65536, None).is_ok_and(|ok| ok));
        assert_eq!(l.peak(), 8 * 65536);
        assert_eq!(gauge.peak_memory_bytes(), 8 * 65536, "the gauge follows the peak");
        let err = l.grow(4 * 65536, 7 * 65536, None);
        assert!(err.as_ref().is_err_and(|e| e.is::<MemoryLimitExceeded>()));
        assert!(l.exceeded());
        assert_eq!(l.peak(), 8 * 65536);
    }

    #[test]
    fn limiter_leaves_declared_maximums_to_wasm() {
        let mut l = MemoryLimiter::new(u64::MAX, Arc::default());
        assert!(l.grow(65536, 3 * 65536, Some(2 * 65536)).is_ok_and(|ok| !ok));
        assert!(!l.exceeded());
    }

    #[test]
    fn clock_stops_while_waiting() {
        let clock = AttemptClock::new(Duration::from_millis(100));
        let start = clock.started;
        assert_eq!(clock.remaining_at(start + Duration::from_millis(30)), Some(Duration::from_millis(70)));
        {
            let _g = clock.begin_wait();
            assert_eq!(clock.remaining(), None);
            assert!(!clock.expired());
        }
        // Pretend the wait lasted 50 ms.
        clock.waits.lock().unwrap_or_else(PoisonError::into_inner).waited = Duration::from_millis(50);
        assert_eq!(clock.remaining_at(start + Duration::from_millis(130)), Some(Duration::from_millis(20)));
        assert_eq!(clock.remaining_at(start + Duration::from_millis(500)), Some(Duration::ZERO));
    }

    #[test]
    fn nested_waits_end_with_the_last_guard() {
        let clock = AttemptClock::new(Duration::from_secs(1));
        let a = clock.begin_wait();
        let b = clock.begin_wait();
        drop(a);
        assert_eq!(clock.remaining(), None);
        drop(b);
        assert!(clock.remaining().is_some());
    }

    #[tokio::test]
    async fn deadline_fires_after_the_timeout() {
        let clock = AttemptClock::new(Duration::from_millis(30));
        let before = Instant::now();
        deadline(&clock).await;
        assert!(before.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn logs_are_capped() {
        let mut logs = Logs::new(2);
        logs.push("info", "a".into());
        logs.push("warn", "é".repeat(3000));
        logs.push("error", "dropped".into());
        assert_eq!(logs.lines.len(), 2);
        assert_eq!(logs.dropped, 1);
        assert_eq!(logs.lines[1].message.len(), MAX_LINE_BYTES);
        assert_eq!(logs.lines[1].level, "warn");
    }
}
