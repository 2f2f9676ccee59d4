//! Storage: the one interface the rest of the hub uses for durable state.
//!
//! [`Store`] is a cheap handle over a backend. Today the only backend is the
//! embedded SQLite file (`sqlite`); a Postgres backend joins as a second
//! `Backend` variant, with its own queries where the dialects differ, its
//! own migrations under `migrations/postgres`, and the same public methods.
//!
//! The public methods are grouped by storage area, one file each:
//! - `devices`: devices, their credentials and declarations;
//! - `presence`: sessions, last seen, revocation polling;
//! - `telemetry`: the batched reading writer and reading queries
//!   (one transaction per batch, with the newest value per sensor kept beside);
//! - `api_keys`: keys for the HTTP API;
//! - `secret`: the `<id>.<secret>` credential scheme both kinds of token share.
//!
//! Every method returns [`StoreError`]; data read back from the database is
//! checked, never unwrapped.

mod api_keys;
mod devices;
mod presence;
mod secret;
mod sqlite;
mod telemetry;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use api_keys::{ApiKeyIdentity, ApiKeyRecord, NewApiKey};
pub use devices::{
    ActuatorInfo, DeviceIdentity, DevicePage, DeviceQuery, DeviceRecord, NewDevice, SensorInfo,
};
pub use presence::SessionStart;
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
    /// A row holds a value this version cannot read (a newer schema, or corruption).
    #[error("unreadable data in the database: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the failure is load or contention (pool exhausted, database
    /// locked past the busy timeout) rather than a fault: worth a retry later,
    /// and a 503 rather than a 500 for HTTP clients.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                db.code().is_some_and(|code| sqlite::is_busy_code(&code))
            }
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
}

/// The database behind a [`Store`]; one variant per supported engine.
enum Backend {
    /// Embedded SQLite file.
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    ///
    /// `url` is `sqlite://PATH`: `sqlite://hub.db` is relative to the working
    /// directory, `sqlite:///var/lib/hub/hub.db` absolute. In-memory SQLite is
    /// refused: the hub's two connection pools would each see their own database.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            let db = sqlite::SqliteStore::open(url).await?;
            return Ok(Store {
                backend: Arc::new(Backend::Sqlite(db)),
            });
        }
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        Err(StoreError::UnsupportedUrl(format!(
            "scheme {scheme:?} (expected sqlite://PATH)"
        )))
    }

    /// Closes the pools, flushing the WAL. Call it once, at shutdown.
    pub async fn close(&self) {
        match &*self.backend {
            Backend::Sqlite(db) => db.close().await,
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
    }
}
