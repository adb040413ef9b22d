//! The leader's work (JobSync): the oldest live node holds the lease (`cluster_lease`, an epoch
//! bumped by every change of holder; its membership tick renews it, [`Leadership::tick`] claims
//! it) and, when the live nodes
//! changed, computes a minimal-movement assignment (`ring::rebalance`, pure) and swaps it in
//! one transaction fenced by its epoch, with an audit row. Nodes read their tokens at every
//! claim, so a new assignment takes effect at their next claim.

use std::collections::HashMap;
use std::time::Instant;

use super::ring;
use crate::model::{NodeInfo, TickView, TokenAudit};
use crate::store::{Fence, Store, StoreError};

/// What the leader saw at its last look, to skip reading the whole ring when nothing changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RingView {
    version: i64,
    live: Vec<String>,
    total: u32,
}

/// This node's part in leading the cluster, kept from one membership tick to the next: the
/// lease term it holds, if any, and what it last saw of the ring.
#[derive(Debug, Default)]
pub(crate) struct Leadership {
    term: Option<i64>,
    ring: RingView,
}

/// The ring's settings the leader keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSettings {
    /// Tokens in the ring.
    pub(crate) total_tokens: u32,
    /// The ring is not assigned until this many nodes are live.
    pub(crate) minimum_nodes: usize,
}

impl Leadership {
    /// The lease term this node held at its last look, renewed by its next membership tick
    /// (`TickAsk::renew`).
    pub(crate) fn term(&self) -> Option<i64> {
        self.term
    }

    /// One look, given the live nodes by seniority and what the tick read (`view`: the lease
    /// it renewed, the ring's version): when `me` is the oldest, keeps the lease (renewed by
    /// the tick, else claimed here; a node silent `timeout_ms` loses it) and keeps the ring
    /// assigned; returns the fence of the term it holds, under which the atomic services run.
    pub(crate) async fn tick(
        &mut self,
        store: &dyn Store,
        me: &str,
        seniority: &[&NodeInfo],
        timeout_ms: i64,
        ring: RingSettings,
        view: &TickView,
    ) -> Option<Fence> {
        if seniority.first().is_none_or(|n| n.name != me) {
            if self.term.take().is_some() {
                tracing::info!("this node no longer leads the cluster");
            }
            return None;
        }
        let live: Vec<String> = seniority.iter().map(|n| n.name.clone()).collect();
        // Renewed by the tick's own transaction when it held a term; claimed here otherwise
        // (the first look as the oldest, or a renewal that failed).
        let claimed = match (self.term, view.lease) {
            (Some(_), Some(epoch)) => Ok(Some(epoch)),
            _ => store.lease_claim(me, timeout_ms, self.term).await,
        };
        match claimed {
            Ok(Some(epoch)) => {
                if self.term != Some(epoch) {
                    tracing::info!(epoch, "this node leads the cluster (a new lease term)");
                }
                self.term = Some(epoch);
                let lead = Fence { node: me.to_string(), epoch };
                let assigned = rebalance(
                    store,
                    &lead,
                    &live,
                    (ring.total_tokens, ring.minimum_nodes),
                    view.ring_version,
                    &mut self.ring,
                )
                .await;
                if let Err(e) = assigned {
                    tracing::warn!(error = %e, "rebalancing the token ring failed");
                }
                Some(lead)
            }
            Ok(None) => {
                self.term = None;
                tracing::debug!("the leader lease is still held by a live former leader");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming the leader lease failed");
                None
            }
        }
    }
}

/// The live nodes by seniority (oldest first): the first one leads.
pub fn by_seniority<'a>(nodes: &'a [NodeInfo], now: i64, timeout_ms: i64, me: &str) -> Vec<&'a NodeInfo> {
    let mut live: Vec<&NodeInfo> =
        nodes.iter().filter(|n| n.left_at.is_none() && (n.is_live(now, timeout_ms) || n.name == me)).collect();
    live.sort_by(|a, b| (a.joined_at, &a.name).cmp(&(b.joined_at, &b.name)));
    live
}

/// One look of the leader (holding the lease under `fence`) at the ring, whose version the
/// caller read (`head_version`): when the live nodes (at least `minimum_nodes` of them) differ
/// from the ring's owners, or the ring's size from `total_tokens`, swaps in a new assignment.
/// Reads the owners only then. Returns the audit of the swap, if one happened.
pub async fn rebalance(
    store: &dyn Store,
    fence: &Fence,
    live: &[String],
    (total_tokens, minimum_nodes): (u32, usize),
    head_version: i64,
    seen: &mut RingView,
) -> Result<Option<TokenAudit>, StoreError> {
    let mut live: Vec<String> = live.to_vec();
    live.sort();
    live.dedup();
    if live.len() < minimum_nodes.max(1) {
        return Ok(None);
    }
    let view = RingView { version: head_version, live: live.clone(), total: total_tokens };
    if head_version > 0 && *seen == view {
        return Ok(None);
    }
    let ring = store.ring_get(true).await?;
    // Node names as indices: the live ones, then owners that are gone (they count as dead).
    // One hash lookup per token: O(tokens + nodes).
    let mut names: Vec<String> = live.clone();
    let mut index: HashMap<&str, usize> = live.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    for owner in ring.owners.iter().flatten() {
        if !index.contains_key(owner.as_str()) {
            index.insert(owner, names.len());
            names.push(owner.clone());
        }
    }
    let mut current: Vec<Option<usize>> =
        ring.owners.iter().map(|o| o.as_deref().and_then(|n| index.get(n).copied())).collect();
    current.resize(total_tokens as usize, None);
    let live_idx: Vec<usize> = (0..live.len()).collect();
    let started = Instant::now();
    let plan = match ring::rebalance(&current, &live_idx) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no assignment of the token ring");
            return Ok(None);
        }
    };
    let compute_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    let moved: Vec<(u32, String)> = plan
        .owners
        .iter()
        .enumerate()
        .filter(|(t, owner)| current.get(*t).copied().flatten() != Some(**owner))
        .filter_map(|(t, owner)| Some((u32::try_from(t).ok()?, names.get(*owner)?.clone())))
        .collect();
    if moved.is_empty() && ring.version > 0 && ring.total_tokens == total_tokens {
        *seen = RingView { version: ring.version, ..view };
        return Ok(None);
    }
    let mut before: Vec<String> = ring.owners.iter().flatten().cloned().collect();
    before.sort();
    before.dedup();
    let mut audit = TokenAudit {
        version: 0,
        leader: fence.node.clone(),
        epoch: fence.epoch,
        nodes_before: before,
        nodes_after: live.clone(),
        moved: u32::try_from(moved.len()).unwrap_or(u32::MAX),
        compute_us,
        at: 0,
    };
    match store.ring_swap(fence, ring.version, total_tokens, &moved, &audit).await? {
        Some(version) => {
            audit.version = version;
            tracing::info!(version, moved = audit.moved, nodes = ?live, compute_us, "token ring swapped");
            *seen = RingView { version, ..view };
            Ok(Some(audit))
        }
        None => {
            tracing::warn!("token ring swap refused: the ring changed meanwhile");
            *seen = RingView::default();
            Ok(None)
        }
    }
}
