//! The invocation status machine as one declarative table: pynenc's statuses and ownership
//! rules, with the differences listed in ARCHITECTURE.md ("Where Warden differs from pynenc,
//! Jobmon and JobSync, and why": `cancelled`, `resumed → running`, recovery of `paused` and
//! `resumed`, unstarted claims handed back through `pending_recovery`; a lost last attempt
//! ends `failed` from the recovery statuses). Every status, the
//! statuses it may move to, and its ownership rule; everything that changes a status asks this
//! table first, and the store enforces the same rule as a compare-and-swap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a status does to ownership of the invocation (node + attempt epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Neither needs nor changes ownership.
    Free,
    /// Entering it takes ownership (the claiming node becomes the owner).
    Acquires,
    /// Only the owner may change it.
    Requires,
    /// Entering it drops ownership.
    Releases,
    /// Entering it ignores and clears any owner (recovery).
    Overrides,
}

macro_rules! statuses {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, final: $final:literal, runnable: $runnable:literal, ownership: $own:ident, next: [$($next:ident),*];)*) => {
        /// The status of an invocation. Each doc line says who moves it out.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum InvocationStatus {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl InvocationStatus {
            /// Every status, in table order.
            pub const ALL: &'static [InvocationStatus] = &[$(Self::$variant),*];

            /// The lower snake case name (API and database).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// Final statuses never change again.
            pub fn is_final(self) -> bool {
                match self { $(Self::$variant => $final,)* }
            }

            /// Statuses a node may claim an invocation from.
            pub fn is_runnable(self) -> bool {
                match self { $(Self::$variant => $runnable,)* }
            }

            /// The ownership rule of the status.
            pub fn ownership(self) -> Ownership {
                match self { $(Self::$variant => Ownership::$own,)* }
            }

            /// The statuses it may move to.
            pub fn next(self) -> &'static [InvocationStatus] {
                match self { $(Self::$variant => &[$(Self::$next),*],)* }
            }
        }

        impl FromStr for InvocationStatus {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(format!("unknown invocation status `{other}`")),
                }
            }
        }
    };
}

statuses! {
    /// Routed and waiting to be claimed; a node's claim moves it to `pending`.
    Registered = "registered", final: false, runnable: true, ownership: Free,
        next: [Pending, ConcurrencyControlled, ConcurrencyControlledFinal, Cancelled];
    /// Claimed by a node, about to start; the owner moves it to `running`, recovery to `pending_recovery`.
    Pending = "pending", final: false, runnable: false, ownership: Acquires,
        next: [Running, PendingRecovery, ConcurrencyControlled, Cancelled];
    /// A guest is running it; the owner records the outcome, recovery takes it from dead owners.
    Running = "running", final: false, runnable: false, ownership: Requires,
        next: [Success, Failed, Retry, Paused, Killed, RunningRecovery, Cancelled];
    /// The guest waits on other invocations and gave its slot back; the owner resumes it.
    Paused = "paused", final: false, runnable: false, ownership: Requires,
        next: [Resumed, Killed, RunningRecovery, Cancelled];
    /// Waited-on invocations are final; the owner continues the guest (`running`).
    Resumed = "resumed", final: false, runnable: false, ownership: Requires,
        next: [Running, Killed, RunningRecovery, Cancelled];
    /// Failed with attempts left; after its backoff a node claims it again.
    Retry = "retry", final: false, runnable: true, ownership: Releases,
        next: [Pending, Cancelled];
    /// Handed back for another node to claim (recovery, concurrency control, kill).
    Rerouted = "rerouted", final: false, runnable: true, ownership: Releases,
        next: [Pending, ConcurrencyControlled, ConcurrencyControlledFinal, Cancelled];
    /// Interrupted by its owner (shutdown); rerouted at once.
    Killed = "killed", final: false, runnable: false, ownership: Releases,
        next: [Rerouted];
    /// Pending too long (dead owner or lost start); recovery reroutes it, or fails it when the
    /// lost attempt was its last (`failed`, error kind `lost`).
    PendingRecovery = "pending_recovery", final: false, runnable: false, ownership: Overrides,
        next: [Rerouted, Failed];
    /// Owned by a dead node (or this node's previous life); recovery reroutes it, or fails it
    /// when the lost attempt was its last (`failed`, error kind `lost`).
    RunningRecovery = "running_recovery", final: false, runnable: false, ownership: Overrides,
        next: [Rerouted, Failed];
    /// Blocked by running concurrency; rerouted to try again later.
    ConcurrencyControlled = "concurrency_controlled", final: false, runnable: false, ownership: Releases,
        next: [Rerouted];
    /// Dropped by concurrency control for good.
    ConcurrencyControlledFinal = "concurrency_controlled_final", final: true, runnable: false, ownership: Releases,
        next: [];
    /// Finished with a result.
    Success = "success", final: true, runnable: false, ownership: Releases,
        next: [];
    /// Finished with an error and no attempts left (or a fatal error).
    Failed = "failed", final: true, runnable: false, ownership: Releases,
        next: [];
    /// Cancelled by a user.
    Cancelled = "cancelled", final: true, runnable: false, ownership: Releases,
        next: [];
}

impl InvocationStatus {
    /// Whether `self → to` is an edge of the table.
    pub fn can_move_to(self, to: InvocationStatus) -> bool {
        self.next().contains(&to)
    }

