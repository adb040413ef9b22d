//! Atomic-service time slots: which runner may run the cluster-wide "atomic global services" right now.
//!
//! Atomic global services (trigger evaluation, recovery of pending invocations and of running
//! invocations owned by dead runners) must run on at most one runner at a time, cluster-wide. pynenc
//! achieves this without a lock: the active runners, ordered by seniority, split a repeating cycle into
//! equal slots, and a runner may start the services only inside its own slot minus a safety margin.
//!
//! This module is a pure (clock-free, I/O-free) port of pynenc's `pynenc/orchestrator/atomic_service.py`
//! (pynenc 0.2.3):
//!
//! | pynenc                                                               | here                                      |
//! |----------------------------------------------------------------------|-------------------------------------------|
//! | `can_run_atomic_service(runner_id, active_runners, current_time, …)` | [`decide`]                                |
//! | `calculate_runner_position(runner_id, active_runners)`               | [`runner_position`]                       |
//! | `calculate_time_slot(position, total, interval, margin)`             | [`slot_offsets`]                          |
//! | `is_runner_in_time_slot(current_time, interval, start, end)`         | [`Window::contains`] + [`cycle_start_ms`] |
//! | `validate_execution_time(duration, allocated, runner_id)`            | [`execution_fit`]                         |
//! | `BaseOrchestrator.get_active_runners(can_run_atomic_service=True)`   | [`active_runners`]                        |
//! | `ActiveRunnerInfo`                                                   | [`RunnerView`]                            |
//!
//! Config keys (pynenc `ConfigPynenc`, all in minutes there, milliseconds here):
//! `atomic_service_interval_minutes` (default 5.0, [`DEFAULT_INTERVAL_MS`]),
//! `atomic_service_spread_margin_minutes` (default 1.0, [`DEFAULT_SPREAD_MARGIN_MS`]),
//! `atomic_service_check_interval_minutes` (default 0.5, [`DEFAULT_CHECK_INTERVAL_MS`]; the host's polling
//! period, not an input of the decision) and `runner_considered_dead_after_minutes` (default 10.0,
//! [`DEFAULT_RUNNER_DEAD_AFTER_MS`]; the heartbeat timeout passed to [`decide`]).
//!
//! The algorithm, as in pynenc:
//! 1. Active runners are those with `can_run_atomic_service` set whose last heartbeat is not older than the
//!    heartbeat timeout (`last_heartbeat >= now - timeout`, inclusive, as pynenc's orchestrators filter).
//! 2. They are ordered by creation time, oldest first; this runner's position is its index.
//! 3. The cycle is epoch-aligned: the time within the cycle is `now mod interval` (Python's float `%`,
//!    i.e. always non-negative). Slot `i` of `n` starts at `i * interval / n`; the runner's window ends
//!    `spread_margin` before the next slot starts. If the slot is not longer than the margin, the window is
//!    the first half of the slot instead.
//! 4. A lone active runner always runs (pynenc's single-runner fast path), whatever the time.
//!
//! Deliberate differences, all invisible in normal operation:
//! * Milliseconds in `i64` instead of float seconds. Slot starts are `floor(i * interval / n)` so the slots
//!   tile the cycle exactly; pynenc's float starts can differ by under 1 ms. The "half the slot" fallback
//!   rounds up (`ceil(size / 2)`), which for whole-millisecond clocks is exactly pynenc's `now < start +
//!   size / 2`.
//! * Ties in creation time are broken by runner id (pynenc leaves them to dict/SQL order, which differs
//!   per backend); every runner must compute the same order for mutual exclusion to hold.
//! * Duplicate ids in the input are collapsed to their most senior live entry (pynenc's storage keys
//!   runners by id, so it never sees duplicates).
//! * Before the fast path, the caller must itself be active, else [`SlotDecision::NotActive`]. pynenc
//!   checks membership only for two or more runners, but its caller (`should_run_atomic_service`)
//!   heartbeats itself just before asking, so it is always in the list; callers of [`decide`] should
//!   likewise record their own heartbeat first.
//! * Configuration is validated ([`SlotConfig::new`]): pynenc accepts a zero interval (then crashes with
//!   `ZeroDivisionError` when two runners are active) and a negative margin (which makes windows overlap).
//!
//! pynenc has no "already running" gate in this decision: mutual exclusion rests on the slots alone, and
//! the recorded `last_service_start/end` of each runner only feed the overrun diagnostics
//! ([`execution_fit`]). Any extra storage gate is the host's business, outside this module.

use std::collections::HashSet;
use std::fmt;

/// Default cycle length: pynenc `atomic_service_interval_minutes = 5.0`.
pub const DEFAULT_INTERVAL_MS: i64 = 5 * 60_000;
/// Default safety margin at the end of each slot: pynenc `atomic_service_spread_margin_minutes = 1.0`.
pub const DEFAULT_SPREAD_MARGIN_MS: i64 = 60_000;
/// Default polling period of a runner's slot check: pynenc `atomic_service_check_interval_minutes = 0.5`.
pub const DEFAULT_CHECK_INTERVAL_MS: i64 = 30_000;
/// Default heartbeat timeout after which a runner is dead: pynenc `runner_considered_dead_after_minutes = 10.0`.
pub const DEFAULT_RUNNER_DEAD_AFTER_MS: i64 = 10 * 60_000;

/// Validated time-slot configuration (pynenc's `atomic_service_interval_minutes` and
/// `atomic_service_spread_margin_minutes`, in milliseconds).
///
/// Invariants: `interval_ms > 0` and `spread_margin_ms >= 0`. The margin may exceed a slot; the slot then
/// falls back to its first half, as in pynenc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotConfig {
    interval_ms: i64,
    spread_margin_ms: i64,
}

/// Why a [`SlotConfig`] was rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlotConfigError {
    /// The cycle interval must be at least 1 ms.
    IntervalNotPositive {
        /// The rejected interval, in milliseconds.
        interval_ms: i64,
    },
    /// The spread margin must not be negative (it would make neighbouring windows overlap).
    SpreadMarginNegative {
        /// The rejected margin, in milliseconds.
        spread_margin_ms: i64,
    },
    /// A value in minutes was NaN, infinite, or out of the `i64` millisecond range.
    MinutesNotRepresentable {
        /// The rejected value, in minutes.
        minutes: f64,
    },
}

