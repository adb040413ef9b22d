//! SQL of the housekeeping (`tidy.rs`), PostgreSQL only.

/// The statistics PostgreSQL keeps of the tables the calls and workflows churn (live and dead
/// rows, changes since the last ANALYZE), from which the tidy decides what is worth doing, as
/// autovacuum does from the same figures.
pub(in crate::store) const TABLE_STATS_POSTGRES: &str = "SELECT relname AS name, n_live_tup AS live, \
     n_dead_tup AS dead, n_mod_since_analyze AS changed FROM pg_stat_user_tables \
     WHERE schemaname = current_schema() AND relname IN ('workflow_nodes', 'invocations', 'task_instances')";

/// Removes the dead rows of the node table and their index entries (and refreshes its
/// statistics). Without it (autovacuum off, or tuned too lazily), a 100,000-node workflow
/// slowed from ≈ 1,000 to ≈ 500 nodes/s as they piled up. Skipped when another session
/// vacuums it (another node, autovacuum). Its own statement: VACUUM refuses to run in a
/// transaction block.
pub(in crate::store) const VACUUM_NODES_POSTGRES: &str = "VACUUM (ANALYZE, SKIP_LOCKED) workflow_nodes";

/// Refreshes the statistics of the invocations (ANALYZE reads a bounded sample), and with them
/// every session's cached plans of statements that read the table. Without it the planner
/// believed the table as small as when the plans were made and scanned all of it in every
/// outcome commit (a workflow ran at 300 nodes/s with 21 such scans a second; 660 after one
/// ANALYZE).
pub(in crate::store) const ANALYZE_INVOCATIONS_POSTGRES: &str = "ANALYZE (SKIP_LOCKED) invocations";

/// The same for the task instances, which every attempt writes and the heartbeat and triage
/// read.
pub(in crate::store) const ANALYZE_INSTANCES_POSTGRES: &str = "ANALYZE (SKIP_LOCKED) task_instances";
