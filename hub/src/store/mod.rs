//! SPEC STUB — to be replaced by the real implementation (store owner).
//! Signatures here are the contract the gateway and ingest code call.

use schema::{Value, ValueKind};

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Any database failure.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {}

/// An authenticated device.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// Database key.
    pub pk: i64,
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// What the hub needs when a session opens.
#[derive(Debug, Clone, Copy)]
pub struct SessionStart {
    /// Incremented on every connection; the disconnect only marks offline if it still matches.
    pub session_counter: i64,
    /// Highest telemetry seq durably stored (0 = none).
    pub last_stored_seq: u64,
}

/// A sensor declaration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorInfo {
    /// Compact id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Unit.
    pub unit: String,
    /// Value kind.
    pub kind: ValueKind,
}

/// An actuator declaration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorInfo {
    /// Compact id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Value kind.
    pub kind: ValueKind,
}

/// One reading ready to store.
#[derive(Debug, Clone, Copy)]
pub struct ReadingRow {
    /// Device key.
    pub device_pk: i64,
    /// Sensor id.
    pub sensor: u16,
    /// Absolute time, ms since the epoch.
    pub time_ms: i64,
    /// Value.
    pub value: Value,
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub async fn open(_url: &str) -> Result<Store, StoreError> {
        todo!()
    }
    /// Checks a `<device-id>.<secret>` token; None when unknown, wrong or revoked.
    pub async fn authenticate_device(
        &self,
        _token: &str,
    ) -> Result<Option<DeviceIdentity>, StoreError> {
        todo!()
    }
    /// Replaces the device's declared sensors/actuators and firmware string.
    pub async fn record_hello(
        &self,
        _pk: i64,
        _firmware: &str,
        _sensors: &[SensorInfo],
        _actuators: &[ActuatorInfo],
    ) -> Result<(), StoreError> {
        todo!()
    }
    /// Marks online, bumps the session counter, returns it with the last stored seq.
    pub async fn session_opened(&self, _pk: i64, _now_ms: i64) -> Result<SessionStart, StoreError> {
        todo!()
    }
    /// Marks offline if `session_counter` is still current; sets last seen.
    pub async fn session_closed(
        &self,
        _pk: i64,
        _session_counter: i64,
        _now_ms: i64,
    ) -> Result<(), StoreError> {
        todo!()
    }
    /// Writes last-seen times (pk, ms) in one statement/transaction.
    pub async fn touch_last_seen(&self, _seen: &[(i64, i64)]) -> Result<(), StoreError> {
        todo!()
    }
    /// Devices revoked at or after `since_ms`: (pk, revoked_at_ms).
    pub async fn devices_revoked_since(
        &self,
        _since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        todo!()
    }
    /// One transaction: insert readings (duplicates of (device, sensor, time) ignored)
    /// and raise each device's last stored seq to at least the given one.
    pub async fn write_batch(
        &self,
        _readings: &[ReadingRow],
        _last_seqs: &[(i64, u64)],
    ) -> Result<(), StoreError> {
        todo!()
    }
    /// Total rows in the readings table (tests and status).
    pub async fn count_readings(&self) -> Result<i64, StoreError> {
        todo!()
    }
    /// Closes the pools, flushing the WAL.
    pub async fn close(&self) {
        todo!()
    }
}
