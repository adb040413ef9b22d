//! [`SqliteStore`]: the embedded default. One database file in WAL mode with
//! `synchronous=FULL` (a committed batch survives power loss), foreign keys on and a busy
//! timeout. SQLite allows one writer at a time, so the store keeps a pool of reader
//! connections (`query_only`) and a pool of exactly one writer connection: writes queue in
//! the pool instead of fighting over the database lock, and readers never wait on them.
//! The implementation is shared with PostgreSQL (see `engine.rs`).

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreResult;
use super::engine::{Pools, SqlStore};

/// The SQLite migrations, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections; reads are short, so a few cover many concurrent requests.
const READERS: u32 = 4;

/// Opens the [`SqlStore`] on one SQLite file (the embedded default). A name, not a value:
/// the store itself is the shared [`SqlStore`].
pub struct SqliteStore;

impl SqliteStore {
    /// Opens (creating it if missing) the database at `path` and runs the migrations.
    pub async fn open(path: &Path) -> StoreResult<SqlStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(options.pragma("query_only", "ON"))
            .await?;
        Ok(SqlStore::new(Pools::Sqlite { read, write, gate: Default::default() }))
    }
}
