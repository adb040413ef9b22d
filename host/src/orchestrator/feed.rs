//! The change feed: one tailer per node reads the invocation history in sequence order and
//! broadcasts every status change to this node's subscribers (`GET /v1/events/stream`, the
//! batch await `POST /v1/invocations/results`). It reads only while someone subscribes.
//!
//! - **Wake-ups.** This node's own writes poke it (routing, transitions, claims); other nodes'
//!   writes arrive by PostgreSQL `NOTIFY` on `warden_changes` (sent at most every
//!   [`NOTIFY_EVERY`] by the node that wrote, after a poke); a read every [`SAFETY_POLL`]
//!   catches whatever neither told it (the leader's recovery of another node's work, a
//!   notification lost with a connection).
//! - **Work for the others.** The same notification says when the writer routed (or rerouted)
//!   invocations, which any node may own ([`Notice`]): the listeners wake their dispatchers, so
//!   a call routed through one node starts on another without waiting for a poll.
//! - **Order without holes.** The history's `seq` is handed out before a transaction commits,
//!   so on PostgreSQL seq 8 can be visible while 7 is not yet. The tailer delivers in `seq` order
//!   and stops at a hole until it fills or until the row after it is [`GAP_WAIT_MS`] old on the
//!   database clock (the hole was a rolled-back transaction: a deadlock's retry, a failed
//!   insert). A change whose transaction stays open longer than that after writing its history
//!   is skipped by the stream (it is in `/history`); the batch await does not depend on it (it
//!   reads the statuses themselves after every wake-up and every second).
//! - **Callers waiting on one invocation.** While a long-poll or a guest's `calls.wait` waits
//!   on a cluster ([`Feed::watch`]), the tailer reads too and wakes the waiters of every
//!   invocation it sees become final ([`Waiters::wake`]): a call that another node finishes is
//!   answered at once, not at the waiter's next look.
//! - **Bounded memory.** Subscribers share one ring of `--stream-buffer-events` events
//!   (`tokio::sync::broadcast`); one that falls further behind learns it (`Lagged`) and is
//!   dropped by its owner, instead of being buffered for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::waiters::Waiters;
use super::{OrchResult, Orchestrator, OrchestratorError};
use crate::model::Invocation;
use crate::model::feed::ChangeEvent;
use crate::store::Store;

/// How long the tailer waits for a hole in the sequence to fill (PostgreSQL), in database ms.
pub const GAP_WAIT_MS: i64 = 1_000;
/// History rows read at once.
const PAGE: u32 = 1_000;
/// How often the tailer reads without being told to, while someone subscribes.
pub const SAFETY_POLL: Duration = Duration::from_millis(250);
/// How often this node tells the others that it wrote history, at most (PostgreSQL).
pub const NOTIFY_EVERY: Duration = Duration::from_millis(10);
/// How often a batch await reads the statuses it waits for without a wake-up.
const AWAIT_RECHECK: Duration = Duration::from_secs(1);

/// What a node's `NOTIFY` says: who wrote, and whether it routed work that any node may own.
/// The payload is `wrote:NODE` or `work:NODE`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Notice<'a> {
    /// The node that wrote.
    pub from: &'a str,
    /// It routed or rerouted invocations: dispatchers should claim.
    pub work: bool,
}

impl<'a> Notice<'a> {
    /// The payload of a notice.
    pub(crate) fn encode(from: &str, work: bool) -> String {
        format!("{}:{from}", if work { "work" } else { "wrote" })
    }

    /// Reads a payload; anything else (an older node's empty payload) is a write with work, so
    /// that nothing is missed.
    pub(crate) fn parse(payload: &'a str) -> Self {
        match payload.split_once(':') {
            Some(("wrote", from)) => Notice { from, work: false },
            Some(("work", from)) => Notice { from, work: true },
            _ => Notice { from: "", work: true },
        }
    }
}

