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
//! The queries live in one file per storage area, like the public API.

mod api_keys;
mod batch;
mod devices;
mod presence;
mod telemetry;
mod wal_sync;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use schema::{Value, ValueKind};
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
            wal_sync,
        })
    }

    /// Closes both pools; the last connection to close checkpoints the WAL
    /// into the main file.
    pub async fn close(&self) {
        self.writer.close().await;
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

/// Storage code of a value kind (the postcard tag): 0 float, 1 int, 2 bool.
pub(crate) fn kind_code(kind: ValueKind) -> i64 {
    match kind {
        ValueKind::Float => 0,
        ValueKind::Int => 1,
        ValueKind::Bool => 2,
    }
}

/// The value kind stored as `code`.
pub(crate) fn kind_from_code(code: i64) -> Result<ValueKind, StoreError> {
    match code {
        0 => Ok(ValueKind::Float),
        1 => Ok(ValueKind::Int),
        2 => Ok(ValueKind::Bool),
        other => Err(StoreError::Corrupt(format!("unknown value kind {other}"))),
    }
}

/// A value as the three reading columns: kind, value_float, value_int.
pub(crate) fn value_columns(value: Value) -> (i64, Option<f64>, Option<i64>) {
    match value {
        Value::Float(f) => (0, Some(f), None),
        Value::Int(i) => (1, None, Some(i)),
        Value::Bool(b) => (2, None, Some(i64::from(b))),
    }
}

/// The value stored in the three reading columns.
pub(crate) fn value_from_columns(
    kind: i64,
    float: Option<f64>,
    int: Option<i64>,
) -> Result<Value, StoreError> {
    match (kind_from_code(kind)?, float, int) {
        (ValueKind::Float, Some(f), _) => Ok(Value::Float(f)),
        // SQLite stores NaN as NULL; the hub refuses non-finite values, so
        // this only happens with rows written by something else.
        (ValueKind::Float, None, _) => Ok(Value::Float(f64::NAN)),
        (ValueKind::Int, _, Some(i)) => Ok(Value::Int(i)),
        (ValueKind::Bool, _, Some(i)) => Ok(Value::Bool(i != 0)),
        (kind, _, None) => Err(StoreError::Corrupt(format!(
            "{} reading without value_int",
            kind.as_str()
        ))),
    }
}

/// A u16 id column (sensor or actuator) read back.
pub(crate) fn small_id(column: &str, raw: i64) -> Result<u16, StoreError> {
    u16::try_from(raw).map_err(|_| StoreError::Corrupt(format!("{column} {raw} out of range")))
}

/// A sequence number column read back (stored as a non-negative i64).
pub(crate) fn seq_from_db(raw: i64) -> Result<u64, StoreError> {
    u64::try_from(raw).map_err(|_| StoreError::Corrupt(format!("negative last_seq {raw}")))
}

/// A sequence number for storage: SQLite integers are signed 64-bit, so the
/// (never seen in practice) upper half of u64 is clamped to i64::MAX rather
/// than wrapping negative, which would make `max()` go backwards.
pub(crate) fn seq_to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_columns() {
        for value in [
            Value::Float(-1.5),
            Value::Int(i64::MIN),
            Value::Bool(true),
            Value::Bool(false),
        ] {
            let (kind, f, i) = value_columns(value);
            assert_eq!(value_from_columns(kind, f, i).expect("readable"), value);
        }
        assert!(value_from_columns(7, None, Some(1)).is_err());
        assert!(value_from_columns(1, Some(1.0), None).is_err());
    }

    #[test]
    fn busy_codes_are_recognised() {
        assert!(is_busy_code("5"));
        assert!(is_busy_code("517"));
        assert!(is_busy_code("262"));
        assert!(!is_busy_code("19"));
        assert!(!is_busy_code("2067"));
        assert!(!is_busy_code("x"));
    }

    #[test]
    fn huge_seq_is_clamped_not_wrapped() {
        assert_eq!(seq_to_db(7), 7);
        assert_eq!(seq_to_db(u64::MAX), i64::MAX);
    }
}
