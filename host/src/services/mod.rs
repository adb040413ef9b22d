//! Membership and the atomic services. Every node heartbeats each `heartbeat_interval` and
//! takes part in the cluster (the oldest live node holds the leader lease and keeps the token
//! ring assigned; every node recomputes what it may claim). The atomic services (pynenc's
//! cluster-wide singleton maintenance: retiring dead nodes, `max_pending` recovery, triage,
//! running-concurrency drops, trigger evaluation, the auto-purge) run on the leader only
//! (JobSync), at every tick: the leader's lease is the one runner of the atomic services, so
//! pynenc's slot algorithm (which spreads runs over several runners) has nothing to decide and
//! is not part of Warden; the storage gate records each execution (running /
//! completed / abandoned / blocked, `GET /v1/services/runs`), and every maintenance write is
//! fenced by the lease's epoch, so a former leader that wakes up writes nothing.

//!
//! Each atomic service is a narrow unit with only what it uses and a `run_once` that a test
//! can call (River's `internal/maintenance/` is the model): [`retire::RetireDead`],
//! [`pending::PendingRecovery`], [`triage::Triage`], [`drops::ConcurrencyDrops`], the trigger
//! evaluation (`trigger_eval.rs`, which routes calls, so it takes the orchestrator) and
//! [`purge::Purge`]. [`execute`] runs them in that order under the leader's fence.

mod drops;
mod pending;
mod purge;
mod retire;
mod triage;
mod trigger_eval;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::claims::{Owned, claims_of};
use crate::cluster::leader::{self, Leadership, RingSettings};
use crate::model::{Millis, NodeInfo, ServiceRunStatus, TaskDef};
use crate::orchestrator::Orchestrator;
use crate::store::{Fence, ServiceGate, Store, StoreError};

/// Execution records older than this are pruned.
const RECORD_RETENTION_MS: i64 = 3_600_000;
/// Most rows one step of an execution moves (the next execution takes the rest).
const STEP_LIMIT: u32 = 1_000;

/// Settings of the atomic services and of this node's membership.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// Labels of this node.
    pub labels: Vec<String>,
    /// Heartbeat (and slot check) interval.
    pub heartbeat_interval: Duration,
    /// A node silent this long is dead.
    pub heartbeat_timeout: Duration,
    /// Invocations pending longer than this are rerouted.
    pub max_pending: Duration,
    /// A running execution record older than this is abandoned (`--service-interval-ms`).
    pub service_interval: Duration,
    /// Final invocations older than this are purged; `None` keeps them.
    pub retention: Option<Duration>,
    /// How often the purge runs (at most).
    pub purge_interval: Duration,
    /// Tokens in the ring (JobSync's `total_tokens`).
    pub total_tokens: u32,
    /// The ring is not assigned (nobody claims) until this many nodes are live.
    pub minimum_nodes: usize,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How long (ms, database clock) until the first of the other live nodes counts as dead if it