/// The feed's state and wake-ups.
pub(crate) struct Feed {
    store: Arc<dyn Store>,
    /// This node's name, the sender of its notices.
    node: String,
    tx: broadcast::Sender<Arc<ChangeEvent>>,
    /// The last sequence delivered; `None` while nobody subscribes (the tailer does not read).
    position: tokio::sync::Mutex<Option<i64>>,
    /// This node wrote, or another node told it: read now.
    poke: Notify,
    /// This node wrote: tell the other nodes.
    wrote: Notify,
    /// This node routed work since it last told the others.
    routed: AtomicBool,
    /// Other nodes write too (PostgreSQL: the listener is up).
    shared: AtomicBool,
    /// Callers waiting on invocations through [`Feed::watch`].
    watchers: AtomicUsize,
    /// Their wake-ups.
    waiters: Arc<Waiters>,
    /// Sequence numbers given up on as holes.
    holes_skipped: AtomicU64,
    /// Events delivered.
    delivered: AtomicU64,
}

/// A subscription: the live events after `head`, and `head` itself, the last sequence the
/// tailer had delivered when it began (a reconnecting client replays up to it from the store).
pub struct Subscription {
    /// Live events, in sequence order.
    pub rx: broadcast::Receiver<Arc<ChangeEvent>>,
    /// Events with a sequence up to this one are not in `rx`.
    pub head: i64,
}

/// What a batch await found.
#[derive(Debug, Default)]
pub struct AwaitOutcome {
    /// Ids that name no invocation (nothing else is filled then).
    pub unknown: Vec<String>,
    /// Final invocations, in the order asked.
    pub done: Vec<Invocation>,
    /// Ids not final in time, in the order asked.
    pub pending: Vec<String>,
}

impl Feed {
    /// A feed that keeps `capacity` events for subscribers that read slower than it writes.
    pub(crate) fn new(store: Arc<dyn Store>, node: &str, capacity: usize, waiters: Arc<Waiters>) -> Self {
        Self {
            store,
            node: node.to_string(),
            tx: broadcast::channel(capacity.max(1)).0,
            position: tokio::sync::Mutex::new(None),
            poke: Notify::new(),
            wrote: Notify::new(),
            routed: AtomicBool::new(false),
            shared: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            waiters,
            holes_skipped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// This node committed history: read it, and tell the other nodes.
    pub(crate) fn wrote(&self) {
        self.poke.notify_one();
        self.wrote.notify_one();
    }

    /// This node committed invocations that any node may own (routed, rerouted): as
    /// [`Feed::wrote`], and the others' dispatchers are woken too.
    pub(crate) fn routed(&self) {
        self.routed.store(true, Ordering::Release);
        self.wrote();
    }

    /// Other nodes' notices reach this node (PostgreSQL, the listener is up): work they route
    /// for it wakes its dispatcher without a poll.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// (events delivered, sequence numbers skipped as holes) since start.
    pub(crate) fn counters(&self) -> (u64, u64) {
        (self.delivered.load(Ordering::Relaxed), self.holes_skipped.load(Ordering::Relaxed))
    }

    async fn subscribe(&self) -> OrchResult<Subscription> {
        let mut position = self.position.lock().await;
        let head = self.read_from(&mut position).await?;
        let rx = self.tx.subscribe();
        drop(position);
        self.poke.notify_one();
        Ok(Subscription { rx, head })
    }

    /// The tailer's position, starting it at the history's head if it is not reading.
    async fn read_from(&self, position: &mut Option<i64>) -> OrchResult<i64> {
        if let Some(p) = *position {
            return Ok(p);
        }
        let head = self.store.history_head().await?;
        *position = Some(head);
        Ok(head)
    }

    /// A caller is about to wait on invocations registered in [`Waiters`]: while the guard
    /// lives, the tailer reads and wakes them when it sees them end. `None` when only this node
    /// writes (SQLite: its own writes wake them) or the history cannot be read now (the caller
    /// looks again by itself anyway).
    pub(crate) async fn watch(self: &Arc<Self>) -> Option<Watch> {
        if !self.is_shared() {
            return None;
        }
        let mut position = self.position.lock().await;
        if let Err(e) = self.read_from(&mut position).await {
            tracing::debug!(error = %e, "cannot follow the history for a waiting caller");
            return None;
        }
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Some(Watch(self.clone()))
    }

    /// The tailer: until `stop`, reads the history after its position whenever poked (or every
    /// [`SAFETY_POLL`]) while anyone subscribes, and broadcasts it.
    async fn tail(&self, stop: CancellationToken) {
        let gaps_possible = self.store.history_gaps_possible();
        let mut wait = SAFETY_POLL;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.poke.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            wait = SAFETY_POLL;
            let mut position = self.position.lock().await;
            let wake = self.watchers.load(Ordering::Acquire) > 0;
            if self.tx.receiver_count() == 0 && !wake {
                *position = None;
                continue;
            }
            let Some(mut at) = *position else { continue };
            loop {
                let (rows, now) = match self.store.changes_after(at, PAGE).await {
                    Ok(r) => r,
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(100) {
                            tracing::warn!(error = %e, failures, "the change feed could not read the history; trying again");
                        }
                        wait = super::write_backoff(failures.min(10));
                        break;
                    }
                };
                failures = 0;
                let full = rows.len() == PAGE as usize;
                let mut stalled = false;
                for e in rows {
                    if e.seq != at + 1 {
                        if gaps_possible && e.at > now - GAP_WAIT_MS {
                            stalled = true;
                            break;
                        }
                        let skipped = u64::try_from(e.seq - at - 1).unwrap_or(0);
                        self.holes_skipped.fetch_add(skipped, Ordering::Relaxed);
                    }
                    at = e.seq;
                    if wake && e.status.is_final() {
                        self.waiters.wake(&e.invocation);
                    }
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    let _ = self.tx.send(Arc::new(e));
                }
                *position = Some(at);
                if stalled {
                    wait = Duration::from_millis(20);
                    break;
                }
                if !full {
                    break;
                }
            }
        }
    }

