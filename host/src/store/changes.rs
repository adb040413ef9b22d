//! [`ChangeFeed`] for [`SqlStore`]: the invocation history in sequence order with each
//! invocation's task and workflow, and PostgreSQL's `LISTEN`/`NOTIFY` on the channel
//! `warden_changes`, by which a node that wrote history wakes the feeds of the others. A child
//! of `engine.rs`; the SQL is in `sql_changes.rs`.

use async_trait::async_trait;
use sqlx::postgres::PgListener;

use super::{Dialect, Pools, SqlStore, parse_status, sql};
use crate::model::Millis;
use crate::model::feed::ChangeEvent;
use crate::store::{ChangeFeed, Store, StoreResult};

use sql::changes as q;

#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    invocation_id: String,
    task: String,
    workflow: Option<String>,
    status: String,
    node: Option<String>,
    at: i64,
    now: i64,
}

/// Notifications of the nodes' history writes (PostgreSQL), the listening node's own included.
/// It reconnects by itself when its connection is lost; notifications sent meanwhile are gone,
/// so [`ChangeListener::wait`] says so and the caller reads the history anyway.
pub struct ChangeListener(PgListener);

impl ChangeListener {
    /// Waits for the next notification: `Some(payload)`, or `None` when the connection was lost
    /// (the next call reconnects; whatever was sent meanwhile is unknown).
    pub async fn wait(&mut self) -> StoreResult<Option<String>> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_string()))
    }
}

#[async_trait]
impl ChangeFeed for SqlStore {
    async fn history_head(&self) -> StoreResult<i64> {
        Ok(on_read!(self, |db, d| sqlx::query_scalar(q::HISTORY_HEAD.get(d)).fetch_one(db).await?))
    }

    async fn changes_after(&self, after: i64, limit: u32) -> StoreResult<(Vec<ChangeEvent>, Millis)> {
        let rows: Vec<ChangeRow> = on_read!(self, |db, d| sqlx::query_as(q::CHANGES_AFTER.get(d))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?);
        let mut now = 0;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            now = now.max(r.now);
            out.push(ChangeEvent {
                seq: r.seq,
                status: parse_status(&r.status)?,
                invocation: r.invocation_id,
                task: r.task,
                at: r.at,
                node: r.node,
                workflow: r.workflow,
            });
        }
        if out.is_empty() {
            now = Store::now(self).await?;
        }
        Ok((out, now))
    }

    fn history_gaps_possible(&self) -> bool {
        matches!(self.pools, Pools::Postgres(_))
    }

    async fn changes_notify(&self, payload: &str) -> StoreResult<()> {
        if let Pools::Postgres(pool) = &self.pools {
            sqlx::query(q::CHANGES_NOTIFY).bind(payload).execute(pool).await?;
        }
        Ok(())
    }

    async fn changes_listen(&self) -> StoreResult<Option<ChangeListener>> {
        let Pools::Postgres(pool) = &self.pools else { return Ok(None) };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(q::CHANGES_CHANNEL).await?;
        Ok(Some(ChangeListener(listener)))
    }
}
