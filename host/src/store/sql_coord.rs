//! SQL of the coordination tables (`coord.rs`): node membership, atomic-service executions, the
//! leader lease and the token ring; both dialects side by side.

use super::Sql;

macro_rules! node_register {
    ($d:ident) => {
        concat!(
            "INSERT INTO nodes (name, labels, capacity, joined_at, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, ",
            now_ms!($d),
            ", ",
            now_ms!($d),
            ", ",
            now_ms!($d),
            ") ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity, \
             joined_at = CASE WHEN nodes.left_at IS NULL THEN nodes.joined_at ELSE excluded.joined_at END, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, left_at = NULL \
             RETURNING name, labels, capacity, joined_at, started_at, heartbeat_at, left_at"
        )
    };
}
/// Registers node `$1` (labels JSON `$2`, capacity `$3`) or starts its new life. `joined_at`
/// (seniority) is kept when the node restarts without having left (a crash, a quick restart),
/// and starts afresh when it had left or been retired as dead: a node that comes back joins
/// as the youngest, so leadership does not flip back to it.
pub(in crate::store) const NODE_REGISTER: Sql = both!(node_register);

macro_rules! node_heartbeat {
    ($d:ident) => {
        concat!(
            "UPDATE nodes SET heartbeat_at = ",
            now_ms!($d),
            " WHERE name = $1 AND left_at IS NULL RETURNING heartbeat_at"
        )
    };
}
/// Refreshes node `$1`'s heartbeat; returns the database time, no row if it left.
pub(in crate::store) const NODE_HEARTBEAT: Sql = both!(node_heartbeat);

macro_rules! node_leave {
    ($d:ident) => {
        concat!("UPDATE nodes SET left_at = ", now_ms!($d), " WHERE name = $1")
    };
}
/// Marks node `$1` as left.
pub(in crate::store) const NODE_LEAVE: Sql = both!(node_leave);

macro_rules! node_list {
    ($d:ident) => {
        concat!(
            "SELECT name, labels, capacity, joined_at, started_at, heartbeat_at, left_at, ",
            now_ms!($d),
            " AS now FROM nodes ORDER BY joined_at, name"
        )
    };
}
/// Every node, seniority first, each row with the database time.
pub(in crate::store) const NODE_LIST: Sql = both!(node_list);

macro_rules! tick_probe {
    ($d:ident) => {
        concat!(
            "SELECT r.version AS ring_version, r.total_tokens, \
             (SELECT v.version FROM catalog_versions v WHERE v.name = 'tasks') AS tasks_version, \
             (SELECT v.version FROM catalog_versions v WHERE v.name = 'keys') AS keys_version, \
             CASE WHEN $2 THEN EXISTS (SELECT 1 FROM task_instances WHERE report_by IS NOT NULL AND report_by < ",
            now_ms!($d),
            ") ELSE FALSE END AS overdue_instances, \
             CASE WHEN $2 THEN EXISTS (SELECT 1 FROM invocations WHERE status = 'pending' AND updated_at < ",
            now_ms!($d),
            " - $1) ELSE FALSE END AS stale_pending, \
             CASE WHEN $2 THEN EXISTS (SELECT 1 FROM triggers) ELSE FALSE END AS triggers \
             FROM token_ring r WHERE r.id = 1"
        )
    };
}
/// What a membership tick reads besides the node list: the ring's version and size, the
/// versions of the tasks and the keys, and, when `$2` (the node leads: only the leader runs
/// the services), whether triage (an instance past `report_by`), the pending recovery (an
/// invocation `pending` for more than `$1` ms) or the trigger evaluation (a trigger) has
/// anything to look at. The probes go through the partial indexes on live instances and
/// pending invocations.
pub(in crate::store) const TICK_PROBE: Sql = both!(tick_probe);

/// Bumps the version of `$1` (`tasks` or `keys`): the first statement of every transaction
/// that writes them (`catalog_versions`, migration 0018).
pub(in crate::store) const CATALOG_BUMP: Sql =
    Sql::same("UPDATE catalog_versions SET version = version + 1 WHERE name = $1");