    /// Until `stop`: after this node wrote, `NOTIFY` the others, at most every [`NOTIFY_EVERY`].
    async fn tell_others(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wrote.notified() => {}
            }
            let work = self.routed.swap(false, Ordering::AcqRel);
            if let Err(e) = self.store.changes_notify(&Notice::encode(&self.node, work)).await {
                tracing::debug!(error = %e, "could not notify the other nodes of new history");
            }
            tokio::time::sleep(NOTIFY_EVERY).await;
        }
    }

    /// Until `stop`: wakes the tailer when another node says it wrote (PostgreSQL `LISTEN`),
    /// and `work` (the dispatcher) when it routed; both when notices may have been lost.
    async fn listen_to_others(&self, stop: CancellationToken, work: &Notify) {
        loop {
            let mut listener = match self.store.changes_listen().await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not listen for other nodes' changes; trying again in 1 s");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            self.shared.store(true, Ordering::Release);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.wait() => match r {
                        Ok(Some(payload)) => {
                            let notice = Notice::parse(&payload);
                            if notice.from == self.node {
                                continue;
                            }
                            self.poke.notify_one();
                            if notice.work {
                                work.notify_one();
                            }
                        }
                        Ok(None) => {
                            tracing::debug!("the listener for other nodes' changes reconnected; reading and claiming");
                            self.poke.notify_one();
                            work.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the listener for other nodes' changes; reconnecting");
                            self.poke.notify_one();
                            work.notify_one();
                            break;
                        }
                    },
                }
            }
        }
    }
}

