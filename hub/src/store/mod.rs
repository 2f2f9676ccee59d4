//! Storage: the one interface the rest of the hub uses for durable state.
//!
//! [`Store`] is a cheap handle over a backend: the embedded SQLite file
//! (`sqlite`, the default) or a Postgres server (`postgres`, for several hubs
//! sharing one database). Each backend has its own queries where the dialects
//! differ and its own migrations (`migrations/sqlite`, `migrations/postgres`);
//! the public methods and their semantics are the same.
//!
//! The public methods are grouped by storage area, one file each:
//! - `devices`: devices, their credentials and declarations;
//! - `presence`: sessions, last seen, revocation polling;
//! - `hubs`: which hubs are alive; releasing a dead hub's devices;
//! - `telemetry`: the batched reading writer and reading queries
//!   (one transaction per batch, with the newest value per sensor kept beside);
//! - `retention`: deleting old readings a bounded slice at a time;
//! - `api_keys`: keys for the HTTP API and their roles;
//! - `audit`: the append-only audit log of commands and admin actions;
//! - `cluster`: what other hubs on the same Postgres changed (LISTEN/NOTIFY);
//! - `commands`: commands for actuators and their lifecycle;
//! - `secret`: the `<id>.<secret>` credential scheme both kinds of token share;
//! - `columns`: how values and sequence numbers map to columns.
//!
//! Logic that does not depend on the dialect (validation, the credential
//! scheme, deduplication, sorting a batch into key order, paging cursors)
//! lives in these facade files, once; backends only run queries.
//!
//! Every method returns [`StoreError`]; data read back from the database is
//! checked, never unwrapped.

mod api_keys;
mod audit;
mod cluster;
mod columns;
mod commands;
mod devices;
mod hubs;
mod postgres;
mod presence;
mod retention;
mod secret;
mod sqlite;
mod telemetry;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use api_keys::{ApiKeyIdentity, ApiKeyRecord, NewApiKey, Role, UnknownRole};
pub use audit::{AuditEntry, AuditPage, AuditQuery, NewAuditEntry};
pub use cluster::{ClusterFeed, ClusterNotice};
pub use commands::{
    CommandAction, CommandPage, CommandQuery, CommandRecord, CommandStatus, Created, DeviceOutcome,
    EXPIRED_REASON, NewCommand, OutcomeApplied, ReplyTo,
};
pub use devices::{
    ActuatorInfo, DeviceIdentity, DevicePage, DeviceQuery, DeviceRecord, HelloRecord, NewDevice,
    RotateRefusal, RotatedToken, SensorInfo,
};
pub use hubs::ReleasedDevice;
pub use presence::{SessionClosing, SessionOpening, SessionStart, hello_digest};
pub use telemetry::{
    BatchCommit, ReadingPage, ReadingQuery, ReadingRow, SensorLatest, StoredReading,
};

