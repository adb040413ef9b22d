//! [`PgStore`]: the cluster store. Every node connects to the same PostgreSQL database; claims
//! use `FOR UPDATE SKIP LOCKED`, so concurrent nodes never take the same invocation and never
//! wait on each other. Migrations run at connect (sqlx serialises concurrent migrators with an
//! advisory lock). The implementation is shared with SQLite (see `engine.rs`).

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreResult;
use super::engine::{Pools, SqlStore};

/// The PostgreSQL migrations, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// Connections per node by default.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// Connects the [`SqlStore`] to a PostgreSQL database (clusters). A name, not a value: the
/// store itself is the shared [`SqlStore`].
pub struct PgStore;

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) with [`DEFAULT_POOL_SIZE`]
    /// connections and runs the migrations.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        Self::connect_with(url.parse()?, DEFAULT_POOL_SIZE).await
    }

    /// Connects with explicit options and pool size, and runs the migrations.
    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> StoreResult<SqlStore> {
        let pool = PgPoolOptions::new().max_connections(max_connections).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqlStore::new(Pools::Postgres(pool)))
    }
}