impl fmt::Display for SlotConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IntervalNotPositive { interval_ms } => {
                write!(f, "atomic service interval must be positive, got {interval_ms} ms")
            }
            Self::SpreadMarginNegative { spread_margin_ms } => {
                write!(f, "atomic service spread margin must not be negative, got {spread_margin_ms} ms")
            }
            Self::MinutesNotRepresentable { minutes } => {
                write!(f, "{minutes} minutes is not a representable number of milliseconds")
            }
        }
    }
}

impl std::error::Error for SlotConfigError {}

impl SlotConfig {
    /// Builds a configuration from a cycle interval and a spread margin in milliseconds.
    ///
    /// # Errors
    ///
    /// [`SlotConfigError::IntervalNotPositive`] if `interval_ms <= 0`,
    /// [`SlotConfigError::SpreadMarginNegative`] if `spread_margin_ms < 0`.
    pub const fn new(interval_ms: i64, spread_margin_ms: i64) -> Result<Self, SlotConfigError> {
        if interval_ms <= 0 {
            return Err(SlotConfigError::IntervalNotPositive { interval_ms });
        }
        if spread_margin_ms < 0 {
            return Err(SlotConfigError::SpreadMarginNegative { spread_margin_ms });
        }
        Ok(Self { interval_ms, spread_margin_ms })
    }

    /// Builds a configuration from pynenc's float settings `atomic_service_interval_minutes` and
    /// `atomic_service_spread_margin_minutes`, rounded to the nearest millisecond.
    ///
    /// # Errors
    ///
    /// [`SlotConfigError::MinutesNotRepresentable`] for NaN, infinite or out-of-range minutes, then the
    /// errors of [`SlotConfig::new`] (an interval under half a millisecond rounds to 0 and is rejected).
    pub fn from_minutes(interval_minutes: f64, spread_margin_minutes: f64) -> Result<Self, SlotConfigError> {
        Self::new(minutes_to_ms(interval_minutes)?, minutes_to_ms(spread_margin_minutes)?)
    }

    /// Length of one full cycle, shared by all active runners, in milliseconds.
    #[must_use]
    pub const fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// Safety gap left at the end of each runner's slot, in milliseconds.
    #[must_use]
    pub const fn spread_margin_ms(&self) -> i64 {
        self.spread_margin_ms
    }
}

impl Default for SlotConfig {
    /// pynenc's defaults: a 5-minute cycle with a 1-minute spread margin.
    fn default() -> Self {
        Self { interval_ms: DEFAULT_INTERVAL_MS, spread_margin_ms: DEFAULT_SPREAD_MARGIN_MS }
    }
}

/// Converts float minutes to whole milliseconds, rejecting NaN, infinities and out-of-range values.
fn minutes_to_ms(minutes: f64) -> Result<i64, SlotConfigError> {
    let ms = (minutes * 60_000.0).round();
    // i64::MAX as f64 is 2^63 (not representable as i64); i64::MIN as f64 is exactly -2^63.
    if ms.is_finite() && ms < i64::MAX as f64 && ms >= i64::MIN as f64 {
        Ok(ms as i64)
    } else {
        Err(SlotConfigError::MinutesNotRepresentable { minutes })
    }
}

/// What the decision needs to know about one runner (pynenc's `ActiveRunnerInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunnerView<'a> {
    /// Unique runner id (pynenc `runner_id`); breaks ties in seniority.
    pub id: &'a str,
    /// When the runner was first registered, ms since the Unix epoch (pynenc `creation_time`); older runners
    /// come first.
    pub since_ms: i64,
    /// Last recorded heartbeat, ms since the Unix epoch (pynenc `last_heartbeat`).
    pub last_heartbeat_ms: i64,
    /// Whether the runner takes part in atomic services (pynenc `allow_to_run_atomic_service`): true for
    /// runners heartbeating as service candidates, false for worker heartbeats reported on their behalf.
    pub can_run_atomic_service: bool,
}

/// A half-open time range `[start_ms, end_ms)`, either absolute (ms since the Unix epoch) or relative to the
/// start of a cycle, depending on where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First millisecond inside the window.
    pub start_ms: i64,
    /// First millisecond after the window.
    pub end_ms: i64,
}

impl Window {
    /// Whether `t_ms` lies in `[start_ms, end_ms)` (pynenc `is_runner_in_time_slot`, once `t_ms` is placed in
    /// the same frame as the window).
    #[must_use]
    pub const fn contains(&self, t_ms: i64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }

    /// Length of the window in milliseconds (0 if empty).
    #[must_use]
    pub const fn duration_ms(&self) -> i64 {
        if self.end_ms > self.start_ms { self.end_ms.saturating_sub(self.start_ms) } else { 0 }
    }

    /// Whether the window contains no instant at all.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.end_ms <= self.start_ms
    }
}

/// A runner's place in the cycle: its position among the active runners, its full share of the cycle and
/// the part of it where it may start the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotAssignment {
    /// Zero-based index of the runner among the active runners, oldest first.
    pub position: usize,
    /// Number of active runners sharing the cycle.
    pub runner_count: usize,
    /// The runner's full share of the cycle; the slots of all active runners tile the cycle exactly.
    pub slot: Window,
    /// Where the runner may start the services: `slot` minus the spread margin at its end (pynenc
    /// `calculate_time_slot`), or the whole cycle for a lone runner.
    pub run_window: Window,
}

/// Outcome of [`decide`] for one runner at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotDecision {
    /// The runner is inside its window and may run the atomic services now.
    Run {
        /// End of the current window (ms since the Unix epoch). For a lone runner this is the end of the
        /// current cycle, although a lone runner is allowed again right after.
        slot_end_ms: i64,
    },
    /// The runner is active but outside its window.
    Wait {
        /// Start of the runner's next window (ms since the Unix epoch, strictly after `now_ms`), assuming the
        /// set of active runners does not change meanwhile.
        next_slot_start_ms: i64,
    },
    /// The runner is not among the active runners (unknown id, stale heartbeat, or not eligible).
    NotActive,
}

