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

mod trigger_eval;

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::leader;
use crate::cluster::pins::{self, PinNode};
use crate::model::{Millis, NodeInfo, ServiceRunStatus};
use crate::orchestrator::Orchestrator;
use crate::store::{ClaimFilter, Fence, ServiceGate, StoreError};

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
    let mut ring_view = leader::RingView::default();
    // The epoch of the lease term this node holds, if it leads.
    let mut term: Option<i64> = None;
    // The heartbeat for the attempts this node holds runs on its own tick, so that a long
    // execution of the services never makes them overdue.
    let beats = tokio::spawn(instance_heartbeats(orch.clone(), cfg.heartbeat_interval));
    // An extra look when a live node would count as dead before the next tick.
    let mut expiry_look: Option<Instant> = None;
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
        let mut fence: Option<Fence> = None;
        if seniority.first().is_some_and(|n| n.name == node) {
            let live: Vec<String> = seniority.iter().map(|n| n.name.clone()).collect();
            match store.lease_claim(&node, timeout, term).await {
                Ok(Some(epoch)) => {
                    if term != Some(epoch) {
                        tracing::info!(epoch, "this node leads the cluster (a new lease term)");
                    }
                    term = Some(epoch);
                    let lead = Fence { node: node.clone(), epoch };
                    if let Err(e) = leader::rebalance(
                        store.as_ref(),
                        &lead,
                        &live,
                        cfg.total_tokens,
                        cfg.minimum_nodes,
                        &mut ring_view,
                    )
                    .await
                    {
                        tracing::warn!(error = %e, "rebalancing the token ring failed");
                    }
                    fence = Some(lead);
                }
                Ok(None) => {
                    term = None;
                    tracing::debug!("the leader lease is still held by a live former leader");
                }
                Err(e) => tracing::warn!(error = %e, "claiming the leader lease failed"),
            }
        } else if term.take().is_some() {
            tracing::info!("this node no longer leads the cluster");
        }
        // What this node may claim: its tokens, and pinned tasks by their patterns. It is
        // ready (claims, answers /health/ready) once it owns tokens.
        match claim_filter(orch.store().as_ref(), &node, &seniority).await {
            Ok((filter, owns_tokens, total)) => {
                orch.set_total_tokens(total);
                orch.set_claim_filter(filter, owns_tokens);
            }
            Err(e) => tracing::warn!(error = %e, "reading the task pins or tokens failed; keeping the last ones"),
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
                let detail = execute(&orch, &cfg, &fence, now, &dead, purge_due, judge).await;
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

/// What `me` may claim while `live` are the live nodes (`leader::by_seniority`): the pinned
/// tasks it must skip or may take whatever their token; whether it owns tokens; the ring's size.
async fn claim_filter(
    store: &dyn crate::store::Store,
    me: &str,
    live: &[&NodeInfo],
) -> Result<(ClaimFilter, bool, u32), StoreError> {
    let ring = store.ring_get(false).await?;
    let owns = ring.version > 0 && store.token_owns_any(me).await?;
    let tasks: Vec<(String, Vec<String>)> =
        store.task_list().await?.into_iter().filter(|t| !t.pins.is_empty()).map(|t| (t.name, t.pins)).collect();
    if tasks.is_empty() {
        return Ok((ClaimFilter::default(), owns, ring.total_tokens));
    }
    let live: Vec<PinNode<'_>> = live.iter().map(|n| PinNode { name: &n.name, labels: &n.labels }).collect();
    let filter = ClaimFilter {
        excluded: pins::excluded_for(me, &tasks, &live),
        pinned_here: pins::pinned_to(me, &tasks, &live),
    };
    Ok((filter, owns, ring.total_tokens))
}

/// One execution of every service; errors of one service do not stop the others and are
/// kept in the record.
async fn execute(
    orch: &Orchestrator,
    cfg: &ServicesConfig,
    fence: &Fence,
    now: Millis,
    dead: &[String],
    purge_due: bool,
    judge: bool,
) -> serde_json::Value {
    let store = orch.store();
    let mut errors: Vec<String> = Vec::new();
    let mut note = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(service = what, error = %e, "atomic service step failed");
        errors.push(format!("{what}: {e}"));
    };

    // Dead nodes are retired: their work rerouted and the node marked left, in one transaction
    // (it registers again if it comes back, as the youngest node).
    let mut recovered_dead = 0;
    if !judge && !dead.is_empty() {
        tracing::info!(silent = ?dead, "not retiring silent nodes yet: this node was out of touch itself");
    }
    for d in dead.iter().filter(|_| judge) {
        match store.node_retire(d, fence).await {
            Ok(n) => {
                recovered_dead += n;
                tracing::warn!(node = %d, recovered = n, "retired a dead node and rerouted its invocations");
            }
            Err(e) => note("recovery", &e),
        }
    }
    // Pending too long (pynenc's max_pending).
    let pending = async {
        if judge { store.invocation_recover_pending(fence, ms(cfg.max_pending), STEP_LIMIT).await } else { Ok(0) }
    };
    let recovered_pending = match pending.await {
        Ok(n) => n,
        Err(e) => {
            note("pending recovery", &e);
            0
        }
    };
    if recovered_pending > 0 {
        tracing::warn!(
            rerouted = recovered_pending,
            max_pending_ms = ms(cfg.max_pending),
            "rerouted invocations claimed but not started in time"
        );
    }
    if recovered_dead + recovered_pending > 0 {
        orch.nudge();
    }
    // Triage of instances whose node stopped reporting for them (Jobmon).
    let (triaged, rerouted_triage) = match if judge { triage(orch, fence, now).await } else { Ok((0, 0)) } {
        Ok(v) => v,
        Err(e) => {
            note("triage", &e);
            (0, 0)
        }
    };
    if rerouted_triage > 0 {
        orch.nudge();
    }
    // Running concurrency that drops blocked invocations.
    let dropped = match drop_blocked(orch, fence).await {
        Ok(n) => n,
        Err(e) => {
            note("concurrency control", &e);
            0
        }
    };
    // Triggers.
    let fired = match trigger_eval::evaluate_all(orch, fence).await {
        Ok(n) => n,
        Err(e) => {
            note("triggers", &e);
            0
        }
    };
    // Auto-purge.
    let mut purged = 0;
    if purge_due && let Some(retention) = cfg.retention {
        match purge(orch, fence, retention).await {
            Ok(n) => purged = n,
            Err(e) => note("purge", &e),
        }
    }
    if purge_due && let Err(e) = store.service_prune(fence, RECORD_RETENTION_MS).await {
        note("purge", &e);
    }
    json!({
        "epoch": fence.epoch,
        "dead_nodes": dead,
        "recovered_dead": recovered_dead,
        "recovered_pending": recovered_pending,
        "triaged": triaged,
        "rerouted_by_triage": rerouted_triage,
        "dropped": dropped,
        "triggers_fired": fired,
        "purged": purged,
        "errors": errors,
    })
}

