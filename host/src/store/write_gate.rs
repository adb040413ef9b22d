//! The SQLite writer's gate: one write transaction at a time, taken in two lanes. A routing
//! (a client waits for its answer) goes ahead of the background writes queued before it
//! (claims, outcome group commits, workflow steps, maintenance), which otherwise queued in the
//! writer pool's FIFO and kept an unrelated `POST /v1/invocations` waiting behind a whole
//! queue of them. Under contention the lanes alternate, so neither starves: a routing waits at
//! most for the transaction in progress and one background transaction.
//!
//! [`SqliteWriter`] is the gate with the one writer connection behind it, kept outside any pool:
//! sqlx's pool gives a connection back through a task it spawns, which first pings the
//! connection's thread (a round trip), so the next write waited for a busy tokio worker and
//! a ping before it could start, inside its hold of the writer (a step's p99 wait for the
//! connection was 2.9 ms on a busy node).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
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

/// The SQLite writer: the gate and the one connection it guards; see the module documentation.
pub(in crate::store) struct SqliteWriter {
    gate: WriteGate,
    slot: tokio::sync::Mutex<Slot>,
    options: SqliteConnectOptions,
}

/// The writer connection and whether the last write left it in an unknown state (a failure it
/// could not undo, or a cancelled future): then the next write replaces it by a fresh one
/// (closing the old one rolls back whatever it had begun).
struct Slot {
    conn: SqliteConnection,
    broken: bool,
}

/// The writer, held: the pass and the connection, until dropped. Unless [`Held::settle`]d,
/// the connection is not used again.
pub(in crate::store) struct Held<'w> {
    // Declared before the pass: the connection is put back before the next writer is let in.
    slot: tokio::sync::MutexGuard<'w, Slot>,
    settled: bool,
    _pass: Pass<'w>,
}

impl SqliteWriter {
    /// The writer over `conn`, which was opened with `options` (used to connect again).
    pub(in crate::store) fn new(conn: SqliteConnection, options: SqliteConnectOptions) -> Self {
        Self { gate: WriteGate::default(), slot: tokio::sync::Mutex::new(Slot { conn, broken: false }), options }
    }

    /// Whether a routing waits for the writer: a long background write may give the writer
    /// up to it (see `WorkflowStore::workflow_step`).
    pub(in crate::store) fn urgent_waiting(&self) -> bool {
        !self.gate.state().urgent.is_empty()
    }

    /// Waits for the pass in `lane` for the write `what`, then takes the connection
    /// (a fresh one if the last write left it unsettled).
    pub(in crate::store) async fn enter(&self, lane: Lane, what: &'static str) -> Result<Held<'_>, sqlx::Error> {
        let pass = self.gate.enter(lane, what).await;
        // Never contended: only the holder of the pass locks it.
        let mut slot = self.slot.lock().await;
        if slot.broken {
            slot.conn = self.options.connect().await?;
            slot.broken = false;
        }
        Ok(Held { slot, settled: false, _pass: pass })
    }
}

#[cfg(test)]
impl SqliteWriter {
    /// Queues a stand-in for a routing in the urgent lane: the receiver resolves when the gate
    /// hands it the pass, which its holder gives back with [`SqliteWriter::release_for_test`].
    pub(in crate::store) fn urgent_stand_in(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.gate.state().urgent.push_back(tx);
        rx
    }

    /// Whether a background write waits at the gate.
    pub(in crate::store) fn background_waiting(&self) -> bool {
        !self.gate.state().background.is_empty()
    }

    /// Gives back a pass a stand-in got.
    pub(in crate::store) fn release_for_test(&self) {
        self.gate.release();
    }
}

impl Held<'_> {
    /// The connection.
    pub(in crate::store) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.slot.conn
    }

    /// The connection is in a known state (no transaction open, `synchronous = FULL`): the next
    /// write may use it.
    pub(in crate::store) fn settle(&mut self) {
        self.settled = true;
    }

    /// Ends a write: after a failure, rolls back (which fails when the error ended the
    /// transaction already, or came before `BEGIN`) and sets `synchronous` back to `FULL`; the
    /// connection is settled unless that could not be done (then the next write connects again).
    pub(in crate::store) async fn finish(mut self, failed: bool) {
        if failed {
            let _ = sqlx::query("ROLLBACK").execute(self.conn()).await;
            if let Err(e) = sqlx::query(super::sql::ONE_TRIP_RESET).execute(self.conn()).await {
                tracing::warn!(error = %e, "closing the SQLite writer: it could not be reset after a failed write");
                return;
            }
        }
        self.settle();
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.settled {
            tracing::debug!(target: "warden::store::writer", "the SQLite writer was left unsettled: the next write connects again");
            self.slot.broken = true;
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

    /// A write that leaves the writer unsettled (a transaction open, `synchronous` relaxed:
    /// what a cancelled future leaves) closes the connection; the next write gets a fresh one
    /// in the state the options give, and what was begun was rolled back.
    #[tokio::test]
    async fn an_unsettled_writer_is_replaced_by_a_fresh_connection() {
        use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let writer = SqliteWriter::new(options.connect().await.expect("connect"), options);
        async fn sync(held: &mut Held<'_>) -> i64 {
            sqlx::query_scalar("PRAGMA synchronous").fetch_one(held.conn()).await.expect("pragma")
        }
        let mut held = writer.enter(Lane::Background, "test").await.expect("enter");
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(held.conn()).await.expect("create");
        held.settle();
        drop(held);

        let mut held = writer.enter(Lane::Background, "test").await.expect("enter");
        sqlx::query("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .execute(held.conn())
            .await
            .expect("begin");
        assert_eq!(sync(&mut held).await, 1, "relaxed inside the write");
        drop(held); // not settled

        let mut held = writer.enter(Lane::Urgent, "test").await.expect("enter again");
        assert_eq!(sync(&mut held).await, 2, "a fresh connection is FULL");
        sqlx::query("BEGIN IMMEDIATE; ROLLBACK").execute(held.conn()).await.expect("no transaction is left open");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(held.conn()).await.expect("count");
        assert_eq!(n, 0, "the unsettled write was rolled back");
        held.settle();
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
