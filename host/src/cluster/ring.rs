//! The cluster's token ring (JobSync semantics): keys hash to tokens, the leader spreads tokens over live nodes.
//!
//! Every invocation key hashes to one of `total_tokens` tokens ([`token_of`]); the node owning a token runs the
//! invocations whose keys hash to it. The leader recomputes ownership with [`rebalance`] whenever membership changes.
//! Both are pure functions: no I/O, no clock, no randomness.
//!
//! # The rebalance rule
//!
//! With `T` tokens and `n` live nodes every node gets a target of `T / n` tokens, and `T % n` nodes get one more.
//! Those extras go to the nodes that already hold the most tokens (ties: the smaller node id), which is what makes
//! the result move the fewest tokens possible. Then every live owner keeps its lowest-numbered tokens up to its
//! target; the tokens left over (unassigned, owned by a dead node, or beyond an owner's target) go, in ascending
//! token order, to the nodes below target in ascending id order. So a node only ever gains or only ever loses
//! tokens, and [`Plan::moved`] is the minimum possible: the orphaned tokens plus each node's excess over its target.
//!
//! # Compared with JobSync
//!
//! The hash is JobSync's `double_sha256` (its default): for a string task id, `token_of(id, t)` equals
//! `task_to_token_double_sha256(id, t)` (Python hashes `str(task_id)` as UTF-8). The rebalance keeps JobSync's
//! minimal-move scheme (keep what you can, over-target nodes shed their highest-numbered tokens, receivers filled in
//! sorted order, `moved` counts every token whose owner changed, unassigned ones included) with two changes:
//! JobSync hands the `T % n` extra tokens to the first nodes by name whatever they hold, so it can move tokens for
//! nothing (3 tokens, node 2 holding two and node 1 one: JobSync moves one to node 1, this moves none); and
//! JobSync's locked tokens (pinned to node-name patterns) are left out.

use std::cmp::Reverse;
use std::iter;

use sha2::{Digest, Sha256};

/// Slot of a token whose owner is not live.
const DEAD: usize = usize::MAX;

/// The token (`0..total_tokens`) that `key` hashes to: the first 8 bytes of `sha256(sha256(key))`, read as a
/// big-endian `u64`, modulo `total_tokens`. Returns 0 when `total_tokens` is 0.
pub fn token_of(key: &str, total_tokens: u32) -> u32 {
    let digest = Sha256::digest(Sha256::digest(key.as_bytes()));
    let mut head = [0; 8];
    head.copy_from_slice(&digest[..8]);
    let hash = u64::from_be_bytes(head);
    // The remainder is below `total_tokens`, so it fits in a u32.
    hash.checked_rem(u64::from(total_tokens)).map_or(0, |token| token as u32)
}

/// The ownership [`rebalance`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<N> {
    /// `owners[t]` is the live node that owns token `t`, for every token of the ring.
    pub owners: Vec<N>,
    /// How many tokens changed owner, counting tokens that were unassigned or owned by a dead node.
    pub moved: u32,
}

/// Why [`rebalance`] produced no plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// There is no live node to own the tokens; the current ownership should be left as it is.
    #[error("no live node to own the ring's tokens")]
    NoLiveNodes,
    /// The ring has more than `u32::MAX` tokens.
    #[error("a ring has at most {} tokens", u32::MAX)]
    TooManyTokens,
}

