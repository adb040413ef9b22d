//! The cluster as stored: member nodes, the leader lease, the token ring and its audit, and the
//! execution records of the atomic services.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Millis;

/// Number of tokens in a ring unless configured otherwise (JobSync's default).
pub const DEFAULT_TOTAL_TOKENS: u32 = 10_000;

/// A node of the cluster as its membership row says (one row on a single-node daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique node name.
    pub name: String,
    /// Labels pins can match (`gpu`, `region=eu`).
    pub labels: Vec<String>,
    /// Attempts it runs at once.
    pub capacity: u32,
    /// First registration: seniority (the oldest live node leads); kept across restarts.
    pub joined_at: Millis,
    /// Start of the node's current life.
    pub started_at: Millis,
    /// Last heartbeat (database clock).
    pub heartbeat_at: Millis,
    /// Set when the node left cleanly.
    pub left_at: Option<Millis>,
}

impl NodeInfo {
    /// Live = not left and heartbeat within `timeout_ms` of `now`.
    pub fn is_live(&self, now: Millis, timeout_ms: i64) -> bool {
        self.left_at.is_none() && now - self.heartbeat_at <= timeout_ms
    }
}

/// The status of one execution of the atomic services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRunStatus {
    /// Running now (at most one cluster-wide: the storage gate).
    Running,
    /// Finished.
    Completed,
    /// Its node died or it ran past its deadline; the gate was taken from it.
    Abandoned,
    /// A node was in its slot but another execution held the gate.
    Blocked,
}

impl ServiceRunStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Abandoned => "abandoned",
            Self::Blocked => "blocked",
        }
    }
}

impl FromStr for ServiceRunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(Self::Running),
            "completed" => Ok(Self::Completed),
            "abandoned" => Ok(Self::Abandoned),
            "blocked" => Ok(Self::Blocked),
            other => Err(format!("unknown service run status `{other}`")),
        }
    }
}

/// One execution record of the atomic services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceRun {
    /// Sequence number.
    pub id: i64,
    /// The node that ran (or was blocked): the leader.
    pub node: String,
    /// The lease epoch (leader term) it ran under; absent on records older than the lease.
    pub epoch: Option<i64>,
    /// What became of it.
    pub status: ServiceRunStatus,
    /// Start (database clock).
    pub started_at: Millis,
    /// End, once ended.
    pub ended_at: Option<Millis>,
    /// What it did (counts per service, errors).
    pub detail: serde_json::Value,
}

/// The leader lease (JobSync's leader, fenced by an epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The node holding it, if anyone ever did.
    pub holder: Option<String>,
    /// Bumped by every new term (a change of holder, or the same node in a new life).
    pub epoch: i64,
    /// When it lapses unless renewed (database clock).
    pub expires_at: Millis,
    /// The database now when read.
    pub now: Millis,
}

/// What one membership tick of a node asks of the database, in one transaction
/// (`Coordination::node_tick` in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickAsk<'a> {
    /// The node that heartbeats.
    pub node: &'a str,
    /// The lease term it held at its last tick (`epoch`), renewed for `ttl_ms` in the same
    /// transaction when still its own; `None` when it did not lead, and then [`Due`] is not
    /// probed (only the leader runs the services; a new leader runs them at the first tick of
    /// its term anyway).
    pub renew: Option<(i64, i64)>,
    /// Its `max_pending` (ms), for [`Due::stale_pending`].
    pub max_pending_ms: i64,
}

/// What one membership tick learns, read in the transaction of its heartbeat: the node list,
/// the versions that say whether the ring, the tasks or the API keys must be read again, and
/// whether an atomic service has anything to do. An idle node's tick is one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickView {
    /// The database now after the heartbeat; `None` when the node is unknown or left (it
    /// registers again; nothing else was written).
    pub beat: Option<Millis>,
    /// The lease epoch renewed (or taken: the lease had lapsed meanwhile), when asked for
    /// and still possible.
    pub lease: Option<i64>,
    /// The database now.
    pub now: Millis,
    /// Every node, oldest `joined_at` first.
    pub nodes: Vec<NodeInfo>,
    /// The token ring's version and size (its owners are read only when it changes).
    pub ring_version: i64,
    /// Tokens in the ring (0 before the first assignment).
    pub total_tokens: u32,
    /// Bumped by every write to the tasks (deploys, removals, patches, pins, pauses).
    pub tasks_version: i64,
    /// Bumped by every API key created or deleted.
    pub keys_version: i64,
    /// What the atomic services would find to do (all false unless the node asked to renew a
    /// term).
    pub due: Due,
}

/// Whether the atomic services have work waiting, as one tick's probes saw it (the services
/// also run on their own for dead nodes, drops and the purge; see `services/mod.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// A live instance is past its `report_by` (triage).
    pub overdue_instances: bool,
    /// An invocation has been `pending` longer than `max_pending` (pending recovery).
    pub stale_pending: bool,
    /// A trigger exists (the evaluation looks at every tick).
    pub triggers: bool,
}

/// The token ring: who owns which of the `total_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRing {
    /// Bumped by every swap; 0 before the first assignment.
    pub version: i64,
    /// Tokens in the ring (0 before the first assignment).
    pub total_tokens: u32,
    /// Last swap (database clock).
    pub updated_at: Millis,
    /// Owner of each token by index (when asked for; `None`: unassigned).
    pub owners: Vec<Option<String>>,
}

/// One swap of the ring, as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenAudit {
    /// The version it produced.
    pub version: i64,
    /// The leader that swapped it.
    pub leader: String,
    /// The leader's lease epoch.
    pub epoch: i64,
    /// Nodes owning tokens before.
    pub nodes_before: Vec<String>,
    /// Live nodes after.
    pub nodes_after: Vec<String>,
    /// Tokens that changed owner.
    pub moved: u32,
    /// Time to compute the new assignment, in µs.
    pub compute_us: i64,
    /// When (database clock).
    pub at: Millis,
}

/// The invocations one node owns, as `GET /v1/cluster/nodes` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// The node.
    pub node: String,
    /// Invocations it holds in any owned status (claimed, running, paused, resumed).
    pub owned: i64,
    /// Invocations it runs.
    pub running: i64,
}

/// The tokens of the ring one node owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLoad {
    /// The node.
    pub node: String,
    /// Tokens it owns.
    pub tokens: i64,
}