/// A caller's hold on the tailer ([`Feed::watch`]); dropping it lets the tailer rest.
pub(crate) struct Watch(Arc<Feed>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The change feed's loops (the tailer, and on PostgreSQL the notifier and the listener), until
/// the orchestrator shuts down. Started by the composition root.
pub(crate) async fn feed_loop(orch: Orchestrator) {
    let feed = orch.inner.feed.clone();
    let stop = orch.shutdown_token();
    let work = &orch.inner.claims.work;
    tokio::join!(feed.tail(stop.clone()), feed.tell_others(stop.clone()), feed.listen_to_others(stop, work));
}

impl Orchestrator {
    /// (events delivered, sequence numbers skipped as holes) by this node's change feed.
    pub fn feed_counters(&self) -> (u64, u64) {
        self.inner.feed.counters()
    }

    /// Subscribes to every status change from now on (see [`Subscription`]).
    pub async fn subscribe_changes(&self) -> OrchResult<Subscription> {
        self.inner.feed.subscribe().await
    }

    /// Stored status changes with `after < seq ≤ upto`, at most `limit`, in order (a
    /// reconnecting client's replay; holes are not waited for: these are older than the head).
    pub async fn changes_between(&self, after: i64, upto: i64, limit: u32) -> OrchResult<Vec<ChangeEvent>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let (mut rows, _) = self.inner.store.changes_after(after, limit).await?;
        rows.retain(|e| e.seq <= upto);
        Ok(rows)
    }

    /// Waits until every invocation of `ids` is final, `timeout` passes or `stop` fires, woken
    /// by the change feed (this node's changes and, on PostgreSQL, other nodes'), and reads
    /// the statuses again every second in any case. Unknown ids are reported at once.
    pub async fn await_results(
        &self,
        ids: &[String],
        timeout: Duration,
        stop: &CancellationToken,
    ) -> OrchResult<AwaitOutcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sub = self.subscribe_changes().await?;
        let mut unique: Vec<String> = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity(ids.len());
        for id in ids {
            if seen.insert(id.as_str()) {
                unique.push(id.clone());
            }
        }
        let mut done: HashMap<String, Invocation> = HashMap::new();
        let mut waiting: HashSet<String> = HashSet::new();
        let found = self.inner.store.invocation_get_many(&unique).await?;
        let known: HashSet<&str> = found.iter().map(|i| i.id.as_str()).collect();
        let unknown: Vec<String> = unique.iter().filter(|id| !known.contains(id.as_str())).cloned().collect();
        if !unknown.is_empty() {
            return Ok(AwaitOutcome { unknown, ..Default::default() });
        }
        for inv in found {
            if inv.status.is_final() {
                done.insert(inv.id.clone(), inv);
            } else {
                waiting.insert(inv.id);
            }
        }
        let mut recheck = tokio::time::Instant::now() + AWAIT_RECHECK;
        while !waiting.is_empty() {
            let mut look: Vec<String> = Vec::new();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep_until(recheck) => {
                    look = waiting.iter().cloned().collect();
                    recheck = tokio::time::Instant::now() + AWAIT_RECHECK;
                }
                r = sub.rx.recv() => {
                    // This event and whatever else is queued; after a lag, look at them all.
                    let mut lagged = false;
                    let mut note = |e: &ChangeEvent| {
                        if e.status.is_final() && waiting.contains(&e.invocation) {
                            look.push(e.invocation.clone());
                        }
                    };
                    match r {
                        Ok(e) => note(&e),
                        Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(OrchestratorError::Unavailable("the daemon is stopping".into()));
                        }
                    }
                    loop {
                        match sub.rx.try_recv() {
                            Ok(e) => note(&e),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                            Err(_) => break,
                        }
                    }
                    if lagged {
                        look = waiting.iter().cloned().collect();
                    }
                }
            }
            if look.is_empty() {
                continue;
            }
            for inv in self.inner.store.invocation_get_many(&look).await? {
                if inv.status.is_final() && waiting.remove(&inv.id) {
                    done.insert(inv.id.clone(), inv);
                }
            }
        }
        let mut out = AwaitOutcome::default();
        for id in unique {
            match done.remove(&id) {
                Some(inv) => out.done.push(inv),
                None => out.pending.push(id),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Notice;

    #[test]
    fn a_notice_says_who_wrote_and_whether_it_routed_work() {
        for (from, work) in [("front", true), ("node-2", false), ("a:b", true)] {
            let payload = Notice::encode(from, work);
            assert_eq!(Notice::parse(&payload), Notice { from, work }, "{payload}");
        }
        // An older node's empty payload, or anything unknown, counts as work from nobody, so
        // that no listener skips it as its own and no dispatcher misses a call.
        assert_eq!(Notice::parse(""), Notice { from: "", work: true });
        assert_eq!(Notice::parse("later:x"), Notice { from: "", work: true });
    }
}