impl SlotDecision {
    /// Whether this decision allows running the services now.
    #[must_use]
    pub const fn is_run(&self) -> bool {
        matches!(self, Self::Run { .. })
    }
}

/// How long a service execution took compared with its run window (pynenc `validate_execution_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionFit {
    /// At most 80% of the window was used.
    Fits,
    /// More than 80% of the window was used; pynenc logs this at info level.
    NearLimit,
    /// The execution outlasted its window, which can break atomicity; pynenc logs a warning suggesting a
    /// larger `atomic_service_interval_minutes`.
    Overran,
}

/// Clamps an `i128` into the `i64` range.
fn saturate(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The runners that take part in the slot division at `now_ms`, in slot order (pynenc
/// `BaseOrchestrator.get_active_runners(can_run_atomic_service=True)`).
///
/// Keeps the runners with `can_run_atomic_service` whose heartbeat is not older than `heartbeat_timeout_ms`
/// (`last_heartbeat_ms >= now_ms - heartbeat_timeout_ms`), sorts them by `since_ms` then `id`, and keeps only
/// the first (most senior) entry of any duplicated id. The input order does not matter.
#[must_use]
pub fn active_runners<'a>(runners: &[RunnerView<'a>], now_ms: i64, heartbeat_timeout_ms: i64) -> Vec<RunnerView<'a>> {
    let cutoff = i128::from(now_ms) - i128::from(heartbeat_timeout_ms);
    let mut active: Vec<RunnerView<'a>> = runners
        .iter()
        .filter(|r| r.can_run_atomic_service && i128::from(r.last_heartbeat_ms) >= cutoff)
        .copied()
        .collect();
    active.sort_by(|a, b| {
        (a.since_ms, a.id).cmp(&(b.since_ms, b.id)).then(a.last_heartbeat_ms.cmp(&b.last_heartbeat_ms))
    });
    let mut seen = HashSet::with_capacity(active.len());
    active.retain(|r| seen.insert(r.id));
    active
}