/// does not heartbeat again: its `heartbeat_at + timeout`, plus 1 ms (dead means strictly older
/// than the timeout) and a few ms of margin. The loop takes an extra look then instead of up to
/// one interval later, so a death is acted on at `heartbeat_timeout`, not `timeout + interval`.
fn next_expiry_ms(nodes: &[NodeInfo], now: Millis, timeout_ms: i64, me: &str) -> Option<i64> {
    const MARGIN_MS: i64 = 5;
    nodes
        .iter()
        .filter(|n| n.name != me && n.is_live(now, timeout_ms))
        .map(|n| n.heartbeat_at + timeout_ms + 1 + MARGIN_MS - now)
        .min()
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Registers this node, then heartbeats (leading and running the services while it holds the
/// lease) until shutdown; then leaves the cluster at once, so that its tokens and the lease
/// move while its attempts finish within the grace period.
pub(crate) async fn run(orch: Orchestrator, cfg: ServicesConfig) {
    let store = orch.store().clone();
    let node = orch.node().to_string();
    let capacity = u32::try_from(orch.slots()).unwrap_or(u32::MAX);
    let shutdown = orch.shutdown_token();
    let mut registered = false;
    let mut ticker = tokio::time::interval(cfg.heartbeat_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_purge = Instant::now();
    // The last heartbeat the database took: a node that cannot heartbeat for a whole timeout
    // counts as dead to the others, so it stops claiming (self-fencing).
    let mut last_beat = Instant::now();
    // Until when this node does not judge others by their silence (retire them, triage their
    // instances, recover their pending work): after its own heartbeats stopped for a while (the
    // database was unreachable, or this process stalled), the others' heartbeats are as old as
    // its own, through no fault of theirs; they get one timeout to heartbeat again.
    let mut blind_until: Option<Instant> = None;
    // The lease term this node holds, if it leads, and what it saw of the ring.
    let mut leadership = Leadership::default();
    let ring = RingSettings { total_tokens: cfg.total_tokens, minimum_nodes: cfg.minimum_nodes };
    let units = Units::new(&orch, &cfg);
    // The heartbeat for the attempts this node holds runs on its own tick, so that a long
    // execution of the services never makes them overdue.
    let beats = tokio::spawn(instance_heartbeats(orch.clone(), cfg.heartbeat_interval));
    // An extra look when a live node would count as dead before the next tick.
    let mut expiry_look: Option<Instant> = None;
    // Whether this node owned tokens at the ring's last version.
    let mut owned: Owned = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {},
            _ = sleep_until(expiry_look) => {},
            _ = shutdown.cancelled() => break,
        }
        expiry_look = None;
        if !registered {
            match store.node_register(&node, &cfg.labels, capacity).await {
                Ok(_) => {
                    registered = true;
                    last_beat = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registering this node failed; will try again");
                    continue;
                }
            }
        } else {
            match store.node_heartbeat(&node).await {
                Ok(Some(_)) => {
                    // Others count as dead after a timeout of silence; an own gap of half of
                    // it may have made them look so.
                    if last_beat.elapsed() > cfg.heartbeat_timeout / 2 {
                        tracing::warn!(
                            silent_ms = last_beat.elapsed().as_millis(),
                            "this node could not heartbeat for a while; it gives the others one timeout before judging their silence"
                        );
                        blind_until = Some(Instant::now() + cfg.heartbeat_timeout);
                    }
                    last_beat = Instant::now();
                }
                Ok(None) => {
                    tracing::warn!(node = %node, "this node was declared dead by the cluster; registering again");
                    orch.set_unready();
                    registered = false;
                    continue;
                }
                Err(e) => {
                    if last_beat.elapsed() >= cfg.heartbeat_timeout && orch.is_ready() {
                        tracing::error!(error = %e, "no heartbeat for a whole timeout: self-fencing, claiming stops");
                        orch.set_unready();
                    } else {
                        tracing::warn!(error = %e, "heartbeat failed; will try again");
                    }
                    continue;
                }
            }
        }
        let (now, nodes) = match store.node_list().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reading the node list failed");
                continue;
            }
        };
        let timeout = ms(cfg.heartbeat_timeout);
        expiry_look = next_expiry_ms(&nodes, now, timeout, &node)
            .filter(|&wait| wait < ms(cfg.heartbeat_interval))
            .map(|wait| Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
        // The oldest live node leads: it holds the lease and keeps the token ring assigned.
        let seniority = leader::by_seniority(&nodes, now, timeout, &node);
        let fence = leadership.tick(store.as_ref(), &node, &seniority, timeout, ring).await;
        // What this node may claim: its tokens, and pinned tasks by their patterns. It is
        // ready (claims, answers /health/ready) once it owns tokens.
        // The tasks, read once per tick: their pins decide the claims, their policies the drops.
        let tasks = match store.task_list().await {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "reading the tasks failed; keeping the last claims");
                None
            }
        };
        if let Some(tasks) = &tasks {
            match claims_of(store.as_ref(), &node, &seniority, tasks, &mut owned).await {
                Ok(claims) => {
                    orch.set_total_tokens(claims.total_tokens);
                    orch.set_claim_filter(claims.filter, claims.owns_tokens);
                }
                Err(e) => tracing::warn!(error = %e, "reading the tokens failed; keeping the last claims"),
            }
        }
        // The atomic services: on the leader only (the lease holder is their one runner), at
        // every tick.
        let Some(fence) = fence else { continue };
        let dead: Vec<String> =
            nodes.iter().filter(|n| n.left_at.is_none() && !n.is_live(now, timeout)).map(|n| n.name.clone()).collect();
        // A running execution of a former term, or older than one cycle, is abandoned.
        match store.service_begin(&fence, ms(cfg.service_interval)).await {
            Ok(ServiceGate::Acquired(id)) => {
                let purge_due = last_purge.elapsed() >= cfg.purge_interval;
                if purge_due {
                    last_purge = Instant::now();
                }
                let judge = blind_until.is_none_or(|t| Instant::now() >= t);
                let tick = Tick { now, dead: &dead, tasks: tasks.as_deref(), purge_due, judge };
                let detail = execute(&orch, &units, &fence, &tick).await;
                if let Err(e) = store.service_finish(id, ServiceRunStatus::Completed, &detail).await {
                    tracing::warn!(error = %e, "recording the end of an atomic-service run failed");
                }
            }
            Ok(ServiceGate::Busy(holder)) => {
                tracing::debug!(holder = ?holder.map(|h| h.node), "an execution of this term still runs");
            }
            Err(e @ StoreError::Fenced { .. }) => tracing::warn!(error = %e, "lost the lease before the services"),
            Err(e) => tracing::warn!(error = %e, "the atomic-service gate failed"),
        }
    }
    // Draining: the node claims nothing more and leaves the cluster now, so that the next
    // leader takes the lease and its tokens move at once; the attempts it still holds finish
    // within the grace period (or are handed back), their instances heartbeated by their own
    // task until they are recorded: a left node is never retired as dead.
    if registered && let Err(e) = store.node_leave(&node).await {
        tracing::warn!(error = %e, "leaving the cluster failed (the node will be seen as dead)");
    }
    if let Err(e) = beats.await {
        tracing::warn!(error = %e, "the instance heartbeat task failed");
    }
}