/// Longest device or API key name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL names no backend this build supports, or a mode it cannot run in.
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// A device or API key name breaks the naming rule.
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// A paging cursor that this store did not hand out (or whose row is gone).
    #[error("invalid paging cursor")]
    InvalidCursor,
    /// The operation names a device key that does not exist.
    #[error("no device with key {0}")]
    UnknownDevice(i64),
    /// A file operation of the store failed (making the WAL durable).
    #[error("database file error: {0}")]
    Io(#[source] std::io::Error),
    /// The database server did not answer within the store's deadline (a
    /// hung server or network); the connection was dropped.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// A row holds a value this version cannot read (a newer schema, or corruption).
    #[error("unreadable data in the database: {0}")]
    Corrupt(String),
    /// One failure of a statement that served many callers at once (a
    /// batch of session opens, say), handed to each of them.
    #[error("{0}")]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// True when the failure is load, contention or an unreachable server
    /// rather than a fault: worth a retry later, and a 503 rather than a 500
    /// for HTTP clients. That is: the pool exhausted or closed, a lost or
    /// refused connection, the store's deadline passed, SQLite's database
    /// locked past the busy timeout, or Postgres shutting down, starting up,
    /// cancelling a statement on timeout or detecting a deadlock.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Timeout(_) => true,
            StoreError::Shared(err) => err.is_unavailable(),
            StoreError::Database(err) => match err {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                        postgres::is_unavailable_code(pg.code())
                    } else {
                        db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                            && db.code().is_some_and(|code| sqlite::is_busy_code(&code))
                    }
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Checks a device or API key name: 1 to [`MAX_NAME_CHARS`] characters, not
/// only whitespace, no control characters. The reason is a short phrase for
/// messages like "name: must not be empty".
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("must not be empty or only whitespace");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("must be at most 64 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// Where the next [`Store::delete_readings_before`] resumes its walk
    /// over devices (a device key; see `retention`).
    retention_cursor: Arc<AtomicI64>,
}

/// The database behind a [`Store`]; one variant per supported engine.
enum Backend {
    /// Embedded SQLite file.
    Sqlite(sqlite::SqliteStore),
    /// A Postgres server.
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    ///
    /// `url` picks the backend by its scheme:
    /// - `sqlite://PATH`: `sqlite://hub.db` is relative to the working
    ///   directory, `sqlite:///var/lib/hub/hub.db` absolute. In-memory SQLite
    ///   is refused: the hub's two connection pools would each see their own
    ///   database.
    /// - `postgres://…` or `postgresql://…`: a Postgres server (the database
    ///   must exist; its tables are created by the migrations). A server that
    ///   is not up yet is retried for a few seconds, then the error returned.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_as(url, None).await
    }

    /// [`Store::open`] for the hub named `instance` (`--instance-id`): on
    /// Postgres, every change it makes to a command or a session is announced
    /// to the other hubs under that name (see [`Store::cluster_feed`]), so
    /// each hub can skip its own. The admin CLI opens without a name.
    pub async fn open_as(url: &str, instance: Option<&str>) -> Result<Store, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::SqliteStore::open(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::PgStore::open(url, instance).await?)
        } else {
            let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
            return Err(StoreError::UnsupportedUrl(format!(
                "scheme {scheme:?} (expected sqlite://PATH or postgres://…)"
            )));
        };
        Ok(Store {
            backend: Arc::new(backend),
            retention_cursor: Arc::new(AtomicI64::new(0)),
        })
    }

    /// How many batch writers may commit in parallel, each on its own
    /// connection: 1 on SQLite (one write lock serialises them anyway),
    /// [`postgres::WRITER_CONNECTIONS`] on Postgres.
    pub fn writer_connections(&self) -> usize {
        match &*self.backend {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => postgres::WRITER_CONNECTIONS as usize,
        }
    }

    /// Checks that the database answers (one trivial query on the general
    /// pool), for readiness probes. Fails like any other call while the
    /// database is unreachable.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.ping().await,
            Backend::Postgres(db) => db.ping().await,
        }
    }

    /// Closes the pools (SQLite: flushing the WAL into the main file). Call
    /// it once, at shutdown.
    pub async fn close(&self) {
        match &*self.backend {
            Backend::Sqlite(db) => db.close().await,
            Backend::Postgres(db) => db.close().await,
        }
    }
}

/// Milliseconds since the Unix epoch, for rows stamped by the store itself.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(validate_name("kitchen sensor").is_ok());
        assert!(validate_name(&"é".repeat(64)).is_ok());
        assert!(validate_name(&"é".repeat(65)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("   ").is_err());
        assert!(validate_name("a\nb").is_err());
    }

    #[tokio::test]
    async fn unknown_scheme_and_in_memory_are_refused() {
        let err = Store::open("mysql://localhost/x")
            .await
            .err()
            .expect("mysql is not a backend");
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
        let err = Store::open("sqlite::memory:")
            .await
            .err()
            .expect("in-memory is refused");
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
        // "postgres:" without the slashes is not a URL this store understands.
        let err = Store::open("postgres:hub")
            .await
            .err()
            .expect("not a postgres URL");
        assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err}");
    }

    #[test]
    fn connection_failures_are_unavailable_and_faults_are_not() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(StoreError::Database(sqlx::Error::Io(io)).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::Timeout(Duration::from_secs(1)).is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
        assert!(!StoreError::InvalidCursor.is_unavailable());
    }
}