/// Index of `runner_id` in an ordered list of active runners (pynenc `calculate_runner_position`).
#[must_use]
pub fn runner_position(active: &[RunnerView<'_>], runner_id: &str) -> Option<usize> {
    active.iter().position(|r| r.id == runner_id)
}

/// Start of the epoch-aligned cycle containing `t_ms` (so `t_ms - cycle_start_ms` is pynenc's
/// `current_time % service_interval`, which is never negative).
#[must_use]
pub fn cycle_start_ms(cfg: &SlotConfig, t_ms: i64) -> i64 {
    saturate(cycle_start_wide(cfg, t_ms))
}

/// [`cycle_start_ms`] without saturation.
fn cycle_start_wide(cfg: &SlotConfig, t_ms: i64) -> i128 {
    let t = i128::from(t_ms);
    t - t.rem_euclid(i128::from(cfg.interval_ms))
}

/// Slot and run window of the runner at `position` among `runner_count` active runners, relative to the
/// start of the cycle (pynenc `calculate_time_slot`, plus the single-runner fast path of
/// `can_run_atomic_service`). `None` if `position >= runner_count`.
///
/// Slot `i` is `[floor(i * interval / n), floor((i + 1) * interval / n))`. For two or more runners the run
/// window ends `spread_margin_ms` before the slot ends, or, when the slot is not longer than the margin,
/// covers the first `ceil(slot / 2)` ms of it. A lone runner's run window is the whole cycle.
#[must_use]
pub fn slot_offsets(cfg: &SlotConfig, position: usize, runner_count: usize) -> Option<SlotAssignment> {
    if position >= runner_count {
        return None;
    }
    let n = runner_count as i128;
    let interval = i128::from(cfg.interval_ms);
    let start = position as i128 * interval / n;
    let end = (position as i128 + 1) * interval / n;
    let slot = Window { start_ms: saturate(start), end_ms: saturate(end) };
    let run_window = if runner_count == 1 {
        slot
    } else {
        let size = end - start;
        let margin = i128::from(cfg.spread_margin_ms);
        // pynenc: end = start + size - margin; if end <= start: end = start + size / 2
        let run_end = if size > margin { end - margin } else { start + (size - size / 2) };
        Window { start_ms: slot.start_ms, end_ms: saturate(run_end) }
    };
    Some(SlotAssignment { position, runner_count, slot, run_window })
}

/// The slot of runner `me` in the cycle containing `at_ms`, in absolute time, for reporting; `None` if `me`
/// is not active at `at_ms` (see [`active_runners`]).
///
/// The returned windows may lie before or after `at_ms` within that cycle. Values saturate at the limits of
/// the `i64` range.
#[must_use]
pub fn slot_window(
    cfg: &SlotConfig,
    runners: &[RunnerView<'_>],
    me: &str,
    at_ms: i64,
    heartbeat_timeout_ms: i64,
) -> Option<SlotAssignment> {
    let active = active_runners(runners, at_ms, heartbeat_timeout_ms);
    let position = runner_position(&active, me)?;
    let rel = slot_offsets(cfg, position, active.len())?;
    let base = cycle_start_wide(cfg, at_ms);
    let shift = |w: Window| Window {
        start_ms: saturate(base + i128::from(w.start_ms)),
        end_ms: saturate(base + i128::from(w.end_ms)),
    };
    Some(SlotAssignment { slot: shift(rel.slot), run_window: shift(rel.run_window), ..rel })
}

/// Whether runner `me` may start the atomic global services at `now_ms` (pynenc `can_run_atomic_service`).
///
/// `runners` is every known runner with its latest heartbeat, in any order; `heartbeat_timeout_ms` is
/// pynenc's `runner_considered_dead_after_minutes`. The caller should record its own heartbeat before
/// calling, as pynenc's `should_run_atomic_service` does. Given the same inputs, at most one runner is told
/// [`SlotDecision::Run`].
#[must_use]
pub fn decide(
    cfg: &SlotConfig,
    runners: &[RunnerView<'_>],
    me: &str,
    now_ms: i64,
    heartbeat_timeout_ms: i64,
) -> SlotDecision {
    let Some(assignment) = slot_window(cfg, runners, me, now_ms, heartbeat_timeout_ms) else {
        return SlotDecision::NotActive;
    };
    let window = assignment.run_window;
    if assignment.runner_count == 1 || window.contains(now_ms) {
        return SlotDecision::Run { slot_end_ms: window.end_ms };
    }
    let this_cycle = i128::from(window.start_ms);
    let next = if this_cycle > i128::from(now_ms) { this_cycle } else { this_cycle + i128::from(cfg.interval_ms) };
    SlotDecision::Wait { next_slot_start_ms: saturate(next) }
}

/// Compares a service execution's duration with the length of the run window it was granted (pynenc
/// `validate_execution_time`): over 100% is [`ExecutionFit::Overran`], over 80% is
/// [`ExecutionFit::NearLimit`].
#[must_use]
pub fn execution_fit(duration_ms: i64, allocated_ms: i64) -> ExecutionFit {
    let (duration, allocated) = (i128::from(duration_ms), i128::from(allocated_ms));
    if duration > allocated {
        ExecutionFit::Overran
    } else if duration * 5 > allocated * 4 {
        ExecutionFit::NearLimit
    } else {
        ExecutionFit::Fits
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;
    const SEC: i64 = 1_000;
    const TIMEOUT: i64 = DEFAULT_RUNNER_DEAD_AFTER_MS;

    fn cfg(interval_ms: i64, margin_ms: i64) -> SlotConfig {
        SlotConfig::new(interval_ms, margin_ms).unwrap()
    }

    fn live(id: &str, since_ms: i64, now_ms: i64) -> RunnerView<'_> {
        RunnerView { id, since_ms, last_heartbeat_ms: now_ms, can_run_atomic_service: true }
    }

    /// Ids of the runners told `Run` at `now_ms`.
    fn runners_told_run<'a>(c: &SlotConfig, runners: &[RunnerView<'a>], now_ms: i64, timeout: i64) -> Vec<&'a str> {
        runners.iter().filter(|r| decide(c, runners, r.id, now_ms, timeout).is_run()).map(|r| r.id).collect()
    }

    // --- pynenc's own unit tests (pynenc_tests/unit/orchestrator/test_atomic_service_all_instances.py) ---

    #[test]
    fn pynenc_calculate_time_slot_divides_interval_equally() {
        // 3 runners, 6 min interval, 1 min margin: runner 1 gets [120 s, 180 s).
        let s = slot_offsets(&cfg(6 * MIN, MIN), 1, 3).unwrap();
        assert_eq!(s.run_window, Window { start_ms: 120 * SEC, end_ms: 180 * SEC });
        assert_eq!(s.slot, Window { start_ms: 120 * SEC, end_ms: 240 * SEC });
    }

    #[test]
    fn pynenc_calculate_time_slot_falls_back_to_half_slot_when_margin_exceeds_slot() {
        // 3 runners, 3 min interval, 2 min margin: the 60 s slot falls back to its first 30 s.
        let s = slot_offsets(&cfg(3 * MIN, 2 * MIN), 0, 3).unwrap();
        assert_eq!(s.run_window, Window { start_ms: 0, end_ms: 30 * SEC });
        // margin == slot also falls back (pynenc: `runner_end_time <= runner_start_time`).
        let s = slot_offsets(&cfg(3 * MIN, MIN), 2, 3).unwrap();
        assert_eq!(s.run_window, Window { start_ms: 120 * SEC, end_ms: 150 * SEC });
    }

    #[test]
    fn pynenc_cycle_wraps_around() {
        // 370 s in a 360 s cycle is 10 s into the cycle, inside [0, 60).
        let c = cfg(6 * MIN, MIN);
        let t = 370 * SEC;
        assert_eq!(t - cycle_start_ms(&c, t), 10 * SEC);
        let runners = [live("a", 0, t), live("b", 1, t), live("c", 2, t)];
        assert_eq!(decide(&c, &runners, "a", t, TIMEOUT), SlotDecision::Run { slot_end_ms: 420 * SEC });
    }

    #[test]
    fn pynenc_distributes_execution_between_three_runners() {
        // Slots [0, 60), [120, 180), [240, 300) s in a 360 s cycle.
        let c = cfg(6 * MIN, MIN);
        let at = |t: i64| [live("runner-1", -2 * SEC, t), live("runner-2", -SEC, t), live("runner-3", 0, t)];
        assert!(decide(&c, &at(0), "runner-1", 0, TIMEOUT).is_run());
        assert!(decide(&c, &at(150 * SEC), "runner-2", 150 * SEC, TIMEOUT).is_run());
        assert!(decide(&c, &at(250 * SEC), "runner-3", 250 * SEC, TIMEOUT).is_run());
        assert_eq!(
            decide(&c, &at(150 * SEC), "runner-1", 150 * SEC, TIMEOUT),
            SlotDecision::Wait { next_slot_start_ms: 360 * SEC }
        );
    }

    #[test]
    fn pynenc_no_runners_means_no_service() {
        assert_eq!(decide(&SlotConfig::default(), &[], "runner-1", 0, TIMEOUT), SlotDecision::NotActive);
    }

    #[test]
    fn pynenc_docs_example_three_runners_five_minute_cycle() {
        // docs/reference/core_services.md: [0, 40), [100, 140), [200, 240) s.
        let c = SlotConfig::default();
        let windows: Vec<Window> = (0..3).map(|p| slot_offsets(&c, p, 3).unwrap().run_window).collect();
        let expected =
            [(0, 40), (100, 140), (200, 240)].map(|(s, e)| Window { start_ms: s * SEC, end_ms: e * SEC }).to_vec();
        assert_eq!(windows, expected);
    }

    // --- concrete cases ---

    #[test]
    fn single_runner_always_runs() {
        let c = SlotConfig::default();
        for t in [0, 1, 239 * SEC, 299_999, 300 * SEC, -7, 1_700_000_000_123] {
            let runners = [live("solo", 0, t)];
            assert_eq!(
                decide(&c, &runners, "solo", t, TIMEOUT),
                SlotDecision::Run { slot_end_ms: cycle_start_ms(&c, t) + c.interval_ms() }
            );
            let a = slot_window(&c, &runners, "solo", t, TIMEOUT).unwrap();
            assert_eq!(a.run_window, a.slot);
            assert_eq!(a.slot.duration_ms(), c.interval_ms());
        }
    }

    #[test]
    fn single_runner_fast_path_ignores_margin_larger_than_cycle() {
        let c = cfg(10 * SEC, 60 * SEC);
        let runners = [live("solo", 0, 9_999)];
        assert!(decide(&c, &runners, "solo", 9_999, TIMEOUT).is_run());
    }

    #[test]
    fn two_runners_alternate() {
        // 10 s cycle, 1 s margin: old runner [0, 4 s), young runner [5 s, 9 s) of every cycle.
        let c = cfg(10 * SEC, SEC);
        let base = 1_700_000_000_000; // a multiple of 10 s
        let runners = |t| [live("young", 500, t), live("old", 100, t)];
        let at = |offset: i64, me: &str| decide(&c, &runners(base + offset), me, base + offset, TIMEOUT);

        assert_eq!(at(0, "old"), SlotDecision::Run { slot_end_ms: base + 4 * SEC });
        assert_eq!(at(0, "young"), SlotDecision::Wait { next_slot_start_ms: base + 5 * SEC });
        assert_eq!(at(3_999, "old"), SlotDecision::Run { slot_end_ms: base + 4 * SEC });
        // margin: nobody runs in [4 s, 5 s) and [9 s, 10 s)
        assert_eq!(at(4 * SEC, "old"), SlotDecision::Wait { next_slot_start_ms: base + 10 * SEC });
        assert_eq!(at(4 * SEC, "young"), SlotDecision::Wait { next_slot_start_ms: base + 5 * SEC });
        assert_eq!(at(5 * SEC, "young"), SlotDecision::Run { slot_end_ms: base + 9 * SEC });
        assert_eq!(at(5 * SEC, "old"), SlotDecision::Wait { next_slot_start_ms: base + 10 * SEC });
        assert_eq!(at(9 * SEC, "young"), SlotDecision::Wait { next_slot_start_ms: base + 15 * SEC });
        assert_eq!(at(10 * SEC, "old"), SlotDecision::Run { slot_end_ms: base + 14 * SEC });
    }

    #[test]
    fn stale_heartbeat_excludes_runner_with_inclusive_cutoff() {
        let c = cfg(10 * SEC, SEC);
        let now = 1_700_000_005_000; // 5 s into a cycle: the second of two slots
        let mut runners = [live("a", 0, now), live("b", 1, now)];
        assert!(decide(&c, &runners, "b", now, TIMEOUT).is_run());

        runners[0].last_heartbeat_ms = now - TIMEOUT; // exactly at the cutoff: still alive
        assert_eq!(active_runners(&runners, now, TIMEOUT).len(), 2);
        assert_eq!(decide(&c, &runners, "a", now, TIMEOUT), SlotDecision::Wait { next_slot_start_ms: now + 5 * SEC });
        assert!(decide(&c, &runners, "b", now, TIMEOUT).is_run());

        runners[0].last_heartbeat_ms = now - TIMEOUT - 1; // dead: "b" is now alone
        assert_eq!(active_runners(&runners, now, TIMEOUT).len(), 1);
        assert_eq!(decide(&c, &runners, "a", now, TIMEOUT), SlotDecision::NotActive);
        assert!(decide(&c, &runners, "b", now, TIMEOUT).is_run());

        runners[0].last_heartbeat_ms = now;
        runners[1].last_heartbeat_ms = now - TIMEOUT - 1; // "b" dead: "a" alone, runs mid-cycle
        assert!(decide(&c, &runners, "a", now, TIMEOUT).is_run());
        assert_eq!(decide(&c, &runners, "b", now, TIMEOUT), SlotDecision::NotActive);
    }

    #[test]
    fn ineligible_runners_do_not_take_slots() {
        let c = cfg(10 * SEC, SEC);
        let now = 5 * SEC;
        let worker = RunnerView { id: "worker", since_ms: 0, last_heartbeat_ms: now, can_run_atomic_service: false };
        let runners = [worker, live("parent", 1, now)];
        assert!(decide(&c, &runners, "parent", now, TIMEOUT).is_run());
        assert_eq!(decide(&c, &runners, "worker", now, TIMEOUT), SlotDecision::NotActive);
    }

    #[test]
    fn unknown_runner_is_not_active() {
        let runners = [live("a", 0, 0)];
        assert_eq!(decide(&SlotConfig::default(), &runners, "ghost", 0, TIMEOUT), SlotDecision::NotActive);
        assert_eq!(slot_window(&SlotConfig::default(), &runners, "ghost", 0, TIMEOUT), None);
    }

    #[test]
    fn order_is_by_seniority_then_id() {
        let now = 0;
        let runners = [live("b", 10, now), live("z", 5, now), live("a", 10, now), live("c", 1, now)];
        let ids: Vec<&str> = active_runners(&runners, now, TIMEOUT).iter().map(|r| r.id).collect();
        assert_eq!(ids, ["c", "z", "a", "b"]);
        let c = cfg(4 * SEC, 0);
        for (position, id) in ids.iter().enumerate() {
            let a = slot_window(&c, &runners, id, now, TIMEOUT).unwrap();
            assert_eq!(a.position, position);
            assert_eq!(a.slot.start_ms, position as i64 * SEC);
        }
    }

    #[test]
    fn duplicate_ids_collapse_to_most_senior_entry() {
        let now = 0;
        let runners = [live("a", 50, now), live("b", 20, now), live("a", 10, now)];
        let active = active_runners(&runners, now, TIMEOUT);
        assert_eq!(active.len(), 2);
        assert_eq!((active[0].id, active[0].since_ms), ("a", 10));
    }

    #[test]
    fn slot_window_reports_the_cycle_containing_the_instant() {
        let c = SlotConfig::default();
        let t = 1_700_000_123_456;
        let cycle = cycle_start_ms(&c, t);
        let runners = [live("a", 0, t), live("b", 1, t), live("c", 2, t)];
        let a = slot_window(&c, &runners, "c", t, TIMEOUT).unwrap();
        assert_eq!((a.position, a.runner_count), (2, 3));
        assert_eq!(a.slot, Window { start_ms: cycle + 200 * SEC, end_ms: cycle + 300 * SEC });
        assert_eq!(a.run_window, Window { start_ms: cycle + 200 * SEC, end_ms: cycle + 240 * SEC });
    }

    #[test]
    fn negative_times_use_a_non_negative_cycle_offset() {
        let c = cfg(10 * SEC, 0);
        assert_eq!(cycle_start_ms(&c, -1), -10 * SEC);
        assert_eq!(cycle_start_ms(&c, -10 * SEC), -10 * SEC);
        let runners = [live("a", 0, -1), live("b", 1, -1)];
        assert!(decide(&c, &runners, "b", -1, TIMEOUT).is_run());
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let c = cfg(i64::MAX, i64::MAX);
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            for timeout in [i64::MIN, 0, i64::MAX] {
                let runners = [live("a", i64::MIN, t), live("b", i64::MAX, t), live("c", 0, i64::MIN)];
                for me in ["a", "b", "c"] {
                    let _ = decide(&c, &runners, me, t, timeout);
                    let _ = decide(&cfg(3, 0), &runners, me, t, timeout);
                    let _ = slot_window(&cfg(7, 1), &runners, me, t, timeout);
                }
            }
        }
        assert!(slot_offsets(&c, 3, 3).is_none());
    }

    #[test]
    fn config_validation_and_minutes() {
        assert_eq!(SlotConfig::from_minutes(5.0, 1.0), Ok(SlotConfig::default()));
        assert_eq!(SlotConfig::from_minutes(0.1, 0.0).map(|c| c.interval_ms()), Ok(6_000));
        assert_eq!(SlotConfig::new(0, 0), Err(SlotConfigError::IntervalNotPositive { interval_ms: 0 }));
        assert_eq!(SlotConfig::new(1, -1), Err(SlotConfigError::SpreadMarginNegative { spread_margin_ms: -1 }));
        assert!(SlotConfig::from_minutes(f64::NAN, 1.0).is_err());
        assert!(SlotConfig::from_minutes(1.0, f64::INFINITY).is_err());
        assert!(SlotConfig::from_minutes(1e300, 1.0).is_err());
        assert!(SlotConfig::from_minutes(0.000_001, 0.0).is_err()); // rounds to 0 ms
        assert!(SlotConfig::new(1, 1_000).is_ok()); // margin larger than the cycle is allowed
        assert!(!SlotConfigError::IntervalNotPositive { interval_ms: 0 }.to_string().is_empty());
    }

    #[test]
    fn half_slot_fallback_rounds_like_pynenc_on_whole_milliseconds() {
        // 2 runners, 6 ms cycle, 5 ms margin: 3 ms slots fall back to half a slot, 1.5 ms in pynenc, so
        // instants 0 and 1 (and 3 and 4) are inside, 2 (and 5) are not.
        let c = cfg(6, 5);
        assert_eq!(slot_offsets(&c, 0, 2).unwrap().run_window, Window { start_ms: 0, end_ms: 2 });
        assert_eq!(slot_offsets(&c, 1, 2).unwrap().run_window, Window { start_ms: 3, end_ms: 5 });
        let runners = [live("a", 0, 0), live("b", 1, 0)];
        let told: Vec<Vec<&str>> = (0..7).map(|t| runners_told_run(&c, &runners, t, i64::MAX)).collect();
        assert_eq!(told, [vec!["a"], vec!["a"], vec![], vec!["b"], vec!["b"], vec![], vec!["a"]]);
    }

    #[test]
    fn more_runners_than_milliseconds_leaves_some_slots_empty_but_exclusive() {
        // 1 ms cycle, 2 runners: slots [0, 0) and [0, 1). The first never runs; "Wait" stays in the future.
        let c = cfg(1, 0);
        let runners = [live("a", 0, 0), live("b", 1, 0)];
        assert_eq!(decide(&c, &runners, "a", 0, TIMEOUT), SlotDecision::Wait { next_slot_start_ms: 1 });
        assert_eq!(decide(&c, &runners, "b", 0, TIMEOUT), SlotDecision::Run { slot_end_ms: 1 });
        assert!(slot_window(&c, &runners, "a", 0, TIMEOUT).unwrap().run_window.is_empty());
    }

    #[test]
    fn execution_fit_thresholds_match_pynenc() {
        assert_eq!(execution_fit(80, 100), ExecutionFit::Fits);
        assert_eq!(execution_fit(81, 100), ExecutionFit::NearLimit);
        assert_eq!(execution_fit(100, 100), ExecutionFit::NearLimit);
        assert_eq!(execution_fit(101, 100), ExecutionFit::Overran);
        assert_eq!(execution_fit(0, 0), ExecutionFit::Fits);
    }

    // --- properties ---

    /// pynenc's `can_run_atomic_service` transliterated line by line (float arithmetic, Python `%`), with
    /// the time unit changed from seconds to milliseconds. `active` is already ordered, as pynenc's
    /// orchestrators return it.
    fn pynenc_can_run(runner_id: &str, active: &[&str], current_time: f64, interval: f64, margin: f64) -> bool {
        if active.is_empty() {
            return false;
        }
        let total_runners = active.len();
        if total_runners == 1 {
            return true;
        }
        let Some(runner_position) = active.iter().position(|r| *r == runner_id) else {
            return false;
        };
        let time_slot_size = interval / total_runners as f64;
        let runner_start_time = runner_position as f64 * time_slot_size;
        let mut runner_end_time = runner_start_time + time_slot_size - margin;
        if runner_end_time <= runner_start_time {
            runner_end_time = runner_start_time + (time_slot_size / 2.0);
        }
        let time_in_cycle = current_time.rem_euclid(interval);
        runner_start_time <= time_in_cycle && time_in_cycle < runner_end_time
    }

    /// One generated runner: seniority, heartbeat age (negative = from the future), eligibility.
    type Spec = (i64, i64, bool);

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i:02}")).collect()
    }

    fn views<'a>(ids: &'a [String], specs: &[Spec], now: i64) -> Vec<RunnerView<'a>> {
        ids.iter()
            .zip(specs)
            .map(|(id, &(since_ms, age, can_run_atomic_service))| RunnerView {
                id,
                since_ms,
                last_heartbeat_ms: now - age,
                can_run_atomic_service,
            })
            .collect()
    }

    /// 1..20 live eligible runners (seniorities drawn from a small range so ties happen).
    /// Heartbeat ages are drawn from a few values so that (seniority, heartbeat) ties happen too.
    fn live_specs() -> impl Strategy<Value = Vec<Spec>> {
        let age = prop_oneof![(0i64..=4).prop_map(|k| k * TIMEOUT / 4), 0i64..=TIMEOUT];
        prop::collection::vec((0i64..8, age, Just(true)), 1..=20)
    }

    /// Live runners mixed with dead and ineligible ones.
    fn mixed_specs() -> impl Strategy<Value = Vec<Spec>> {
        (live_specs(), prop::collection::vec((0i64..8, -TIMEOUT..=3 * TIMEOUT, any::<bool>()), 0..6)).prop_map(
            |(mut live, other)| {
                live.extend(other);
                live
            },
        )
    }

    fn config() -> impl Strategy<Value = SlotConfig> {
        (1i64..=20 * MIN).prop_flat_map(|i| (Just(i), 0i64..=i)).prop_map(|(i, m)| cfg(i, m))
    }

    fn instant() -> impl Strategy<Value = i64> {
        -4_000_000_000_000i64..=4_000_000_000_000
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn at_most_one_runner_is_told_to_run(c in config(), specs in mixed_specs(), now in instant()) {
            let ids = ids(specs.len());
            let runners = views(&ids, &specs, now);
            let told = runners_told_run(&c, &runners, now, TIMEOUT);
            prop_assert!(told.len() <= 1, "several runners told to run: {told:?}");
            if active_runners(&runners, now, TIMEOUT).len() == 1 {
                prop_assert_eq!(told.len(), 1);
            }
        }

        #[test]
        fn slots_tile_the_cycle_and_run_windows_are_disjoint(c in config(), specs in mixed_specs(), now in instant()) {
            let ids = ids(specs.len());
            let runners = views(&ids, &specs, now);
            let active = active_runners(&runners, now, TIMEOUT);
            let mut assigned: Vec<SlotAssignment> = active
                .iter()
                .map(|r| slot_window(&c, &runners, r.id, now, TIMEOUT).unwrap())
                .collect();
            assigned.sort_by_key(|a| a.position);
            let cycle = cycle_start_ms(&c, now);
            prop_assert!(cycle <= now && now - cycle < c.interval_ms());
            prop_assert_eq!(assigned.first().map(|a| a.slot.start_ms), Some(cycle));
            prop_assert_eq!(assigned.last().map(|a| a.slot.end_ms), Some(cycle + c.interval_ms()));
            for (position, a) in assigned.iter().enumerate() {
                prop_assert_eq!(a.position, position);
                prop_assert_eq!(a.runner_count, active.len());
                prop_assert_eq!(a.run_window.start_ms, a.slot.start_ms);
                prop_assert!(a.run_window.end_ms <= a.slot.end_ms);
                let rel = slot_offsets(&c, position, active.len()).unwrap();
                let shift = |w: Window| Window { start_ms: w.start_ms + cycle, end_ms: w.end_ms + cycle };
                prop_assert_eq!(a.slot, shift(rel.slot));
                prop_assert_eq!(a.run_window, shift(rel.run_window));
            }
            for pair in assigned.windows(2) {
                prop_assert_eq!(pair[0].slot.end_ms, pair[1].slot.start_ms);
                prop_assert!(pair[0].run_window.end_ms <= pair[1].run_window.start_ms);
                if pair[0].slot.duration_ms() > c.spread_margin_ms() {
                    // the full spread margin separates consecutive windows
                    prop_assert_eq!(pair[1].run_window.start_ms - pair[0].run_window.end_ms, c.spread_margin_ms());
                }
            }
        }

        #[test]
        fn every_runner_gets_a_non_empty_window_every_cycle(
            n in 1usize..=20,
            slot in 1i64..=MIN,
            extra in 0i64..20,
            margin_part in 0.0f64..1.0,
            cycle_index in -1_000_000i64..1_000_000,
        ) {
            // interval / n > margin (with interval = n * slot + extra, extra < n).
            let extra = extra % n as i64;
            let interval = n as i64 * slot + extra;
            let margin = ((slot - 1) as f64 * margin_part) as i64;
            let c = cfg(interval, margin);
            let ids = ids(n);
            let cycle = cycle_index * interval;
            let runners: Vec<RunnerView<'_>> = ids.iter().map(|id| live(id, 0, cycle)).collect();
            let timeout = i64::MAX;
            for r in &runners {
                let a = slot_window(&c, &runners, r.id, cycle, timeout).unwrap();
                prop_assert!(!a.run_window.is_empty());
                if n > 1 {
                    prop_assert_eq!(a.run_window.duration_ms(), a.slot.duration_ms() - margin);
                }
                let first = a.run_window.start_ms;
                let last = a.run_window.end_ms - 1;
                prop_assert!(cycle <= first && last < cycle + interval);
                let end = a.run_window.end_ms;
                prop_assert_eq!(decide(&c, &runners, r.id, first, timeout), SlotDecision::Run { slot_end_ms: end });
                prop_assert_eq!(decide(&c, &runners, r.id, last, timeout), SlotDecision::Run { slot_end_ms: end });
                // the same slot comes back next cycle
                let next = slot_window(&c, &runners, r.id, cycle + interval, timeout).unwrap();
                prop_assert_eq!(next.run_window.start_ms, first + interval);
            }
        }

        #[test]
        fn wait_points_at_the_next_window(
            c in config(),
            specs in live_specs(),
            now in instant(),
            pick in any::<prop::sample::Index>(),
        ) {
            let ids = ids(specs.len());
            let runners = views(&ids, &specs, now);
            let timeout = i64::MAX; // keep everyone alive up to the next window
            let me = runners[pick.index(runners.len())].id;
            match decide(&c, &runners, me, now, timeout) {
                SlotDecision::Run { slot_end_ms } => prop_assert!(now < slot_end_ms),
                SlotDecision::Wait { next_slot_start_ms } => {
                    prop_assert!(now < next_slot_start_ms);
                    prop_assert!(next_slot_start_ms - now <= c.interval_ms());
                    let window = slot_window(&c, &runners, me, next_slot_start_ms, timeout).unwrap().run_window;
                    if !window.is_empty() {
                        prop_assert!(decide(&c, &runners, me, next_slot_start_ms, timeout).is_run());
                        // nothing in between
                        for t in [now + 1, (now + next_slot_start_ms) / 2, next_slot_start_ms - 1] {
                            if t > now && t < next_slot_start_ms {
                                prop_assert!(!decide(&c, &runners, me, t, timeout).is_run());
                            }
                        }
                    }
                }
                SlotDecision::NotActive => prop_assert!(false, "live runner reported not active"),
            }
        }

        #[test]
        fn decisions_are_deterministic_and_ignore_input_order(
            c in config(),
            (specs, order) in mixed_specs().prop_flat_map(|s| {
                let order = Just((0..s.len()).collect::<Vec<usize>>()).prop_shuffle();
                (Just(s), order)
            }),
            now in instant(),
        ) {
            let ids = ids(specs.len());
            let runners = views(&ids, &specs, now);
            let shuffled: Vec<RunnerView<'_>> = order.iter().map(|&i| runners[i]).collect();
            for r in &runners {
                let first = decide(&c, &runners, r.id, now, TIMEOUT);
                prop_assert_eq!(first, decide(&c, &runners, r.id, now, TIMEOUT));
                prop_assert_eq!(first, decide(&c, &shuffled, r.id, now, TIMEOUT));
                prop_assert_eq!(
                    slot_window(&c, &runners, r.id, now, TIMEOUT),
                    slot_window(&c, &shuffled, r.id, now, TIMEOUT)
                );
            }
        }

        #[test]
        fn matches_pynenc_when_the_interval_divides_evenly(
            n in 1usize..=20,
            slot in 1i64..=2 * MIN,
            margin_factor in 0i64..=3,
            margin_part in 0i64..=2 * MIN,
            specs in mixed_specs(),
            now in -1_000_000_000_000i64..=1_000_000_000_000,
        ) {
            // With interval = n * slot, pynenc's float slot boundaries are whole milliseconds, so the two
            // must agree exactly (including the half-slot fallback). `n` here only shapes the interval; the
            // actual runner count comes from `specs`.
            let active_count = {
                let ids = ids(specs.len());
                active_runners(&views(&ids, &specs, now), now, TIMEOUT).len()
            };
            let count = if active_count == 0 { n } else { active_count };
            let interval = count as i64 * slot;
            let margin = (margin_factor * slot + margin_part) % (2 * slot + 1);
            let c = cfg(interval, margin);
            let ids = ids(specs.len());
            let runners = views(&ids, &specs, now);
            let ordered: Vec<&str> = active_runners(&runners, now, TIMEOUT).iter().map(|r| r.id).collect();
            for r in &runners {
                let ours = decide(&c, &runners, r.id, now, TIMEOUT);
                if ordered.contains(&r.id) {
                    let theirs = pynenc_can_run(r.id, &ordered, now as f64, interval as f64, margin as f64);
                    prop_assert_eq!(ours.is_run(), theirs, "runner {} at {}", r.id, now);
                } else {
                    // pynenc's fast path would answer true for an inactive caller when exactly one other runner
                    // is active; its caller never asks in that state (it heartbeats first). We refuse.
                    prop_assert_eq!(ours, SlotDecision::NotActive);
                }
            }
        }
    }

    proptest! {
        // Each case sweeps up to ~600 instants; fewer cases keep the suite fast.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn small_cycles_swept_millisecond_by_millisecond(
            slot in 1i64..=30,
            extra in 0i64..20,
            margin in 0i64..=90,
            specs in live_specs(),
            cycle_index in -1_000_000_000i64..=1_000_000_000,
        ) {
            // Every instant of one cycle: at most one runner runs, and when the interval divides evenly the
            // answer equals pynenc's, off-by-one errors at the window edges included.
            let ids = ids(specs.len());
            let timeout = i64::MAX;
            let probe = views(&ids, &specs, 0);
            let ordered: Vec<&str> = active_runners(&probe, 0, timeout).iter().map(|r| r.id).collect();
            let n = ordered.len() as i64;
            let even = extra % 2 == 0;
            let interval = n * slot + if even { 0 } else { extra % n };
            let c = cfg(interval, margin);
            let base = cycle_index * interval;
            for t in base..base + interval {
                let runners = views(&ids, &specs, t);
                let told = runners_told_run(&c, &runners, t, timeout);
                prop_assert!(told.len() <= 1, "at {}: {:?}", t, told);
                if even {
                    let theirs: Vec<&str> = ordered
                        .iter()
                        .copied()
                        .filter(|id| pynenc_can_run(id, &ordered, t as f64, interval as f64, margin as f64))
                        .collect();
                    prop_assert_eq!(told, theirs, "at {}", t);
                }
            }
        }
    }
}