macro_rules! service_abandon {
    ($d:ident) => {
        concat!(
            "UPDATE service_runs SET status = 'abandoned', ended_at = ",
            now_ms!($d),
            " WHERE status = 'running' AND (started_at < ",
            now_ms!($d),
            " - $1 OR epoch IS NULL OR epoch <> $2)"
        )
    };
}
/// Ends as `abandoned` the running execution if it started more than `$1` ms ago or under
/// another lease term than epoch `$2` (a former leader's).
pub(in crate::store) const SERVICE_ABANDON: Sql = both!(service_abandon);

macro_rules! service_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO service_runs (node, status, epoch, started_at, ended_at) VALUES ($1, $2, $3, ",
            now_ms!($d),
            ", CASE WHEN $2 = 'running' THEN NULL ELSE ",
            now_ms!($d),
            " END) ON CONFLICT DO NOTHING RETURNING id"
        )
    };
}
/// Records an execution of node `$1` in status `$2` (`running` or `blocked`) under lease epoch
/// `$3`; a second
/// `running` one meets the gate index and inserts nothing.
pub(in crate::store) const SERVICE_INSERT: Sql = both!(service_insert);

macro_rules! service_finish {
    ($d:ident) => {
        concat!(
            "UPDATE service_runs SET status = $2, ended_at = ",
            now_ms!($d),
            ", detail = $3 WHERE id = $1 AND status = 'running'"
        )
    };
}
/// Ends execution `$1` with status `$2` and detail JSON `$3`, if it still runs (a gate taken
/// from it stays `abandoned`).
pub(in crate::store) const SERVICE_FINISH: Sql = both!(service_finish);

/// The running execution.
pub(in crate::store) const SERVICE_RUNNING: Sql = Sql::same(
    "SELECT id, node, epoch, status, started_at, ended_at, detail FROM service_runs WHERE status = 'running'",
);

/// The latest `$1` executions, newest first.
pub(in crate::store) const SERVICE_LIST: Sql = Sql::same(
    "SELECT id, node, epoch, status, started_at, ended_at, detail FROM service_runs ORDER BY id DESC \
     LIMIT CAST($1 AS BIGINT)",
);

macro_rules! service_prune {
    ($d:ident) => {
        concat!("DELETE FROM service_runs WHERE status <> 'running' AND started_at < ", now_ms!($d), " - $1")
    };
}
/// Forgets executions that started more than `$1` ms ago.
pub(in crate::store) const SERVICE_PRUNE: Sql = both!(service_prune);

// ---------------------------------------------------------------------------------------------
// The leader lease and the token ring (JobSync).

macro_rules! lease_claim {
    ($d:ident) => {
        concat!(
            "UPDATE cluster_lease SET epoch = epoch + CASE WHEN holder = $1 AND epoch = $3 THEN 0 ELSE 1 END, \
             holder = $1, expires_at = ",
            now_ms!($d),
            " + $2 WHERE id = 1 AND (holder = $1 OR holder IS NULL OR expires_at < ",
            now_ms!($d),
            " OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = cluster_lease.holder AND n.left_at IS NULL \
             AND n.heartbeat_at >= ",
            now_ms!($d),
            " - $2)) RETURNING epoch"
        )
    };
}
/// Takes or renews the leader lease for node `$1` for `$2` ms. `$3` is the epoch `$1` believes
/// it holds (NULL if none): the lease is renewed when it is `$1`'s with that epoch; otherwise
/// `$1` takes it, bumping the epoch (a new term), if it is `$1`'s from an earlier term, free,
/// expired, or held by a node with no heartbeat for `$2` ms (dead: the dead check and the
/// lease share one timeout, so a new leader takes over at its first look). Returns the epoch,
/// or no row.
pub(in crate::store) const LEASE_CLAIM: Sql = both!(lease_claim);

