//! [`Store::tidy`] for [`SqlStore`]: on PostgreSQL, the housekeeping autovacuum does, for when
//! it is off (as on the development machine) or slow, decided by the same figures
//! (`pg_stat_user_tables`). A table the calls churn is analysed once its changes since the
//! last ANALYZE outnumber its rows; besides fresh statistics, an ANALYZE makes every session
//! plan again the statements it cached: sqlx prepares each statement once per connection and
//! PostgreSQL keeps a generic plan after five runs, so a plan made while `invocations` held a
//! few hundred rows kept scanning it whole at 20,000 (the outcome commit of 1,500 calls took
//! 1.3 s). The workflow node table is vacuumed once a fifth of its rows are dead: each node
//! status change leaves a dead entry in its status index that every later read of that status
//! walks. Nothing on SQLite. A child of `engine.rs`; the SQL is in `sql_tidy.rs`.

use super::{Pools, SqlStore, sql};
use crate::store::StoreResult;

use sql::tidy as q;

/// PostgreSQL's statistics of one table ([`q::TABLE_STATS_POSTGRES`]).
#[derive(sqlx::FromRow)]
struct TableStatsRow {
    name: String,
    live: i64,
    dead: i64,
    changed: i64,
}

/// Whether the node table has enough dead rows to be worth a VACUUM: autovacuum's own rule
/// (dead rows over a fifth of the live ones), with a floor of 1,000. A VACUUM reads all of the
/// table's indexes, so vacuuming after a fixed number of changes cost a 100,000-node workflow
/// a VACUUM every 1.5 s (a quarter of a core on two); by share, a handful.
fn vacuum_due(t: &TableStatsRow) -> bool {
    t.dead > 1_000 + t.live / 5
}

/// Whether a table's statistics are worth refreshing: once the rows changed since the last
/// ANALYZE are as many as the live ones (the table doubled, or turned over), with a floor of
/// 1,000: a growing table is analysed a logarithmic number of times, not every few seconds.
fn analyze_due(t: &TableStatsRow) -> bool {
    t.changed >= t.live.max(1_000)
}

/// [`Store::tidy`](crate::store::Store::tidy).
pub(super) async fn tidy(store: &SqlStore) -> StoreResult<()> {
    let Pools::Postgres(pool) = &store.pools else { return Ok(()) };
    let stats: Vec<TableStatsRow> = sqlx::query_as(q::TABLE_STATS_POSTGRES).fetch_all(pool).await?;
    for t in stats {
        let statement = match t.name.as_str() {
            "workflow_nodes" if vacuum_due(&t) => q::VACUUM_NODES_POSTGRES,
            "invocations" if analyze_due(&t) => q::ANALYZE_INVOCATIONS_POSTGRES,
            "task_instances" if analyze_due(&t) => q::ANALYZE_INSTANCES_POSTGRES,
            _ => continue,
        };
        tracing::debug!(table = %t.name, live = t.live, dead = t.dead, changed = t.changed, statement, "tidying");
        // VACUUM runs outside a transaction block: the simple protocol, one statement.
        sqlx::raw_sql(statement).execute(pool).await?;
    }
    Ok(())
}
