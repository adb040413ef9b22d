//! SQL of the change feed: the invocation history read in sequence order with each
//! invocation's task and workflow, and PostgreSQL's notification of new changes; a child of
//! `sql.rs` so that it shares its dialect macros.

use super::Sql;

/// The highest history sequence number stored (0 when there is none).
pub(in crate::store) const HISTORY_HEAD: Sql =
    Sql::same("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM invocation_history");

macro_rules! changes_after {
    ($d:ident) => {
        concat!(
            "SELECT h.seq, h.invocation_id, i.task, i.workflow, h.status, h.node, h.at, ",
            now_ms!($d),
            " AS now FROM invocation_history h JOIN invocations i ON i.id = h.invocation_id \
             WHERE h.seq > $1 ORDER BY h.seq LIMIT $2"
        )
    };
}
/// At most `$2` history rows after sequence `$1`, in order, each with its invocation's task
/// and workflow and the database clock (`now`).
pub(in crate::store) const CHANGES_AFTER: Sql = both!(changes_after);

/// The channel on which PostgreSQL nodes tell each other that the history grew.
pub(in crate::store) const CHANGES_CHANNEL: &str = "warden_changes";

/// Wakes the listeners of [`CHANGES_CHANNEL`] with a payload (PostgreSQL only).
pub(in crate::store) const CHANGES_NOTIFY: &str = "SELECT pg_notify('warden_changes', $1)";