    /// Statuses that only their owner may change.
    pub fn is_owned(self) -> bool {
        matches!(self.ownership(), Ownership::Acquires | Ownership::Requires)
    }

    /// The runnable statuses, for claim queries.
    pub fn runnable() -> impl Iterator<Item = InvocationStatus> {
        Self::ALL.iter().copied().filter(|s| s.is_runnable())
    }
}

impl fmt::Display for InvocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Renders the table for `warden status-graph`.
pub fn render_table() -> String {
    let mut out = String::from("status                        final  runnable  ownership  next\n");
    for s in InvocationStatus::ALL {
        let next: Vec<&str> = s.next().iter().map(|n| n.as_str()).collect();
        out.push_str(&format!(
            "{:<30}{:<7}{:<10}{:<11}{}\n",
            s.as_str(),
            s.is_final(),
            s.is_runnable(),
            format!("{:?}", s.ownership()).to_lowercase(),
            next.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_have_no_exits_and_others_do() {
        for s in InvocationStatus::ALL {
            assert_eq!(s.is_final(), s.next().is_empty(), "{s}");
        }
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in InvocationStatus::ALL {
            assert_eq!(s.as_str().parse::<InvocationStatus>(), Ok(*s));
            assert!(seen.insert(s.as_str()));
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::json!(s.as_str())));
        }
    }

    #[test]
    fn ownership_only_flows_along_the_table() {
        for a in InvocationStatus::ALL {
            for b in a.next() {
                match b.ownership() {
                    // Taking ownership happens only by claiming something runnable.
                    Ownership::Acquires => assert!(a.is_runnable(), "{a} -> {b} acquires from a non-runnable status"),
                    // Owned statuses are entered only from the owner's own statuses.
                    Ownership::Requires => assert!(a.is_owned(), "{a} -> {b} requires an owner {a} does not have"),
                    Ownership::Overrides => assert!(a.is_owned(), "recovery {b} from unowned {a}"),
                    Ownership::Free | Ownership::Releases => {}
                }
            }
            // `killed` leads only back to the queue; recovery statuses back to the queue, or to
            // `failed` when the lost attempt was the last.
            if *a == InvocationStatus::Killed {
                assert_eq!(a.next(), [InvocationStatus::Rerouted], "{a}");
            }
            if matches!(a.ownership(), Ownership::Overrides) {
                assert_eq!(a.next(), [InvocationStatus::Rerouted, InvocationStatus::Failed], "{a}");
            }
        }
    }

    #[test]
    fn every_status_is_reachable_from_registered() {
        let mut reached = vec![InvocationStatus::Registered];
        let mut i = 0;
        while i < reached.len() {
            for n in reached[i].next() {
                if !reached.contains(n) {
                    reached.push(*n);
                }
            }
            i += 1;
        }
        for s in InvocationStatus::ALL {
            assert!(reached.contains(s), "{s} unreachable");
        }
    }

    #[test]
    fn runnable_statuses_lead_to_pending_and_the_happy_path_exists() {
        for s in InvocationStatus::runnable() {
            assert!(s.can_move_to(InvocationStatus::Pending), "{s}");
            assert!(!s.is_owned(), "{s} runnable yet owned");
        }
        use InvocationStatus::*;
        for (a, b) in
            [(Registered, Pending), (Pending, Running), (Running, Success), (Running, Retry), (Retry, Pending)]
        {
            assert!(a.can_move_to(b), "{a} -> {b}");
        }
    }

    /// From every status some final status is reachable: no walk can be trapped in a loop.
    #[test]
    fn a_final_status_is_reachable_from_every_status() {
        for s in InvocationStatus::ALL {
            let mut seen = vec![*s];
            let mut i = 0;
            while i < seen.len() && !seen[i].is_final() {
                for n in seen[i].next() {
                    if !seen.contains(n) {
                        seen.push(*n);
                    }
                }
                i += 1;
            }
            assert!(seen.iter().any(|x| x.is_final()), "no final status reachable from {s}");
        }
    }

    proptest::proptest! {
        /// Random walks along the table from `registered`, tracking ownership as the store
        /// does: an owned status always has an owner, runnable and final ones never do, and an
        /// owner is only ever taken by a claim (a move into an acquiring status).
        #[test]
        fn random_walks_keep_ownership_consistent(choices in proptest::collection::vec(0usize..16, 1..80)) {
            let mut s = InvocationStatus::Registered;
            let mut owner: Option<u32> = None;
            let mut epoch = 0u32;
            for c in choices {
                if s.is_final() {
                    proptest::prop_assert!(s.next().is_empty());
                    break;
                }
                let next = s.next()[c % s.next().len()];
                match next.ownership() {
                    Ownership::Acquires => {
                        proptest::prop_assert!(owner.is_none(), "{} -> {} claims an owned invocation", s, next);
                        epoch += 1;
                        owner = Some(epoch);
                    }
                    Ownership::Requires => proptest::prop_assert!(owner.is_some(), "{} -> {} without owner", s, next),
                    Ownership::Releases | Ownership::Overrides => owner = None,
                    Ownership::Free => {}
                }
                s = next;
                proptest::prop_assert_eq!(s.is_owned(), owner.is_some(), "at {}", s);
                if s.is_runnable() || s.is_final() {
                    proptest::prop_assert!(owner.is_none(), "{} keeps an owner", s);
                }
            }
        }
    }
}
