//! Membership and the atomic services. Every node ticks each `heartbeat_interval` and takes
//! part in the cluster (the oldest live node holds the leader lease and keeps the token ring
//! assigned; every node recomputes what it may claim). A tick is one transaction
//! (`Store::node_tick`): the heartbeat, the renewal of the lease term the node holds, the node
//! list, the versions of the ring, the tasks and the API keys (each read again only when its
//! version moved), and probes of what the services would find; an idle node costs the
//! database nothing more. The atomic services (pynenc's
//! cluster-wide singleton maintenance: retiring dead nodes, `max_pending` recovery, triage,
//! running-concurrency drops, trigger evaluation, the auto-purge) run on the leader only
//! (JobSync), at a tick where one of them has work ([`services_due`]) and at the first tick
//! of each lease term: the leader's lease is the one runner of the atomic services, so
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
use crate::model::{Due, Millis, NodeInfo, ServiceRunStatus, TaskDef, TickAsk};
use crate::orchestrator::Orchestrator;
use crate::store::{Fence, ServiceGate, Store, StoreError};

/// Execution records older than this are pruned.
const RECORD_RETENTION_MS: i64 = 3_600_000;
/// Most rows one step of an execution moves (the next execution takes the rest).
const STEP_LIMIT: u32 = 1_000;
/// The tasks are read again at least this often, even when their version did not move (a
/// safety net: every write to them bumps it).
const CATALOG_BACKSTOP: Duration = Duration::from_secs(60);

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

/// Whether the leader runs the atomic services at this tick: when one of them has something
/// to do (the tick's probes: an overdue instance, a pending invocation past `max_pending`, a
/// trigger; a dead node to retire; a task whose blocked calls are dropped; the purge). The
/// caller also runs them at the first tick of each lease term. An idle leader runs nothing
/// and writes no execution record, instead of two writes and four reads every tick.
fn services_due(due: &Due, dead_nodes: bool, droppable: bool, purge_due: bool) -> bool {
    let Due { overdue_instances, stale_pending, triggers } = *due;
    overdue_instances || stale_pending || triggers || dead_nodes || droppable || purge_due
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
///
/// Each tick publishes the version of the API keys it read to `keys_version`: the API reads
/// the keys again when it moves.
pub(crate) async fn run(orch: Orchestrator, cfg: ServicesConfig, keys_version: tokio::sync::watch::Sender<i64>) {
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
    // The tasks as last read, with the version they were read at: read again when the tick
    // sees another version (or after `CATALOG_BACKSTOP`).
    let mut catalog: Option<(i64, Instant, Vec<TaskDef>)> = None;
    // The lease term of the services' last execution: a new term runs them at its first tick.
    let mut ran_in_term: Option<i64> = None;
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
        }
        // One transaction: the heartbeat, the lease renewal, the node list, the versions and
        // the services' probes.
        let timeout = ms(cfg.heartbeat_timeout);
        let ask = TickAsk {
            node: &node,
            renew: leadership.term().map(|e| (e, timeout)),
            max_pending_ms: ms(cfg.max_pending),
        };
        let view = match store.node_tick(&ask).await {
            Ok(v) => v,
            Err(e) => {
                if last_beat.elapsed() >= cfg.heartbeat_timeout && orch.is_ready() {
                    tracing::error!(error = %e, "no heartbeat for a whole timeout: self-fencing, claiming stops");
                    orch.set_unready();
                } else {
                    tracing::warn!(error = %e, "heartbeat failed; will try again");
                }
                continue;
            }
        };
        if view.beat.is_none() {
            tracing::warn!(node = %node, "this node was declared dead by the cluster; registering again");
            orch.set_unready();
            registered = false;
            continue;
        }
        // Others count as dead after a timeout of silence; an own gap of half of it may have
        // made them look so.
        if last_beat.elapsed() > cfg.heartbeat_timeout / 2 {
            tracing::warn!(
                silent_ms = last_beat.elapsed().as_millis(),
                "this node could not heartbeat for a while; it gives the others one timeout before judging their silence"
            );
            blind_until = Some(Instant::now() + cfg.heartbeat_timeout);
        }
        last_beat = Instant::now();
        keys_version.send_if_modified(|v| std::mem::replace(v, view.keys_version) != view.keys_version);
        let (now, nodes) = (view.now, &view.nodes);
        expiry_look = next_expiry_ms(nodes, now, timeout, &node)
            .filter(|&wait| wait < ms(cfg.heartbeat_interval))
            .map(|wait| Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
        // The oldest live node leads: it holds the lease and keeps the token ring assigned.
        let seniority = leader::by_seniority(nodes, now, timeout, &node);
        let fence = leadership.tick(store.as_ref(), &node, &seniority, timeout, ring, &view).await;
        // What this node may claim: its tokens, and pinned tasks by their patterns. It is
        // ready (claims, answers /health/ready) once it owns tokens.
        // The tasks, read again when their version moved: their pins decide the claims, their
        // policies the drops.
        let stale = catalog
            .as_ref()
            .is_none_or(|(version, at, _)| *version != view.tasks_version || at.elapsed() >= CATALOG_BACKSTOP);
        if stale {
            // Routing and the workers keep their own copies of the tasks and the compiled
            // components: a deploy, patch or removal made through another node reaches them
            // here, within one heartbeat.
            orch.forget_catalog().await;
            match store.task_list().await {
                Ok(t) => catalog = Some((view.tasks_version, Instant::now(), t)),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the tasks failed; keeping the last claims");
                    catalog = None;
                }
            }
        }
        let tasks = catalog.as_ref().map(|(_, _, t)| t.as_slice());
        if let Some(tasks) = tasks {
            match claims_of(
                store.as_ref(),
                &node,
                &seniority,
                tasks,
                (view.ring_version, view.total_tokens),
                &mut owned,
            )
            .await
            {
                Ok(mut claims) => {
                    orch.set_total_tokens(claims.total_tokens);
                    claims.filter.rate_limited = tasks.iter().any(|t| t.policy.rate_limit.is_some());
                    orch.set_claim_filter(claims.filter, claims.owns_tokens);
                }
                Err(e) => tracing::warn!(error = %e, "reading the tokens failed; keeping the last claims"),
            }
        }
        // The atomic services: on the leader only (the lease holder is their one runner), at
        // a tick where one of them has something to do.
        let Some(fence) = fence else { continue };
        let dead: Vec<String> =
            nodes.iter().filter(|n| n.left_at.is_none() && !n.is_live(now, timeout)).map(|n| n.name.clone()).collect();
        let purge_due = last_purge.elapsed() >= cfg.purge_interval;
        let due = services_due(&view.due, !dead.is_empty(), tasks.is_some_and(drops::any_droppable), purge_due)
            || ran_in_term != Some(fence.epoch);
        if !due {
            continue;
        }
        // A running execution of a former term, or older than one cycle, is abandoned.
        match store.service_begin(&fence, ms(cfg.service_interval)).await {
            Ok(ServiceGate::Acquired(id)) => {
                ran_in_term = Some(fence.epoch);
                if purge_due {
                    last_purge = Instant::now();
                }
                let judge = blind_until.is_none_or(|t| Instant::now() >= t);
                let tick = Tick { now, dead: &dead, tasks, purge_due, judge };
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
