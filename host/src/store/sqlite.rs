//! [`SqliteStore`]: the embedded default. One database file in WAL mode with
//! `synchronous=FULL` (a committed batch survives power loss), foreign keys on and a busy
//! timeout. SQLite allows one writer at a time, so the store keeps a pool of reader
//! connections (`query_only`) and exactly one writer connection behind a gate (`write_gate.rs`):
//! writes queue at the gate instead of fighting over the database lock, and readers never wait
//! on them.
//! The implementation is shared with PostgreSQL (see `engine.rs`).
//!
//! Checkpoints (copying the write-ahead log into the database file) do not run inside commits:
//! by default SQLite has the commit that takes the log past 1,000 pages copy all of it and
//! fsync the database file before it returns, while holding the one writer, so every few
//! hundred ms under load one write (a routing as likely as any) took 10–50 ms and everything
//! queued behind it waited as long. Here the writer checkpoints only past
//! [`BACKSTOP_PAGES`], and the daemon runs a passive checkpoint every
//! [`super::CHECKPOINT_EVERY`] on a connection of its own ([`checkpoint`]), beside the writer:
//! a passive checkpoint takes no lock a writer waits for. The log is cut back to
//! [`WAL_SIZE_LIMIT`] when it starts over.

use std::path::Path;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreResult;
use super::engine::{Pools, SqlStore};
use super::write_gate::SqliteWriter;

/// The SQLite migrations, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections; reads are short, so a few cover many concurrent requests.
const READERS: u32 = 4;

/// Rows sqlx's worker thread of a connection may send ahead of the reader (its default is
/// 50). When the channel is full the worker stops in the middle of the statement until the
/// task that reads drains it: a transition batch of 500 outcomes returned its rows in ten
/// such stops, each a wake-up of a busy tokio worker, with the writer held all along.
const ROW_BUFFER: usize = 4096;

/// The log size (pages of 4 KiB) past which a commit checkpoints after all: only reached when
/// nothing else checkpoints (a store opened without a daemon, as in tests) or the passive
/// checkpoints cannot keep up.
const BACKSTOP_PAGES: u32 = 16_384;

/// The size the log file is cut back to when it starts over, in bytes.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

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
            .row_buffer_size(ROW_BUFFER)
            .pragma("wal_autocheckpoint", BACKSTOP_PAGES.to_string())
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .foreign_keys(true);
        let mut write = options.connect().await?;
        MIGRATOR.run(&mut write).await?;
        let checkpoint = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(options.clone().pragma("query_only", "ON"))
            .await?;
        Ok(SqlStore::new(Pools::Sqlite { read, writer: Box::new(SqliteWriter::new(write, options)), checkpoint }))
    }
}

/// A passive checkpoint on `conn` (see the module documentation): copies the log pages that no
/// reader still needs, without waiting for anyone.
pub(super) async fn checkpoint(conn: &sqlx::SqlitePool) -> StoreResult<()> {
    // One row (busy, log pages, pages checkpointed): nothing in it calls for a decision here.
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(conn).await?;
    Ok(())
}
