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

    /// Creates the empty database `name` (a plain lowercase identifier) on the server of `url`,
    /// connecting to `url`'s own database to do so, and returns the new database's URL (`url`
    /// with its database replaced). For measurements that must start from nothing
    /// (`warden bench --database`); [`Self::drop_database`] removes it.
    pub async fn create_database(url: &str, name: &str) -> StoreResult<String> {
        use sqlx::Connection;
        plain_name(name)?;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        conn.close().await?;
        Ok(with_database(url, name))
    }

    /// Drops the database `name` on the server of `url` (its sessions are ended first),
    /// connecting to `url`'s own database to do so. Dropping one that does not exist is not an
    /// error.
    pub async fn drop_database(url: &str, name: &str) -> StoreResult<()> {
        use sqlx::Connection;
        plain_name(name)?;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// Connects with explicit options and pool size, and runs the migrations.
    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> StoreResult<SqlStore> {
        let pool = PgPoolOptions::new().max_connections(max_connections).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqlStore::new(Pools::Postgres(pool)))
    }
}

/// Refuses a database name that is not a plain lowercase identifier (it is spliced into SQL).
fn plain_name(name: &str) -> StoreResult<()> {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && name.len() <= 63 {
        Ok(())
    } else {
        Err(super::StoreError::Conflict(format!("`{name}` is not a plain database name")))
    }
}

/// `url` with its database (the last path segment, before any `?` parameters) replaced by
/// `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, params) = url.split_once('?').map_or((url, None), |(b, p)| (b, Some(p)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let head = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match params {
        Some(p) => format!("{head}/{name}?{p}"),
        None => format!("{head}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_another_database() {
        assert_eq!(with_database("postgres://u@h:5432/test", "b_1"), "postgres://u@h:5432/b_1");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "b"), "postgres://u@h/b?sslmode=disable");
        assert_eq!(with_database("postgres://u@h:5432", "b"), "postgres://u@h:5432/b");
        assert!(plain_name("warden_bench_12").is_ok());
        for bad in ["", "1x", "a;drop", "A", "a-b"] {
            assert!(plain_name(bad).is_err(), "{bad}");
        }
    }
}
