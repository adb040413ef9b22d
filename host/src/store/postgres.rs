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

    /// Connects with explicit options and pool size, and runs the migrations. Every session
    /// runs with `jit = off`: the store's statements read a few rows by index, and PostgreSQL's
    /// JIT, which compiles any statement whose *estimated* cost passes `jit_above_cost`, cost a
    /// workflow step 9 ms of compiling for 0.6 ms of work (and a 100,000-node workflow 28 s of
    /// the server's CPU).
    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> StoreResult<SqlStore> {
        let options = options.options([("jit", "off")]);
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

    /// PostgreSQL compiles a statement with LLVM when its estimated cost passes
    /// `jit_above_cost` (100,000), which estimates over a large table reach even when the
    /// statement reads a few rows: the workflow step's candidates (a `LIMIT` per task whose size
    /// the planner cannot see) took 27 ms each, 9 ms of it compiling, against 0.6 ms without.
    /// The store's sessions never compile.
    #[tokio::test]
    async fn no_statement_of_the_store_is_compiled_by_the_jit() {
        let h = crate::store::conformance::Harness::postgres().await;
        let pool = h.sql_store().pg_pool().expect("a PostgreSQL store");
        // Estimated far above jit_above_cost (a 9-million-row join); only planned here.
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN SELECT COUNT(*) FROM generate_series(1, 3000) a CROSS JOIN generate_series(1, 3000) b \
             WHERE a.a + b.b < 0",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.iter().any(|l| l.contains("Nested Loop")), "{plan:?}");
        assert!(!plan.iter().any(|l| l.trim_start().starts_with("JIT")), "compiled by the JIT:\n{}", plan.join("\n"));
    }

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
