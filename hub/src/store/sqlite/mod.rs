//! The embedded SQLite backend: connection set-up, migrations, shared helpers.
//!
//! Two pools over one WAL-mode file. `writer` holds a single connection and
//! serves only the telemetry batch writer, so the hot path never waits for a
//! pool slot and its prepared statements stay cached on one connection.
//! `pool` (a few connections) serves everything else; WAL lets its readers
//! run beside the writer, and its occasional writes wait for the write lock
//! through the busy timeout. `synchronous = FULL` makes every commit durable
//! across power loss, which the hub's acks promise.
//!
//! `presence` (one connection) writes only session opens and closes (many
//! devices' per statement, see `gateway::connect_batch`) and last-seen
//! times, with `synchronous = NORMAL`: no fsync of its own per commit. A reconnect storm is thousands of session opens a second, and an
//! fsync each (about 1-3 ms here) held the whole hub near 400 connects/s,
//! serialised on the write lock. These rows are not what an ack promises:
//! they become durable with the next fsync of the WAL (the telemetry
//! writer's, within milliseconds under load), and if power is lost first, the
//! restarted hub marks every device its earlier run held offline anyway
//! (`liveness`).
//!
//! The queries live in one file per storage area, like the public API.

mod api_keys;
mod audit;
mod batch;
mod commands;
mod devices;
mod hubs;
mod presence;
mod retention;
mod telemetry;
mod wal_sync;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the general-purpose pool (API, sessions, admin).
const POOL_CONNECTIONS: u32 = 4;
/// Page cache of the writer connection, KiB: keeps the readings B-tree's hot
/// pages (one insertion point per active device) in memory.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL pages between automatic checkpoints of the writer (32 MiB of 4 KiB pages).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 8192;

/// The SQLite backend.
pub(crate) struct SqliteStore {
    /// One connection, used only by `write_batch`; `synchronous = NORMAL`,
    /// made durable after each commit by `wal_sync`.
    writer: SqlitePool,
    /// Everything else (`synchronous = FULL`).
    pool: SqlitePool,
    /// Session opens and closes, last-seen times (`synchronous = NORMAL`).
    presence: SqlitePool,
    /// Makes the writer's commits durable outside its transaction.
    wal_sync: Arc<wal_sync::WalSync>,
}

impl SqliteStore {
    /// Opens both pools on the file named by `url`, creating it if missing,
    /// and applies pending migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        let is_memory = url.contains(":memory:")
            || url.contains("mode=memory")
            || options.get_filename().as_os_str().is_empty();
        if is_memory {
            return Err(StoreError::UnsupportedUrl(
                "in-memory SQLite is not supported (the hub opens two pools); use a file".into(),
            ));
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(500));

        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        // Migrate before the writer exists, so no statement it prepares can
        // see an old schema.
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;

        let wal_sync = Arc::new(wal_sync::WalSync::new(options.get_filename().to_path_buf()));
        let writer_options = options
            .clone()
            // Durability comes from `wal_sync` after each commit (see there).
            .synchronous(SqliteSynchronous::Normal)
            // Checkpoint less often than every 4 MB: each one rewrites the
            // hot pages of every active device into the database file.
            .pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            )
            // Batches are tens of kilobytes of SQL; logging each at debug level
            // would drown everything else. Slow ones are still logged.
            .log_statements(log::LevelFilter::Trace)
            .pragma("cache_size", (-WRITER_CACHE_KIB).to_string())
            .pragma("temp_store", "memory");
        let presence = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        let writer = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await?;
        Ok(SqliteStore {
            writer,
            pool,
            presence,
            wal_sync,
        })
    }

    /// One trivial query on the general pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes both pools; the last connection to close checkpoints the WAL
    /// into the main file.
    pub async fn close(&self) {
        self.writer.close().await;
        self.presence.close().await;
        self.pool.close().await;
    }
}

/// True for SQLite's BUSY and LOCKED result codes (primary or extended), as
/// sqlx reports them in `DatabaseError::code`.
pub(crate) fn is_busy_code(code: &str) -> bool {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_codes_are_recognised() {
        assert!(is_busy_code("5"));
        assert!(is_busy_code("517"));
        assert!(is_busy_code("262"));
        assert!(!is_busy_code("19"));
        assert!(!is_busy_code("2067"));
        assert!(!is_busy_code("x"));
    }
}