/// The host's heartbeat for the instances this node holds (Jobmon's `report_by`): one
/// statement per tick whatever their number; control signals and taken-away instances are
/// acted on at once. It goes on after shutdown while attempts are still held (draining).
async fn instance_heartbeats(orch: Orchestrator, interval: Duration) {
    let shutdown = orch.shutdown_token();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drain_until: Option<Instant> = None;
    loop {
        ticker.tick().await;
        if shutdown.is_cancelled() {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            if orch.held_count() == 0 || Instant::now() >= until {
                return;
            }
        }
        match orch.heartbeat_instances().await {
            Ok(beat) if beat.signalled + beat.taken_away > 0 => tracing::info!(?beat, "instance heartbeat"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the instance heartbeat failed; will try again"),
        }
    }
}

/// The atomic services, built once for the node's life.
struct Units {
    retire: retire::RetireDead,
    pending: pending::PendingRecovery,
    triage: triage::Triage,
    drops: drops::ConcurrencyDrops,
    purge: purge::Purge,
}

impl Units {
    fn new(orch: &Orchestrator, cfg: &ServicesConfig) -> Self {
        let store: &Arc<dyn Store> = orch.store();
        Self {
            retire: retire::RetireDead::new(store.clone()),
            pending: pending::PendingRecovery::new(store.clone(), cfg.max_pending),
            triage: triage::Triage::new(store.clone(), orch.report_window_ms()),
            drops: drops::ConcurrencyDrops::new(store.clone()),
            purge: purge::Purge::new(store.clone(), cfg.retention),
        }
    }
}

/// What a membership tick saw, for the services it runs.
struct Tick<'a> {
    /// The database clock.
    now: Millis,
    /// The nodes silent past the timeout.
    dead: &'a [String],
    /// The tasks (`None`: they could not be read this tick; the drops wait).
    tasks: Option<&'a [TaskDef]>,
    /// The auto-purge is due.
    purge_due: bool,
    /// False while this node may not judge others by their silence (its own heartbeats
    /// stopped for a while): retirement, pending recovery and triage wait then.
    judge: bool,
}

