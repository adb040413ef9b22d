//! The SQLite writer's gate: one write transaction at a time, taken in two lanes. A routing
//! (a client waits for its answer) goes ahead of the background writes queued before it
//! (claims, outcome group commits, workflow steps, maintenance), which otherwise queued in the
//! writer pool's FIFO and kept an unrelated `POST /v1/invocations` waiting behind a whole
//! queue of them. Under contention the lanes alternate, so neither starves: a routing waits at
//! most for the transaction in progress and one background transaction.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Which lane a write waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// A client is waiting for this write (routing).
    Urgent,
    /// Everything else.
    Background,
}

/// The gate; see the module documentation.
#[derive(Default)]
pub(super) struct WriteGate {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Whether a pass is out.
    busy: bool,
    /// Whether the pass out (or the last one) went to the urgent lane.
    last_urgent: bool,
    urgent: VecDeque<oneshot::Sender<()>>,
    background: VecDeque<oneshot::Sender<()>>,
}

/// A write that holds the pass longer than this is logged (debug, target
/// `warden::store::writer`): every other write, routings included, waits behind it.
const LONG_HOLD: Duration = Duration::from_millis(5);

/// The right to write, until dropped.
pub(super) struct Pass<'g> {
    gate: &'g WriteGate,
    /// Which write holds it (`module:line`).
    what: &'static str,
    since: Instant,
    waited: Duration,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.release();
        let held = self.since.elapsed();
        if held > LONG_HOLD {
            tracing::debug!(
                target: "warden::store::writer",
                what = self.what,
                held_us = held.as_micros() as u64,
                waited_us = self.waited.as_micros() as u64,
                "a write held the SQLite writer long"
            );
        }
    }
}

/// A waiter; if it is dropped (its future cancelled) after the pass was handed to it, it
/// passes the pass on.
struct Waiting<'g> {
    gate: &'g WriteGate,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl WriteGate {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the pass in `lane`, for the write `what` (`module:line`, for the log).
    pub(super) async fn enter(&self, lane: Lane, what: &'static str) -> Pass<'_> {
        let urgent = lane == Lane::Urgent;
        let start = Instant::now();
        let rx = {
            let mut s = self.state();
            if !s.busy {
                s.busy = true;
                s.last_urgent = urgent;
                return Pass { gate: self, what, since: start, waited: Duration::ZERO };
            }
            let (tx, rx) = oneshot::channel();
            if urgent {
                s.urgent.push_back(tx)
            } else {
                s.background.push_back(tx)
            }
            rx
        };
        let mut waiting = Waiting { gate: self, rx: Some(rx) };
        if let Some(rx) = waiting.rx.as_mut() {
            // The sender is only ever used to send: Err cannot happen while the gate lives.
            let _ = rx.await;
        }
        waiting.rx = None;
        Pass { gate: self, what, since: Instant::now(), waited: start.elapsed() }
    }

    /// Hands the pass to the next waiter (urgent first, unless the last pass was urgent and a
    /// background write waits), or frees the gate.
    fn release(&self) {
        let mut s = self.state();
        loop {
            let urgent_first = !s.last_urgent || s.background.is_empty();
            let next = if urgent_first {
                s.urgent.pop_front().map(|t| (t, true)).or_else(|| s.background.pop_front().map(|t| (t, false)))
            } else {
                s.background.pop_front().map(|t| (t, false)).or_else(|| s.urgent.pop_front().map(|t| (t, true)))
            };
            let Some((tx, urgent)) = next else {
                s.busy = false;
                return;
            };
            // A waiter that left (its receiver closed) is skipped.
            if tx.send(()).is_ok() {
                s.last_urgent = urgent;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Queues writers while the gate is held; returns the order in which they got the pass.
    async fn order(lanes: &[(&'static str, Lane)]) -> Vec<&'static str> {
        let gate = Arc::new(WriteGate::default());
        let got = Arc::new(Mutex::new(Vec::new()));
        let first = gate.enter(Lane::Background, "test").await;
        let mut tasks = Vec::new();
        for &(name, lane) in lanes {
            let (g, got) = (gate.clone(), got.clone());
            tasks.push(tokio::spawn(async move {
                let _pass = g.enter(lane, "test").await;
                got.lock().unwrap().push(name);
            }));
            // Each queues before the next one.
            // One guard at a time: the state's mutex is not re-entrant.
            let queued = || {
                let s = gate.state();
                s.urgent.len() + s.background.len()
            };
            while queued() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(got).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn a_routing_goes_ahead_of_queued_background_writes() {
        let got = order(&[("b1", Lane::Background), ("b2", Lane::Background), ("r", Lane::Urgent)]).await;
        assert_eq!(got, ["r", "b1", "b2"]);
    }

    #[tokio::test]
    async fn the_lanes_alternate_under_contention() {
        use Lane::{Background as B, Urgent as U};
        let got = order(&[("b1", B), ("b2", B), ("r1", U), ("r2", U), ("r3", U)]).await;
        assert_eq!(got, ["r1", "b1", "r2", "b2", "r3"]);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_does_not_keep_the_pass() {
        let gate = WriteGate::default();
        let held = gate.enter(Lane::Background, "test").await;
        // Dropped while waiting.
        let left = tokio::time::timeout(std::time::Duration::from_millis(10), gate.enter(Lane::Urgent, "test")).await;
        assert!(left.is_err());
        drop(held);
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), gate.enter(Lane::Background, "test")).await;
        assert!(again.is_ok(), "the gate stayed shut after a waiter left");
    }
}