/// Triage (Jobmon) by the leader holding `fence`, at `now` (the database clock as the tick read
/// it): overdue instances move on (`running → triaging`, `triaging → unknown_error`, never
/// reported → `no_heartbeat → error`), and the invocations of the given-up ones are rerouted.
/// Returns (instances changed, invocations rerouted).
async fn triage(orch: &Orchestrator, fence: &Fence, now: Millis) -> Result<(usize, usize), StoreError> {
    let overdue = orch.store().instance_overdue(now, STEP_LIMIT).await?;
    let decisions = crate::model::instance::triage(&overdue, now, orch.report_window_ms());
    let (changed, rerouted) = orch.store().instance_triage_apply(&decisions, fence).await?;
    if !rerouted.is_empty() {
        tracing::warn!(rerouted = rerouted.len(), "triage rerouted invocations whose node stopped reporting");
    }
    Ok((changed, rerouted.len()))
}

/// Drops (`concurrency_controlled_final`) the blocked invocations of tasks that do not
/// reroute on concurrency control.
async fn drop_blocked(orch: &Orchestrator, fence: &Fence) -> Result<usize, StoreError> {
    let tasks: Vec<String> = orch
        .store()
        .task_list()
        .await?
        .into_iter()
        .filter(|t| !t.policy.reroute_on_concurrency_control)
        .map(|t| t.name)
        .collect();
    let dropped = orch.store().invocation_drop_blocked(fence, &tasks, STEP_LIMIT).await?;
    orch.wake_final(&dropped);
    Ok(dropped.len())
}

/// Deletes final invocations (and events) past their retention, in bounded transactions.
async fn purge(orch: &Orchestrator, fence: &Fence, retention: Duration) -> Result<u64, StoreError> {
    const PURGE_BATCH: u32 = 5_000;
    let age = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    let mut total = 0;
    loop {
        let n = orch.store().invocation_purge(fence, age, PURGE_BATCH).await?;
        total += n;
        if n < u64::from(PURGE_BATCH) || orch.shutdown_token().is_cancelled() {
            break;
        }
    }
    orch.store().events_purge(fence, ms(retention)).await?;
    if total > 0 {
        tracing::info!(purged = total, retention_ms = age, "purged final invocations past their retention");
    }
    Ok(total)
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
