//! Presence: who is connected, since when, and which devices were revoked.
//!
//! The database is the shared truth between hubs: a session bumps the
//! device's session counter when it opens, and its close only marks the device
//! offline while that counter is still current, so a late close of a replaced
//! session (possibly on another hub) cannot hide a newer live one. Last-seen
//! times are flushed in bulk every few seconds, not per frame. Hubs poll
//! [`Store::devices_revoked_since`] to close sessions revoked elsewhere.

use super::{Backend, Store, StoreError};

/// What the hub needs when a session opens.
#[derive(Debug, Clone, Copy)]
pub struct SessionStart {
    /// Incremented on every connection; the disconnect only marks offline if it still matches.
    pub session_counter: i64,
    /// Highest telemetry seq durably stored (0 = none).
    pub last_stored_seq: u64,
}

impl Store {
    /// Marks online, bumps the session counter, returns it with the last stored seq.
    ///
    /// [`StoreError::UnknownDevice`] if `pk` names no device.
    pub async fn session_opened(&self, pk: i64, now_ms: i64) -> Result<SessionStart, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.session_opened(pk, now_ms).await,
            Backend::Postgres(db) => db.session_opened(pk, now_ms).await,
        }
    }

    /// Marks offline if `session_counter` is still current; sets last seen
    /// (never moving it backwards). True when the device was marked offline,
    /// false when a newer session (here or on another hub) is current.
    pub async fn session_closed(
        &self,
        pk: i64,
        session_counter: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.session_closed(pk, session_counter, now_ms).await,
            Backend::Postgres(db) => db.session_closed(pk, session_counter, now_ms).await,
        }
    }

    /// Writes last-seen times (pk, ms) in one transaction; a time older than
    /// the stored one is ignored, and unknown keys are skipped.
    pub async fn touch_last_seen(&self, seen: &[(i64, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        // One entry per device, its latest time: a statement that joins on
        // the device key must not see a key twice.
        let mut seen = seen.to_vec();
        seen.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        seen.dedup_by_key(|s| s.0);
        match &*self.backend {
            Backend::Sqlite(db) => db.touch_last_seen(&seen).await,
            Backend::Postgres(db) => db.touch_last_seen(&seen).await,
        }
    }

    /// Devices revoked at or after `since_ms`: (pk, revoked_at_ms), oldest first.
    pub async fn devices_revoked_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.devices_revoked_since(since_ms).await,
            Backend::Postgres(db) => db.devices_revoked_since(since_ms).await,
        }
    }
}