/// The lease as it is: holder, epoch, expiry and the database now.
macro_rules! lease_get {
    ($d:ident) => {
        concat!("SELECT holder, epoch, expires_at, ", now_ms!($d), " AS now FROM cluster_lease WHERE id = 1")
    };
}
/// The lease row with the database now.
pub(in crate::store) const LEASE_GET: Sql = both!(lease_get);

macro_rules! lease_check {
    ($d:ident, $lock:literal) => {
        concat!(
            "SELECT epoch FROM cluster_lease WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > ",
            now_ms!($d),
            $lock
        )
    };
    (sqlite) => {
        lease_check!(sqlite, "")
    };
    (postgres) => {
        lease_check!(postgres, " FOR UPDATE")
    };
}
/// A row only while node `$1` still holds the lease with epoch `$2` (locked on PostgreSQL):
/// the fence of every write of the leader.
pub(in crate::store) const LEASE_CHECK: Sql = both!(lease_check);

/// The ring's version, size and last change.
pub(in crate::store) const RING_GET: Sql =
    Sql::same("SELECT version, total_tokens, updated_at FROM token_ring WHERE id = 1");

/// Every token's owner.
pub(in crate::store) const TOKEN_OWNERS: Sql = Sql::same("SELECT token, node FROM token_owners ORDER BY token");

/// A row if node `$1` owns a token.
pub(in crate::store) const TOKEN_OWNS_ANY: Sql = Sql::same("SELECT token FROM token_owners WHERE node = $1 LIMIT 1");

/// Per node: the invocations it owns (claimed, running, paused, resumed) and how many of them
/// run; through the partial index on owners.
pub(in crate::store) const OWNED_PER_NODE: Sql = Sql::same(concat!(
    "SELECT owner_node, COUNT(*) AS owned, SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running \
     FROM invocations WHERE owner_node IS NOT NULL AND status IN ",
    owned_statuses!(),
    " GROUP BY owner_node ORDER BY owner_node"
));

/// Tokens owned per node.
pub(in crate::store) const TOKEN_LOADS: Sql =
    Sql::same("SELECT node, COUNT(*) AS count FROM token_owners GROUP BY node ORDER BY node");

macro_rules! ring_bump {
    ($d:ident) => {
        concat!(
            "UPDATE token_ring SET version = version + 1, total_tokens = $2, updated_at = ",
            now_ms!($d),
            " WHERE id = 1 AND version = $1 RETURNING version"
        )
    };
}
/// Bumps the ring's version from `$1` (a compare-and-swap) and sets its size `$2`.
pub(in crate::store) const RING_BUMP: Sql = both!(ring_bump);

macro_rules! token_owners_upsert {
    ($d:ident) => {
        concat!(
            "INSERT INTO token_owners (token, node) SELECT CAST(j.value ->> 'token' AS BIGINT), j.value ->> 'node' FROM ",
            json_rows!($d),
            " WHERE TRUE ON CONFLICT (token) DO UPDATE SET node = excluded.node"
        )
    };
}
/// Sets the owners of the JSON array `$1` of `{token, node}` (only the moved tokens).
pub(in crate::store) const TOKEN_OWNERS_UPSERT: Sql = both!(token_owners_upsert);

/// Drops tokens at or above `$1` (the ring shrank).
pub(in crate::store) const TOKEN_OWNERS_TRIM: Sql = Sql::same("DELETE FROM token_owners WHERE token >= $1");

macro_rules! token_audit_insert {
    ($d:ident) => {
        concat!(
            "INSERT INTO token_audit (version, leader, epoch, nodes_before, nodes_after, moved, compute_us, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, ",
            now_ms!($d),
            ")"
        )
    };
}
/// Records a swap.
pub(in crate::store) const TOKEN_AUDIT_INSERT: Sql = both!(token_audit_insert);

/// The latest `$1` swaps, newest first.
pub(in crate::store) const TOKEN_AUDIT_LIST: Sql = Sql::same(
    "SELECT version, leader, epoch, nodes_before, nodes_after, moved, compute_us, at FROM token_audit \
     ORDER BY id DESC LIMIT CAST($1 AS BIGINT)",
);