/// One execution of every service; errors of one service do not stop the others and are
/// kept in the record.
async fn execute(orch: &Orchestrator, units: &Units, fence: &Fence, tick: &Tick<'_>) -> serde_json::Value {
    let &Tick { now, dead, tasks, purge_due, judge } = tick;
    let mut errors: Vec<String> = Vec::new();
    let mut note = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(service = what, error = %e, "atomic service step failed");
        errors.push(format!("{what}: {e}"));
    };

    // Dead nodes are retired: their work rerouted and the node marked left.
    if !judge && !dead.is_empty() {
        tracing::info!(silent = ?dead, "not retiring silent nodes yet: this node was out of touch itself");
    }
    let mut recovered_dead = 0;
    if judge {
        let (n, failures) = units.retire.run_once(fence, dead).await;
        recovered_dead = n;
        for e in failures {
            note("recovery", &e);
        }
    }
    // Pending too long (pynenc's max_pending).
    let recovered_pending = if judge {
        units.pending.run_once(fence).await.unwrap_or_else(|e| {
            note("pending recovery", &e);
            0
        })
    } else {
        0
    };
    if recovered_dead + recovered_pending > 0 {
        orch.nudge();
    }
    // Triage of instances whose node stopped reporting for them (Jobmon).
    let triaged = if judge {
        units.triage.run_once(fence, now).await.unwrap_or_else(|e| {
            note("triage", &e);
            triage::Triaged::default()
        })
    } else {
        triage::Triaged::default()
    };
    if triaged.rerouted > 0 {
        orch.nudge();
    }
    // Running concurrency that drops blocked invocations.
    let drops = match tasks {
        Some(tasks) => units.drops.run_once(fence, tasks).await,
        None => Ok(Vec::new()),
    };
    let dropped = match drops {
        Ok(ids) => {
            orch.wake_final(&ids);
            ids.len()
        }
        Err(e) => {
            note("concurrency control", &e);
            0
        }
    };
    // Triggers.
    let fired = trigger_eval::evaluate_all(orch, fence).await.unwrap_or_else(|e| {
        note("triggers", &e);
        0
    });
    // Auto-purge.
    let mut purged = 0;
    if purge_due {
        let stop = orch.shutdown_token();
        match units.purge.run_once(fence, || stop.is_cancelled()).await {
            Ok(n) => purged = n,
            Err(e) => note("purge", &e),
        }
    }
    json!({
        "epoch": fence.epoch,
        "dead_nodes": dead,
        "recovered_dead": recovered_dead,
        "recovered_pending": recovered_pending,
        "triaged": triaged.changed,
        "rerouted_by_triage": triaged.rerouted,
        "dropped": dropped,
        "triggers_fired": fired,
        "purged": purged,
        "errors": errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, heartbeat_at: i64, left: bool) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: vec![],
            capacity: 1,
            joined_at: 0,
            started_at: 0,
            heartbeat_at,
            left_at: left.then_some(1),
        }
    }

    #[test]
    fn the_extra_look_comes_when_the_first_live_node_would_die() {
        let nodes = [node("me", 0, false), node("a", 9_000, false), node("b", 9_500, false), node("c", 9_990, true)];
        // a's heartbeat at 9,000 with a 2,000 ms timeout: dead from 11,001; margin 5 ms.
        assert_eq!(next_expiry_ms(&nodes, 10_900, 2_000, "me"), Some(106));
        // Once a counts as dead, only b is still to watch; this node itself never is.
        assert_eq!(next_expiry_ms(&nodes, 11_010, 2_000, "me"), Some(496));
        assert_eq!(next_expiry_ms(&nodes, 20_000, 2_000, "me"), None, "no live node left to watch");
        assert_eq!(next_expiry_ms(&nodes[..1], 0, 2_000, "me"), None);
    }
}

#[cfg(test)]
mod unit_tests;
