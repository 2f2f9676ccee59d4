//! Presence: who is connected, since when, and which devices were revoked.
//!
//! The database is the shared truth between hubs: a session bumps the
//! device's session counter when it opens, and its close only marks the device
//! offline while that counter is still current, so a late close of a replaced
//! session (possibly on another hub) cannot hide a newer live one. Last-seen
//! times are flushed in bulk every few seconds, not per frame. Hubs poll
//! [`Store::devices_revoked_since`] to close sessions revoked elsewhere.

use super::{ActuatorInfo, Backend, SensorInfo, Store, StoreError};

/// What the hub needs when a session opens.
#[derive(Debug, Clone, Copy)]
pub struct SessionStart {
    /// Incremented on every connection; the disconnect only marks offline if it still matches.
    pub session_counter: i64,
    /// Highest telemetry seq durably stored (0 = none).
    pub last_stored_seq: u64,
    /// The Hello differs from the last one recorded (or none was): record it.
    pub hello_changed: bool,
    /// The device has unfinished commands to send.
    pub open_commands: bool,
}

impl Store {
    /// Marks online on hub `instance`, bumps the session counter, returns it
    /// with the last stored seq, whether `hello_digest` ([`hello_digest`] of
    /// the session's Hello) differs from the last recorded one, and whether
    /// the device has unfinished commands: one statement, so a reconnect
    /// that changes nothing costs one round trip.
    ///
    /// [`StoreError::UnknownDevice`] if `pk` names no device.
    pub async fn session_opened(
        &self,
        pk: i64,
        now_ms: i64,
        instance: &str,
        hello_digest: &[u8],
    ) -> Result<SessionStart, StoreError> {
        match &*self.backend {
            Backend::Sqlite(db) => db.session_opened(pk, now_ms, instance, hello_digest).await,
            Backend::Postgres(db) => db.session_opened(pk, now_ms, instance, hello_digest).await,
        }
    }

    /// Marks offline (on no hub) if `session_counter` is still current; sets last seen
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

/// SHA-256 of a Hello's declarations in a canonical form (sensors and
/// actuators in id order, every string length-prefixed), as stored by
/// [`Store::record_hello`] and compared by [`Store::session_opened`].
pub fn hello_digest(
    firmware: &str,
    sensors: &[SensorInfo],
    actuators: &[ActuatorInfo],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    fn text(hash: &mut Sha256, value: &str) {
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value.as_bytes());
    }
    let mut sensors: Vec<&SensorInfo> = sensors.iter().collect();
    sensors.sort_by_key(|s| s.id);
    let mut actuators: Vec<&ActuatorInfo> = actuators.iter().collect();
    actuators.sort_by_key(|a| a.id);
    let mut hash = Sha256::new();
    text(&mut hash, firmware);
    hash.update((sensors.len() as u64).to_le_bytes());
    for sensor in sensors {
        hash.update(sensor.id.to_le_bytes());
        text(&mut hash, &sensor.name);
        text(&mut hash, &sensor.unit);
        text(&mut hash, sensor.kind.as_str());
    }
    hash.update((actuators.len() as u64).to_le_bytes());
    for actuator in actuators {
        hash.update(actuator.id.to_le_bytes());
        text(&mut hash, &actuator.name);
        text(&mut hash, actuator.kind.as_str());
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::ValueKind;

    #[test]
    fn the_hello_digest_ignores_order_and_sees_every_field() {
        let a = SensorInfo {
            id: 1,
            name: "t".into(),
            unit: "C".into(),
            kind: ValueKind::Float,
        };
        let b = SensorInfo {
            id: 2,
            name: "h".into(),
            unit: "%".into(),
            kind: ValueKind::Float,
        };
        let r = ActuatorInfo {
            id: 1,
            name: "relay".into(),
            kind: ValueKind::Bool,
        };
        let base = hello_digest("1.0", &[a.clone(), b.clone()], std::slice::from_ref(&r));
        assert_eq!(
            base,
            hello_digest("1.0", &[b.clone(), a.clone()], std::slice::from_ref(&r))
        );
        assert_ne!(
            base,
            hello_digest("1.1", &[a.clone(), b.clone()], std::slice::from_ref(&r))
        );
        let mut renamed = b.clone();
        renamed.unit = "%RH".into();
        assert_ne!(
            base,
            hello_digest("1.0", &[a.clone(), renamed], std::slice::from_ref(&r))
        );
        // Moving bytes between adjacent strings changes the digest.
        let split = SensorInfo {
            id: 1,
            name: "tC".into(),
            unit: String::new(),
            kind: ValueKind::Float,
        };
        assert_ne!(
            base,
            hello_digest("1.0", &[split, b.clone()], std::slice::from_ref(&r))
        );
        assert_ne!(base, hello_digest("1.0", &[a, b], &[]));
    }
}