/// Assigns every token to a live node, evenly and moving as few tokens as possible (see the module docs).
///
/// `current[t]` is token `t`'s owner (`None`: unassigned); owners missing from `live` count as dead. Node ids are
/// any ordered copyable type (the cluster's stable node numbers); `live` may be in any order and hold duplicates.
/// Afterwards every live node owns `T / n` or `T / n + 1` tokens. The result depends only on the set of live nodes
/// and on `current`, never on the order of `live`.
///
/// Runs in O(T log n + n log n) comparisons (an owner lookup is a binary search over the live ids, skipped while
/// consecutive tokens share an owner) and allocates O(T + n).
///
/// # Errors
///
/// [`RingError::NoLiveNodes`] if `live` is empty (even when `current` is), [`RingError::TooManyTokens`] if
/// `current` has more than `u32::MAX` tokens.
pub fn rebalance<N: Copy + Ord>(current: &[Option<N>], live: &[N]) -> Result<Plan<N>, RingError> {
    // Also bounds `moved`, which counts tokens.
    if u32::try_from(current.len()).is_err() {
        return Err(RingError::TooManyTokens);
    }
    let mut nodes = live.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return Err(RingError::NoLiveNodes);
    }

    // Each token's live owner as an index into `nodes` (DEAD: none), and each live node's load.
    let mut loads = vec![0usize; nodes.len()];
    let mut last: Option<(N, usize)> = None;
    let slots: Vec<usize> = current
        .iter()
        .map(|owner| {
            let Some(owner) = *owner else { return DEAD };
            let slot = match last {
                Some((node, slot)) if node == owner => slot,
                _ => nodes.binary_search(&owner).unwrap_or(DEAD),
            };
            last = Some((owner, slot));
            if let Some(load) = loads.get_mut(slot) {
                *load += 1;
            }
            slot
        })
        .collect();

    // Targets: T / n each, plus one for the T % n heaviest nodes (ties: smaller id).
    let (base, extra) = (current.len() / nodes.len(), current.len() % nodes.len());
    let mut by_load: Vec<usize> = (0..nodes.len()).collect();
    by_load.sort_unstable_by_key(|&slot| (Reverse(loads[slot]), slot));
    let mut targets = vec![base; nodes.len()];
    for &slot in &by_load[..extra] {
        targets[slot] += 1;
    }

    // Each node keeps its first tokens up to its target; every other token goes to the next node with room.
    // The rooms add up to exactly the number of tokens not kept, so `receivers` never runs dry.
    let rooms: Vec<usize> = targets.iter().zip(&loads).map(|(&target, &load)| target.saturating_sub(load)).collect();
    let mut receivers = rooms.iter().enumerate().flat_map(|(slot, &room)| iter::repeat_n(slot, room));
    let mut keep = targets;
    let mut moved = 0;
    let owners = slots
        .iter()
        .map(|&slot| match keep.get_mut(slot) {
            Some(left) if *left > 0 => {
                *left -= 1;
                nodes[slot]
            }
            _ => {
                moved += 1;
                nodes[receivers.next().unwrap_or(0)]
            }
        })
        .collect();
    Ok(Plan { owners, moved })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::DEFAULT_TOTAL_TOKENS;

    /// Each node's token count.
    fn loads<N: Copy + Ord>(owners: impl IntoIterator<Item = N>) -> BTreeMap<N, u32> {
        let mut loads = BTreeMap::new();
        for owner in owners {
            *loads.entry(owner).or_insert(0) += 1;
        }
        loads
    }

    /// A freshly distributed ring of `total` tokens over `live`.
    fn fresh(total: usize, live: &[u32]) -> Vec<Option<u32>> {
        rebalance(&vec![None; total], live).unwrap().owners.into_iter().map(Some).collect()
    }

    /// The fewest moves any balanced assignment needs, by trying every choice of nodes for the extra tokens.
    fn brute_force_min_moves(current: &[Option<u32>], live: &[u32]) -> u32 {
        let mut nodes = live.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let held = loads(current.iter().flatten().copied().filter(|owner| nodes.contains(owner)));
        let orphans = current.len() as u32 - held.values().sum::<u32>();
        let (base, extra) = (current.len() as u32 / nodes.len() as u32, current.len() % nodes.len());
        let excess = |mask: u32| -> u32 {
            let target = |i: usize| base + ((mask >> i) & 1);
            nodes.iter().enumerate().map(|(i, node)| held.get(node).unwrap_or(&0).saturating_sub(target(i))).sum()
        };
        let fewest = (0..(1u32 << nodes.len())).filter(|mask| mask.count_ones() as usize == extra).map(excess).min();
        fewest.unwrap() + orphans
    }

    #[test]
    fn token_of_matches_jobsync_double_sha256() {
        // Computed with JobSync's task_to_token_double_sha256 (hashlib) for these task ids.
        assert_eq!(token_of("", DEFAULT_TOTAL_TOKENS), 9811);
        assert_eq!(token_of("hello", DEFAULT_TOTAL_TOKENS), 8856);
        assert_eq!(token_of("task-42", DEFAULT_TOTAL_TOKENS), 6247);
        assert_eq!(token_of("42", DEFAULT_TOTAL_TOKENS), 4248);
        assert_eq!(token_of("émoji🦀", DEFAULT_TOTAL_TOKENS), 3045);
        assert_eq!(token_of("hello", 7), 3);
        assert_eq!(token_of("hello", 1), 0);
        assert_eq!(token_of("hello", 0), 0);
    }

    #[test]
    fn no_live_nodes_is_an_error() {
        assert_eq!(rebalance(&[Some(1u32), None], &[]), Err(RingError::NoLiveNodes));
        assert_eq!(rebalance::<u32>(&[], &[]), Err(RingError::NoLiveNodes));
    }

    #[test]
    fn empty_ring_and_more_nodes_than_tokens() {
        assert_eq!(rebalance(&[], &[1u32]), Ok(Plan { owners: vec![], moved: 0 }));
        let plan = rebalance(&[None, Some(9)], &[5u32, 3, 4]).unwrap();
        assert_eq!(plan, Plan { owners: vec![3, 4], moved: 2 });
    }

    #[test]
    fn fresh_ring_fills_nodes_in_id_order() {
        let plan = rebalance(&[None; 10], &[3u32, 1, 2, 1]).unwrap();
        assert_eq!(plan.owners, [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert_eq!(plan.moved, 10);
    }

    #[test]
    fn extra_token_goes_to_the_node_already_holding_it() {
        // JobSync would give node 1 (first by name) the extra token and move one; nothing needs to move.
        let plan = rebalance(&[Some(2u32), Some(2), Some(1)], &[1, 2]).unwrap();
        assert_eq!(plan, Plan { owners: vec![2, 2, 1], moved: 0 });
    }

    #[test]
    fn over_target_node_sheds_its_highest_tokens_and_dead_tokens_move() {
        let current = [Some(1u32), Some(1), Some(1), Some(1), Some(7), None];
        let plan = rebalance(&current, &[1, 2]).unwrap();
        assert_eq!(plan, Plan { owners: vec![1, 1, 1, 2, 2, 2], moved: 3 });
    }

    #[test]
    fn default_ring_over_fifty_nodes_loses_one() {
        let live: Vec<u32> = (100..150).collect();
        let current = fresh(DEFAULT_TOTAL_TOKENS as usize, &live);
        let plan = rebalance(&current, &live[1..]).unwrap();
        assert_eq!(plan.moved, 200);
        assert!(loads(plan.owners.iter().copied()).values().all(|&load| load == 204 || load == 205));
        for (before, after) in current.iter().zip(&plan.owners) {
            assert!(*before == Some(100) || *before == Some(*after));
        }
    }

    /// Up to 8 live nodes (ids may repeat) and a ring of up to 300 tokens owned by live, dead or no nodes.
    fn ring() -> impl Strategy<Value = (Vec<Option<u32>>, Vec<u32>)> {
        (prop::collection::vec(prop::option::of(0..12u32), 0..300), prop::collection::vec(0..12u32, 1..9))
    }

    /// A balanced ring of up to 300 tokens over 1 to 8 distinct nodes (the rebalance of a random ring, so a node's
    /// tokens are scattered), plus a node id not among them.
    fn balanced() -> impl Strategy<Value = (Vec<Option<u32>>, Vec<u32>, u32)> {
        let current = prop::collection::vec(prop::option::of(0..20u32), 0..300);
        (current, prop::collection::btree_set(0..20u32, 1..9), 0..20u32).prop_filter_map(
            "the extra node must be new",
            |(current, live, newcomer)| {
                let live: Vec<u32> = live.into_iter().collect();
                let owners = rebalance(&current, &live).unwrap().owners;
                (!live.contains(&newcomer)).then(|| (owners.into_iter().map(Some).collect(), live, newcomer))
            },
        )
    }

    proptest! {
        #[test]
        fn every_token_is_owned_by_a_live_node_within_one_of_even((current, live) in ring()) {
            let plan = rebalance(&current, &live).unwrap();
            prop_assert_eq!(plan.owners.len(), current.len());
            prop_assert!(plan.owners.iter().all(|owner| live.contains(owner)));
            let mut nodes = live.clone();
            nodes.sort_unstable();
            nodes.dedup();
            let held = loads(plan.owners.iter().copied());
            let n = nodes.len();
            for node in &nodes {
                let load = held.get(node).copied().unwrap_or(0) as usize;
                prop_assert!(load == current.len() / n || load == current.len().div_ceil(n));
            }
        }

        #[test]
        fn moves_the_fewest_tokens_possible((current, live) in ring()) {
            let plan = rebalance(&current, &live).unwrap();
            let changed = current.iter().zip(&plan.owners).filter(|(before, after)| **before != Some(**after)).count();
            prop_assert_eq!(plan.moved as usize, changed);
            prop_assert_eq!(plan.moved, brute_force_min_moves(&current, &live));
        }

        #[test]
        fn a_node_only_gains_or_only_loses((current, live) in ring()) {
            let plan = rebalance(&current, &live).unwrap();
            let before = loads(current.iter().flatten().copied());
            let after = loads(plan.owners.iter().copied());
            for (node, &load) in &after {
                let had = before.get(node).copied().unwrap_or(0);
                let kept = current.iter().zip(&plan.owners).filter(|(b, a)| **b == Some(*node) && *a == node).count();
                prop_assert!(kept as u32 == had.min(load), "node {} kept {} of {} with {} now", node, kept, had, load);
            }
        }

        #[test]
        fn deterministic_and_independent_of_live_order((current, live) in ring()) {
            let plan = rebalance(&current, &live).unwrap();
            prop_assert_eq!(&rebalance(&current, &live).unwrap(), &plan);
            let mut shuffled: Vec<u32> = live.iter().rev().copied().collect();
            shuffled.extend_from_slice(&live);
            prop_assert_eq!(&rebalance(&current, &shuffled).unwrap(), &plan);
        }

        #[test]
        fn a_balanced_ring_stays_put((current, live) in ring()) {
            let owners = rebalance(&current, &live).unwrap().owners;
            let again = rebalance(&owners.iter().copied().map(Some).collect::<Vec<_>>(), &live).unwrap();
            prop_assert_eq!(again, Plan { owners, moved: 0 });
        }

        #[test]
        fn a_leaving_node_moves_only_its_tokens((current, live, _) in balanced(), leaver in any::<prop::sample::Index>()) {
            let leaver = live[leaver.index(live.len())];
            let rest: Vec<u32> = live.iter().copied().filter(|&node| node != leaver).collect();
            if rest.is_empty() {
                return Ok(());
            }
            let plan = rebalance(&current, &rest).unwrap();
            let owned = current.iter().filter(|owner| **owner == Some(leaver)).count();
            prop_assert_eq!(plan.moved as usize, owned);
            for (before, after) in current.iter().zip(&plan.owners) {
                prop_assert!(*before == Some(leaver) || *before == Some(*after));
            }
        }

        #[test]
        fn a_joining_node_takes_its_share_from_the_others((current, mut live, newcomer) in balanced()) {
            let (total, n) = (current.len(), live.len());
            live.push(newcomer);
            let plan = rebalance(&current, &live).unwrap();
            let taken = plan.owners.iter().filter(|&&owner| owner == newcomer).count();
            prop_assert!(taken == total / (n + 1) || taken == total.div_ceil(n + 1));
            prop_assert_eq!(plan.moved as usize, taken);
            let before = loads(current.iter().flatten().copied());
            let after = loads(plan.owners.iter().copied());
            for (node, &had) in &before {
                let has = after.get(node).copied().unwrap_or(0);
                prop_assert!(has <= had && (had - has) as usize <= total.div_ceil(n) - total / (n + 1));
            }
            for (before, after) in current.iter().zip(&plan.owners) {
                prop_assert!(*after == newcomer || *before == Some(*after));
            }
        }

        #[test]
        fn token_of_is_in_range(key in ".*", total_tokens in 1..=u32::MAX) {
            prop_assert!(token_of(&key, total_tokens) < total_tokens);
        }
    }
}
